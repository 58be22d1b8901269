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


def test_the_streams_are_real_text_streams_with_the_capture_pipes_fileno():
    """faulthandler.enable() and subprocess.run(stdout=sys.stdout) need sys.stdout.fileno():
    under the fd capture it is the pipe (fd 1/2), so what goes through it is captured too;
    without it there is no fd to hand out (the real stdout carries the runner's lines)."""
    import io
    import subprocess

    import pytest

    from runner.observe import descriptors

    log = Recorder()
    with OutputCapture(log, lambda: "r1").active():
        with pytest.raises(io.UnsupportedOperation):
            sys.stdout.fileno()
        with descriptors.captured():
            assert (sys.stdout.fileno(), sys.stderr.fileno()) == (1, 2)
            subprocess.run(["echo", "from-a-child"], stdout=sys.stdout, check=True)
            sys.stdout.buffer.write(b"bytes \xff\n")
            sys.stderr.write("err\n")
    said = sorted((e["stream"], e["text"]) for _level, e in log.events)
    assert said == [("stderr", "err"), ("stdout", "bytes \\xff"), ("stdout", "from-a-child")]
