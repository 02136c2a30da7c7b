"""Database URLs and connections shared by the built-in store and the delivery state.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path.
SQLite runs in WAL mode with a generous busy timeout, so an ingest in another process
never makes a sync fail with "database is locked".

``synchronous=FULL``: every commit is on disk before it returns. With ``NORMAL`` a power
loss can take back the last commits of a WAL database, and the delivery protocol stands
on its commits: a vanished intent would make the next sync cut a new key for events an
uploaded object already holds (a duplicate object), a vanished cursor would ship them
again, and a vanished ingest would lose events the writer was told were stored. The
cost is one WAL fsync per transaction: a few per object, one per ingested file
(docs/performance.md has the measurement).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

BUSY_TIMEOUT_S = 60.0


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite://`` URL (or a plain path)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("sqlite://"):
        raise ValueError(
            f"unsupported SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported store URL scheme {scheme!r} (supported: sqlite, postgresql)")
    return Path(url)


def connect_sqlite(path: Path) -> sqlite3.Connection:
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
