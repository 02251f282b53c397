"""One run description: RunSpec round trips, versions, the config surface and the effective bits."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ptq_core.cat import CATOptions
from ptq_core.cli import build_parser, method_settings, spec_from_args
from ptq_core.errors import BitWidthError, ConfigError
from ptq_core.methods import METHODS, QDropConfig, config_from_dict
from ptq_core.overrides import format_overrides, parse_overrides
from ptq_core.prepare import QuantSpec
from ptq_core.settings import check_settings, settings
from ptq_core.spec import RunSpec, bits_summary, make_config
from ptq_core.store import SCHEMA_VERSION, RunStore


def test_run_spec_round_trips_through_json_for_every_method():
    for name in METHODS:
        spec = RunSpec(
            model="fmnist-vit",
            data="fmnist-sample",
            method=make_config(name, wbits=2, seed=5),
            cat=CATOptions(k=8),
            eval_limit=500,
        )
        back = RunSpec.from_json(spec.to_json())
        assert back == spec and type(back.method) is type(spec.method)
        assert back.method.quant.wbits == 2 and back.seed == 5 and back.cat.k == 8


def test_versions_newer_are_refused_and_unversioned_configs_load():
    spec = RunSpec(method=make_config("qdrop", preset="fast"))
    d = spec.to_dict()
    with pytest.raises(ConfigError, match="newer"):
        RunSpec.from_dict({**d, "version": d["version"] + 1})
    with pytest.raises(ConfigError, match="newer"):
        RunSpec.from_dict({**d, "method": {**d["method"], "version": QDropConfig.version + 1}})
    legacy = {k: v for k, v in d["method"].items() if k != "version"}  # stored before configs had a version
    assert config_from_dict(legacy) == spec.method
    with pytest.raises(ConfigError, match="unknown run setting"):
        RunSpec.from_dict({**d, "colour": "red"})


def test_make_config_takes_flat_values_and_presets():
    cfg = make_config("pdquant", preset="fast", wbits=2, abits=4, iters=7, dc=False)
    assert (cfg.preset, cfg.iters, cfg.dc, cfg.quant.wbits, cfg.quant.abits) == ("fast", 7, False, 2, 4)
    assert cfg.calib == make_config("pdquant", preset="fast").calib != make_config("pdquant").calib
    assert make_config("gptq").quant.abits == 32  # a method's own default spec is kept
    with pytest.raises(ConfigError, match="not a setting of rtn"):
        make_config("rtn", iters=3)


def test_every_config_field_has_a_cli_option():
    parser = build_parser()
    options = {s for a in parser._subparsers._group_actions[0].choices["quantize"]._actions for s in a.option_strings}
    for name, (cls, _fn) in METHODS.items():
        for s in settings(cls):
            if not s.nested:
                assert s.flag in options, (name, s.name)
    for s in settings(QuantSpec):
        assert s.flag in options, s.name
    for s in settings(CATOptions):
        assert "--cat-" + s.name.replace("_", "-") in options, s.name
    for field in ("model", "weights", "data", "device", "eval_limit", "error_samples"):
        assert "--" + field.replace("_", "-") in options


def test_cli_options_build_the_same_spec_as_the_python_api():
    argv = [
        "quantize",
        "--model",
        "fmnist-vit",
        "--method",
        "qdrop",
        "--preset",
        "fast",
        "--iters",
        "9",
        "--wbits",
        "2",
        "--abits",
        "4",
        "--a-observer",
        "minmax",
        "--no-w-per-channel",
        "--drop-prob",
        "0.25",
        "--override",
        "head=8/8",
        "--eval-limit",
        "100",
        "--cat",
        "--cat-k",
        "4",
    ]
    spec = spec_from_args(build_parser().parse_args(argv))
    quant = QuantSpec(
        wbits=2, abits=4, a_observer="minmax", w_per_channel=False, overrides={"head": {"wbits": 8, "abits": 8}}
    )
    expected = RunSpec(
        model="fmnist-vit",
        method=make_config("qdrop", preset="fast", iters=9, drop_prob=0.25, quant=quant),
        eval_limit=100,
        cat=CATOptions(k=4),
    )
    assert spec == expected


def test_bounds_and_choices_come_from_the_field_metadata():
    with pytest.raises(ConfigError, match="kmeans_seed must be at least 0"):
        CATOptions(kmeans_seed=-1)
    with pytest.raises(ConfigError, match="alpha must be"):
        CATOptions(alpha=1.5)
    cfg = make_config("comq")
    cfg.order = "zigzag"
    with pytest.raises(ConfigError, match="order must be one of greedy, natural, random"):
        check_settings(cfg)
    cfg.order = "greedy"
    cfg.sweeps = 0
    with pytest.raises(ConfigError, match="sweeps must be at least 1"):
        check_settings(cfg)


def test_one_override_parser():
    text = "layer1.*=8/8  # keep\n\nfc=8/32"
    parsed = parse_overrides(text, ["conv1", "layer1.0.conv1", "fc"])
    assert parsed == {"layer1.*": {"wbits": 8, "abits": 8}, "fc": {"wbits": 8, "abits": 32}}
    assert parse_overrides(format_overrides(parsed)) == parsed
    assert parse_overrides(["fc=4/4"]) == {"fc": {"wbits": 4, "abits": 4}}
    with pytest.raises(ConfigError, match="PATTERN=W/A"):
        parse_overrides("layer1.* 8/8")
    with pytest.raises(BitWidthError, match="out of range"):
        parse_overrides("fc=9/8")
    with pytest.raises(ConfigError, match="matches no layer"):
        parse_overrides("nosuch.*=8/8", ["conv1"])


def test_bits_summary_labels_mixed_precision():
    layers = [
        {"name": "conv1", "wbits": 8, "abits": 8, "params": 100, "role": "first"},
        {"name": "a", "wbits": 2, "abits": 2, "params": 1000, "role": ""},
        {"name": "b", "wbits": 8, "abits": 8, "params": 1000, "role": ""},
        {"name": "fc", "wbits": 8, "abits": 8, "params": 100, "role": "last"},
    ]
    uniform = QuantSpec(wbits=2, abits=2)
    mixed = bits_summary(layers, uniform)
    assert mixed.mixed and mixed.overridden == 1
    assert mixed.w_avg == pytest.approx((800 + 2000 + 8000 + 800) / 2200)
    assert mixed.label == f"W2A2 + 1 override, {mixed.w_avg:.1f} bits avg"
    layers[2].update(wbits=2, abits=2)
    plain = bits_summary(layers, uniform)
    assert not plain.mixed and plain.label == "W2A2"


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("""CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL NOT NULL, finished REAL,
        status TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, wbits INTEGER NOT NULL,
        abits INTEGER NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, layers TEXT NOT NULL,
        timings TEXT NOT NULL, env TEXT NOT NULL, error TEXT, extras TEXT NOT NULL)""")
    conn.execute(
        "INSERT INTO runs VALUES ('old', 1.0, 2.0, 'done', 'm', 'rtn', 4, 4, ?, '{\"top1\": 50}', '[]', "
        "'{}', '{}', NULL, '{}')",
        (json.dumps({"calib": 64}),),
    )
    conn.commit()
    conn.close()
    store = RunStore(path)
    old = store.get("old")
    assert old.metrics == {"top1": 50} and old.spec == {} and old.bits_label == "W4A4"
    new = store.start("m", "rtn", 2, 2, {}, spec={"version": 1})
    assert store.get(new).spec == {"version": 1}
    assert old.sweep == "" and old.cell == ""
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_every_setting_option_names_the_methods_it_applies_to():
    found = method_settings()
    assert found["dc"][1] == ["pdquant"] and set(found["wbits"][1]) == set(METHODS)
