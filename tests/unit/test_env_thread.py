"""Where env.py runs: runner.scripts.env_thread."""

from __future__ import annotations

import threading

import pytest

from runner.scripts.env_thread import call_in


def test_main_runs_in_the_calling_thread():
    assert call_in("main", threading.current_thread) is threading.current_thread()


@pytest.mark.parametrize("place", ["worker", "anyio_worker"])
def test_workers_run_elsewhere_and_hand_back_the_result(place):
    assert call_in(place, threading.current_thread) is not threading.main_thread()
    assert call_in(place, lambda: 42) == 42


@pytest.mark.parametrize("place", ["main", "worker", "anyio_worker"])
def test_the_exception_raised_there_is_raised_here(place):
    def fails():
        raise KeyError("from env.py")

    with pytest.raises(KeyError, match="from env.py"):
        call_in(place, fails)


def test_an_anyio_worker_may_call_back_into_the_event_loop():
    import anyio.from_thread

    async def answer():
        return "from the loop"

    assert call_in("anyio_worker", lambda: anyio.from_thread.run(answer)) == "from the loop"
    with pytest.raises(RuntimeError):  # what an env.py sees in the main thread
        call_in("main", lambda: anyio.from_thread.run(answer))
