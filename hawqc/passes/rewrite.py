"""Pattern rewriting: match a small subgraph by op type and domain, check it, replace it.

A rule is a pattern rooted at one node, a check, and a replacement that builds new nodes through a
`Rewriter` (which names them uniquely and places them before the root) and returns the values that
take over the root's outputs, names included. `apply_rules` makes one sweep over the graph in
order, so a pass built from rules costs one visit per node however many rewrites it makes;
producers left without users are dead code for `dce`.

    rule = RewriteRule(
        "double-relu",
        Op("Relu", inputs=(Op("Relu", inputs=(Var("x"),)),)),
        replace=lambda match, rewriter: [rewriter.op("Relu", [match["x"]])],
    )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hawqc.ir.constants import make_initializer
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.names import FreshNames


@dataclass(frozen=True)
class Var:
    """Any value (a graph input, an initializer, a node output), captured under `name`."""

    name: str


@dataclass(frozen=True)
class Const:
    """A constant value (an initializer), captured under `name`."""

    name: str


@dataclass(frozen=True)
class Op:
    """A node with one of `op_types` in `domain`, whose leading inputs match `inputs`.

    `inputs=None` leaves the inputs unchecked; otherwise input i must match `inputs[i]` (a missing
    optional input matches only `None` in the pattern), and inputs beyond the pattern are free.
    The node is captured under `name` if one is given.
    """

    op_types: str | frozenset[str]
    inputs: tuple[Pattern | None, ...] | None = None
    domain: str = ""
    name: str | None = None

    def accepts(self, node: ir.Node) -> bool:
        types = {self.op_types} if isinstance(self.op_types, str) else self.op_types
        return node.op_type in types and node.domain == self.domain


def QonnxOp(op_types: str | frozenset[str], inputs=None, name: str | None = None) -> Op:  # noqa: N802
    """A QONNX op (after loading, every QONNX op is in this one domain)."""
    return Op(op_types, inputs, QONNX_DOMAIN, name)


Pattern = Op | Var | Const


@dataclass
class Match:
    """What a pattern matched: the root node and every capture, by name."""

    root: ir.Node
    captures: dict[str, ir.Node | ir.Value] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.captures[name]

    def node(self, name: str) -> ir.Node:
        captured = self.captures[name]
        assert isinstance(captured, ir.Node)
        return captured

    def value(self, name: str) -> ir.Value:
        captured = self.captures[name]
        assert isinstance(captured, ir.Value)
        return captured


def match(pattern: Op, node: ir.Node) -> Match | None:
    found = Match(node)
    return found if _match_node(pattern, node, found) else None


def _match_node(pattern: Op, node: ir.Node, found: Match) -> bool:
    if not pattern.accepts(node):
        return False
    if pattern.name is not None:
        found.captures[pattern.name] = node
    if pattern.inputs is None:
        return True
    if len(pattern.inputs) > len(node.inputs) and any(p is not None for p in pattern.inputs[len(node.inputs):]):
        return False
    for sub, value in zip(pattern.inputs, node.inputs):
        if not _match_value(sub, value, found):
            return False
    return True


def _match_value(pattern: Pattern | None, value: ir.Value | None, found: Match) -> bool:
    if pattern is None or value is None:
        return pattern is None and value is None
    if isinstance(pattern, Var):
        return _capture(found, pattern.name, value)
    if isinstance(pattern, Const):
        return value.const_value is not None and _capture(found, pattern.name, value)
    producer = value.producer()
    return producer is not None and _match_node(pattern, producer, found)


def _capture(found: Match, name: str, value: ir.Value) -> bool:
    # The same name twice in a pattern means the same value (e.g. Add(x, x)).
    previous = found.captures.setdefault(name, value)
    return previous is value


@dataclass
class Rewriter:
    """Builds a replacement: new nodes go before the root, new constants become initializers."""

    graph: ir.Graph
    root: ir.Node
    names: FreshNames
    nodes: list[ir.Node] = field(default_factory=list)

    def op(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attributes: dict | None = None,
        *,
        domain: str = "",
        name: str | None = None,
        like: ir.Value | None = None,
        shape: ir.Shape | None = None,
        output_name: str | None = None,
    ) -> ir.Value:
        """A new single-output node; its output takes the type of `like` (default: the root's
        first output) and `shape` (default: that of `like`)."""
        base = name or f"{self.root.name or self.root.op_type.lower()}_{op_type.lower()}"
        node = ir.node(op_type, list(inputs), attributes or None, domain=domain, name=self.names(base))
        like = like if like is not None else self.root.outputs[0]
        out = node.outputs[0]
        out.name = self.names(output_name or f"{base}_out")
        out.type = like.type
        out.shape = shape if shape is not None else like.shape
        self.nodes.append(node)
        return out

    def constant(self, array: np.ndarray, name: str) -> ir.Value:
        value = make_initializer(array, self.names(name))
        self.graph.register_initializer(value)
        return value


# A replacement returns the values that take over the root's outputs (in order), or None to decline.
Replace = Callable[[Match, Rewriter], Sequence[ir.Value] | None]


@dataclass(frozen=True)
class RewriteRule:
    name: str
    pattern: Op
    replace: Replace
    check: Callable[[Match], bool] = lambda _match: True


def apply_rules(model: ir.Model, rules: Sequence[RewriteRule]) -> dict[str, int]:
    """Apply `rules` in one sweep over the graph; returns how often each rule fired."""
    graph = model.graph
    names = FreshNames(graph)
    fired = {rule.name: 0 for rule in rules}
    for node in list(graph):
        if node.graph is not graph:
            continue  # removed by an earlier rewrite in this sweep
        for rule in rules:
            found = match(rule.pattern, node)
            if found is None or not rule.check(found):
                continue
            rewriter = Rewriter(graph, node, names)
            replacements = rule.replace(found, rewriter)
            if replacements is None:
                continue  # declined: the builder's nodes were never inserted
            _commit(graph, node, rewriter.nodes, list(replacements))
            fired[rule.name] += 1
            break
    return fired


def _commit(graph: ir.Graph, root: ir.Node, new_nodes: list[ir.Node], replacements: list[ir.Value]) -> None:
    if len(replacements) > len(root.outputs):
        raise ValueError(f"a rewrite of {root.op_type} returned {len(replacements)} values for {len(root.outputs)} outputs")
    for old in root.outputs[len(replacements):]:
        if old.uses() or old.is_graph_output():
            raise ValueError(f"a rewrite of {root.op_type} left its used output '{old.name}' without a replacement")
    if new_nodes:
        graph.insert_before(root, new_nodes)
    for old, new in zip(root.outputs, replacements):
        name = old.name
        # The rewritten value keeps the old name when it is new (readable IR), or when the old one
        # was a graph output (consumers outside know it by name) and renaming hurts nothing else.
        keep_name = new.producer() in new_nodes or (old.is_graph_output() and _renamable(new))
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        if keep_name:
            old.name = None
            new.name = name
    graph.remove(root, safe=True)


def _renamable(value: ir.Value) -> bool:
    return not (value.is_graph_input() or value.is_initializer() or value.is_graph_output())
