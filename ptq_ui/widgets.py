"""Widget groups (`*_ui`) that return validated config objects, plus small shared helpers.

Persistent choices live in `st.session_state[key]`; the widget drawing them uses the
key `"w_" + key`, seeded from the persistent value when missing (Streamlit drops a
widget's state when its page is left), and its value is copied back after drawing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from ptq_core.errors import ConfigError, PTQError
from ptq_core.methods import MethodConfig
from ptq_core.observers import OBSERVERS
from ptq_core.prepare import QuantSpec
from ptq_core.qscheme import check_bits

from . import bridge
from .state import init_state

__all__ = ["seeded", "keep", "errors_shown", "show_error", "bits_format", "parse_overrides", "quant_spec_ui",
           "method_ui", "method_fields_ui", "run_settings_ui", "method_config_ui", "current_spec"]  # fmt: skip

FIRST_LAST = {"8-bit": 8, "same as the rest": None, "float (32)": 32}
EVAL_LIMITS = [500, 2000, 5000, 0]  # 0 = the whole test split


def seeded(key: str, options: Sequence[Any] | None = None, default: Any = None) -> str:
    """Widget key for the persistent `key`, seeded from it (or `default`); valid for `options`."""
    init_state()
    st.session_state.setdefault(key, default)
    wkey = f"w_{key}"
    value = st.session_state[key]
    if options is not None and value not in options:
        value = options[0]
    if wkey not in st.session_state or (options is not None and st.session_state[wkey] not in options):
        st.session_state[wkey] = value
    return wkey


def keep(key: str, value: Any) -> Any:
    """Store a widget's value under its persistent key and return it."""
    st.session_state[key] = value
    return value


def show_error(exc: BaseException) -> None:
    """A PTQError as `st.error` (first line) plus a code block for any table that follows."""
    first, _, rest = str(exc).partition("\n")
    st.error(first or type(exc).__name__)
    if rest.strip():
        st.code(rest, language=None)


@contextmanager
def errors_shown() -> Iterator[None]:
    """Show a PTQError raised in the block and stop the page there."""
    try:
        yield
    except PTQError as exc:
        show_error(exc)
        st.stop()


def bits_format(bits: int) -> str:
    """32 reads "32 (float)"."""
    return "32 (float)" if bits == bridge.FLOAT_BITS else str(bits)


