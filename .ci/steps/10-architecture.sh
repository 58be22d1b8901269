#!/usr/bin/env bash
# The layering as checked contracts (import-linter; see [tool.importlinter] in pyproject.toml):
# runner never imports src or devtools; the pure modules import no driver, SQLAlchemy or
# Alembic; the no-op path imports neither Alembic nor SQLAlchemy.
set -euo pipefail
cd "$(dirname "$0")/../.."
uv run --locked lint-imports
