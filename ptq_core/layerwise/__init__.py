"""Layer-wise weight solvers' shared pieces: input Gram matrices, solved-weight quantizers, solvers.

One concept per module: `gram` (layer inputs as rows, ``H = XᵀX``), `capture` (scoped
hooks over the calibration set, opt-in cache), `quantizers` (weight quantizers that
hold a solution), `comq` / `gptq` / `multipoint` (the solvers, pure tensor code) and
`deploy` (the expanded multipoint layer). The methods that use them live in
`ptq_core/methods/` (`comq.py`, `gptq.py`, `multipoint.py`, `layerwise_base.py`).
"""

from __future__ import annotations

from .capture import capture_grams, gram_cache
from .comq import ComqSolution, comq_solve
from .deploy import ChannelMerge, MultipointDeploy, deploy_layer, deploy_multipoint
from .gptq import gptq_reference, gptq_solve
from .gram import GramAccumulator, input_rows, num_groups, weight_groups
from .multipoint import GRIDS, allocate_points, greedy_point, greedy_points
from .quantizers import CodeQuantizer, MultipointQuantizer

__all__ = [
    "GRIDS",
    "ChannelMerge",
    "CodeQuantizer",
    "ComqSolution",
    "GramAccumulator",
    "MultipointDeploy",
    "MultipointQuantizer",
    "allocate_points",
    "capture_grams",
    "comq_solve",
    "deploy_layer",
    "deploy_multipoint",
    "gptq_reference",
    "gptq_solve",
    "gram_cache",
    "greedy_point",
    "greedy_points",
    "input_rows",
    "num_groups",
    "weight_groups",
]
