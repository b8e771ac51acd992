"""The package's import graph: no cycles between modules, and `import fathom` stays light.

The graph is read statically, so an import inside a function or under
`if TYPE_CHECKING:` counts: a cycle hidden behind a lazy import is still two
modules that each need the other. An edge goes to the module an import names:
`from fathom.pkg import name` is an import of `fathom.pkg.name` when that is a
submodule, else of `fathom.pkg` (its `__init__`). The parent packages Python
runs first are not edges, or every module would share a cycle with
`fathom/__init__.py`. A module name given as a string (the lm and sandbox
registries' "module:attr" entries) is not an import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` at `path:line`."""

    source: str
    target: str
    path: str
    line: int


def _module_names(package: Path) -> dict[str, Path]:
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in `module` starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module, line) for every import of a module of `modules` anywhere in `path`."""
    top = module.partition(".")[0]

    def existing(name: str) -> str | None:
        # `import fathom.lm.nothing` names the nearest module that exists.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if target := existing(alias.name):
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module, path)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source.partition(".")[0] != top:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else existing(source)
                if target:
                    yield target, node.lineno


def import_graph(package: Path = ROOT / "fathom") -> dict[str, list[Edge]]:
    """Every module of `package` -> the modules of it that it imports (self-imports left out)."""
    modules = _module_names(package)
    graph: dict[str, list[Edge]] = {name: [] for name in modules}
    for name, path in modules.items():
        where = str(path.relative_to(package.parent))
        for target, line in _imported(name, path, modules):
            if target != name:
                graph[name].append(Edge(name, target, where, line))
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_through(start: str, component: list[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest import path from `start` back to itself, inside one component."""
    members = set(component)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    for node in queue:
        for edge in sorted(graph[node], key=lambda e: (e.target, e.line)):
            if edge.target not in members:
                continue
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError(f"{start} is in no cycle of {component}")


def describe(component: list[str], graph: dict[str, list[Edge]]) -> str:
    """The modules of one cycle, a shortest import path around it, and where each import is."""
    cycle = cycle_through(component[0], component, graph)
    path = " -> ".join([component[0], *(edge.target for edge in cycle)])
    lines = [f"  {', '.join(component)} import each other, e.g. {path}"]
    lines += [f"    {e.source} imports {e.target} at {e.path}:{e.line}" for e in cycle]
    return "\n".join(lines)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def _targets(graph: dict[str, list[Edge]]) -> dict[str, set[str]]:
    return {name: {edge.target for edge in edges} for name, edges in graph.items()}


def test_lazy_and_type_checking_imports_are_edges(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.b import B\n",
        "pkg/b.py": "def f():\n    import pkg.a\n    import json\n",
    })
    graph = import_graph(package)
    assert _targets(graph) == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert graph["pkg.b"] == [Edge("pkg.b", "pkg.a", "pkg/b.py", 2)]


def test_from_imports_name_the_submodule_or_else_the_package(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import core\n",
        "pkg/sub/__init__.py": 'REGISTRY = {"x": "pkg.sub.plugin:Plugin"}\n',
        "pkg/sub/core.py": "from pkg.sub import REGISTRY\nfrom . import plugin\n",
        "pkg/sub/plugin.py": "from ..sub.core import thing\nfrom .. import other\n",
        "pkg/other.py": "import pkg.sub.missing\n",
    })
    assert _targets(import_graph(package)) == {
        "pkg": {"pkg.sub.core"},
        "pkg.sub": set(),  # a module named in a string is not imported
        "pkg.sub.core": {"pkg.sub", "pkg.sub.plugin"},
        "pkg.sub.plugin": {"pkg.sub.core", "pkg.other"},
        "pkg.other": {"pkg.sub"},  # the nearest module that exists
    }


def test_a_package_and_its_submodule_importing_each_other_is_a_cycle(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.impl import run\n",
        "pkg/impl.py": "from pkg import Options\n",
    })
    assert strongly_connected(import_graph(package)) == [["pkg", "pkg.impl"]]


def test_cycle_finder_reports_each_cycle_with_its_path() -> None:
    graph = {
        "a": [Edge("a", "b", "a.py", 1)],
        "b": [Edge("b", "c", "b.py", 2)],
        "c": [Edge("c", "a", "c.py", 3), Edge("c", "d", "c.py", 4)],
        "d": [],
        "x": [Edge("x", "y", "x.py", 5)],
        "y": [Edge("y", "x", "y.py", 6)],
    }
    components = strongly_connected(graph)
    assert components == [["a", "b", "c"], ["x", "y"]]
    assert "a -> b -> c -> a" in describe(components[0], graph)
    assert "y imports x at y.py:6" in describe(components[1], graph)


def test_no_import_cycles_between_fathom_modules() -> None:
    graph = import_graph()
    cycles = strongly_connected(graph)
    report = "\n".join(describe(component, graph) for component in cycles)
    assert not cycles, f"import cycles in fathom (lazy and TYPE_CHECKING imports count):\n{report}"


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_import_fathom_loads_no_model_sdk() -> None:
    loaded = _modules_loaded_by("import fathom")
    assert "fathom.rlm" in loaded  # the probe really imported the package
    assert not {"llama_cpp", "openai", "anthropic"} & loaded


def test_the_sandbox_worker_starts_without_asyncio_or_model_code() -> None:
    # The worker imports through BOOT (skipping fathom/__init__) before isolation holds, once
    # per sandbox start and restart: it needs the REPL, the channel and the function specs only.
    from fathom.sandbox.process import BOOT

    probe = BOOT.replace(
        "from fathom.sandbox.worker import main\nraise SystemExit(main(sys.argv[1:]))\n",
        "import fathom.sandbox.worker\n",
    )
    assert probe != BOOT
    loaded = _modules_loaded_by(probe)
    assert "fathom.sandbox.worker" in loaded and "fathom.repl_api" in loaded
    assert not {"asyncio", "fathom.engine", "fathom.bridge", "fathom.lm", "fathom.rlm"} & loaded
