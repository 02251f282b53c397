"""benchmarks/peer_pdquant.py without the authors' code: the missing-peer error, the shims, the adapters."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.peer_pdquant import (
    PeerMissingError,
    Row,
    find_peer,
    format_table,
    goals,
    load_rows,
    mobilenet_block_view,
    parse_bits,
    peer_shims,
    resnet_block_view,
    save_row,
)
from ptq_core.zoo.mobilenetv2 import InvertedResidual
from ptq_core.zoo.resnet import BasicBlock

ROOT = Path(__file__).resolve().parents[2]


def test_missing_peer_is_one_clear_line_and_nonzero_exit(tmp_path):
    absent = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peer_pdquant.py"), "--peer-dir", str(absent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(absent) in lines[0] and "git clone https://github.com/hustvl/PD-Quant" in lines[0]
    assert proc.stdout == ""


def test_find_peer_reads_the_environment_and_checks_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PTQ_PEER_PDQUANT", str(tmp_path))
    with pytest.raises(PeerMissingError, match=str(tmp_path)):
        find_peer()
    (tmp_path / "quant").mkdir()
    (tmp_path / "quant" / "__init__.py").write_text("")
    (tmp_path / "models").mkdir()
    assert find_peer() == tmp_path
    assert find_peer(tmp_path) == tmp_path


def test_parse_bits():
    assert parse_bits("W4A4, w2a4") == [(4, 4), (2, 4)]
    for bad in ("", "4/4", "W4", "WxA4"):
        with pytest.raises(ValueError):
            parse_bits(bad)


def test_format_table_has_one_line_per_row_and_the_dc_share():
    rows = [
        Row("fmnist-resnet20", "W4A4", "equal", "ours", 91.234, 10.0, 9.0, 2.5, 9),
        Row("fmnist-resnet20", "W4A4", "equal", "theirs", 90.0, 40.0, 39.0, 36.0, 11),
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model |")
    assert "| 91.23 | 10.0 | 9.0 | 2.5 | 25 % | 9 |" in lines[2]
    assert "| 90 % | 11 |" in lines[3]


def test_rows_round_trip_and_goals_read_each_pair(tmp_path):
    path = tmp_path / "rows.jsonl"
    runs = [
        Row("fmnist-resnet20", "W4A4", "equal, 40 steps/unit", "theirs (40 steps, DC 500)", 93.6, 50, 174.0, 9, 11, 32),
        Row(
            "fmnist-resnet20",
            "W4A4",
            "equal, 40 steps/unit",
            "ours (paper, 40 steps, DC 500)",
            93.2,
            40,
            140.8,
            9,
            11,
            32,
        ),
        Row(
            "fmnist-resnet20",
            "W4A4",
            "ours fast vs theirs 200",
            "theirs (200 steps, DC 500)",
            93.85,
            9,
            3000,
            9,
            11,
            256,
        ),
        Row(
            "fmnist-resnet20",
            "W4A4",
            "ours fast vs theirs 200",
            "ours (fast, 500 steps, DC 25)",
            94.1,
            9,
            290,
            9,
            11,
            256,
        ),
        Row("fmnist-mobilenetv2", "W4A4", "equal, 40 steps/unit", "ours (paper, 40 steps, DC 500)", 90, 9, 9, 9, 9, 32),
    ]
    runs = [dataclasses.replace(r, load=1.5) for r in runs]
    for r in runs:
        save_row(path, r)
    assert load_rows(path) == runs
    lines = goals(load_rows(path)).splitlines()[2:]
    assert len(lines) == 2  # the MobileNet run has no partner
    equal, fast = lines
    assert "| -0.40 | 0.81 | not met (>= -0.3) | met (<= 1) |" in equal
    assert "| +0.25 | 0.10 | met (>= -0.5) | met (<= 0.1) |" in fast


def test_shims_send_cuda_calls_to_the_device_and_are_undone():
    t, layer = torch.ones(2), nn.Linear(2, 2)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    originals = (torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda)
    with peer_shims("cpu"):
        assert t.cuda().device.type == "cpu"
        assert t.to("cuda").device.type == "cpu"
        assert t.to(device=torch.device("cuda:0"), dtype=torch.float64).dtype == torch.float64
        assert layer.cuda() is layer and layer.weight.device.type == "cpu"
        opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, min_lr=1e-5, verbose=False, patience=100)
    assert torch.optim.lr_scheduler.ReduceLROnPlateau is plateau
    assert (torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda) == originals
    assert t.to(torch.float64).dtype == torch.float64


def test_resnet_view_presents_the_shortcut_as_none_or_conv_bn():
    plain, down = BasicBlock(8, 8), BasicBlock(8, 16, stride=2)
    v = resnet_block_view(plain)
    assert v.downsample is None and v.conv1 is plain.conv1 and v.bn2 is plain.bn2 and v.relu2 is plain.relu2
    w = resnet_block_view(down)
    assert isinstance(w.downsample[0], nn.Conv2d) and isinstance(w.downsample[1], nn.BatchNorm2d)


@pytest.mark.parametrize("expand", [1, 4])
def test_mobilenet_view_is_flat_with_convs_at_0_3_6(expand):
    block = InvertedResidual(16, 16, 1, expand)
    v = mobilenet_block_view(block)
    assert v.expand_ratio == expand and v.use_res_connect
    convs = (0, 3) if expand == 1 else (0, 3, 6)
    assert len(v.conv) == 3 * len(convs) - 1
    for i in convs:
        assert isinstance(v.conv[i], nn.Conv2d) and isinstance(v.conv[i + 1], nn.BatchNorm2d)
    # the flat list is the block's own modules, in the order they run
    x = torch.randn(2, 16, 6, 6)
    block.eval()
    y = x
    for m in v.conv:
        y = m(y)
    assert torch.allclose(block(x), x + y)


@pytest.mark.parametrize("name", ["fmnist-resnet20", "fmnist-mobilenetv2"])
def test_their_quant_models_of_zoo_models_match_the_float_model(name):
    """Only where their code is present: through the adapters, their float and BN-folded QuantModels
    (quantization off) compute what the zoo model computes, and every zoo block became one of theirs."""
    from benchmarks.peer_pdquant import import_peer, zoo_specials
    from ptq_core.models import load_model

    try:
        folder = find_peer()
    except PeerMissingError:
        pytest.skip("the authors' PD-Quant code is not here (see benchmarks/peer_pdquant.py)")
    peer = import_peer(folder)
    model = load_model(name).model
    n_blocks = sum(isinstance(m, (BasicBlock, InvertedResidual)) for m in model.modules())
    x = torch.randn(4, 1, 28, 28)
    wq, aq = {"n_bits": 4, "channel_wise": True}, {"n_bits": 4, "leaf_param": True}
    with zoo_specials(peer), torch.no_grad():
        for fusing in (False, True):
            qm = peer.quant.QuantModel(copy.deepcopy(model), wq, aq, is_fusing=fusing).eval()
            qm.set_quant_state(False, False)
            assert sum(isinstance(m, peer.quant.BaseQuantBlock) for m in qm.modules()) == n_blocks
            assert torch.allclose(qm(x), model(x), atol=1e-4, rtol=1e-4)
