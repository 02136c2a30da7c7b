"""The PostgreSQL store: migrations, COPY ingest, streaming reads, and no skipped ids
when transactions commit out of id order."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from siem_plugins.config import config_from_dict
from siem_plugins.events import canonicalize
from siem_plugins.host import create_host
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import (
    SCHEMA_VERSION,
    SINK,
    PostgresStore,
    connect,
    migrate,
    schema_version,
)
from tests.helpers import local_objects, numbered, seqs_in


def pg_runtime(url: str, tmp_path: Path, **extra: Any) -> Runtime:
    raw = {
        "store": {"url": url},
        "integration": [
            {
                "name": "acme",
                "format": "json",
                "sink": {"type": "local", "path": str(tmp_path / "out")},
                "notify": {
                    "type": "outbox",
                    "path": str(tmp_path / "outbox"),
                    "from": "s@example.com",
                    "to": ["a@example.com"],
                    "events": ["config"],
                },
                **extra,
            }
        ],
    }
    return Runtime(config_from_dict(raw), create_host(None, entry_points=False, disabled=()))


def test_migrate_is_idempotent(pg_url: str) -> None:
    assert migrate(pg_url) == []
    with connect(pg_url) as conn:
        assert schema_version(conn) == SCHEMA_VERSION


def test_unmigrated_store_is_a_clear_error(pg_url: str) -> None:
    with connect(pg_url) as conn:
        conn.execute("DELETE FROM siem_schema_version")
    with pytest.raises(RuntimeError, match="run `siem-plugins store migrate`"):
        PostgresStore(pg_url)


def test_copy_ingest_and_capped_sync_ship_every_event_once(
    pg_url: str, tmp_path: Path, siem_events: Any
) -> None:
    store = PostgresStore(pg_url)
    result = store.append(
        "acme", (canonicalize(e) for e in numbered(siem_events(7000))), chunk=1000
    )
    assert (result.accepted, result.first_id, result.last_id) == (7000, 1, 7000)
    store.append("other", (canonicalize(e) for e in siem_events(100)))
    store.close()
    rt = pg_runtime(pg_url, tmp_path, max_events=2000, max_bytes="256 KiB")
    res = Pipeline(rt).sync(rt.integrations[0])
    assert res.ok, res.errors
    assert len(res.objects) >= 4
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    assert sorted(seen) == list(range(1, 7001)) and set(seen.values()) == {1}
    assert rt.state.cursor("acme", SINK) == 7000
    rt.close()


def _insert_one(
    conn: psycopg.Connection[Any], seq: int, event: dict[str, Any], *, lock: bool
) -> None:
    c = canonicalize({**event, "seq": seq})
    if lock:
        conn.execute("SELECT siem_append_lock()")
    conn.execute(
        "INSERT INTO siem_event (account, type, log_type, ts, body)"
        " VALUES ('acme', %s, %s, %s, %s)",
        (c.type, c.log_type, c.timestamp, c.raw),
    )


@pytest.mark.parametrize("lock", [False, True], ids=["without-lock", "with-lock"])
def test_out_of_order_commits(pg_url: str, tmp_path: Path, siem_events: Any, lock: bool) -> None:
    """Writer A draws id 1 and holds its transaction open; writer B draws id 2 and commits;
    a sync runs; then A commits. Without the writers' lock the sync ships id 2, moves
    its cursor past id 1, and id 1 is lost for ever: the control shows this test can
    fail. With the lock (what the store's writers do) B waits for A, and nothing is lost."""
    events = siem_events(2)
    rt = pg_runtime(pg_url, tmp_path)
    a = psycopg.connect(pg_url)
    b = psycopg.connect(pg_url)
    _insert_one(a, 1, events[0], lock=lock)  # A: id 1, not committed yet
    b_done = threading.Event()

    def writer_b() -> None:
        _insert_one(b, 2, events[1], lock=lock)
        b.commit()
        b_done.set()

    thread = threading.Thread(target=writer_b)
    thread.start()
    b_done.wait(timeout=1.0)
    assert b_done.is_set() is (not lock)  # with the lock, B waits for A
    first = Pipeline(rt).sync(rt.integrations[0])
    a.commit()
    thread.join(timeout=10)
    second = Pipeline(rt).sync(rt.integrations[0])
    assert first.ok and second.ok
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    if lock:
        assert sorted(seen) == [1, 2] and set(seen.values()) == {1}
    else:
        assert sorted(seen) == [2], "the control lost id 1, as a naive cursor does"
    a.close()
    b.close()
    rt.close()


@pytest.mark.slow
def test_concurrent_writers_with_delayed_commits_while_syncing(
    pg_url: str, tmp_path: Path, siem_events: Any
) -> None:
    """Several writers, each committing small batches after a random delay, while syncs
    run back to back: every event is shipped exactly once."""
    import random

    writers, batches, size = 4, 15, 40
    events = siem_events(writers * batches * size)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            for b in range(batches):
                base = (w * batches + b) * size
                chunk = [{**e, "seq": base + i} for i, e in enumerate(events[base : base + size])]
                with psycopg.connect(pg_url) as conn, conn.transaction():
                    conn.execute("SELECT siem_append_lock()")
                    for e in chunk:
                        c = canonicalize(e)
                        conn.execute(
                            "INSERT INTO siem_event (account, type, log_type, ts, body)"
                            " VALUES ('acme', %s, %s, %s, %s)",
                            (c.type, c.log_type, c.timestamp, c.raw),
                        )
                    time.sleep(rng.uniform(0, 0.03))  # a slow commit
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    rt = pg_runtime(pg_url, tmp_path, max_events=100)
    syncs = 0
    while any(t.is_alive() for t in threads):
        assert Pipeline(rt).sync(rt.integrations[0]).ok
        syncs += 1
    for t in threads:
        t.join()
    assert not errors, errors
    assert Pipeline(rt).sync(rt.integrations[0]).ok
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    total = writers * batches * size
    assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}
    assert syncs >= 5
    rt.close()


def test_sync_command_skips_an_integration_another_process_is_syncing(
    pg_url: str, tmp_path: Path, siem_events: Any
) -> None:
    import json
    import subprocess
    import sys

    store = PostgresStore(pg_url)
    store.append("acme", (canonicalize(e) for e in numbered(siem_events(40))))
    store.close()
    config = tmp_path / "siem.toml"
    notify = {
        "type": "outbox",
        "path": str(tmp_path / "outbox"),
        "from": "s@example.com",
        "to": ["a@example.com"],
        "events": ["config"],
    }
    config.write_text(
        f'[store]\nurl = {json.dumps(pg_url)}\n\n[[integration]]\nname = "acme"\n'
        f'format = "json"\nsink = {{ type = "local", path = {json.dumps(str(tmp_path / "out"))} }}\n'
        f"notify = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in notify.items())} }}\n"
    )

    def sync() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siem_plugins", "sync", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    rt = pg_runtime(pg_url, tmp_path)
    held = rt.state.try_lock("acme", SINK)  # as a `run` or a worker syncing it would
    assert held is not None
    with held:
        busy = sync()
    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert "acme: SKIPPED sink: another process is syncing acme" in busy.stdout
    assert not (tmp_path / "out").exists()
    free = sync()
    assert free.returncode == 0, free.stdout + free.stderr
    assert "acme: ok: 1 objects, 40 events" in free.stdout
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    assert sorted(seen) == list(range(1, 41)) and set(seen.values()) == {1}
    assert rt.state.cursor("acme", SINK) == 40
    rt.close()
