"""The bounds on the runner's own statements: a limit that fires is a wait to report; a
deliberate cancel (a signal) is not."""

from __future__ import annotations

import threading

import psycopg
import pytest

from runner.database.own_statement_bounds import gave_up_waiting
from tests.support.helpers import wait_until


def test_a_statement_timeout_is_a_wait_that_gave_up(database):
    with database.connect() as conn:
        conn.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("SELECT pg_sleep(5)")
    assert gave_up_waiting(caught.value)


def test_a_deliberate_cancel_is_not_a_wait_that_gave_up(database):
    with database.connect() as conn:
        started, pid = threading.Event(), conn.info.backend_pid

        def cancel_soon() -> None:
            started.wait(5)
            wait_until(
                lambda: database.query(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep'",
                    (pid,),
                ),
                timeout=5,
                what="the sleep to be running",
            )
            conn.cancel_safe()

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        started.set()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("SELECT pg_sleep(5)")
        canceller.join()
    assert not gave_up_waiting(caught.value)
