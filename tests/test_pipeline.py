"""The delivery protocol on the local sink: capped objects, intents, replay, cursors."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from siem_plugins import Event, FormatterSpec, SinkSpec, hookimpl
from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.builtin.local import LocalSink
from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter
from siem_plugins.options import ConfigError, Options
from siem_plugins.pipeline import Pipeline
from siem_plugins.storage import NOTIFIER, SINK, SQLiteStore
from tests.helpers import ingest, integration, local_objects, numbered, runtime, seqs_in

Events = Callable[..., list[dict[str, Any]]]
KEY_RE = r"acme/\d{4}/\d\d/\d\d/\d{4}-\d\d-\d\dT\d{6}Z_(\d{20})-(\d{20})\.json\.gz"


def local(tmp_path: Path) -> dict[str, Any]:
    return {"type": "local", "path": str(tmp_path / "bucket")}


def test_catch_up_in_capped_objects_every_event_once(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    ids = ingest(siem_store, "acme", numbered(siem_events(1000)))
    ingest(siem_store, "other", numbered(siem_events(50, seed=3), start=5000))
    rt = runtime(siem_store.path, [integration("acme", local(tmp_path), max_events=300)])
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok, result.errors
    assert [r.meta.count for r in result.objects] == [300, 300, 300, 100]
    objects = local_objects(tmp_path / "bucket")
    keys = list(objects)
    assert keys == sorted(keys) == [r.key for r in result.objects]
    import re

    ranges = [tuple(map(int, re.fullmatch(KEY_RE, k).groups())) for k in keys]  # type: ignore[union-attr]
    assert ranges == [
        (ids[0], ids[299]),
        (ids[300], ids[599]),
        (ids[600], ids[899]),
        (ids[900], ids[999]),
    ]
    shipped = [s for data in objects.values() for s in seqs_in(data)]
    assert shipped == list(range(1, 1001))  # every event once, in order, no other account
    assert rt.state.cursor("acme", SINK) == ids[-1]
    assert rt.state.pending("acme", SINK) is None
    # Nothing new: a second sync writes nothing.
    again = Pipeline(rt).sync(rt.integrations[0])
    assert again.ok and again.objects == [] and again.digests == []
    rt.close()


def test_max_bytes_caps_objects(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(400)))
    rt = runtime(
        siem_store.path,
        [integration("acme", local(tmp_path), max_bytes="16 KiB", compression="none")],
    )
    result = Pipeline(rt).sync(rt.integrations[0])
    assert len(result.objects) > 5
    sizes = [r.size for r in result.objects]
    assert max(sizes) <= 16 * 1024
    shipped = [s for d in local_objects(tmp_path / "bucket").values() for s in seqs_in(d)]
    assert shipped == list(range(1, 401))
    rt.close()


class FlakySink(LocalSink):
    """A local sink whose commit fails a set number of times (a crash mid-object)."""

    failures = 0
    opened: list[str] = []

    @classmethod
    def build(cls, options: Options) -> FlakySink:
        return cls(Path(options.string("path", required=True)))

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        FlakySink.opened.append(key)
        writer = super().open(key, meta)
        if FlakySink.failures:
            FlakySink.failures -= 1
            real = writer

            class Failing(ObjectWriter):
                def write(self, data: bytes) -> None:
                    real.write(data)

                def commit(self) -> ObjectReceipt:
                    raise OSError("disk vanished")

                def abort(self) -> None:
                    real.abort()

            return Failing()
        return writer


class FlakyPlugin:
    @hookimpl
    def siem_register_sinks(self) -> list[SinkSpec]:
        return [SinkSpec(name="flaky", factory=FlakySink.build)]


def test_a_failed_object_is_replayed_with_the_same_key_and_bytes(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(250)))
    FlakySink.failures, FlakySink.opened = 1, []
    flaky = {"type": "flaky", "path": str(tmp_path / "flaky")}
    rt = runtime(
        siem_store.path,
        [integration("acme", flaky, max_events=100)],
        plugins=[("flaky", FlakyPlugin())],
    )
    integ = rt.integrations[0]
    first = Pipeline(rt).sync(integ)
    assert "disk vanished" in first.errors[SINK] and "'acme'" in first.errors[SINK]
    assert first.objects == []
    assert rt.state.cursor("acme", SINK) == 0
    pending = rt.state.pending("acme", SINK)
    assert pending is not None and pending.key == FlakySink.opened[0]
    assert local_objects(tmp_path / "flaky") == {}  # nothing partial left behind
    assert first.digests and rt.state.cursor("acme", NOTIFIER) == 250  # alerts not held back

    second = Pipeline(rt).sync(integ)
    assert second.ok
    assert FlakySink.opened[1] == FlakySink.opened[0]  # the same intent, replayed
    assert [r.meta.count for r in second.objects] == [100, 100, 50]
    shipped = [s for d in local_objects(tmp_path / "flaky").values() for s in seqs_in(d)]
    assert shipped == list(range(1, 251))

    # Replaying the intent again (a crash after the upload, before the cursor moved)
    # rewrites the object with exactly the same bytes: no duplicate, no difference.
    path = tmp_path / "flaky" / pending.key
    before = path.read_bytes()
    path.unlink()
    receipt = Pipeline(rt)._write(integ, pending)
    assert receipt.key == pending.key and path.read_bytes() == before
    rt.close()


def test_a_changed_config_replans_the_pending_intent(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(20)))
    FlakySink.failures, FlakySink.opened = 1, []
    flaky = {"type": "flaky", "path": str(tmp_path / "out")}
    rt = runtime(siem_store.path, [integration("acme", flaky)], plugins=[("flaky", FlakyPlugin())])
    assert not Pipeline(rt).sync(rt.integrations[0]).ok
    assert rt.state.pending("acme", SINK) is not None
    rt.close()
    rt = runtime(
        siem_store.path,
        [integration("acme", flaky, fmt="syslog")],
        plugins=[("flaky", FlakyPlugin())],
    )
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok and result.objects[0].key.endswith(".log.gz")
    assert rt.state.cursor("acme", SINK) == 20
    rt.close()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def siem_sync_started(self, integration: str, destination: str, intent: Any) -> None:
        self.calls.append(("started", destination))

    @hookimpl
    def siem_object_written(self, integration: str, receipt: ObjectReceipt) -> None:
        self.calls.append(("written", receipt.meta.count))

    @hookimpl
    def siem_notified(self, integration: str, digest: Any) -> None:
        self.calls.append(("notified", digest.total))

    @hookimpl
    def siem_sync_failed(self, integration: str, destination: str, error: BaseException) -> None:
        self.calls.append(("failed", destination))


def test_lifecycle_hooks_are_called_per_object_not_per_event(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    events = siem_events(5000)
    ingest(siem_store, "acme", events)
    selected = sum(e["log_type"] in ("exempt_all", "config") for e in events)
    rec = Recorder()
    notify = {
        "type": "outbox",
        "path": str(tmp_path / "outbox"),
        "from": "s@example.com",
        "to": ["a@example.com"],
        "events": ["exempt_all", "config"],
    }
    rt = runtime(
        siem_store.path,
        [integration("acme", local(tmp_path), notify=notify, max_events=2000)],
        plugins=[("rec", rec)],
    )
    assert Pipeline(rt).sync(rt.integrations[0]).ok
    # The sink's and the notifier's passes run side by side: each in its own order.
    assert [c for c in rec.calls if c[0] == "written" or c == ("started", SINK)] == [
        ("started", SINK),
        ("written", 2000),
        ("started", SINK),
        ("written", 2000),
        ("started", SINK),
        ("written", 1000),
    ]
    assert [c for c in rec.calls if c[0] == "notified" or c == ("started", NOTIFIER)] == [
        ("started", NOTIFIER),
        ("notified", selected),
    ]
    assert len(rec.calls) == 8
    mails = list((tmp_path / "outbox").rglob("*.eml"))
    assert len(mails) == 1
    rt.close()


def test_unknown_account_name_cannot_escape_the_prefix(tmp_path: Path) -> None:
    from siem_plugins.options import ConfigError

    for bad in ("../etc", "a/b", "x\ny", ".."):
        with pytest.raises(ConfigError, match=r"integration\[0\]\.account: invalid account"):
            runtime(tmp_path / "s.db", [integration("i", local(tmp_path), account=bad)])


class TaggedJSON(JSONFormatter):
    """A JSON subclass that changes ``format``; ``opt_out`` drops the inherited fast path."""

    def format(self, events: Sequence[Event]) -> bytes:
        return b"".join(b"T " + e.raw + b"\n" for e in events)


class TaggedJSONOptOut(TaggedJSON):
    format_raw = None  # type: ignore[assignment]


class TaggedPlugin:
    @hookimpl
    def siem_register_formatters(self) -> list[FormatterSpec]:
        return [
            FormatterSpec(name="tagged", factory=lambda o: TaggedJSON()),
            FormatterSpec(name="tagged-opt-out", factory=lambda o: TaggedJSONOptOut()),
        ]


@pytest.mark.parametrize(
    ("fmt", "tagged"), [("json", False), ("tagged", False), ("tagged-opt-out", True)]
)
def test_raw_fast_path_is_taken_only_when_the_formatter_offers_it(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events, fmt: str, tagged: bool
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(30)))
    sink = {"type": "local", "path": str(tmp_path / "bucket")}
    rt = runtime(
        siem_store.path,
        [integration("acme", sink, fmt=fmt, compression="none")],
        plugins=[("tagged", TaggedPlugin())],
    )
    made: list[int] = []
    read = rt.source.read

    def counting_read(*args: Any, **kwargs: Any) -> Any:
        for batch in read(*args, **kwargs):
            made.append(len(batch))
            yield batch

    rt.source.read = counting_read  # type: ignore[method-assign]
    result = Pipeline(rt).sync(rt.integrations[0])
    rt.close()
    assert result.ok, result.errors
    (data,) = local_objects(tmp_path / "bucket").values()
    lines = data.splitlines()
    assert len(lines) == 30 and all(line.startswith(b"T ") == tagged for line in lines)
    # Event objects are made for the notifier's scan only, unless the object needs them.
    assert sum(made) == (30 if tagged else 0) + result.digests[0].total


def test_read_ahead_yields_in_order_and_raises_the_readers_error() -> None:
    from siem_plugins.streaming import read_ahead

    assert list(read_ahead(lambda: iter(range(1000)), depth=2)) == list(range(1000))

    def failing() -> Iterator[int]:
        yield 1
        raise sqlite3.OperationalError("disk I/O error")

    got: list[int] = []

    def consume() -> None:
        for item in read_ahead(failing):
            got.append(item)

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        consume()
    assert got == [1]
    assert not [t for t in threading.enumerate() if t.name == "siem-read-ahead"]


def test_read_ahead_stops_and_closes_the_reader_when_the_consumer_fails() -> None:
    from siem_plugins.streaming import read_ahead

    closed_in: list[str] = []

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed_in.append(threading.current_thread().name)

    def consume() -> None:
        batches = read_ahead(endless, depth=2)
        with contextlib.closing(batches):
            for n in batches:
                if n == 5:
                    raise RuntimeError("upload failed")

    with pytest.raises(RuntimeError, match="upload failed"):
        consume()
    assert closed_in == ["siem-read-ahead"]  # closed by the reader, in its own thread
    assert not [t for t in threading.enumerate() if t.name == "siem-read-ahead"]


class _HoldsTheSinkUntilNotified:
    """Blocks the sink's first object until the digest of the same sync was delivered."""

    def __init__(self) -> None:
        self.notified = threading.Event()
        self.waited_ok: bool | None = None

    @hookimpl
    def siem_sync_started(self, integration: str, destination: str, intent: Any) -> None:
        if destination == SINK and self.waited_ok is None:
            self.waited_ok = self.notified.wait(timeout=20)

    @hookimpl
    def siem_notified(self, integration: str, digest: Any) -> None:
        self.notified.set()


