"""Noticing a signal while the main thread is blocked inside a driver's C code.

Python runs a signal handler only between bytecodes of the main thread. psycopg 3 waits for
results in Python, so its statements are interrupted at once; psycopg2 (and any driver whose
wait is one C call) keeps the main thread inside C until the statement ends: a SIGTERM during
``pg_sleep(30)`` was handled 29 s later. The C-level handler still writes the signal number to
the wakeup fd, at once: a helper thread reading it can cancel the statement from the side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable


def watch(on_signal: Callable[[int], None]) -> None:
    """Call ``on_signal(signum)`` from a helper thread as soon as any signal with a Python
    handler arrives, even while the main thread is blocked in C. Main thread only; once per
    process (it takes over the wakeup fd)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(
        target=_pump, args=(read_end, on_signal), daemon=True, name="signal-watch"
    ).start()


def _pump(read_end: int, on_signal: Callable[[int], None]) -> None:
    while True:
        try:
            data = os.read(read_end, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            with contextlib.suppress(Exception):  # the main thread's handler still runs
                on_signal(signum)
