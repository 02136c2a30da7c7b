"""Conformance suites for plugin authors: subclass one in your test module, add fixtures.

Each suite is a pytest class whose ``test_*`` methods check one plugin kind's contract
(:mod:`siem_plugins.kinds`) the way the pipeline relies on it. The base classes' names
do not start with ``Test``, so pytest only collects your subclasses::

    from siem_plugins.testing import SinkConformance

    class TestMySink(SinkConformance):
        @pytest.fixture
        def sink(self, tmp_path):
            return MySink(tmp_path)

        @pytest.fixture
        def read_object(self, tmp_path):
            return lambda key: ...  # the object's bytes, or None if there is none

What each suite needs from you (fixtures, all function-scoped; each test must start
from an empty destination):

* :class:`SinkConformance` (an object store, ``stream = False``): ``sink``,
  ``read_object``; optionally ``list_keys`` (every key under the destination, temporary
  or in-progress ones included) and ``read_metadata`` (the user metadata stored with an
  object).
* :class:`StreamSinkConformance` (a stream, ``stream = True``): ``sink``, ``received``
  (everything the destination got so far, as bytes).
* :class:`FormatterConformance`: ``formatter``.
* :class:`NotifierConformance`: ``notifier``, ``delivered`` (what arrived so far).
* :class:`SourceConformance`: ``source``, ``append`` (store events for an account,
  returning their ids).

Class attributes tune a suite (e.g. ``large_object_size``); methods such as
:meth:`FormatterConformance.decode_line` are hooks to override when your plugin encodes
differently. The events come from :mod:`siem_plugins.demo` and a fixed set of hostile
ones (control characters, CJK, emoji, combining marks, header-injection attempts),
validated by :func:`siem_plugins.events.canonicalize` exactly as ingest does.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

from siem_plugins.demo import generate
from siem_plugins.events import Event, canonicalize
from siem_plugins.keys import object_key
from siem_plugins.kinds import (
    Digest,
    Formatter,
    Notifier,
    ObjectMeta,
    ObjectReceipt,
    Range,
    Sink,
    Source,
)

__all__ = [
    "CONTROL_TEXTS",
    "INJECTION_TEXTS",
    "UNICODE_TEXTS",
    "FormatterConformance",
    "NotifierConformance",
    "SinkConformance",
    "SourceConformance",
    "StreamSinkConformance",
    "digest_of",
    "events_from_dicts",
    "hostile_event_dicts",
    "sample_events",
]

MiB = 1024 * 1024

#: Text a formatter must carry through unchanged: CJK, an emoji ZWJ sequence, an astral
#: character, combining marks (which must not be normalised away), Greek and Hebrew.
UNICODE_TEXTS: tuple[str, ...] = (
    "設備名 デバイス",
    "👩\u200d💻 locked 🔒",
    "clef \U0001d11e astral",
    "Cafe\u0301 Zoe\u0308 n\u0303",
    "Ωμέγα",
    "שלום",
)

#: Field text that must never start a new line. Every one is accepted at ingest: event
#: text is never refused for its characters, so NUL, ESC, VT, FF, the C1 controls (NEL)
#: and U+2028/2029 reach formatters as they are (the canonical JSON escapes them).
CONTROL_TEXTS: tuple[str, ...] = (
    "before\nafter",
    "before\rafter",
    "before\r\nafter",
    "before\u2028after",
    "before\u2029after",
    "before\tafter",
    "before\x85after",
    "before\n\n\nafter",
    "before\x00after",
    "before\x0bafter",
    "before\x0cafter",
    "before\x1cafter",
    "before\x1b[31mafter",
    "before\x7fafter",
)

#: Event text trying to add mail headers, or lines that look like them.
INJECTION_TEXTS: tuple[str, ...] = (
    "Laptop\r\nBcc: evil@example.com",
    "Laptop\nBcc: evil@example.com",
    "x\nSubject: x",
    "x\r\nSubject: x\r\n\r\nforged body",
    "Laptop\rBcc: evil@example.com",
    "x\u2028Bcc: evil@example.com",
)

_TS = "2022-07-15T08:55:12.279Z"


# --------------------------------------------------------------------------- events


def events_from_dicts(
    dicts: Iterable[Mapping[str, Any]], *, account: str = "acme", first_id: int = 1
) -> list[Event]:
    """Validate event dicts as ingest does and number them as a store would."""
    out = []
    for i, obj in enumerate(dicts, first_id):
        c = canonicalize(obj)
        out.append(Event(i, account, c.type, c.log_type, c.timestamp, c.raw))
    return out


def sample_events(
    n: int, *, seed: int = 1, account: str = "acme", first_id: int = 1
) -> list[Event]:
    """``n`` realistic Device/Account events (``siem_plugins.demo``), ids from ``first_id``."""
    return events_from_dicts(generate(n, seed=seed), account=account, first_id=first_id)


def _device(text: str, log_type: str = "exempt_all", **extra: Any) -> dict[str, Any]:
    return {
        "log_type": log_type,
        "device_name": text,
        "device_id": "dev-0001",
        "last_seen": _TS,
        "device_group": text,
        "details": text,
        "type": "Device",
        "device_username": text,
        "timestamp": _TS,
        **extra,
    }


def _account(text: str, log_type: str = "config", **extra: Any) -> dict[str, Any]:
    return {
        "log_type": log_type,
        "details": text,
        "admin_name": text,
        "type": "Account",
        "event": text,
        "admin_email": "admin@example.com",
        "timestamp": _TS,
        **extra,
    }


def hostile_event_dicts(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Each text in every free-text field of a Device and of an Account event, and in an
    unknown (nested) field, which the store keeps after the known ones."""
    out: list[dict[str, Any]] = []
    for text in texts:
        out.append(_device(text))
        out.append(_account(text, nested=[text, {"k": text}]))
    return out


