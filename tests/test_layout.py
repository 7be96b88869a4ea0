"""The package's shape: imports point down (no cycle), and uvicorn's protocol internals are
known in one module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "wsbroadcast"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules of the package imported when `path` is imported (not lazily, not for types)."""
    tree = ast.parse(path.read_text())
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in tree.body:  # module level only: a lazy import inside a function is not an edge
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
            elif node.module and node.module.startswith("wsbroadcast"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("wsbroadcast"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: top_level_imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_imports_form_no_cycle() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = [*trail[trail.index(node) :], node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(edges[node]):
            visit(target, [*trail, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_only_the_transport_module_knows_uvicorns_protocols() -> None:
    knowing = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "uvicorn.protocols" in p.read_text() or "send.__self__" in p.read_text()
    )
    assert knowing == ["wsbroadcast.transports"]
