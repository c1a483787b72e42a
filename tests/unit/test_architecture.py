"""The import rule, beyond what import-linter's contracts (pyproject.toml) check.

* The engine imports only the standard library: any new third-party import fails here,
  whether or not import-linter's forbidden list names it.
* No import cycle between the repository's modules, counting imports inside functions
  (which import-linter's layers allow within one package).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("streams", "consumers", "dashboards", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module `path` imports, at any depth (functions included), absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        edges[name] = {
            target for target in imports(path, name) if target in known and target != name
        }
    return edges


def test_the_engine_imports_only_the_standard_library() -> None:
    outside = {
        (name, target)
        for name, path in modules().items()
        if name.startswith("streams.engine")
        for target in imports(path, name)
        if not target.startswith("streams.engine")
        and target.partition(".")[0] not in sys.stdlib_module_names
        and target != "__future__"
    }
    assert outside == set()


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its modules is not a cycle of behaviour: leave out
    # the edges from a package to its own submodules.
    edges = {
        name: {t for t in targets if not t.startswith(name + ".")}
        for name, targets in graph().items()
    }
    assert strongly_connected(edges) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_command_line_imports_no_service_library_until_a_command_runs() -> None:
    """`crisiswatch --help` and every command's start stay fast: the heavy stacks (web, Kafka,
    PostgreSQL, Faust) are imported inside the commands that use them."""
    import subprocess

    heavy = ["aiohttp", "jinja2", "faust", "aiokafka", "kafka", "psycopg", "openpyxl"]
    probe = (
        f"import sys, consumers.cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"
