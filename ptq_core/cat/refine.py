"""CAT stage 1 (docs/methods.md): refine step sizes and zero points of an already-quantized model.

Objective over the calibration images X, with p = softmax(z / T):

    L = mean_x KL(p_fp(x) || p_q(x)) + lambda_p * (||delta - delta_0||^2 + ||z - z_0||^2)

summed over every enabled weight and activation quantizer (delta: step sizes,
z: zero points, both starting from the base method's values). Nothing else
changes: the base method's rounding is kept. Per quantizer:

- plain (round-to-nearest) weights and activations: ``s (clamp(round(x / s) + z) - z)``,
  LSQ gradient for s, straight-through rounding for z;
- AdaRound weights (AdaRound / BRECQ / QDrop / PD-Quant): the learned integer level
  ``L = floor(W / s_0) + h`` is fixed and the weight is ``s (clamp(L + z) - z)``;
  afterwards the stored rounding offsets are rewritten so the quantizer reproduces it.

Step sizes are optimised in log space (positive by construction), zero points as
continuous values rounded straight-through and kept on the integer grid. The
released CAT code runs PD-Quant unchanged as its stage 1 and never uses this
regulariser; our defaults for lambda_p, the learning rates and the step count are
ours (the paper's are not public).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..modules import quant_layers
from ..primitives import along, clamp_inclusive, fake_quantize, round_ste
from ..progress import ProgressEvent, ProgressFn, emit
from ..quantizer import AffineQuantizer
from ..recon import arch_params, float_logits
from ..recon.rounding import AdaRoundQuantizer
from ..recon.trainables import MIN_SCALE

__all__ = ["RefineOptions", "RefineReport", "RefinableQuantizer", "refine_qparams", "refine_loss"]


@dataclass
class RefineOptions:
    """Settings of stage 1.

    Attributes:
        iters: Adam steps.
        batch_size: Images per step.
        lambda_p: Weight of the drift regulariser.
        temperature: Softmax temperature T (None: the architecture table, 4 ResNet / 1 MobileNetV2).
        scale_lr: Adam learning rate of log step sizes (a relative change per step).
        zp_lr: Adam learning rate of the continuous zero points.
        weights: Refine weight quantizers.
        acts: Refine activation quantizers.
        seed: Seed of the batch draw.
    """

    iters: int = 500
    batch_size: int = 32
    lambda_p: float = 0.01
    temperature: float | None = None
    scale_lr: float = 1e-3
    zp_lr: float = 1e-2
    weights: bool = True
    acts: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"refine {name} must be a positive integer, got {v!r}")
        if not self.lambda_p >= 0:
            raise ConfigError(f"lambda_p must be non-negative, got {self.lambda_p}")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if not (self.scale_lr >= 0 and self.zp_lr >= 0):
            raise ConfigError("refine learning rates must be non-negative")


@dataclass
class RefineReport:
    """What stage 1 did: loss history, KL before/after, drift of the parameters."""

    quantizers: int
    kl_before: float
    kl_after: float
    temperature: float
    history: list[dict[str, float]] = field(default_factory=list)
    mean_rel_scale_change: float = 0.0
    zero_points_moved: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class RefinableQuantizer(nn.Module):
    """Stand-in for a quantizer while its step size and zero point are trained."""

    def __init__(self, fq: AffineQuantizer, weight: Tensor | None) -> None:
        super().__init__()
        self.fq, self.scheme, self.observe = fq, fq.scheme, False
        s0, z0 = fq.scale.detach().clone(), fq.zero_point.detach().clone().float()
        self.register_buffer("s0", s0)
        self.register_buffer("z0", z0)
        self.log_s = nn.Parameter(s0.clamp(min=MIN_SCALE).log())
        self.zp = nn.Parameter(z0.clone())
        self.level = None  # fixed AdaRound integer levels (minus the zero point)
        if isinstance(fq, AdaRoundQuantizer) and weight is not None:
            self.level = fq.integer_codes(weight) - along(z0, weight.dim(), fq.axis)

    def scale(self) -> Tensor:
        return self.log_s.exp()

    def zero_point(self) -> Tensor:
        return round_ste(self.zp)

    def forward(self, x: Tensor) -> Tensor:
        s, z, axis = self.scale(), self.zero_point(), self.fq.axis
        qmin, qmax = self.scheme.qmin, self.scheme.qmax
        if self.level is None:
            return fake_quantize(x, s, z, qmin, qmax, axis)
        zb, sb = along(z, x.dim(), axis), along(s, x.dim(), axis)
        return (clamp_inclusive(self.level + zb, qmin, qmax) - zb) * sb

    def drift(self) -> Tensor:
        return (self.scale() - self.s0).square().sum() + (self.zp - self.z0).square().sum()

    @torch.no_grad()
    def project(self) -> None:
        """Keep zero points inside the integer grid."""
        self.zp.clamp_(self.scheme.qmin, self.scheme.qmax)

    @torch.no_grad()
    def write_back(self, weight: Tensor | None) -> None:
        """Store the refined (scale, rounded zero point) in the original quantizer."""
        s = self.scale().detach().clamp(min=MIN_SCALE)
        z = torch.round(self.zp.detach()).clamp(self.scheme.qmin, self.scheme.qmax)
        self.fq.set_qparams(s, z)
        if self.level is not None and weight is not None:
            floor = torch.floor(weight.detach() * along(s, weight.dim(), self.fq.axis).reciprocal())
            self.fq.round_up = self.level - floor  # floor(W / s) + z + offset = level + z


def _targets(model: nn.Module, opts: RefineOptions) -> list[tuple[nn.Module, str, AffineQuantizer]]:
    out = []
    for _, layer in quant_layers(model):
        for attr, on, enabled in (
            ("weight_quantizer", layer.quant_weight, opts.weights),
            ("act_quantizer", layer.quant_act, opts.acts),
        ):
            fq = getattr(layer, attr)
            if enabled and on and isinstance(fq, AffineQuantizer) and not fq.scheme.is_float and fq.is_calibrated:
                if isinstance(fq, AdaRoundQuantizer) and not fq.hardened:
                    raise ConfigError("stage 1 needs hardened AdaRound rounding; finish the base method first")
                out.append((layer, attr, fq))
    return out


@contextmanager
def _installed(model: nn.Module, opts: RefineOptions) -> Iterator[list[tuple[nn.Module, str, RefinableQuantizer]]]:
    targets = _targets(model, opts)
    swaps = []
    try:
        for layer, attr, fq in targets:
            r = RefinableQuantizer(fq, layer.weight if attr == "weight_quantizer" else None)
            setattr(layer, attr, r)
            swaps.append((layer, attr, r))
        yield swaps
    finally:
        for layer, attr, r in swaps:
            setattr(layer, attr, r.fq)


def refine_loss(q_logits: Tensor, fp_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(fp / T) || softmax(q / T)), mean over the batch (no T^2 factor, as PD-Quant)."""
    return F.kl_div(
        (q_logits / temperature).log_softmax(1),
        (fp_logits / temperature).log_softmax(1),
        log_target=True,
        reduction="batchmean",
    )


