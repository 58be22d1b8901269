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
DB_FACING=(tests/process/test_upgrade_process.py tests/database/test_lock.py tests/unit/test_interrupt.py
           tests/process/test_faults.py tests/database/test_ddl_safety.py tests/database/test_poolers.py
           tests/process/test_commands.py tests/database/test_ledger.py tests/database/test_privileges.py
           tests/process/test_adversarial.py tests/database/test_env_variants.py tests/process/test_manifest.py)
for extra in tests/database/test_templates.py tests/database/test_drivers.py; do
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
