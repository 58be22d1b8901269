"""bench/ is not a test helper's client (what it shares with the tests lives in devtools/), and the
runtime package never names devtools/."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def test_no_bench_script_imports_the_tests():
    offenders = []
    for path in BENCH.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []


def test_the_runtime_package_never_names_the_dev_tools():
    """Not even through importlib: the wheel and the image ship runner/ only (issue 20)."""
    runner = Path(__file__).parents[2] / "runner"
    naming = [
        str(p.relative_to(runner)) for p in runner.rglob("*.py") if "devtools" in p.read_text()
    ]
    assert naming == []
