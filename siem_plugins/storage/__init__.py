"""Where events and delivery state are kept: SQLite (the default) or PostgreSQL, by URL.

:func:`open_store` opens the event store a ``[store] url`` names and :func:`open_state`
the delivery state beside it; both are typed by the protocols of
:mod:`~siem_plugins.storage.protocols`. The modules, one job each:

- ``protocols``: the contracts (:class:`EventStore`, :class:`StateStore`,
  :class:`SyncLock`) and the values they hand back.
- ``urls``: which database a URL names.
- ``connections``: opening, sharing and replacing connections (SQLite pragmas, psycopg
  reconnects).
- ``migrations``: PostgreSQL's versioned schema, SQLite's scripts.
- ``dialect``: what differs between the two under the shared SQL.
- ``eventstore``: what both event stores share (append, the ingest record, counts).
- ``state``: the state store, its SQL written once for both.
- ``sqlite`` and ``postgres``: each database's event store, dialect, sync locks, and
  state store constructor (:class:`State`, :class:`PgState`).
"""

from __future__ import annotations

from siem_plugins.storage.connections import connect
from siem_plugins.storage.migrations import SCHEMA_VERSION, SchemaError, migrate, schema_version
from siem_plugins.storage.postgres import PgState, PostgresStore
from siem_plugins.storage.protocols import (
    DESTINATIONS,
    NOTIFIER,
    REPLAY,
    REPLAY_JOB_PREFIX,
    SINK,
    DeadLetter,
    EventStore,
    HealthRecord,
    IngestRecord,
    IngestResult,
    Origin,
    Pruned,
    ReplayJob,
    RunRecord,
    StateError,
    StateStore,
    SyncLock,
)
from siem_plugins.storage.sqlite import SQLiteStore, State
from siem_plugins.storage.state import SQLState, worker_name
from siem_plugins.storage.urls import DEFAULT_URL, is_postgres, sqlite_path

__all__ = [
    "DEFAULT_URL",
    "DESTINATIONS",
    "NOTIFIER",
    "REPLAY",
    "REPLAY_JOB_PREFIX",
    "SCHEMA_VERSION",
    "SINK",
    "DeadLetter",
    "EventStore",
    "HealthRecord",
    "IngestRecord",
    "IngestResult",
    "Origin",
    "PgState",
    "PostgresStore",
    "Pruned",
    "ReplayJob",
    "RunRecord",
    "SQLState",
    "SQLiteStore",
    "SchemaError",
    "State",
    "StateError",
    "StateStore",
    "SyncLock",
    "connect",
    "is_postgres",
    "migrate",
    "open_state",
    "open_store",
    "schema_version",
    "sqlite_path",
    "worker_name",
]


def open_store(url: str) -> EventStore:
    """The event store a URL names: ``sqlite:///path.db`` (default) or ``postgresql://...``."""
    if is_postgres(url):
        return PostgresStore(url)
    return SQLiteStore(sqlite_path(url))


def open_state(url: str) -> StateStore:
    """The state store beside the event store a URL names."""
    if is_postgres(url):
        return PgState(url)
    return State(sqlite_path(url))
