"""Where code may live and what it may import (docs/design.md, "Where each concept lives").

Imports point down: gateway → domains (upload, export, control, dashboard) → services/http → shared/.
The import graph is read with `ast` from the source of services/ and shared/, imports inside functions
included, so a loop hidden by a late import is found too.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "shared")
DOMAINS = ("upload", "export", "control", "dashboard")
# Modules and functions still over the size limits: to be split by the shared/ restructuring (the task
# core as a package, the control middleware split, the typed batch loop). Nothing else may join this list.
OVER_SIZE_ALLOWED: set[str] = set()
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources(roots=PACKAGES) -> dict[str, Path]:
    """Module name → file, for every Python file under `roots`."""
    modules = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _sources()


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the file imports, anywhere in it (`from a import b` counts as importing
    a.b when that is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                      for alias in node.names}
    return found & known


GRAPH = {name: imported_modules(path, set(MODULES)) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> str:
    """`shared`, `http`, `gateway`, a domain's name, `client`, or `services` (the package and services.cli)."""
    parts = module.split(".")
    if parts[0] == "shared":
        return "shared"
    return parts[1] if len(parts) > 1 and (ROOT / "services" / parts[1]).is_dir() else "services"


def test_the_import_graph_is_read_from_the_source():
    # Given the graph, then it holds the edges we know exist: a check that finds no edge finds no loop.
    assert "services.http.problems" in GRAPH["services.upload.resources"]
    assert "services.control.commands" in GRAPH["services.gateway.app"]
    assert "shared.task_states" in GRAPH["shared.metrics_collector"]


def test_no_import_cycle_between_modules():
    # Given every import in services/ and shared/ (top-level and inside functions), then no module
    # imports itself through others.
    try:
        tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_shared_never_imports_services():
    upward = {(module, target) for module, targets in GRAPH.items() if _layer(module) == "shared"
              for target in targets if _layer(target) != "shared"}
    assert not upward


def test_the_http_layer_imports_only_itself_and_shared():
    wrong = {(module, target) for module, targets in GRAPH.items() if _layer(module) == "http"
             for target in targets if _layer(target) not in ("http", "shared")}
    assert not wrong


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_imports_neither_another_domain_nor_the_gateway(domain):
    # Given a domain's modules, then they import only the domain itself, services/http and shared/.
    wrong = {(module, target) for module, targets in GRAPH.items() if _layer(module) == domain
             for target in targets if _layer(target) not in (domain, "http", "shared")}
    assert not wrong


def test_the_command_line_client_is_only_a_consumer_of_the_http_api():
    # The client talks to the API over HTTP: it needs no server-side code, only the names of the states
    # (shared.task_states: an enum, no database or broker code).
    wrong = {(module, target) for module, targets in GRAPH.items() if _layer(module) == "client"
             for target in targets if _layer(target) != "client" and target != "shared.task_states"}
    assert not wrong


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The function's lines, its docstring aside."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


SIZE_CHECKED = _sources(("services", "shared", "scripts"))


@pytest.mark.parametrize("path", sorted(SIZE_CHECKED.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines_and_no_function_over_60(path):
    if str(path.relative_to(ROOT)) in OVER_SIZE_ALLOWED:
        return
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = {node.name: _code_lines(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > MAX_FUNCTION_LINES}
    assert not long


def test_the_size_allow_list_names_only_files_still_over_the_limit():
    # Once the shared/ restructuring splits a file, it leaves the list (a stale entry would hide a regrowth).
    for name in OVER_SIZE_ALLOWED:
        assert len((ROOT / name).read_text().splitlines()) > MAX_MODULE_LINES, name
