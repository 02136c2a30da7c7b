"""What the SQLite and PostgreSQL event stores share: :meth:`SQLEventStore.append` (rows
in chunks and the input file's record in ``siem_ingest``, in one transaction),
``ingested``, ``count``, ``last_id``, ``accounts`` and the batched deletion of
:meth:`SQLEventStore.prune`, each written once.

How rows go in (``executemany`` on SQLite, ``COPY`` on PostgreSQL), how the write lock is
taken, and how events are read (SQLite's dense and sparse plans, PostgreSQL's server-side
cursors) stay with each store: those are where the two databases are fast differently.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import ClassVar, Generic, TypeAlias, TypeVar

from siem_plugins.events import Canonical
from siem_plugins.keys import check_account
from siem_plugins.storage.dialect import C, Connection, Dialect
from siem_plugins.storage.protocols import IngestRecord, IngestResult, Keep, Origin, Pruned

#: One siem_event row: account, type, log_type, ts, body.
Row: TypeAlias = tuple[str, str, str, str, bytes]
#: What a write transaction runs its statements on (a connection, or a cursor of one).
W = TypeVar("W", bound=Connection)


def chunks(account: str, records: Iterable[Canonical], size: int) -> Iterator[list[Row]]:
    """The account's rows of ``records``, ``size`` at a time (the last chunk may be
    shorter; no empty chunk).

    Every chunk is the same list, emptied when the next one is asked for: the consumer
    writes a chunk before it asks again, and the rows it freed are the memory the next
    chunk's rows reuse (still in cache), as when this loop was inline."""
    rows: list[Row] = []
    for rec in records:
        rows.append((account, rec.type, rec.log_type, rec.timestamp, rec.raw))
        if len(rows) >= size:
            yield rows
            rows.clear()
    if rows:
        yield rows


def segments(max_id: int, keep: Keep) -> list[tuple[int, int]]:
    """The stretches of ids ``1..max_id`` outside every ``keep`` range (inclusive), each
    as ``(after, before)``: the ids strictly between the two."""
    out: list[tuple[int, int]] = []
    after = 0
    for first, last in sorted(keep):
        if first > max_id:
            break
        if first - 1 > after:
            out.append((after, first))
        after = max(after, last)
    if after < max_id:
        out.append((after, max_id + 1))
    return out


class _AlreadyStored(Exception):
    """Raised inside the write transaction to roll it back: the file is stored already."""

    def __init__(self, record: IngestRecord) -> None:
        super().__init__(record.sha256)
        self.record = record


