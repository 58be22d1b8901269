"""Signal handling modes, in-process: raise, cancel the statement in flight, or defer."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from runner.errors import Interrupted
from runner.process.interrupt import Interrupt
from tests.support.helpers import wait_until


@pytest.fixture
def interrupt():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    handler = Interrupt()
    handler.install()
    yield handler
    for sig, previous in saved.items():
        signal.signal(sig, previous)


def test_by_default_a_signal_raises_interrupted_at_once(interrupt):
    with pytest.raises(Interrupted) as err:
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(5)  # interrupted long before this returns
    assert err.value.fields == {"signal": "SIGTERM"}
    assert interrupt.requested


def test_while_cancelling_a_signal_cancels_and_keeps_cancelling_until_the_region_ends(interrupt):
    calls: list[int] = []
    with interrupt.cancelling(lambda: calls.append(1)):
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(lambda: len(calls) >= 2, timeout=5, what="a repeated cancel")
        with pytest.raises(Interrupted):
            interrupt.check()
    seen = len(calls)
    threading.Event().wait(1.2)  # two re-cancel periods: none may follow the region's end
    assert len(calls) <= seen + 1


def test_while_deferred_a_signal_is_only_recorded(interrupt):
    with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
    assert interrupt.signal_name == "SIGTERM"


def test_a_second_signal_does_not_raise_again(interrupt):
    with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # already stopping: must not raise here
    with pytest.raises(Interrupted):
        interrupt.check()


def test_a_parent_that_exited_while_the_launcher_started_stops_it(monkeypatch):
    """``--stop-with-parent`` compares with the parent the process started with: before, it
    read the parent when the launcher began to run (after boto3's imports, about a second),
    so a shell killed in that second (a ``pulumi up`` cancelled at once) was never seen to
    go, and the task ran on unattended."""
    from runner.ecs.launcher import PARENT_EXITED, Stop
    from runner.process import interrupt as module

    monkeypatch.setattr(module, "_parent_at_start", os.getppid() + 1_000_000)  # long gone
    assert module.parent_at_start() != os.getppid()
    stop = Stop()
    stop.watch_parent(interval_s=0.01)
    wait_until(lambda: stop.reason is not None, timeout=5, what="the stop request")
    assert stop.reason == PARENT_EXITED


def test_a_handler_project_code_installs_is_taken_back_and_named(interrupt):
    """Found by attack21: env.py setting SIGTERM to SIG_DFL at import let a SIGTERM kill the
    run with no summary and the lock held; SIGINT's default handler raised KeyboardInterrupt
    inside the driver (reported as a lost connection)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert interrupt.reclaim() == ("SIGTERM (SIG_DFL)", "SIGINT (default_int_handler)")
    assert interrupt.reclaim() == ()  # nothing replaced: nothing to say
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(5)  # interrupted long before this returns


def test_a_faulthandler_registered_below_python_is_taken_back_and_named(interrupt):
    """Found by attack-final: faulthandler.register(SIGTERM) installs a C-level handler that
    signal.getsignal does not show and that does not chain: a SIGTERM only dumped a traceback
    and the run migrated on."""
    import faulthandler

    faulthandler.register(signal.SIGTERM, file=sys.__stderr__)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    faulthandler.register(signal.SIGINT, file=sys.__stderr__)
    assert interrupt.reclaim() == (
        "SIGTERM (faulthandler.register)",
        "SIGINT (SIG_DFL)",
        "SIGINT (faulthandler.register)",
    )
    assert interrupt.reclaim() == ()
    assert not faulthandler.unregister(signal.SIGTERM)  # undone by reclaim()
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(5)  # interrupted long before this returns


def test_a_watched_process_that_exits_stops_the_launcher_even_with_its_parent_alive():
    """``--parent-pid``: a wrapper (``uv run``) stays the launcher's parent after the shell
    that started it is killed; the shell's exit, even as an unreaped zombie, is the stop."""
    import subprocess

    from runner.ecs.launcher import PARENT_EXITED, Stop, alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        stop = Stop()
        stop.watch_parent(child.pid, interval_s=0.01)
        assert alive(child.pid) and stop.reason is None
        child.kill()
        wait_until(lambda: stop.reason is not None, timeout=5, what="the stop request")
        assert stop.reason == PARENT_EXITED
        assert child.poll() is not None and not alive(child.pid)  # reaped: gone
    finally:
        child.kill()
        child.wait()


def test_only_a_stopping_signal_seen_by_the_side_watch_cancels_the_statement(interrupt):
    """Found by fix-g: the side watch reads every signal that has a Python handler (a project's
    SIGUSR1, asyncio's SIGCHLD) and cancelled the migrating statement for any of them."""
    calls: list[int] = []
    with interrupt.cancelling(lambda: calls.append(1)):
        for other in (signal.SIGUSR1, signal.SIGCHLD, signal.SIGALRM):
            interrupt._on_watched(int(other))
        assert calls == []
        interrupt._on_watched(int(signal.SIGTERM))
        wait_until(lambda: len(calls) >= 1, timeout=5, what="the cancel a SIGTERM starts")
