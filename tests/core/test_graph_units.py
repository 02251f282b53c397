"""Units from the dataflow graph, DC on every unit with BatchNorm, and the KL tail from the cut (issue 12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptq_core import QuantSpec, prepare, quantize
from ptq_core.blocks import find_units, known_block_units
from ptq_core.errors import ConfigError
from ptq_core.methods import PDQuantConfig
from ptq_core.modules import QuantLayer, quant_layers
from ptq_core.prepare import execution_order
from ptq_core.recon import ReconContext, ReconOptions, TailRunner, float_logits, module_input_output
from ptq_core.recon.engine import UnitTrainer
from ptq_core.recon.prepare_cache import NO_BN, build_unit_cache
from ptq_core.recon.step import StepInputs
from ptq_core.recon.trainables import unit_trainables
from ptq_core.zoo import ZOO_ARCHS, zoo_input
from tests.support.graph_nets import BLOCKS, NETS
from tests.support.helpers import TinyResNet, randomize_bn

FLOAT = QuantSpec(wbits=32, abits=32, first_last_bits=None)


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return randomize_bn(NETS[name]()), torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def expected_units(model: nn.Module, blocks: tuple[type[nn.Module], ...], x: torch.Tensor) -> list[tuple[str, int]]:
    """(unit name, number of layers): each instance of a block class is one unit, any other layer its own."""
    owners = [n for n, m in model.named_modules() if isinstance(m, blocks)]
    layers = execution_order(model, x, (nn.Conv2d, nn.Linear))
    units: list[tuple[str, int]] = []
    for ly in layers:
        owner = next((o for o in owners if ly.startswith(o + ".")), ly)
        if units and units[-1][0] == owner:
            units[-1] = (owner, units[-1][1] + 1)
        else:
            units.append((owner, 1))
    return units


@pytest.mark.parametrize("name", list(NETS))
def test_graph_finds_the_blocks_of_unknown_classes(name):
    model, x = _net(name)
    qmodel, _ = prepare(model, QuantSpec(), x)
    plan = find_units(qmodel, x[:2])
    assert plan.source == "graph" and plan.fallback == ""
    assert [(u.name, len(u.layers)) for u in plan.units] == expected_units(model, BLOCKS[name], x)
    assert sorted(ly for u in plan.units for ly in u.layers) == sorted(n for n, _ in quant_layers(qmodel))
    # the old source knows none of these classes: one unit per layer
    assert all(u.kind != "block" for u in known_block_units(qmodel, x[:2]))


def _zoo_and_torchvision():
    cases = [(arch, lambda a=arch: (ZOO_ARCHS[a](), torch.randn(2, *zoo_input(a)))) for arch in ZOO_ARCHS]
    # merged RepVGG blocks are one conv each: only the known class keeps each a block unit
    cases.append(
        (
            "fmnist-repvgg-deploy",
            lambda: (ZOO_ARCHS["fmnist-repvgg"]().eval().reparameterize(), torch.randn(2, 1, 28, 28)),
        )
    )
    import torchvision

    for tv in ("resnet18", "resnet50", "mobilenet_v2", "regnet_x_400mf", "mnasnet1_0"):
        cases.append((tv, lambda t=tv: (torchvision.models.get_model(t, weights=None), torch.randn(2, 3, 64, 64))))
    cases.append(
        ("vit_b_16", lambda: (torchvision.models.vit_b_16(weights=None, image_size=32), torch.randn(2, 3, 32, 32)))
    )
    return cases


@pytest.mark.parametrize("name,build", _zoo_and_torchvision(), ids=lambda c: c if isinstance(c, str) else "")
def test_graph_units_equal_the_known_block_classes(name, build):
    model, x = build()
    qmodel, _ = prepare(randomize_bn(model), QuantSpec(), x)
    graph = find_units(qmodel, x)
    known = find_units(qmodel, x, "blocks")
    assert graph.source == "graph" and known.source == "blocks"
    assert [(u.name, u.layers) for u in graph.units] == [(u.name, u.layers) for u in known.units]
    assert sum(u.kind == "block" for u in graph.units) >= 3


class Untraceable(TinyResNet):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > -1e9:
            return super().forward(x)
        return super().forward(-x)


def test_untraceable_model_falls_back_and_says_why():
    model, x = randomize_bn(Untraceable()), TinyResNet.example_inputs(32)
    qmodel, _ = prepare(model, QuantSpec(), x)
    plan = find_units(qmodel, x[:2])
    assert plan.requested == "graph" and plan.source == "layers"
    assert "torch.fx could not trace" in plan.fallback and "one unit per layer" in plan.fallback
    res = quantize(model, x, PDQuantConfig(quant=QuantSpec(wbits=4, abits=8), iters=2, dc_steps=1, calib=32))
    rec = res.extras["recon"]
    assert rec["unit_plan"]["fallback"] == plan.fallback
    assert all(u["kl_path"].startswith("full forward: torch.fx could not trace") for u in rec["units"])


def test_patterns_override_the_units():
    model, x = _net("dw-bottleneck")
    qmodel, _ = prepare(model, QuantSpec(), x)
    graph = find_units(qmodel, x[:2])
    plan = find_units(qmodel, x[:2], patterns=["blocks.1.*"])  # its expand, dw, project, shortcut: four units
    inner = [
        n
        for n, m in qmodel.named_modules()
        if n.startswith("blocks.1.") and n.count(".") == 2 and any(isinstance(s, QuantLayer) for s in m.modules())
    ]
    assert [u.name for u in plan.units if u.name.startswith("blocks.1")] == inner
    assert len(plan.units) == len(graph.units) - 1 + len(inner)
    assert [u.name for u in find_units(qmodel, x[:2], "layers", patterns=["blocks"]).units][1] == "blocks"
    with pytest.raises(ConfigError, match="match no module"):
        find_units(qmodel, x[:2], patterns=["nothing.here"])


def _bn_count(fp_model: nn.Module, name: str, folded: dict[str, str]) -> int:
    m = fp_model.get_submodule(name)
    n = sum(isinstance(s, nn.BatchNorm2d) for s in m.modules())
    return n or int(name in folded)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("source", ["graph", "layers"])
def test_dc_runs_on_every_unit_with_batchnorm(name, source):
    model, x = _net(name)
    events = []
    res = quantize(
        model,
        x,
        PDQuantConfig(quant=QuantSpec(wbits=4, abits=8), iters=1, dc_steps=2, calib=8, unit_source=source),
        events.append,
    )
    folded = dict(res.report.folded)
    units = res.extras["recon"]["units"]
    assert [u["name"] for u in units] == [u["name"] for u in res.extras["recon"]["unit_plan"]["units"]]
    for u in units:
        k = _bn_count(model, u["name"], folded)
        if k:
            assert u["dc"] == f"corrected toward {k} BatchNorm layer(s)" and u["dc_seconds"] > 0, u
        else:
            assert u["dc"] == NO_BN and u["dc_seconds"] == 0.0, u
            assert any(e.stage == "correct" and e.unit == u["name"] and NO_BN in e.message for e in events)
    assert any(u["dc"] == NO_BN for u in units)  # the linear head has none


def _prepared(name: str, source: str):
    model, x = _net(name)
    qmodel, _ = prepare(model, FLOAT, x)
    return model, qmodel, x, find_units(qmodel, x[:2], source).units


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("source", ["graph", "layers"])
def test_kl_tail_gives_the_float_logits_when_nothing_is_quantized(name, source):
    model, qmodel, x, units = _prepared(name, source)
    fp = float_logits(model, x)
    tails = TailRunner(qmodel, [u.name for u in units])
    crossing = 0
    with torch.no_grad():
        for u in units:
            _, out = module_input_output(qmodel, u.name, x, output=True)
            skips = tails.capture_skips(u.name, x, 3)  # batches of 3: the cache is assembled from parts
            logits = tails(u.name, x, out, skips)
            assert torch.allclose(logits, fp, atol=1e-5), u.name
            assert not torch.allclose(tails(u.name, x, out + 1.0, skips), fp, atol=1e-3)  # it reads the output
            assert tails.path(u.name).startswith("tail"), tails.path(u.name)
            crossing += len(skips)
    # graph units are cut where nothing skips across; layers inside a block need the cached skip inputs
    has_skips = source == "layers" and bool(BLOCKS[name])
    assert (crossing > 0) == has_skips


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("source", ["graph", "layers"])
def test_one_step_runs_no_prefix(name, source):
    model, qmodel, x, units = _prepared(name, source)
    order = execution_order(qmodel, x[:1], (QuantLayer,))
    opts = ReconOptions(iters=2, batch_size=4, kl_weight=1.0, drop_prob=0.5, quant_act=False)
    ctx = ReconContext(qmodel, model, x, float_logits(model, x), forward_batch=4)
    ctx.tail_runner(units)
    calls = {n: 0 for n in order}
    hooks = [
        qmodel.get_submodule(n).register_forward_pre_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
        for n in order
    ]
    try:
        for i, unit in enumerate(units[1:-1], 1):  # units with both a prefix and a rest
            layers = [qmodel.get_submodule(n) for n in unit.layers]
            cache, _ = build_unit_cache(ctx, unit, i, len(units), opts)
            with unit_trainables(layers, opts) as tr:
                inputs = StepInputs(
                    qmodel, unit.name, qmodel.get_submodule(unit.name), cache, x, ctx.fp_logits, tr.rounders, ctx.tails
                )
                trainer = UnitTrainer(inputs, tr, opts)
                idx = torch.arange(4)
                trainer.step(1, idx)  # the first call also checks the tail against the full forward, once
                calls.update({n: 0 for n in order})
                trainer.step(2, idx)
            first = order.index(unit.layers[0])
            assert all(calls[n] == 0 for n in order[:first]), (unit.name, calls)
            assert all(calls[n] >= 1 for n in unit.layers) and calls[order[-1]] >= 1
            assert ctx.tails.path(unit.name).startswith("tail")
    finally:
        for h in hooks:
            h.remove()


def test_cli_units_prints_units_and_kl_paths(tmp_path, capsys):
    from ptq_core.cli import build_parser, main, spec_from_args
    from tests.support.graph_nets import dw_bottleneck_net

    weights = tmp_path / "w.pt"
    torch.save(randomize_bn(dw_bottleneck_net()).state_dict(), weights)
    model = "tests/support/graph_nets.py:dw_bottleneck_net"
    assert main(["units", "--model", model, "--weights", str(weights), "--source", "layers"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("16 units from layers") and len(out.splitlines()) == 2 + 16
    assert sum("skip input" in line for line in out.splitlines()) == 14  # every layer inside a bottleneck
    assert main(["units", "--model", model, "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "6 units from graph" in out and "DWBottleneck" in out and "skip" not in out and NO_BN in out
    cfg = spec_from_args(build_parser().parse_args(["quantize", "--method", "qdrop", "--unit", "layer1.*"])).method
    assert cfg.unit_patterns == ["layer1.*"]
    assert main(["quantize", "--method", "rtn", "--unit", "layer1.*"]) == 2
