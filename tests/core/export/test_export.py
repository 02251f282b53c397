"""Export (ptq_core.export): ONNX QDQ parity, integer checkpoints, encodings, bit-packing, refusals."""

from __future__ import annotations

import functools
import json

import onnx
import pytest
import torch
from torch import nn

from ptq_core import QuantSpec, quantize
from ptq_core.cat import CATOptions, apply_cat
from ptq_core.errors import CheckpointError, ConfigError, ExportError
from ptq_core.export import (
    encodings,
    export_onnx,
    load_int_checkpoint,
    onnx_parity,
    pack_codes,
    packed_size,
    save_int_checkpoint,
    unpack_codes,
)
from ptq_core.fake_quant import FakeQuantize
from ptq_core.layerwise.quantizers import CodeQuantizer, MultipointQuantizer
from ptq_core.methods import (
    AdaRoundConfig,
    BRECQConfig,
    CATRefineConfig,
    COMQConfig,
    GPTQConfig,
    MultipointConfig,
    PDQuantConfig,
    QDropConfig,
    RepAPQConfig,
    RTNConfig,
)
from ptq_core.modules import quant_layers
from ptq_core.recon.rounding import AdaRoundQuantizer
from ptq_core.zoo import RepVGGBlock, ResNetCifar
from tests.support.helpers import randomize_bn

