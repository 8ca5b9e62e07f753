"""The reusable layer's shape: it never imports the example app, and its modules import each other
without cycles, counting imports inside functions too (a cycle hidden in a function body is still a
cycle); only ``TYPE_CHECKING`` blocks are excluded."""

from __future__ import annotations

import ast
from pathlib import Path

import otel_basic

ROOT = Path(otel_basic.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        name = "otel_basic." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        found += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def test_the_layer_never_imports_the_example_app() -> None:
    offenders = []
    for name, path in _modules().items():
        for node in _imports(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(t == "basic" or t.startswith("basic.") for t in targets):
                offenders.append(name)
    assert not offenders


def test_no_import_cycles_in_the_layer() -> None:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("otel_basic"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
                graph[name] |= (subs or {node.module}) - {name}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods} - {name}
    cycles = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        on_path.add(node)
        for nxt in graph[node] & mods.keys():
            if nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], on_path, done)
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], set(), done)
    assert not cycles, cycles[:5]
