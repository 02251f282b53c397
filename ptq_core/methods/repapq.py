"""RepAPQ (Zhang et al., arXiv 2402.16121; docs/methods.md): PTQ for re-parameterised networks.

Steps, as this module runs them over the reconstruction engine:

1. **Merge** (`ptq_core.reparam`). A copy of the model has every re-parameterisable block (a module with
   ``reparameterize()`` and ``branch_kernels()``: the zoo's `RepVGGBlock`, or a
   MobileOne-style block with the same interface) fused into one conv; the caller's
   model is never modified, and the merged copy is checked to compute the same function.
   A model with no such block is refused.
2. **MAE range search.** Activation ranges come from the Lp search with p = 1 (the
   ``mae`` observer) instead of the MSE search (p = 2.4); weight ranges keep the spec's
   weight observer (MSE search by default) unless ``mae_weights`` (see below).
3. **One block pass** (blocks in forward order; stem and head layer by layer) that learns,
   with activations quantized, the AdaRound rounding of the weights, the activation step
   sizes and the **protecting affine** (QPRep): ``y = act(g * conv(Q_a(x), Q_w(W)) + h)``
   with per-output-channel g (init 1) and h (init 0) on every quantized layer, folded into
   the per-channel weight scale (``s <- g s``, integer codes unchanged) and the bias
   (``b <- g b + h``) when the unit is done (`ptq_core.recon.affine`), so the deployed
   model has no extra op. The loss is the MAE of the block output plus **lambda_s times
   the MAE of the enclosing stage's output** (across-block calibration): the block's
   quantized output is run through the stage's later blocks and compared with the float
   stage output (`ptq_core.recon.stage`).

Readings of the parts the paper leaves open, and why:

- g and h start at 1 and 0, sit on the merged conv's output before the ReLU (bias
  included), and fold into scales and bias; g is kept positive so the folded scales are.
  In this engine the affine goes on every quantized layer of the unit (for RepVGG blocks
  that is exactly the merged conv; the head layer gets one too).
- MAE is used for both the range search and the reconstruction (the issue asks for both),
  the range search for the *activations*, whose channel- and sample-specific outliers are
  what motivates it. Searching the merged *weights* with p = 1 as well (``mae_weights=True``,
  the most literal reading) wrecks the model: a merged kernel's centre tap carries the 1x1
  and identity branches and is far larger than the rest, and the p = 1 search clips it to a
  small share of the channel max (p = 2.4 keeps nearly all of it), so that even plain RTN at
  W6A6 loses most of its agreement with the float predictions. The released code also
  initialises weights differently from activations (min-max), so weights keep the spec's
  weight observer.
  The reconstruction MAE is ``|dy|`` summed over channels and averaged over the rest,
  the scale convention of the engine's MSE, so AdaRound's lambda keeps its meaning.
- The stage's later blocks run in float (they are not reconstructed yet when block j
  is); lambda_s = 1. The last block of a stage compares its own output (the rest is empty).
- Weights: the released code updates the weights themselves (Adam, lr 1e-5) together
  with the scales; here the engine's weight trainable, AdaRound rounding, takes that
  role (as in BRECQ/QDrop), and the per-channel weight scale is learned through g.
  Activation step sizes are learned (LSQ) at the released scale lr 1e-3, g/h at lr 0.1.
- Batch 64 as in the released code; iterations per block are not published: the
  ``paper`` preset uses the engine's 20 000, ``fast`` the shared 500 steps with batch 32
  (like the other methods' fast preset) and g/h lr 1e-2. On the zoo's RepVGG the paper's gain
  from the affine does not reproduce (`benchmarks/cat_repapq.py repapq`, figures in
  benchmarks/RESULTS.md); the default is kept as specified rather than tuned on one model's
  test set.

Ablations are switches: ``affine=False``, ``distortion="mse"`` (MSE-search observers
with p = 2.4 for weights and activations, and the MSE loss), ``stage_weight=0``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..recon import ReconOptions
from ..reparam import merge_branches, rep_blocks
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .recon_base import ReconMethodConfig, run_reconstruction

__all__ = ["RepAPQConfig", "repapq", "rep_blocks", "merge_branches", "DISTORTIONS"]  # two from ptq_core.reparam

DISTORTIONS = ("mae", "mse")


@dataclass
class RepAPQConfig(ReconMethodConfig):
    """RepAPQ settings (released code: batch 64, Adam with cosine decay; scales lr 1e-3, g/h lr 0.1)."""

    method = "repapq"
    FAST_EXTRA: ClassVar[dict[str, Any]] = {"recon_batch": 32, "affine_lr": 1e-2}

    recon_batch: int = setting(64, help="samples per optimisation step (64 in the released code)", min=1)
    distortion: str = setting(
        "mae",
        help="mae (range search with p = 1 and MAE reconstruction) or mse (ablation: p = 2.4 search and MSE loss)",
        choices=("mae", "mse"),
    )
    affine: bool = setting(True, help="train and fold the protecting per-channel affine g, h")
    affine_lr: float = setting(0.1, help="Adam learning rate of the protecting affine g, h", min=0)
    act_lr: float = setting(1e-3, help="Adam learning rate of the activation step sizes", min=0)
    stage_weight: float = setting(1.0, help="lambda_s, weight of the stage-output term (0: off)", min=0)
    mae_weights: bool = setting(False, help="also search the weight ranges with MAE")

    def validate(self) -> None:
        if self.distortion not in DISTORTIONS:
            raise ConfigError(f"RepAPQ distortion must be one of {', '.join(DISTORTIONS)}, got {self.distortion!r}")
        if not isinstance(self.affine, bool):
            raise ConfigError(f"affine must be True or False, got {self.affine!r}")
        if self.affine and not self.quant.w_per_channel:
            raise ConfigError(
                "RepAPQ's affine folds into per-channel weight scales: use per-channel weights "
                "(w_per_channel=True) or affine=False"
            )
        for name in ("affine_lr", "act_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.stage_weight >= 0:
            raise ConfigError(f"stage_weight must be non-negative, got {self.stage_weight}")
        super().validate()

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        loss = "mae" if self.distortion == "mae" else "mse"
        return [
            self.joint_block_options(
                model,
                self.act_lr,
                rec_loss=loss,
                p=2.0,
                affine=self.affine,
                affine_lr=self.affine_lr,
                stage_weight=self.stage_weight,
            )
        ]

    def run_config(self) -> RepAPQConfig:
        """This config with the range-search observers RepAPQ uses (MAE for activations, or MSE for the ablation)."""
        observer = "mae" if self.distortion == "mae" else "mse"
        w_observer = observer if self.mae_weights or self.distortion == "mse" else self.quant.w_observer
        quant = dataclasses.replace(self.quant, w_observer=w_observer, a_observer=observer)
        return dataclasses.replace(self, quant=quant)


@register_method(RepAPQConfig)
def repapq(
    model: nn.Module, calib: torch.Tensor, config: RepAPQConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Merge the branches, then MAE range search and block + stage reconstruction with the protecting affine."""
    was_training = model.training
    model.eval()
    try:
        merged = merge_branches(model, calib[:8])
    finally:
        model.train(was_training)
    run = config.run_config()
    result = run_reconstruction(merged, calib, run, progress)
    result.extras["repapq"] = {
        "merged_blocks": rep_blocks(model),
        "w_observer": run.quant.w_observer,
        "a_observer": run.quant.a_observer,
    }
    return result
