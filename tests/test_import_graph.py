"""The package's import graph: no cycles between its modules, and the dependency direction of docs/ARCHITECTURE.md.

Every import counts, at module level or inside a function: a deferred import that closes a loop is still a loop
(the two modules cannot be understood, or moved, apart). ``from PACKAGE import NAME`` is an edge to the
submodule when NAME is one, else to the package's ``__init__``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "extension"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_cli_hub_is_imported_by_nothing_in_the_package():
    importers = sorted(name for name, targets in graph().items() if "extension.cli" in targets)
    assert importers == []


FRONT_ENDS = ("extension.ui", "extension.api", "extension.demo", "extension.hosts")
CORE_EXCEPTIONS = ("extension.cli", "extension.generate_cli", "extension.training.cli", "extension.ui",
                   "extension.api", "extension.demo", "extension.hosts")


def test_the_core_never_imports_a_front_end_or_a_host():
    wrong = []
    for name, targets in graph().items():
        if name.startswith(CORE_EXCEPTIONS):
            continue
        wrong += [(name, t) for t in targets if t.startswith(FRONT_ENDS)]
    assert wrong == []


def test_mode_flags_match_the_modes():
    from extension.cli import MODES
    from extension.cli_parser import MODE_FLAGS

    assert MODE_FLAGS == tuple(mode.flag for mode in MODES)
