"""An event a formatter cannot format is set aside, never a wall: the events after it
ship in order, the operator lists it and, once the formatter copes, replays it in one
extra object, exactly once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from siem_plugins import FormatterBase, FormatterSpec, hookimpl
from siem_plugins.events import Event
from siem_plugins.options import Options
from siem_plugins.pipeline import Pipeline
from siem_plugins.storage import REPLAY, SINK, SQLiteStore
from tests.helpers import (
    drop_in_folder,
    ingest,
    integration,
    local_objects,
    numbered,
    runtime,
    seqs_in,
)


class PickyFormatter(FormatterBase):
    """NDJSON that cannot format an event whose details say "boom" (unless tolerant);
    with ``fast``, it also offers the raw fast path, which fails on the same events."""

    extension = "json"
    content_type = "application/x-ndjson"

    def __init__(self, tolerant: bool, broken: bool) -> None:
        self.tolerant = tolerant
        self.broken = broken

    def _check(self, raw: bytes) -> None:
        if self.broken:
            raise RuntimeError("this formatter is broken")
        if b"boom" in raw and not self.tolerant:
            raise ValueError("cannot format a boom")

    def format(self, events: Sequence[Event]) -> bytes:
        for e in events:
            self._check(e.raw)
        return b"".join(e.raw + b"\n" for e in events)


class FastPickyFormatter(PickyFormatter):
    def format_raw(self, raws: Sequence[bytes]) -> bytes:
        for raw in raws:
            self._check(raw)
        return b"".join(raw + b"\n" for raw in raws)


class PickyPlugin:
    @hookimpl
    def siem_register_formatters(self) -> list[FormatterSpec]:
        def build(options: Options) -> PickyFormatter:
            cls = FastPickyFormatter if options.boolean("fast", False) else PickyFormatter
            return cls(options.boolean("tolerant", False), options.boolean("broken", False))

        return [FormatterSpec(name="picky", factory=build)]


def events_with_booms(siem_events: Any, n: int, booms: set[int]) -> list[dict[str, Any]]:
    out = numbered(siem_events(n))
    for e in out:
        if e["seq"] in booms:
            e["details"] = f"boom {e['seq']}"
    return out


def picky(tmp_path: Path, **fmt: Any) -> dict[str, Any]:
    return integration(
        "acme",
        {"type": "local", "path": str(tmp_path / "bucket")},
        fmt={"type": "picky", **fmt},
        compression="none",
        max_events=100,
    )


@pytest.mark.parametrize("fast", [False, True], ids=["events", "raw-fast-path"])
def test_unformattable_events_are_set_aside_and_the_rest_ships_in_order(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any, fast: bool
) -> None:
    ids = ingest(siem_store, "acme", events_with_booms(siem_events, 250, {7, 150, 151}))
    rt = runtime(siem_store.path, [picky(tmp_path, fast=fast)], [("picky", PickyPlugin())])
    try:
        result = Pipeline(rt).sync(rt.integrations[0])
        assert result.ok, result.errors
        assert sorted(result.set_aside) == [ids[6], ids[149], ids[150]]
        assert all("cannot format a boom" in why for why in result.set_aside.values())
        shipped = [s for d in local_objects(tmp_path / "bucket").values() for s in seqs_in(d)]
        assert shipped == [s for s in range(1, 251) if s not in (7, 150, 151)]
        assert [r.meta.count for r in result.objects] == [99, 98, 50]
        assert [r.meta.set_aside for r in result.objects] == [1, 2, 0]
        assert rt.state.cursor("acme", SINK) == ids[-1]
        letters = rt.state.dead_letters("acme")
        assert [d.event_id for d in letters] == [ids[6], ids[149], ids[150]]
        assert all(d.account == "acme" for d in letters)
        # Nothing is set aside twice, and a second sync has nothing left to do.
        again = Pipeline(rt).sync(rt.integrations[0])
        assert again.ok and again.objects == [] and again.set_aside == {}
    finally:
        rt.close()


def test_a_replayed_intent_leaves_the_same_events_out(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    """A crash after the object was written, before the cursor moved: the replay writes
    the same key with the same bytes (the dead letters are already recorded)."""
    ingest(siem_store, "acme", events_with_booms(siem_events, 50, {20}))
    rt = runtime(siem_store.path, [picky(tmp_path)], [("picky", PickyPlugin())])
    try:
        integ = rt.integrations[0]
        pipe = Pipeline(rt)
        intent = pipe._next_intent(integ, SINK, 100, 1 << 40)
        assert intent is not None
        first = pipe._write(integ, intent)
        path = tmp_path / "bucket" / intent.key
        before = path.read_bytes()
        path.unlink()
        second = pipe._write(integ, intent)
        assert path.read_bytes() == before and second.meta == first.meta
        assert first.meta.count == 49 and first.meta.set_aside == 1
    finally:
        rt.close()


def test_a_broken_formatter_sets_nothing_aside(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    """A formatter that fails on everything (a bug, a bad upgrade) must not empty the
    backlog into the dead letters: the sync fails and is retried, the cursor stays."""
    ingest(siem_store, "acme", numbered(siem_events(30)))
    rt = runtime(siem_store.path, [picky(tmp_path, broken=True)], [("picky", PickyPlugin())])
    try:
        result = Pipeline(rt).sync(rt.integrations[0])
        assert not result.ok
        assert "fails on every event, even a known-good one" in result.errors[SINK]
        assert result.set_aside == {} and rt.state.dead_letters() == []
        assert rt.state.cursor("acme", SINK) == 0
    finally:
        rt.close()


def test_a_legacy_timestamp_no_longer_blocks_a_syslog_integration(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    """An event stored with a three-digit year (as an earlier version did) made the RFC
    3164 formatter fail on every sync, so the integration was stuck behind it for ever."""
    ingest(siem_store, "acme", numbered(siem_events(10)))
    body = orjson.dumps(
        {
            "log_type": "config",
            "details": "legacy",
            "admin_name": "A",
            "type": "Account",
            "event": "e",
            "admin_email": "a@example.com",
            "timestamp": "999-06-01T00:00:00.000Z",
            "seq": 11,
        }
    )
    with sqlite3.connect(siem_store.path) as conn:
        conn.execute(
            "INSERT INTO siem_event (account, type, log_type, ts, body) VALUES (?,?,?,?,?)",
            ("acme", "Account", "config", "999-06-01T00:00:00.000Z", body),
        )
    ingest(siem_store, "acme", numbered(siem_events(10, seed=2), start=12))
    for framing in ("rfc3164", "rfc5424"):
        out = tmp_path / framing
        integ = integration(
            framing,
            {"type": "local", "path": str(out)},
            fmt={"type": "syslog", "framing": framing},
            account="acme",
            compression="none",
        )
        rt = runtime(siem_store.path, [integ])
        try:
            result = Pipeline(rt).sync(rt.integrations[0])
            assert result.ok, result.errors
            assert list(result.set_aside) == [11]
            lines = b"".join(local_objects(out).values()).splitlines()
            # The body is the event's JSON without its braces, after the header.
            seqs = [json.loads(b"{" + ln[ln.index(b'"log_type"') :] + b"}")["seq"] for ln in lines]
            assert seqs == [*range(1, 11), *range(12, 22)]
        finally:
            rt.close()


def test_dead_letters_are_listed_and_replayed_once_the_formatter_copes(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    ingest(siem_store, "acme", events_with_booms(siem_events, 120, {5, 110}))
    db = siem_store.path
    cfg = tmp_path / "siem.toml"
    plugins = drop_in_folder(
        tmp_path / "plugins",
        files={
            "picky.py": "from tests.test_dead_letters import PickyPlugin\n"
            "_p = PickyPlugin()\n"
            "siem_register_formatters = _p.siem_register_formatters\n"
        },
    )

    def write(tolerant: bool) -> None:
        cfg.write_text(
            f'plugins_dir = "{plugins}"\n[store]\nurl = "sqlite:///{db}"\n'
            f'[[integration]]\nname = "acme"\nmax_events = 100\ncompression = "none"\n'
            f'format = {{ type = "picky", tolerant = {str(tolerant).lower()} }}\n'
            f'sink = {{ type = "local", path = "{tmp_path / "bucket"}" }}\n'
            f'notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", '
            f'from = "s@example.com", to = ["a@example.com"], events = ["config"] }}\n'
        )

    def siem(*args: str) -> subprocess.CompletedProcess[str]:
        env_path = str(Path(__file__).resolve().parents[1])
        return subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**__import__("os").environ, "PYTHONPATH": env_path},
        )

    write(tolerant=False)
    sync = siem("sync", "--no-progress")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "acme: ok: 2 objects, 118 events, 1 digests, 2 events set aside" in sync.stdout
    assert "set aside: event 5: ValueError: cannot format a boom" in sync.stdout
    listing = siem("dead-letters", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [(d["event_id"], d["error"]) for d in json.loads(listing.stdout)] == [
        (5, "ValueError: cannot format a boom"),
        (110, "ValueError: cannot format a boom"),
    ]
    # Still failing: reported, kept.
    failing = siem("dead-letters", "replay")
    assert failing.returncode == 1
    assert "acme: event 5 still cannot be formatted: ValueError" in failing.stdout
    assert len(json.loads(siem("dead-letters", "list", "--json").stdout)) == 2

    write(tolerant=True)
    replay = siem("dead-letters", "replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "acme: shipped 2 set-aside events to " in replay.stdout
    objects = local_objects(tmp_path / "bucket")
    (extra,) = [k for k in objects if "_00000000000000000005-00000000000000000110." in k]
    assert seqs_in(objects[extra]) == [5, 110]
    every = sorted(s for d in objects.values() for s in seqs_in(d))
    assert every == list(range(1, 121))  # each event in exactly one object
    assert siem("dead-letters", "list").stdout.strip() == "no dead letters"
    assert siem("dead-letters", "replay").stdout.strip() == "acme: nothing to replay"
    state_check = sqlite3.connect(db)
    assert state_check.execute(
        "SELECT count(*) FROM siem_intent WHERE destination=?", (REPLAY,)
    ).fetchone() == (0,)
    state_check.close()
