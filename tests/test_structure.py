"""The shape of service/, checked in CI: no import cycle, a docstring saying what each module owns, files of a
readable size, imports at module top, and a command line that starts without importing the service.

Read from the source with ast (nothing under service/ is imported, except by the command-line checks).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from service.cli import COMMANDS, load_command, main

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service"
MAX_LINES = 400

# Modules that fail a per-module check on this branch because another issue-10 helper is restructuring them;
# after the merge each must pass, and strict xfail turns a leftover entry into a failure, so empty these sets.
UNTIL_MERGE = "until issue-10 merge"
DOCSTRING_UNTIL_MERGE: set[str] = set()
SIZE_UNTIL_MERGE: set[str] = set()
LAZY_IMPORT_UNTIL_MERGE: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(SERVICE.rglob("*.py"))}
TREES: dict[str, ast.Module] = {name: ast.parse(p.read_text(encoding="utf-8")) for name, p in MODULES.items()}


def per_module(names: Iterator[str] | list[str], until_merge: set[str]) -> list[object]:
    return [
        pytest.param(name, id=name, marks=pytest.mark.xfail(strict=True, reason=UNTIL_MERGE))
        if name in until_merge
        else pytest.param(name, id=name)
        for name in names
    ]


# ---------------------------------------------------------------------------------------------------------
# Import cycles


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: the top level, inside try/if/with, not in functions or
    classes, and not under `if TYPE_CHECKING:`."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The service modules an import statement loads."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                targets.add(name)
        return targets
    base = node.module or ""
    if node.level:
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            targets.add(f"{base}.{alias.name}")
        elif base in MODULES:
            targets.add(base)
    return targets


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, tree in TREES.items():
        graph[name] = set()
        for node in _module_level_imports(tree):
            graph[name] |= _resolve(name, node) - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) for each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & group):
                if succ == start:
                    return [*paths[node], start]
                if succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_through_if_try_and_skips_type_checking_and_functions() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import service.db\n"
        "try:\n    from service import models\nexcept ImportError:\n    pass\n"
        "if TYPE_CHECKING:\n    from service.app import create_app\n"
        "def f():\n    from service.worker import Worker\n"
    )
    found = set().union(*(_resolve("service.audit", node) for node in _module_level_imports(tree)))
    assert found == {"service.db", "service.models"}


def test_no_import_cycle_among_service_modules() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import, in functions too, except those under `if TYPE_CHECKING:`."""
    hidden = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in hidden:
            yield node


# On main the module-level graph has no cycle only because imports inside functions break them (app <-> replay,
# flow <-> conversation, context -> outbox -> gates -> context): a lazy import must not be a cycle's hiding place.
def test_no_import_cycle_hidden_by_an_import_inside_a_function() -> None:
    graph = {
        name: set().union(*(_resolve(name, n) for n in _all_imports(tree))) - {name}
        for name, tree in TREES.items()
    }
    cycles = find_cycles(graph)
    assert not cycles, "import cycles through imports inside functions: " + "; ".join(
        " -> ".join(cycle) for cycle in cycles
    )


# ---------------------------------------------------------------------------------------------------------
# Docstrings and size


def _is_empty_package_marker(name: str) -> bool:
    return MODULES[name].name == "__init__.py" and not TREES[name].body


@pytest.mark.parametrize(
    "name", per_module([n for n in MODULES if not _is_empty_package_marker(n)], DOCSTRING_UNTIL_MERGE)
)
def test_every_module_opens_with_a_docstring(name: str) -> None:
    docstring = ast.get_docstring(TREES[name]) or ""
    assert docstring.strip(), f"{MODULES[name]} needs an opening docstring saying what it owns"


@pytest.mark.parametrize("name", per_module(list(MODULES), SIZE_UNTIL_MERGE))
def test_no_module_over_the_size_limit_without_a_reason(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(TREES[name]) or ""
    reasons = [line for line in docstring.splitlines() if line.strip().startswith("Size:")]
    assert reasons, (
        f"{MODULES[name]} has {lines} lines (limit {MAX_LINES}): split it, or give the reason in its docstring "
        "on a line starting 'Size:'"
    )


# ---------------------------------------------------------------------------------------------------------
# Imports at module top


def in_function_imports(name: str) -> list[tuple[int, bool]]:
    """(line, has a `# lazy: <reason>` comment) for every import inside a function of the module."""
    lines = MODULES[name].read_text(encoding="utf-8").splitlines()
    found = []
    for func in ast.walk(TREES[name]):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import | ast.ImportFrom):
                span = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
                marked = any(_lazy_reason(line) for line in span)
                found.append((node.lineno, marked))
    return sorted(set(found))


def _lazy_reason(line: str) -> str:
    _, sep, comment = line.partition("# lazy:")
    return comment.strip() if sep else ""


def test_the_lazy_marker_needs_a_reason() -> None:
    assert _lazy_reason("    import guardrails  # lazy: imports in 1.2 s; only the guard needs it")
    assert not _lazy_reason("    import guardrails  # lazy:")
    assert not _lazy_reason("    import guardrails")


@pytest.mark.parametrize("name", per_module(list(MODULES), LAZY_IMPORT_UNTIL_MERGE))
def test_imports_are_at_module_top_unless_marked_lazy_with_a_reason(name: str) -> None:
    unmarked = [line for line, marked in in_function_imports(name) if not marked]
    assert not unmarked, (
        f"{MODULES[name]}: imports inside functions at lines {unmarked}; move them to the top, or say why with "
        "'# lazy: <reason>' on the import line (a measured start-up cost, or a cycle being broken)"
    )


# ---------------------------------------------------------------------------------------------------------
# The command line


def test_help_lists_every_command_without_importing_the_service() -> None:
    heavy = ("guardrails", "openai", "litestar", "sqlmodel", "sqlalchemy", "service.commands")
    script = (
        "import sys\n"
        "from service.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('IMPORTED', sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
    assert done.stdout.splitlines()[-1] == "IMPORTED []"


def test_import_app_leaves_report_charts_for_the_first_report() -> None:
    """pygal and lxml (~0.17 s of a restart) load when a report is first drawn, not when `serve` starts."""
    heavy = ("pygal", "lxml")
    script = (
        "import sys\n"
        "import service.app, service.web.console_report, service.report_render\n"
        f"print('IMPORTED', sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines()[0] == "IMPORTED []"


@pytest.mark.parametrize("width", [80, 200])
def test_help_shows_what_the_imported_commands_would_show(width: int) -> None:
    """The table's summaries give the same `textback --help` as importing every command would."""
    ctx = click.Context(main)
    lazy = click.HelpFormatter(width=width)
    main.format_commands(ctx, lazy)
    eager = click.HelpFormatter(width=width)
    click.Group.format_commands(main, ctx, eager)  # click's own: imports each command for its help
    assert lazy.getvalue() == eager.getvalue()
    assert all(f"  {name} " in lazy.getvalue() for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_sub_command_help_works(name: str) -> None:
    assert load_command(name) is not None
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {name} ") or result.output.startswith("Usage: ")
