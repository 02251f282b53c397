"""The enclosing stage of a unit, for RepAPQ's across-block term (docs/methods.md, step 4).

A unit's stage is the `nn.Sequential` that holds it directly (a RepVGG / ResNet stage,
a torchvision ``layerN``). The term compares ``S_{>j}(B_j^q(x))``, the unit's quantized
output run through the stage's later blocks, with the float stage output ``S^fp(x_fp)``.
The later blocks run in the state the pass leaves them in: not yet reconstructed, so in
float (our reading; the source leaves it open). For the last block of a stage the rest
is empty and the term compares the block output itself. Units outside any
`nn.Sequential` (stem and head layers of most models) have no stage term.
"""

from __future__ import annotations

from torch import nn

__all__ = ["enclosing_stage", "stage_rest"]


def enclosing_stage(model: nn.Module, unit_name: str) -> str | None:
    """Name of the `nn.Sequential` that directly holds `unit_name`, or None."""
    parent_name, _, child = unit_name.rpartition(".")
    if not parent_name:
        return None
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.Sequential) or child not in parent._modules:
        return None
    return parent_name


def stage_rest(model: nn.Module, unit_name: str) -> nn.Sequential | None:
    """The stage's modules after `unit_name` (shared, not copied), or None without a stage."""
    stage = enclosing_stage(model, unit_name)
    if stage is None:
        return None
    names = list(model.get_submodule(stage)._modules)
    child = unit_name.rpartition(".")[2]
    later = [model.get_submodule(f"{stage}.{n}") for n in names[names.index(child) + 1 :]]
    return nn.Sequential(*later)
