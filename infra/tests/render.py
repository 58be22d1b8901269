"""What the program registers under the mocks, as JSON on stdout, for the rehearsal in the
runner's own test suite (tests/image/test_rehearsal.py), which runs in the runner's environment
and cannot import Pulumi:

    python -m tests.render '<stack config as JSON, keys without the namespace>'

Prints {"task_definitions": {name: inputs}, "alarm": inputs, "gate": {"create", "environment"}}:
the resolved inputs, as the engine (and so AWS) would receive them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from migration_infra.settings import parse_settings
from tests.conftest import example_config, run_program


def render(config: dict[str, Any]) -> dict[str, Any]:
    program = run_program(parse_settings({**example_config(), **config}, stack="prod"))
    gate = program.one("command:local:Command")
    return {
        "task_definitions": {r.name: r.inputs
                             for r in program.all("aws:ecs/taskDefinition:TaskDefinition")},
        "alarm": program.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs,
        "gate": {"create": gate.inputs["create"], "environment": gate.inputs["environment"]},
    }


if __name__ == "__main__":
    json.dump(render(json.loads(sys.argv[1])), sys.stdout, default=str)
