"""The PostgreSQL event store and delivery state (psycopg 3), for fleets.

Chosen by URL: ``[store] url = "postgresql://user@host/db"``. The schema is versioned:
``siem-plugins store migrate`` applies what is missing, idempotently, under an advisory
lock so several processes can run it at once.

**No skipped ids.** A sequence hands out ids at insert time but transactions commit in
any order, so id 101 can become visible before id 100; a reader that moved its cursor
to 101 would lose 100 for ever. Here every writer takes one transaction-level advisory
lock (:data:`INGEST_LOCK`) *before* it draws ids and keeps it until it commits, so ids
become visible strictly in id order: when a reader sees id N, every id below N is
either visible or never will be (rolled back). One :meth:`PostgresStore.append` (one
input file of ``siem-plugins ingest``) is one transaction holding that lock, so a file is
stored whole or not at all and other writers wait for it (docs/deployment.md discusses
the cost and the alternatives). External writers use :func:`append` or the
``siem_append_lock()`` SQL function the migration creates.

Reads stream through a server-side cursor, so memory stays flat whatever the backlog.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from siem_plugins.events import Canonical, Event
from siem_plugins.ingest import IngestRecord, IngestResult, Origin
from siem_plugins.keys import check_account
from siem_plugins.kinds import Intent, Range
from siem_plugins.state import DeadLetter, StateError

log = logging.getLogger(__name__)

#: Advisory lock key taken by every writer of siem_event (transaction scope).
INGEST_LOCK = 0x5E1E_0001
#: Namespace (first int) of the per-integration sync locks (session scope).
SYNC_LOCK_NS = 0x5E1E

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events, cursors, intents",
        """
