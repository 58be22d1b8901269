"""A small threaded TCP proxy on 127.0.0.1, for network-fault tests.

``TcpProxy(target_port)`` listens on a free port of 127.0.0.1 and forwards every connection
to ``127.0.0.1:target_port``, one pump thread per direction. Faults:

- :meth:`TcpProxy.cut` closes every current connection abruptly (``SO_LINGER`` 0, so both
  peers get a TCP RST at once, as when a NAT or load balancer drops its state);
- :meth:`TcpProxy.blackhole` stops forwarding on every current connection without closing
  anything: bytes are read and discarded in both directions. Note what this can and cannot
  simulate: the proxy's kernel still ACKs the peers' segments and TCP keepalive probes, so
  to both peers the connection looks alive and silent (a hung terminating proxy, such as a
  stuck pooler), not like a partition where packets vanish;
- :meth:`TcpProxy.refuse` makes the proxy accept new connections and reset them at once;
- :meth:`TcpProxy.cut_handshakes` makes the proxy answer the next connections' SSLRequest
  itself with "S" and close (FIN) once the TLS ClientHello arrives: a TLS handshake cut
  by a restarting server ("SSL error: unexpected eof while reading").

Everything is bounded: pump threads poll a stop flag every ``POLL_S``, :meth:`close` stops
the listener and cuts every connection, and the proxy is a context manager.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

from tests.support.urls import pg_url

POLL_S = 0.05
CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` so that the peer gets an RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _cut_handshake(client: socket.socket) -> None:
    """Accept the SSLRequest, then close as the TLS handshake begins (bounded)."""
    with contextlib.closing(client):
        client.settimeout(5)
        with contextlib.suppress(OSError):
            if len(client.recv(8)) == 8:
                client.sendall(b"S")
                client.recv(CHUNK)  # the ClientHello


class _Pair:
    """One proxied connection: the client's socket and ours to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.stop = threading.Event()
        self.blackholed = threading.Event()
        self.threads = [
            threading.Thread(
                target=self._pump, args=(client, upstream), daemon=True, name="proxy-c2s"
            ),
            threading.Thread(
                target=self._pump, args=(upstream, client), daemon=True, name="proxy-s2c"
            ),
        ]
        self.bytes = [0, 0]
        self._running = 2
        self._errored = False
        self._cutting = False
        self._guard = threading.Lock()
        for thread in self.threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        index = 0 if src is self.client else 1
        try:
            while not self.stop.is_set():
                readable, _, _ = select.select([src], [], [], POLL_S)
                if not readable:
                    continue
                data = src.recv(CHUNK)
                if not data:  # orderly close by this peer: pass it on
                    if not self.blackholed.is_set():
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    return
                if self.blackholed.is_set():
                    continue  # swallowed: nothing reaches the other side
                dst.sendall(data)
                self.bytes[index] += len(data)
        except (OSError, ValueError):
            self._errored = True
            self.stop.set()  # one side failed: the other pump winds down too
        finally:
            self._exited()

    def _exited(self) -> None:
        """The last pump out closes both sockets: with an RST if a side failed (so the
        other side learns it), gracefully if both sides closed. A cut closes them itself."""
        with self._guard:
            self._running -= 1
            if self._running or self._cutting:
                return
        close = _reset if self._errored else (lambda s: s.close())
        close(self.client)
        close(self.upstream)

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def reset(self) -> None:
        with self._guard:
            self._cutting = True
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        _reset(self.client)
        _reset(self.upstream)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._refusing = False
        self._handshake_cuts = 0
        self._refuse_after, self._refuse_left = 0, 0
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="proxy-accept")
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            readable, _, _ = select.select([self._listener], [], [], POLL_S)
            if not readable:
                continue
            try:
                client, _addr = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            if self._handshake_cuts > 0:
                self._handshake_cuts -= 1
                threading.Thread(target=_cut_handshake, args=(client,), daemon=True).start()
                continue
            if self._refusing or (self.accepted > self._refuse_after and self._refuse_left > 0):
                if not self._refusing:
                    self._refuse_left -= 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._closed.is_set():
                    _reset(client)
                    _reset(upstream)
                    return
                self._pairs.append(_Pair(client, upstream))

    def connections(self) -> int:
        """How many proxied connections are open now."""
        with self._lock:
            return sum(1 for pair in self._pairs if pair.alive)

    def cut(self) -> int:
        """Reset every current connection (RST to both peers); return how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.reset()
        return len(pairs)

    def blackhole(self) -> int:
        """Stop forwarding on every current connection, closing nothing; return how many.
        New connections are still forwarded."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.blackholed.set()
        return len(pairs)

    def refuse(self, refusing: bool = True) -> None:
        """Reset new connections as soon as they are accepted (or forward them again)."""
        self._refusing = refusing

    def refuse_later(self, after: int, count: int) -> None:
        """Forward the first ``after`` connections, reset the ``count`` after them, then
        forward again (a server out of connection slots for a moment)."""
        self._refuse_after, self._refuse_left = self.accepted + after, count

    def cut_handshakes(self, count: int) -> None:
        """Cut the TLS handshake of the next ``count`` connections (see the module's doc)."""
        self._handshake_cuts = count

    def url(self, user: str, password: str, dbname: str) -> str:
        """A database URL through the proxy."""
        return pg_url(user, password, "127.0.0.1", self.port, dbname)

    def close(self) -> None:
        """Stop listening and reset every connection. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
