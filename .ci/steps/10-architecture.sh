#!/usr/bin/env bash
# The house rules as tools: ruff (lint and format, checking only), mypy (strict on the pure
# kernel), and the architecture's contracts (import-linter: one layers contract for runner/,
# settings stop at the command layer, the kernel is pure, one home per third-party seam;
# see [tool.importlinter] in pyproject.toml and docs/architecture.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
uv run --locked ruff check runner tests bench devtools src alembic
uv run --locked ruff format --check runner tests bench devtools src alembic
uv run --locked mypy
uv run --locked lint-imports
