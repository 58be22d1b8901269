"""Round trips per revision, counted on the wire: the runner's per-revision cost against the
database is Alembic's own (BEGIN, the revision's statement, the version UPDATE, COMMIT), its
lock check and ledger rows travelling with the COMMIT. A count, not a timing."""

from __future__ import annotations

from tests.support.helpers import run, runner_env
from tests.support.urls import pg_url
from tests.support.wire import counting_proxy

REVS = [f"a{i}" for i in range(1, 8)]


def _migrating_round_trips(database, project, port: int, counters, target: str) -> int:
    before = len(counters)
    url = pg_url(database.server.user, database.server.password, "127.0.0.1", port, database.name)
    result = run(
        runner_env(None, project, DATABASE_URL=url, DB_SSLMODE="disable", MIGRATION_TARGET=target)
    )
    result.check_log_contract()
    assert result.code == 0, result.stdout
    # the locked session migrates (psycopg): the busiest of the run's sessions
    return max(c.round_trips for c in counters[before:])


def test_each_revision_costs_four_round_trips_as_in_plain_alembic(database, project):
    down = None
    for rev in REVS:
        project.revision(rev, down, "op.execute('SELECT 1')")
        down = rev
    with counting_proxy(database.server.host, database.server.port) as (port, counters):
        _migrating_round_trips(database, project, port, counters, "a1")  # the ledger exists
        two = _migrating_round_trips(database, project, port, counters, "a3")
        four = _migrating_round_trips(database, project, port, counters, "a7")
    assert database.version() == ["a7"]
    assert (four - two) / 2 == 4  # BEGIN, SELECT 1, UPDATE, (lock check; INSERT; COMMIT)
