"""The project's output while revisions run becomes revision.output events (the process-level
behaviour is in test_revision_output.py)."""

from __future__ import annotations

import logging
import sys
import warnings

from runner.execution.output_capture import OutputCapture


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.events.append((level, {"event": event, **fields}))


def test_lines_warnings_and_the_projects_loggers_become_events_and_everything_is_restored():
    from runner.observe import logs

    log, in_flight = Recorder(), ["r1"]
    saved = (sys.stdout, sys.stderr, warnings.showwarning, logs.record_sink)
    with OutputCapture(log, lambda: in_flight[0]).active():
        print("one", "two")
        sys.stdout.write("partial")
        in_flight[0] = "r2"
        sys.stdout.write(" line\nnext")
        sys.stderr.write("err\n")
        warnings.warn_explicit("careful", UserWarning, "rev.py", 3)
        assert logs.record_sink is not None
        taken = logs.record_sink(
            logging.LogRecord("myapp", logging.WARNING, "f", 1, "from %s", ("app",), None)
        )
        kept = logs.record_sink(
            logging.LogRecord("alembic.runtime", logging.INFO, "f", 1, "x", (), None)
        )
    assert (sys.stdout, sys.stderr, warnings.showwarning, logs.record_sink) == saved
    assert (taken, kept) == (True, False)
    said = [(level, e["revision"], e["stream"], e["text"]) for level, e in log.events]
    assert said == [
        ("info", "r1", "stdout", "one two"),
        ("info", "r2", "stdout", "partial line"),
        ("warning", "r2", "stderr", "err"),
        ("warning", "r2", "warning", "UserWarning: careful"),
        ("warning", "r2", "logging", "from app"),
        ("info", "r2", "stdout", "next"),
    ]