OVERRIDE = "layer2.0.conv1"
SPEC = QuantSpec(wbits=4, abits=4, overrides={OVERRIDE: {"wbits": 2, "abits": 6}})
REP_SPEC = QuantSpec(wbits=4, abits=4, overrides={"layer2.0.0.fused": {"wbits": 2, "abits": 6}})  # merged RepVGG
RECON = {"iters": 10, "calib": 32, "recon_batch": 16}
CONFIGS = {
    "rtn": RTNConfig(quant=SPEC, calib=32),
    "adaround": AdaRoundConfig(quant=SPEC, **RECON),
    "brecq": BRECQConfig(quant=SPEC, act_iters=5, **RECON),
    "qdrop": QDropConfig(quant=SPEC, **RECON),
    "pdquant": PDQuantConfig(quant=SPEC, dc_steps=3, **RECON),
    "gptq": GPTQConfig(quant=SPEC, calib=32),
    "comq": COMQConfig(quant=SPEC, calib=32),
    "multipoint": MultipointConfig(quant=SPEC, calib=32, budget=40.0, n_max=3),
    "repapq": RepAPQConfig(quant=REP_SPEC, **RECON),
    "cat_refine": CATRefineConfig(quant=SPEC, calib=32, base="rtn", iters=5, refine_batch=16),
}
CASES = [*CONFIGS, "cat"]  # "cat": RTN followed by CAT's logit correction (stage 2)
# Logits are O(1). Float summation order moves them by about 1e-6, but an activation that lands
# within rounding noise of a grid midpoint can move one step (up to about 2e-2 on these logits,
# in one sample in a hundred). A wrong export (e.g. a bias rounded to int32) is off by 1e-2 on average.
ATOL = 5e-2
MEAN_ATOL = 2e-4


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyRep(nn.Module):
    """RepVGG blocks (train form) named like ResNetCifar's layers, so `SPEC` fits both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = RepVGGBlock(1, 8)
        self.layer2 = nn.Sequential(nn.Sequential(RepVGGBlock(8, 12, 2)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.conv1(x))), 1))


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@functools.cache
def float_model(kind: str = "resnet") -> nn.Module:
    torch.manual_seed(1)
    model = TinyRep() if kind == "rep" else ResNetCifar(depth=8)
    return randomize_bn(model, seed=1).requires_grad_(False)


@functools.cache
def quantized(case: str) -> nn.Module:
    torch.manual_seed(0)
    if case == "cat":
        base = quantized("rtn")
        return apply_cat(float_model(), base, images(64, seed=2), CATOptions(k=4, alpha=0.5, min_cluster=2))[0]
    model = float_model("rep" if case == "repapq" else "resnet")
    return quantize(model, images(32, seed=0), CONFIGS[case]).model.requires_grad_(False)


def base_of(case: str) -> nn.Module:
    return float_model("rep" if case == "repapq" else "resnet")


def op_types(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("adaround", AdaRoundQuantizer),
        ("brecq", AdaRoundQuantizer),
        ("qdrop", AdaRoundQuantizer),
        ("pdquant", AdaRoundQuantizer),
        ("repapq", AdaRoundQuantizer),
        ("gptq", CodeQuantizer),
        ("comq", CodeQuantizer),
        ("multipoint", MultipointQuantizer),
    ],
)
def test_cases_carry_their_methods_quantizers(case, kind):
    """The export tests below really see learned roundings, solved codes and multipoint sums."""
    assert any(isinstance(layer.weight_quantizer, kind) for _, layer in quant_layers(quantized(case)))


@pytest.mark.parametrize("case", CASES)
def test_onnx_matches_fake_quant(case, tmp_path):
    qmodel = quantized(case)
    x = images(96, seed=3)
    with torch.no_grad():
        ref = qmodel(x)
    path = export_onnx(qmodel, x[:2], tmp_path / f"{case}.onnx")
    report = onnx_parity(path, [x[:50], x[50:]], ref, atol=ATOL, mean_atol=MEAN_ATOL, min_agreement=1.0)
    assert report.samples == 96
    assert report.agreement == 1.0, report
    assert report.max_abs_diff <= ATOL, report
    assert report.mean_abs_diff <= MEAN_ATOL, report  # a handful of grid-boundary flips at most
    assert report.passed
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    acts = [e for e in encodings(qmodel) if e["activation"] is not None]
    assert ops.count("QuantizeLinear") == len(acts)  # one QDQ pair per quantized layer input
    narrow = [e for e in acts if e["activation"]["bits"] < 8]
    q_inputs = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    clips = [n for n in graph.node if n.op_type == "Clip" and n.output[0] in q_inputs]
    assert len(clips) == len(narrow)  # sub-8-bit grids are clamped before quantizing; 8-bit ones saturate
    if case == "cat":
        assert "ArgMin" in ops  # the correction runs inside the graph, after the logits
        with torch.no_grad():
            assert not torch.allclose(ref, quantized("rtn")(x), atol=1e-3)  # and it does change them


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(wbits=32, abits=4),  # float weights behind a quantized input
        QuantSpec(wbits=5, abits=8, a_symmetric=True, w_per_channel=False),
    ],
)
def test_onnx_other_grids(spec, tmp_path):
    qmodel = quantize(float_model(), images(32, seed=0), RTNConfig(quant=spec, calib=32)).model
    x = images(96, seed=3)
    with torch.no_grad():
        ref = qmodel(x)
    path = export_onnx(qmodel, x[:2], tmp_path / "g.onnx")
    report = onnx_parity(path, x, ref, atol=ATOL, mean_atol=MEAN_ATOL, min_agreement=1.0)
    assert report.passed, report


def test_onnx_weight_only_is_float_exact(tmp_path):
    """No activation grid, so no grid-boundary flips: only float summation order differs."""
    spec = QuantSpec(wbits=4, abits=32)
    qmodel = quantize(float_model(), images(32, seed=0), GPTQConfig(quant=spec, calib=32)).model
    x = images(96, seed=3)
    with torch.no_grad():
        ref = qmodel(x)
    path = export_onnx(qmodel, x[:2], tmp_path / "wo.onnx")
    assert "QuantizeLinear" not in op_types(path)
    report = onnx_parity(path, x, ref, atol=1e-4, mean_atol=1e-5, min_agreement=1.0)
    assert report.passed, report


def test_onnx_weights_are_integer_codes_per_channel(tmp_path):
    qmodel = quantized("adaround")
    path = export_onnx(qmodel, images(2, seed=0), tmp_path / "w.onnx")
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    weight_dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dqs) == len(list(quant_layers(qmodel)))
    for node in weight_dqs:
        codes = onnx.numpy_helper.to_array(inits[node.input[0]])
        assert codes.dtype.name in ("int8", "uint8")
        assert {a.name: a.i for a in node.attribute}.get("axis") == 0
    # the 2-bit override's codes stay inside its 4-level grid
    layer = dict(quant_layers(qmodel))[OVERRIDE]
    shapes = {tuple(onnx.numpy_helper.to_array(inits[n.input[0]]).shape): n for n in weight_dqs}
    codes = onnx.numpy_helper.to_array(inits[shapes[tuple(layer.weight.shape)].input[0]])
    assert codes.min() >= layer.weight_quantizer.scheme.qmin and codes.max() <= layer.weight_quantizer.scheme.qmax


def test_multipoint_exports_expanded_form(tmp_path):
    qmodel = quantized("multipoint")
    path = export_onnx(qmodel, images(2, seed=0), tmp_path / "mp.onnx")
    convs = op_types(path).count("Conv") + op_types(path).count("Gemm") + op_types(path).count("MatMul")
    assert convs == 2 * len(list(quant_layers(qmodel)))  # expanded layer + channel merge, per layer
    assert any(e["weight"]["form"] == "multipoint" and max(e["weight"]["points"]) > 1 for e in encodings(qmodel))


def test_onnx_activation_grid_is_exact_outside_the_range(tmp_path):
    """A 3-bit input grid far exceeded on both sides: onnxruntime clamps exactly as the fake-quant does."""
    spec = QuantSpec(wbits=3, abits=3, first_last_bits=None, a_symmetric=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    qmodel = quantize(model, images(16, seed=0), RTNConfig(quant=spec, calib=16)).model
    x = images(64, seed=5) * 50.0
    with torch.no_grad():
        ref = qmodel(x)
    path = export_onnx(qmodel, x[:1], tmp_path / "lin.onnx")
    report = onnx_parity(path, x, ref, atol=1e-5, mean_atol=1e-6, min_agreement=1.0)
    assert report.passed, report


@pytest.mark.parametrize("opset", [13, 20])
def test_onnx_opset_range(opset, tmp_path):
    qmodel = quantized("rtn")
    x = images(32, seed=3)
    path = export_onnx(qmodel, x[:1], tmp_path / f"o{opset}.onnx", opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    with torch.no_grad():
        assert onnx_parity(path, x, qmodel(x), atol=ATOL, mean_atol=MEAN_ATOL, min_agreement=1.0).passed


def test_opset_out_of_range_is_refused(tmp_path):
    with pytest.raises(ExportError, match="opset 9"):
        export_onnx(quantized("rtn"), images(2, seed=0), tmp_path / "x.onnx", opset=9)


def test_parity_report_fails_on_wrong_reference(tmp_path):
    qmodel = quantized("rtn")
    x = images(32, seed=4)
    path = export_onnx(qmodel, x[:1], tmp_path / "r.onnx")
    with torch.no_grad():
        ref = qmodel(x)
    wrong = ref.clone()
    wrong[:, 0] += 100.0  # every top-1 becomes class 0
    report = onnx_parity(path, [(x, ref.argmax(1))], wrong, atol=ATOL)
    assert not report.passed
    assert report.max_abs_diff == pytest.approx(100.0, abs=1e-3)
    assert report.onnx_top1 == 1.0 and report.reference_top1 == float((ref.argmax(1) == 0).float().mean())
    json.dumps(report.to_dict())


# ---------------------------------------------------------------- integer checkpoints


@pytest.mark.parametrize("case", CASES)
def test_int_checkpoint_round_trip_is_bit_identical(case, tmp_path):
    qmodel = quantized(case)
    path = save_int_checkpoint(qmodel, tmp_path / f"{case}.safetensors")
    loaded = load_int_checkpoint(path, base_of(case), images(4, seed=0))
    x = images(64, seed=6)
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))
    assert encodings(loaded) == encodings(qmodel)


def test_int_checkpoint_packs_codes_at_their_bits(tmp_path):
    qmodel = quantized("rtn")
    path = save_int_checkpoint(qmodel, tmp_path / "p.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for name, layer in quant_layers(qmodel):
            packed = f.get_tensor(f"{name}.weight.codes")
            assert packed.dtype == torch.uint8
            assert packed.numel() == packed_size(layer.weight.numel(), layer.wbits)
        meta = json.loads(f.metadata()["ptq_int_checkpoint"])
    assert [entry["name"] for entry in meta["layers"]] == [n for n, _ in quant_layers(qmodel)]


def test_int_checkpoint_refuses_other_architecture_and_other_files(tmp_path):
    path = save_int_checkpoint(quantized("rtn"), tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_int_checkpoint(path, ResNetCifar(depth=14), images(2, seed=0))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a ptq-int-checkpoint"):
        load_int_checkpoint(tmp_path / "plain.safetensors", float_model(), images(2, seed=0))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_int_checkpoint(tmp_path / "missing.safetensors", float_model(), images(2, seed=0))


# ---------------------------------------------------------------- encodings


def test_encodings_bits_first_last_and_override():
    enc = encodings(quantized("rtn"))
    json.dumps(enc)
    bits = {e["name"]: (e["wbits"], e["abits"]) for e in enc}
    assert bits["conv1"] == (8, 8) and bits["fc"] == (8, 8)
    assert bits[OVERRIDE] == (2, 6)
    assert bits["layer1.0.conv1"] == (4, 4) and bits["layer3.0.conv2"] == (4, 4)
    for e in enc:
        w, a = e["weight"], e["activation"]
        assert (w["quant_min"], w["quant_max"]) == (0, 2 ** e["wbits"] - 1) and w["axis"] == 0
        assert (a["quant_min"], a["quant_max"]) == (0, 2 ** e["abits"] - 1) and a["axis"] is None
        assert len(w["scale"]) == len(w["zero_point"]) and min(w["scale"]) > 0
        assert all(w["quant_min"] <= z <= w["quant_max"] for z in w["zero_point"])


def test_encodings_weight_only_and_signed():
    spec = QuantSpec(wbits=3, abits=32, w_symmetric=True)
    enc = encodings(quantize(float_model(), images(16, seed=0), GPTQConfig(quant=spec, calib=16)).model)
    assert all(e["activation"] is None and e["abits"] == 32 for e in enc)
    inner = [e for e in enc if e["name"] not in ("conv1", "fc")]
    assert all(
        (e["weight"]["quant_min"], e["weight"]["quant_max"], e["weight"]["signed"]) == (-4, 3, True) for e in inner
    )
    assert all(z == 0 for e in inner for z in e["weight"]["zero_point"])


# ---------------------------------------------------------------- bit-packing


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_pack_unpack_round_trip(bits, signed):
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    gen = torch.Generator().manual_seed(bits)
    for shape in [(1,), (7,), (3, 5, 2), (64, 9)]:
        codes = torch.randint(lo, hi + 1, shape, generator=gen)
        codes.view(-1)[0], codes.view(-1)[-1] = lo, hi  # both ends of the grid
        packed = pack_codes(codes, bits, signed)
        assert packed.dtype == torch.uint8 and packed.numel() == -(-codes.numel() * bits // 8)
        assert torch.equal(unpack_codes(packed, bits, signed, shape), codes.to(torch.int32))


def test_pack_layout_and_limits():
    assert pack_codes(torch.tensor([1, 15, 2]), 4, False).tolist() == [0xF1, 0x02]  # low nibble first
    assert pack_codes(torch.tensor([0, 1, 2, 3]), 2, False).tolist() == [0b11100100]
    assert pack_codes(torch.tensor([-2, 1]), 2, True).tolist() == [0b1100]  # offsets 0 and 3
    with pytest.raises(ConfigError, match=r"\[0, 15\]"):
        pack_codes(torch.tensor([16]), 4, False)
    with pytest.raises(ConfigError, match="expected 2 uint8 bytes"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 4, False, (4,))


# ---------------------------------------------------------------- refusals


class PowerOfTwoQuantizer(FakeQuantize):
    """A non-uniform (logarithmic) weight grid: sign(w) * 2^round(log2 |w|)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.exp2(torch.round(torch.log2(x.abs().clamp(min=1e-8))))


