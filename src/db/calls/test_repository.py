"""CallRepository against the real schema: the database is migrated by the runner, never
made with create_all; each test works in a session that is rolled back."""

from __future__ import annotations

import uuid

from sqlalchemy import event, text

from src.db.calls import Call, CallRepository
from tests.support.service_helpers import in_session


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_create_returns_an_active_call_with_its_id_and_start_time(migrated_database):
    async def body(session):
        call = await CallRepository(session).create("alice", "+15550001")
        row = (
            await session.execute(
                text(
                    "SELECT user_id, phone_number, is_active, ended_at, started_at <= now() "
                    "FROM calls WHERE id = :id"
                ),
                {"id": call.id},
            )
        ).one()
        return call, tuple(row)

    call, row = in_session(migrated_database, body)
    assert isinstance(call, Call) and call.id > 0
    assert (call.user_id, call.phone_number, call.is_active, call.ended_at) == (
        "alice",
        "+15550001",
        True,
        None,
    )
    assert call.started_at.tzinfo is not None and call.created_at is not None
    assert row == ("alice", "+15550001", True, None, True)


def test_get_by_id_finds_the_call_or_none(migrated_database):
    async def body(session):
        calls = CallRepository(session)
        call = await calls.create("bob", "+15550002")
        session.expunge_all()  # read it back from the database, not the identity map
        found = await calls.get_by_id(call.id)
        assert found is not None and found is not call
        return (call.id, found.id, found.user_id), await calls.get_by_id(call.id + 10_000)

    (call_id, found_id, found_user), missing = in_session(migrated_database, body)
    assert (found_id, found_user) == (call_id, "bob")
    assert missing is None


def test_list_active_for_user_returns_only_that_users_active_calls_oldest_first(migrated_database):
    user, other = _user(), _user()

    async def body(session):
        calls = CallRepository(session)
        first = await calls.create(user, "+1")
        ended = await calls.create(user, "+2")
        await calls.create(other, "+3")
        # started_at is now(): the same within one transaction, so the id breaks the tie
        second = await calls.create(user, "+4")
        await calls.end(ended.id)
        return [first.id, second.id], [c.id for c in await calls.list_active_for_user(user)]

    expected, listed = in_session(migrated_database, body)
    assert listed == expected


def test_active_calls_query_is_served_by_idx_user_active(migrated_database):
    async def body(session):
        await CallRepository(session).create("carol", "+15550003")
        # a tiny table is cheaper to scan: forbid that, so the plan shows which index serves it
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        calls = CallRepository(session)
        captured = []  # the SQL the repository really sends, to EXPLAIN exactly that

        def explain(conn, cursor, statement, parameters, context, executemany):
            captured.append((statement, parameters))

        sync_engine = session.bind.sync_engine
        event.listen(sync_engine, "before_cursor_execute", explain)
        try:
            await calls.list_active_for_user("carol")
        finally:
            event.remove(sync_engine, "before_cursor_execute", explain)
        statement, parameters = captured[-1]
        raw = await session.connection()
        driver = (await raw.get_raw_connection()).driver_connection
        cursor = driver.cursor()
        await cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(r[0] for r in await cursor.fetchall())

    plan = in_session(migrated_database, body)
    assert "idx_user_active" in plan, plan
    # both columns are conditions of the index scan, not a filter applied after it
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert len(conditions) == 1 and "user_id" in conditions[0] and "is_active" in conditions[0], (
        plan
    )


def test_end_sets_ended_at_and_deactivates_once(migrated_database):
    async def body(session):
        calls = CallRepository(session)
        call = await calls.create("dave", "+15550004")
        ended = await calls.end(call.id)
        again = await calls.end(call.id)
        missing = await calls.end(call.id + 10_000)
        row = (
            await session.execute(
                text("SELECT is_active, ended_at IS NOT NULL FROM calls WHERE id = :id"),
                {"id": call.id},
            )
        ).one()
        return ended, again, missing, tuple(row)

    ended, again, missing, row = in_session(migrated_database, body)
    assert ended is not None and ended.is_active is False and ended.ended_at is not None
    assert ended.ended_at >= ended.started_at
    assert again is None and missing is None
    assert row == (False, True)


def test_delete_removes_the_call_and_says_whether_there_was_one(migrated_database):
    async def body(session):
        calls = CallRepository(session)
        call = await calls.create("erin", "+15550005")
        deleted = await calls.delete(call.id)
        session.expunge_all()
        return deleted, await calls.get_by_id(call.id), await calls.delete(call.id)

    assert in_session(migrated_database, body) == (True, None, False)
