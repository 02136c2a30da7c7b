"""Retention (``siem-plugins prune``, ``[retention]`` of ``run``): only events that every
integration of their account has shipped go; dead letters, pending intents, disabled
integrations, orphan accounts and ``--older-than`` keep theirs. Each storage and safety
test runs on SQLite and on the real PostgreSQL server; ingest keeps working during a
prune (another process writing)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from siem_plugins.config import config_from_dict
from siem_plugins.events import canonicalize
from siem_plugins.host import create_host
from siem_plugins.kinds import Intent
from siem_plugins.pipeline import Pipeline
from siem_plugins.retention import PRUNE_LOCK, cutoff, plan, prune, shippers_of
from siem_plugins.runtime import Runtime
from siem_plugins.scheduler import Scheduler
from siem_plugins.storage import (
    NOTIFIER,
    REPLAY,
    SINK,
    EventStore,
    PgState,
    PostgresStore,
    Pruned,
    StateStore,
    open_state,
    open_store,
)
from siem_plugins.storage.eventstore import segments
from tests.helpers import local_objects, numbered, seqs_in

REDIS = os.environ.get("SIEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


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


def add(store: EventStore, account: str, n: int, *, start: datetime | None = None) -> list[int]:
    """Store ``n`` events for the account; their ids."""
    from siem_plugins.demo import generate

    result = store.append(account, (canonicalize(e) for e in generate(n, start=start)))
    assert result.first_id is not None and result.last_id is not None
    return list(range(result.first_id, result.last_id + 1))


def ship(state: StateStore, integration: str, destination: str, up_to: int) -> None:
    """Move a cursor to ``up_to`` the way a pass does: record an intent, complete it."""
    first = state.cursor(integration, destination) + 1
    intent = Intent(integration, destination, first, up_to, up_to - first + 1, "k", "t", "f")
    state.record(intent)
    state.complete(intent)


def ids_of(store: EventStore, account: str) -> list[int]:
    return [e.id for batch in store.read(account, 1, 10**12) for e in batch]


def fast(store: EventStore, state: StateStore, shippers: Any, **kw: Any) -> Any:
    """A prune without the pause between batches (the tests' own batches are tiny)."""
    return prune(store, state, shippers, pause=0, **kw)


# --------------------------------------------------------------------------- storage


def test_segments_leave_out_every_kept_range() -> None:
    assert segments(10, ()) == [(0, 11)]
    assert segments(10, [(3, 3), (5, 7)]) == [(0, 3), (3, 5), (7, 11)]
    assert segments(10, [(1, 1), (4, 8), (6, 12)]) == [(1, 4)]
    assert segments(10, [(11, 20)]) == [(0, 11)]
    assert segments(0, ()) == []


def test_prune_deletes_in_batches_below_max_id_outside_keep(store: EventStore) -> None:
    acme = add(store, "acme", 30)
    globex = add(store, "globex", 5)
    keep = [(3, 3), (10, 12)]
    would = store.prunable("acme", 25, keep=keep)
    assert would == Pruned(21, 1, 25)
    assert ids_of(store, "acme") == acme  # a dry count deletes nothing
    done = store.prune("acme", 25, keep=keep, batch=4, pause=0)
    assert done == would
    assert ids_of(store, "acme") == [3, 10, 11, 12, 26, 27, 28, 29, 30]
    assert ids_of(store, "globex") == globex  # another account's ids are never touched
    assert store.prune("acme", 25, keep=keep, batch=4, pause=0) == Pruned()
    assert store.accounts() == ["acme", "globex"]
    store.prune("globex", 10**9, batch=100, pause=0)
    assert store.accounts() == ["acme"]


def test_prune_by_age_keeps_younger_events_whatever_their_id(store: EventStore) -> None:
    old = add(store, "acme", 6, start=datetime(2020, 1, 1, tzinfo=UTC))
    young = add(store, "acme", 4, start=datetime.now(UTC) - timedelta(days=1))
    older = add(store, "acme", 3, start=datetime(2019, 1, 1, tzinfo=UTC))
    limit = cutoff(30 * 86_400)
    assert store.prunable("acme", 12, older_than=limit) == Pruned(8, 1, 12)
    assert store.prune("acme", 12, older_than=limit, batch=2, pause=0) == Pruned(8, 1, 12)
    assert ids_of(store, "acme") == [*young, older[-1]]
    assert old[0] not in ids_of(store, "acme")


def test_prune_stops_between_batches(store: EventStore) -> None:
    add(store, "acme", 20)
    stop = threading.Event()
    stop.set()
    assert store.prune("acme", 20, batch=5, stop=stop) == Pruned()
    assert store.count("acme") == 20


def test_cutoff_is_the_canonical_form_and_survives_absurd_ages() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert cutoff(86_400, now) == "2026-02-28T12:00:00.123Z"
    assert cutoff(1e18, now) == "0001-01-01T00:00:00.000Z"


# --------------------------------------------------------------------------- safety


def test_two_integrations_at_different_cursors_keep_what_either_has_not_done(
    store: EventStore, state: StateStore
) -> None:
    acme = add(store, "acme", 20)
    globex = add(store, "globex", 5)
    ship(state, "acme-json", SINK, 15)
    ship(state, "acme-json", NOTIFIER, 20)
    ship(state, "acme-syslog", SINK, 20)
    ship(state, "acme-syslog", NOTIFIER, 8)
    shippers = {"acme": ("acme-json", "acme-syslog"), "globex": ("globex",)}

    report = fast(store, state, shippers)
    assert ids_of(store, "acme") == acme[8:]  # up to the lowest cursor, 8
    assert ids_of(store, "globex") == globex  # its integration shipped nothing
    by_account = {o.plan.account: o for o in report.accounts}
    assert by_account["acme"].pruned == Pruned(8, 1, 8)
    assert by_account["acme"].plan.lowest == "acme-syslog/notifier"
    assert report.lines()[0] == (
        "acme: deleted 8 events (ids 1-8); shipped up to id 8 (lowest cursor: acme-syslog/notifier)"
    )

    ship(state, "acme-syslog", NOTIFIER, 20)
    fast(store, state, shippers)
    assert ids_of(store, "acme") == acme[15:]  # now acme-json's sink, 15, is the lowest


def test_a_disabled_integration_keeps_its_backlog(
    url: str, store: EventStore, state: StateStore, tmp_path: Path
) -> None:
    acme = add(store, "acme", 10)
    for name in ("on", "off"):
        ship(state, name, SINK, 10)
    ship(state, "on", NOTIFIER, 10)
    ship(state, "off", NOTIFIER, 4)  # disabled before its notifier caught up
    cfg = config_from_dict(
        {
            "store": {"url": url},
            "integration": [
                {
                    "name": name,
                    "account": "acme",
                    "enabled": name == "on",
                    "format": "json",
                    "sink": {"type": "local", "path": str(tmp_path / name)},
                    "notify": {
                        "type": "outbox",
                        "path": str(tmp_path),
                        "from": "s@example.com",
                        "to": ["a@example.com"],
                        "events": ["config"],
                    },
                }
                for name in ("on", "off")
            ],
        }
    )
    shippers = shippers_of(cfg.integrations)
    assert shippers == {"acme": ("on", "off")}
    fast(store, state, shippers)
    assert ids_of(store, "acme") == acme[4:]


def test_dead_letters_stay_until_replayed(store: EventStore, state: StateStore) -> None:
    add(store, "acme", 10)
    for d in (SINK, NOTIFIER):
        ship(state, "acme", d, 10)
    state.set_aside("acme", "acme", {3: "bad", 7: "worse"})
    state.set_aside("retired", "acme", {9: "set aside by an integration since removed"})
    fast(store, state, {"acme": ("acme",)})
    assert ids_of(store, "acme") == [3, 7, 9]
    assert [e.id for b in store.read("acme", 3, 3) for e in b] == [3]  # still replayable

    replay = Intent("acme", REPLAY, 3, 7, 2, "r", "t", "f")
    state.record(replay)
    state.complete_replay(replay, shipped=[3], errors={7: "still bad"})
    fast(store, state, {"acme": ("acme",)})
    assert ids_of(store, "acme") == [7, 9]


def test_a_pending_intent_keeps_its_whole_range(store: EventStore, state: StateStore) -> None:
    acme = add(store, "acme", 12)
    for d in (SINK, NOTIFIER):
        ship(state, "acme", d, 10)
    # A replay intent lies below the sink cursor; its range stays until it completes.
    state.set_aside("acme", "acme", {4: "x", 6: "y"})
    state.record(Intent("acme", REPLAY, 4, 6, 2, "r", "t", "f"))
    # A sink intent past the cursor (a pass in flight) is above what may go anyway.
    state.record(Intent("acme", SINK, 11, 12, 2, "s", "t", "f"))
    plans = plan(store, state, {"acme": ("acme",)})
    assert [(p.up_to, p.keep) for p in plans] == [(10, ((4, 4), (4, 6), (6, 6)))]
    fast(store, state, {"acme": ("acme",)})
    assert ids_of(store, "acme") == [4, 5, 6, 11, 12]
    assert acme[-2:] == [11, 12]


def test_accounts_no_integration_ships_are_kept_unless_asked(
    store: EventStore, state: StateStore
) -> None:
    initech = add(store, "initech", 5)
    state.set_aside("gone", "initech", {2: "bad"})
    report = fast(store, state, {})
    assert ids_of(store, "initech") == initech
    assert report.lines() == [
        "initech: kept: no integration ships this account (--orphans deletes its events)",
        f"total: deleted 0 events of 0 account(s) in {report.seconds:.1f}s",
    ]
    report = fast(store, state, {}, orphans=True, dry_run=True)
    assert report.lines()[0] == (
        "initech: would delete 4 events (ids 1-5); no integration ships this account (--orphans)"
    )
    assert ids_of(store, "initech") == initech
    fast(store, state, {}, orphans=True)
    assert ids_of(store, "initech") == [2]  # its dead letter stays


def test_older_than_spares_younger_events_even_when_shipped(
    store: EventStore, state: StateStore
) -> None:
    old = add(store, "acme", 5, start=datetime(2021, 5, 1, tzinfo=UTC))
    young = add(store, "acme", 5, start=datetime.now(UTC) - timedelta(hours=2))
    for d in (SINK, NOTIFIER):
        ship(state, "acme", d, 10)
    before = cutoff(86_400)
    report = fast(store, state, {"acme": ("acme",)}, older_than=86_400, dry_run=True)
    assert report.count == 5 and report.older_than is not None
    assert before <= report.older_than <= cutoff(86_400)
    fast(store, state, {"acme": ("acme",)}, older_than=86_400)
    assert ids_of(store, "acme") == young
    assert not set(old) & set(ids_of(store, "acme"))


def test_a_second_prune_is_skipped_while_one_holds_the_lock(
    store: EventStore, state: StateStore
) -> None:
    add(store, "acme", 5)
    for d in (SINK, NOTIFIER):
        ship(state, "acme", d, 5)
    lock = state.try_lock(*PRUNE_LOCK)
    assert lock is not None
    with lock:
        report = fast(store, state, {"acme": ("acme",)})
        assert report.skipped == "another process is pruning this store" and report.failed
        assert store.count("acme") == 5
        assert fast(store, state, {"acme": ("acme",)}, dry_run=True).count == 5
    fast(store, state, {"acme": ("acme",)})
    assert store.count("acme") == 0


# --------------------------------------------------------------------------- end to end


def shipping_runtime(url: str, tmp_path: Path, **retention: Any) -> Runtime:
    raw: dict[str, Any] = {
        "store": {"url": url},
        "integration": [
            {
                "name": f"acme-{fmt}",
                "account": "acme",
                "format": fmt,
                "max_events": 7,
                "sink": {"type": "local", "path": str(tmp_path / fmt)},
                "notify": {
                    "type": "outbox",
                    "path": str(tmp_path / "outbox"),
                    "from": "s@example.com",
                    "to": ["a@example.com"],
                    "events": ["config"],
                },
            }
            for fmt in ("json", "syslog")
        ],
    }
    if retention:
        raw["retention"] = retention
    return Runtime(config_from_dict(raw), create_host(None, entry_points=False, disabled=()))


def test_a_prune_between_syncs_loses_no_event_of_either_integration(
    url: str, store: EventStore, tmp_path: Path, siem_events: Any
) -> None:
    store.append("acme", (canonicalize(e) for e in numbered(siem_events(40))))
    rt = shipping_runtime(url, tmp_path)
    try:
        shippers = shippers_of(rt.config.integrations)
        pipeline = Pipeline(rt)
        json_integ, syslog_integ = rt.integrations
        assert pipeline.sync(json_integ).ok
        fast(store, rt.state, shippers)
        assert store.count("acme") == 40  # acme-syslog has shipped nothing yet
        store.append("acme", (canonicalize(e) for e in numbered(siem_events(15), 41)))
        assert pipeline.sync(syslog_integ).ok
        report = fast(store, rt.state, shippers)
        assert report.count == 40 and store.count("acme") == 15
        assert pipeline.sync(json_integ).ok and pipeline.sync(syslog_integ).ok
        fast(store, rt.state, shippers)
        assert store.count("acme") == 0
    finally:
        rt.close()
    shipped = [s for data in local_objects(tmp_path / "json").values() for s in seqs_in(data)]
    assert sorted(shipped) == list(range(1, 56))
    lines = [ln for data in local_objects(tmp_path / "syslog").values() for ln in data.splitlines()]
    assert len(lines) == 55


def test_run_prunes_on_its_own_schedule(
    url: str, store: EventStore, tmp_path: Path, siem_events: Any
) -> None:
    store.append("acme", (canonicalize(e) for e in numbered(siem_events(30))))
    rt = shipping_runtime(url, tmp_path, every=1)
    assert rt.config.retention.enabled and rt.config.retention.every == 1
    try:
        Scheduler(rt, interval=1).run(max_cycles=3)
    finally:
        rt.close()
    assert store.count("acme") == 0
    shipped = [s for data in local_objects(tmp_path / "json").values() for s in seqs_in(data)]
    assert sorted(shipped) == list(range(1, 31))


# --------------------------------------------------------------------------- concurrency


def ndjson(path: Path, n: int, seed: int) -> Path:
    from siem_plugins.demo import generate

    path.write_text("".join(json.dumps(e) + "\n" for e in generate(n, seed=seed)))
    return path


INGEST = (sys.executable, "-m", "siem_plugins", "ingest", "--account", "acme")


@pytest.mark.slow
def test_ingest_in_another_process_keeps_working_during_a_prune(
    url: str, store: EventStore, state: StateStore, tmp_path: Path
) -> None:
    """A prune of 60,000 shipped events (30 batches, ~3 s) while ``siem-plugins ingest``
    stores file after file from another process: every file is stored, none fails for
    a lock, and the prune deletes exactly the shipped events, none of the new ones."""
    shipped = 60_000
    add(store, "acme", shipped)
    for d in (SINK, NOTIFIER):
        ship(state, "acme", d, shipped)
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SIEM_CONFIG", None)
    pruned: list[Pruned] = []

    def pruner() -> None:
        report = prune(store, state, {"acme": ("acme",)}, batch=2000)
        pruned.append(report.accounts[0].pruned)

    thread = threading.Thread(target=pruner)
    thread.start()
    results: list[subprocess.CompletedProcess[str]] = []
    during = 0
    for i in range(40):
        f = ndjson(tmp_path / f"in{i}.ndjson", 500, seed=i)
        results.append(
            subprocess.run(
                [*INGEST, "--store", url, str(f)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        )
        if not thread.is_alive():
            break
        during += 1  # this ingest ended while the prune was still going
    thread.join()
    assert pruned == [Pruned(shipped, 1, shipped)]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert not [r.stderr for r in results if "locked" in r.stderr]
    assert store.count("acme") == 500 * len(results)
    assert ids_of(store, "acme")[0] == shipped + 1
    assert during >= 2, "the prune ended before two ingests could overlap it"


# --------------------------------------------------------------------------- config, CLI

BASE = """
[store]
url = "sqlite:///{db}"
[[integration]]
name = "acme"
format = "json"
sink = {{ type = "local", path = "{out}" }}
notify = {{ type = "outbox", path = "{out}-outbox", from = "s@example.com", to = ["a@example.com"], events = ["config"] }}
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "siem.toml"
    path.write_text(BASE.format(db=tmp_path / "s.db", out=tmp_path / "out") + extra)
    return path


def test_the_retention_table_and_its_defaults(tmp_path: Path) -> None:
    from siem_plugins.config import load_config

    assert not load_config(write_config(tmp_path)).retention.enabled
    on = load_config(write_config(tmp_path, "[retention]\n")).retention
    assert (on.enabled, on.older_than, on.every, on.orphans, on.batch) == (
        True,
        None,
        86_400,
        False,
        5000,
    )
    full = load_config(
        write_config(
            tmp_path,
            '[retention]\nolder_than = "30d"\nevery = "12h"\norphans = true\nbatch = 1000\n',
        )
    ).retention
    assert (full.older_than, full.every, full.orphans, full.batch) == (
        2_592_000,
        43_200,
        True,
        1000,
    )
    assert not load_config(
        write_config(tmp_path, "[retention]\nenabled = false\n")
    ).retention.enabled
    assert config_from_dict({"interval": "1d"}).interval == 86_400  # the unit is general


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'olderthan = "30d"',
            "retention.olderthan: unknown setting 'olderthan' (did you mean 'older_than'?)",
        ),
        (
            'older_than = "a month"',
            'retention.older_than: expected a duration such as 300, "30s", "5m", "1h" or "30d", got',
        ),
        ('every = "60d"', "retention.every: must be at most 30 days (2592000 seconds)"),
        ("batch = 10", "retention.batch: "),
        ('enabled = "yes"', "retention.enabled: "),
    ],
)
def test_retention_errors_are_located(tmp_path: Path, table: str, message: str) -> None:
    from siem_plugins.config import load_config
    from siem_plugins.options import ConfigError

    path = write_config(tmp_path, f"[retention]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_retention_needs_the_built_in_store(tmp_path: Path) -> None:
    from siem_plugins.config import load_config
    from siem_plugins.options import ConfigError

    text = BASE.replace("[store]\n", '[store]\ntype = "kafka"\n') + "[retention]\n"
    path = tmp_path / "siem.toml"
    path.write_text(text.format(db=tmp_path / "s.db", out=tmp_path / "out"))
    with pytest.raises(ConfigError, match="retention: retention deletes from the built-in store"):
        load_config(path)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SIEM_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_prune_command_reports_then_deletes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store, state = open_store(url), open_state(url)
    try:
        add(store, "acme", 10)
        add(store, "initech", 3)
        ship(state, "acme", SINK, 6)
        ship(state, "acme", NOTIFIER, 8)
        state.set_aside("acme", "acme", {2: "bad"})
    finally:
        store.close()
        state.close()

    dry = cli("prune", "-c", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "acme: would delete 5 events (ids 1-6); shipped up to id 6 (lowest cursor: acme/sink)",
        "initech: kept: no integration ships this account (--orphans deletes its events)",
        "total: would delete 5 events of 1 account(s)",
    ]
    done = cli("prune", "-c", str(config), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["total"] == {"count": 5, "accounts": 1}
    acme = report["accounts"][0]
    assert (acme["account"], acme["count"], acme["first_id"], acme["last_id"]) == ("acme", 5, 1, 6)
    assert (acme["up_to"], acme["lowest_cursor"], acme["integrations"]) == (
        6,
        "acme/sink",
        ["acme"],
    )
    assert report["accounts"][1]["kept"].startswith("no integration ships this account")

    orphans = cli("prune", "-c", str(config), "--orphans")
    assert orphans.returncode == 0, orphans.stderr
    assert "initech: deleted 3 events (ids 11-13)" in orphans.stdout
    store = open_store(url)
    try:
        assert ids_of(store, "acme") == [2, 7, 8, 9, 10] and store.count("initech") == 0
    finally:
        store.close()


def test_the_prune_command_refuses_bad_input_and_a_second_prune(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bad = cli("prune", "-c", str(config), "--older-than", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith(
        'config error: --older-than: expected a duration such as 300, "30s", "5m", "1h" or "30d"'
    ), bad.stderr
    assert "Traceback" not in bad.stderr
    small = cli("prune", "-c", str(config), "--batch", "5")
    assert small.returncode == 2 and "--batch: must be from 100 to 100000, got 5" in small.stderr
    state = open_state(f"sqlite:///{tmp_path / 's.db'}")
    try:
        lock = state.try_lock(*PRUNE_LOCK)
        assert lock is not None
        with lock:
            busy = cli("prune", "-c", str(config))
    finally:
        state.close()
    assert busy.returncode == 1
    assert busy.stdout.splitlines()[-1] == (
        "skipped: another process is pruning this store; nothing was deleted"
    )


def test_the_prune_command_takes_its_defaults_from_the_retention_table(tmp_path: Path) -> None:
    """``enabled = false`` stops the job of ``run``, yet ``prune`` still follows the
    table's ``older_than``; the command line overrides it."""
    config = write_config(tmp_path, '[retention]\nenabled = false\nolder_than = "30d"\n')
    url = f"sqlite:///{tmp_path / 's.db'}"
    store, state = open_store(url), open_state(url)
    try:
        old = add(store, "acme", 4, start=datetime(2020, 1, 1, tzinfo=UTC))
        young = add(store, "acme", 3, start=datetime.now(UTC) - timedelta(days=2))
        for d in (SINK, NOTIFIER):
            ship(state, "acme", d, 7)
        first = cli("prune", "-c", str(config), "--pause", "0")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("acme: deleted 4 events (ids 1-4);"), first.stdout
        assert ids_of(store, "acme") == young and old == [1, 2, 3, 4]
        second = cli("prune", "-c", str(config), "--older-than", "1d", "--pause", "0")
        assert second.returncode == 0, second.stderr
        assert store.count("acme") == 0
    finally:
        store.close()
        state.close()


def test_sigterm_stops_the_prune_command_between_batches(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store, state = open_store(url), open_state(url)
    try:
        add(store, "acme", 20_000)
        for d in (SINK, NOTIFIER):
            ship(state, "acme", d, 20_000)
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("SIEM_CONFIG", None)
        proc = subprocess.Popen(  # 200 batches, 0.11 s apart: about 25 s
            [sys.executable, "-m", "siem_plugins", "prune", "-c", str(config), "--batch", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while store.count("acme") == 20_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        left = store.count("acme")
    finally:
        store.close()
        state.close()
    assert proc.returncode == 0, err
    assert 0 < left < 20_000 and left % 100 == 0  # whole batches went, the rest stayed
    total = out.splitlines()[-1]
    assert total.startswith(f"total: deleted {20_000 - left} events of 1 account(s) in ")
    assert total.endswith("; stopped before the end, the rest goes next time")


def test_the_prune_command_needs_a_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "prune"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "SIEM_CONFIG"},
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("config error: no config file")
    assert not list(tmp_path.iterdir())  # no store created either


# --------------------------------------------------------------------------- PostgreSQL


def partition_sql() -> list[str]:
    """The SQL of deployment.md's partition section, block by block, as written there."""
    page = (Path(__file__).parent.parent / "docs" / "deployment.md").read_text()
    section = page.split("### PostgreSQL: partitions instead of deletes", 1)[1].split("\n## ")[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_the_documented_partitioning_keeps_working_and_drops_only_shipped_partitions(
    pg_url: str,
) -> None:
    convert, up_to_sql, may_drop_sql, drop_sql = partition_sql()
    store, state = PostgresStore(pg_url), PgState(pg_url)
    try:
        add(store, "acme", 20)
        add(store, "globex", 5)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(convert)
            assert conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM siem_event GROUP BY 1"
            ).fetchall() == [("siem_event_p0", 25)]
        assert add(store, "acme", 3) == [26, 27, 28]  # ingest goes on, into siem_event_p1
        for name in ("acme-json", "acme-syslog"):
            ship(state, name, SINK, 28)
        ship(state, "acme-json", NOTIFIER, 28)
        ship(state, "acme-syslog", NOTIFIER, 10)
        for d in (SINK, NOTIFIER):
            ship(state, "globex-syslog", d, 25)
        shippers = {"acme": ("acme-json", "acme-syslog"), "globex": ("globex-syslog",)}

        def sql(text: str) -> list[tuple[Any, ...]]:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                return conn.execute(text).fetchall()

        # The SQL and the prune agree on what may go.
        assert sql(up_to_sql) == [("acme", 10), ("globex", 25)]
        assert [(p.account, p.up_to) for p in plan(store, state, shippers)] == sql(up_to_sql)
        assert sql(may_drop_sql) == [(False,)]  # acme's events 11-20 are not all shipped
        ship(state, "acme-syslog", NOTIFIER, 28)
        state.set_aside("acme-json", "acme", {5: "bad"})
        assert sql(may_drop_sql) == [(False,)]  # a dead letter must stay replayable
        replay = Intent("acme-json", REPLAY, 5, 5, 1, "r", "t", "f")
        state.record(replay)
        state.complete_replay(replay, shipped=[], errors={5: "still bad"})
        assert sql(may_drop_sql) == [(False,)]
        state.record(replay)
        assert sql(may_drop_sql) == [(False,)]  # the dead letter, and the pending intent
        state.complete_replay(replay, shipped=[5], errors={})
        assert sql(may_drop_sql) == [(True,)]

        with psycopg.connect(pg_url, autocommit=True) as conn:
            for statement in filter(None, (s.strip() for s in drop_sql.split(";"))):
                conn.execute(statement)  # one by one, as psql sends them
            assert conn.execute("SELECT to_regclass('siem_event_p0')").fetchone() == (None,)
        assert ids_of(store, "acme") == [26, 27, 28] and store.accounts() == ["acme"]
        assert add(store, "acme", 2) == [29, 30]  # the sequence survived the drop
        report = fast(store, state, shippers)
        assert report.count == 3 and ids_of(store, "acme") == [29, 30]
    finally:
        store.close()
        state.close()


def test_an_account_that_fails_is_reported_and_the_others_are_still_pruned(pg_url: str) -> None:
    store, state = PostgresStore(pg_url), PgState(pg_url)
    try:
        add(store, "acme", 5)
        add(store, "globex", 5)
        for name in ("acme", "globex"):
            for d in (SINK, NOTIFIER):
                ship(state, name, d, 10)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a real refusal, server-side
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'globex is on legal hold'; END $$;"
                " CREATE TRIGGER hold BEFORE DELETE ON siem_event FOR EACH ROW"
                " WHEN (OLD.account = 'globex') EXECUTE FUNCTION refuse()"
            )
        report = fast(store, state, shippers_of_names("acme", "globex"))
        assert report.failed and store.count("acme") == 0 and store.count("globex") == 5
        assert report.lines()[1] == (
            "globex: FAILED: globex is on legal hold CONTEXT: PL/pgSQL function refuse() line 1"
            " at RAISE; shipped up to id 10 (lowest cursor: globex/notifier)"
        )
    finally:
        store.close()
        state.close()


def shippers_of_names(*names: str) -> dict[str, tuple[str, ...]]:
    """Each integration ships the account of its own name."""
    return {name: (name,) for name in names}


@pytest.mark.slow
def test_the_celery_beat_runs_the_retention_job(pg_url: str, tmp_path: Path) -> None:
    store, state = PostgresStore(pg_url), PgState(pg_url)
    try:
        add(store, "acme", 30)
        for d in (SINK, NOTIFIER):
            ship(state, "acme", d, 25)
    finally:
        store.close()
        state.close()
    config = tmp_path / "siem.toml"
    config.write_text(
        'interval = "1s"\n'
        + BASE.replace("sqlite:///{db}", pg_url).format(out=tmp_path / "out")
        + f'[celery]\nbroker_url = "{REDIS}"\nqueue = "siem-test-{secrets.token_hex(4)}"\n'
        + "[retention]\nevery = 1\n"
    )
    beat = cli("run", "--executor", "celery", "--cycles", "3", "-c", str(config))
    assert beat.returncode == 0, beat.stderr
    assert "retention: total: deleted 25 events of 1 account(s)" in beat.stderr
    store = PostgresStore(pg_url)
    try:
        assert ids_of(store, "acme") == list(range(26, 31))
    finally:
        store.close()
