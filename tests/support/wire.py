"""A TCP proxy on 127.0.0.1 in front of a PostgreSQL server that counts, per client
connection, the round trips the client asked for: simple queries (``Q``) and the ``Sync``
that ends each extended-protocol exchange (``S``). Bytes pass through unchanged; TLS is
not read (use it with ``sslmode=disable``)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STARTUP_CODES = (196608,)  # protocol 3.0: typed messages follow
ROUND_TRIPS = b"QS"


class Counter:
    """What one client connection sent, message by message."""

    def __init__(self) -> None:
        self.buffer, self.started, self.round_trips = b"", False, 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:  # untyped: SSLRequest/GSSENCRequest, then the startup packet
                if len(self.buffer) < 8:
                    return
                (length, code) = struct.unpack("!ii", self.buffer[:8])
                if len(self.buffer) < length:
                    return
                self.started = code in STARTUP_CODES
                self.buffer = self.buffer[length:]
                continue
            if len(self.buffer) < 5:
                return
            kind, length = self.buffer[:1], struct.unpack("!i", self.buffer[1:5])[0]
            if len(self.buffer) < 1 + length:
                return
            self.round_trips += kind in (b"Q", b"S") and 1
            self.buffer = self.buffer[1 + length :]


@contextmanager
def counting_proxy(host: str, port: int) -> Iterator[tuple[int, list[Counter]]]:
    """Listen on a free port of 127.0.0.1; yield it and the connections' counters (in the
    order they connected). Stopped (listener and connections closed) on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    counters: list[Counter] = []
    sockets: list[socket.socket] = [listener]

    def pump(src: socket.socket, dst: socket.socket, counter: Counter | None) -> None:
        try:
            while data := src.recv(65536):
                if counter is not None:
                    counter.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with_suppressed(s.shutdown, socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((host, port))
            sockets.extend((client, upstream))
            counters.append(Counter())
            for args in ((client, upstream, counters[-1]), (upstream, client, None)):
                threading.Thread(target=pump, args=args, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], counters
    finally:
        for s in sockets:
            with_suppressed(s.close)


def with_suppressed(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass
