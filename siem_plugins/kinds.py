"""The plugin contract: the four kinds of component, the values they see, and the one
table of kinds the host is built from.

A plugin registers a component by returning a *descriptor* (:class:`SourceSpec`,
:class:`FormatterSpec`, :class:`SinkSpec`, :class:`NotifierSpec`) from the matching
registration hook. The descriptor's ``factory`` builds the component from an
:class:`~siem_plugins.Options` when a config names it.

Everything the host reads from a component is declared here, on its protocol, with the
meaning of each member, including the optional ones (``Formatter.format_raw``,
``Source.read_raw``, ``Notifier.max_listed``, ``Sink.stream``): the host never probes a
component with ``getattr``. The base classes (:class:`FormatterBase`, :class:`SinkBase`,
:class:`NotifierBase`, :class:`SourceBase`) give every optional member its default, so a
component that subclasses one states only what differs. Components need not subclass
anything: the host checks the protocol (``isinstance``) when it builds one.

Every name here that a plugin author touches is exported by :mod:`siem_plugins`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeGuard, TypeVar, runtime_checkable

from siem_plugins.events import Event
from siem_plugins.options import Options

#: How many of a digest's selected events a notifier lists, unless it says otherwise.
DEFAULT_MAX_LISTED = 200

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Range:
    """A contiguous run of one account's events, fixed before anything is written.

    :ivar first_id: the first event's store id.
    :ivar last_id: the last event's store id (ids between may belong to other accounts).
    :ivar count: how many of the account's events the range holds.
    """

    first_id: int
    last_id: int
    count: int


@dataclass(frozen=True, slots=True)
class Intent:
    """A range fixed and recorded before anything is written, replayed unchanged after a
    crash (docs/delivery.md). Passed to :func:`~siem_plugins.hookspecs.siem_sync_started`.

    :ivar integration: the integration's name.
    :ivar destination: ``"sink"``, ``"notifier"``, or ``"replay"`` (dead letters shipped
        again by ``siem-plugins dead-letters replay``).
    :ivar key: the object key (sink) or the digest's Message-ID seed (notifier).
    :ivar created: UTC creation time, ``YYYY-MM-DDTHHMMSSZ`` (the object key's form).
    :ivar fingerprint: what the key depends on (account, format, compression, the sink's
        :meth:`~Sink.identity`); an intent whose fingerprint no longer matches the config
        is planned again.
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
    #: A ``siem-plugins dead-letters replay`` object: it holds only events other objects
    #: of its id range left out, so its range overlaps theirs on purpose.
    replay: bool = False
    #: The ``siem-plugins replay`` job that wrote this object (a second copy of events
    #: other objects hold: its range overlaps theirs on purpose); empty for the rest.
    replay_job: str = ""

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
        if self.replay:
            metadata["siem-replay"] = "1"
        if self.replay_job:
            metadata["siem-replay-job"] = self.replay_job
        return metadata


@dataclass(frozen=True, slots=True)
class ObjectReceipt:
    """What a sink reports after an object is complete.

    :ivar location: where the object is, for people: ``s3://bucket/key``, a path, a URL.
    :ivar size: bytes written (after compression).
    """

    key: str
    location: str
    size: int
    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Digest:
    """One notification: the selected events of one range of one integration.

    ``events`` holds at most the notifier's :attr:`~Notifier.max_listed` events (the
    first ones); ``total`` and ``counts`` cover the whole range. ``message_id`` is stable
    for the range, so a replayed notification can be recognised as the same one.
    """

    integration: str
    account: str
    first_id: int
    last_id: int
    total: int
    counts: dict[str, int]
    events: Sequence[Event]
    message_id: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A delivery problem to tell an integration's admins about (or its end).

    Sent once when an integration's sink has failed for ``alert_after`` without a break,
    and once more when it works again (``recovered``): never one message per failure.

    :ivar destination: ``"sink"`` (the bucket), the destination that fails.
    :ivar where: where it writes, for people (``s3://bucket/prefix/``).
    :ivar since: when the failures began, or (``recovered``) when it worked again (UTC,
        ISO 8601).
    :ivar failures: how many passes in a row failed.
    :ivar error: the last failure, one line, no secrets.
    :ivar code: its error code when the destination gave one (``AccessDenied``).
    :ivar hint: what usually fixes it, for people.
    :ivar waiting: events waiting to be shipped (at least this many), none of them lost.
    :ivar recovered: the problem is over (then ``error`` is the last one there was).
    """

    integration: str
    account: str
    destination: str
    where: str
    since: str
    failures: int
    error: str
    code: str | None
    hint: str
    waiting: int | None
    recovered: bool = False


# --------------------------------------------------------------------------- errors


class DestinationError(RuntimeError):
    """A sink or notifier failed. The message says where and why (never a secret).

    :ivar permanent: ``True`` when retrying cannot help until the configuration or the
        destination changes (access denied, a missing bucket, bad credentials, a 5xx SMTP
        reply, an untrusted certificate). The pipeline says so in its error message; it
        retries every cycle either way, so a fixed destination is picked up at once.
    :ivar code: the destination's error code when it gave one (``AccessDenied``, ``550``).
    """

    def __init__(
        self, message: str, *, permanent: bool = False, code: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class SinkError(DestinationError):
    """A sink could not write an object. ``location`` names the object or the sink."""

    def __init__(
        self,
        message: str,
        *,
        location: str = "",
        code: str | None = None,
        permanent: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent, code=code)
        self.location = location
        self.status = status


class NotifierError(DestinationError):
    """A digest could not be delivered (or a probe failed)."""


# --------------------------------------------------------------------------- components


class RawReader(Protocol):
    """A source's fast path: the stored canonical JSON of each event, without building
    :class:`Event` objects (see :attr:`Source.read_raw`)."""

    def __call__(
        self, account: str, first_id: int, last_id: int, *, batch_size: int = 5000
    ) -> Iterator[list[bytes]]: ...


#: A formatter's fast path (see :attr:`Formatter.format_raw`).
RawFormat = Callable[[Sequence[bytes]], bytes]


@runtime_checkable
class Source(Protocol):
    """Yields an account's events in ascending id order."""

    def plan(self, account: str, after_id: int, *, max_events: int, max_bytes: int) -> Range | None:
        """The next range after ``after_id``: at least one event, at most ``max_events``
        and (about) ``max_bytes`` of canonical JSON. ``None`` if nothing is new.

        ``read`` must later return exactly ``count`` events for it, and an id must never
        become visible after a larger one was planned."""
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
        """The events with ``first_id <= id <= last_id``, ascending, in batches of at most
        ``batch_size``. With ``log_types``, only events of those log types."""
        ...

    @property
    def read_raw(self) -> RawReader | None:
        """Optional fast path, or ``None``: ``read_raw(account, first_id, last_id, *,
        batch_size)`` yields ``[e.raw for e in batch]`` for each batch :meth:`read` would
        yield. The pipeline iterates it in a background thread (reading ahead while it
        compresses and uploads): each call must work from any thread and leave nothing
        behind in it (open its own connection, or borrow one from a pool)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Formatter(Protocol):
    """Turns batches of events into bytes, one record per line.

    Deterministic (same events, same bytes) and independent of batching: the pipeline
    formats ``batch_size`` events at a time and concatenates the results, and formats
    one event at a time to find an event it cannot format (which is then set aside as a
    dead letter while the rest is shipped)."""

    @property
    def extension(self) -> str:
        """The file extension without a dot, e.g. ``json`` or ``log``."""
        ...

    @property
    def content_type(self) -> str:
        """The MIME type of the (uncompressed) output."""
        ...

    def format(self, events: Sequence[Event]) -> bytes:
        """The batch's bytes: one record per event, each ending in ``\\n``; ``b""`` for an
        empty batch. Raise for an event that cannot be formatted."""
        ...

    @property
    def format_raw(self) -> RawFormat | None:
        """Optional fast path, or ``None``: ``format_raw(raws)`` takes the events'
        canonical JSON (``event.raw``) and returns exactly what :meth:`format` returns for
        them. Only for output that depends on nothing but ``event.raw``. When the source
        has :attr:`Source.read_raw` too, the pipeline makes no :class:`Event` objects.
        A subclass that changes :meth:`format` must override this too or set it to
        ``None``."""
        ...


class ObjectWriter:
    """One object being written. All or nothing: :meth:`commit` publishes it,
    :meth:`abort` leaves no trace. As a context manager, an exception inside the block
    aborts; a clean exit does not commit by itself: call :meth:`commit` (whose failure
    aborts too).

    :meth:`write` gets the object's bytes as they are produced: compressed (gzip, unless
    the integration says ``compression = "none"``; ``meta.content_encoding`` tells), in
    chunks that do not end on line or record boundaries.
    """

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> ObjectReceipt:
        raise NotImplementedError

    def abort(self) -> None:
        """Abandon the object. Idempotent, and never raises: it runs while another error
        is being handled."""
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
    """Writes whole objects under keys.

    Two kinds of destination keep this contract differently (docs/plugins.md):

    * an **object store** (``stream = False``: S3, a folder): an object is all or
      nothing, and writing the same key again replaces it, so a replayed intent leaves
      exactly one object: exactly once;
    * a **stream** (``stream = True``: syslog over TCP, an HTTP event collector, Kafka):
      what was sent cannot be taken back, so a replayed intent sends the same lines
      again: at least once, each line whole.
    """

    @property
    def stream(self) -> bool:
        """``True`` for a stream destination (at least once), ``False`` for an object
        store (exactly once). Shown by ``siem-plugins plugins``; the conformance suites
        check the matching contract."""
        ...

    def identity(self) -> str:
        """Where objects go, as a stable string (e.g. ``s3://bucket/prefix/`` on an
        endpoint). Two sinks with the same identity write to the same place: the
        config refuses two integrations that would write the same keys, and a pending
        intent whose sink identity changed is planned again. Never reword it casually."""
        ...

    def describe(self) -> str:
        """Where objects go, for people (messages, logs). Free text."""
        ...

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        """Start an object at ``key`` (relative to the sink's own prefix)."""
        ...

    def probe(self) -> None:
        """Check the destination works (write and delete a probe object). Raise on
        failure; used by ``siem-plugins check``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Notifier(Protocol):
    """Tells people about selected events: one digest per range."""

    @property
    def max_listed(self) -> int:
        """How many events the pipeline puts in ``digest.events`` (the first ones of the
        range; ``total`` and ``counts`` always cover all). Default
        :data:`DEFAULT_MAX_LISTED`."""
        ...

    def describe(self) -> str:
        """Where digests go, for people (e.g. ``smtp://host:587``)."""
        ...

    @property
    def notify_problem(self) -> Callable[[Problem], None] | None:
        """Optional, or ``None``: ``notify_problem(problem)`` tells the admins that the
        integration's bucket has been failing (or works again). Called from the notifier
        pass, at most once per change of state; raise if it could not be delivered (it is
        tried again next pass)."""
        ...

    def notify(self, digest: Digest) -> None:
        """Deliver the digest; raise (ideally :class:`NotifierError`) if it could not be
        delivered. ``digest.message_id`` is stable for a range: pass it on, so that a
        receiver can drop a digest that is delivered twice."""
        ...

    def probe(self) -> None:
        """Check the destination is reachable (connect, log in) without notifying anyone.
        Raise on failure."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- base classes


class SourceBase:
    """Defaults for a :class:`Source`: no raw fast path, nothing to close."""

    read_raw: RawReader | None = None

    def close(self) -> None:
        """Nothing to release."""


class FormatterBase:
    """Defaults for a :class:`Formatter`: no raw fast path. Subclasses set
    ``extension`` and ``content_type`` and define ``format``."""

    extension: str
    content_type: str
    format_raw: RawFormat | None = None


class SinkBase:
    """Defaults for a :class:`Sink`: an object store (``stream = False``) with nothing
    to close; ``describe()`` is the identity unless overridden."""

    stream: bool = False

    def identity(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return self.identity()

    def close(self) -> None:
        """Nothing to release."""


class NotifierBase:
    """Defaults for a :class:`Notifier`: :data:`DEFAULT_MAX_LISTED` events listed, no
    problem messages, nothing to close."""

    max_listed: int = DEFAULT_MAX_LISTED
    notify_problem: Callable[[Problem], None] | None = None

    def close(self) -> None:
        """Nothing to release."""


# --------------------------------------------------------------------------- descriptors

C = TypeVar("C")


@dataclass(frozen=True)
class ComponentSpec(Generic[C]):
    """What a registration hook returns for one component.

    :ivar name: what a config writes (``type = "s3"``); unique per kind across plugins.
    :ivar factory: builds the component from its config table. Called once per
        integration that uses it, at start-up: validate everything and raise
        ``options.error(...)``; do not connect anywhere (``probe()`` is for that).
    :ivar description: one line, shown by ``siem-plugins plugins``.
    """

    name: str
    factory: Callable[[Options], C]
    description: str = ""


@dataclass(frozen=True)
class SourceSpec(ComponentSpec[Source]):
    """A source plugin, built from the ``[store]`` table (minus ``type``, ``log_types``)."""


@dataclass(frozen=True)
class FormatterSpec(ComponentSpec[Formatter]):
    """A formatter plugin, built from an integration's ``format`` table."""


@dataclass(frozen=True)
class SinkSpec(ComponentSpec[Sink]):
    """A sink plugin, built from an integration's ``sink`` table.

    :ivar section: a top-level config table whose keys serve as defaults under the sink's
        own (``s3`` for the built-in ``s3`` sink); declaring it also makes it legal.
    """

    section: str | None = None


@dataclass(frozen=True)
class NotifierSpec(ComponentSpec[Notifier]):
    """A notifier plugin, built from an integration's ``notify`` table (minus ``type``
    and ``events``), layered over the top-level ``section`` (``smtp`` for email)."""

    section: str | None = None


Spec = SourceSpec | FormatterSpec | SinkSpec | NotifierSpec


# --------------------------------------------------------------------------- the kinds


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One kind of component: its name, registration hook, descriptor and contract."""

    name: str
    hook: str
    spec: type[ComponentSpec[C]]
    accepts: Callable[[object], TypeGuard[C]]
    #: The component's contract, for messages ("which is not a Sink").
    contract: str
    #: The members the contract declares (what a component must have).
    members: tuple[str, ...]


def _is_source(obj: object) -> TypeGuard[Source]:
    return isinstance(obj, Source)


def _is_formatter(obj: object) -> TypeGuard[Formatter]:
    return isinstance(obj, Formatter)


def _is_sink(obj: object) -> TypeGuard[Sink]:
    return isinstance(obj, Sink)


def _is_notifier(obj: object) -> TypeGuard[Notifier]:
    return isinstance(obj, Notifier)


def _members(protocol: type) -> tuple[str, ...]:
    return tuple(sorted(n for n in vars(protocol) if not n.startswith("_")))


SOURCE: Kind[Source] = Kind(
    "source", "siem_register_sources", SourceSpec, _is_source, "Source", _members(Source)
)
FORMATTER: Kind[Formatter] = Kind(
    "formatter",
    "siem_register_formatters",
    FormatterSpec,
    _is_formatter,
    "Formatter",
    _members(Formatter),
)
SINK: Kind[Sink] = Kind("sink", "siem_register_sinks", SinkSpec, _is_sink, "Sink", _members(Sink))
NOTIFIER: Kind[Notifier] = Kind(
    "notifier",
    "siem_register_notifiers",
    NotifierSpec,
    _is_notifier,
    "Notifier",
    _members(Notifier),
)

#: Every kind, in the order the host registers and lists them. The one table of kinds.
KINDS: tuple[Kind[Source], Kind[Formatter], Kind[Sink], Kind[Notifier]] = (
    SOURCE,
    FORMATTER,
    SINK,
    NOTIFIER,
)
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)


def kind_named(name: str) -> Kind[Source] | Kind[Formatter] | Kind[Sink] | Kind[Notifier]:
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"unknown kind {name!r}; kinds: {', '.join(KIND_NAMES)}")


def section_of(spec: ComponentSpec[Any]) -> str | None:
    """The shared config section a descriptor declares, if any."""
    if isinstance(spec, SinkSpec | NotifierSpec):
        return spec.section
    return None
