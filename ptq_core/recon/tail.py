"""The rest of the network after a unit, without re-running what comes before it.

`logits_with_unit_output` runs the whole model with the unit swapped for a stub,
which is always right but spends a forward pass on the prefix every step. When
the model can be traced with `torch.fx` (units and quantized layers kept as
leaves), the part of the graph after the unit is its own function of the unit's
output plus the values computed before the unit that are still used after it
(the skip inputs that cross the cut, e.g. the shortcut of a residual block whose
conv is a unit on its own). `TailRunner` builds that tail once per unit,
`capture_skips` caches the crossing values for every calibration image (once per
unit, with the prefix in its state for the unit), and the first call checks the
tail against the full forward; anything that fails (no trace, a crossing value
that is not a per-sample tensor, a mismatch) falls back to the full forward, and
`path` says which path a unit used and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from ..graph_units import dependent_nodes, trace_units
from ..hooks import StopForward
from .capture import Alloc, allocator
from .remainder import logits_with_unit_output

__all__ = ["TailRunner", "trace_units"]  # trace_units lives in ptq_core.graph_units


def _tail_graph(graph: fx.Graph, name: str) -> tuple[fx.Graph | None, list[fx.Node], str]:
    """(graph of everything after unit `name` taking its output and the crossing values, those values, why not)."""
    nodes = list(graph.nodes)
    cut = [i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == name]
    if len(cut) != 1:
        return None, [], f"the unit is called {len(cut)} times in the trace"
    unit_node, before, after = nodes[cut[0]], nodes[: cut[0]], nodes[cut[0] + 1 :]
    after_set, dep = set(after), dependent_nodes(nodes)
    skips = [n for n in before if n in dep and any(user in after_set for user in n.users)]
    tail = fx.Graph()
    env = {unit_node: tail.placeholder("unit_out")}
    for k, n in enumerate(skips):
        env[n] = tail.placeholder(f"skip_{k}")
    for n in before:  # parameters and constants used after the cut are recomputed there
        if n not in dep:
            env[n] = tail.node_copy(n, lambda m: env[m])
    for n in after:
        env[n] = tail.node_copy(n, lambda m: env[m])
    return tail, skips, ""


class _Recorder(fx.Interpreter):
    """Runs the traced model until `stop`, keeping the values of `wanted`."""

    def __init__(self, gm: fx.GraphModule, wanted: list[fx.Node], stop: fx.Node) -> None:
        super().__init__(gm)
        self.wanted, self.stop, self.seen = set(wanted), stop, {}

    def run_node(self, n: fx.Node):  # noqa: ANN201 - any value
        if n is self.stop:
            raise StopForward
        out = super().run_node(n)
        if n in self.wanted:
            self.seen[n] = out
        return out


@dataclass
class _Plan:
    tail: fx.GraphModule | None
    skips: list[fx.Node] = field(default_factory=list)
    unit_node: fx.Node | None = None
    reason: str = ""


class TailRunner:
    """Logits of the network for a given output of one of its units (and the values crossing its cut).

    Args:
        model: The prepared network (its modules' quantization states are used live).
        unit_names: Names of all reconstruction units (kept as leaves when tracing).
    """

    def __init__(self, model: nn.Module, unit_names: list[str]) -> None:
        self.model, self.unit_names = model, list(unit_names)
        self.graph, error = trace_units(model, unit_names, with_error=True)
        self.trace_error = error
        self.full = fx.GraphModule(model, self.graph) if self.graph is not None else None
        self.plans: dict[str, _Plan] = {}
        self.tails: dict[str, fx.GraphModule | None] = {}  # after the first call: the tail, or None (full forward)
        self.reasons: dict[str, str] = {}

    def plan(self, name: str) -> _Plan:
        """The traced tail of unit `name` and the values that cross its cut (tail None: full forward)."""
        if name not in self.plans:
            if self.graph is None:
                self.plans[name] = _Plan(None, reason=f"torch.fx could not trace the model ({self.trace_error})")
            else:
                graph, skips, why = _tail_graph(self.graph, name)
                unit_node = next((n for n in self.graph.nodes if n.op == "call_module" and n.target == name), None)
                tail = fx.GraphModule(self.model, graph) if graph is not None else None
                if tail is not None:  # drop what only fed the prefix (constants copied across the cut)
                    tail.graph.eliminate_dead_code()
                    tail.recompile()
                self.plans[name] = _Plan(tail, skips, unit_node, why)
        return self.plans[name]

    def n_skips(self, name: str) -> int:
        """How many values cross the cut of unit `name` (0 without a traced tail)."""
        plan = self.plan(name)
        return len(plan.skips) if plan.tail is not None else 0

    @torch.no_grad()
    def capture_skips(
        self, name: str, images: Tensor, batch_size: int, store: torch.device | Alloc | None = None
    ) -> list[Tensor] | None:
        """The crossing values of unit `name` for every image [N, ...] each, or None when they cannot be cached.

        The prefix runs in the model's current state, as it does in the full forward. `store`
        is where the values go: a device (default: where they are computed) or an allocator.
        """
        plan = self.plan(name)
        if plan.tail is None or not plan.skips:
            return [] if plan.tail is not None else None
        outs: list[Tensor] = []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            rec = _Recorder(self.full, plan.skips, plan.unit_node)
            try:
                rec.run(x)
            except StopForward:
                pass
            for k, n in enumerate(plan.skips):
                v = rec.seen.get(n)
                if not torch.is_tensor(v) or v.dim() == 0 or len(v) != len(x):
                    self.tails[name], self.reasons[name] = (
                        None,
                        f"{n.name}, computed before the unit and used after it, is not a per-sample tensor",
                    )
                    return None
                if len(outs) <= k:
                    outs.append(allocator(store or v.device)((len(images), *v.shape[1:]), v.dtype))
                outs[k][i : i + len(x)].copy_(v.detach())
        return outs

    def _tail(self, name: str, images: Tensor, unit_out: Tensor, skips: list[Tensor] | None) -> fx.GraphModule | None:
        if name not in self.tails:
            plan = self.plan(name)
            tail = plan.tail
            if tail is None:
                self.reasons[name] = plan.reason
            elif plan.skips and skips is None:
                tail, self.reasons[name] = None, f"{len(plan.skips)} value(s) cross the cut and were not cached"
            if tail is not None:
                with torch.no_grad():
                    ref = logits_with_unit_output(self.model, name, images, unit_out.detach())
                    got = tail(unit_out.detach().clone(), *[s.clone() for s in skips or []])
                    ok = torch.allclose(got, ref, rtol=1e-4, atol=1e-5)
                if not ok:
                    tail, self.reasons[name] = None, "the traced tail disagreed with the full forward"
            self.tails[name] = tail
        return self.tails[name]

    def uses_tail(self, name: str) -> bool | None:
        """Whether unit `name` runs on its traced tail (None until first used)."""
        return None if name not in self.tails else self.tails[name] is not None

    def path(self, name: str) -> str:
        """Which KL path unit `name` used: "tail", "tail + N skip inputs", "full forward: <why>" or ""."""
        used = self.uses_tail(name)
        if used is None:
            return ""
        if not used:
            return f"full forward: {self.reasons.get(name, '')}"
        n = len(self.plan(name).skips)
        return "tail" if n == 0 else f"tail + {n} skip input{'s' if n > 1 else ''}"

    def __call__(self, name: str, images: Tensor, unit_out: Tensor, skips: list[Tensor] | None = None) -> Tensor:
        """Logits [B, classes] when unit `name` outputs `unit_out` on `images` (differentiable in `unit_out`).

        `skips` are the cached crossing values for these images (`capture_skips`); without
        them a unit with a skip across its cut runs the full forward.
        """
        tail = self._tail(name, images, unit_out, skips)
        if tail is None:
            return logits_with_unit_output(self.model, name, images, unit_out)
        return tail(unit_out.clone(), *[s.clone() for s in skips or []])  # later in-place ops must not touch them
