"""What the opt-in ``event_id`` (and ``account``/``product``) fields cost the spec's
formats: ``python -m benchmarks.event_id``.

Each case is the real CLI (``siem-plugins sync``, one process per run) shipping the
benchmark dataset (benchmarks/dataset.py: the main suite's cached SQLite file) gzipped to
a ``local`` sink, with the main suite's sync settings (max_events 250,000, batch 5,000,
ISA-L level 1); a local folder rather than moto keeps the S3 server's own CPU out of a
comparison of formatter work. With a field added, the formatter has no raw fast path (the
raw bytes carry no account and no store id), so those cases also pay for Event objects.
Reported: events/s (process spawn to exit), the sync process's CPU seconds (steadier than
the wall clock on a shared machine), its peak RSS, the output size. Every run is read
back before it counts: the plain cases byte for byte against the dataset's references,
the others line by line against the store (the stored event, then exactly the added
fields, the id being ``event_id(account, store id)``).

    python -m benchmarks.event_id --events 1000000 --repeat 2
    python -m benchmarks.event_id --events 3000       # a quick check

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import dataset as ds_mod
from benchmarks.bench import Bench, Digest, MiB, expect_equal, gunzip, ordered
from benchmarks.dataset import ACCOUNT, Dataset, syslog_line
from siem_plugins.builtin.added_fields import PRODUCT, VENDOR
from siem_plugins.builtin.eventid import event_id

#: Each case: the integration's ``format`` value.
CASES: dict[str, dict[str, Any]] = {
    "json": {"type": "json"},
    "json-event-id": {"type": "json", "event_id": True},
    "json-all": {"type": "json", "event_id": True, "account": True, "product": True},
    "syslog": {"type": "syslog"},
    "syslog-event-id": {"type": "syslog", "event_id": True},
}


def stored(db: Path) -> Iterator[tuple[int, str, str, bytes]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, ts, log_type, body FROM siem_event WHERE account = ? ORDER BY id",
            (ACCOUNT,),
        )
        while batch := rows.fetchmany(10_000):
            yield from batch


def expected_line(fmt: dict[str, Any], store_id: int, ts: str, log_type: str, body: bytes) -> bytes:
    """The line the case must write for one stored event (written out independently of
    the formatter: the documented field order and values)."""
    tail = b""
    if fmt.get("account"):
        tail += f',"account":"{ACCOUNT}"'.encode()
    if fmt.get("product"):
        tail += f',"vendor":"{VENDOR}","product":"{PRODUCT}"'.encode()
    if fmt.get("event_id"):
        tail += f',"event_id":"{event_id(ACCOUNT, store_id)}"'.encode()
    record = body[:-1] + tail + b"}"
    if fmt["type"] == "json":
        return record + b"\n"
    return syslog_line(ts, log_type, record) + b"\n"


def check(name: str, data: Dataset, outputs: Iterator[bytes]) -> None:
    fmt = CASES[name]
    if len(fmt) == 1:  # the spec's output: the dataset's references
        ref = data.ndjson_sha256, data.ndjson_bytes
        if fmt["type"] == "syslog":
            ref = data.syslog_sha256, data.syslog_bytes
        digest = Digest()
        for out in outputs:
            digest.update(out)
        expect_equal(digest, ref[0], ref[1], data.events, name)
        return
    rows = stored(data.db)
    count = 0
    for out in outputs:
        for line in out.splitlines(keepends=True):
            row = next(rows, None)
            if row is None or line != expected_line(fmt, *row):
                raise RuntimeError(f"{name}: line {count} is not the expected one")
            count += 1
    if count != data.events or next(rows, None) is not None:
        raise RuntimeError(f"{name}: {count} lines for {data.events} events")


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(bench: Bench, name: str, data: Dataset) -> tuple[float, float, int, int]:
    """One sync of the dataset: seconds, CPU seconds, peak RSS KiB, bytes written."""
    out = bench.work / "out" / bench.uniq(name)
    cfg = bench._config(
        name,
        data,
        store_url=data.url,
        fmt=CASES[name],
        compression="gzip",
        sink={"type": "local", "path": str(out)},
        plugins=bench.plugins_empty,
    )
    try:
        cpu = cpu_of_children()
        run, objects, _ = bench._sync(cfg, data.events)
        cpu = cpu_of_children() - cpu
        files = {str(p): p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
        if len(files) != objects:
            raise RuntimeError(f"{name}: {len(files)} files, sync said {objects}")
        size = sum(p.stat().st_size for p in files.values())
        check(name, data, (gunzip(files[k].read_bytes()) for k in ordered(list(files))))
        return run.seconds, cpu, run.maxrss_kb, size
    finally:
        shutil.rmtree(out, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.event_id", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000, help="dataset size (1000000)")
    p.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES)
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the best counts")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "siem-plugins-bench",
        help="where generated datasets are cached (shared with python -m benchmarks)",
    )
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
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
    work = Path(tempfile.mkdtemp(prefix="siem-bench-event-id-"))
    bench = Bench(args, work, log)
    rows: list[tuple[str, float, float, int, int]] = []
    try:
        for _ in range(args.repeat):  # interleaved: a busy spell hits every case alike
            for name in args.cases:
                seconds, cpu, rss, size = run_case(bench, name, data)
                log(
                    f"  {name:<16} {data.events / seconds:>10,.0f} ev/s {seconds:7.2f} s "
                    f"{cpu:7.2f} CPU s {rss / 1024:5.0f} MB"
                )
                rows.append((name, seconds, cpu, rss, size))
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    best = {
        name: (
            min(r[1] for r in rows if r[0] == name),
            min(r[2] for r in rows if r[0] == name),
            max(r[3] for r in rows if r[0] == name),
            next(r[4] for r in rows if r[0] == name),
        )
        for name in args.cases
    }
    print(
        f"{data.events:,} events, sync SQLite -> local folder, gzip; best of {args.repeat} "
        "(wall and CPU each)"
    )
    print(
        "| format | events/s | time s | CPU s | events/CPU-s | vs plain (CPU) | out MB (gz) | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (seconds, cpu, rss, size) in best.items():
        plain = best.get(CASES[name]["type"])
        ratio = f"{plain[1] / cpu:.2f}" if plain and cpu else "-"
        print(
            f"| {name} | {data.events / seconds:,.0f} | {seconds:.2f} | {cpu:.2f} "
            f"| {data.events / cpu:,.0f} | {ratio} | {size / MiB:.1f} | {rss / 1024:.0f} |"
        )
    print(f"took {time.monotonic() - started:.0f} s; every output read back and checked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
