"""Database connections: how they are opened, shared between threads and replaced.

SQLite runs in WAL mode with a generous busy timeout, so an ingest in another process
never makes a sync fail with "database is locked".

``synchronous=FULL``: every commit is on disk before it returns. With ``NORMAL`` a power
loss can take back the last commits of a WAL database, and the delivery protocol stands
on its commits: a vanished intent would make the next sync cut a new key for events an
uploaded object already holds (a duplicate object), a vanished cursor would ship them
again, and a vanished ingest would lose events the writer was told were stored. The
cost is one WAL fsync per transaction: a few per object, one per ingested file
(docs/performance.md has the measurement).

PostgreSQL connections (psycopg 3, imported only when one is opened) are autocommit, one
per thread, plus a pool of idle ones for reads and sync locks; a connection found dead is
replaced, and the operation run once more (:meth:`PgConnections.run`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    PgConnection: TypeAlias = psycopg.Connection[TupleRow]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0

_R = TypeVar("_R")

# --------------------------------------------------------------------------- SQLite


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """An autocommit connection with the store's pragmas (WAL, ``synchronous=FULL``,
    the busy timeout); creates the file's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


class PerThread:
    """One SQLite connection per thread (sqlite3 connections must not be shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_sqlite(self.path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


# --------------------------------------------------------------------------- PostgreSQL


def connect(url: str) -> PgConnection:
    """An autocommit connection. Its ``application_name`` is ``siem-plugins`` unless the
    URL names one (``?application_name=...``), to tell processes apart in
    ``pg_stat_activity``."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the PostgreSQL store needs psycopg: pip install 'siem-plugins[postgres]'"
        ) from None
    if "application_name" in psycopg.conninfo.conninfo_to_dict(url):
        return psycopg.connect(url, autocommit=True)
    return psycopg.connect(url, autocommit=True, application_name="siem-plugins")


def is_dead(conn: PgConnection) -> bool:
    """Whether a connection can no longer be used (closed, or its session is gone)."""
    return bool(conn.closed or conn.broken)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PgConnections:
    """One connection per thread (psycopg connections are not for concurrent use), and a
    pool of idle ones for reads and sync locks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[PgConnection] = []
        self._idle: list[PgConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> PgConnection:
        conn = connect(self.url)
        with self._lock:
            # Dead ones are dropped here so that reconnecting never grows the list.
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def get(self) -> PgConnection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is None or is_dead(conn):
            conn = self._new()
            self._local.conn = conn
        return conn

    def run(self, op: Callable[[PgConnection, bool], _R]) -> _R:
        """``op(connection, retry)`` on this thread's connection; if that connection is
        found dead, once more on a fresh one with ``retry=True`` (``op`` must then cope
        with its first run having committed)."""
        conn = self.get()
        import psycopg  # importable: get() has connected

        try:
            return op(conn, False)
        except psycopg.OperationalError as exc:
            if not is_dead(conn):
                raise
            log.warning("PostgreSQL connection lost (%s); reconnecting", one_line(exc))
            conn.close()
            self.purge_idle()
        return op(self.get(), True)

    def purge_idle(self) -> None:
        """Close the idle pooled connections: when one was found dead, the others (idle
        just as long, through the same restart or network cut) most likely are too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def take(self) -> PgConnection:
        """A connection of its own until :meth:`give_back`."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or is_dead(conn):
            conn = self._new()
        return conn

    def give_back(self, conn: PgConnection) -> None:
        if not is_dead(conn) and conn.info.transaction_status == 0:  # idle
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[PgConnection]:
        """A connection of its own for a while (a server-side cursor's transaction),
        kept for reuse afterwards: connecting costs ~7 ms, more than a small sync."""
        conn = self.take()
        try:
            yield conn
        finally:
            self.give_back(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._idle.clear()
        self._local = threading.local()
