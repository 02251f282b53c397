"""Reconstruction units found from the dataflow graph of a prepared model (`torch.fx`).

A *cut point* is a value through which every later computation passes: once it is
computed, nothing computed before it is still needed (values that do not depend on
the input, such as parameters and constants, do not count). The quantized layers
between two consecutive cut points form one *span*. A residual block, a
concatenation block, a squeeze-excitation block or a transformer block is one span
(its skip keeps earlier values alive until the add); in a plain chain every layer
is a span of its own, as in BRECQ.

How a span becomes something the engine can run (the decision). The engine
addresses a unit by module name: hooks capture its input and output, the remainder
swaps it for a stub, distribution correction copies the float module of the same
name. So a graph unit is always an existing submodule, chosen by these rules:

1. A span with two or more quantized layers is the innermost submodule with its
   own ``forward`` (not a plain container) whose single input and single output
   are cut points and whose layers are whole spans.
2. A single-layer span inside an instance of a class that rule 1 chose elsewhere,
   or of a known block class (`blocks.block_types`), joins that instance when the
   instance's input and output are cut points (a MobileNetV2 inverted residual
   without its skip, or a RepVGG block merged into one conv, is still one unit, as
   BRECQ has it); otherwise the layer is its own unit.
3. A multi-layer span that no such module runs becomes the smallest submodule
   holding exactly its layers with one tensor in and one out (the values that cross
   its boundary reach the rest of the network as skip inputs of the KL tail); if
   there is none, its layers become units of their own and the plan says so.

A wrapper module over a span (a `GraphModule` slice or a list of siblings) was
considered and left out: capture, remainder, stage term and correction would each
need a second code path, and every zoo and torchvision model maps to modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from .modules import QuantLayer

__all__ = ["GraphInfo", "analyse_graph", "cut_points", "dependent_nodes", "graph_unit_spans", "trace_units"]


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


def dependent_nodes(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes whose value depends on a model input."""
    dep: set[fx.Node] = set()
    for n in nodes:
        if n.op == "placeholder" or any(a in dep for a in n.all_input_nodes):
            dep.add(n)
    return dep


def cut_points(graph: fx.Graph) -> set[fx.Node]:
    """Input-dependent nodes after which no earlier input-dependent value is used again."""
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    dep = dependent_nodes(nodes)
    last = {n: max((pos[u] for u in n.users), default=pos[n]) for n in nodes}
    open_: set[fx.Node] = set()
    closing: dict[int, list[fx.Node]] = {}
    cuts: set[fx.Node] = set()
    for i, n in enumerate(nodes):
        for m in closing.pop(i, []):
            open_.discard(m)
        if n in dep and last[n] > i:
            open_.add(n)
            closing.setdefault(last[n], []).append(n)
        if n in dep and n.op != "output" and open_ <= {n}:
            cuts.add(n)
    return cuts


@dataclass
class GraphInfo:
    """What the unit finder reads from one trace.

    Attributes:
        spans: Quantized-layer names of each span between cut points, in forward order.
        modules: Module name -> its nodes in the trace.
        cuts: The cut-point nodes.
        dep: Input-dependent nodes.
    """

    spans: list[list[str]]
    modules: dict[str, set[fx.Node]]
    cuts: set[fx.Node]
    dep: set[fx.Node]
    layer_order: list[str] = field(default_factory=list)

    def boundary(self, name: str) -> tuple[list[fx.Node], list[fx.Node]]:
        """(input-dependent values entering module `name`, its values used outside it)."""
        inside = self.modules.get(name, set())
        ins = {a for n in inside for a in n.all_input_nodes if a not in inside and a in self.dep}
        outs = {n for n in inside if any(u not in inside for u in n.users)}
        return list(ins), list(outs)

    def single_io(self, name: str) -> bool:
        """One input-dependent value in, one out."""
        ins, outs = self.boundary(name)
        return len(ins) == 1 and len(outs) == 1

    def single_entry_exit(self, name: str) -> bool:
        """One value in and one out, both cut points: nothing skips across the module."""
        ins, outs = self.boundary(name)
        return len(ins) == 1 and len(outs) == 1 and ins[0] in self.cuts and outs[0] in self.cuts


def analyse_graph(graph: fx.Graph, qmodel: nn.Module) -> GraphInfo:
    """Spans, cut points and module extents of a trace whose quantized layers are leaves."""
    nodes = list(graph.nodes)
    cuts = cut_points(graph)
    modules: dict[str, set[fx.Node]] = {}
    spans: list[list[str]] = [[]]
    order: list[str] = []
    for n in nodes:
        for path in n.meta.get("nn_module_stack", {}):
            modules.setdefault(path.split("@")[0], set()).add(n)  # "relu@1": a module's second call
        if n.op == "call_module" and isinstance(qmodel.get_submodule(n.target), QuantLayer):
            if n.target not in order:
                order.append(n.target)
                spans[-1].append(n.target)
        if n in cuts and spans[-1]:
            spans.append([])
    return GraphInfo([s for s in spans if s], modules, cuts, dependent_nodes(nodes), order)


