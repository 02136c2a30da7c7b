"""PostgreSQL (psycopg 3): the event store and the state store (:class:`PgState`) for
fleets, their dialect of the shared SQL, and advisory sync locks.

Chosen by URL: ``[store] url = "postgresql://user@host/db"``; the schema comes from
``siem-plugins store migrate`` (:mod:`~siem_plugins.storage.migrations`).

**No skipped ids.** A sequence hands out ids at insert time but transactions commit in
any order, so id 101 can become visible before id 100; a reader that moved its cursor
to 101 would lose 100 for ever. Here every writer takes one transaction-level advisory
lock (:data:`~siem_plugins.storage.migrations.INGEST_LOCK`) *before* it draws ids and
keeps it until it commits, so ids become visible strictly in id order: when a reader sees
id N, every id below N is either visible or never will be (rolled back). One
:meth:`PostgresStore.append` (one input file of ``siem-plugins ingest``) is one
transaction holding that lock, so a file is stored whole or not at all and other writers
wait for it (docs/deployment.md discusses the cost and the alternatives). External
writers use :meth:`PostgresStore.append` or the ``siem_append_lock()`` SQL function the
migration creates.

Reads stream through a server-side cursor, so memory stays flat whatever the backlog.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from siem_plugins.events import Event
from siem_plugins.kinds import Range
from siem_plugins.storage.connections import PgConnections, is_dead
from siem_plugins.storage.dialect import Dialect
from siem_plugins.storage.eventstore import Row, SQLEventStore
from siem_plugins.storage.migrations import check_schema
from siem_plugins.storage.state import SQLState

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    from siem_plugins.storage.connections import PgConnection

log = logging.getLogger(__name__)

_R = TypeVar("_R")


def sync_lock_key(schema: str, integration: str, destination: str) -> int:
    """The 64-bit advisory lock key of an (integration, destination) of the store in
    ``schema``: a hash wide enough that ten thousand integrations never share one
    (``hashtext`` is 32 bits). Advisory locks are per database, so the schema is part of
    the key: two fleets whose stores share a database never block each other."""
    name = f"siem-plugins sync {schema}:{integration}/{destination}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLock:
    """A held advisory sync lock (see :meth:`PgDialect.try_lock`)."""

    def __init__(
        self,
        conn: PgConnection,
        key: int,
        name: str,
        give_back: Callable[[PgConnection], None],
    ) -> None:
        self._conn: PgConnection | None = conn
        self._key = key
        self._give_back = give_back
        self.name = name

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except Exception as exc:
            # A dead session holds no locks: closing it is all that is left to do.
            conn.close()
            log.debug("%s: unlocking failed (%s); connection closed", self.name, exc)
        self._give_back(conn)

    def __enter__(self) -> AdvisoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PgDialect(Dialect["PgConnection"]):
    """PostgreSQL's way of running the shared SQL: ``%s`` placeholders, every operation
    retried once on a fresh connection when its connection was found dead, rows locked
    ``FOR UPDATE``, savepoints, ``timestamptz`` columns, and advisory sync locks."""

    clock = "clock_timestamp()"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns = PgConnections(url)
        self._schema: str | None = None

    @property
    def unique_violation(self) -> type[Exception]:
        import psycopg

        return psycopg.errors.UniqueViolation

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def run(self, op: Callable[[PgConnection, bool], _R]) -> _R:
        return self.conns.run(op)

    def transaction(self, conn: PgConnection) -> contextlib.AbstractContextManager[object]:
        return conn.transaction()

    def savepoint(self, conn: PgConnection) -> contextlib.AbstractContextManager[object]:
        # A nested transaction is a savepoint: a failed INSERT leaves the outer one usable.
        return conn.transaction()

    def executemany(self, conn: PgConnection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)

    def insert_id(self, conn: PgConnection, sql: str, params: Sequence[Any]) -> int:
        row = conn.execute(sql + " RETURNING id", params).fetchone()
        assert row is not None
        return int(row[0])

    def utc_text(self, column: str, *, ms: bool) -> str:
        seconds = "SS.MS" if ms else "SS"
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:{seconds}\"Z\"')"

    def try_lock(self, integration: str, destination: str) -> AdvisoryLock | None:
        """The (integration, destination)'s sync lock, if no other session holds it.

        A session-level advisory lock on a pooled connection of its own: it is released
        when the holder releases it *or when its process dies* (the server ends the
        session), so a killed worker never blocks a destination for long.
        """
        import psycopg

        for retry in (False, True):
            conn = self.conns.take()
            try:
                if self._schema is None:  # fixed by the URL's search_path: asked once
                    found = conn.execute("SELECT current_schema()").fetchone()
                    self._schema = str(found[0]) if found else ""
                key = sync_lock_key(self._schema, integration, destination)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except psycopg.OperationalError:
                self.conns.give_back(conn)
                if retry or not is_dead(conn):
                    raise
                self.conns.purge_idle()
                continue  # a pooled connection died while idle: once more, fresh
            except BaseException:
                self.conns.give_back(conn)
                raise
            if not (row and row[0]):
                self.conns.give_back(conn)
                return None
            # The lock lives on this connection's session: it stays out of the pool
            # until the lock is released.
            return AdvisoryLock(conn, key, f"{integration}/{destination}", self.conns.give_back)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.conns.close()


class PgState(SQLState["PgConnection"]):
    """The state store in PostgreSQL (its schema migrated by ``siem-plugins store
    migrate``); sync locks are session advisory locks, shared by the whole fleet."""

    def __init__(self, url: str) -> None:
        dialect = PgDialect(url)
        super().__init__(dialect)
        self.url = url
        self._conns = dialect.conns
        check_schema(self._conns.get())


class PostgresStore(SQLEventStore["PgConnection", "psycopg.Cursor[TupleRow]"]):
    """The event store on PostgreSQL. Implements :class:`~siem_plugins.storage.EventStore`."""

    stored_now = "now()"

    def __init__(self, url: str) -> None:
        dialect = PgDialect(url)
        super().__init__(dialect)
        self.url = url
        self._conns = dialect.conns
        check_schema(self._conns.get())

    @contextlib.contextmanager
    def _writing(self) -> Iterator[psycopg.Cursor[TupleRow]]:
        # INGEST_LOCK (siem_append_lock()) from the start: ids become visible in order.
        conn = self._conns.get()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT siem_append_lock()")
            yield cur

    def _insert(self, w: psycopg.Cursor[TupleRow], rows: list[Row]) -> int:
        with w.copy("COPY siem_event (account, type, log_type, ts, body) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        top = w.execute("SELECT currval('siem_event_id_seq')").fetchone()
        assert top is not None
        return int(top[0])

    def plan(self, account: str, after_id: int, *, max_events: int, max_bytes: int) -> Range | None:
        return self._conns.run(
            lambda conn, retry: self._plan(conn, account, after_id, max_events, max_bytes)
        )

    def _plan(
        self, conn: Any, account: str, after_id: int, max_events: int, max_bytes: int
    ) -> Range | None:
        if max_bytes >= sys.maxsize:
            lo, hi, n = conn.execute(
                "SELECT min(id), max(id), count(*) FROM (SELECT id FROM siem_event"
                " WHERE account=%s AND id>%s ORDER BY id LIMIT %s) t",
                (account, after_id, min(max_events, 2**62)),
            ).fetchone()
            return Range(lo, hi, n) if n else None
        # Running total of sizes in the database; only the cut-off row comes back.
        row = conn.execute(
            "SELECT min(id), max(id), count(*) FROM ("
            " SELECT id, sum(octet_length(body) + 1) OVER (ORDER BY id) AS total"
            " FROM (SELECT id, body FROM siem_event WHERE account=%s AND id>%s"
            "       ORDER BY id LIMIT %s) w) t"
            " WHERE total <= %s OR id = (SELECT min(id) FROM siem_event"
            "                            WHERE account=%s AND id>%s)",
            (account, after_id, max_events, max_bytes, account, after_id),
        ).fetchone()
        lo, hi, n = row
        return Range(lo, hi, n) if n else None

    def read(
        self,
        account: str,
        first_id: int,
        last_id: int,
        *,
        log_types: Collection[str] | None = None,
        batch_size: int = 5000,
    ) -> Iterator[list[Event]]:
        if log_types is not None and not log_types:
            return
        sql = (
            "SELECT id, type, log_type, ts, body FROM siem_event"
            " WHERE account=%s AND id>=%s AND id<=%s"
        )
        params: list[Any] = [account, first_id, last_id]
        if log_types is not None:
            sql += " AND log_type = ANY(%s)"
            params.append(sorted(log_types))
        sql += " ORDER BY id"

        def events(rows: list[Any]) -> list[Event]:
            return [Event(r[0], account, r[1], r[2], r[3], r[4]) for r in rows]

        yield from self._stream("siem_read", sql, params, batch_size, events)

    def read_raw(
        self, account: str, first_id: int, last_id: int, *, batch_size: int = 5000
    ) -> Iterator[list[bytes]]:
        yield from self._stream(
            "siem_read_raw",
            "SELECT body FROM siem_event WHERE account=%s AND id>=%s AND id<=%s ORDER BY id",
            [account, first_id, last_id],
            batch_size,
            lambda rows: [r[0] for r in rows],
        )

    def _stream(
        self,
        name: str,
        sql: str,
        params: list[Any],
        batch_size: int,
        make: Callable[[list[Any]], list[_R]],
    ) -> Iterator[list[_R]]:
        """Rows of ``sql`` in batches, through a server-side cursor on a connection of its
        own (the cursor lives in its own transaction). Binary rows: bytea arrives as
        bytes, not hex text (~1.5x the read rate). A pooled connection that died while
        idle is replaced once, as long as nothing was yielded yet."""
        import psycopg

        for retry in (False, True):
            conn = None
            started = False
            try:
                with (
                    self._conns.borrowed() as conn,
                    conn.transaction(),
                    conn.cursor(name=name, binary=True) as cur,
                ):
                    cur.itersize = batch_size
                    cur.execute(sql, params)
                    while True:
                        rows = cur.fetchmany(batch_size)
                        if not rows:
                            return
                        started = True
                        yield make(rows)
            except psycopg.OperationalError:
                if started or retry or conn is None or not is_dead(conn):
                    raise
                log.warning("PostgreSQL connection lost before a read; reconnecting")
                self._conns.purge_idle()
