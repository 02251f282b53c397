"""What a unit trains, and putting it back: rounding variables, step sizes, dropping, affine.

`unit_trainables` installs AdaRound quantizers on the unit's weights, makes its
activation step sizes learnable, switches QDrop's in-block dropping on and hooks
RepAPQ's protecting affine onto the unit's layers; on exit (also when the run is
cancelled) it hardens the rounding, freezes the step sizes, switches dropping off
and folds the affine into the weight scales and biases, as every method requires
after each unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..fake_quant import FakeQuantize
from ..modules import QuantLayer, quant_state
from .affine import ChannelAffine, check_affine_layer
from .options import ReconOptions
from .rounding import AdaRoundQuantizer

__all__ = ["UnitTrainables", "unit_trainables", "init_unit_act_ranges", "all_float", "MIN_SCALE"]

MIN_SCALE = 1e-8  # learned step sizes are kept above this


@dataclass
class UnitTrainables:
    """The trainable pieces of one unit."""

    rounders: list[AdaRoundQuantizer] = field(default_factory=list)
    act_quantizers: list[FakeQuantize] = field(default_factory=list)
    affines: list[ChannelAffine] = field(default_factory=list)
    folded: list[dict[str, list[float]]] = field(default_factory=list)  # g, h per affine, after the fold

    @property
    def round_params(self) -> list[nn.Parameter]:
        """AdaRound variables V."""
        return [q.alpha for q in self.rounders]

    @property
    def act_params(self) -> list[Tensor]:
        """Learnable activation step sizes."""
        return [q.scale for q in self.act_quantizers if isinstance(q.scale, nn.Parameter)]

    @property
    def affine_params(self) -> list[nn.Parameter]:
        """Gains g and shifts h of the protecting affines."""
        return [p for a in self.affines for p in (a.g, a.h)]

    @torch.no_grad()
    def clamp_scales(self) -> None:
        """Keep learned step sizes positive."""
        for s in self.act_params:
            s.clamp_(min=MIN_SCALE)

    def clamp_gains(self) -> None:
        """Keep the affine gains positive."""
        for a in self.affines:
            a.clamp_()


def _acts(layers: list[QuantLayer]) -> list[FakeQuantize]:
    return [layer.act_quantizer for layer in layers if not layer.act_quantizer.scheme.is_float]


def _install(layers: list[QuantLayer], opts: ReconOptions) -> UnitTrainables:
    if opts.affine:  # refuse before anything is installed
        for layer in layers:
            check_affine_layer(layer)
    tr = UnitTrainables()
    for layer in layers:
        fq = layer.weight_quantizer
        if opts.learn_rounding and not fq.scheme.is_float:
            rounder = AdaRoundQuantizer(fq, layer.weight)
            layer.weight_quantizer = rounder
            tr.rounders.append(rounder)
    if opts.quant_act:
        for fq in _acts(layers):
            if opts.learn_act_scale:
                fq.make_scale_learnable()
                tr.act_quantizers.append(fq)
            if opts.drop_prob > 0:
                fq.drop_prob = opts.drop_prob
                fq.train(True)
    if opts.affine:
        tr.affines = [ChannelAffine(layer) for layer in layers]
    return tr


def _finish(layers: list[QuantLayer], tr: UnitTrainables) -> None:
    for rounder in tr.rounders:
        rounder.harden()
    tr.folded = [a.fold() for a in tr.affines]  # after hardening: the fold keeps the final codes
    for fq in tr.act_quantizers:
        fq.freeze_scale()
    for fq in _acts(layers):
        fq.drop_prob = 0.0
        fq.train(False)


@contextmanager
def unit_trainables(layers: list[QuantLayer], opts: ReconOptions) -> Iterator[UnitTrainables]:
    """Install the unit's trainables; harden, freeze and stop dropping on exit."""
    tr = _install(layers, opts)
    try:
        yield tr
    finally:
        _finish(layers, tr)


@torch.no_grad()
def init_unit_act_ranges(
    unit: nn.Module,
    layers: list[QuantLayer],
    x_q: Tensor,
    device: torch.device,
    samples: int = 256,
    batch_size: int = 64,
) -> None:
    """Re-observe the unit's activation ranges on its quantized-model inputs.

    The unit runs with quantized weights and float activations on up to `samples`
    cached inputs; every activation observer restarts, then sets its qparams.
    """
    acts = _acts(layers)
    if not acts:
        return
    for fq in acts:
        fq.observer.reset()
        fq.enable_observer(True)
    try:
        with quant_state(layers, True, False):
            for i in range(0, min(samples, len(x_q)), batch_size):
                unit(x_q[i : min(i + batch_size, samples)].to(device))
    finally:
        for fq in acts:
            fq.enable_observer(False)
    for fq in acts:
        fq.calibrate()


@contextmanager
def all_float(model: nn.Module) -> Iterator[None]:
    """Within the block every quantized layer runs in float: ``quant_state(model, False, False)``."""
    with quant_state(model, False, False):
        yield
