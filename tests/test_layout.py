"""Pins the package layout: no import cycles in `pipeline/` and `models/`, `models/` stands
alone (no `pipeline`, no Ray), and every stage of `pipeline/` is a documented subpackage.

Imports are read with `ast`, not by importing: every `import` and `from ... import`
statement counts, at module level or inside a function or an `if TYPE_CHECKING:` block, so
a cycle hidden in a lazy import is caught too. `from pkg import name` counts as an import of
the module `pkg.name` when there is one, else of `pkg` itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models")
STAGES = ("corpus", "prepare", "train", "translate", "serve", "bulk")


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` under `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name) for every import statement of `module`, anywhere in its file:
    `import a.b` gives ("a.b", None), `from a import b` gives ("a", "b"), relative imports
    resolved against `module`'s package."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield from ((base, alias.name) for alias in node.names)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports (`from pkg import name`: the module
    pkg.name if there is one, else pkg)."""
    files = module_files(root, packages)
    graph = {}
    for module, path in files.items():
        targets = set()
        for base, name in imported_names(module, path):
            target = f"{base}.{name}" if name and f"{base}.{name}" in files else base
            if target in files and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle [a, b, ..., a] through each strongly connected component of `graph` that
    has one (Tarjan's algorithm, iterative), sorted for a stable report."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(sorted(component))
    return sorted(_cycle_in(graph, set(c)) for c in components)


def _cycle_in(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth-first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start] * 2
                if child in component and child not in came_from:
                    came_from[child] = node
                    next_frontier.append(child)
        frontier = next_frontier
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a component


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


# -- the checker itself can fail ----------------------------------------------------------------
def test_find_cycles_reports_each_cycle_and_passes_a_dag():
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert find_cycles(dag) == []
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"d"}, "e": {"a"}, "f": {"g"}}
    graph["g"] = {"f"}
    assert describe(find_cycles(graph)) == "a -> b -> a\nd -> d\nf -> g -> f"


def test_a_cyclic_import_in_a_scratch_package_is_found(tmp_path):
    """The whole walk on a scratch tree: a cycle through a function-level
    `from pkg import module`, a relative import and a package's __init__."""
    files = {
        "pkg/__init__.py": '"""A package."""\n',
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def later():\n    from pkg import c\n",
        "pkg/c.py": "from . import a\nfrom .a import something\n",
        "pkg/sub/__init__.py": "from ..a import x\nfrom pkg.sub import d\n",
        "pkg/sub/d.py": "from pkg import sub\n",
        "pkg/e.py": "from pkg import a, sub\nfrom pkg import VERSION\nimport os, pkg.sub.d\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.e"] == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.d"}
    assert graph["pkg.sub"] == {"pkg.a", "pkg.sub.d"}
    assert describe(find_cycles(graph)) == (
        "pkg.a -> pkg.b -> pkg.c -> pkg.a\npkg.sub -> pkg.sub.d -> pkg.sub"
    )


# -- the tree ----------------------------------------------------------------------------------
def test_pipeline_and_models_have_no_import_cycles():
    graph = import_graph(REPO)
    assert "pipeline.translate.translator" in graph and "models.search" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + describe(cycles)


def test_models_imports_neither_pipeline_nor_ray():
    for module, path in module_files(REPO, ("models",)).items():
        tops = {base.split(".")[0] for base, _ in imported_names(module, path)}
        assert not tops & {"pipeline", "ray"}, f"{path.relative_to(REPO)} imports {tops}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_a_subpackage_with_a_docstring(stage):
    init = REPO / "pipeline" / stage / "__init__.py"
    assert init.is_file(), f"pipeline/{stage}/ has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"
