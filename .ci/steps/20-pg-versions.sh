#!/usr/bin/env bash
# The version matrix: the database-facing suites (upgrade and herd, lock, signals, faults,
# DDL safety, poolers, commands, ledger, privileges, hostile cases, env.py variants; their tests
# that use PostgreSQL: marker `postgres`, set by tests/conftest.py) on each of PG_VERSIONS (default 17 and 18: RDS's current and next major),
# from the pinned builds devtools/pgcluster.py fetches and caches (.ci/setup already did),
# as the RDS-like owner role. The main suite has run them on Debian's server already.
# Prints each version's time; exits non-zero if any version fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The fault matrix's random points ran in full on 15 (the main suite); here fewer of each kind.
export FAULTS_KILL_SEEDS="${FAULTS_KILL_SEEDS:-4}" FAULTS_TERM_SEEDS="${FAULTS_TERM_SEEDS:-3}"
export FAULTS_CUT_SEEDS="${FAULTS_CUT_SEEDS:-1}"
DB_FACING=(tests/test_upgrade_process.py tests/test_lock.py tests/test_interrupt.py
           tests/test_faults.py tests/test_ddl_safety.py tests/test_poolers.py
           tests/test_commands.py tests/test_ledger.py tests/test_privileges.py
           tests/test_adversarial.py tests/test_env_variants.py tests/test_manifest.py)
for extra in tests/test_templates.py tests/test_drivers.py; do
  [ -e "$extra" ] && DB_FACING+=("$extra")
done
status=0
for version in ${PG_VERSIONS:-17 18}; do
  bindir=$(uv run --locked python -m devtools.pgcluster bindir "$version")
  started=$SECONDS
  echo "== PostgreSQL $version ($bindir)"
  PG_BINDIR="$bindir" uv run --locked pytest -n 2 -m postgres -p no:cacheprovider "${DB_FACING[@]}" || status=1
  echo "== PostgreSQL $version: $((SECONDS - started)) s"
done
exit $status
