"""The rest of the network after a unit, without re-running what comes before it.

`logits_with_unit_output` runs the whole model with the unit swapped for a stub,
which is always right but spends a forward pass on the prefix every step. When
the model can be traced with `torch.fx` (units and quantized layers kept as
leaves) and nothing computed before the unit is used after it (no skip across
the cut), the part of the graph after the unit is its own function of the unit's
output: `TailRunner` builds it once per unit, checks it against the full forward
on the first batch, and falls back to the full forward otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn

from ..modules import QuantLayer
from .remainder import logits_with_unit_output

__all__ = ["TailRunner", "trace_units"]


class _UnitTracer(fx.Tracer):
    """Keeps reconstruction units and quantized layers as opaque calls."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or isinstance(m, QuantLayer) or super().is_leaf_module(m, qualname)


def trace_units(model: nn.Module, unit_names: list[str], with_error: bool = False):
    """The model's graph with every unit a single node, or None if it cannot be traced.

    With `with_error`, returns ``(graph or None, the tracing error's text or "")``.
    """
    try:
        graph, error = _UnitTracer(set(unit_names)).trace(model), ""
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: use the fallback
        graph, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return (graph, error) if with_error else graph


def _tail_graph(graph: fx.Graph, name: str) -> fx.Graph | None:
    """Graph of everything after unit `name`, taking its output as the only input (None if impossible)."""
    nodes = list(graph.nodes)
    cut = [i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == name]
    if len(cut) != 1:
        return None
    unit_node, after = nodes[cut[0]], nodes[cut[0] + 1 :]
    after_set = set(after)
    for n in nodes[: cut[0]]:  # a value from before the cut used after it: a skip across the unit
        if any(user in after_set for user in n.users):
            return None
    tail = fx.Graph()
    env = {unit_node: tail.placeholder("unit_out")}
    for n in after:
        env[n] = tail.node_copy(n, lambda m: env[m])
    return tail


class TailRunner:
    """Logits of the network for a given output of one of its units.

    Args:
        model: The prepared network (its modules' quantization states are used live).
        unit_names: Names of all reconstruction units (kept as leaves when tracing).
    """

    def __init__(self, model: nn.Module, unit_names: list[str]) -> None:
        self.model, self.unit_names = model, list(unit_names)
        self.graph = trace_units(model, unit_names)
        self.tails: dict[str, fx.GraphModule | None] = {}

    def _tail(self, name: str, images: Tensor, unit_out: Tensor) -> fx.GraphModule | None:
        if name not in self.tails:
            graph = _tail_graph(self.graph, name) if self.graph is not None else None
            tail = fx.GraphModule(self.model, graph) if graph is not None else None
            if tail is not None:
                with torch.no_grad():
                    ref = logits_with_unit_output(self.model, name, images, unit_out.detach())
                    ok = torch.allclose(tail(unit_out.detach().clone()), ref, rtol=1e-4, atol=1e-5)
                tail = tail if ok else None
            self.tails[name] = tail
        return self.tails[name]

    def uses_tail(self, name: str) -> bool | None:
        """Whether unit `name` runs on its traced tail (None until first used)."""
        return None if name not in self.tails else self.tails[name] is not None

    def __call__(self, name: str, images: Tensor, unit_out: Tensor) -> Tensor:
        """Logits [B, classes] when unit `name` outputs `unit_out` on `images` (differentiable in `unit_out`)."""
        tail = self._tail(name, images, unit_out)
        if tail is None:
            return logits_with_unit_output(self.model, name, images, unit_out)
        return tail(unit_out.clone())  # later in-place ops must not touch the given tensor
