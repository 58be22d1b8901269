"""lint when squawk, or the SQL it is given, misbehaves: the project's or the environment's
fault is a configuration error naming it, never "unexpected ...: please report this"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.checklist.lint import squawk
from runner.errors import ConfigError, ExitCode
from tests.support.helpers import run, runner_env
from tests.support.verify_helpers import History


def test_a_revision_whose_sql_is_not_utf8_is_linted_not_an_internal_error(tmp_path: Path) -> None:
    history = History(tmp_path / "project")
    history.add("op.execute(\"SELECT '\\\\udcff'\")")  # a lone surrogate: no UTF-8 for it
    assert "\\udcff" in (history.versions / "r01_step.py").read_text()
    result = run(runner_env(None, history), "lint", "--json")
    assert result.code == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["revisions"] == ["r01"]
    result.check_log_contract()


def _fake(tmp_path: Path, body: str, mode: int = 0o755) -> str:
    path = tmp_path / "squawk"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("body", "mode", "said"),
    [
        pytest.param(
            "kill -SEGV $$", 0o755, "squawk failed (exit -11): killed by SIGSEGV", id="crashes"
        ),
        pytest.param("exec sleep 30", 0o755, "did not finish r01.sql within 1 s", id="hangs"),
        pytest.param("exit 0", 0o644, "cannot run squawk", id="not-executable"),
    ],
)
def test_a_squawk_that_fails_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, mode: int, said: str
) -> None:
    monkeypatch.setattr(squawk, "SQUAWK_TIMEOUT_S", 1)
    with pytest.raises(ConfigError, match=re.escape(said)) as raised:
        squawk._squawk(_fake(tmp_path, body, mode), "SELECT 1;\n", "r01.sql", ())
    assert raised.value.exit_code == ExitCode.CONFIG
