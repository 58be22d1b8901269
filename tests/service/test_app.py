"""The service's app through HTTP (httpx against the ASGI app), on databases the runner migrated:
/healthz at head, empty, behind, ahead and unreachable; calls created, listed, ended, deleted."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from src.db.database import Database as ServiceDatabase
from src.db.migrations import ALEMBIC_INI, migration_status
from src.main import create_app
from tests.support.helpers import ROOT, Database
from tests.support.service_helpers import run_async, settings_for

HEAD = "ba8c60a76780"


def with_client(
    db: Database,
    body: Callable[[httpx.AsyncClient], Awaitable[Any]],
    alembic_ini: Path = ALEMBIC_INI,
    **settings: Any,
) -> Any:
    async def main() -> Any:
        database = ServiceDatabase(settings_for(db, **settings))
        app = create_app(database, alembic_ini)
        try:
            # a failing request answers 500, as a server would, instead of raising in the test
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                return await body(client)
        finally:
            await database.dispose()

    return run_async(main)


async def get_health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/healthz")
    return response.status_code, response.json()


def test_health_is_ok_at_the_migrations_head(migrated_database):
    assert with_client(migrated_database, get_health) == (
        200,
        {"status": "at_head", "revision": [HEAD], "heads": [HEAD]},
    )


def test_health_fails_on_a_database_never_migrated(database):
    assert with_client(database, get_health) == (
        503,
        {"status": "empty", "revision": [], "heads": [HEAD]},
    )


def test_health_fails_when_the_code_has_a_migration_the_database_lacks(migrated_database, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "alembic", project / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "alembic.ini", project / "alembic.ini")
    (project / "alembic" / "versions" / "c0ffee000001_next.py").write_text(
        f'revision = "c0ffee000001"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    assert with_client(migrated_database, get_health, project / "alembic.ini") == (
        503,
        {"status": "behind", "revision": [HEAD], "heads": ["c0ffee000001"]},
    )


def test_health_stays_ok_when_a_newer_deploy_migrated_the_database_ahead(database):
    with database.connect() as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('feedface0001')")
    assert with_client(database, get_health) == (
        200,
        {"status": "ahead", "revision": ["feedface0001"], "heads": [HEAD]},
    )


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_health_fails_fast_when_the_database_is_unreachable(database):
    assert with_client(database, get_health, port=closed_port()) == (
        503,
        {"status": "unreachable", "heads": [HEAD]},
    )


def test_calls_answer_503_to_retry_when_the_database_is_unreachable(database, caplog):
    async def body(client: httpx.AsyncClient) -> tuple[int, Any]:
        response = await client.post("/calls", json={"user_id": "u", "phone_number": "+1"})
        return response.status_code, response.json()

    assert with_client(database, body, port=closed_port()) == (
        503,
        {"detail": "database unavailable, retry later"},
    )
    assert [r.getMessage() for r in caplog.records if r.name == "src.main"] == [
        "database unavailable during POST /calls: OperationalError"
    ]


def test_migration_status_decides_from_revisions_alone():
    known = {"a", "b"}
    assert migration_status([], ["b"], known) == "empty"
    assert migration_status(["b"], ["b"], known) == "at_head"
    assert migration_status(["a"], ["b"], known) == "behind"
    assert migration_status(["z"], ["b"], known) == "ahead"
    assert migration_status(["a", "b"], ["b"], known) == "behind"


def test_calls_are_started_listed_ended_and_deleted_over_http(migrated_database):
    user = f"user-{uuid.uuid4().hex[:8]}"

    async def body(client: httpx.AsyncClient) -> None:
        first = await client.post("/calls", json={"user_id": user, "phone_number": "+15550100"})
        second = await client.post("/calls", json={"user_id": user, "phone_number": "+15550101"})
        assert (first.status_code, second.status_code) == (201, 201), first.text
        one, two = first.json(), second.json()
        assert (one["user_id"], one["is_active"], one["ended_at"]) == (user, True, None)

        listed = await client.get("/calls", params={"user_id": user})
        assert [c["id"] for c in listed.json()] == [one["id"], two["id"]]

        ended = await client.post(f"/calls/{one['id']}/end")
        assert ended.status_code == 200
        assert ended.json()["is_active"] is False and ended.json()["ended_at"] is not None
        assert (await client.post(f"/calls/{one['id']}/end")).status_code == 409
        listed = await client.get("/calls", params={"user_id": user})
        assert [c["id"] for c in listed.json()] == [two["id"]]
        assert (await client.get(f"/calls/{one['id']}")).json()["ended_at"] == ended.json()[
            "ended_at"
        ]

        assert (await client.delete(f"/calls/{two['id']}")).status_code == 204
        assert (await client.get(f"/calls/{two['id']}")).status_code == 404
        assert (await client.delete(f"/calls/{two['id']}")).status_code == 404
        assert (await client.post("/calls/999999999/end")).status_code == 404
        assert (
            await client.post("/calls", json={"user_id": "", "phone_number": "+1"})
        ).status_code == 422

    with_client(migrated_database, body)
    # committed, not just flushed: another connection sees what the requests did
    assert migrated_database.query("SELECT is_active FROM calls WHERE user_id = %s", (user,)) == [
        (False,)
    ]


def test_a_request_whose_commit_fails_never_answers_success(fresh_migrated_database):
    """The session commits before the response is sent: a commit that fails (here a deferred
    constraint, checked only at COMMIT) turns into an error, not a 201 for a lost write."""
    with fresh_migrated_database.connect() as conn:
        conn.execute(
            "ALTER TABLE calls ADD CONSTRAINT one_call_per_number UNIQUE (phone_number) "
            "DEFERRABLE INITIALLY DEFERRED"
        )

    async def body(client: httpx.AsyncClient) -> list[int]:
        call = {"user_id": "u", "phone_number": "+15550199"}
        return [(await client.post("/calls", json=call)).status_code for _ in range(2)]

    assert with_client(fresh_migrated_database, body) == [201, 500]
    assert fresh_migrated_database.query("SELECT count(*) FROM calls") == [(1,)]
