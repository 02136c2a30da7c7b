"""Retention numbers for docs/deployment.md: how long a prune of N shipped events takes,
and what it costs a writer that ingests at the same time (another process).

  python benchmarks/prune.py [--events 1000000] [--seconds 20] [--pg] [--pause 0.11]

For each store (SQLite; with --pg also the PostgreSQL server of the test suite,
SIEM_TEST_PG_URL): N shipped events of one account, then

1. ingest alone: a writer process appends files of 5,000 events for --seconds;
2. prune alone: ``retention.prune`` of the N events (default batch, --pause);
3. both: the same prune on a fresh copy while the writer appends.

Prints the prune time, the writer's events/s and its slowest file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from siem_plugins.demo import generate
from siem_plugins.events import canonicalize
from siem_plugins.kinds import Intent
from siem_plugins.retention import DEFAULT_PAUSE, prune
from siem_plugins.storage import NOTIFIER, SINK, open_state, open_store

PG_BASE = os.environ.get("SIEM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
FILE_EVENTS = 5000


def writer(url: str, seconds: float, stop_file: str) -> None:
    """The ingesting process: append files of FILE_EVENTS events until time is up or
    ``stop_file`` exists; prints each file's (start, end) wall-clock times."""
    records = [canonicalize(e) for e in generate(FILE_EVENTS, seed=7)]
    store = open_store(url)
    files = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(stop_file):
        began = time.time()
        assert store.append("globex", records).accepted == FILE_EVENTS
        files.append((began, time.time()))
    store.close()
    print(json.dumps(files))


def start_writer(url: str, seconds: float, stop_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--writer", url, str(seconds), str(stop_file)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], window: tuple[float, float] | None = None) -> Any:
    """events/s and the slowest file, of the files that ended inside ``window``."""
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"writer failed ({proc.returncode})")
    files = json.loads(out)
    if window is None:
        window = (files[0][0], files[-1][1])
    inside = [(a, b) for a, b in files if window[0] <= b <= window[1]]
    return {
        "rate": len(inside) * FILE_EVENTS / (window[1] - window[0]),
        "slowest": max(b - a for a, b in inside),
        "files": len(inside),
    }


def fill(url: str, events: int) -> None:
    store, state = open_store(url), open_state(url)
    records = [canonicalize(e) for e in generate(min(events, 100_000))]
    left = events
    while left:
        n = min(left, len(records))
        store.append("acme", records[:n])
        left -= n
    top = store.last_id("acme")
    for d in (SINK, NOTIFIER):
        intent = Intent("acme", d, 1, top, top, "k", "t", "f")
        state.record(intent)
        state.complete(intent)
    store.close()
    state.close()


def timed_prune(url: str, pause: float) -> float:
    store, state = open_store(url), open_state(url)
    began = time.monotonic()
    report = prune(store, state, {"acme": ("acme",), "globex": ("globex",)}, pause=pause)
    took = time.monotonic() - began
    assert report.accounts[0].pruned.count > 0, report.lines()
    store.close()
    state.close()
    return took


def scenario(name: str, fresh: Any, events: int, seconds: float, work: Path, pause: float) -> None:
    stop_file = work / "stop"
    url = fresh()
    alone = finish(start_writer(url, seconds, stop_file))
    url = fresh()
    prune_alone = timed_prune(url, pause)
    url = fresh()
    proc = start_writer(url, 3600, stop_file)
    time.sleep(2)  # the writer is writing
    began = time.time()
    took = timed_prune(url, pause)
    window = (began, time.time())
    stop_file.touch()
    both = finish(proc, window)
    stop_file.unlink()
    print(f"{name}: prune of {events:,} shipped events: {prune_alone:.1f} s alone, ", end="")
    print(f"{took:.1f} s beside the writer")
    for label, r in (("alone", alone), ("during the prune", both)):
        print(
            f"{name}: ingest {label}: {r['rate']:,.0f} events/s ({r['files']} files), "
            f"slowest file of {FILE_EVENTS:,} events {r['slowest']:.2f} s"
        )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--writer":
        writer(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pg", action="store_true", help="also on PostgreSQL")
    parser.add_argument(
        "--pause", type=float, default=DEFAULT_PAUSE, help="seconds between two batches"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="siem-prune-"))
    try:
        master = work / "master.db"
        fill(f"sqlite:///{master}", args.events)
        copies = iter(range(1000))

        def fresh_sqlite() -> str:
            path = work / f"copy{next(copies)}.db"
            shutil.copyfile(master, path)
            return f"sqlite:///{path}"

        scenario("SQLite", fresh_sqlite, args.events, args.seconds, work, args.pause)
        if args.pg:
            import psycopg

            from siem_plugins.storage import migrate

            def fresh_pg() -> str:
                with psycopg.connect(PG_BASE, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA IF EXISTS siem_prune_bench CASCADE")
                    conn.execute("CREATE SCHEMA siem_prune_bench")
                url = f"{PG_BASE}?options=-csearch_path%3Dsiem_prune_bench"
                migrate(url)
                fill(url, args.events)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE siem_event")
                return url

            try:
                scenario("PostgreSQL", fresh_pg, args.events, args.seconds, work, args.pause)
            finally:
                with psycopg.connect(PG_BASE, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA IF EXISTS siem_prune_bench CASCADE")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