class SQLEventStore(ABC, Generic[C, W]):
    """The event store's logic common to both databases, on a dialect's connections."""

    #: SQL for the time a file is recorded as stored (``siem_ingest.stored_at``).
    stored_now: ClassVar[str]

    def __init__(self, dialect: Dialect[C]) -> None:
        self._dialect = dialect
        d = dialect
        self._select_ingest = d.sql(
            "SELECT account, sha256, source, lines, stored, first_id, last_id,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('stored_at', ms=False)} FROM siem_ingest WHERE account=? AND sha256=?"
        )
        self._record_ingest = d.sql(
            "INSERT INTO siem_ingest (account, sha256, source, lines, stored, first_id, last_id,"  # noqa: S608 (dialect constants, no input)
            f" stored_at) VALUES (?,?,?,?,?,?,?,{self.stored_now})"
            " ON CONFLICT (account, sha256) DO UPDATE SET source=excluded.source,"
            " lines=excluded.lines, stored=excluded.stored, first_id=excluded.first_id,"
            " last_id=excluded.last_id, stored_at=excluded.stored_at"
        )

    @abstractmethod
    def _writing(self) -> AbstractContextManager[W]:
        """A transaction that holds the store's write lock from its start until it ends:
        committed when the block ends, rolled back (whole) if it raises."""

    @abstractmethod
    def _insert(self, w: W, rows: list[Row]) -> int:
        """Insert rows in the write transaction; the id of the last one (the ids of one
        transaction's rows are consecutive: the write lock keeps other writers out)."""

    # ------------------------------------------------------------------ writing

    def append(
        self,
        account: str,
        records: Iterable[Canonical],
        *,
        chunk: int = 5000,
        origin: Origin | None = None,
        force: bool = False,
    ) -> IngestResult:
        """Store validated records for ``account``, in order, in one transaction: all of
        them or, on any error (also one raised by ``records``, or a lost connection), none.

        The write lock is taken at the start and held until the transaction ends: other
        writers wait for it (SQLite: including a sync recording its cursor, up to the busy
        timeout). ``chunk`` rows are written at a time, so memory stays bounded however
        many records come.

        With ``origin`` (read once ``records`` is exhausted), the file is recorded in
        ``siem_ingest`` in the same transaction; if the account already has a file with
        the same SHA-256, everything is rolled back and the result's ``already`` says
        when it was stored, unless ``force``.
        """
        check_account(account)
        accepted = 0
        first: int | None = None
        last: int | None = None
        try:
            with self._writing() as w:
                for rows in chunks(account, records, chunk):
                    last = self._insert(w, rows)
                    if first is None:
                        first = last - len(rows) + 1
                    accepted += len(rows)
                if origin is not None and accepted:
                    row = w.execute(self._select_ingest, (account, origin.sha256)).fetchone()
                    if row is not None and not force:
                        raise _AlreadyStored(IngestRecord(*row))
                    record = (account, origin.sha256, origin.name, origin.lines, accepted)
                    w.execute(self._record_ingest, (*record, first, last))
        except _AlreadyStored as stored:
            return IngestResult(0, None, None, already=stored.record)
        return IngestResult(accepted, first, last)

    # ------------------------------------------------------------------ inspection

    def ingested(self, account: str, sha256: str) -> IngestRecord | None:
        """The record of a stored file (by its SHA-256), if the account has one."""
        row = self._dialect.run(
            lambda conn, retry: conn.execute(self._select_ingest, (account, sha256)).fetchone()
        )
        return IngestRecord(*row) if row is not None else None

    def count(self, account: str | None = None) -> int:
        """How many events are stored (for one account)."""
        return self._aggregate("count(*)", account)

    def last_id(self, account: str | None = None) -> int:
        """The highest stored id (of one account); 0 if there is none."""
        return self._aggregate("max(id)", account)

    def time_span(
        self, account: str, since: str | None, until: str | None
    ) -> tuple[int, int, int] | None:
        """``(first id, last id, count)`` of the account's events whose own time is at
        or after ``since`` and before ``until`` (canonical timestamps; None: unbounded);
        None if there is none. Event time is not indexed: this reads the account's rows."""
        sql = "SELECT min(id), max(id), count(*) FROM siem_event WHERE account=?"
        params: tuple[str, ...] = (account,)
        if since is not None:
            sql += " AND ts>=?"
            params += (since,)
        if until is not None:
            sql += " AND ts<?"
            params += (until,)
        sql = self._dialect.sql(sql)
        lo, hi, n = self._dialect.run(lambda conn, retry: conn.execute(sql, params).fetchone())
        return (int(lo), int(hi), int(n)) if n else None

    def accounts(self) -> list[str]:
        """Every account that has stored events, in order: one index seek per account
        (a loose index scan), not a scan of every event."""
        sql = (
            "WITH RECURSIVE a(account) AS (SELECT min(account) FROM siem_event"
            " UNION ALL SELECT (SELECT min(e.account) FROM siem_event e"
            " WHERE e.account > a.account) FROM a WHERE a.account IS NOT NULL)"
            " SELECT account FROM a WHERE account IS NOT NULL"
        )
        rows = self._dialect.run(lambda conn, retry: conn.execute(sql).fetchall())
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------------------ pruning

    def prunable(
        self, account: str, max_id: int, *, older_than: str | None = None, keep: Keep = ()
    ) -> Pruned:
        """What :meth:`prune` with the same arguments would delete now (nothing is)."""
        total = Pruned()
        for after, before in segments(max_id, keep):
            total += self._stretch(account, after, before - 1, older_than)
        return total

    def prune(
        self,
        account: str,
        max_id: int,
        *,
        older_than: str | None = None,
        keep: Keep = (),
        batch: int = 5000,
        pause: float = 0.11,
        stop: threading.Event | None = None,
    ) -> Pruned:
        """Delete the account's events with ``id <= max_id`` outside the ``keep`` ranges
        (and, with ``older_than``, whose ``ts`` is before it), ``batch`` at a time.

        Each batch is a window of at most ``batch`` of the account's ids, found by a
        read (the ``(account, id)`` index alone), then deleted in a transaction of its
        own: the write lock (SQLite) or the rows (PostgreSQL) are held for one batch,
        never for the whole prune. A window with nothing to delete (``older_than``
        spares it) takes no write lock at all. After a transaction the prune sleeps
        ``pause`` seconds, which is what lets a waiting writer in: SQLite's busy
        handler retries a blocked writer about every 100 ms.
        """
        total = Pruned()
        for after, before in segments(max_id, keep):
            while not (stop is not None and stop.is_set()):
                window_end = self._nth(account, after, before, batch)
                end = window_end if window_end is not None else before - 1
                found = self._stretch(account, after, end, older_than)
                if found.count:
                    deleted = self._delete(account, after, end, older_than)
                    total += Pruned(deleted, found.first_id, found.last_id)
                    if stop is not None:
                        stop.wait(pause)
                    else:
                        time.sleep(pause)
                if window_end is None:
                    break
                after = end
        return total

    def _nth(self, account: str, after: int, before: int, n: int) -> int | None:
        """The id of the account's ``n``-th event after ``after`` and before ``before``
        (the ``(account, id)`` index alone), if it has that many there."""
        sql = self._dialect.sql(
            "SELECT id FROM siem_event WHERE account=? AND id>? AND id<?"
            " ORDER BY id LIMIT 1 OFFSET ?"
        )
        params = (account, after, before, n - 1)
        row = self._dialect.run(lambda conn, retry: conn.execute(sql, params).fetchone())
        return int(row[0]) if row is not None else None

    def _delete(self, account: str, after: int, last: int, older_than: str | None) -> int:
        """Delete the account's events with ``after < id <= last`` (and ``ts <
        older_than``) in one transaction; how many went."""
        d = self._dialect
        sql = "DELETE FROM siem_event WHERE account=? AND id>? AND id<=?"
        params: tuple[object, ...] = (account, after, last)
        if older_than is not None:
            sql += " AND ts<?"
            params += (older_than,)
        sql = d.sql(sql)

        def op(conn: C, retry: bool) -> int:
            with d.transaction(conn):
                return int(conn.execute(sql, params).rowcount)

        return d.run(op)

    def _stretch(self, account: str, after: int, last: int, older_than: str | None) -> Pruned:
        """The account's events with ``after < id <= last`` (and ``ts < older_than``)."""
        sql = "SELECT min(id), max(id), count(*) FROM siem_event WHERE account=? AND id>? AND id<=?"
        params: tuple[object, ...] = (account, after, last)
        if older_than is not None:
            sql += " AND ts<?"
            params += (older_than,)
        sql = self._dialect.sql(sql)
        lo, hi, n = self._dialect.run(lambda conn, retry: conn.execute(sql, params).fetchone())
        return Pruned(int(n), lo, hi) if n else Pruned()

    def _aggregate(self, what: str, account: str | None) -> int:
        sql = f"SELECT {what} FROM siem_event"  # noqa: S608 (an aggregate of this module)
        params: tuple[str, ...] = ()
        if account is not None:
            sql += " WHERE account=?"
            params = (account,)
        sql = self._dialect.sql(sql)
        row = self._dialect.run(lambda conn, retry: conn.execute(sql, params).fetchone())
        return int(row[0] or 0)

    def close(self) -> None:
        self._dialect.close()
