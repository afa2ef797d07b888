"""TaskState and its groups are the only spelling of a task state in the Python code (docstrings aside)."""

from __future__ import annotations

import ast
from pathlib import Path

from shared.task_states import TaskState

ROOT = Path(__file__).resolve().parents[2]
THE_ONE_MODULE = ROOT / "shared" / "task_states.py"
STATE_NAMES = {state.value for state in TaskState}


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def bare_state_names(path: Path) -> list[str]:
    """`path:line: 'name'` for every string constant in the module that is exactly a state's name, or a SQL
    text quoting one (`'queued'`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if text in STATE_NAMES or any(f"'{name}'" in text for name in STATE_NAMES):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                hits.append(f"{where}:{node.lineno}: {text.strip()[:60]!r}")
    return hits


def python_modules() -> list[Path]:
    return sorted(p for folder in ("shared", "services") for p in (ROOT / folder).rglob("*.py"))


def test_state_names_are_spelled_in_one_module_only():
    # Given every Python module of the shared code and the services
    # When their string constants are read
    hits = [hit for path in python_modules() if path != THE_ONE_MODULE for hit in bare_state_names(path)]
    # Then none spells a task state: they name TaskState or one of its groups instead
    assert hits == []


def test_the_check_finds_a_bare_state_name(tmp_path):
    # Given a module that compares with a bare state name and one that quotes one in SQL
    module = tmp_path / "probe.py"
    module.write_text('"""Docstring: queued."""\n\nDONE = "completed"\nSQL = "SELECT 1 WHERE state = \'paused\'"\n')
    # Then both are found, and the docstring is not
    assert [hit.split(": ", 1)[1] for hit in bare_state_names(module)] == [
        "'completed'", "\"SELECT 1 WHERE state = 'paused'\""]


def test_the_one_module_spells_every_state():
    assert {hit.rsplit("'", 2)[1] for hit in bare_state_names(THE_ONE_MODULE)} == STATE_NAMES