@torch.no_grad()
def _mean_kl(model: nn.Module, images: Tensor, fp_logits: Tensor, t: float, bs: int = 256) -> float:
    total = sum(
        float(refine_loss(model(images[i : i + bs]), fp_logits[i : i + bs], t)) * len(images[i : i + bs])
        for i in range(0, len(images), bs)
    )
    return total / max(len(images), 1)


def refine_qparams(
    qmodel: nn.Module,
    fp_model: nn.Module,
    images: Tensor,
    options: RefineOptions | None = None,
    progress: ProgressFn | None = None,
) -> RefineReport:
    """Refine `qmodel`'s step sizes and zero points in place (quantization must be on).

    Args:
        qmodel: A quantized model from any method (its weights are not changed).
        fp_model: The float model giving the target predictions (only read).
        images: Calibration images on the models' device.
        options: Stage-1 settings.
        progress: Receives ``ProgressEvent("refine", ...)``; may raise `RunCancelled`,
            in which case `qmodel` keeps its original parameters.
    """
    opts = options or RefineOptions()
    t = opts.temperature if opts.temperature is not None else arch_params(fp_model).temperature
    qmodel.eval()
    with torch.no_grad():
        fp_logits = float_logits(fp_model.eval(), images)
    kl0 = _mean_kl(qmodel, images, fp_logits, t)
    grads = [(p, p.requires_grad) for p in qmodel.parameters()]
    qmodel.requires_grad_(False)
    history: list[dict[str, float]] = []
    gen = torch.Generator().manual_seed(opts.seed)
    try:
        with _installed(qmodel, opts) as swaps:
            if not swaps:
                raise ConfigError("nothing to refine: no calibrated quantizer is switched on")
            optim = torch.optim.Adam(
                [
                    {"params": [r.log_s for _, _, r in swaps], "lr": opts.scale_lr},
                    {"params": [r.zp for _, _, r in swaps], "lr": opts.zp_lr},
                ]
            )
            every = max(1, opts.iters // 100)
            for step in range(1, opts.iters + 1):
                idx = torch.randint(len(images), (min(opts.batch_size, len(images)),), generator=gen)
                idx = idx.to(images.device)
                kl = refine_loss(qmodel(images[idx]), fp_logits[idx], t)
                drift = sum((r.drift() for _, _, r in swaps), torch.zeros((), device=images.device))
                loss = kl + opts.lambda_p * drift
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                for _, _, r in swaps:
                    r.project()
                if step % every == 0 or step == opts.iters:
                    losses = {"kl": float(kl.detach()), "drift": float(drift.detach()), "total": float(loss.detach())}
                    history.append({"step": step, **losses})
                    emit(progress, ProgressEvent("refine", step, opts.iters, losses=losses, message="CAT stage 1"))
            with torch.no_grad():
                rel = torch.cat([((r.scale() - r.s0).abs() / r.s0.clamp(min=MIN_SCALE)).flatten() for _, _, r in swaps])
            moved = sum(int((torch.round(r.zp) != r.z0).sum()) for _, _, r in swaps)
            for layer, attr, r in swaps:
                r.write_back(layer.weight if attr == "weight_quantizer" else None)
    finally:
        for p, g in grads:
            p.requires_grad_(g)
    kl1 = _mean_kl(qmodel, images, fp_logits, t)
    return RefineReport(len(swaps), kl0, kl1, t, history, float(rel.mean()), moved)
