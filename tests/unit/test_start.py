"""The entry point's start-up: the runner's own pydantic models are built without looking up
pydantic plugins, and the switch it uses is put back for the project's models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os
import pydantic.plugin._loader as loader
from runner.cli.start import without_pydantic_plugins
with without_pydantic_plugins():
    from runner.config.settings import Settings  # noqa: F401
print(json.dumps({"looked_up": loader._plugins is not None,
                  "switch": os.environ.get("PYDANTIC_DISABLE_PLUGINS")}))
"""


def _probe(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_settings_are_built_without_looking_up_plugins_and_the_switch_is_put_back():
    assert _probe() == {"looked_up": False, "switch": None}


def test_a_switch_the_user_set_is_left_as_it_was():
    assert _probe(PYDANTIC_DISABLE_PLUGINS="logfire") == {"looked_up": True, "switch": "logfire"}