CREATE SEQUENCE IF NOT EXISTS siem_event_id_seq AS bigint;
CREATE TABLE IF NOT EXISTS siem_event (
    id       bigint PRIMARY KEY DEFAULT nextval('siem_event_id_seq'),
    account  text NOT NULL,
    type     text NOT NULL,
    log_type text NOT NULL,
    ts       text NOT NULL,
    body     bytea NOT NULL
);
ALTER SEQUENCE siem_event_id_seq OWNED BY siem_event.id;
CREATE INDEX IF NOT EXISTS siem_event_account_id ON siem_event (account, id);
CREATE TABLE IF NOT EXISTS siem_cursor (
    integration text NOT NULL,
    destination text NOT NULL,
    last_id     bigint NOT NULL,
    updated     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_intent (
    integration text NOT NULL,
    destination text NOT NULL,
    first_id    bigint NOT NULL,
    last_id     bigint NOT NULL,
    count       bigint NOT NULL,
    key         text NOT NULL,
    created     text NOT NULL,
    fingerprint text NOT NULL,
    PRIMARY KEY (integration, destination)
);
CREATE OR REPLACE FUNCTION siem_append_lock() RETURNS void LANGUAGE sql AS
    'SELECT pg_advisory_xact_lock(1579024385)';
""",
    ),
    (
        2,
        "sync runs (who synced what, when)",
        """
CREATE TABLE IF NOT EXISTS siem_sync_run (
    id          bigserial PRIMARY KEY,
    integration text NOT NULL,
    worker      text NOT NULL,
    started     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished    timestamptz,
    objects     integer,
    events      bigint,
    error       text
);
CREATE INDEX IF NOT EXISTS siem_sync_run_integration ON siem_sync_run (integration, started);
""",
    ),
    (
        3,
        "stored input files (ingest is idempotent per file)",
        """
CREATE TABLE IF NOT EXISTS siem_ingest (
    account   text NOT NULL,
    sha256    text NOT NULL,
    source    text NOT NULL,
    lines     bigint NOT NULL,
    stored    bigint NOT NULL,
    first_id  bigint NOT NULL,
    last_id   bigint NOT NULL,
    stored_at timestamptz NOT NULL,
    PRIMARY KEY (account, sha256)
);
""",
    ),
    (
        4,
        "dead letters; sync runs per destination",
        """
ALTER TABLE siem_sync_run ADD COLUMN IF NOT EXISTS destination text;
CREATE TABLE IF NOT EXISTS siem_dead_letter (
    integration text NOT NULL,
    event_id    bigint NOT NULL,
    account     text NOT NULL,
    error       text NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, event_id)
);
""",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_SELECT_INGEST = (
    "SELECT account, sha256, source, lines, stored, first_id, last_id,"
    " to_char(stored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    " FROM siem_ingest WHERE account=%s AND sha256=%s"
)
assert INGEST_LOCK == 1579024385  # the literal inside siem_append_lock()


class SchemaError(RuntimeError):
    pass


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the PostgreSQL store needs psycopg: pip install 'siem-plugins[postgres]'"
        ) from None
    return psycopg


def connect(url: str) -> Any:
    """An autocommit connection. Its ``application_name`` is ``siem-plugins`` unless the
    URL names one (``?application_name=...``), to tell processes apart in
    ``pg_stat_activity``."""
    psycopg = _psycopg()
    if "application_name" in psycopg.conninfo.conninfo_to_dict(url):
        return psycopg.connect(url, autocommit=True)
    return psycopg.connect(url, autocommit=True, application_name="siem-plugins")


def schema_version(conn: Any) -> int:
    row = conn.execute("SELECT to_regclass('siem_schema_version')").fetchone()
    if row[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM siem_schema_version").fetchone()
    return int(row[0])


def migrate(url: str) -> list[int]:
    """Apply missing migrations; returns the versions applied (none: up to date)."""
    applied = []
    with connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SYNC_LOCK_NS,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS siem_schema_version ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        current = schema_version(conn)
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO siem_schema_version (version, description) VALUES (%s, %s)",
                (version, description),
            )
            applied.append(version)
    return applied


_R = TypeVar("_R")


def _is_dead(conn: Any) -> bool:
    """Whether a connection can no longer be used (closed, or its session is gone)."""
    return bool(conn.closed or conn.broken)


class _Conns:
    """One connection per thread (psycopg connections are not for concurrent use), and a
    pool of idle ones for reads and sync locks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _new(self) -> Any:
        conn = connect(self.url)
        with self._lock:
            # Dead ones are dropped here so that reconnecting never grows the list.
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or _is_dead(conn):
            conn = self._new()
            self._local.conn = conn
        return conn

    def run(self, op: Callable[[Any, bool], _R]) -> _R:
        """``op(connection, retry)`` on this thread's connection; if that connection is
        found dead, once more on a fresh one with ``retry=True`` (``op`` must then cope
        with its first run having committed)."""
        psycopg = _psycopg()
        conn = self.get()
        try:
            return op(conn, False)
        except psycopg.OperationalError as exc:
            if not _is_dead(conn):
                raise
            log.warning("PostgreSQL connection lost (%s); reconnecting", _one_line(exc))
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

    def take(self) -> Any:
        """A connection of its own until :meth:`give_back`."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or _is_dead(conn):
            conn = self._new()
        return conn

    def give_back(self, conn: Any) -> None:
        if not _is_dead(conn) and conn.info.transaction_status == 0:  # idle
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Any]:
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_schema(conns: _Conns) -> None:
    version = schema_version(conns.get())
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"the PostgreSQL store is at schema version {version}, this "
            f"siem-plugins needs {SCHEMA_VERSION}: run `siem-plugins store migrate`"
        )


class PostgresStore:
    """The event store on PostgreSQL. Implements :class:`~siem_plugins.kinds.Source`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conns = _Conns(url)
        _check_schema(self._conns)

    def append(
        self,
        account: str,
        records: Iterable[Canonical],
        *,
        chunk: int = 5000,
        origin: Origin | None = None,
        force: bool = False,
    ) -> IngestResult:
        """COPY validated records in, ``chunk`` rows at a time, all in one transaction that
        holds :data:`INGEST_LOCK` from its start: all of them are stored or, on any error
        (also one raised by ``records``, or a lost connection), none. Other writers wait
        for the lock until this transaction ends.

        With ``origin`` the file is recorded in ``siem_ingest`` in the same transaction;
        if the account already has a file with the same SHA-256, everything is rolled
        back and the result's ``already`` says when it was stored, unless ``force``.
        """
        psycopg = _psycopg()
        check_account(account)
        conn = self._conns.get()
        accepted = 0
        first: int | None = None
        last: int | None = None
        already: IngestRecord | None = None
        rows: list[tuple[str, str, str, str, bytes]] = []
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT siem_append_lock()")

            def flush() -> None:
                nonlocal accepted, first, last
                with cur.copy(
                    "COPY siem_event (account, type, log_type, ts, body) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                top = cur.execute("SELECT currval('siem_event_id_seq')").fetchone()[0]
                if first is None:
                    first = top - len(rows) + 1
                last = top
                accepted += len(rows)
                rows.clear()

            for rec in records:
                rows.append((account, rec.type, rec.log_type, rec.timestamp, rec.raw))
                if len(rows) >= chunk:
                    flush()
            if rows:
                flush()
            if origin is not None and accepted:
                row = cur.execute(
                    _SELECT_INGEST,
                    (account, origin.sha256),
                ).fetchone()
                if row is not None and not force:
                    already = IngestRecord(*row)
                    raise psycopg.Rollback()
                cur.execute(
                    "INSERT INTO siem_ingest (account, sha256, source, lines, stored, first_id,"
                    " last_id, stored_at) VALUES (%s,%s,%s,%s,%s,%s,%s,now())"
                    " ON CONFLICT (account, sha256) DO UPDATE SET source=excluded.source,"
                    " lines=excluded.lines, stored=excluded.stored, first_id=excluded.first_id,"
                    " last_id=excluded.last_id, stored_at=excluded.stored_at",
                    (account, origin.sha256, origin.name, origin.lines, accepted, first, last),
                )
        if already is not None:
            return IngestResult(0, None, None, already=already)
        return IngestResult(accepted, first, last)

    def ingested(self, account: str, sha256: str) -> IngestRecord | None:
        """The record of a stored file (by its SHA-256), if the account has one."""
        row = (
            self._conns.get()
            .execute(
                _SELECT_INGEST,
                (account, sha256),
            )
            .fetchone()
        )
        return IngestRecord(*row) if row is not None else None

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
        psycopg = _psycopg()
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
                if started or retry or conn is None or not _is_dead(conn):
                    raise
                log.warning("PostgreSQL connection lost before a read; reconnecting")
                self._conns.purge_idle()

    def count(self, account: str | None = None) -> int:
        if account is None:
            return self._conns.run(
                lambda conn, retry: int(
                    conn.execute("SELECT count(*) FROM siem_event").fetchone()[0]
                )
            )
        return self._conns.run(
            lambda conn, retry: int(
                conn.execute(
                    "SELECT count(*) FROM siem_event WHERE account=%s", (account,)
                ).fetchone()[0]
            )
        )

    def close(self) -> None:
        self._conns.close()


class PgState:
    """Cursors, intents, sync locks, the run log and dead letters in PostgreSQL (same
    protocol as :class:`~siem_plugins.state.State`).

    Every operation runs on this thread's connection; when that connection turns out to
    be dead (the server restarted, or an administrator terminated it while it was idle
    in the pool) the operation is run once more on a fresh one. Writes are written so
    that such a second run is safe even when the first one did commit and only its
    answer was lost (see :meth:`record` and :meth:`complete`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conns = _Conns(url)
        _check_schema(self._conns)

    def close(self) -> None:
        self._conns.close()

    def cursor(self, integration: str, destination: str) -> int:
        return self._conns.run(lambda conn, retry: _cursor(conn, integration, destination))

    def cursors(self) -> dict[tuple[str, str], int]:
        def op(conn: Any, retry: bool) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                "SELECT integration, destination, last_id FROM siem_cursor"
            ).fetchall()
            return {(i, d): int(last) for i, d, last in rows}

        return self._conns.run(op)

    def pending(self, integration: str, destination: str) -> Intent | None:
        return self._conns.run(lambda conn, retry: _pending(conn, integration, destination))

    def record(self, intent: Intent) -> None:
        psycopg = _psycopg()

        def op(conn: Any, retry: bool) -> None:
            with conn.transaction():
                cur = conn.execute(
                    "SELECT last_id FROM siem_cursor WHERE integration=%s AND destination=%s"
                    " FOR UPDATE",
                    (intent.integration, intent.destination),
                ).fetchone()
                if cur and intent.first_id <= cur[0]:
                    raise StateError(
                        f"intent {intent.first_id}-{intent.last_id} overlaps the cursor "
                        f"{cur[0]} of {intent.integration}/{intent.destination}"
                    )
                try:
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO siem_intent VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
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
                except psycopg.errors.UniqueViolation:
                    if retry and _pending(conn, intent.integration, intent.destination) == intent:
                        return  # the first try committed; only its answer was lost
                    raise StateError(
                        f"{intent.integration}/{intent.destination} already has a pending intent"
                    ) from None

        self._conns.run(op)

    def discard(self, intent: Intent) -> None:
        self._conns.run(
            lambda conn, retry: conn.execute(
                "DELETE FROM siem_intent WHERE integration=%s AND destination=%s AND first_id=%s",
                (intent.integration, intent.destination, intent.first_id),
            )
        )

    def complete(self, intent: Intent) -> None:
        def op(conn: Any, retry: bool) -> None:
            with conn.transaction():
                deleted = conn.execute(
                    "DELETE FROM siem_intent WHERE integration=%s AND destination=%s"
                    " AND first_id=%s AND last_id=%s",
                    (intent.integration, intent.destination, intent.first_id, intent.last_id),
                ).rowcount
                if deleted != 1:
                    if retry and _cursor(conn, intent.integration, intent.destination) >= (
                        intent.last_id
                    ):
                        return  # the first try committed; only its answer was lost
                    raise StateError(
                        f"no pending intent {intent.first_id}-{intent.last_id} for "
                        f"{intent.integration}/{intent.destination}"
                    )
                conn.execute(
                    "INSERT INTO siem_cursor (integration, destination, last_id)"
                    " VALUES (%s,%s,%s) ON CONFLICT (integration, destination)"
                    " DO UPDATE SET last_id=excluded.last_id, updated=now()",
                    (intent.integration, intent.destination, intent.last_id),
                )

        self._conns.run(op)

    # ------------------------------------------------------------------ locks, runs

    def try_lock(self, integration: str, destination: str) -> SyncLock | None:
        """The (integration, destination)'s sync lock, if no other session holds it.

        A session-level advisory lock on a pooled connection of its own: it is released
        when the holder releases it *or when its process dies* (the server ends the
        session), so a killed worker never blocks a destination for long.
        """
        key = sync_lock_key(integration, destination)
        psycopg = _psycopg()
        for retry in (False, True):
            conn = self._conns.take()
            try:
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            except psycopg.OperationalError:
                self._conns.give_back(conn)
                if retry or not _is_dead(conn):
                    raise
                self._conns.purge_idle()
                continue  # a pooled connection died while idle: once more, fresh
            except BaseException:
                self._conns.give_back(conn)
                raise
            if not got:
                self._conns.give_back(conn)
                return None
            # The lock lives on this connection's session: it stays out of the pool
            # until the lock is released.
            return SyncLock(conn, key, f"{integration}/{destination}", self._conns.give_back)
        raise AssertionError("unreachable")  # pragma: no cover

    def run_started(self, integration: str, destination: str, worker: str) -> int:
        return self._conns.run(
            lambda conn, retry: int(
                conn.execute(
                    "INSERT INTO siem_sync_run (integration, destination, worker)"
                    " VALUES (%s, %s, %s) RETURNING id",
                    (integration, destination, worker),
                ).fetchone()[0]
            )
        )

    def run_finished(self, run_id: int, *, objects: int, events: int, error: str | None) -> None:
        self._conns.run(
            lambda conn, retry: conn.execute(
                "UPDATE siem_sync_run SET finished=clock_timestamp(), objects=%s, events=%s,"
                " error=%s WHERE id=%s",
                (objects, events, error, run_id),
            )
        )

    # ------------------------------------------------------------------ dead letters

    def set_aside(self, integration: str, account: str, errors: Mapping[int, str]) -> None:
        if not errors:
            return

        def op(conn: Any, retry: bool) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO siem_dead_letter (integration, event_id, account, error)"
                    " VALUES (%s,%s,%s,%s) ON CONFLICT (integration, event_id) DO NOTHING",
                    [(integration, i, account, e) for i, e in sorted(errors.items())],
                )

        self._conns.run(op)

    def set_aside_ids(self, integration: str, first_id: int, last_id: int) -> frozenset[int]:
        return self._conns.run(
            lambda conn, retry: frozenset(
                int(r[0])
                for r in conn.execute(
                    "SELECT event_id FROM siem_dead_letter WHERE integration=%s"
                    " AND event_id>=%s AND event_id<=%s",
                    (integration, first_id, last_id),
                ).fetchall()
            )
        )

    def dead_letters(self, integration: str | None = None) -> list[DeadLetter]:
        sql = (
            "SELECT integration, event_id, account, error,"
            " to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            " FROM siem_dead_letter"
        )
        params: tuple[str, ...] = ()
        if integration is not None:
            sql += " WHERE integration=%s"
            params = (integration,)
        sql += " ORDER BY integration, event_id"
        rows = self._conns.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [DeadLetter(i, int(e), a, err, c) for i, e, a, err, c in rows]

    def complete_replay(
        self, intent: Intent, shipped: Collection[int], errors: Mapping[int, str]
    ) -> None:
        def op(conn: Any, retry: bool) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "DELETE FROM siem_intent WHERE integration=%s AND destination=%s"
                    " AND first_id=%s",
                    (intent.integration, intent.destination, intent.first_id),
                )
                if shipped:
                    cur.execute(
                        "DELETE FROM siem_dead_letter WHERE integration=%s AND event_id = ANY(%s)",
                        (intent.integration, sorted(shipped)),
                    )
                if errors:
                    cur.executemany(
                        "UPDATE siem_dead_letter SET error=%s WHERE integration=%s AND event_id=%s",
                        [(e, intent.integration, i) for i, e in errors.items()],
                    )

        self._conns.run(op)


def sync_lock_key(integration: str, destination: str) -> int:
    """The 64-bit advisory lock key of an (integration, destination): a hash wide enough
    that ten thousand integrations never share one (``hashtext`` is 32 bits)."""
    digest = hashlib.sha256(f"siem-plugins sync {integration}/{destination}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _cursor(conn: Any, integration: str, destination: str) -> int:
    row = conn.execute(
        "SELECT last_id FROM siem_cursor WHERE integration=%s AND destination=%s",
        (integration, destination),
    ).fetchone()
    return int(row[0]) if row else 0


def _pending(conn: Any, integration: str, destination: str) -> Intent | None:
    row = conn.execute(
        "SELECT integration, destination, first_id, last_id, count, key, created, fingerprint"
        " FROM siem_intent WHERE integration=%s AND destination=%s",
        (integration, destination),
    ).fetchone()
    return Intent(*row) if row else None


class SyncLock:
    """A held advisory sync lock (see :meth:`PgState.try_lock`)."""

    def __init__(self, conn: Any, key: int, name: str, give_back: Callable[[Any], None]) -> None:
        self._conn = conn
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

    def __enter__(self) -> SyncLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
