"""Separate processes: ingest while syncing (SQLite WAL), and SIGTERM during `run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from siem_plugins.storage import SINK, SQLiteStore, State
from tests.helpers import drop_in_folder, local_objects, seqs_in

INGESTER = textwrap.dedent("""
    import sys, time
    from siem_plugins.storage import SQLiteStore
    from siem_plugins.demo import generate
    from siem_plugins.events import canonicalize
    path, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = SQLiteStore(__import__("pathlib").Path(path))
    events = list(generate(batches * size, seed=5))
    for b in range(batches):
        chunk = [{**e, "seq": b * size + i} for i, e in enumerate(events[b * size:(b + 1) * size])]
        store.append("acme", (canonicalize(e) for e in chunk), chunk=97)
        time.sleep(0.02)
    print("ingested", batches * size)
""")

PLUGINS_RUN = Path(__file__).parent / "plugins_run"


def write_config(tmp_path: Path, interval: str = "1s", max_events: int = 700) -> Path:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
interval = "{interval}"
[store]
url = "sqlite:///{tmp_path / "s.db"}"
[[integration]]
name = "acme"
format = "json"
max_events = {max_events}
[integration.sink]
type = "local"
path = "{tmp_path / "out"}"
[integration.notify]
type = "outbox"
path = "{tmp_path / "outbox"}"
from = "s@example.com"
to = ["a@example.com"]
events = ["config"]
""")
    return cfg


def siem(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_ingest_while_syncing_skips_nothing_and_never_fails_locked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    SQLiteStore(tmp_path / "s.db").close()
    batches, size = 40, 250
    ingester = subprocess.Popen(
        [sys.executable, "-c", INGESTER, str(tmp_path / "s.db"), str(batches), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    syncs = 0
    errors = []
    while ingester.poll() is None or syncs < 2:
        proc = siem("sync", "-c", str(cfg), "--no-progress")
        _, err = proc.communicate(timeout=120)
        syncs += 1
        if proc.returncode != 0 or "locked" in err:
            errors.append(err)
    _out, err = ingester.communicate(timeout=60)
    assert ingester.returncode == 0, err
    assert "locked" not in err
    final = siem("sync", "-c", str(cfg), "--no-progress")
    _, ferr = final.communicate(timeout=120)
    assert final.returncode == 0, ferr
    assert errors == []
    seen = Counter(s for data in local_objects(tmp_path / "out").values() for s in seqs_in(data))
    assert sorted(seen) == list(range(batches * size)) and set(seen.values()) == {1}
    assert syncs >= 3


@pytest.mark.slow
def test_sigterm_during_run_finishes_in_flight_object_then_resumes(tmp_path: Path) -> None:
    from siem_plugins.demo import generate
    from siem_plugins.events import canonicalize

    total = 60_000
    store = SQLiteStore(tmp_path / "s.db")
    store.append(
        "acme", (canonicalize({**e, "seq": i}) for i, e in enumerate(generate(total, seed=9)))
    )
    store.close()
    cfg = write_config(tmp_path, interval="1h", max_events=2000)
    # 50 ms after each object: the backlog takes >= 1.5 s however fast the machine, so
    # the SIGTERM always lands while objects remain.
    plugins = drop_in_folder(tmp_path / "plugins", PLUGINS_RUN)
    cfg.write_text(f'plugins_dir = "{plugins}"\n' + cfg.read_text())
    run = siem("run", "-c", str(cfg), env={"SIEM_TEST_PACE": "0.05"})
    out_dir = tmp_path / "out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out_dir.rglob("*.gz"))) < 3:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    written = list(out_dir.rglob("*.gz"))
    assert 3 <= len(written) < total // 2000, "SIGTERM should stop before the backlog is done"
    assert not [p for p in out_dir.rglob(".*")], "no temporary (partial) files left"
    state = State(tmp_path / "s.db")
    cursor = state.cursor("acme", SINK)
    assert state.pending("acme", SINK) is None  # the in-flight object was finished
    state.close()
    assert cursor == 2000 * len(written)
    # The next start resumes: nothing lost, nothing doubled.
    again = siem("sync", "-c", str(cfg), "--no-progress")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    seen = Counter(s for data in local_objects(out_dir).values() for s in seqs_in(data))
    assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}


def test_sigterm_delivered_to_a_worker_thread_still_stops_run(tmp_path: Path) -> None:
    """Python runs signal handlers in the main thread only. When the kernel hands the
    signal to another thread (a busy sync thread), a main thread blocked in a long wait
    never ran the handler: `run` ignored SIGTERM until its next tick (1 h here)."""
    cfg = write_config(tmp_path, interval="1h")
    plugins = drop_in_folder(tmp_path / "plugins", PLUGINS_RUN)
    cfg.write_text(f'plugins_dir = "{plugins}"\n' + cfg.read_text())
    seed = (Path(__file__).parent / "data" / "seed_events.ndjson").read_bytes()
    ingest = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "ingest", "-c", str(cfg), "--account", "acme", "-"],
        input=seed,
        capture_output=True,
    )
    assert ingest.returncode == 0, ingest.stderr
    run = siem("run", "-c", str(cfg), env={"SIEM_TEST_SIGNAL_IN_THREAD": "1"})
    try:
        _, err = run.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        run.kill()
        _, err = run.communicate()
        pytest.fail(f"run ignored a SIGTERM delivered to its sync thread:\n{err}")
    assert run.returncode == 0, err
    assert "SIGTERM: finishing in-flight objects, then stopping" in err
    assert len(list((tmp_path / "out").rglob("*.gz"))) == 1
