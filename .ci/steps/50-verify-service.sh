#!/usr/bin/env bash
# The service's own migrations pass the team's pre-deployment checklist, as a pull request's
# CI runs it: `verify` (every check, against a throwaway PostgreSQL it starts itself) and
# `lint`. Needs only what .ci/setup installed (uv; the PostgreSQL server binaries); squawk
# comes with the dev group. Exits non-zero when either fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
uv run --locked migration-runner verify
echo "== verify on the service's migrations: $((SECONDS - started)) s"
uv run --locked migration-runner lint
