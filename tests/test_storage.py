"""The storage package's promises, held by both databases alike: the event store's
inspection methods and ingest record, and the state store's cursors, intents, run log and
dead letters. Each test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from siem_plugins.events import canonicalize
from siem_plugins.kinds import Intent
from siem_plugins.storage import (
    NOTIFIER,
    REPLAY,
    SINK,
    EventStore,
    ReplayJob,
    StateError,
    StateStore,
    is_postgres,
    open_state,
    open_store,
    sqlite_path,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Iterator[EventStore]:
    store = open_store(url)
    yield store
    store.close()


@pytest.fixture
def state(url: str) -> Iterator[StateStore]:
    state = open_state(url)
    yield state
    state.close()


def query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on a connection of the test's own."""
    if is_postgres(url):
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()
    conn = sqlite3.connect(sqlite_path(url))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class File:
    """An input file's identity, as ``siem-plugins ingest`` hands it to the store."""

    def __init__(self, name: str, lines: int, sha256: str) -> None:
        self.name, self.lines, self.sha256 = name, lines, sha256


def test_count_and_last_id_per_account_and_overall(store: EventStore, siem_events: Any) -> None:
    assert (store.count(), store.last_id(), store.last_id("acme")) == (0, 0, 0)
    store.append("acme", (canonicalize(e) for e in siem_events(3)))
    store.append("globex", (canonicalize(e) for e in siem_events(2, seed=2)))
    store.append("acme", (canonicalize(e) for e in siem_events(1, seed=3)))
    assert (store.count(), store.count("acme"), store.count("globex")) == (6, 4, 2)
    assert (store.last_id(), store.last_id("acme"), store.last_id("globex")) == (6, 6, 5)
    assert (store.count("initech"), store.last_id("initech")) == (0, 0)


