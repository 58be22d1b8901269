"""``upgrade --then -- APP...``: splitting the command line and checking the app before
anything is migrated (the hand-over itself is tested with real processes in
test_handoff_process)."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.handoff import resolve_app, split_app_command


@pytest.mark.parametrize("argv, expected", [
    (["upgrade"], (["upgrade"], None)),
    (["upgrade", "--then", "--", "uvicorn", "app:app", "--port", "8000"],
     (["upgrade"], ["uvicorn", "app:app", "--port", "8000"])),
    (["upgrade", "abc123", "--then", "uvicorn", "app:app"], (["upgrade", "abc123"], ["uvicorn", "app:app"])),
    (["upgrade", "--then", "--", "sh", "-c", "--then"], (["upgrade"], ["sh", "-c", "--then"])),
    (["upgrade", "--then", "--", "app", "--", "x"], (["upgrade"], ["app", "--", "x"])),
    (["upgrade", "--then"], (["upgrade"], [])),
])
def test_everything_after_then_is_the_apps_command(argv: list[str], expected: tuple) -> None:
    assert split_app_command(argv) == expected


def test_an_app_on_path_resolves_to_its_executable() -> None:
    assert resolve_app(["sh", "-c", "true"]).endswith("/sh")


def test_a_missing_app_is_refused_before_migrating() -> None:
    with pytest.raises(ConfigError, match="'no-such-app-xyz' is not an executable on PATH"):
        resolve_app(["no-such-app-xyz", "--serve"])


def test_then_without_a_command_is_refused() -> None:
    with pytest.raises(ConfigError, match="--then needs the app's command"):
        resolve_app([])