def test_alerts_are_not_held_back_by_the_sink(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    """The notifier pass runs beside the sink pass: a sink stuck on its first object (a
    slow S3, a long catch-up) does not delay the digest of the same sync."""
    ingest(siem_store, "acme", numbered(siem_events(3000)))
    holder = _HoldsTheSinkUntilNotified()
    rt = runtime(
        siem_store.path,
        [integration("acme", local(tmp_path), max_events=1000)],
        plugins=[("holder", holder)],
    )
    result = Pipeline(rt).sync(rt.integrations[0])
    rt.close()
    assert holder.waited_ok is True, "the digest waited for the sink"
    assert result.ok and len(result.objects) == 3 and len(result.digests) == 1
    assert len(list((tmp_path / "outbox").rglob("*.eml"))) == 1


def test_syncs_leave_no_reader_threads_or_connections_behind(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(500)))
    # Other tests' runtimes (a Celery task run in-process keeps its own) are not ours.
    others = {t for t in threading.enumerate() if t.name.startswith("siem-notify")}
    rt = runtime(siem_store.path, [integration("acme", local(tmp_path), max_events=50)])
    # A first sync starts the long-lived threads (notifier) and their connections.
    assert Pipeline(rt).sync(rt.integrations[0]).ok
    opened_before = len(rt.source._conns._all)  # type: ignore[attr-defined]
    fds_before = len(os.listdir("/proc/self/fd"))
    ingest(siem_store, "acme", numbered(siem_events(500), start=501))
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok and len(result.objects) == 10
    assert not [t for t in threading.enumerate() if t.name == "siem-read-ahead"]
    assert len(rt.source._conns._all) == opened_before  # type: ignore[attr-defined]
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1  # not one per object
    rt.close()
    left = {t for t in threading.enumerate() if t.name.startswith("siem-notify")} - others
    assert not left


