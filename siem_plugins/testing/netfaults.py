"""Hostile network peers for tests, on loopback: a tarpit, a black hole and a TCP proxy
that can cut every connection through it.

* :class:`Tarpit` accepts connections and never finishes answering. In ``"smtp"`` mode it
  trickles ``220-`` greeting continuation lines, one every ``every`` seconds, for ever: a
  client's per-read timeout never fires, only an overall deadline ends the session. In
  ``"silent"`` mode it reads whatever arrives and never answers (a black-holed endpoint:
  an S3 request waits for its read timeout).
* :class:`TCPProxy` forwards to a real server (PostgreSQL, say) until :meth:`TCPProxy.cut`
  drops every connection and refuses new ones, as a network partition or a server crash
  would; :meth:`TCPProxy.restore` lets connections through again.

Everything runs in daemon threads and stops with :meth:`stop` (or the ``with`` block).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Literal

LOOPBACK = "127.0.0.1"


class _Server:
    """A listening socket on loopback and a thread accepting connections."""

    def __init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        # accept() is not woken by close() from another thread: poll for stop instead.
        self._listener.settimeout(0.1)
        self.host = LOOPBACK
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> _Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Tarpit(_Server):
    """A server that holds every connection open and never completes a reply.

    :param mode: ``"smtp"`` trickles ``220-`` lines (a greeting that never ends);
        ``"silent"`` reads and discards, never writing a byte.
    :param every: seconds between two trickled lines (keep it under the client's
        per-read timeout to show that such a timeout alone does not help).
    """

    def __init__(self, mode: Literal["smtp", "silent"] = "smtp", *, every: float = 0.2) -> None:
        self.mode = mode
        self.every = every
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "silent":
                with contextlib.suppress(OSError):
                    while not self._stopped.is_set() and conn.recv(65536):
                        pass
                return
            with contextlib.suppress(OSError):
                while not self._stopped.wait(self.every):
                    conn.sendall(b"220-still here, please hold\r\n")


class TCPProxy(_Server):
    """Forwards each connection to ``target``; :meth:`cut` drops them all and refuses
    new ones (they are accepted and closed at once) until :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._cut = threading.Event()
        super().__init__()

    def cut(self) -> None:
        self._cut.set()
        self._drop_all()

    def restore(self) -> None:
        self._cut.clear()

    def _serve(self, conn: socket.socket) -> None:
        if self._cut.is_set():
            conn.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.append(upstream)
        pump = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
        pump.start()
        _pump(conn, upstream)
        pump.join()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side closes; then close both."""
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
