"""The package's layers: every import of src/famerec points down or within a layer, and no
module imports itself back through others.

Imports are read from the source (ast), at module level and inside functions; imports under
`if TYPE_CHECKING:` are left out (type hints only, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "famerec"

# Bottom first. A unit is a module or subpackage of famerec, or a module of a subpackage where
# its modules sit in different layers ("serving.app"); "famerec" is the package's own __init__
# (the Python face). A unit may import its own layer's units and the layers below.
LAYERS = [
    ["errors"],
    ["config", "runs.dir", "rundir"],
    ["data"],
    ["models"],
    ["evaluation"],
    ["runconfig"],
    ["runs.load", "runs"],
    ["training"],
    ["serving.recommender", "recommender", "analysis", "tables", "report"],
    ["serving.ann", "serving.batcher", "serving.explorer", "ann", "batcher", "explorer"],
    ["serving.app", "serving", "experiments", "api", "famerec"],
    ["cli_prepare", "cli", "__main__"],
]

# Old import paths kept for their callers: names that moved up, found on first attribute access
# (a module __getattr__), never while the lower module is imported.
KEPT_OLD_PATHS = {("famerec.config", "famerec.runconfig")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The famerec modules that `tree` imports (`from famerec.x import y`: famerec.x.y where
    that is a module, else famerec.x)."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name == "famerec" or name.startswith("famerec.")}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {
        name: imported(ast.parse(path.read_text()), modules) - {name}
        for name, path in paths.items()
    }


def unit(module: str) -> str:
    """The longest declared unit that `module` is or lies in."""
    parts = module.split(".")[1:]
    declared = {name for layer in LAYERS for name in layer}
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in declared:
            return ".".join(parts[:end])
    return parts[0] if parts else "famerec"


def layer_of(module: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit(module) in units:
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add its unit")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other through others (strongly connected)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_layer():
    units = {unit(module) for module in import_graph()}
    declared = [name for layer in LAYERS for name in layer]
    assert len(declared) == len(set(declared))
    assert units == set(declared)


def test_imports_point_down():
    graph = import_graph()
    upward = [
        f"{module} (layer {layer_of(module)}) imports {other} (layer {layer_of(other)})"
        for module, others in sorted(graph.items())
        for other in sorted(others)
        if layer_of(other) > layer_of(module) and (module, other) not in KEPT_OLD_PATHS
    ]
    assert upward == []


def test_no_import_cycles():
    graph = import_graph()
    kept = {
        module: others - {o for m, o in KEPT_OLD_PATHS if m == module}
        for module, others in graph.items()
    }
    assert cycles(kept) == []


def test_the_layer_test_sees_imports_inside_functions():
    graph = import_graph()
    assert "famerec.models" in graph["famerec.runconfig"]  # imported in model_spec only
    assert "famerec.runconfig" not in graph["famerec.data.items"]  # under TYPE_CHECKING
