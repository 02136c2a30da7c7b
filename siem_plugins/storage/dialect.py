"""What differs between SQLite and PostgreSQL under the SQL both stores share.

The state store (:mod:`~siem_plugins.storage.state`) and the common part of the event
stores (:mod:`~siem_plugins.storage.eventstore`) write each statement once, with ``?``
placeholders. A :class:`Dialect` turns a statement into its database's paramstyle and
supplies what SQL does not say the same way on both: how a statement is run (PostgreSQL
runs it once more on a fresh connection when the first one turns out dead), how a
transaction is opened, the current time, how times read back as text, the error of a
broken primary key, and how a sync lock is taken.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from siem_plugins.storage.protocols import SyncLock


class Rows(Protocol):
    """What a statement returns (a DB-API cursor, as far as the shared SQL needs one)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection (or cursor) that runs one statement: ``sqlite3.Connection`` and
    ``psycopg.Connection``/``psycopg.Cursor`` all do."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows: ...


C = TypeVar("C", bound=Connection)
R = TypeVar("R")


class Dialect(ABC, Generic[C]):
    """One database's way of running the shared SQL, on connections of type ``C``."""

    #: SQL for the current wall-clock time (not the transaction's start), as the state
    #: tables store times.
    clock: ClassVar[str]
    #: Appended to a ``SELECT`` whose rows must stay locked until the transaction ends
    #: (empty where a transaction locks the whole database from its start).
    for_update: ClassVar[str]

    @property
    @abstractmethod
    def unique_violation(self) -> type[Exception]:
        """What an ``INSERT`` that breaks a primary key raises."""

    @abstractmethod
    def sql(self, text: str) -> str:
        """A statement written with ``?`` placeholders, in this database's paramstyle."""

    @abstractmethod
    def run(self, op: Callable[[C, bool], R]) -> R:
        """``op(connection, retry)``. With ``retry=True`` it runs a second time after its
        first connection died, and must cope with the first run having committed (only
        its answer was lost)."""

    @abstractmethod
    def transaction(self, conn: C) -> AbstractContextManager[object]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    def savepoint(self, conn: C) -> AbstractContextManager[object]:
        """A statement whose failure must leave the enclosing transaction usable."""
        return contextlib.nullcontext()

    @abstractmethod
    def executemany(self, conn: C, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement (already in this paramstyle) for each row of parameters."""

    @abstractmethod
    def insert_id(self, conn: C, sql: str, params: Sequence[Any]) -> int:
        """Run an ``INSERT`` (in this paramstyle) of one row; the row's new ``id``."""

    @abstractmethod
    def utc_text(self, column: str, *, ms: bool) -> str:
        """SQL reading a time column as UTC ISO 8601 text, ``...THH:MM:SS[.mmm]Z``."""

    @abstractmethod
    def try_lock(self, integration: str, destination: str) -> SyncLock | None:
        """The (integration, destination)'s sync lock, if no one else holds it."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""
