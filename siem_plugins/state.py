"""Delivery state: one cursor and at most one pending intent per (integration, destination).

The protocol (docs/delivery.md): a sync first *records an intent* — the id range, the
object key, the creation time — then writes. Only when the object is complete does
:meth:`State.complete` advance the cursor and drop the intent, in one transaction. A
crash in between leaves the intent behind, and the next sync replays exactly it: the
same range, the same key, the same bytes. So every event lands in exactly one object.

Beside the cursors the state store keeps what the delivery needs to stay exclusive and
observable: the *sync lock* of each (integration, destination) — file locks here, advisory
locks on PostgreSQL — so no two processes ever run the same pass; a log of sync runs;
and the *dead letters*, events a formatter could not format, set aside so that they never
block the events after them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import socket
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from siem_plugins.db import PerThread
from siem_plugins.kinds import Intent

SINK = "sink"
NOTIFIER = "notifier"
#: Both destinations of an integration, in the order their passes start.
DESTINATIONS = (SINK, NOTIFIER)
#: The pseudo-destination of ``siem-plugins dead-letters replay``: its intents fix which
#: set-aside events a replay object holds (it has no cursor of its own).
REPLAY = "replay"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS siem_cursor (
    integration TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_id     INTEGER NOT NULL,
    updated     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_dead_letter (
    integration TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    account     TEXT NOT NULL,
    error       TEXT NOT NULL,
    created     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration, event_id)
);
CREATE TABLE IF NOT EXISTS siem_sync_run (
    id          INTEGER PRIMARY KEY,
    integration TEXT NOT NULL,
    destination TEXT,
    worker      TEXT NOT NULL,
    started     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished    TEXT,
    objects     INTEGER,
    events      INTEGER,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS siem_sync_run_integration ON siem_sync_run (integration, started);
CREATE TABLE IF NOT EXISTS siem_intent (
    integration TEXT NOT NULL,
    destination TEXT NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    key         TEXT NOT NULL,
    created     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (integration, destination)
);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a formatter could not format, set aside instead of blocking the rest.

    :ivar created: when it was set aside (UTC, ISO 8601).
    """

    integration: str
    event_id: int
    account: str
    error: str
    created: str


class StateError(RuntimeError):
    pass


class SyncLock(Protocol):
    """A held sync lock of one (integration, destination); released on ``release()`` or
    when the process holding it dies."""

    def release(self) -> None: ...
    def __enter__(self) -> SyncLock: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StateStore(Protocol):
    """Where cursors, intents, sync locks, the run log and dead letters live:
    :class:`State` (SQLite) or ``PgState`` (PostgreSQL)."""

    def cursor(self, integration: str, destination: str) -> int: ...
    def cursors(self) -> dict[tuple[str, str], int]: ...
    def pending(self, integration: str, destination: str) -> Intent | None: ...
    def record(self, intent: Intent) -> None: ...
    def discard(self, intent: Intent) -> None: ...
    def complete(self, intent: Intent) -> None: ...

    def try_lock(self, integration: str, destination: str) -> SyncLock | None:
        """The (integration, destination)'s sync lock if no one else holds it, else
        ``None``. Exclusive across threads and processes (and, on PostgreSQL, hosts)."""
        ...

    def run_started(self, integration: str, destination: str, worker: str) -> int: ...
    def run_finished(
        self, run_id: int, *, objects: int, events: int, error: str | None
    ) -> None: ...

    def set_aside(self, integration: str, account: str, errors: Mapping[int, str]) -> None:
        """Record events (id -> why) a formatter could not format (kept if present)."""
        ...

    def set_aside_ids(self, integration: str, first_id: int, last_id: int) -> frozenset[int]:
        """The ids of the integration's dead letters with ``first_id <= id <= last_id``."""
        ...

    def dead_letters(self, integration: str | None = None) -> list[DeadLetter]:
        """Every dead letter (of one integration), in id order."""
        ...

    def complete_replay(
        self, intent: Intent, shipped: Collection[int], errors: Mapping[int, str]
    ) -> None:
        """A replay object is complete: drop its intent and the dead letters it shipped,
        and note the new error of those that failed again; one transaction."""
        ...

    def close(self) -> None: ...


