"""The package's layering (docs/architecture.md), read from the source with ``ast``.

- No import cycle among dimfeat's modules, counting imports inside functions too: a function
  that imports a module above its own is an upward import, even if it runs late.
- No module imports another module's ``_private`` name (benchmarks and examples included):
  what crosses a module boundary is public API.

Subpackages (``dimfeat/inputs/``) are walked too, relative imports resolved. A package's
``__init__`` re-exports its modules' names: importing ``dimfeat.inputs.cell`` is an edge to
that module only (not to the package that Python initialises first).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dimfeat"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_files() -> list[Path]:
    """Every module of the package, subpackages included."""
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path) -> str:
    """The package a relative import in ``path`` starts from."""
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _dimfeat_imports(
    tree: ast.AST, modules: set[str], package: str = ""
) -> set[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every ``import dimfeat...`` / ``from dimfeat... import``, relative
    imports resolved from ``package``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 0 or package):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "dimfeat":
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    if sub in modules:  # from dimfeat import datasets
                        found.add((sub, ()))
                    else:
                        found.add((module, (alias.name,)))
        elif isinstance(node, ast.Import):
            found.update((a.name, ()) for a in node.names if a.name.split(".")[0] == "dimfeat")
    return found


def _graph() -> dict[str, set[str]]:
    files = _package_files()
    modules = {_module_name(p) for p in files}
    graph = {}
    for path in files:
        name = _module_name(path)
        if name == "dimfeat":
            continue  # the package's lazy attribute loader imports its faces on first use
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {
            target
            for target, _ in _dimfeat_imports(tree, modules, _package_of(path))
            if target in modules and target not in {name, "dimfeat"}
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_dimfeat_modules():
    graph = _graph()
    assert "dimfeat.weights_folder" in graph and "dimfeat.hub" in graph
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_weights_layers_import_only_downwards():
    graph = _graph()
    assert "dimfeat.weights" not in graph["dimfeat.hub"]
    assert "dimfeat.hub" not in graph["dimfeat.weights_folder"]
    assert "dimfeat.weights" not in graph["dimfeat.weights_folder"]


def test_the_inputs_stages_import_only_earlier_stages():
    """structures -> cell -> build, batch beside them; the package re-exports them."""
    graph = _graph()
    stages = {f"dimfeat.inputs.{n}" for n in ("structures", "cell", "batch", "build")}
    assert stages <= set(graph)
    assert graph["dimfeat.inputs.structures"] & stages == set()
    assert graph["dimfeat.inputs.batch"] & stages == set()
    assert graph["dimfeat.inputs.cell"] & stages == {
        "dimfeat.inputs.structures",
        "dimfeat.inputs.batch",
    }
    assert "dimfeat.inputs" not in set().union(*(graph[s] for s in stages))
    assert stages <= graph["dimfeat.inputs"]


def test_relative_imports_are_resolved():
    tree = ast.parse("from .cell import _x\nfrom .. import fingerprint\nfrom . import batch")
    modules = {"dimfeat.fingerprint", "dimfeat.inputs.batch", "dimfeat.inputs.cell"}
    assert _dimfeat_imports(tree, modules, "dimfeat.inputs") == {
        ("dimfeat.inputs.cell", ("_x",)),
        ("dimfeat.fingerprint", ()),
        ("dimfeat.inputs.batch", ()),
    }


def test_no_private_name_is_imported_across_modules():
    modules = {_module_name(p) for p in _package_files()}
    offenders = []
    for folder in ("dimfeat", "benchmarks", "examples"):  # tests may test private helpers
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            package = _package_of(path) if folder == "dimfeat" else ""
            for module, names in _dimfeat_imports(tree, modules, package):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: {module} {private}")
    assert offenders == []


def test_every_subpackage_ships_in_the_wheel():
    """pyproject.toml lists its packages by name: a new subpackage must be listed there too."""
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = re.search(r"^packages = \[(.*)\]", text, re.MULTILINE).group(1)
    for init in PACKAGE.rglob("__init__.py"):
        assert f'"{_module_name(init)}"' in listed, _module_name(init)
