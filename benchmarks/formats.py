"""The structured formats against the spec's JSON: ``python -m benchmarks.formats``.

Each case is the real CLI (``siem-plugins sync``, one process per run) shipping the
benchmark dataset (benchmarks/dataset.py: the same cached SQLite file as the main suite)
gzipped to moto's S3 over loopback, with the main suite's sync settings (max_events
250,000, batch 5,000, ISA-L level 1). Reported: events/s (process spawn to exit), the
sync process's CPU seconds (steadier than the wall clock on a shared machine), its peak
RSS, the objects' size. Every run is read back before it counts: JSON byte
for byte against the dataset's reference; OCSF and ECS line by line against the store
(one record per event in id order, its id field the event's stable id, the stored
event in ``raw_data`` / ``event.original``).

    python -m benchmarks.formats --events 1000000 --repeat 2
    python -m benchmarks.formats --events 3000 --formats json,ocsf   # a quick check

See docs/performance.md for the numbers.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks import dataset as ds_mod
from benchmarks.bench import Bench, Digest, MiB, expect_equal, gunzip
from benchmarks.dataset import ACCOUNT, Dataset
from siem_plugins.builtin.eventid import event_id

#: Each case: the integration's ``format`` value, and how to read a record's id and its
#: copy of the stored event (``None``: JSON, checked byte for byte instead).
FORMATS: dict[str, tuple[Any, Callable[[dict[str, Any]], tuple[str, str | None]] | None]] = {
    "json": ("json", None),
    "ocsf": ("ocsf", lambda r: (r["metadata"]["uid"], r.get("raw_data"))),
    "ocsf-no-raw": (
        {"type": "ocsf", "raw_data": False},
        lambda r: (r["metadata"]["uid"], r.get("raw_data")),
    ),
    "ecs": ("ecs", lambda r: (r["event"]["id"], r["event"].get("original"))),
    "ecs-no-original": (
        {"type": "ecs", "original": False},
        lambda r: (r["event"]["id"], r["event"].get("original")),
    ),
}


def stored(db: Path) -> Iterator[tuple[int, bytes]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, body FROM siem_event WHERE account = ? ORDER BY id", (ACCOUNT,)
        )
        while batch := rows.fetchmany(10_000):
            yield from batch


def check_records(
    name: str,
    data: Dataset,
    bodies: Iterator[bytes],
    read: Callable[[dict[str, Any]], tuple[str, str | None]],
    with_raw: bool,
) -> None:
    """One record per stored event, in id order, carrying its id (and the event)."""
    events = stored(data.db)
    count = 0
    for body in bodies:
        for line in body.splitlines():
            store_id, raw = next(events)
            uid, copy = read(orjson.loads(line))
            if uid != event_id(ACCOUNT, store_id):
                raise RuntimeError(f"{name}: record {count} has id {uid}, not event {store_id}'s")
            if (copy is not None) != with_raw or (with_raw and copy != bytes(raw).decode()):
                raise RuntimeError(f"{name}: record {count} does not carry event {store_id}")
            count += 1
    if count != data.events or next(events, None) is not None:
        raise RuntimeError(f"{name}: {count} records for {data.events} events")


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(bench: Bench, name: str, data: Dataset) -> tuple[float, float, int, int]:
    """One sync of the dataset in format ``name``: seconds, CPU seconds (of the sync
    process: steadier than the wall clock on a busy machine), peak RSS KiB, bytes out."""
    fmt, read = FORMATS[name]
    s3 = bench.server()
    bucket = bench.uniq(name)
    s3.client.create_bucket(Bucket=bucket)
    try:
        cfg = bench._config(
            name,
            data,
            store_url=data.url,
            fmt=fmt,
            compression="gzip",
            sink=s3.sink(bucket),
            plugins=bench.plugins_empty,
        )
        cpu = cpu_of_children()
        run, objects, _server_cpu = bench._sync(cfg, data.events)
        cpu = cpu_of_children() - cpu  # the S3 server is a child too, but not waited for yet
        keys_bodies = list(s3.objects(bucket))
        if len(keys_bodies) != objects:
            raise RuntimeError(f"{name}: {len(keys_bodies)} objects, sync said {objects}")
        size = sum(len(body) for _, body in keys_bodies)
        if read is None:
            digest = Digest()
            for _, body in keys_bodies:
                digest.update(gunzip(body))
            expect_equal(digest, data.ndjson_sha256, data.ndjson_bytes, data.events, name)
        else:
            with_raw = name in ("ocsf", "ecs")
            check_records(name, data, (gunzip(b) for _, b in keys_bodies), read, with_raw)
        return run.seconds, cpu, run.maxrss_kb, size
    finally:
        s3.drop(bucket)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.formats", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000, help="dataset size (1000000)")
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help="comma-separated subset of: " + ", ".join(FORMATS),
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the best counts")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "siem-plugins-bench",
        help="where generated datasets are cached (shared with python -m benchmarks)",
    )
    args = p.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = set(args.formats) - set(FORMATS)
    if unknown:
        p.error(f"unknown formats: {', '.join(sorted(unknown))}")
    # What Bench reads of the main suite's options.
    args.sut = None
    args.keep_pg = False
    args.pg_url = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    data = ds_mod.prepare(args.events, args.data_dir, log=log)
    ds_mod.warm(data)
    work = Path(tempfile.mkdtemp(prefix="siem-bench-formats-"))
    bench = Bench(args, work, log)
    rows: list[tuple[str, float, float, int, int]] = []
    try:
        for name in args.formats:
            runs = []
            for _ in range(args.repeat):
                seconds, cpu, rss, size = run_case(bench, name, data)
                log(
                    f"  {name:<16} {data.events / seconds:>10,.0f} ev/s {seconds:7.2f} s "
                    f"{cpu:7.2f} CPU s {rss / 1024:5.0f} MB"
                )
                runs.append((seconds, cpu, rss, size))
            rows.append(
                (
                    name,
                    min(r[0] for r in runs),
                    min(r[1] for r in runs),
                    max(r[2] for r in runs),
                    runs[0][3],
                )
            )
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    json_row = next((r for r in rows if r[0] == "json"), None)
    print(
        f"{data.events:,} events, sync SQLite -> S3 (moto, loopback), gzip; best of "
        f"{args.repeat} (wall and CPU each)"
    )
    print(
        "| format | events/s | time s | vs json | CPU s | events/CPU-s | vs json (CPU) "
        "| out MB (gz) | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, seconds, cpu, rss, size in rows:
        ratio = f"{json_row[1] / seconds:.2f}" if json_row else "-"
        cpu_ratio = f"{json_row[2] / cpu:.2f}" if json_row and cpu else "-"
        print(
            f"| {name} | {data.events / seconds:,.0f} | {seconds:.2f} | {ratio} | {cpu:.2f} "
            f"| {data.events / cpu:,.0f} | {cpu_ratio} | {size / MiB:.1f} | {rss / 1024:.0f} |"
        )
    print(f"took {time.monotonic() - started:.0f} s; every output read back and checked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
