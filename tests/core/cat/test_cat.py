"""CAT (docs/methods.md): closed-form tables, identity cases, save/load, safeguards, stage 1, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ptq_core import QuantSpec, RTNConfig, prepare, quantize, set_quant_state
from ptq_core.cat import (
    CATCorrected,
    CATOptions,
    RefineOptions,
    affine_tables,
    apply_cat,
    build_result,
    fit_cat,
    fit_set,
    kmeans,
    load_cat,
    model_logits,
    pca_fit,
    refine_qparams,
    save_cat,
)
from ptq_core.cat.refine import RefinableQuantizer, refine_loss
from ptq_core.errors import CheckpointError, ConfigError
from ptq_core.methods import CATRefineConfig
from ptq_core.recon.rounding import AdaRoundQuantizer
from tests.support.helpers import TinyResNet, randomize_bn
from tests.support.paths import ROOT

SPEC = QuantSpec(wbits=4, abits=4, first_last_bits=None)


@pytest.fixture(scope="module")
def tiny():
    """A float TinyResNet, its RTN W4A4 copy, and 256 inputs (the first 128 calibrate)."""
    torch.manual_seed(0)
    model = randomize_bn(TinyResNet())
    x = torch.randn(256, 1, 12, 12)
    q = quantize(model, x[:128], RTNConfig(quant=SPEC, calib=128)).model
    return model, q, x


def _logits(n: int = 300, c: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zq = torch.randn(n, c, generator=g) * 3
    zf = 1.3 * zq + 0.5 + 0.4 * torch.randn(n, c, generator=g)
    return zq, zf


def test_closed_form_matches_least_squares():
    zq, zf = _logits()
    k = 5
    assign = torch.arange(len(zq)) % k
    t = affine_tables(zq, zf, assign, k, min_cluster=1, max_gamma=None)
    for j in range(k):
        rows = assign == j
        for c in range(zq.shape[1]):
            x = zq[rows, c].double()
            design = torch.stack([x, torch.ones_like(x)], 1)
            sol = torch.linalg.lstsq(design, zf[rows, c].double()[:, None]).solution.flatten()
            assert float(t["gamma"][j, c]) == pytest.approx(float(sol[0]), rel=1e-4, abs=1e-5)
            assert float(t["beta"][j, c]) == pytest.approx(float(sol[1]), rel=1e-4, abs=1e-5)
    assert not t["fallback"].any() and not t["capped"].any()


def test_k1_alpha0_is_the_identity_and_alpha1_the_global_affine(tiny):
    model, q, x = tiny
    cat, fit = apply_cat(model, q, x[128:], CATOptions(k=1, alpha=0.0))
    with torch.no_grad():
        base, out = q(x[:64]), cat(x[:64])
    assert torch.equal(out, base)
    cat.set_alpha(1.0)
    zq, zf = model_logits(q, x[128:]), model_logits(model, x[128:])
    design = torch.stack([zq[:, 0].double(), torch.ones(len(zq), dtype=torch.float64)], 1)
    slope = torch.linalg.lstsq(design, zf[:, 0].double()[:, None]).solution.flatten()[0]
    assert float(fit.gamma[0, 0]) == pytest.approx(float(slope), rel=1e-4)
    with torch.no_grad():
        assert torch.allclose(cat(x[:64]), fit.gamma[0] * base + fit.beta[0], atol=1e-5)


def test_saved_and_reloaded_model_gives_identical_logits(tiny, tmp_path):
    model, q, x = tiny
    cat, _ = apply_cat(model, q, x[128:], CATOptions(k=8, pca=3, alpha=0.6))
    path = save_cat(cat, tmp_path / "cat.safetensors")
    fresh, _ = prepare(model, SPEC, x[:8])  # uncalibrated: scales, zero points and tables all come from the file
    set_quant_state(fresh, True, True)
    again = load_cat(fresh, path)
    assert again.k == 8 and again.has_pca and float(again.alpha) == pytest.approx(0.6)
    with torch.no_grad():
        assert torch.equal(again(x), cat(x))
    with pytest.raises(CheckpointError):
        CATCorrected.from_state_dict(fresh, model.state_dict())


def test_small_clusters_fall_back_and_extreme_slopes_are_capped():
    zq, zf = _logits(n=41, c=3)
    assign = torch.zeros(41, dtype=torch.long)
    assign[40] = 1  # a single-sample cluster
    zq[assign == 0, 2] = 1.0 + 1e-6 * torch.arange(40.0)  # nearly constant logit: huge slope
    t = affine_tables(zq, zf, assign, 3, min_cluster=2, max_gamma=10.0)
    assert t["fallback"].tolist() == [False, True, True]  # cluster 2 is empty
    assert torch.equal(t["gamma"][1:], torch.ones(2, 3)) and torch.equal(t["beta"][1:], torch.zeros(2, 3))
    assert bool(t["capped"][0, 2]) and abs(float(t["gamma"][0, 2])) == pytest.approx(10.0, abs=1e-6)
    rows = assign == 0  # a capped slope still maps the cluster's mean onto the float mean
    mapped = t["gamma"][0, 2] * zq[rows, 2].double().mean() + t["beta"][0, 2]
    assert float(mapped) == pytest.approx(float(zf[rows, 2].double().mean()), abs=1e-3)
    raw = affine_tables(zq, zf, assign, 3, min_cluster=1, max_gamma=None)
    assert abs(float(raw["gamma"][0, 2])) > 10.0


def test_kmeans_finds_separated_blobs_deterministically():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(50, 2, generator=g) for c in centres])
    c1, a1 = kmeans(x, 3, seed=42)
    c2, a2 = kmeans(x, 3, seed=42)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    for block in a1.view(3, 50):  # every blob is one cluster
        assert len(set(block.tolist())) == 1
    assert len(set(a1.tolist())) == 3
    with pytest.raises(ConfigError):
        kmeans(x[:2], 3)


def test_pca_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.decomposition")
    zq, _ = _logits(n=200, c=8)
    mean, comps = pca_fit(zq, 3)
    ref = sklearn.PCA(3, svd_solver="full").fit(zq.double().numpy())
    ours = ((zq - mean) @ comps.T).double().numpy()
    theirs = ref.transform(zq.double().numpy())
    for j in range(3):  # components agree up to sign
        s = 1.0 if (ours[:, j] * theirs[:, j]).sum() > 0 else -1.0
        assert abs(s * ours[:, j] - theirs[:, j]).max() < 1e-3


def test_result_counts_fixes_and_breaks_consistently(tiny):
    model, q, x = tiny
    zq, zf = model_logits(q, x[128:]), model_logits(model, x[128:])
    fit = fit_cat(zq, zf, CATOptions(k=4, alpha=0.5))
    labels = zf.argmax(1)  # the float model's predictions as labels
    res = build_result(fit, zq, zf, labels)
    n = len(labels)
    assert res.top1 - res.top1_base == pytest.approx(100.0 * (res.fixes - res.breaks) / n)
    assert sum(res.eval_counts) == n and sum(res.fit_counts) == len(zq)
    assert res.fixes == res.status.count("fixed") and res.breaks == res.status.count("broken")
    assert res.overhead_floats == 4 * 2 * 10 + 4 * 10
    assert len(res.points_2d) == n and len(res.centroids_2d) == 4
    json.dumps(res.to_dict())  # JSON-serialisable as is


def test_bad_options_are_refused():
    for bad in ({"k": 0}, {"alpha": 1.5}, {"pca": 0}, {"max_gamma": -1.0}, {"fit_size": 0}):
        with pytest.raises(ConfigError):
            CATOptions(**bad)
    zq, zf = _logits(n=20, c=4)
    with pytest.raises(ConfigError):
        fit_cat(zq, zf, CATOptions(pca=5))  # more dimensions than classes
    with pytest.raises(ConfigError):
        fit_cat(zq, zf[:, :3])
    with pytest.raises(ConfigError):
        CATRefineConfig(base="nope")
    with pytest.raises(ConfigError):
        CATRefineConfig(base="cat_refine")


def test_fitting_set_is_disjoint_from_the_calibration_images(fmnist):
    fs = fit_set(fmnist, 512, 1024, seed=3)
    perm = torch.randperm(len(fmnist.calib), generator=torch.Generator().manual_seed(3)).tolist()
    assert not set(fs.indices) & set(perm[:512]) and len(set(fs.indices)) == 1024
    assert fs.description["disjoint"] and fs.description["offset"] == 512
    tight = fit_set(fmnist, len(fmnist.calib) - 100, 300, seed=3)
    assert tight.description["overlap_with_calibration"] == 200 and not tight.description["disjoint"]


def test_refinement_lowers_the_kl_and_leaves_the_float_model_alone(tiny):
    model, q, x = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = quantize(model, x[:128], RTNConfig(quant=QuantSpec(wbits=3, abits=3, first_last_bits=None), calib=128)).model
    report = refine_qparams(qm, model, x[:128], RefineOptions(iters=40, temperature=1.0, seed=0))
    assert report.quantizers > 0 and report.kl_after < report.kl_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():  # the report's KL is the refined model's
        kl = float(refine_loss(qm(x[:128]), model(x[:128]), 1.0))
    assert kl == pytest.approx(report.kl_after, rel=1e-4)


def test_cat_refine_method_runs_its_base_then_refines(tiny):
    model, _, x = tiny
    config = CATRefineConfig(quant=SPEC, calib=128, base="rtn", iters=40, temperature=1.0)
    res = quantize(model, x[:128], config)
    refine = res.extras["refine"]
    assert res.extras["base_method"] == "rtn" and refine["kl_after"] < refine["kl_before"]
    assert {"base", "refine"} <= set(res.timings) and config.base_config().method == "rtn"


def test_adaround_write_back_reproduces_the_refined_weights():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    base = quantize(
        torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3)),
        torch.randn(4, 4, 8, 8),
        RTNConfig(quant=QuantSpec(wbits=3, abits=32, first_last_bits=None), calib=4),
    ).model
    fq = AdaRoundQuantizer(base[0].weight_quantizer, w)
    with torch.no_grad():
        fq.alpha.copy_(torch.randn_like(fq.alpha) * 3)
    fq.harden()
    r = RefinableQuantizer(fq, w)
    assert torch.allclose(r(w), fq(w), atol=1e-6)  # starts where the base method left it
    with torch.no_grad():
        r.log_s.add_(torch.linspace(-0.2, 0.2, 6))
        r.zp.add_(torch.tensor([0.0, 1.0, -1.0, 0.0, 2.0, 0.0]))
        r.project()
        expect = r(w)
    r.write_back(w)
    assert torch.allclose(fq(w), expect, atol=1e-6)


def test_cli_cat_reports_base_and_corrected_accuracy(tmp_path):
    out = tmp_path / "r.json"
    env = dict(os.environ, PTQ_EXPLORER_HOME=str(tmp_path), OMP_NUM_THREADS="1")
    args = [
        "quantize",
        "--model",
        "fmnist-resnet20",
        "--method",
        "rtn",
        "--wbits",
        "4",
        "--abits",
        "2",
        "--calib",
        "128",
        "--eval-limit",
        "300",
        "--cat",
        "--cat-k",
        "8",
        "--cat-alpha",
        "0.5",
        "--cat-fit",
        "256",
        "--json",
        str(out),
        "--quiet",
    ]
    res = subprocess.run(
        [sys.executable, "-m", "ptq_core", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    m = data["metrics"]
    assert data["method"] == "rtn+cat" and isinstance(m["top1_base"], float) and isinstance(m["top1"], float)
    cat = data["extras"]["method"]["cat"]
    assert cat["k"] == 8 and cat["alpha"] == 0.5 and cat["top1"] == pytest.approx(m["top1"])
    assert cat["top1_base"] == pytest.approx(m["top1_base"])
    assert data["spec"]["cat"]["k"] == 8 and data["spec"]["cat"]["fit_size"] == 256
    data = data["extras"]
    assert data["data"]["cat_fit"] == {
        "split": "calib",
        "data": "fmnist-sample",
        "size": 256,
        "seed": 0,
        "offset": 128,
        "overlap_with_calibration": 0,
        "disjoint": True,
    }
    assert data["data"]["eval"]["size"] == 300
    bad = subprocess.run(
        [sys.executable, "-m", "ptq_core", "quantize", "--cat-k", "4"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "need --cat" in bad.stderr
