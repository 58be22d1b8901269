"""The log pipeline: JSON lines, headline fields first, nothing secret."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from runner.observe import logs


@pytest.fixture
def stream():
    out = io.StringIO()
    logs.configure("json", "info", secrets=["hunter2"], stream=out)
    yield out
    logs.configure("json", "info", stream=io.StringIO())


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_event_is_one_json_line_with_timestamp_level_and_event_first(stream):
    logs.get().info("lock.acquired", waited_ms=3)
    (event,) = lines(stream)
    assert list(event)[:3] == ["timestamp", "level", "event"]
    assert event["event"] == "lock.acquired" and event["waited_ms"] == 3
    assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]


def test_known_secrets_are_masked_everywhere_in_the_event(stream):
    logs.get().error("error", message="auth failed for hunter2", nested={"list": ["x hunter2 y"]})
    assert "hunter2" not in stream.getvalue()
    assert lines(stream)[0]["nested"] == {"list": ["x *** y"]}


def test_alembic_records_go_through_the_same_pipeline(stream):
    logging.getLogger("alembic.autogenerate.compare").info("Detected added table %r", "calls")
    (event,) = lines(stream)
    assert event["event"] == "Detected added table 'calls'"
    assert event["logger"] == "alembic.autogenerate.compare"


def test_alembic_running_upgrade_lines_show_only_at_debug_the_runner_says_the_same():
    for level, shown in (("info", 0), ("debug", 1)):
        out = io.StringIO()
        logs.configure("json", level, stream=out)
        logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "a", "b")
        assert len(out.getvalue().splitlines()) == shown


def test_bridge_survives_a_logging_reconfiguration(stream):
    enabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
    try:
        logs.install_stdlib_bridge()
        logging.getLogger("alembic.command").info("still here")
        assert lines(stream)[-1]["event"] == "still here"
    finally:  # the other tests of this worker (the service's caplog ones) keep their loggers
        for logger in enabled:
            logger.disabled = False


def test_auto_format_is_json_when_not_a_terminal():
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("console", io.StringIO()) == "console"


def test_tracebacks_only_at_debug_level():
    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        logs.configure("json", level, stream=out)
        try:
            raise ValueError("boom")
        except ValueError:
            logs.get().error("error", message="boom", exc_info=True)
        event = json.loads(out.getvalue())
        assert ("exception" in event) is shown
        assert event["message"] == "boom"
    logs.configure("json", "info", stream=io.StringIO())
