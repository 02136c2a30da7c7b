"""The state store: cursors, intents, sync locks, the run log and dead letters, in SQL
written once for SQLite and PostgreSQL (the protocol: :class:`StateStore`).

:class:`SQLState` holds every operation; a :class:`~siem_plugins.storage.dialect.Dialect`
says how its database runs them. :class:`~siem_plugins.storage.sqlite.State` (SQLite, the
event store's file by default) and :class:`~siem_plugins.storage.postgres.PgState` only
pick the dialect and prepare the schema.

On PostgreSQL every operation runs on this thread's connection; when that connection turns
out to be dead (the server restarted, or an administrator terminated it while it was idle
in the pool) the operation is run once more on a fresh one. The writes are written so that
such a second run is safe even when the first one did commit and only its answer was lost
(see :meth:`SQLState.record` and :meth:`SQLState.complete`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Collection, Mapping
from typing import Generic

from siem_plugins.kinds import Intent
from siem_plugins.storage.dialect import C, Dialect
from siem_plugins.storage.protocols import (
    DeadLetter,
    HealthRecord,
    ReplayJob,
    RunRecord,
    StateError,
    SyncLock,
)

_SELECT_CURSOR = "SELECT last_id FROM siem_cursor WHERE integration=? AND destination=?"


def worker_name() -> str:
    """Who runs a sync, for the run log: ``host:pid:thread``."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


