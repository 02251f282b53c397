"""Layer-input capture and the reconstruction engine on each test device (the `device` fixture).

On CUDA these run the branches a CPU never takes: host caches in pinned memory with
non-blocking copies, and the engine's device/host cache choice.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptq_core import QuantSpec, quantize
from ptq_core.methods import AdaRoundConfig, RTNConfig
from ptq_core.modules import quant_layers
from ptq_core.recon import module_input_output
from ptq_core.recon.capture import capture_io, probe_io
from ptq_core.zoo import ResNetCifar
from tests.support.helpers import randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")


def _resnet8(device: torch.device) -> nn.Module:
    torch.manual_seed(1)
    return randomize_bn(ResNetCifar(depth=8), seed=1).eval().to(device)


def _images(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).to(device)


def _hooked(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle: a plain forward hook records the submodule's input and output over a full forward."""
    seen = {}
    handle = model.get_submodule(name).register_forward_hook(
        lambda _m, args, out: seen.update(x=args[0].detach().clone(), y=out.detach().clone())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["x"], seen["y"]


def test_module_input_output_matches_a_forward_hook(device):
    model, x = _resnet8(device), _images(6, device)
    for name in ("layer1.0", "layer2.0", "fc"):
        ref_in, ref_out = _hooked(model, name, x)
        with torch.no_grad():
            inp, out = module_input_output(model, name, x, output=True)
            only_in, none = module_input_output(model, name, x, output=False)
        assert inp.device.type == device.type and out.device.type == device.type
        assert torch.equal(inp, ref_in) and torch.equal(out, ref_out) and torch.equal(only_in, ref_in)
        assert none is None


@pytest.mark.parametrize("where", ["device", "host"])
def test_capture_io_stacks_every_batch_where_asked(device, where):
    model, x = _resnet8(device), _images(21, device, seed=2)
    store = device if where == "device" else torch.device("cpu")
    ref_in, ref_out = _hooked(model, "layer2.0", x)
    ins, outs = capture_io(model, "layer2.0", x, batch_size=8, output=True, store=store)  # 8 + 8 + 5
    assert ins.device.type == store.type and outs.device.type == store.type
    assert ins.shape == ref_in.shape and outs.shape == ref_out.shape
    torch.testing.assert_close(ins.to(device), ref_in, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs.to(device), ref_out, rtol=1e-5, atol=1e-6)
    ins_only, none = capture_io(model, "layer2.0", x, batch_size=8, output=False, store=store)
    assert none is None and torch.equal(ins_only, ins)


def test_probe_io_gives_per_sample_shapes(device):
    model, x = _resnet8(device), _images(3, device)
    ref_in, ref_out = _hooked(model, "layer2.0", x)
    assert probe_io(model, "layer2.0", x) == (ref_in.shape[1:], ref_out.shape[1:])


@pytest.mark.parametrize("cache", ["device", "host"])
def test_engine_reconstructs_on_the_device_and_beats_rtn(device, cache):
    model, calib, held_out = _resnet8(device), _images(32, device), _images(64, device, seed=1)
    spec = QuantSpec(wbits=2, abits=8)
    config = AdaRoundConfig(quant=spec, iters=40, round_lr=3e-2, calib=32, cache=cache)
    res = quantize(model, calib, config)
    rtn = quantize(model, calib, RTNConfig(quant=spec, calib=32))
    assert {p.device.type for p in res.model.parameters()} | {b.device.type for b in res.model.buffers()} == {
        device.type
    }
    with torch.no_grad():
        ref = model(held_out)
        err = float((res.model(held_out) - ref).square().mean())
        err_rtn = float((rtn.model(held_out) - ref).square().mean())
    assert err < err_rtn, (err, err_rtn)
    units = res.extras["recon"]["units"]
    assert [u["name"] for u in units] == [n for n, _ in quant_layers(res.model)]  # AdaRound: one unit per layer
    # a CUDA run keeps its caches on the GPU or in host memory as asked; a CPU run has only the CPU
    expected = "cpu" if device.type == "cpu" or cache == "host" else device.type
    assert {torch.device(u["cache_store"]).type for u in units} == {expected}
