"""The storage contracts: what an event store and a state store do, and the values they
hand back. Both the SQLite and the PostgreSQL implementations satisfy them.

The state store keeps one cursor and at most one pending intent per (integration,
destination). The protocol (docs/delivery.md): a sync first *records an intent* — the id
range, the object key, the creation time — then writes. Only when the object is complete
does :meth:`StateStore.complete` advance the cursor and drop the intent, in one
transaction. A crash in between leaves the intent behind, and the next sync replays
exactly it: the same range, the same key, the same bytes. So every event lands in exactly
one object.

Beside the cursors the state store keeps what the delivery needs to stay exclusive and
observable: the *sync lock* of each (integration, destination) — file locks on SQLite,
advisory locks on PostgreSQL — so no two processes ever run the same pass; a log of sync
runs; and the *dead letters*, events a formatter could not format, set aside so that they
never block the events after them.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeAlias

from siem_plugins.events import Canonical
from siem_plugins.kinds import Intent, Source

SINK = "sink"
NOTIFIER = "notifier"
#: Both destinations of an integration, in the order their passes start.
DESTINATIONS = (SINK, NOTIFIER)
#: The pseudo-destination of ``siem-plugins dead-letters replay``: its intents fix which
#: set-aside events a replay object holds (it has no cursor of its own).
REPLAY = "replay"
#: The pseudo-destinations of ``siem-plugins replay`` jobs are ``replay:{job}``: each job
#: has a cursor and an intent of its own, so it never moves the integration's cursors.
REPLAY_JOB_PREFIX = "replay:"


class StateError(RuntimeError):
    """The delivery protocol was broken (an overlapping or missing intent): a bug,
    never papered over."""


# --------------------------------------------------------------------------- values


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


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """What the last passes of one (integration, destination) left: written at the end of
    every pass, in the transaction that closes its run-log row.

    :ivar last_attempt: when the last pass ended (UTC, ISO 8601).
    :ivar last_success: when the last pass that failed nothing ended (None: never).
    :ivar last_error: the last failure's message, one line (kept after a recovery).
    :ivar failures: consecutive failed passes (0 after a success).
    :ivar behind: events of the account after the cursor when the pass ended (counted up
        to a cap: at least this many), None if it could not be counted.
    :ivar oldest: the event time of the oldest of them (canonical), None if none.
    :ivar last_error_code: the last failure's error code, if the destination gave one.
    :ivar failing_since: when the current run of failures began (None: not failing).
    :ivar alert_sent_at: when the admins were told about the current problem (None: not
        told, or told that it is over).
    """

    integration: str
    destination: str
    last_attempt: str
    last_success: str | None
    last_error: str | None
    last_error_at: str | None
    failures: int
    behind: int | None
    oldest: str | None
    last_error_code: str | None = None
    failing_since: str | None = None
    alert_sent_at: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """A ``siem-plugins replay`` job: re-ship the ids ``first_id..last_id`` of an
    integration's account to ``target``, exactly once, without moving its cursors.

    :ivar job: the job's name, unique per integration.
    :ivar target: where to (JSON): ``{"to": NAME}`` (another integration's sink) and/or
        ``{"options": {...}}`` (the integration's own sink with these options changed).
    :ivar since: the event-time window the ids were chosen for (canonical), if one was.
    :ivar created: when the job was made (UTC, ISO 8601).
    :ivar finished: when its last object was written (None: not yet).
    :ivar objects: objects written so far; ``events``: events in them.
    """

    integration: str
    job: str
    account: str
    first_id: int
    last_id: int
    target: str
    since: str | None
    until: str | None
    created: str
    finished: str | None
    objects: int
    events: int

    @property
    def destination(self) -> str:
        """The job's pseudo-destination (its cursor, intent and sync lock)."""
        return REPLAY_JOB_PREFIX + self.job


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One pass in the run log (``siem_sync_run``)."""

    integration: str
    destination: str | None
    worker: str
    started: str
    finished: str | None
    objects: int | None
    events: int | None
    error: str | None


@dataclass(frozen=True)
class IngestRecord:
    """A file a store has stored, kept beside its events (table ``siem_ingest``).

    :ivar sha256: hex SHA-256 of the file's bytes, as read.
    :ivar source: the file's name as given (``<stdin>`` for standard input).
    :ivar lines: lines read, rejected and blank ones included.
    :ivar stored: events stored.
    :ivar stored_at: UTC, ``YYYY-MM-DDTHH:MM:SSZ``.
    """

    account: str
    sha256: str
    source: str
    lines: int
    stored: int
    first_id: int
    last_id: int
    stored_at: str


@dataclass(frozen=True)
class IngestResult:
    """What one :meth:`EventStore.append` stored.

    :ivar already: set when the same file was stored before for the account: the earlier
        storing. Then nothing was stored now (``accepted`` is 0).
    """

    accepted: int
    first_id: int | None
    last_id: int | None
    already: IngestRecord | None = None


@dataclass(frozen=True, slots=True)
class Pruned:
    """Events an :meth:`EventStore.prune` deleted (or :meth:`EventStore.prunable` would
    delete): how many, and the lowest and highest of their ids (``None`` when none)."""

    count: int = 0
    first_id: int | None = None
    last_id: int | None = None

    def __add__(self, other: Pruned) -> Pruned:
        firsts = [i for i in (self.first_id, other.first_id) if i is not None]
        lasts = [i for i in (self.last_id, other.last_id) if i is not None]
        return Pruned(
            self.count + other.count,
            min(firsts) if firsts else None,
            max(lasts) if lasts else None,
        )


#: Inclusive id ranges ``(first, last)`` that a prune must leave alone (dead letters,
#: pending intents).
Keep: TypeAlias = Collection[tuple[int, int]]


class Origin(Protocol):
    """Where a stream of records came from, for the store's per-file record. Read after
    the records are exhausted (:class:`~siem_plugins.ingest.NdjsonInput` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def lines(self) -> int: ...

    @property
    def sha256(self) -> str: ...


# --------------------------------------------------------------------------- stores


class EventStore(Source, Protocol):
    """The device/account event store: a :class:`~siem_plugins.kinds.Source` (whose
    ``read_raw`` fast path is always there) that ``siem-plugins ingest`` writes. Ids only
    grow, and a reader never sees id N+1 before id N."""

    def read_raw(
        self, account: str, first_id: int, last_id: int, *, batch_size: int = 5000
    ) -> Iterator[list[bytes]]:
        """``[e.raw for e in batch]`` for each batch ``read`` would yield."""
        ...

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
        them or, on any error (also one raised by ``records``), none. ``chunk`` rows are
        written at a time, so memory stays bounded however many records come.

        With ``origin`` (read once ``records`` is exhausted) the file is recorded in
        ``siem_ingest`` in the same transaction; if the account already has a file with
        the same SHA-256, everything is rolled back and the result's ``already`` says
        when it was stored, unless ``force``."""
        ...

    def ingested(self, account: str, sha256: str) -> IngestRecord | None:
        """The record of a stored file (by its SHA-256), if the account has one."""
        ...

    def count(self, account: str | None = None) -> int:
        """How many events are stored (for one account)."""
        ...

    def last_id(self, account: str | None = None) -> int:
        """The highest stored id (of one account); 0 if there is none."""
        ...

    def accounts(self) -> list[str]:
        """Every account that has stored events, in order."""
        ...

    def prunable(
        self, account: str, max_id: int, *, older_than: str | None = None, keep: Keep = ()
    ) -> Pruned:
        """What :meth:`prune` with the same arguments would delete now (nothing is)."""
        ...

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
        """Delete the account's events with ``id <= max_id``, except those in a ``keep``
        range; with ``older_than`` (a canonical UTC timestamp,
        ``YYYY-MM-DDTHH:MM:SS.mmmZ``) only those whose ``ts`` is before it.

        At most ``batch`` events per transaction, ``pause`` seconds between two
        transactions that deleted something, so writers are never held up for long; it
        returns early (between two batches) once ``stop`` is set. Which ids are safe to
        delete is the caller's business (:mod:`siem_plugins.retention`)."""
        ...


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
    """Where cursors, intents, sync locks, the run log and dead letters live: on SQLite
    (:class:`~siem_plugins.storage.State`) or PostgreSQL
    (:class:`~siem_plugins.storage.PgState`)."""

    def cursor(self, integration: str, destination: str) -> int: ...
    def cursors(self) -> dict[tuple[str, str], int]: ...
    def pending(self, integration: str, destination: str) -> Intent | None: ...

    def record(self, intent: Intent) -> None:
        """Record a new intent. There must be no pending one, and it must start after
        the cursor (both checked: a violation is a :class:`StateError`)."""
        ...

    def discard(self, intent: Intent) -> None:
        """Drop a pending intent without moving the cursor (its config changed)."""
        ...

    def complete(self, intent: Intent) -> None:
        """The intent's object is complete: advance the cursor, drop the intent."""
        ...

    def try_lock(self, integration: str, destination: str) -> SyncLock | None:
        """The (integration, destination)'s sync lock if no one else holds it, else
        ``None``. Exclusive across threads and processes (and, on PostgreSQL, hosts)."""
        ...

    def run_started(self, integration: str, destination: str, worker: str) -> int: ...
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
        """Close the run-log row and update the destination's health record, in one
        transaction (``error`` None: the pass succeeded)."""
        ...

    def set_alert(self, integration: str, destination: str, *, sent: bool) -> None:
        """Note that the admins were told about the destination's problem (``sent``), or
        that they were told it is over."""
        ...

    def health(self, integration: str | None = None) -> list[HealthRecord]:
        """The health records (of one integration), by integration and destination."""
        ...

    def recent_runs(self, integration: str, limit: int = 10) -> list[RunRecord]:
        """The integration's last passes, newest first."""
        ...

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

    def has_cursor(self, integration: str, destination: str) -> bool:
        """Whether the destination has a cursor (it has shipped, or was started)."""
        ...

    def start_cursors(self, integration: str, cursors: Mapping[str, int]) -> dict[str, int]:
        """Set the cursors of destinations that have none yet (an integration's first
        sync with ``start_at``), in one transaction; the cursors in force afterwards."""
        ...

    def create_replay(self, job: ReplayJob) -> None:
        """Record a new replay job and set its cursor to ``first_id - 1``, in one
        transaction (:class:`StateError` if the integration has a job of that name)."""
        ...

    def replay_jobs(self, integration: str | None = None) -> list[ReplayJob]:
        """The replay jobs (of one integration), oldest first."""
        ...

    def replay_progress(self, job: ReplayJob, intent: Intent, events: int) -> None:
        """A replay job's object is complete: advance its cursor, drop the intent and
        count the object, in one transaction."""
        ...

    def finish_replay(self, job: ReplayJob) -> None:
        """A replay job has shipped its whole range: note when, and drop its cursor."""
        ...

    def ping(self) -> None:
        """Raise unless the store answers a trivial read of its tables (health checks)."""
        ...

    def close(self) -> None: ...
