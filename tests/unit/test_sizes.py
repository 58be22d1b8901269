"""The runtime package stays readable: no function over 60 lines, anywhere under ``runner/``.

A line here is a logical line: a statement, or the header of a compound statement, counted once
however the formatter (``ruff format``) wraps it; the docstring counts too. Modules are sized by
concept, not by line: there is no module cap (one made fragments)."""

from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).parents[2] / "runner"
MAX_FUNCTION_LINES = 60


def logical_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The function's statements (nested ones included, the function's own header too) plus
    its docstring's physical lines."""
    statements = sum(1 for node in ast.walk(function) if isinstance(node, ast.stmt))
    doc = ast.get_docstring(function, clean=False)
    return statements + (doc.count("\n") if doc else 0)


def test_no_function_in_runner_is_over_60_lines():
    long = {}
    for path in RUNNER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := logical_lines(node)) > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(RUNNER)}:{node.name}"] = n
    assert long == {}, f"split these functions: {long}"


def test_a_wrapped_call_is_one_line_and_a_long_function_is_caught():
    wrapped = ast.parse("def f():\n    g(\n        1,\n        2,\n    )\n").body[0]
    assert logical_lines(wrapped) == 2  # the def and one call
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert logical_lines(ast.parse(f"def f():\n{body}\n").body[0]) == 62


def test_the_check_reaches_the_subpackages():
    assert {p.parent.name for p in RUNNER.rglob("*.py")} >= {"lock", "execution", "ecs", "lint"}