def _is_container(m: nn.Module) -> bool:
    return isinstance(m, (nn.ModuleList, nn.ModuleDict)) or (
        isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
    )


@dataclass
class _Finder:
    qmodel: nn.Module
    info: GraphInfo
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.qlayers = set(self.info.layer_order)
        self.layers = {name: self._layers(name) for name in self.info.modules if name and self._exists(name)}
        self.span_of = {ly: i for i, span in enumerate(self.info.spans) for ly in span}

    def _exists(self, name: str) -> bool:
        try:
            self.qmodel.get_submodule(name)
        except AttributeError:  # a module-stack key that is no submodule path
            return False
        return True

    def _layers(self, name: str) -> frozenset[str]:
        nodes = self.info.modules[name]
        return frozenset(n.target for n in nodes if n.op == "call_module" and n.target in self.qlayers)

    def _whole_spans(self, name: str) -> bool:
        layers = self.layers[name]
        return all(set(self.info.spans[self.span_of[ly]]) <= layers for ly in layers)

    def blockish(self, name: str, min_layers: int = 2) -> bool:
        m = self.qmodel.get_submodule(name)
        return (
            not _is_container(m)
            and not isinstance(m, QuantLayer)
            and len(self.layers[name]) >= min_layers
            and self._whole_spans(name)
            and self.info.single_entry_exit(name)
        )

    def innermost(self, span: list[str], names: list[str]) -> str | None:
        holding = [n for n in names if set(span) <= self.layers[n]]
        return min(holding, key=lambda n: (len(self.layers[n]), -n.count("."))) if holding else None

    def exact_module(self, span: list[str]) -> str | None:
        exact = [n for n, ly in self.layers.items() if ly == frozenset(span) and self.info.single_io(n)]
        return min(exact, key=lambda n: -n.count(".")) if exact else None


def graph_unit_spans(
    qmodel: nn.Module, graph: fx.Graph, known: tuple[type[nn.Module], ...] = ()
) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Units as (module name, its quantized layers) in forward order, and notes on anything unusual.

    Args:
        qmodel: The prepared model.
        graph: Its trace with quantized layers as leaves (`trace_units(qmodel, [])`).
        known: Block classes that hold a single-layer span together (rule 2).

    Returns:
        ``([(unit name, [layer, ...]), ...], notes)``; a layer unit is named after the layer.
    """
    info = analyse_graph(graph, qmodel)
    f = _Finder(qmodel, info)
    blockish = [n for n in f.layers if f.blockish(n)]
    chosen: dict[str, frozenset[str]] = {}

    def choose(name: str) -> None:
        if any(name.startswith(c + ".") for c in chosen):
            return
        for c in [c for c in chosen if c.startswith(name + ".")]:
            del chosen[c]
        chosen[name] = f.layers[name]

    for span in info.spans:  # rule 1
        if len(span) > 1 and not _covered(span, chosen):
            name = f.innermost(span, blockish)
            if name is not None:
                choose(name)
    classes = {type(qmodel.get_submodule(c)) for c in chosen} | set(known)
    of_class = [n for n in f.layers if type(qmodel.get_submodule(n)) in classes and f.blockish(n, 1)]
    for span in info.spans:  # rules 2 and 3
        if _covered(span, chosen):
            continue
        name = f.innermost(span, of_class) if len(span) == 1 else f.exact_module(span)
        if name is not None:
            choose(name)
        elif len(span) > 1:
            f.notes.append(
                f"the span {span[0]} .. {span[-1]} ({len(span)} layers) is no single submodule with "
                "one input and one output: its layers are units of their own"
            )
    return _ordered(chosen, info.layer_order), f.notes


def _covered(span: list[str], chosen: dict[str, frozenset[str]]) -> bool:
    return any(span[0] in layers for layers in chosen.values())


def _ordered(chosen: dict[str, frozenset[str]], order: list[str]) -> list[tuple[str, list[str]]]:
    owner = {ly: name for name, layers in chosen.items() for ly in layers}
    units: list[tuple[str, list[str]]] = []
    for ly in order:
        name = owner.get(ly, ly)
        if units and units[-1][0] == name:
            units[-1][1].append(ly)
        else:
            units.append((name, [ly]))
    return units