def digest_of(
    events: Sequence[Event], *, integration: str = "conformance", listed: int | None = None
) -> Digest:
    """The digest the pipeline would build for ``events`` (all selected)."""
    counts = Counter(e.log_type for e in events)
    first, last = events[0].id, events[-1].id
    return Digest(
        integration=integration,
        account=events[0].account,
        first_id=first,
        last_id=last,
        total=len(events),
        counts=dict(sorted(counts.items())),
        events=tuple(events[:listed] if listed is not None else events),
        message_id=f"siem.{integration}.{first:020d}-{last:020d}@siem-plugins",
    )


def _ndjson(events: Sequence[Event]) -> bytes:
    return b"".join(e.raw + b"\n" for e in events)


# --------------------------------------------------------------------------- sinks


ReadObject = Callable[[str], bytes | None]
ListKeys = Callable[[], list[str]]
ReadMetadata = Callable[[str], Mapping[str, str] | None]


class SinkConformance:
    """The :class:`~siem_plugins.kinds.Sink` contract: whole objects under keys.

    Fixtures to provide: ``sink`` and ``read_object`` (``key -> bytes | None``, the
    committed object relative to the sink's prefix). Optional: ``list_keys`` (``() ->
    list[str]``: every key in the destination, temporary files and unfinished uploads
    included, so leftovers are caught) and ``read_metadata`` (``key -> mapping``).
    """

    #: Size of the multi-chunk object; raise it above your sink's part/buffer size.
    large_object_size: int = 3 * MiB

    @pytest.fixture
    def sink(self) -> Sink:
        raise NotImplementedError("define a `sink` fixture in your SinkConformance subclass")

    @pytest.fixture
    def read_object(self) -> ReadObject:
        raise NotImplementedError(
            "define a `read_object` fixture returning a function key -> bytes | None"
        )

    @pytest.fixture
    def list_keys(self) -> ListKeys | None:
        """Override to check that nothing but the committed objects is left behind."""
        return None

    @pytest.fixture
    def read_metadata(self) -> ReadMetadata | None:
        """Override when the sink stores :meth:`ObjectMeta.as_metadata` with objects."""
        return None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def meta(count: int = 5, *, first_id: int = 1, fmt: str = "json") -> ObjectMeta:
        return ObjectMeta(
            integration="conformance",
            account="acme",
            first_id=first_id,
            last_id=first_id + count - 1,
            count=count,
            format=fmt,
            content_type="application/x-ndjson",
            content_encoding=None,
        )

    @staticmethod
    def key(first_id: int = 1, last_id: int = 5, ext: str = "json") -> str:
        # A real pipeline key: account/date folders, so sinks meet the slashes they will.
        return object_key("acme", "2022-07-15T085512Z", first_id, last_id, ext)

    def write(
        self, sink: Sink, key: str, meta: ObjectMeta, chunks: Iterable[bytes]
    ) -> ObjectReceipt:
        with sink.open(key, meta) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    # ------------------------------------------------------------------ tests

    def test_commit_publishes_exactly_the_bytes_written(
        self, sink: Sink, read_object: ReadObject, list_keys: ListKeys | None
    ) -> None:
        events = sample_events(5)
        chunks = [_ndjson(events[:2]), _ndjson(events[2:])]
        key, meta = self.key(), self.meta()
        receipt = self.write(sink, key, meta, chunks)
        assert read_object(key) == b"".join(chunks)
        assert receipt.key == key
        assert receipt.size == sum(map(len, chunks))
        assert receipt.meta == meta
        assert isinstance(receipt.location, str) and receipt.location
        if list_keys is not None:
            assert list_keys() == [key]

    def test_nothing_is_visible_before_commit(self, sink: Sink, read_object: ReadObject) -> None:
        key = self.key()
        with sink.open(key, self.meta()) as writer:
            writer.write(_ndjson(sample_events(5)))
            assert read_object(key) is None, "a partial object is visible before commit()"
            writer.commit()
        assert read_object(key) is not None

    def test_an_exception_inside_the_block_leaves_no_object(
        self, sink: Sink, read_object: ReadObject, list_keys: ListKeys | None
    ) -> None:
        class Boom(Exception):
            pass

        key = self.key()

        def crash() -> None:
            with sink.open(key, self.meta()) as writer:
                writer.write(_ndjson(sample_events(5)))
                raise Boom

        with pytest.raises(Boom):
            crash()
        assert read_object(key) is None
        if list_keys is not None:
            assert list_keys() == [], "an aborted object left something behind"

    def test_abort_leaves_no_object_and_is_idempotent(
        self, sink: Sink, read_object: ReadObject, list_keys: ListKeys | None
    ) -> None:
        # The context manager aborts after a failed commit, which has already aborted:
        # abort() must therefore tolerate being called twice.
        key = self.key()
        writer = sink.open(key, self.meta())
        writer.write(_ndjson(sample_events(5)))
        writer.abort()
        writer.abort()
        assert read_object(key) is None
        if list_keys is not None:
            assert list_keys() == []

    def test_an_aborted_rewrite_keeps_the_previous_object(
        self, sink: Sink, read_object: ReadObject
    ) -> None:
        key, meta = self.key(), self.meta()
        first = _ndjson(sample_events(5))
        self.write(sink, key, meta, [first])

        def crash() -> None:
            with sink.open(key, meta) as writer:
                writer.write(b"half of a replacement\n")
                raise RuntimeError("crash mid-object")

        with pytest.raises(RuntimeError, match="crash mid-object"):
            crash()
        assert read_object(key) == first

    def test_a_replay_replaces_the_object(
        self, sink: Sink, read_object: ReadObject, list_keys: ListKeys | None
    ) -> None:
        # A replayed intent writes the same key again; one object must remain, holding
        # the second write (retry-safe: idempotent by key).
        key, meta = self.key(), self.meta()
        self.write(sink, key, meta, [_ndjson(sample_events(5, seed=1))])
        second = _ndjson(sample_events(5, seed=2))
        receipt = self.write(sink, key, meta, [second[:100], second[100:]])
        assert read_object(key) == second
        assert receipt.size == len(second)
        if list_keys is not None:
            assert list_keys() == [key]

    def test_keys_are_independent(self, sink: Sink, read_object: ReadObject) -> None:
        a, b = self.key(1, 5), self.key(6, 10)
        data_a, data_b = _ndjson(sample_events(5)), _ndjson(sample_events(5, first_id=6))
        self.write(sink, a, self.meta(5), [data_a])
        self.write(sink, b, self.meta(5, first_id=6), [data_b])
        assert (read_object(a), read_object(b)) == (data_a, data_b)

    def test_an_empty_object_is_an_object(self, sink: Sink, read_object: ReadObject) -> None:
        key, meta = self.key(1, 1), self.meta(1)
        receipt = self.write(sink, key, meta, [])
        assert read_object(key) == b""
        assert receipt.size == 0 and receipt.key == key and receipt.meta == meta

    def test_a_large_object_in_many_chunks(self, sink: Sink, read_object: ReadObject) -> None:
        # Incompressible, reproducible bytes in uneven chunks, so buffer and part
        # boundaries fall mid-chunk; a 1-byte and an empty write are legal too.
        rng = random.Random(7)
        data = rng.randbytes(self.large_object_size)
        chunks, pos = [b"", data[:1]], 1
        while pos < len(data):
            step = rng.randrange(1, 256 * 1024)
            chunks.append(data[pos : pos + step])
            pos += step
        receipt = self.write(sink, self.key(), self.meta(), chunks)
        got = read_object(self.key())
        assert got is not None and len(got) == len(data)
        assert got == data
        assert receipt.size == len(data)

    def test_metadata(self, sink: Sink, read_metadata: ReadMetadata | None) -> None:
        if read_metadata is None:
            pytest.skip("this sink stores no object metadata (no read_metadata fixture)")
        key, meta = self.key(), self.meta()
        self.write(sink, key, meta, [_ndjson(sample_events(5))])
        stored = read_metadata(key)
        assert stored is not None
        expected = meta.as_metadata()
        assert {k: stored.get(k) for k in expected} == expected

    def test_is_an_object_store_with_an_identity(self, sink: Sink) -> None:
        assert sink.stream is False, (
            "a sink with stream = True keeps the stream contract: use StreamSinkConformance"
        )
        for text in (sink.identity(), sink.describe()):
            assert isinstance(text, str) and text.strip()
        assert sink.identity() == sink.identity(), "identity() must be stable"

    def test_probe_succeeds_and_leaves_nothing(
        self, sink: Sink, list_keys: ListKeys | None
    ) -> None:
        sink.probe()  # raises on failure
        if list_keys is not None:
            assert list_keys() == [], "probe() left its probe object behind"