def test_two_integrations_that_would_overwrite_each_other_are_refused(
    tmp_path: Path, siem_store: SQLiteStore
) -> None:
    """SYSLOG rfc5424 and bare of one account under one prefix share the extension, so
    their keys coincide and each would overwrite the other's objects."""
    sink = {"type": "local", "path": str(tmp_path / "bucket")}
    a = integration("a-5424", sink, fmt={"type": "syslog", "framing": "rfc5424"}, account="acme")
    b = integration("b-bare", sink, fmt={"type": "syslog", "framing": "bare"}, account="acme")
    with pytest.raises(ConfigError) as info:
        runtime(siem_store.path, [a, b])
    message = str(info.value)
    assert "integration[1].sink" in message
    assert "'a-5424' (integration[0]) and 'b-bare'" in message
    assert "same objects" in message and "own prefix" in message
    # Any one difference in the key makes them fine: the prefix, the account, the format;
    # and a disabled integration writes nothing (it is checked when enabled).
    other = {**sink, "prefix": "bare/"}
    for variant in (
        integration("b-bare", other, fmt={"type": "syslog", "framing": "bare"}, account="acme"),
        integration("b-bare", sink, fmt={"type": "syslog", "framing": "bare"}, account="zeta"),
        integration("b-json", sink, fmt="json", account="acme"),
        {**b, "enabled": False},
    ):
        runtime(siem_store.path, [a, variant]).close()


