"""One pass per (integration, destination) at a time, across threads and processes, on
the SQLite store too; and state that survives a power loss (synchronous=FULL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from siem_plugins.storage import NOTIFIER, SINK, SQLiteStore, State
from tests.helpers import drop_in_folder, local_objects, seqs_in
from tests.test_concurrency import PLUGINS_RUN, siem, write_config

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from siem_plugins.storage import State
    lock = State(Path(sys.argv[1])).try_lock(sys.argv[2], sys.argv[3])
    print("held" if lock is not None else "busy", flush=True)
    time.sleep(600)
""")


def test_sync_locks_exclude_threads_and_processes_and_die_with_their_holder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    state = State(db)
    mine = state.try_lock("acme", SINK)
    assert mine is not None
    assert state.try_lock("acme", SINK) is None  # the same process, another pass
    other = state.try_lock("acme", NOTIFIER)  # the other destination is independent
    assert other is not None
    other.release()
    mine.release()

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), "acme", SINK], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert state.try_lock("acme", SINK) is None
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
        holder.wait(10)
        again = state.try_lock("acme", SINK)
        assert again is not None
        again.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        state.close()


def test_sync_beside_run_says_another_process_is_syncing(tmp_path: Path) -> None:
    from siem_plugins.demo import generate
    from siem_plugins.events import canonicalize

    total = 40_000
    store = SQLiteStore(tmp_path / "s.db")
    store.append(
        "acme", (canonicalize({**e, "seq": i}) for i, e in enumerate(generate(total, seed=3)))
    )
    store.close()
    cfg = write_config(tmp_path, interval="1h", max_events=2000)
    plugins = drop_in_folder(tmp_path / "plugins", PLUGINS_RUN)
    cfg.write_text(f'plugins_dir = "{plugins}"\n' + cfg.read_text())
    # 50 ms per object: `run` is mid-backlog for >= 1 s whatever the machine's speed.
    run = siem("run", "-c", str(cfg), env={"SIEM_TEST_PACE": "0.05"})
    try:
        out = tmp_path / "out"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.gz"))) < 2:
            time.sleep(0.02)
        busy = subprocess.run(
            [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SIEM_TEST_PACE": "0"},
        )
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert (
            "acme: SKIPPED sink: another process is syncing acme; nothing was written"
            in busy.stdout
        ), busy.stdout + busy.stderr
        assert "Traceback" not in busy.stderr and "pending intent" not in busy.stderr
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    final = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}


def test_state_and_ingest_commits_are_durable(tmp_path: Path) -> None:
    """With synchronous=NORMAL a power loss can undo the last commits of a WAL database:
    a vanished intent would cut a second key for events already uploaded. FULL (2)
    puts every commit on disk before it returns."""
    state = State(tmp_path / "s.db")
    store = SQLiteStore(tmp_path / "s.db")
    try:
        for conn in (state._conns.get(), store._conns.get()):
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        state.close()
        store.close()
