"""Capacity numbers for docs/deployment.md: one sync process on the PostgreSQL store.

  python benchmarks/capacity.py [--events 300000] [--integrations 200]

1. throughput: one integration with a backlog of N events, PostgreSQL -> JSON+gzip ->
   local sink, measured around the real CLI (`siem-plugins sync`);
2. fixed cost per sync: M integrations with 20 new events each, synced by one process.
Needs the PostgreSQL server of the test suite (SIEM_TEST_PG_URL, default local).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from siem_plugins.demo import generate
from siem_plugins.events import canonicalize
from siem_plugins.storage import PostgresStore, migrate

BASE = os.environ.get("SIEM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
INTEGRATION = """
[[integration]]
name = "{name}"
format = "json"
max_events = 250000
max_bytes = "512 MiB"
sink = {{ type = "local", path = "{out}" }}
notify = {{ type = "outbox", path = "{out}-outbox", from = "s@example.com", to = ["a@example.com"], events = ["config"] }}
"""


def fresh_schema(name: str) -> str:
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute(f"CREATE SCHEMA {name}")
    url = f"{BASE}?options=-csearch_path%3D{name}"
    migrate(url)
    return url


def timed_sync(config: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "sync", "-c", str(config), "--no-progress"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return elapsed


def startup() -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "siem_plugins", "--version"], check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--integrations", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="siem-capacity-"))
    try:
        base = startup()
        url = fresh_schema("siem_capacity_a")
        store = PostgresStore(url)
        records = [canonicalize(e) for e in generate(args.events)]
        t = time.perf_counter()
        store.append("acme", records, chunk=10_000)
        ingest = args.events / (time.perf_counter() - t)
        store.close()
        cfg = work / "a.toml"
        cfg.write_text(
            f'[store]\nurl = "{url}"\n' + INTEGRATION.format(name="acme", out=work / "a")
        )
        elapsed = timed_sync(cfg)
        rate = args.events / (elapsed - base)

        url = fresh_schema("siem_capacity_b")
        store = PostgresStore(url)
        small = [canonicalize(e) for e in generate(20)]
        text = f'[store]\nurl = "{url}"\n'
        for i in range(args.integrations):
            store.append(f"a{i}", small)
            text += INTEGRATION.format(name=f"a{i}", out=work / "b")
        store.close()
        cfg = work / "b.toml"
        cfg.write_text(text)
        per_sync = (timed_sync(cfg) - base) / args.integrations
        print(f"process start-up: {base * 1000:.0f} ms")
        print(f"COPY ingest (one writer): {ingest:,.0f} events/s")
        print(
            f"sync throughput (one process, {args.events:,} events, JSON+gzip, local sink): "
            f"{rate:,.0f} events/s"
        )
        print(
            f"fixed cost per sync ({args.integrations} integrations x 20 events): "
            f"{per_sync * 1000:.1f} ms"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(BASE, autocommit=True) as conn:
            for name in ("siem_capacity_a", "siem_capacity_b"):
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


if __name__ == "__main__":
    main()