# --------------------------------------------------------------------------- stream sinks


Received = Callable[[], bytes]


class StreamSinkConformance:
    """The :class:`~siem_plugins.kinds.Sink` contract for a *stream* destination
    (``stream = True``: syslog over TCP, an HTTP event collector, Kafka), which cannot
    take back what it sent, so a replayed object arrives again: at least once.

    The rules (docs/plugins.md#stream-sinks): every line arrives whole, never split or
    merged with another, in order; what was sent stays sent (``abort()`` stops, it does
    not undo) and no partial line is ever sent; a replay sends the same lines again;
    ``write()`` gets gzip-compressed bytes unless the integration says otherwise, and the
    destination receives lines; ``probe()`` sends no event.

    Fixtures to provide: ``sink`` and ``received`` (``() -> bytes``: everything the
    destination has received so far, in order, as the lines a reader there sees).
    """

    #: Bytes written before the suite expects the sink to have sent something: raise it
    #: above your sink's buffer (for a sink that sends at commit only, any size works).
    large_object_size: int = 3 * MiB

    @pytest.fixture
    def sink(self) -> Sink:
        raise NotImplementedError("define a `sink` fixture in your StreamSinkConformance subclass")

    @pytest.fixture
    def received(self) -> Received:
        raise NotImplementedError("define a `received` fixture returning () -> bytes")

    @staticmethod
    def meta(count: int, *, encoding: str | None = None) -> ObjectMeta:
        return ObjectMeta(
            integration="conformance",
            account="acme",
            first_id=1,
            last_id=count,
            count=count,
            format="json",
            content_type="application/x-ndjson",
            content_encoding=encoding,
        )

    @staticmethod
    def key() -> str:
        return object_key("acme", "2022-07-15T085512Z", 1, 5, "json")

    @staticmethod
    def odd_chunks(data: bytes, seed: int = 3) -> list[bytes]:
        """``data`` cut at random places, mid-line and mid-character."""
        rng, chunks, pos = random.Random(seed), [], 0
        while pos < len(data):
            step = rng.randrange(1, 97)
            chunks.append(data[pos : pos + step])
            pos += step
        return chunks

    # ------------------------------------------------------------------ tests

    def test_declares_a_stream(self, sink: Sink) -> None:
        assert sink.stream is True, "an object store keeps SinkConformance's contract"
        for text in (sink.identity(), sink.describe()):
            assert isinstance(text, str) and text.strip()

    def test_commit_delivers_every_line_once_in_order(self, sink: Sink, received: Received) -> None:
        data = _ndjson(sample_events(40))
        with sink.open(self.key(), self.meta(40)) as writer:
            for chunk in self.odd_chunks(data):
                writer.write(chunk)
            receipt = writer.commit()
        assert received() == data
        assert receipt.size == len(data) and receipt.key == self.key()

    def test_lines_arrive_whole_while_a_large_object_is_written(
        self, sink: Sink, received: Received
    ) -> None:
        events = sample_events(200)
        line = _ndjson(events)
        data = line * (self.large_object_size // len(line) + 1)
        seen_before_commit = b""
        with sink.open(self.key(), self.meta(len(data.splitlines()))) as writer:
            for chunk in self.odd_chunks(data, seed=5):
                writer.write(chunk)
                got = received()
                assert not got or got.endswith(b"\n"), "a partial line was sent"
                seen_before_commit = got
            writer.commit()
        assert received() == data
        assert data.startswith(seen_before_commit)

    def test_gzip_objects_arrive_as_lines(self, sink: Sink, received: Received) -> None:
        import gzip

        data = _ndjson(sample_events(30))
        packed = gzip.compress(data, mtime=0)
        with sink.open(self.key(), self.meta(30, encoding="gzip")) as writer:
            for chunk in self.odd_chunks(packed):
                writer.write(chunk)
            writer.commit()
        assert received() == data

    def test_a_replay_sends_the_same_lines_again(self, sink: Sink, received: Received) -> None:
        data = _ndjson(sample_events(10))
        for _ in range(2):
            with sink.open(self.key(), self.meta(10)) as writer:
                writer.write(data)
                writer.commit()
        assert received() == data + data  # at least once, and whole

    def test_abort_sends_no_partial_line(self, sink: Sink, received: Received) -> None:
        data = _ndjson(sample_events(10))
        writer = sink.open(self.key(), self.meta(10))
        writer.write(data[: len(data) // 2 + 7])  # ends mid-line
        writer.abort()
        writer.abort()
        got = received()
        assert not got or (got.endswith(b"\n") and data.startswith(got))

    def test_probe_sends_no_event(self, sink: Sink, received: Received) -> None:
        sink.probe()  # raises on failure
        assert not [line for line in received().splitlines() if b"log_type" in line], (
            "probe() sent an event"
        )


# --------------------------------------------------------------------------- formatters


class FormatterConformance:
    """The :class:`~siem_plugins.kinds.Formatter` contract: one ``\\n``-terminated line per
    event, deterministic and independent of how events are batched.

    Fixture to provide: ``formatter``. A line is what lies between ``\\n`` bytes; set
    :attr:`escapes_unicode_line_breaks` to also require that Unicode-aware readers
    (``str.splitlines``: U+2028, U+2029, NEL, VT, FF...) see one line per event.
    """

    #: Output encoding, for :meth:`decode_line`.
    encoding: str = "utf-8"
    #: The event field whose text the suite looks for in each event's line.
    marker_field: str = "details"
    #: Also require ``str.splitlines()`` to see exactly one line per event.
    escapes_unicode_line_breaks: bool = False

    @pytest.fixture
    def formatter(self) -> Formatter:
        raise NotImplementedError(
            "define a `formatter` fixture in your FormatterConformance subclass"
        )

    def decode_line(self, line: bytes) -> str:
        """One output line as text, for finding the event's field values in it.
        Override if your format escapes non-ASCII (e.g. JSON ``\\uXXXX``)."""
        return line.decode(self.encoding)

    def lines(self, data: bytes, n: int, formatter: Formatter) -> list[bytes]:
        """The output's lines, after checking there is exactly one per event."""
        assert b"\r" not in data, f"{type(formatter).__name__} output contains a CR"
        if n == 0:
            assert data == b""
            return []
        assert data.endswith(b"\n"), "the last record does not end in \\n"
        lines = data[:-1].split(b"\n")
        assert len(lines) == n, f"{n} events gave {len(lines)} lines"
        for line in lines:
            assert line, "an empty line"
        if self.escapes_unicode_line_breaks:
            text = data.decode(self.encoding)
            assert len(text.splitlines()) == n, "a Unicode line break splits a record"
        return lines

    def marked(self, texts: Sequence[str]) -> list[Event]:
        """One Device and one Account event per text, each with a unique marker."""
        dicts = hostile_event_dicts(texts)
        for i, d in enumerate(dicts):
            d[self.marker_field] = f"[siem-{i:04d}] {d[self.marker_field]} [/siem-{i:04d}]"
        return events_from_dicts(dicts)

    # ------------------------------------------------------------------ tests

    def test_declares_extension_and_content_type(self, formatter: Formatter) -> None:
        ext = formatter.extension
        assert isinstance(ext, str) and ext, "extension must be a non-empty string"
        assert not ext.startswith(".") and "/" not in ext and ext == ext.strip()
        assert isinstance(formatter.content_type, str) and "/" in formatter.content_type

    def test_an_empty_batch_is_no_bytes(self, formatter: Formatter) -> None:
        assert formatter.format([]) == b""

    def test_the_raw_fast_path_gives_the_same_bytes(self, formatter: Formatter) -> None:
        if formatter.format_raw is None:
            pytest.skip("no format_raw (the optional fast path)")
        for events in (sample_events(60), sample_events(1, seed=3), []):
            assert formatter.format_raw([e.raw for e in events]) == formatter.format(events)
        hostile = self.marked([*INJECTION_TEXTS, *CONTROL_TEXTS, *UNICODE_TEXTS])
        assert formatter.format_raw([e.raw for e in hostile]) == formatter.format(hostile)

    def test_one_line_per_event_in_order(self, formatter: Formatter) -> None:
        events = sample_events(50)
        for i, e in enumerate(events):  # a unique marker in each event's marker field
            fields = e.fields()
            fields[self.marker_field] = f"[siem-{i:04d}] {fields[self.marker_field]}"
            events[i] = events_from_dicts([fields], first_id=e.id)[0]
        lines = self.lines(formatter.format(events), len(events), formatter)
        for i, line in enumerate(lines):
            assert f"[siem-{i:04d}]" in self.decode_line(line), f"line {i} is not event {i}"

    def test_deterministic(self, formatter: Formatter) -> None:
        events, other = sample_events(40), sample_events(40, seed=9)
        first = formatter.format(events)
        formatter.format(other)  # no state may leak from one batch into the next
        assert formatter.format(events) == first
        assert formatter.format(list(events)) == first  # any sequence type

    def test_batching_does_not_change_the_bytes(self, formatter: Formatter) -> None:
        events = sample_events(60) + self.marked(CONTROL_TEXTS + UNICODE_TEXTS)
        whole = formatter.format(events)
        for size in (1, 2, 7, 25):
            parts = [formatter.format(events[i : i + size]) for i in range(0, len(events), size)]
            assert b"".join(parts) == whole, f"batches of {size} differ from one batch"

    def test_unicode_round_trips(self, formatter: Formatter) -> None:
        events = self.marked(UNICODE_TEXTS)
        lines = self.lines(formatter.format(events), len(events), formatter)
        for i, line in enumerate(lines):
            text = self.decode_line(line)
            wanted = UNICODE_TEXTS[i // 2]
            assert f"[siem-{i:04d}] {wanted} [/siem-{i:04d}]" in text, (
                f"{wanted!r} did not survive (combining marks must not be normalised)"
            )

    def test_control_characters_never_split_a_line(self, formatter: Formatter) -> None:
        events = self.marked(CONTROL_TEXTS)
        lines = self.lines(formatter.format(events), len(events), formatter)
        for i, line in enumerate(lines):
            text = self.decode_line(line)
            # Both the start and the end marker in the same line: nothing split it.
            assert f"[siem-{i:04d}] before" in text and f"after [/siem-{i:04d}]" in text

    def test_hostile_text_in_any_field_never_splits_a_line(self, formatter: Formatter) -> None:
        """Every string field may end up in a header (a syslog HOSTNAME, a CEF extension,
        a CSV column): line breaks and controls in any of them, known or unknown, must
        stay inside the record."""
        dicts: list[dict[str, Any]] = []
        for text in (*CONTROL_TEXTS, *INJECTION_TEXTS):
            for base in (_device("ok"), _account("ok")):
                for field in base:
                    if field in ("type", "log_type", "timestamp", "last_seen"):
                        continue  # validated at ingest: no free text can get there
                    dicts.append({**base, field: text})
                dicts.append({**base, "extra_field": text, text[:20]: "as a field name"})
        events = events_from_dicts(dicts)
        self.lines(formatter.format(events), len(events), formatter)

    def test_a_64_kib_field_stays_one_line(self, formatter: Formatter) -> None:
        big = ("x" * 1000 + "\n") * 60
        events = self.marked([big]) + sample_events(3, first_id=3)
        self.lines(formatter.format(events), len(events), formatter)


# --------------------------------------------------------------------------- notifiers


Delivered = Callable[[], Sequence[bytes | str]]


class NotifierConformance:
    """The :class:`~siem_plugins.kinds.Notifier` contract: one delivery per digest, event
    text kept out of headers.

    Fixtures to provide: ``notifier`` and ``delivered`` (``() -> list[bytes | str]``:
    every payload delivered so far, e.g. the mails an SMTP test server received). Set
    :attr:`delivers_mail` if payloads are RFC 5322 messages: headers are then parsed.
    """

    #: Payloads are mail messages (headers are parsed and checked one by one).
    delivers_mail: bool = False

    @pytest.fixture
    def notifier(self) -> Notifier:
        raise NotImplementedError(
            "define a `notifier` fixture in your NotifierConformance subclass"
        )

    @pytest.fixture
    def delivered(self) -> Delivered:
        raise NotImplementedError(
            "define a `delivered` fixture returning a function () -> list[bytes | str]"
        )

    def delivered_text(self, payload: bytes | str) -> str:
        """A payload as searchable text. For mail, the headers and the decoded body."""
        if self.delivers_mail:
            msg = self.parse_mail(payload)
            body = msg.get_body(preferencelist=("plain", "html"))
            content = body.get_content() if body is not None else ""
            return "".join(f"{k}: {v}\n" for k, v in msg.items()) + "\n" + str(content)
        return payload if isinstance(payload, str) else payload.decode("utf-8", "replace")

    @staticmethod
    def parse_mail(payload: bytes | str) -> email.message.EmailMessage:
        data = payload.encode() if isinstance(payload, str) else payload
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg

    def notify(self, notifier: Notifier, delivered: Delivered, digest: Digest) -> bytes | str:
        """Notify once; check that exactly one payload arrived and return it."""
        before = len(delivered())
        notifier.notify(digest)
        after = list(delivered())
        assert len(after) == before + 1, f"one notify() made {len(after) - before} deliveries"
        return after[-1]

    # ------------------------------------------------------------------ tests

    def test_one_notify_is_one_delivery(self, notifier: Notifier, delivered: Delivered) -> None:
        assert len(delivered()) == 0
        events = sample_events(30)
        self.notify(notifier, delivered, digest_of(events[:10]))
        self.notify(notifier, delivered, digest_of(events[10:]))
        assert len(delivered()) == 2

    def test_names_the_log_type_of_every_listed_event(
        self, notifier: Notifier, delivered: Delivered
    ) -> None:
        events = events_from_dicts(
            [
                _device("laptop-1", "exempt_all"),
                _account("admin", "config"),
                _device("laptop-2", "unexempt"),
                _account("admin", "policy_changed"),
            ]
        )
        text = self.delivered_text(self.notify(notifier, delivered, digest_of(events)))
        for log_type in ("exempt_all", "config", "unexempt", "policy_changed"):
            assert log_type in text, f"the digest does not mention {log_type!r}"

    def test_a_digest_listing_only_some_events(
        self, notifier: Notifier, delivered: Delivered
    ) -> None:
        # ``total`` counts the whole range; ``events`` holds only the first ones.
        events = sample_events(40)
        digest = digest_of(events, listed=3)
        assert digest.total == 40 and len(digest.events) == 3
        self.notify(notifier, delivered, digest)

    def test_event_text_cannot_add_headers(self, notifier: Notifier, delivered: Delivered) -> None:
        events = events_from_dicts(hostile_event_dicts(INJECTION_TEXTS))
        payload = self.notify(notifier, delivered, digest_of(events))
        data = payload.encode() if isinstance(payload, str) else payload
        if self.delivers_mail:
            msg = self.parse_mail(data)
            assert msg.get_all("Bcc") is None, "event text added a Bcc header"
            assert len(msg.get_all("Subject") or []) == 1, "event text added a Subject header"
            for name, value in msg.items():
                assert "evil@example.com" not in str(value), f"event text reached {name}"
            head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
            assert not re.search(rb"(?im)^(bcc|subject: x)", head)
        else:
            # Generically: no line of the payload may start with an injected header.
            injected = (
                rb"(?i)(\A|[\r\n])[ \t]*(bcc[ \t]*:[ \t]*evil@|subject[ \t]*:[ \t]*x(\r|\n|\Z))"
            )
            assert not re.search(injected, data), "event text started a line of its own"

    def test_unicode_event_text_is_delivered(
        self, notifier: Notifier, delivered: Delivered
    ) -> None:
        events = events_from_dicts(hostile_event_dicts(UNICODE_TEXTS + CONTROL_TEXTS))
        text = self.delivered_text(self.notify(notifier, delivered, digest_of(events)))
        assert "設備名" in text and "🔒" in text

    def test_probe_succeeds(self, notifier: Notifier) -> None:
        notifier.probe()  # raises on failure


# --------------------------------------------------------------------------- sources


Append = Callable[[str, Sequence[Mapping[str, Any]]], list[int]]


class SourceConformance:
    """The :class:`~siem_plugins.kinds.Source` contract: ranges planned in ascending id
    order, reads that return exactly the stored events, and cursors that resume without
    repeating or skipping.

    Fixtures to provide: ``source`` (over an empty store) and ``append`` (``(account,
    event dicts) -> ids``: store the events, in order, and return the ids they got).
    """

    account: str = "acme"
    other_account: str = "other"

    @pytest.fixture
    def source(self) -> Source:
        raise NotImplementedError("define a `source` fixture in your SourceConformance subclass")

    @pytest.fixture
    def append(self) -> Append:
        raise NotImplementedError(
            "define an `append` fixture returning a function (account, dicts) -> ids"
        )

    # ------------------------------------------------------------------ helpers

    def fill(self, append: Append, n: int, *, seed: int = 1) -> tuple[list[int], list[Event]]:
        """``n`` events for :attr:`account`, with another account's events interleaved
        (so ids are not contiguous), returning the ids and the expected events."""
        dicts = list(generate(n, seed=seed))
        ids: list[int] = []
        for start in range(0, n, 4):
            ids += append(self.account, dicts[start : start + 4])
            append(self.other_account, list(generate(2, seed=seed + start + 1000)))
        assert len(ids) == n and ids == sorted(set(ids)), f"append returned ids {ids}"
        expected = [
            Event(i, self.account, e.type, e.log_type, e.timestamp, e.raw)
            for i, e in zip(ids, events_from_dicts(dicts), strict=True)
        ]
        return ids, expected

    @staticmethod
    def read_all(source: Source, account: str, rng: Range, **kwargs: Any) -> list[Event]:
        return [
            e for batch in source.read(account, rng.first_id, rng.last_id, **kwargs) for e in batch
        ]

    # ------------------------------------------------------------------ tests

    def test_plan_is_none_when_nothing_is_new(self, source: Source, append: Append) -> None:
        assert source.plan(self.account, 0, max_events=100, max_bytes=MiB) is None
        ids, _ = self.fill(append, 3)
        assert source.plan(self.account, ids[-1], max_events=100, max_bytes=MiB) is None
        assert source.plan("nobody", 0, max_events=100, max_bytes=MiB) is None

    def test_plan_caps_the_range_by_max_events(self, source: Source, append: Append) -> None:
        ids, _ = self.fill(append, 25)
        for max_bytes in (sys.maxsize, 10**12):  # "no cap" may take another code path
            assert source.plan(self.account, 0, max_events=10, max_bytes=max_bytes) == Range(
                ids[0], ids[9], 10
            )
            assert source.plan(self.account, ids[9], max_events=10, max_bytes=max_bytes) == Range(
                ids[10], ids[19], 10
            )
            assert source.plan(self.account, ids[19], max_events=10, max_bytes=max_bytes) == Range(
                ids[20], ids[24], 5
            )
            # A cursor between two of this account's ids (where another account's are).
            between = (ids[3] + ids[4]) // 2
            assert source.plan(self.account, between, max_events=2, max_bytes=max_bytes) == (
                Range(ids[4], ids[5], 2)
            )

    def test_plan_caps_the_range_by_max_bytes(self, source: Source, append: Append) -> None:
        ids, events = self.fill(append, 12)
        sizes = [len(e.raw) + 1 for e in events]  # canonical JSON plus a newline
        # However small the cap, a range holds at least one event, or nothing would move.
        assert source.plan(self.account, 0, max_events=100, max_bytes=1) == Range(ids[0], ids[0], 1)
        budget = sum(sizes[:3])
        rng = source.plan(self.account, 0, max_events=100, max_bytes=budget)
        assert rng is not None and rng.first_id == ids[0] and 1 <= rng.count <= 3
        assert sum(sizes[: rng.count]) <= budget
        assert rng.last_id == ids[rng.count - 1]
        everything = source.plan(self.account, 0, max_events=100, max_bytes=sum(sizes))
        assert everything == Range(ids[0], ids[-1], 12)

    def test_plan_for_an_account_with_few_of_the_ids(self, source: Source, append: Append) -> None:
        # One event of this account per five of another: a store may plan such sparse
        # ranges differently from dense ones.
        dicts = list(generate(8, seed=11))
        ids: list[int] = []
        for i, d in enumerate(dicts):
            append(self.other_account, list(generate(5, seed=100 + i)))
            ids += append(self.account, [d])
        sizes = [len(e.raw) + 1 for e in events_from_dicts(dicts)]
        fits = source.plan(self.account, 0, max_events=8, max_bytes=sum(sizes))
        assert fits == Range(ids[0], ids[-1], 8)
        short = source.plan(self.account, 0, max_events=8, max_bytes=sum(sizes) - 1)
        assert short is not None and short.count < 8 and short.first_id == ids[0]
        assert short.last_id == ids[short.count - 1]
        assert sum(sizes[: short.count]) <= sum(sizes) - 1
        assert source.plan(self.account, ids[2], max_events=3, max_bytes=MiB) == Range(
            ids[3], ids[5], 3
        )
        got = self.read_all(source, self.account, Range(ids[1], ids[6], 6))
        assert [e.id for e in got] == ids[1:7]

    def test_read_returns_exactly_the_stored_events(self, source: Source, append: Append) -> None:
        ids, expected = self.fill(append, 20)
        got = self.read_all(source, self.account, Range(ids[5], ids[14], 10))
        assert [e.id for e in got] == ids[5:15]
        assert got == expected[5:15]  # account, type, log type, timestamp, raw bytes
        whole = self.read_all(source, self.account, Range(0, ids[-1] + 1000, 0))
        assert whole == expected

    def test_read_filters_by_log_type(self, source: Source, append: Append) -> None:
        ids, expected = self.fill(append, 30)
        wanted = {expected[0].log_type, expected[-1].log_type}
        rng = Range(ids[0], ids[-1], len(ids))
        got = self.read_all(source, self.account, rng, log_types=wanted)
        assert got == [e for e in expected if e.log_type in wanted]
        assert self.read_all(source, self.account, rng, log_types=set()) == []
        assert self.read_all(source, self.account, rng, log_types={"no_such_type"}) == []

    def test_read_raw_matches_read(self, source: Source, append: Append) -> None:
        read_raw = source.read_raw
        if read_raw is None:
            pytest.skip("no read_raw (the optional fast path)")
        ids, expected = self.fill(append, 30)
        # A range the account owns most of, and one it owns a sliver of: a store may read
        # the two differently.
        for first, last in ((ids[2], ids[27]), (0, ids[-1] + 10_000)):
            want = [e.raw for e in expected if first <= e.id <= last]
            batches = list(read_raw(self.account, first, last, batch_size=7))
            assert all(0 < len(b) <= 7 for b in batches), [len(b) for b in batches]
            assert [raw for b in batches for raw in b] == want
        assert list(read_raw("nobody", 0, ids[-1])) == []

    def test_read_respects_batch_size(self, source: Source, append: Append) -> None:
        ids, expected = self.fill(append, 10)
        batches = list(source.read(self.account, ids[0], ids[-1], batch_size=4))
        assert all(0 < len(b) <= 4 for b in batches), [len(b) for b in batches]
        assert [e for b in batches for e in b] == expected
        flat = [e.id for b in batches for e in b]
        assert flat == sorted(flat)

    def test_resuming_from_the_cursor_never_repeats_or_skips(
        self, source: Source, append: Append
    ) -> None:
        # The pipeline's loop: plan after the cursor, read the range, move the cursor to
        # its last id, with new events arriving (for this and other accounts) between.
        ids, _ = self.fill(append, 10)
        shipped: list[int] = []
        cursor, rounds = 0, 0
        while (rng := source.plan(self.account, cursor, max_events=3, max_bytes=MiB)) is not None:
            assert rng.first_id > cursor and rng.first_id <= rng.last_id
            got = [e.id for e in self.read_all(source, self.account, rng)]
            assert len(got) == rng.count and got == sorted(got)
            assert got[0] == rng.first_id and got[-1] == rng.last_id
            shipped += got
            cursor = rng.last_id
            rounds += 1
            if rounds == 2:
                ids += self.fill(append, 7, seed=5)[0]
            assert rounds < 50, "plan() never returned None"
        assert shipped == ids