class SQLState(Generic[C]):
    """Cursors and intents (and the rest of :class:`StateStore`) in SQL, on a dialect."""

    def __init__(self, dialect: Dialect[C]) -> None:
        self._dialect = dialect

    def close(self) -> None:
        self._dialect.close()

    def ping(self) -> None:
        """Raise unless the store answers a trivial read of its tables (health checks)."""
        sql = "SELECT 1 FROM siem_cursor LIMIT 1"
        self._dialect.run(lambda conn, retry: conn.execute(sql).fetchall())

    # ------------------------------------------------------------------ cursors, intents

    def cursor(self, integration: str, destination: str) -> int:
        return self._dialect.run(lambda conn, retry: self._cursor(conn, integration, destination))

    def cursors(self) -> dict[tuple[str, str], int]:
        rows = self._dialect.run(
            lambda conn, retry: conn.execute(
                "SELECT integration, destination, last_id FROM siem_cursor"
            ).fetchall()
        )
        return {(i, d): int(last) for i, d, last in rows}

    def pending(self, integration: str, destination: str) -> Intent | None:
        return self._dialect.run(lambda conn, retry: self._pending(conn, integration, destination))

    def record(self, intent: Intent) -> None:
        """Record a new intent. There must be no pending one, and it must start after
        the cursor (both checked: a violation is a bug, never papered over)."""
        d = self._dialect
        # The cursor's row stays locked until the intent is in (SQLite: the whole file).
        select_cursor = d.sql(_SELECT_CURSOR + d.for_update)

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                cur = conn.execute(
                    select_cursor, (intent.integration, intent.destination)
                ).fetchone()
                if cur and intent.first_id <= cur[0]:
                    raise StateError(
                        f"intent {intent.first_id}-{intent.last_id} overlaps the cursor "
                        f"{cur[0]} of {intent.integration}/{intent.destination}"
                    )
                try:
                    with d.savepoint(conn):
                        conn.execute(
                            d.sql("INSERT INTO siem_intent VALUES (?,?,?,?,?,?,?,?)"),
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
                except d.unique_violation:
                    key = (intent.integration, intent.destination)
                    if retry and self._pending(conn, *key) == intent:
                        return  # the first try committed; only its answer was lost
                    raise StateError(
                        f"{intent.integration}/{intent.destination} already has a pending intent"
                    ) from None

        d.run(op)

    def discard(self, intent: Intent) -> None:
        """Drop a pending intent without moving the cursor (its config changed)."""
        self._dialect.run(
            lambda conn, retry: conn.execute(
                self._dialect.sql(
                    "DELETE FROM siem_intent WHERE integration=? AND destination=? AND first_id=?"
                ),
                (intent.integration, intent.destination, intent.first_id),
            )
        )

    def complete(self, intent: Intent) -> None:
        """The intent's object is complete: advance the cursor, drop the intent."""
        d = self._dialect

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                self._complete(conn, intent, retry)

        d.run(op)

    def _complete(self, conn: C, intent: Intent, retry: bool) -> bool:
        """Drop the intent and move its cursor (inside the caller's transaction); False
        when a first try had done it already and only its answer was lost."""
        d = self._dialect
        deleted = conn.execute(
            d.sql(
                "DELETE FROM siem_intent WHERE integration=? AND destination=?"
                " AND first_id=? AND last_id=?"
            ),
            (intent.integration, intent.destination, intent.first_id, intent.last_id),
        ).rowcount
        if deleted != 1:
            key = (intent.integration, intent.destination)
            if retry and self._cursor(conn, *key) >= intent.last_id:
                return False  # the first try committed; only its answer was lost
            raise StateError(
                f"no pending intent {intent.first_id}-{intent.last_id} for "
                f"{intent.integration}/{intent.destination}"
            )
        # excluded.updated: the column's default, the time now.
        conn.execute(
            d.sql(
                "INSERT INTO siem_cursor (integration, destination, last_id) VALUES (?,?,?)"
                " ON CONFLICT (integration, destination) DO UPDATE SET"
                " last_id=excluded.last_id, updated=excluded.updated"
            ),
            (intent.integration, intent.destination, intent.last_id),
        )
        return True

    def start_cursors(self, integration: str, cursors: Mapping[str, int]) -> dict[str, int]:
        """Set the cursors of destinations that have none yet (``start_at``); the cursors
        in force afterwards. A cursor that exists is never moved back or forward."""
        d = self._dialect
        insert = d.sql(
            "INSERT INTO siem_cursor (integration, destination, last_id) VALUES (?,?,?)"
            " ON CONFLICT (integration, destination) DO NOTHING"
        )

        def op(conn: C, retry: bool) -> dict[str, int]:
            with d.transaction(conn):
                for destination, last_id in sorted(cursors.items()):
                    conn.execute(insert, (integration, destination, last_id))
                return {dest: self._cursor(conn, integration, dest) for dest in cursors}

        return d.run(op)

    def has_cursor(self, integration: str, destination: str) -> bool:
        """Whether the destination has a cursor row (it has synced, or was started)."""
        sql = self._dialect.sql(_SELECT_CURSOR)
        return bool(
            self._dialect.run(
                lambda conn, retry: conn.execute(sql, (integration, destination)).fetchone()
            )
        )

    # ------------------------------------------------------------------ replay jobs

    def create_replay(self, job: ReplayJob) -> None:
        d = self._dialect

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                try:
                    with d.savepoint(conn):
                        conn.execute(
                            d.sql(
                                "INSERT INTO siem_replay (integration, job, account, first_id,"
                                " last_id, target, since, until) VALUES (?,?,?,?,?,?,?,?)"
                            ),
                            (
                                job.integration,
                                job.job,
                                job.account,
                                job.first_id,
                                job.last_id,
                                job.target,
                                job.since,
                                job.until,
                            ),
                        )
                except d.unique_violation:
                    if retry:
                        return  # the first try committed; only its answer was lost
                    raise StateError(
                        f"{job.integration} already has a replay job named {job.job!r}"
                    ) from None
                conn.execute(
                    d.sql(
                        "INSERT INTO siem_cursor (integration, destination, last_id)"
                        " VALUES (?,?,?) ON CONFLICT (integration, destination) DO UPDATE"
                        " SET last_id=excluded.last_id"
                    ),
                    (job.integration, job.destination, job.first_id - 1),
                )

        d.run(op)

    def replay_jobs(self, integration: str | None = None) -> list[ReplayJob]:
        d = self._dialect
        sql = (
            "SELECT integration, job, account, first_id, last_id, target, since, until,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('created', ms=True)}, {d.utc_text('finished', ms=True)},"
            " objects, events FROM siem_replay"
        )
        params: tuple[str, ...] = ()
        if integration is not None:
            sql += " WHERE integration=?"
            params = (integration,)
        sql = d.sql(sql + " ORDER BY created, integration, job")
        rows = d.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [
            ReplayJob(i, j, a, int(f), int(la), t, s, u, c, fin, int(o), int(e))
            for i, j, a, f, la, t, s, u, c, fin, o, e in rows
        ]

    def replay_progress(self, job: ReplayJob, intent: Intent, events: int) -> None:
        d = self._dialect
        count = d.sql(
            "UPDATE siem_replay SET objects=objects+1, events=events+? WHERE integration=?"
            " AND job=?"
        )

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                if self._complete(conn, intent, retry):
                    conn.execute(count, (events, job.integration, job.job))

        d.run(op)

    def finish_replay(self, job: ReplayJob) -> None:
        d = self._dialect
        finish = d.sql(
            f"UPDATE siem_replay SET finished={d.clock} WHERE integration=? AND job=?"  # noqa: S608 (dialect constants, no input)
            " AND finished IS NULL"
        )
        drop = d.sql("DELETE FROM siem_cursor WHERE integration=? AND destination=?")

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                conn.execute(finish, (job.integration, job.job))
                conn.execute(drop, (job.integration, job.destination))

        d.run(op)

    def _cursor(self, conn: C, integration: str, destination: str) -> int:
        row = conn.execute(self._dialect.sql(_SELECT_CURSOR), (integration, destination)).fetchone()
        return int(row[0]) if row else 0

    def _pending(self, conn: C, integration: str, destination: str) -> Intent | None:
        row = conn.execute(
            self._dialect.sql(
                "SELECT integration, destination, first_id, last_id, count, key, created,"
                " fingerprint FROM siem_intent WHERE integration=? AND destination=?"
            ),
            (integration, destination),
        ).fetchone()
        return Intent(*row) if row else None

    # ------------------------------------------------------------------ locks, runs

    def try_lock(self, integration: str, destination: str) -> SyncLock | None:
        """The (integration, destination)'s sync lock, if no one else holds it: a file
        lock on SQLite, a session advisory lock on PostgreSQL; either dies with its
        process."""
        return self._dialect.try_lock(integration, destination)

    def run_started(self, integration: str, destination: str, worker: str) -> int:
        d = self._dialect
        return d.run(
            lambda conn, retry: d.insert_id(
                conn,
                d.sql(
                    "INSERT INTO siem_sync_run (integration, destination, worker) VALUES (?,?,?)"
                ),
                (integration, destination, worker),
            )
        )

    def run_finished(
        self,
        run_id: int,
        *,
        integration: str,
        destination: str,
        objects: int,
        events: int,
        error: str | None,
        behind: int | None = None,
        oldest: str | None = None,
        error_code: str | None = None,
    ) -> None:
        d = self._dialect
        ok = error is None
        # The health record rides in the run log's transaction: no extra commit (and, on
        # SQLite, no extra fsync) per pass.
        close_run = d.sql(
            f"UPDATE siem_sync_run SET finished={d.clock},"  # noqa: S608 (dialect constants, no input)
            " objects=?, events=?, error=? WHERE id=?"
        )
        upsert = d.sql(
            "INSERT INTO siem_health (integration, destination, last_attempt, last_success,"  # noqa: S608 (dialect constants, no input)
            " last_error, last_error_at, last_error_code, failing_since, failures, behind,"
            " oldest)"
            f" VALUES (?, ?, {d.clock}, CASE WHEN ? THEN {d.clock} END, ?,"
            f" CASE WHEN ? THEN NULL ELSE {d.clock} END, ?,"
            f" CASE WHEN ? THEN NULL ELSE {d.clock} END, CASE WHEN ? THEN 0 ELSE 1 END, ?, ?)"
            " ON CONFLICT (integration, destination) DO UPDATE SET"
            " last_attempt = excluded.last_attempt,"
            " last_success = CASE WHEN ? THEN excluded.last_attempt"
            " ELSE siem_health.last_success END,"
            " last_error = CASE WHEN ? THEN siem_health.last_error ELSE excluded.last_error END,"
            " last_error_at = CASE WHEN ? THEN siem_health.last_error_at"
            " ELSE excluded.last_error_at END,"
            " last_error_code = CASE WHEN ? THEN siem_health.last_error_code"
            " ELSE excluded.last_error_code END,"
            " failing_since = CASE WHEN ? THEN NULL"
            " ELSE coalesce(siem_health.failing_since, excluded.last_attempt) END,"
            " failures = CASE WHEN ? THEN 0 ELSE siem_health.failures + 1 END,"
            " behind = excluded.behind, oldest = excluded.oldest"
        )

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                conn.execute(close_run, (objects, events, error, run_id))
                conn.execute(
                    upsert,
                    (
                        integration,
                        destination,
                        ok,
                        error,
                        ok,
                        error_code,
                        ok,
                        ok,
                        behind,
                        oldest,
                        *(ok,) * 6,
                    ),
                )

        d.run(op)

    def health(self, integration: str | None = None) -> list[HealthRecord]:
        d = self._dialect
        sql = (
            "SELECT integration, destination,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('last_attempt', ms=True)}, {d.utc_text('last_success', ms=True)},"
            f" last_error, {d.utc_text('last_error_at', ms=True)}, failures, behind, oldest,"
            f" last_error_code, {d.utc_text('failing_since', ms=True)},"
            f" {d.utc_text('alert_sent_at', ms=True)} FROM siem_health"
        )
        params: tuple[str, ...] = ()
        if integration is not None:
            sql += " WHERE integration=?"
            params = (integration,)
        sql = d.sql(sql + " ORDER BY integration, destination")
        rows = d.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [
            HealthRecord(
                i, dest, at, ok, err, err_at, int(n), None if b is None else int(b), o, *rest
            )
            for i, dest, at, ok, err, err_at, n, b, o, *rest in rows
        ]

    def set_alert(self, integration: str, destination: str, *, sent: bool) -> None:
        d = self._dialect
        value = d.clock if sent else "NULL"
        sql = d.sql(
            f"UPDATE siem_health SET alert_sent_at = {value}"  # noqa: S608 (dialect constants, no input)
            " WHERE integration=? AND destination=?"
        )
        d.run(lambda conn, retry: conn.execute(sql, (integration, destination)))

    def recent_runs(self, integration: str, limit: int = 10) -> list[RunRecord]:
        d = self._dialect
        sql = d.sql(
            "SELECT integration, destination, worker,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('started', ms=True)}, {d.utc_text('finished', ms=True)},"
            " objects, events, error FROM siem_sync_run WHERE integration=?"
            " ORDER BY started DESC, id DESC LIMIT ?"
        )
        rows = d.run(lambda conn, retry: conn.execute(sql, (integration, limit)).fetchall())
        return [RunRecord(*row) for row in rows]

    # ------------------------------------------------------------------ dead letters

    def set_aside(self, integration: str, account: str, errors: Mapping[int, str]) -> None:
        if not errors:
            return
        d = self._dialect

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                d.executemany(
                    conn,
                    d.sql(
                        "INSERT INTO siem_dead_letter (integration, event_id, account, error)"
                        " VALUES (?,?,?,?) ON CONFLICT (integration, event_id) DO NOTHING"
                    ),
                    [(integration, i, account, e) for i, e in sorted(errors.items())],
                )

        d.run(op)

    def set_aside_ids(self, integration: str, first_id: int, last_id: int) -> frozenset[int]:
        d = self._dialect
        rows = d.run(
            lambda conn, retry: conn.execute(
                d.sql(
                    "SELECT event_id FROM siem_dead_letter WHERE integration=?"
                    " AND event_id>=? AND event_id<=?"
                ),
                (integration, first_id, last_id),
            ).fetchall()
        )
        return frozenset(int(r[0]) for r in rows)

    def dead_letters(self, integration: str | None = None) -> list[DeadLetter]:
        d = self._dialect
        sql = (
            "SELECT integration, event_id, account, error,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('created', ms=True)} FROM siem_dead_letter"
        )
        params: tuple[str, ...] = ()
        if integration is not None:
            sql += " WHERE integration=?"
            params = (integration,)
        sql = d.sql(sql + " ORDER BY integration, event_id")
        rows = d.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [DeadLetter(i, int(e), a, err, c) for i, e, a, err, c in rows]

    def complete_replay(
        self, intent: Intent, shipped: Collection[int], errors: Mapping[int, str]
    ) -> None:
        d = self._dialect

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                conn.execute(
                    d.sql(
                        "DELETE FROM siem_intent WHERE integration=? AND destination=?"
                        " AND first_id=?"
                    ),
                    (intent.integration, intent.destination, intent.first_id),
                )
                if shipped:
                    d.executemany(
                        conn,
                        d.sql("DELETE FROM siem_dead_letter WHERE integration=? AND event_id=?"),
                        [(intent.integration, i) for i in sorted(shipped)],
                    )
                if errors:
                    d.executemany(
                        conn,
                        d.sql(
                            "UPDATE siem_dead_letter SET error=? WHERE integration=? AND event_id=?"
                        ),
                        [(e, intent.integration, i) for i, e in errors.items()],
                    )

        d.run(op)
