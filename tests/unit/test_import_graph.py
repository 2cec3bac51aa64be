"""The package's import structure: every module imports, and module-level imports form no cycle.

What counts as an edge of the import graph (module A -> module B, both in `shoplake`):
- an `import B` or `from B import name` statement that runs when A is imported: anywhere in A except
  inside a function body (imports inside functions run later, when the function is called; that is how
  the CLI and the ML code defer heavy imports) and except under `if TYPE_CHECKING:` (never runs);
- `from P import name` where `P.name` is itself a module counts as an edge to `P.name` (the module that is
  actually needed), not to the package `P`;
- relative imports are resolved against A's package;
- the implicit import of a parent package (importing `P.sub` first runs `P/__init__.py`) is not an edge:
  a package's `__init__` importing its own submodules is how Python packages expose them.

That graph must be acyclic. A second check adds the deferred imports (inside functions) as edges too:
a cycle hidden behind them (the old `shoplake.cli` <-> `jobs/cli.py`, `ml/cli.py`, `serve/cli.py`, each
importing the other inside a function) is still a tangle, so it is allowed only where listed below.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import shoplake

ROOT = Path(shoplake.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["shoplake", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


# Cycles through deferred (function-level) imports that are known and accepted, with the reason.
DEFERRED_CYCLES_ALLOWED = {
    # `training` uses `assessment` to compare candidates; `assessment.backtest` reuses training's example
    # collection. ML modelling code, outside the CLI/jobs rework (issue 17, item 4).
    frozenset({"shoplake.ml.assessment", "shoplake.ml.training"}),
}


def _module_level_imports(tree: ast.Module, *, deferred: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (see the module docstring); with
    `deferred`, also those inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if deferred:
                    visit(node.body)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None) or []
                    for child in children:
                        # except handlers and match cases hold statements one level down
                        visit(child.body if isinstance(child, ast.excepthandler | ast.match_case) else [child])

    visit(tree.body)
    return found


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the `shoplake` modules it imports at module level (with `deferred`, anywhere)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(), str(path)), deferred=deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def test_import_graph_has_no_cycles():
    graph = import_graph()
    assert len(graph) > 80, sorted(graph)  # the walk found the package
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert set(order) == set(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other (directly or around a loop): Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_deferred_imports_add_no_cycle_but_the_listed_ones():
    cycles = set(_strongly_connected(import_graph(deferred=True)))
    assert cycles <= DEFERRED_CYCLES_ALLOWED, sorted(sorted(c) for c in cycles - DEFERRED_CYCLES_ALLOWED)


def test_import_graph_sees_the_edges_it_should():
    """The walk is not vacuous: known module-level imports are edges, deferred and type-only ones are not."""
    graph = import_graph()
    assert "shoplake.cli.app" in graph["shoplake.cli.core"]  # `from shoplake.cli import app as cli`
    assert "shoplake.errors" in graph["shoplake.config"]
    assert "shoplake.lake" not in graph["shoplake.cli.app"]  # under TYPE_CHECKING, and inside a function
    assert "shoplake.lake" in import_graph(deferred=True)["shoplake.cli.app"]
    # A tangle like the old CLI's would be found: two modules importing each other inside functions.
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [frozenset({"a", "b"})]


def test_command_groups_import_only_the_app_module():
    """Each command group imports `shoplake.cli.app` and no other command group at module level."""
    graph = import_graph()
    groups = [name for name in graph if name.startswith("shoplake.cli.") and name not in
              ("shoplake.cli.app", "shoplake.cli.__main__")]
    assert groups
    for group in groups:
        assert "shoplake.cli.app" in graph[group], group
        assert not {m for m in graph[group] if m.startswith("shoplake.cli") and m != "shoplake.cli.app"}, group


def test_every_module_imports_in_a_fresh_interpreter():
    names = [name for name in _modules() if not name.endswith("__main__")]
    code = ("import importlib, sys\n"
            "failed = []\n"
            f"for name in {names!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
            "print('\\n'.join(failed))\n"
            "sys.exit(1 if failed else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_command_line_starts_without_the_heavy_libraries():
    """`shoplake --help` and a task worker import neither MLflow, scikit-learn nor FastAPI."""
    code = ("import sys\n"
            "sys.argv = ['shoplake', 'jobs', 'task', 'verify', '--help']\n"
            "import shoplake.cli\n"
            "try:\n"
            "    shoplake.cli.main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = [m for m in ('mlflow', 'sklearn', 'fastapi', 'uvicorn', 'plotly', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
