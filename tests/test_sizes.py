"""The runtime package stays readable: no module over 300 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).parents[1] / "runner"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def test_no_module_in_runner_is_over_300_lines():
    long = {p.name: n for p in RUNNER.glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these modules: {long}"


def test_no_function_in_runner_is_over_60_lines():
    long = {}
    for path in RUNNER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = length
    assert long == {}, f"split these functions: {long}"
