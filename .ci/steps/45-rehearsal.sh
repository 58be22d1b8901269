#!/usr/bin/env bash
# The deploy rehearsed end to end (tests/image/test_rehearsal.py): the Pulumi program's task
# definition (under its mocks, in infra's environment) registered in moto on 127.0.0.1, the
# gate's command line run as pulumi-command runs it, and a test-side ECS agent running the real
# image with podman against a real PostgreSQL. Needs podman (installed by 40-image.sh, which
# runs first) and infra's environment (synced here). Skips, saying so, where podman is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v podman >/dev/null 2>&1; then
  echo "rehearsal skipped: podman is not installed (.ci/steps/40-image.sh installs it)"
  exit 0
fi
(cd infra && uv sync --locked --quiet)
MIGRATION_RUNNER_REHEARSAL=required uv run --locked pytest -q tests/image/test_rehearsal.py