class NoisyActQuantizer(FakeQuantize):
    """An input quantizer with its own forward (not the plain affine fake-quant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 1.01


def _with(quantizer_cls: type[FakeQuantize], side: str) -> nn.Module:
    import copy

    qmodel = copy.deepcopy(quantized("rtn"))
    layer = dict(quant_layers(qmodel))[OVERRIDE]
    old = getattr(layer, side)
    new = quantizer_cls(old.scheme, old.observer_name)
    new.set_qparams(old.scale, old.zero_point)
    new.observe = False
    setattr(layer, side, new)
    return qmodel


@pytest.mark.parametrize(
    ("cls", "side"), [(PowerOfTwoQuantizer, "weight_quantizer"), (NoisyActQuantizer, "act_quantizer")]
)
def test_inexpressible_quantizer_is_refused_naming_the_layer(cls, side, tmp_path):
    qmodel = _with(cls, side)
    with pytest.raises(ExportError, match=f"layer '{OVERRIDE}'.*{cls.__name__}.*no deployable form"):
        encodings(qmodel)
    with pytest.raises(ExportError, match=OVERRIDE):
        export_onnx(qmodel, images(2, seed=0), tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match=OVERRIDE):
        save_int_checkpoint(qmodel, tmp_path / "bad.safetensors")
