"""``python -m benchmarks.cefleef``: the CEF and LEEF formats against the JSON path.

Each case is the real CLI, ``python -m siem_plugins sync -c cfg.toml --no-progress``, on
the suite's cached dataset (:mod:`benchmarks.dataset`: seed-shaped events, one in twenty
with a long multilingual ``details``), with the settings of ``python -m benchmarks``:
gzip (ISA-L level 1), ``max_events`` 250,000, ``max_bytes`` 512 MiB, batches of 5,000,
to moto's S3 in its own process (:mod:`benchmarks.s3server`) and to the ``local`` sink.
Reported: events/s (spawn to exit, start-up included, as a user sees it), peak RSS
(``VmHWM`` of the CLI process, :mod:`benchmarks.measure`), output size, and events/s as
a share of the JSON case on the same sink. Best of ``--repeat`` runs.

Every output is read back and checked before it counts: JSON byte for byte against the
stored NDJSON (SHA-256); CEF and LEEF line by line: one line per event, the format's
header at its start, and the ``externalId`` of the event with that store id, in id order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import dataset as ds_mod
from benchmarks import measure
from benchmarks.bench import (
    MAX_BYTES,
    MAX_EVENTS,
    S3Process,
    child_env,
    gunzip,
    machine,
    ordered,
    q,
    toml_value,
)
from benchmarks.dataset import ACCOUNT, NOTIFY_NONE, Dataset
from siem_plugins.builtin.eventid import event_id

MiB = 1024 * 1024
#: The formats measured: config value, the start every line must have.
FORMATS: dict[str, tuple[Any, bytes]] = {
    "json": ("json", b"{"),
    "cef": ("cef", b"CEF:0|OPSWAT|MetaDefender IT Access|"),
    "leef": ("leef", b"LEEF:2.0|OPSWAT|MetaDefender IT Access|"),
}
SINKS = ("s3", "local")
_EXTERNAL_ID = re.compile(rb"externalId=([0-9a-f]{32})")


@dataclass
class Result:
    format: str
    sink: str
    events: int
    seconds: float = 0.0
    eps: float = 0.0
    maxrss_mb: float = 0.0
    bytes_out: int = 0
    samples: list[float] | None = None
    status: str = "ok"
    note: str = ""


def check_lines(fmt: str, bodies: Iterator[bytes], data: Dataset) -> None:
    """CEF/LEEF read back: one line per event with the format's header, the store ids'
    event ids in order (the dataset's events are ids 1..N of one account)."""
    start = FORMATS[fmt][1]
    n = 0
    for body in bodies:
        lines = body.split(b"\n")
        if lines.pop() != b"":
            raise RuntimeError(f"{fmt}: an object does not end in a newline")
        for line in lines:
            n += 1
            found = _EXTERNAL_ID.search(line)
            if not line.startswith(start) or found is None:
                raise RuntimeError(f"{fmt}: line {n} is not a {fmt} record: {line[:120]!r}")
            if found.group(1).decode() != event_id(ACCOUNT, n):
                raise RuntimeError(f"{fmt}: line {n} is not the event with store id {n}")
    if n != data.events:
        raise RuntimeError(f"{fmt}: {n} lines, expected {data.events}")


def check_json(bodies: Iterator[bytes], data: Dataset) -> None:
    digest, size = hashlib.sha256(), 0
    for body in bodies:
        digest.update(body)
        size += len(body)
    if (digest.hexdigest(), size) != (data.ndjson_sha256, data.ndjson_bytes):
        raise RuntimeError("json: the objects differ from the stored NDJSON")


class Runner:
    def __init__(self, args: argparse.Namespace, work: Path, log: Callable[[str], None]):
        self.args, self.work, self.log = args, work, log
        self.s3: S3Process | None = None
        self.counter = 0
        self.plugins = work / "plugins-none"
        self.plugins.mkdir(mode=0o755)
        self.plugins.chmod(0o755)  # the plugin host refuses group-writable drop-ins

    def name(self, case: str) -> str:
        # Integration names key the cursors kept in the cached dataset's database.
        self.counter += 1
        return f"f{int(time.time()) % 10**8:08d}-{self.counter}-{case}"

    def config(self, name: str, data: Dataset, fmt: Any, sink: dict[str, Any]) -> Path:
        integration = {
            "name": name,
            "account": ACCOUNT,
            "format": fmt,
            "compression": "gzip",
            "max_events": MAX_EVENTS,
            "max_bytes": MAX_BYTES,
            "sink": sink,
            "notify": {
                "type": "outbox",
                "path": str(self.work / "outbox"),
                "from": "bench@example.com",
                "to": ["soc@example.com"],
                "events": [NOTIFY_NONE],
            },
        }
        text = f"plugins_dir = {q(self.plugins)}\n\n[store]\nurl = {q(data.url)}\n\n"
        text += "[[integration]]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in integration.items()
        )
        cfg = self.work / f"{name}.toml"
        cfg.write_text(text)
        return cfg

    def once(self, fmt: str, sink_kind: str, data: Dataset) -> tuple[measure.Run, int]:
        name = self.name(f"{fmt}-{sink_kind}")
        out = self.work / "out" / name
        if sink_kind == "s3":
            if self.s3 is None:
                self.s3 = S3Process(self.work)
            self.s3.client.create_bucket(Bucket=name)
            sink = self.s3.sink(name)
        else:
            sink = {"type": "local", "path": str(out)}
        cfg = self.config(name, data, FORMATS[fmt][0], sink)
        argv = [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--no-progress"]
        try:
            run = measure.run(argv, cwd=self.work, env=child_env())
            run.check(f"sync ({fmt}, {sink_kind})")
            if sink_kind == "s3":
                assert self.s3 is not None
                bodies = [body for _, body in self.s3.objects(name)]
            else:
                files = {str(p): p for p in out.rglob("*.gz")}
                bodies = [files[k].read_bytes() for k in ordered(list(files))]
            size = sum(len(b) for b in bodies)
            plain = (gunzip(b) for b in bodies)
            if fmt == "json":
                check_json(plain, data)
            else:
                check_lines(fmt, plain, data)
            return run, size
        finally:
            if self.s3 is not None and sink_kind == "s3":
                self.s3.drop(name)
            shutil.rmtree(out, ignore_errors=True)

    def case(self, fmt: str, sink_kind: str, data: Dataset) -> Result:
        result = Result(fmt, sink_kind, data.events, samples=[])
        rss = 0
        try:
            for _ in range(self.args.repeat):
                run, size = self.once(fmt, sink_kind, data)
                assert result.samples is not None
                result.samples.append(round(run.seconds, 3))
                rss = max(rss, run.maxrss_kb)
                if not result.seconds or run.seconds < result.seconds:
                    result.seconds, result.bytes_out = run.seconds, size
        except Exception as exc:
            result.status, result.note = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        if result.seconds:
            result.eps = data.events / result.seconds
        result.maxrss_mb = rss / 1024
        self.log(
            f"  {data.events:>9,} {fmt:<5} -> {sink_kind:<5} {result.status:<6} "
            f"{result.eps:>10,.0f} ev/s {result.seconds:6.2f} s {result.maxrss_mb:6.1f} MB RSS"
            + (f"  {result.note}" if result.note else "")
        )
        return result

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.stop()


def table(results: list[Result]) -> str:
    base = {(r.sink, r.events): r.eps for r in results if r.format == "json" and r.eps}
    rows = [
        "| events | format | sink | events/s | vs JSON | time s | out MB | peak RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.eps / base[(r.sink, r.events)] if base.get((r.sink, r.events)) else None
        rows.append(
            f"| {r.events:,} | {r.format} | {r.sink} | "
            + (f"{r.eps:,.0f}" if r.eps else r.status)
            + f" | {f'{ratio:.2f}' if ratio else '-'} | {r.seconds:.2f} | "
            f"{r.bytes_out / MiB:.1f} | {r.maxrss_mb:.0f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cefleef",
        description="the SIEM formats (CEF, LEEF) against the JSON path (docs/performance.md)",
    )
    p.add_argument("--events", type=int, default=1_000_000, help="dataset size (1000000)")
    p.add_argument("--formats", default=",".join(FORMATS), help="subset of: " + ", ".join(FORMATS))
    p.add_argument("--sinks", default=",".join(SINKS), help="subset of: s3, local")
    p.add_argument("--repeat", type=int, default=2, help="runs per case; the best counts")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "siem-plugins-bench",
        help="where generated datasets are cached (shared with python -m benchmarks)",
    )
    p.add_argument("--json", type=Path, help="also write the results to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    args.formats = [f for f in args.formats.split(",") if f]
    args.sinks = [s for s in args.sinks.split(",") if s]
    bad = set(args.formats) - set(FORMATS) | set(args.sinks) - set(SINKS)
    if bad or args.repeat < 1:
        p.error(f"unknown formats or sinks: {', '.join(sorted(bad))}" if bad else "--repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="siem-bench-formats-"))
    runner = Runner(args, work, log)
    results = []
    try:
        data = ds_mod.prepare(args.events, args.data_dir, log=log)
        ds_mod.warm(data)
        for sink in args.sinks:
            for fmt in args.formats:
                results.append(runner.case(fmt, sink, data))
    finally:
        runner.close()
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    info = machine()
    print(
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}; "
        f"best of {args.repeat}; took {time.monotonic() - started:.0f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=2)
        )
    return 1 if any(r.status != "ok" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