def open_state(url: str) -> StateStore:
    """The state store beside the event store a URL names."""
    from siem_plugins.db import is_postgres, sqlite_path

    if is_postgres(url):
        from siem_plugins.pgstore import PgState

        return PgState(url)
    return State(sqlite_path(url))


_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def worker_name() -> str:
    """Who runs a sync, for the run log: ``host:pid:thread``."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


class FileLock:
    """An exclusive ``flock`` on a file of its own: held by one open file description,
    so it excludes other threads of this process as well as other processes, and the
    kernel drops it when the process dies (SIGKILL, power loss: nothing to clean up)."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd: int | None = fd
        self.name = name

    @classmethod
    def try_acquire(cls, path: Path, name: str) -> FileLock | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, name)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> FileLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class State:
    """Cursors and intents in a SQLite database (the store's, by default).

    Sync locks are ``flock`` locks on files in the folder ``<database>.locks`` beside the
    database (one per integration and destination; the files are never deleted, which
    keeps the locking race-free)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conns = PerThread(path)
        self._conns.get().executescript(_SCHEMA)
        self._lock_dir = path.with_name(path.name + ".locks")

    def close(self) -> None:
        self._conns.close()

    # ------------------------------------------------------------------ locks, runs

    def try_lock(self, integration: str, destination: str) -> FileLock | None:
        self._lock_dir.mkdir(mode=0o700, exist_ok=True)
        name = f"{integration}.{destination}"
        if not _SAFE_NAME_RE.match(integration) or destination not in (*DESTINATIONS, REPLAY):
            # Names reach the file system here: anything unusual becomes a digest.
            name = hashlib.sha256(name.encode()).hexdigest()
        return FileLock.try_acquire(self._lock_dir / f"{name}.lock", name)

    def run_started(self, integration: str, destination: str, worker: str) -> int:
        cur = self._conns.get().execute(
            "INSERT INTO siem_sync_run (integration, destination, worker) VALUES (?,?,?)",
            (integration, destination, worker),
        )
        return int(cur.lastrowid or 0)

    def run_finished(self, run_id: int, *, objects: int, events: int, error: str | None) -> None:
        self._conns.get().execute(
            "UPDATE siem_sync_run SET finished=strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),"
            " objects=?, events=?, error=? WHERE id=?",
            (objects, events, error, run_id),
        )

    # ------------------------------------------------------------------ dead letters

    def set_aside(self, integration: str, account: str, errors: Mapping[int, str]) -> None:
        if not errors:
            return
        conn = self._conns.get()
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO siem_dead_letter (integration, event_id, account, error)"
                " VALUES (?,?,?,?) ON CONFLICT (integration, event_id) DO NOTHING",
                [(integration, i, account, e) for i, e in sorted(errors.items())],
            )

    def set_aside_ids(self, integration: str, first_id: int, last_id: int) -> frozenset[int]:
        rows = (
            self._conns.get()
            .execute(
                "SELECT event_id FROM siem_dead_letter WHERE integration=?"
                " AND event_id>=? AND event_id<=?",
                (integration, first_id, last_id),
            )
            .fetchall()
        )
        return frozenset(int(r[0]) for r in rows)

    def dead_letters(self, integration: str | None = None) -> list[DeadLetter]:
        sql = "SELECT integration, event_id, account, error, created FROM siem_dead_letter"
        params: tuple[str, ...] = ()
        if integration is not None:
            sql += " WHERE integration=?"
            params = (integration,)
        rows = self._conns.get().execute(sql + " ORDER BY integration, event_id", params)
        return [DeadLetter(i, int(e), a, err, c) for i, e, a, err, c in rows.fetchall()]

    def complete_replay(
        self, intent: Intent, shipped: Collection[int], errors: Mapping[int, str]
    ) -> None:
        conn = self._conns.get()
        with _transaction(conn):
            conn.execute(
                "DELETE FROM siem_intent WHERE integration=? AND destination=? AND first_id=?",
                (intent.integration, intent.destination, intent.first_id),
            )
            conn.executemany(
                "DELETE FROM siem_dead_letter WHERE integration=? AND event_id=?",
                [(intent.integration, i) for i in shipped],
            )
            conn.executemany(
                "UPDATE siem_dead_letter SET error=? WHERE integration=? AND event_id=?",
                [(e, intent.integration, i) for i, e in errors.items()],
            )

    # ------------------------------------------------------------------ cursors, intents

    def cursor(self, integration: str, destination: str) -> int:
        row = (
            self._conns.get()
            .execute(
                "SELECT last_id FROM siem_cursor WHERE integration=? AND destination=?",
                (integration, destination),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def cursors(self) -> dict[tuple[str, str], int]:
        rows = (
            self._conns.get()
            .execute("SELECT integration, destination, last_id FROM siem_cursor")
            .fetchall()
        )
        return {(i, d): int(last) for i, d, last in rows}

    def pending(self, integration: str, destination: str) -> Intent | None:
        row = (
            self._conns.get()
            .execute(
                "SELECT integration, destination, first_id, last_id, count, key, created,"
                " fingerprint"
                " FROM siem_intent WHERE integration=? AND destination=?",
                (integration, destination),
            )
            .fetchone()
        )
        return Intent(*row) if row else None

    def record(self, intent: Intent) -> None:
        """Record a new intent. There must be no pending one, and it must start after
        the cursor (both checked: a violation is a bug, never papered over)."""
        conn = self._conns.get()
        with _transaction(conn):
            cur = conn.execute(
                "SELECT last_id FROM siem_cursor WHERE integration=? AND destination=?",
                (intent.integration, intent.destination),
            ).fetchone()
            if cur and intent.first_id <= cur[0]:
                raise StateError(
                    f"intent {intent.first_id}-{intent.last_id} overlaps the cursor "
                    f"{cur[0]} of {intent.integration}/{intent.destination}"
                )
            try:
                conn.execute(
                    "INSERT INTO siem_intent VALUES (?,?,?,?,?,?,?,?)",
                    (
                        intent.integration,
                        intent.destination,
                        intent.first_id,
                        intent.last_id,
                        intent.count,
                        intent.key,
                        intent.created,
                        intent.fingerprint,
                    ),
                )
            except sqlite3.IntegrityError:
                raise StateError(
                    f"{intent.integration}/{intent.destination} already has a pending intent"
                ) from None

    def discard(self, intent: Intent) -> None:
        """Drop a pending intent without moving the cursor (its config changed)."""
        self._conns.get().execute(
            "DELETE FROM siem_intent WHERE integration=? AND destination=? AND first_id=?",
            (intent.integration, intent.destination, intent.first_id),
        )

    def complete(self, intent: Intent) -> None:
        """The intent's object is complete: advance the cursor, drop the intent."""
        conn = self._conns.get()
        with _transaction(conn):
            deleted = conn.execute(
                "DELETE FROM siem_intent WHERE integration=? AND destination=? AND first_id=?"
                " AND last_id=?",
                (intent.integration, intent.destination, intent.first_id, intent.last_id),
            ).rowcount
            if deleted != 1:
                raise StateError(
                    f"no pending intent {intent.first_id}-{intent.last_id} for "
                    f"{intent.integration}/{intent.destination}"
                )
            conn.execute(
                "INSERT INTO siem_cursor (integration, destination, last_id) VALUES (?,?,?)"
                " ON CONFLICT (integration, destination) DO UPDATE SET last_id=excluded.last_id,"
                " updated=excluded.updated",
                (intent.integration, intent.destination, intent.last_id),
            )


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (autocommit connections).

    On an error SQLite may already have rolled the transaction back itself (a full
    disk, for one); a second ROLLBACK would then fail and hide the real error.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
