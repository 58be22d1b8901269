#!/usr/bin/env bash
# The version matrix: every test that uses PostgreSQL (marker `postgres`, set by
# tests/conftest.py) on each of PG_VERSIONS (default 17 and 18: RDS's current and next major),
# from the pinned builds devtools/pgcluster.py fetches and caches (.ci/setup already did),
# as the RDS-like owner role. The main suite has run them on Debian's server already.
# Prints each version's time; exits non-zero if any version fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The fault matrix's random points ran in full on 15 (the main suite); here fewer of each kind.
export FAULTS_KILL_SEEDS="${FAULTS_KILL_SEEDS:-4}" FAULTS_TERM_SEEDS="${FAULTS_TERM_SEEDS:-3}"
export FAULTS_CUT_SEEDS="${FAULTS_CUT_SEEDS:-1}"
status=0
for version in ${PG_VERSIONS:-17 18}; do
  bindir=$(uv run --locked python -m devtools.pgcluster bindir "$version")
  started=$SECONDS
  echo "== PostgreSQL $version ($bindir)"
  PG_BINDIR="$bindir" uv run --locked pytest -n 2 -m postgres -p no:cacheprovider || status=1
  echo "== PostgreSQL $version: $((SECONDS - started)) s"
done
exit $status
