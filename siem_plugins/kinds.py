"""The four plugin kinds: what a plugin registers and what the host expects back.

A plugin registers a component by returning a *descriptor* (``SourceSpec``,
``FormatterSpec``, ``SinkSpec``, ``NotifierSpec``) from the matching registration hook.
The descriptor's ``factory`` builds the component from an :class:`~siem_plugins.Options`
when a config names it. The protocols below are the components' contracts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from siem_plugins.events import Event
from siem_plugins.options import Options

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Range:
    """A contiguous run of one account's events, fixed before anything is written."""

    first_id: int
    last_id: int
    count: int


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


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What a sink is told about the object it writes (also stored as object metadata)."""

    integration: str
    account: str
    first_id: int
    last_id: int
    count: int  # events in the object
    format: str
    content_type: str
    content_encoding: str | None  # "gzip" or None
    #: Events of the id range left out because they could not be formatted (dead
    #: letters): ``count`` + ``set_aside`` events of the account are in the range.
    set_aside: int = 0

    def as_metadata(self) -> dict[str, str]:
        """User metadata for the object (S3 ``x-amz-meta-*``)."""
        metadata = {
            "siem-integration": self.integration,
            "siem-account": self.account,
            "siem-first-id": str(self.first_id),
            "siem-last-id": str(self.last_id),
            "siem-count": str(self.count),
            "siem-format": self.format,
        }
        if self.set_aside:
            metadata["siem-set-aside"] = str(self.set_aside)
        return metadata


@dataclass(frozen=True, slots=True)
class ObjectReceipt:
    """What a sink reports after an object is complete."""

    key: str
    location: str  # e.g. s3://bucket/key or a file path
    size: int  # bytes written (after compression)
    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Digest:
    """One notification: the selected events of one range of one integration.

    ``events`` holds at most ``listed_limit`` events (the first ones); ``total`` and
    ``counts`` cover the whole range. ``message_id`` is stable for the range, so a
    replayed notification can be recognised as the same one.
    """

    integration: str
    account: str
    first_id: int
    last_id: int
    total: int
    counts: dict[str, int]
    events: Sequence[Event]
    message_id: str


# --------------------------------------------------------------------------- components


@runtime_checkable
class Source(Protocol):
    """Yields an account's events in ascending id order."""

    def plan(self, account: str, after_id: int, *, max_events: int, max_bytes: int) -> Range | None:
        """The next range after ``after_id``: at most ``max_events`` events and (about)
        ``max_bytes`` of canonical JSON, at least one event. ``None`` if nothing is new."""
        ...

    def read(
        self,
        account: str,
        first_id: int,
        last_id: int,
        *,
        log_types: Collection[str] | None = None,
        batch_size: int = 5000,
    ) -> Iterator[list[Event]]:
        """The events with ``first_id <= id <= last_id``, ascending, in batches.
        With ``log_types``, only events of those log types."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Formatter(Protocol):
    """Turns batches of events into bytes, one record per line. Deterministic."""

    #: File extension without a dot, e.g. ``json`` or ``log``.
    extension: str
    #: MIME type of the (uncompressed) output.
    content_type: str

    def format(self, events: Sequence[Event]) -> bytes:
        """The batch's bytes: one record per event, each ending in ``\\n``."""
        ...


@runtime_checkable
class RawSource(Protocol):
    """Optional fast path of a :class:`Source`: the stored canonical JSON of each event,
    without building :class:`Event` objects."""

    def read_raw(
        self, account: str, first_id: int, last_id: int, *, batch_size: int = 5000
    ) -> Iterator[list[bytes]]:
        """``[e.raw for e in batch]`` for each batch :meth:`Source.read` would yield.

        The pipeline iterates this in a background thread (reading ahead while it
        compresses and uploads): each call must work from any thread and leave nothing
        behind in it (e.g. open its own connection, or borrow one from a pool)."""
        ...


@runtime_checkable
class RawFormatter(Protocol):
    """Optional fast path of a :class:`Formatter` whose output depends on nothing but each
    event's canonical JSON (``Event.raw``). When the source is a :class:`RawSource`, the
    pipeline calls ``format_raw`` instead of ``format`` and makes no Event objects."""

    def format_raw(self, raws: Sequence[bytes]) -> bytes:
        """The same bytes as :meth:`Formatter.format` of the events these came from."""
        ...


class ObjectWriter:
    """One object being written. All or nothing: :meth:`commit` publishes it,
    :meth:`abort` leaves no trace. As a context manager, an exception inside the block
    aborts; a clean exit does not commit by itself: call :meth:`commit` (whose failure
    aborts too)."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> ObjectReceipt:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


@runtime_checkable
class Sink(Protocol):
    """Writes whole objects under keys."""

    def describe(self) -> str:
        """Where objects go, for messages: ``s3://bucket/prefix``, a folder, ..."""
        ...

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        """Start an object at ``key`` (relative to the sink's prefix). Writing the same
        key again replaces the object."""
        ...

    def probe(self) -> None:
        """Check the destination works: write and delete a probe object. Raises on failure."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Notifier(Protocol):
    """Tells people about selected events: one digest per sync."""

    def notify(self, digest: Digest) -> None:
        """Deliver the digest; raise if it could not be delivered."""
        ...

    def probe(self) -> None:
        """Check the destination is reachable (e.g. connect and log in). Raises on failure."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class SourceSpec:
    """A source plugin. ``factory(options)`` builds it from the ``[store]`` table."""

    name: str
    factory: Callable[[Options], Source]
    description: str = ""


@dataclass(frozen=True)
class FormatterSpec:
    """A formatter plugin. ``factory(options)`` builds it from an integration's ``format``."""

    name: str
    factory: Callable[[Options], Formatter]
    description: str = ""


@dataclass(frozen=True)
class SinkSpec:
    """A sink plugin. ``factory(options)`` builds it from an integration's ``sink`` table.

    ``section`` names a top-level config table whose keys serve as defaults (e.g. ``s3``).
    """

    name: str
    factory: Callable[[Options], Sink]
    description: str = ""
    section: str | None = None


@dataclass(frozen=True)
class NotifierSpec:
    """A notifier plugin. ``factory(options)`` builds it from an integration's ``notify``
    table, layered over the top-level ``section`` (``smtp`` for email)."""

    name: str
    factory: Callable[[Options], Notifier]
    description: str = ""
    section: str | None = None


Spec = SourceSpec | FormatterSpec | SinkSpec | NotifierSpec
KIND_OF: dict[type, str] = {
    SourceSpec: "source",
    FormatterSpec: "formatter",
    SinkSpec: "sink",
    NotifierSpec: "notifier",
}