def parse_overrides(text: str, layer_names: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Lines `pattern=W/A` (fnmatch patterns, `#` comments) -> QuantSpec overrides; ConfigError when bad."""
    out: dict[str, dict[str, int]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, eq, bits = line.rpartition("=")
        w, slash, a = bits.strip().partition("/")
        pattern = pattern.strip()
        if not eq or not pattern or not slash or not w.strip().isdigit() or not a.strip().isdigit():
            raise ConfigError(f"override line {lineno} ({line!r}) must look like PATTERN=W/A, e.g. layer3.*=8/8")
        out[pattern] = {"wbits": check_bits(int(w)), "abits": check_bits(int(a))}
        if layer_names is not None and not fnmatch.filter(layer_names, pattern):
            examples = ", ".join(list(layer_names)[:3])
            raise ConfigError(f"override line {lineno}: {pattern!r} matches no layer (names look like {examples})")
    return out


def _select(label: str, key: str, options: Sequence[Any], **kw: Any) -> Any:
    return keep(key, st.selectbox(label, options, key=seeded(key, options), **kw))


def quant_spec_ui(layer_names: Sequence[str] | None = None) -> QuantSpec:
    """Bits, observers, granularity, first/last policy, BN folding and per-layer overrides."""
    c1, c2, c3 = st.columns(3)
    with c1:
        wbits = _select("Weight bits", "q_wbits", bridge.BITS, format_func=bits_format)
        abits = _select("Activation bits", "q_abits", bridge.BITS, format_func=bits_format)
    with c2:
        w_obs = _select("Weight observer", "q_w_observer", list(OBSERVERS), help="How the range is chosen: "
                        "min-max, a percentile, or the range that minimises the Lp error (mse).")  # fmt: skip
        a_obs = _select("Activation observer", "q_a_observer", list(OBSERVERS))
    with c3:
        gran = keep("q_granularity", st.radio("Weight granularity", ["per-channel", "per-tensor"],
                                              key=seeded("q_granularity", ["per-channel", "per-tensor"])))
        first_last = _select("First/last layer", "q_first_last", list(FIRST_LAST),
                             help="The first and last layers are the most sensitive; 8-bit is the usual policy.")
    c4, c5, c6 = st.columns(3)
    w_sym = keep("q_w_symmetric", c4.checkbox("Symmetric weights", key=seeded("q_w_symmetric")))
    a_sym = keep("q_a_symmetric", c5.checkbox("Symmetric activations", key=seeded("q_a_symmetric")))
    fold = keep("q_fold_bn", c6.checkbox("Fold BatchNorm", key=seeded("q_fold_bn")))
    text = keep("q_overrides", st.text_area("Per-layer overrides (one `pattern=W/A` per line)",
                                            key=seeded("q_overrides"), placeholder="layer3.*=8/8\nfc=8/32",
                                            help="fnmatch patterns over layer names; 32 keeps that side float."))
    with errors_shown():
        return QuantSpec(wbits=wbits, abits=abits, w_observer=w_obs, a_observer=a_obs,
                         w_per_channel=gran == "per-channel", w_symmetric=w_sym, a_symmetric=a_sym,
                         first_last_bits=FIRST_LAST[first_last], fold_bn=fold,
                         overrides=parse_overrides(text, layer_names))  # fmt: skip


def method_ui() -> type[MethodConfig]:
    """Method picker over the registry; returns the method's config class."""
    classes = bridge.method_classes()
    name = _select("Method", "q_method", list(classes), help="Every method registered in ptq_core.methods.")
    doc = (classes[name].__doc__ or "").strip().splitlines()
    if doc:
        st.caption(doc[0])
    return classes[name]


def _field_help(cls: type, name: str) -> str | None:
    """The `name: text` line of the class docstring's Attributes section, if any."""
    for klass in cls.__mro__:
        for line in (klass.__doc__ or "").splitlines():
            head, sep, text = line.strip().partition(":")
            if sep and head == name and text.strip():
                return text.strip()
    return None


def _field_key(cls: type, name: str) -> str:
    return "q_calib" if name == "calib" else f"qm_{getattr(cls, 'method', cls.__name__)}_{name}"


def _preset_choices(cls: type, f: dataclasses.Field) -> list[str]:
    """Choices of a `preset` field: its metadata, else a PRESETS tuple in the module of a base class."""
    if "choices" in f.metadata:
        return list(f.metadata["choices"])
    for klass in cls.__mro__:
        presets = getattr(sys.modules.get(klass.__module__), "PRESETS", None)
        if isinstance(presets, (tuple, list)) and presets:
            return list(presets)
    return [f.default]


def _apply_preset(cls: type, preset: str) -> None:
    """Put the preset's values into the settings (once per preset change), before their widgets are drawn."""
    applied = f"{_field_key(cls, 'preset')}__applied"
    if st.session_state.get(applied) == preset:
        return
    with errors_shown():
        base = cls.from_preset(preset)
    for f in dataclasses.fields(cls):
        if f.name in ("quant", "seed", "batch_size", "preset"):
            continue
        value, key = getattr(base, f.name), _field_key(cls, f.name)
        st.session_state[key] = st.session_state[f"w_{key}"] = value
        if value is None:
            st.session_state[f"{key}__on"] = st.session_state[f"w_{key}__on"] = False
    st.session_state[applied] = preset


def _preset_ui(cls: type, f: dataclasses.Field) -> str:
    """Preset picker ("fast" by default when offered); choosing one loads its values into the form."""
    choices = _preset_choices(cls, f)
    key = _field_key(cls, "preset")
    preset = keep(key, st.selectbox("Preset", choices, key=seeded(key, choices, "fast" if "fast" in choices
                                                                  else f.default), help=_field_help(cls, "preset")))
    if hasattr(cls, "from_preset"):
        _apply_preset(cls, preset)
    return preset


def _field_widget(cls: type, f: dataclasses.Field, hint: Any) -> Any:
    """One widget for one dataclass field, chosen by its type."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    key = _field_key(cls, f.name)
    label, meta = f.name.replace("_", " ").capitalize(), dict(f.metadata)
    kw = {"help": meta.get("help") or _field_help(cls, f.name)}
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:  # Optional[X]: a switch, then the widget
        on = st.checkbox(f"Set {label.lower()}", key=seeded(f"{key}__on", default=default is not None), **kw)
        if not keep(f"{key}__on", on):
            return None
        hint = next(a for a in args if a is not type(None))
        default = default if default is not None else hint()
    choices = list(args) if typing.get_origin(hint) is typing.Literal else meta.get("choices")
    if choices:
        return keep(key, st.selectbox(label, choices, key=seeded(key, choices, default), **kw))
    if hint is bool:
        return keep(key, st.checkbox(label, key=seeded(key, default=default), **kw))
    if hint in (int, float):
        bounds = {k: hint(meta[k]) for k in ("min", "max") if k in meta}
        return keep(key, st.number_input(label, min_value=bounds.get("min"), max_value=bounds.get("max"),
                                         step=1 if hint is int else None, format=None if hint is int else "%g",
                                         key=seeded(key, default=hint(default)), **kw))  # fmt: skip
    if hint is str:
        return keep(key, st.text_input(label, key=seeded(key, default=default), **kw))
    raise ConfigError(f"{cls.__name__}.{f.name} has a type the form cannot draw ({hint!r})")


def method_fields_ui(cls: type[MethodConfig]) -> dict[str, Any]:
    """A widget per method-specific dataclass field (the shared ones are drawn elsewhere)."""
    hints = typing.get_type_hints(cls)
    own = [f for f in dataclasses.fields(cls) if f.name in bridge.method_fields(cls)]
    if not own:
        st.caption("This method has no settings beyond the shared ones.")
        return {}
    values = {}
    if any(f.name == "preset" for f in own):
        preset_field = next(f for f in own if f.name == "preset")
        values["preset"] = _preset_ui(cls, preset_field)
        own = [f for f in own if f.name != "preset"]
    cols = st.columns(min(3, len(own)))
    for i, f in enumerate(own):
        with cols[i % len(cols)], errors_shown():
            values[f.name] = _field_widget(cls, f, hints[f.name])
    return values


def run_settings_ui(max_calib: int) -> dict[str, Any]:
    """Calibration size, seed, batch size and how many test images to evaluate on."""
    c1, c2, c3, c4 = st.columns(4)
    if st.session_state.get("q_calib", 1) > max_calib:  # e.g. a preset asks for more than the data has
        st.session_state["q_calib"] = st.session_state["w_q_calib"] = max(1, max_calib)
    calib = keep("q_calib", c1.number_input("Calibration images", 1, max(1, max_calib), step=64,
                                            key=seeded("q_calib"), help=f"At most {max_calib} here."))  # fmt: skip
    seed = keep("q_seed", c2.number_input("Seed", 0, 2**31 - 1, step=1, key=seeded("q_seed")))
    batch = keep("q_batch_size", c3.number_input("Batch size", 1, 4096, step=32, key=seeded("q_batch_size")))
    env_limit = bridge.default_eval_limit()
    limits = EVAL_LIMITS if env_limit is None else sorted({env_limit, *EVAL_LIMITS[:-1]}) + [0]
    limit = _select_in(c4, "Test images", "q_eval_limit", limits, env_limit or 2000)
    return {"calib": int(calib), "seed": int(seed), "batch_size": int(batch), "eval_limit": limit or None}


def _select_in(col: Any, label: str, key: str, options: list[int], default: int) -> int:
    fmt = lambda n: "all" if n == 0 else f"first {n}"  # noqa: E731
    wkey = seeded(key, options, default)
    return keep(key, col.selectbox(label, options, key=wkey, format_func=fmt, help="Fewer is faster."))


def method_config_ui(layer_names: Sequence[str] | None, max_calib: int) -> tuple[MethodConfig, int | None]:
    """The full settings form; returns a validated method config and the evaluation limit."""
    cls = method_ui()
    spec = quant_spec_ui(layer_names)
    extra = {}
    if bridge.method_fields(cls):
        st.markdown(f"**{cls.method} settings**")
        extra = method_fields_ui(cls)
    run = run_settings_ui(max_calib)
    with errors_shown():
        config = cls(quant=spec, calib=run["calib"], batch_size=run["batch_size"], seed=run["seed"], **extra)
    return config, run["eval_limit"]


def current_spec(layer_names: Sequence[str] | None = None) -> QuantSpec:
    """The quantization settings last chosen on the Quantize page (defaults if none or invalid).

    Override patterns that match none of `layer_names` are dropped (they belong to another model).
    """
    init_state()
    ss = st.session_state
    try:
        overrides = parse_overrides(ss["q_overrides"])
        if layer_names is not None:
            overrides = {p: b for p, b in overrides.items() if fnmatch.filter(layer_names, p)}
        return QuantSpec(wbits=ss["q_wbits"], abits=ss["q_abits"], w_observer=ss["q_w_observer"],
                         a_observer=ss["q_a_observer"], w_per_channel=ss["q_granularity"] == "per-channel",
                         w_symmetric=ss["q_w_symmetric"], a_symmetric=ss["q_a_symmetric"],
                         first_last_bits=FIRST_LAST.get(ss["q_first_last"], 8), fold_bn=ss["q_fold_bn"],
                         overrides=overrides)  # fmt: skip
    except PTQError:
        return QuantSpec()
