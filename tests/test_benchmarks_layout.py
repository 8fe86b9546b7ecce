"""The benchmarks' layout, read from the source with ``ast`` (benchmarks/README.md).

- Every script lies in the folder of its purpose (``paper``, ``perf``, ``release``, ``archive``);
  what they share is in ``benchmarks/common.py``.
- No script uses another script's ``_private`` name: not by ``from benchmarks.x import _y``, not
  as ``module._y`` of an imported benchmark module, and no ``_private`` benchmark module.
- Of dimfeat, the benchmarks use only public modules and public module attributes
  (``from dimfeat.x import _y`` is tests/test_layout.py's check; this one covers
  ``import dimfeat._x``, ``dimfeat.x._y`` and ``x._y`` of an imported dimfeat module).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PURPOSES = {"paper", "perf", "release", "archive"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` (``benchmarks.x`` or ``dimfeat.x``) names a module of this clone."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or path.is_dir()


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` of a chain of attributes on a name, else ``None``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def offences(source: str, packages: tuple[str, ...] = ("benchmarks", "dimfeat")) -> list[str]:
    """Private names of ``packages`` that ``source`` imports or reads off an imported module."""
    tree = ast.parse(source)
    found = []
    modules: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in packages:
                continue
            found += [f"module {node.module}" for p in node.module.split(".") if _private(p)]
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if _is_module(target):
                    modules[alias.asname or alias.name] = target
                if node.module.split(".")[0] == "benchmarks" and _private(alias.name):
                    found.append(f"{node.module} {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in packages:
                    continue
                found += [f"module {alias.name}" for p in alias.name.split(".") if _private(p)]
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    parts = alias.name.split(".")
                    modules.update({".".join(parts[:k]): ".".join(parts[:k]) for k in (1, 2, 3)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = _dotted(node.value)
            if owner in modules:
                found.append(f"{modules[owner]}.{node.attr}")
    return sorted(set(found))


def test_the_check_finds_private_names_of_scripts_and_of_dimfeat():
    source = (
        "from benchmarks.release.probe_curve import _pool, probe\n"
        "from benchmarks.paper import features as F\n"
        "import dimfeat.runtime\n"
        "from dimfeat import inputs\n"
        "import dimfeat._bundled\n"
        "F._eligible(1); dimfeat.runtime._SHARED.clear(); inputs._x; F.features; self._y\n"
    )
    assert offences(source) == [
        "benchmarks.paper.features._eligible",
        "benchmarks.release.probe_curve _pool",
        "dimfeat.inputs._x",
        "dimfeat.runtime._SHARED",
        "module dimfeat._bundled",
    ]


def test_no_benchmark_script_uses_a_private_name_of_another_or_of_dimfeat():
    found = [
        f"{path.relative_to(ROOT)}: {offence}"
        for path in sorted(BENCHMARKS.rglob("*.py"))
        for offence in offences(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_every_benchmark_script_lies_in_the_folder_of_its_purpose():
    loose = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in {"common.py"})
    assert loose == []
    folders = {p.name for p in BENCHMARKS.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert folders == PURPOSES
