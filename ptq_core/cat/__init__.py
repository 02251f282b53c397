"""CAT, Cluster-based Affine Transformation (Zoljodi et al., 2025; docs/methods.md).

Stage 1 (`refine_qparams`, also the registered method ``cat_refine``) tunes the step
sizes and zero points of any quantized model toward the float model's softened
predictions. Stage 2 (`fit_cat`, `CATCorrected`) clusters the quantized logits and
corrects them with a closed-form scale and shift per cluster and class.

Typical use::

    from ptq_core.cat import CATOptions, apply_cat
    cat_model, fit = apply_cat(float_model, quantized_model, fit_images, CATOptions(k=64, alpha=0.4))
    cat_model(x)  # corrected logits; an ordinary nn.Module
"""

from __future__ import annotations

from .apply import EvalLogits, FitSet, accuracy, apply_cat, eval_logits, fit_set, model_logits
from .fit import CATFit, affine_tables, blend, fit_cat, kmeans, nearest, pca_fit, project
from .module import CATCorrected, load_cat, save_cat, unwrap
from .options import CATOptions
from .refine import RefineOptions, RefineReport, refine_loss, refine_qparams
from .result import STATUSES, CATResult, build_result, logit_gap

__all__ = [
    "CATCorrected",
    "CATFit",
    "CATOptions",
    "CATResult",
    "EvalLogits",
    "FitSet",
    "RefineOptions",
    "RefineReport",
    "STATUSES",
    "accuracy",
    "affine_tables",
    "apply_cat",
    "blend",
    "build_result",
    "eval_logits",
    "fit_cat",
    "fit_set",
    "kmeans",
    "load_cat",
    "logit_gap",
    "model_logits",
    "nearest",
    "pca_fit",
    "project",
    "refine_loss",
    "refine_qparams",
    "save_cat",
    "unwrap",
]