def test_a_file_is_recorded_once_with_its_ids_and_time(store: EventStore, siem_events: Any) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    file = File("in.ndjson", 5, "ab" * 32)
    first = store.append("acme", [canonicalize(e) for e in siem_events(4)], origin=file)
    assert (first.accepted, first.first_id, first.last_id, first.already) == (4, 1, 4, None)
    record = store.ingested("acme", file.sha256)
    assert record is not None
    assert (record.source, record.lines, record.stored, record.first_id, record.last_id) == (
        "in.ndjson",
        5,
        4,
        1,
        4,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.stored_at), record.stored_at
    stored_at = datetime.strptime(record.stored_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stored_at <= datetime.now(UTC) + timedelta(seconds=1)

    again = store.append("acme", [canonicalize(e) for e in siem_events(4)], origin=file)
    assert (again.accepted, again.first_id, again.last_id, again.already) == (0, None, None, record)
    assert store.count() == 4  # rolled back whole
    assert store.ingested("globex", file.sha256) is None  # per account

    forced = store.append(
        "acme", [canonicalize(e) for e in siem_events(4)], origin=file, force=True
    )
    # New ids after the old ones (PostgreSQL's sequence skips those the rollback drew).
    assert forced.accepted == 4 and forced.first_id is not None and forced.first_id > 4
    assert forced.last_id == forced.first_id + 3
    record = store.ingested("acme", file.sha256)
    assert record is not None and (record.first_id, record.last_id) == (
        forced.first_id,
        forced.last_id,
    )


def test_chunks_keep_ids_consecutive_and_in_order(store: EventStore, siem_events: Any) -> None:
    result = store.append("acme", (canonicalize(e) for e in siem_events(11)), chunk=4)
    assert (result.accepted, result.first_id, result.last_id) == (11, 1, 11)
    raw = [b for batch in store.read_raw("acme", 1, 11) for b in batch]
    assert raw == [canonicalize(e).raw for e in siem_events(11)]


def test_cursor_and_intents_follow_the_protocol(url: str, state: StateStore) -> None:
    one = Intent("acme", SINK, 1, 10, 10, "k1", "2026-01-01T000000Z", "f")
    assert (state.cursor("acme", SINK), state.pending("acme", SINK)) == (0, None)
    state.record(one)
    assert state.pending("acme", SINK) == one
    with pytest.raises(StateError, match=r"^acme/sink already has a pending intent$"):
        state.record(Intent("acme", SINK, 11, 12, 2, "k2", "2026-01-01T000000Z", "f"))
    state.complete(one)
    assert (state.cursor("acme", SINK), state.pending("acme", SINK)) == (10, None)
    (updated_first,) = query(url, "SELECT updated FROM siem_cursor")[0]
    with pytest.raises(StateError, match=r"^no pending intent 1-10 for acme/sink$"):
        state.complete(one)
    with pytest.raises(StateError, match=r"^intent 5-12 overlaps the cursor 10 of acme/sink$"):
        state.record(Intent("acme", SINK, 5, 12, 8, "k2", "2026-01-01T000000Z", "f"))

    time.sleep(0.05)
    two = Intent("acme", SINK, 11, 20, 10, "k2", "2026-01-01T000001Z", "f")
    state.record(two)
    state.discard(two)
    assert state.pending("acme", SINK) is None
    state.record(two)
    state.complete(two)
    (updated_second,) = query(url, "SELECT updated FROM siem_cursor")[0]
    assert updated_second > updated_first  # the upsert stamps the time of each advance
    assert state.cursors() == {("acme", SINK): 20}


def test_start_cursors_set_only_missing_cursors(state: StateStore) -> None:
    assert not state.has_cursor("acme", SINK)
    assert state.start_cursors("acme", {SINK: 40, NOTIFIER: 40}) == {SINK: 40, NOTIFIER: 40}
    assert state.has_cursor("acme", SINK) and state.cursor("acme", NOTIFIER) == 40
    # A cursor that exists is never moved, back or forward.
    assert state.start_cursors("acme", {SINK: 7, NOTIFIER: 90}) == {SINK: 40, NOTIFIER: 40}
    state.record(Intent("acme", SINK, 41, 50, 10, "k", "2026-01-01T000000Z", "f"))
    state.complete(Intent("acme", SINK, 41, 50, 10, "k", "2026-01-01T000000Z", "f"))
    assert state.start_cursors("acme", {SINK: 0}) == {SINK: 50}


def test_replay_jobs_have_a_cursor_of_their_own(state: StateStore) -> None:
    state.record(Intent("acme", SINK, 1, 100, 100, "k", "2026-01-01T000000Z", "f"))
    state.complete(Intent("acme", SINK, 1, 100, 100, "k", "2026-01-01T000000Z", "f"))
    job = ReplayJob("acme", "j1", "acme", 11, 60, '{"to": "b"}', "2026-01-01T00:00:00.000Z",
                    None, "", None, 0, 0)  # fmt: skip
    state.create_replay(job)
    with pytest.raises(StateError, match="already has a replay job named 'j1'"):
        state.create_replay(job)
    (listed,) = state.replay_jobs("acme")
    assert (listed.first_id, listed.last_id, listed.target, listed.since) == (
        11, 60, '{"to": "b"}', "2026-01-01T00:00:00.000Z"
    )  # fmt: skip
    assert listed.created and listed.finished is None and listed.destination == "replay:j1"
    assert state.cursor("acme", "replay:j1") == 10
    one = Intent("acme", "replay:j1", 11, 40, 30, "k1", "2026-01-01T000000Z", "f")
    state.record(one)
    state.replay_progress(listed, one, 30)
    assert state.cursor("acme", "replay:j1") == 40 and state.pending("acme", "replay:j1") is None
    assert state.cursor("acme", SINK) == 100  # the integration's cursor never moves
    state.finish_replay(listed)
    (done,) = state.replay_jobs()
    assert (done.objects, done.events) == (1, 30) and done.finished is not None
    assert not state.has_cursor("acme", "replay:j1")
    assert state.replay_jobs("other") == []


def test_the_run_log_records_start_end_and_counts(url: str, state: StateStore) -> None:
    first = state.run_started("acme", SINK, "host:1:main")
    second = state.run_started("acme", "notifier", "host:1:main")
    assert second > first
    state.run_finished(
        first, integration="acme", destination=SINK, objects=2, events=30, error=None
    )
    state.run_finished(
        second, integration="acme", destination="notifier", objects=0, events=0, error="boom"
    )
    rows = query(
        url,
        "SELECT id, destination, worker, objects, events, error, finished >= started"
        " FROM siem_sync_run ORDER BY id",
    )
    assert [r[:6] for r in rows] == [
        (first, SINK, "host:1:main", 2, 30, None),
        (second, "notifier", "host:1:main", 0, 0, "boom"),
    ]
    assert all(r[6] for r in rows)


def test_the_health_record_follows_every_pass(state: StateStore) -> None:
    def pass_(destination: str, error: str | None, behind: int | None = 0) -> None:
        run = state.run_started("acme", destination, "host:1:main")
        oldest = "2022-07-15T08:55:12.279Z" if behind else None
        state.run_finished(
            run,
            integration="acme",
            destination=destination,
            objects=0,
            events=0,
            error=error,
            behind=behind,
            oldest=oldest,
        )

    assert state.health() == []
    pass_(SINK, None)
    (ok,) = state.health("acme")
    assert (ok.destination, ok.failures, ok.last_error, ok.behind, ok.oldest) == (
        SINK, 0, None, 0, None,
    )  # fmt: skip
    assert ok.last_success == ok.last_attempt and ok.last_attempt.endswith("Z")
    time.sleep(0.01)
    pass_(SINK, "AccessDenied", behind=40)
    pass_(SINK, "AccessDenied again", behind=45)
    pass_("notifier", "smtp down")
    notifier, sink = state.health("acme")  # by destination: "notifier" < "sink"
    assert (sink.failures, sink.last_error, sink.behind, sink.oldest) == (
        2, "AccessDenied again", 45, "2022-07-15T08:55:12.279Z",
    )  # fmt: skip
    assert sink.last_success == ok.last_success < sink.last_attempt  # the success is kept
    assert sink.last_error_at == sink.last_attempt
    assert (notifier.destination, notifier.failures, notifier.last_success) == (
        "notifier", 1, None,
    )  # fmt: skip
    time.sleep(0.01)
    pass_(SINK, None)
    sink = state.health("acme")[1]
    # Recovered: no failure counted, the last error kept for the record, with its time.
    assert (sink.failures, sink.last_error, sink.behind) == (0, "AccessDenied again", 0)
    assert sink.last_success == sink.last_attempt > sink.last_error_at  # type: ignore[operator]
    assert [r.error for r in state.recent_runs("acme", limit=3)] == [
        None, "smtp down", "AccessDenied again",
    ]  # fmt: skip
    assert state.health("nobody") == []


def test_dead_letters_are_set_aside_listed_and_replayed(state: StateStore) -> None:
    state.set_aside("acme", "a1", {7: "bad", 3: "worse", 9: "odd"})
    state.set_aside("acme", "a1", {7: "again"})  # kept as first set aside
    state.set_aside("other", "a2", {3: "x"})
    state.set_aside("acme", "a1", {})
    assert state.set_aside_ids("acme", 3, 7) == frozenset({3, 7})
    letters = state.dead_letters("acme")
    assert [(d.event_id, d.account, d.error) for d in letters] == [
        (3, "a1", "worse"),
        (7, "a1", "bad"),
        (9, "a1", "odd"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d.created) for d in letters)
    assert [d.integration for d in state.dead_letters()] == ["acme"] * 3 + ["other"]

    replay = Intent("acme", REPLAY, 3, 9, 3, "r", "2026-01-01T000000Z", "f")
    state.record(replay)
    state.complete_replay(replay, shipped=[3, 9], errors={7: "still bad"})
    assert state.pending("acme", REPLAY) is None
    assert [(d.event_id, d.error) for d in state.dead_letters("acme")] == [(7, "still bad")]
    assert state.cursor("acme", REPLAY) == 0  # a replay has no cursor


def test_sync_locks_exclude_and_release(state: StateStore) -> None:
    lock = state.try_lock("acme", SINK)
    assert lock is not None
    assert state.try_lock("acme", SINK) is None
    other = state.try_lock("acme", "notifier")
    assert other is not None
    other.release()
    with lock:
        pass
    again = state.try_lock("acme", SINK)
    assert again is not None
    again.release()


def test_sync_locks_of_stores_in_different_schemas_are_independent(pg_url: str) -> None:
    """Advisory locks are per database: the schema is part of the key, so two fleets
    whose stores share a database (same integration names) never block each other."""
    import secrets

    import psycopg

    from siem_plugins.storage import PgState, migrate

    other = f"siem_test_{secrets.token_hex(6)}"
    base = pg_url.split("?", 1)[0]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {other}")
        try:
            other_url = f"{base}?options=-csearch_path%3D{other}"
            migrate(other_url)
            one, two = PgState(pg_url), PgState(other_url)
            try:
                held = one.try_lock("acme", SINK)
                assert held is not None
                assert one.try_lock("acme", SINK) is None  # the same store: taken
                theirs = two.try_lock("acme", SINK)  # another schema: free
                assert theirs is not None
                theirs.release()
                held.release()
            finally:
                one.close()
                two.close()
        finally:
            admin.execute(f"DROP SCHEMA {other} CASCADE")
