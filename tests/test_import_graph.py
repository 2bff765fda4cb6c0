"""The import graph between hawqc's modules has no cycle, except the semantic executor's op table
(`hawqc/sim/ops.py`) with the kernel modules it fills itself from. Function-local imports count:
they hide a cycle, they do not remove it. Imports under `if TYPE_CHECKING:` do not: they are never
executed, only read by type checkers (precision's rule families name the analysis that calls them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hawqc

PACKAGE_ROOT = Path(hawqc.__file__).parent
# sim/ops.py imports its kernel modules to fill its table; they import its NodeSpec / Kernel types.
ALLOWED_CYCLES = [{"hawqc.sim.ops", "hawqc.sim.ops_activation", "hawqc.sim.ops_conv", "hawqc.sim.ops_tensor", "hawqc.sim.ops_threshold"}]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        type_only = {
            id(n) for block in ast.walk(tree) if _is_type_checking_block(block) for child in block.body for n in ast.walk(child)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from hawqc.sim import quant` depends on the file sim/quant.py (and on the package's
                # __init__ only for names that are not modules).
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets = submodules + ([base] if len(submodules) < len(node.names) else [])
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def test_no_import_cycles_except_the_op_table() -> None:
    cycles = [c for c in strongly_connected(import_graph()) if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
