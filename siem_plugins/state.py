"""Delivery state: one cursor and at most one pending intent per (integration, destination).

The protocol (docs/delivery.md): a sync first *records an intent* — the id range, the
object key, the creation time — then writes. Only when the object is complete does
:meth:`State.complete` advance the cursor and drop the intent, in one transaction. A
crash in between leaves the intent behind, and the next sync replays exactly it: the
same range, the same key, the same bytes. So every event lands in exactly one object.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from siem_plugins.db import PerThread

SINK = "sink"
NOTIFIER = "notifier"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS siem_cursor (
    integration TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_id     INTEGER NOT NULL,
    updated     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration, destination)
);
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
class Intent:
    """A range fixed before anything is written, replayed unchanged after a crash.

    :ivar key: the object key (sink) or the digest's Message-ID seed (notifier).
    :ivar created: UTC creation time, ``YYYY-MM-DDTHHMMSSZ`` (the object key's form).
    :ivar fingerprint: what the key depends on (account, format, compression, prefix);
        an intent whose fingerprint no longer matches the config is re-planned.
    """

    integration: str
    destination: str
    first_id: int
    last_id: int
    count: int
    key: str
    created: str
    fingerprint: str


class StateError(RuntimeError):
    pass


class StateStore(Protocol):
    """Where cursors and intents live: :class:`State` (SQLite) or ``PgState``."""

    def cursor(self, integration: str, destination: str) -> int: ...
    def cursors(self) -> dict[tuple[str, str], int]: ...
    def pending(self, integration: str, destination: str) -> Intent | None: ...
    def record(self, intent: Intent) -> None: ...
    def discard(self, intent: Intent) -> None: ...
    def complete(self, intent: Intent) -> None: ...
    def close(self) -> None: ...


def open_state(url: str) -> StateStore:
    """The state store beside the event store a URL names."""
    from siem_plugins.db import is_postgres, sqlite_path

    if is_postgres(url):
        from siem_plugins.pgstore import PgState

        return PgState(url)
    return State(sqlite_path(url))


class State:
    """Cursors and intents in a SQLite database (the store's, by default)."""

    def __init__(self, path: Path) -> None:
        self._conns = PerThread(path)
        self._conns.get().executescript(_SCHEMA)

    def close(self) -> None:
        self._conns.close()

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


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (autocommit connections)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
