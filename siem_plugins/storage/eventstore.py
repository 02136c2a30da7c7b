"""What the SQLite and PostgreSQL event stores share: :meth:`SQLEventStore.append` (rows
in chunks and the input file's record in ``siem_ingest``, in one transaction),
``ingested``, ``count`` and ``last_id``, each written once.

How rows go in (``executemany`` on SQLite, ``COPY`` on PostgreSQL), how the write lock is
taken, and how events are read (SQLite's dense and sparse plans, PostgreSQL's server-side
cursors) stay with each store: those are where the two databases are fast differently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import ClassVar, Generic, TypeAlias, TypeVar

from siem_plugins.events import Canonical
from siem_plugins.keys import check_account
from siem_plugins.storage.dialect import C, Connection, Dialect
from siem_plugins.storage.protocols import IngestRecord, IngestResult, Origin

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
