"""What a revision.progress event says (runner.progress) and how a person reads it
(runner.observe.console, the ECS launcher's stream)."""

from __future__ import annotations

import json

from runner.ecs.logs_tail import render
from runner.observe.console import REWRITE, Console, progress_line
from runner.progress import Sample, eta_s, fields, sample

BUILDING = {
    "command": "CREATE INDEX",
    "phase": "building index: scanning table",
    "blocks_done": 300,
    "blocks_total": 1000,
    "tuples_done": 0,
    "tuples_total": 0,
}


def test_an_index_build_reports_its_phase_and_the_blocks_of_its_scan():
    now = sample({"create_index": BUILDING}, at=10.0)
    assert now == Sample(
        10.0, "CREATE INDEX", "building index: scanning table", "blocks", 300, 1000
    )
    got = fields({"state": "active", "statement_s": 4.2}, now, None)
    assert got == {
        "state": "active",
        "wait_event_type": None,
        "wait_event": None,
        "statement_s": 4.2,
        "command": "CREATE INDEX",
        "phase": "building index: scanning table",
        "done": 300,
        "total": 1000,
        "unit": "blocks",
        "percent": 30.0,
        "eta_s": None,  # one sample: no rate yet
    }


def test_the_eta_comes_from_the_rate_between_two_samples_of_the_same_phase():
    before = sample({"create_index": BUILDING}, at=10.0)
    now = sample({"create_index": dict(BUILDING, blocks_done=500)}, at=12.0)
    assert eta_s(now, before) == 5.0  # 100 blocks/s, 500 to go
    loading = sample(
        {"create_index": dict(BUILDING, phase="loading tuples", blocks_total=0, tuples_total=9)},
        at=13.0,
    )
    assert loading.unit == "tuples" and eta_s(loading, now) is None  # another phase
    assert eta_s(now, now) is None  # no time passed


def test_a_phase_without_totals_reports_its_phase_only():
    now = sample({"cluster": {"command": "VACUUM FULL", "phase": "initializing"}}, at=1.0)
    got = fields({"state": "active"}, now, None)
    assert (got["command"], got["phase"]) == ("VACUUM FULL", "initializing")
    assert "percent" not in got


def test_a_backend_without_progress_reports_its_state_and_wait():
    got = fields(
        {"state": "active", "wait_event_type": "Lock", "wait_event": "relation"},
        sample({}, 1.0),
        None,
    )
    assert (got["state"], got["wait_event_type"], got["wait_event"]) == (
        "active",
        "Lock",
        "relation",
    )
    assert "command" not in got


def test_a_hidden_backend_says_which_privilege_shows_it():
    assert fields({"state": None}, sample({}, 1.0), None)["state"] == (
        "hidden: needs pg_read_all_stats"
    )


EVENT = {
    "event": "revision.progress",
    "level": "info",
    "revision": "r1",
    "elapsed_s": 12.0,
    "phase": "building index: scanning table",
    "percent": 42.0,
    "unit": "blocks",
    "done": 420,
    "total": 1000,
    "eta_s": 8.1,
}


def test_a_progress_line_names_the_phase_percent_and_eta():
    assert progress_line(EVENT) == (
        "r1 12.0 s: building index: scanning table 42.0 % (blocks 420/1000), ETA 8.1 s"
    )


def test_a_lock_wait_line_names_the_wait_and_the_blocker():
    event = {
        "revision": "r2",
        "elapsed_s": 3.0,
        "state": "active",
        "wait_event_type": "Lock",
        "wait_event": "relation",
        "blockers": [{"pid": 42, "application_name": "app-report"}],
    }
    assert (
        progress_line(event) == "r2 3.0 s: waiting on Lock (relation) blocked by pid 42 app-report"
    )


def test_on_a_terminal_a_progress_line_replaces_the_previous_one_and_nothing_else():
    console = Console(colors=False, live=True)
    first = console(None, "info", dict(EVENT))
    second = console(None, "info", dict(EVENT, percent=50.0))
    console(None, "info", {"event": "revision.applied", "revision": "r1", "duration_ms": 5})
    third = console(None, "info", dict(EVENT))
    assert not first.startswith(REWRITE) and second.startswith(REWRITE)
    assert not third.startswith(REWRITE)  # a line was printed in between: keep it
    assert not Console(colors=False, live=False)(None, "info", dict(EVENT)).startswith(REWRITE)


def test_the_ecs_launcher_shows_a_streamed_progress_event_as_a_progress_line():
    line = render(json.dumps(dict(EVENT, timestamp="2026-12-07T10:00:00+00:00")), tty=True)
    assert line == (
        "10:00:00 info revision.progress r1 12.0 s: building index: scanning table 42.0 % "
        "(blocks 420/1000), ETA 8.1 s"
    )