def test_a_permanent_failure_says_retrying_will_not_help(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Events
) -> None:
    from siem_plugins import NotifierBase, NotifierError, NotifierSpec

    class Refusing(NotifierBase):
        def __init__(self, permanent: bool) -> None:
            self.permanent = permanent

        def describe(self) -> str:
            return "refusing://"

        def notify(self, digest: object) -> None:
            raise NotifierError("550 no such mailbox", permanent=self.permanent, code=550)

        def probe(self) -> None: ...

    class Plugin:
        @hookimpl
        def siem_register_notifiers(self) -> list[NotifierSpec]:
            return [
                NotifierSpec(
                    "refusing", lambda options: Refusing(options.boolean("permanent", False))
                )
            ]

    ingest(siem_store, "acme", numbered(siem_events(50)))
    for permanent in (True, False):
        notify = {"type": "refusing", "permanent": permanent, "events": ["exempt_all", "config"]}
        integ = integration(f"p-{permanent}".lower(), local(tmp_path), notify=notify)
        rt = runtime(siem_store.path, [{**integ, "account": "acme"}], [("refusing", Plugin())])
        try:
            result = Pipeline(rt).sync(rt.integrations[0])
        finally:
            rt.close()
        assert result.errors[NOTIFIER].startswith(
            f"integration 'p-{str(permanent).lower()}': notifier refusing://: 550 no such mailbox"
        )
        hint = "retrying will not help until the configuration or the destination changes"
        assert (hint in result.errors[NOTIFIER]) is permanent
        assert result.permanent == ({NOTIFIER} if permanent else set())
