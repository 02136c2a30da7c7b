"""The benchmark suite: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Measures events/s, output bytes and peak RSS, each case in its own process, for:

* the stdlib ceiling and the floor (benchmarks/children.py);
* ``siem-plugins sync`` (the real CLI, one process per run): JSON+gzip and SYSLOG+gzip
  from the SQLite store to S3 (moto, in a process of its own, over loopback), the same
  JSON sync from the PostgreSQL store, and to the ``local`` sink (S3 server overhead);
* the naive hand-written job;
* SYSLOG (RFC 5424) to a local file without compression against rsyslog doing the same
  formatting, single- and multi-threaded.

Every run's output is checked (decompressed, compared with the references of the
dataset) before its numbers count, so a broken run cannot pass as a fast one. Then one
table of ratios against the issue's targets is printed. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import dataset as ds_mod
from benchmarks import measure, rsyslog
from benchmarks.children import available_codecs, make_compressor
from benchmarks.dataset import ACCOUNT, NOTIFY_NONE, Dataset
from siem_plugins.storage.connections import connect_sqlite

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (100_000, 1_000_000)
SMOKE_EVENTS = 3000
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
#: Object caps of every sync: 1 M events make four objects, 100 k one.
MAX_EVENTS = 250_000
MAX_BYTES = "512 MiB"
#: rsyslog's multi-threaded configurations tried; the fastest is reported.
RSYSLOG_WORKERS = (2, 3, 4)
MiB = 1024 * 1024

#: Every case, in the order they run and print: (key, label).
CASES: tuple[tuple[str, str], ...] = (
    ("stdlib", "stdlib ceiling (sqlite3, orjson, zlib-6)"),
    ("floor", "floor (stored bytes, fastest gzip)"),
    ("naive", "naive (fetchall, json.dumps, 1 PUT)"),
    ("json-s3", "sync JSON+gzip SQLite -> S3"),
    ("json-zstd-s3", "sync JSON+zstd SQLite -> S3"),
    ("syslog-s3", "sync SYSLOG+gzip SQLite -> S3"),
    ("json-pg-s3", "sync JSON+gzip PostgreSQL -> S3"),
    ("json-local", "sync JSON+gzip SQLite -> local"),
    ("json-local-hooks", "  same + 3 observer plugins"),
    ("noop", "sync, nothing new (fixed cost)"),
    ("syslog-local", "sync SYSLOG -> local file, no gzip"),
    ("rsyslog-1", "rsyslog, 1 worker"),
    ("rsyslog-mt", "rsyslog, fastest multi-threaded"),
)
CASE_KEYS = tuple(k for k, _ in CASES)
#: Cases whose output is gzipped NDJSON: their size compares with zlib-6's.
JSON_CASES = ("stdlib", "floor", "naive", "json-s3", "json-pg-s3", "json-local", "json-local-hooks")
LABELS = dict(CASES)

_SYNC_LINE = re.compile(r"^(?P<name>\S+): ok: (?P<objects>\d+) objects, (?P<events>\d+) events")
_KEY_IDS = re.compile(r"_(\d{20})-(\d{20})\.")

OBSERVER = '''\
"""Benchmark observer: implements every lifecycle hook, counts the calls."""
import atexit
import os

from siem_plugins import hookimpl

CALLS = [0]


@hookimpl
def siem_sync_started(integration, destination, intent):
    CALLS[0] += 1


@hookimpl
def siem_object_written(integration, receipt):
    CALLS[0] += 1


@hookimpl
def siem_notified(integration, digest):
    CALLS[0] += 1


@hookimpl
def siem_sync_failed(integration, destination, error):
    CALLS[0] += 1


def _save():
    path = os.environ.get("SIEM_BENCH_HOOK_COUNT")
    if path:
        with open(path, "a") as f:
            f.write(f"{CALLS[0]}\\n")


atexit.register(_save)
'''


class Skip(Exception):
    """A case that cannot run here (no rsyslog, no PostgreSQL): reported, not fatal."""


@dataclass
class Result:
    size: int
    case: str
    label: str
    status: str = "ok"  # ok | skipped | failed
    events: int = 0
    seconds: float = 0.0
    eps: float = 0.0
    bytes_out: int = 0
    maxrss_mb: float = 0.0
    server_cpu_s: float | None = None
    verified: bool = False
    runs: int = 0
    note: str = ""
    samples: list[float] = field(default_factory=list)


@dataclass
class Metric:
    name: str
    values: dict[int, float | None]
    target: str
    status: str  # PASS | MISS | info | n/a
    note: str = ""


# --------------------------------------------------------------------------- helpers


def q(value: object) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(str(value))


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return q(value)


def gunzip(data: bytes) -> bytes:
    from isal import igzip

    out: bytes = igzip.decompress(data)  # type: ignore[no-untyped-call]
    return out


def unzstd(data: bytes) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return out


def ordered(keys: list[str]) -> list[str]:
    """Object keys in id order (their first id), whatever their creation stamps."""

    def first_id(key: str) -> int:
        m = _KEY_IDS.search(key)
        if not m:
            raise RuntimeError(f"unexpected object key {key!r}")
        return int(m.group(1))

    return sorted(keys, key=first_id)


class Digest:
    """Streaming SHA-256 + size + line count of concatenated outputs."""

    def __init__(self) -> None:
        import hashlib

        self.sha = hashlib.sha256()
        self.size = 0
        self.lines = 0

    def update(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        self.lines += data.count(b"\n")


def expect_equal(digest: Digest, sha256: str, size: int, events: int, what: str) -> None:
    if digest.lines != events:
        raise RuntimeError(f"{what}: {digest.lines} lines, expected {events}")
    if digest.size != size or digest.sha.hexdigest() != sha256:
        raise RuntimeError(
            f"{what}: output differs from the reference ({digest.size} bytes, expected {size})"
        )


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {}
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    for pkg in ("siem-plugins", "isal", "zlib-ng", "orjson", "moto", "boto3"):
        try:
            versions[pkg] = pkg_version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "-"
    exe = rsyslog.rsyslogd()
    versions["rsyslog"] = rsyslog.version(exe) if exe else "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


# --------------------------------------------------------------------------- S3 server


class S3Process:
    """``python -m benchmarks.s3server`` as a child; a boto3 client for setup/checks."""

    def __init__(self, work: Path) -> None:
        self.log = open(work / "s3server.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.s3server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=child_env(),
            cwd=work,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the S3 server did not start; see {work / 's3server.log'}")
        info = json.loads(line)
        self.endpoint: str = info["endpoint"]
        self.region: str = info["region"]
        self.key_id: str = info["access_key_id"]
        self.secret: str = info["secret_access_key"]
        import boto3
        from botocore.config import Config

        self.client = boto3.session.Session(
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        ).client("s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sink(self, bucket: str) -> dict[str, Any]:
        return {
            "type": "s3",
            "bucket": bucket,
            "region": self.region,
            "endpoint_url": self.endpoint,
            "access_key_id": self.key_id,
            "secret_access_key": self.secret,
        }

    def objects(self, bucket: str) -> Iterator[tuple[str, bytes]]:
        keys = [
            o["Key"]
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ]
        for key in ordered(keys):
            yield key, self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def drop(self, bucket: str) -> None:
        """Delete a bucket and its objects: moto keeps everything in memory."""
        with contextlib.suppress(Exception):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for o in page.get("Contents", []):
                    self.client.delete_object(Bucket=bucket, Key=o["Key"])
            self.client.delete_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the server exits when its stdin closes
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def child_env(extra: dict[str, str] | None = None, *, sut: Path | None = None) -> dict[str, str]:
    """The environment of every child. ``sut``: a source tree whose ``siem_plugins``
    the CLI children import instead of the installed one (before/after comparisons)."""
    env = dict(os.environ)
    # The benchmark's own modules (children, s3server) run with `-m benchmarks.x`.
    path = [str(sut) if sut else "", str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    env.pop("SIEM_CONFIG", None)
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # credentials are explicit: never probe IMDS
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, log: Callable[[str], None]) -> None:
        self.args = args
        self.work = work
        self.log = log
        self.s3: S3Process | None = None
        self.counter = 0
        self.run_id = f"{int(time.time()) % 10**8:08d}{os.getpid() % 1000:03d}"
        self.codec = ""
        self.pg_schemas: list[str] = []
        self.pg_note = ""
        self.last_local_cfg: Path | None = None
        self.hook_calls: dict[int, int] = {}
        self.plugins_empty = work / "plugins-none"
        self.plugins_observers = work / "plugins-observers"
        # Explicit modes: the plugin host refuses group-writable drop-ins (umask 002).
        for folder in (self.plugins_empty, self.plugins_observers):
            folder.mkdir()
            folder.chmod(0o755)
        for i in range(3):
            path = self.plugins_observers / f"bench_observer_{i}.py"
            path.write_text(OBSERVER)
            path.chmod(0o644)

    # ------------------------------------------------------------------ plumbing

    def uniq(self, case: str) -> str:
        """A name no earlier run used: integration names key the delivery state (cursors),
        which lives in the cached dataset's database; bucket names must be unique too."""
        self.counter += 1
        return f"b{self.run_id}-{self.counter}-{case}"

    def server(self) -> S3Process:
        if self.s3 is None:
            self.s3 = S3Process(self.work)
        return self.s3

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.pg_schemas and not self.args.keep_pg:
            with contextlib.suppress(Exception):
                import psycopg

                with psycopg.connect(self.pg_base(), autocommit=True, connect_timeout=5) as c:
                    for schema in self.pg_schemas:
                        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def pg_base(self) -> str:
        return str(self.args.pg_url or os.environ.get("SIEM_TEST_PG_URL") or DEFAULT_PG)

    def choose_codec(self, data: Dataset) -> str:
        """The fastest gzip-compatible codec here, on a sample of the real data."""
        with open(data.ndjson, "rb") as f:
            sample = f.read(32 * MiB)
        best: tuple[float, str] = (0.0, "")
        for codec in available_codecs():
            seconds = float("inf")
            for _ in range(3):
                z = make_compressor(codec)
                t = time.perf_counter()
                for i in range(0, len(sample), MiB):
                    z.compress(sample[i : i + MiB])
                z.flush()
                seconds = min(seconds, time.perf_counter() - t)
            rate = len(sample) / seconds
            # A later codec must be clearly faster: ISA-L levels 0 and 1 run neck and neck
            # here, and a coin flip between them would change the floor's bytes per run.
            if rate > best[0] * (1.1 if best[1] else 0):
                best = (rate, codec)
        return best[1]

    # ------------------------------------------------------------------ sizes

    def run_size(self, data: Dataset) -> list[Result]:
        ds_mod.warm(data)
        if not self.codec:
            self.codec = self.args.floor_codec or self.choose_codec(data)
            self.log(f"floor codec: {self.codec} (fastest gzip-compatible codec here)")
        results = []
        for key in self.args.cases:
            results.append(self.run_case(key, data))
        return results

    def run_case(self, key: str, data: Dataset) -> Result:
        result = Result(data.events, key, LABELS[key])
        repeat = 1 if key == "noop" else self.args.repeat
        fn: Callable[[Dataset, Result], tuple[measure.Run, int, float | None]] = getattr(
            self, "case_" + key.replace("-", "_")
        )
        rss = 0
        try:
            for _ in range(repeat):
                run, size, server_cpu = fn(data, result)
                result.samples.append(round(run.seconds, 3))
                rss = max(rss, run.maxrss_kb)
                if result.runs == 0 or run.seconds < result.seconds:
                    result.seconds = run.seconds
                    result.bytes_out = size
                    result.server_cpu_s = server_cpu
                result.runs += 1
            result.verified = True
        except Skip as exc:
            result.status = "skipped"
            result.note = str(exc)
        except Exception as exc:
            result.status = "failed"
            result.note = f"{type(exc).__name__}: {exc}"[:2000]
        result.maxrss_mb = rss / 1024
        if key == "noop":
            result.events = 0
        elif result.runs:
            result.events = data.events
            result.eps = data.events / result.seconds
        self.log(
            f"  {data.events:>9,} {key:<17} {result.status:<7} "
            + (
                f"{result.eps:>11,.0f} ev/s {result.seconds:7.2f} s "
                f"{result.maxrss_mb:7.1f} MB RSS {result.bytes_out / MiB:8.1f} MB out"
                if result.runs
                else ""
            )
            + (f"  {result.note}" if result.note and result.status != "ok" else "")
        )
        return result

    # ------------------------------------------------------------------ python cases

    def _child(self, case: str, data: Dataset, extra: list[str], out: Path | None) -> measure.Run:
        argv = [sys.executable, "-m", "benchmarks.children", case, "--db", str(data.db)]
        argv += ["--account", ACCOUNT, *extra]
        if out is not None:
            argv += ["--out", str(out)]
        run = measure.run(argv, cwd=self.work, env=child_env())
        run.check(case)
        assert run.report is not None, run.stdout
        # The child's own peak at the end of the job (before it writes its output).
        run.maxrss_kb = int(run.report["maxrss_kb"])
        return run

    def _in_memory(self, case: str, data: Dataset, extra: list[str]) -> tuple[measure.Run, int]:
        out = self.work / f"{case}.out.gz"
        try:
            run = self._child(case, data, extra, out)
            digest = Digest()
            digest.update(gunzip(out.read_bytes()))
            expect_equal(digest, data.ndjson_sha256, data.ndjson_bytes, data.events, case)
            assert run.report is not None
            return run, int(run.report["bytes"])
        finally:
            out.unlink(missing_ok=True)

    def case_stdlib(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        run, size = self._in_memory("stdlib", data, [])
        return run, size, None

    def case_floor(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        run, size = self._in_memory("floor", data, ["--codec", self.codec])
        result.note = f"codec {self.codec}"
        return run, size, None

    def case_naive(self, data: Dataset, result: Result) -> tuple[measure.Run, int, float]:
        s3 = self.server()
        bucket = self.uniq("naive")
        s3.client.create_bucket(Bucket=bucket)
        try:
            cpu0 = measure.cpu_seconds(s3.pid)
            run = self._child(
                "naive",
                data,
                [
                    "--endpoint",
                    s3.endpoint,
                    "--region",
                    s3.region,
                    "--bucket",
                    bucket,
                    "--key",
                    "naive.json.gz",
                    "--access-key-id",
                    s3.key_id,
                    "--secret-access-key",
                    s3.secret,
                ],
                None,
            )
            cpu = measure.cpu_seconds(s3.pid) - cpu0
            body = s3.client.get_object(Bucket=bucket, Key="naive.json.gz")["Body"].read()
            lines = gunzip(body).splitlines()
            if len(lines) != data.events:
                raise RuntimeError(f"naive: {len(lines)} lines, expected {data.events}")
            import orjson

            with open(data.ndjson, "rb") as f:
                first = f.readline()
            if orjson.loads(lines[0]) != orjson.loads(first):
                raise RuntimeError("naive: the first event differs from the stored one")
            return run, len(body), cpu
        finally:
            s3.drop(bucket)

    # ------------------------------------------------------------------ CLI cases

    def _config(
        self,
        case: str,
        data: Dataset,
        *,
        store_url: str,
        fmt: dict[str, Any] | str,
        compression: str,
        sink: dict[str, Any],
        plugins: Path,
    ) -> Path:
        name = self.uniq(case)
        outbox = self.work / "outbox"
        text = "\n".join(
            [
                f"plugins_dir = {q(plugins)}",
                "",
                "[store]",
                f"url = {q(store_url)}",
                "",
                "[[integration]]",
                f"name = {q(name)}",
                f"account = {q(ACCOUNT)}",
                f"format = {toml_value(fmt)}",
                f"compression = {q(compression)}",
                f"max_events = {MAX_EVENTS}",
                f"max_bytes = {q(MAX_BYTES)}",
                f"sink = {toml_value(sink)}",
                "notify = "
                + toml_value(
                    {
                        "type": "outbox",
                        "path": str(outbox),
                        "from": "bench@example.com",
                        "to": ["soc@example.com"],
                        "events": [NOTIFY_NONE],
                    }
                ),
                "",
            ]
        )
        cfg = self.work / f"{name}.toml"
        cfg.write_text(text)
        return cfg

    def _sync(
        self, cfg: Path, events: int, *, env: dict[str, str] | None = None
    ) -> tuple[measure.Run, int, float | None]:
        """Run the real CLI on ``cfg``; returns the run, objects made, S3 server CPU."""
        argv = [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--no-progress"]
        cpu0 = measure.cpu_seconds(self.s3.pid) if self.s3 else 0.0
        run = measure.run(argv, cwd=self.work, env=child_env(env, sut=self.args.sut))
        cpu = (measure.cpu_seconds(self.s3.pid) - cpu0) if self.s3 else None
        run.check(f"siem-plugins sync -c {cfg.name}")
        m = None
        for line in run.stdout.splitlines():
            m = _SYNC_LINE.match(line)
            if m:
                break
        if m is None or int(m.group("events")) != events:
            raise RuntimeError(f"sync did not report {events} events:\n{run.stdout[-2000:]}")
        return run, int(m.group("objects")), cpu

    def _s3_sync(
        self,
        case: str,
        data: Dataset,
        fmt: Any,
        ref: tuple[str, int],
        store_url: str,
        compression: str = "gzip",
    ) -> tuple[measure.Run, int, float | None]:
        s3 = self.server()
        bucket = self.uniq(case)
        s3.client.create_bucket(Bucket=bucket)
        try:
            cfg = self._config(
                case,
                data,
                store_url=store_url,
                fmt=fmt,
                compression=compression,
                sink=s3.sink(bucket),
                plugins=self.plugins_empty,
            )
            run, objects, cpu = self._sync(cfg, data.events)
            digest = Digest()
            size = 0
            count = 0
            for _key, body in s3.objects(bucket):
                size += len(body)
                count += 1
                digest.update(unzstd(body) if compression == "zstd" else gunzip(body))
            if count != objects:
                raise RuntimeError(f"{case}: {count} objects in the bucket, sync said {objects}")
            expect_equal(digest, ref[0], ref[1], data.events, case)
            return run, size, cpu
        finally:
            s3.drop(bucket)

    def case_json_s3(self, data: Dataset, result: Result) -> tuple[measure.Run, int, float | None]:
        ref = (data.ndjson_sha256, data.ndjson_bytes)
        return self._s3_sync("json-s3", data, "json", ref, data.url)

    def case_json_zstd_s3(
        self, data: Dataset, result: Result
    ) -> tuple[measure.Run, int, float | None]:
        ref = (data.ndjson_sha256, data.ndjson_bytes)
        return self._s3_sync("json-zstd-s3", data, "json", ref, data.url, compression="zstd")

    def case_syslog_s3(
        self, data: Dataset, result: Result
    ) -> tuple[measure.Run, int, float | None]:
        ref = (data.syslog_sha256, data.syslog_bytes)
        return self._s3_sync("syslog-s3", data, {"type": "syslog"}, ref, data.url)

    def case_json_pg_s3(
        self, data: Dataset, result: Result
    ) -> tuple[measure.Run, int, float | None]:
        url = self.pg_store(data)
        ref = (data.ndjson_sha256, data.ndjson_bytes)
        return self._s3_sync("json-pg-s3", data, "json", ref, url)

    def _local_sync(
        self,
        case: str,
        data: Dataset,
        *,
        fmt: Any,
        compression: str,
        ref: tuple[str, int],
        plugins: Path,
        env: dict[str, str] | None = None,
    ) -> tuple[measure.Run, int, Path]:
        out = self.work / "out" / self.uniq(case)
        cfg = self._config(
            case,
            data,
            store_url=data.url,
            fmt=fmt,
            compression=compression,
            sink={"type": "local", "path": str(out)},
            plugins=plugins,
        )
        try:
            run, objects, _ = self._sync(cfg, data.events, env=env)
            files = {
                str(p): p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
            }
            if len(files) != objects:
                raise RuntimeError(f"{case}: {len(files)} files, sync said {objects}")
            digest = Digest()
            size = 0
            for name in ordered(list(files)):
                body = files[name].read_bytes()
                size += len(body)
                digest.update(gunzip(body) if compression == "gzip" else body)
            expect_equal(digest, ref[0], ref[1], data.events, case)
            return run, size, cfg
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def case_json_local(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        ref = (data.ndjson_sha256, data.ndjson_bytes)
        run, size, cfg = self._local_sync(
            "json-local", data, fmt="json", compression="gzip", ref=ref, plugins=self.plugins_empty
        )
        self.last_local_cfg = cfg
        return run, size, None

    def case_json_local_hooks(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        ref = (data.ndjson_sha256, data.ndjson_bytes)
        counts = self.work / "hook-calls.txt"
        counts.unlink(missing_ok=True)
        run, size, _ = self._local_sync(
            "json-local-hooks",
            data,
            fmt="json",
            compression="gzip",
            ref=ref,
            plugins=self.plugins_observers,
            env={"SIEM_BENCH_HOOK_COUNT": str(counts)},
        )
        calls = [int(x) for x in counts.read_text().split()] if counts.exists() else []
        if len(calls) != 3 or min(calls) == 0:
            raise RuntimeError(f"the observer plugins were not all called: {calls}")
        self.hook_calls[data.events] = sum(calls)
        result.note = f"{calls[0]} hook calls per plugin"
        return run, size, None

    def case_noop(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        if self.last_local_cfg is None:
            raise Skip("needs json-local first")
        run, _, _ = self._sync(self.last_local_cfg, 0)
        return run, 0, None

    def case_syslog_local(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        ref = (data.syslog_sha256, data.syslog_bytes)
        run, size, _ = self._local_sync(
            "syslog-local",
            data,
            fmt={"type": "syslog"},
            compression="none",
            ref=ref,
            plugins=self.plugins_empty,
        )
        return run, size, None

    # ------------------------------------------------------------------ rsyslog

    def _rsyslog(self, data: Dataset, workers: int) -> measure.Run:
        if self.args.skip_rsyslog:
            raise Skip("--skip-rsyslog")
        if rsyslog.rsyslogd() is None:
            raise Skip("rsyslogd (with imfile, mmjsonparse) not installed: benchmarks/setup.sh")
        root = self.work / f"rsyslog-{workers}"
        argv = rsyslog.prepare(root, data.ndjson, workers=workers)
        out = rsyslog.output(root)
        want = data.syslog_bytes

        def done() -> bool:
            try:
                return out.stat().st_size >= want
            except FileNotFoundError:
                return False

        try:
            run = measure.run(argv, cwd=root, done=done, timeout_s=1800)
            run.check(f"rsyslogd ({workers} workers)")
            self._check_rsyslog(out, data, ordered_output=workers == 1)
            return run
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _check_rsyslog(self, out: Path, data: Dataset, *, ordered_output: bool) -> None:
        if ordered_output:
            digest = Digest()
            with open(out, "rb") as f:
                while chunk := f.read(16 * MiB):
                    digest.update(chunk)
            expect_equal(digest, data.syslog_sha256, data.syslog_bytes, data.events, "rsyslog")
            return
        total = 0
        lines = 0
        size = 0
        with open(out, "rb") as f:
            for line in f:
                size += len(line)
                lines += 1
                total = (total + ds_mod.line_hash(line.rstrip(b"\n"))) & 0xFFFF_FFFF_FFFF_FFFF
        if lines != data.events or size != data.syslog_bytes or total != data.syslog_multiset:
            raise RuntimeError("rsyslog (multi-threaded): output lines differ from the reference")

    def case_rsyslog_1(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        return self._rsyslog(data, 1), data.syslog_bytes, None

    def case_rsyslog_mt(self, data: Dataset, result: Result) -> tuple[measure.Run, int, None]:
        best: measure.Run | None = None
        best_workers = 0
        for workers in self.args.rsyslog_workers:
            run = self._rsyslog(data, workers)
            if best is None or run.seconds < best.seconds:
                best, best_workers = run, workers
        assert best is not None
        result.note = f"best: {best_workers} workers (tried {self.args.rsyslog_workers})"
        return best, data.syslog_bytes, None

    # ------------------------------------------------------------------ PostgreSQL

    def pg_store(self, data: Dataset) -> str:
        """A schema holding the dataset (loaded by the real store's COPY ingest)."""
        if self.args.skip_postgres:
            raise Skip("--skip-postgres")
        if self.pg_note:
            raise Skip(self.pg_note)
        base = self.pg_base()
        try:
            import psycopg

            from siem_plugins.events import Canonical
            from siem_plugins.storage import PostgresStore, migrate

            conn = psycopg.connect(base, autocommit=True, connect_timeout=3)
        except Exception as exc:
            self.pg_note = f"no PostgreSQL at {base.split('@')[-1]}: {type(exc).__name__}"
            raise Skip(self.pg_note) from None
        schema = f"siem_bench_{data.events}_{data.ndjson_sha256[:8]}"
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        with conn:
            have = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name=%s", (schema,)
            ).fetchone()
            if have:
                row = conn.execute(
                    # schema: digits and hex of our own making, never user input
                    f"SELECT count(*) FROM {schema}.siem_event WHERE account=%s",  # noqa: S608
                    (ACCOUNT,),
                ).fetchone()
                n = row[0] if row else 0
                if n == data.events:
                    if schema not in self.pg_schemas:
                        self.pg_schemas.append(schema)
                    return url
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
        self.pg_schemas.append(schema)
        migrate(url)
        self.log(f"  loading {data.events:,} events into PostgreSQL schema {schema} ...")
        store = PostgresStore(url)
        src = connect_sqlite(data.db)
        try:
            cur = src.execute(
                "SELECT type, log_type, ts, body FROM siem_event WHERE account=? ORDER BY id",
                (ACCOUNT,),
            )
            rows = (Canonical(t, lt, ts, body) for t, lt, ts, body in cur)
            store.append(ACCOUNT, rows, chunk=20_000)
        finally:
            src.close()
            store.close()
        return url


# --------------------------------------------------------------------------- ratios


def _by(results: list[Result]) -> dict[tuple[int, str], Result]:
    return {(r.size, r.case): r for r in results if r.status == "ok"}


def metrics(results: list[Result], sizes: list[int], hook_calls: dict[int, int]) -> list[Metric]:
    by = _by(results)
    largest = max(sizes)
    smallest = min(sizes)

    def eps(size: int, case: str) -> float | None:
        r = by.get((size, case))
        return r.eps if r else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def per_size(fn: Callable[[int], float | None]) -> dict[int, float | None]:
        return {s: fn(s) for s in sizes}

    def status(
        values: dict[int, float | None], ok: Callable[[float], bool] | None, every: bool
    ) -> str:
        if ok is None:
            return "info"
        checked = list(values.values()) if every else [values.get(largest)]
        if any(v is None for v in checked):
            return "n/a"
        return "PASS" if all(ok(v) for v in checked if v is not None) else "MISS"

    def rss(size: int, case: str) -> float | None:
        r = by.get((size, case))
        return r.maxrss_mb if r else None

    def size_ratio(s: int) -> float | None:
        a, b = by.get((s, "json-s3")), by.get((s, "stdlib"))
        return a.bytes_out / b.bytes_out if a and b and b.bytes_out else None

    def rt(case: str) -> Callable[[int], float | None]:
        return lambda s: ratio(eps(s, "syslog-local"), eps(s, case))

    def min_speed(x: float) -> Callable[[float], bool]:
        return lambda v: v >= x

    def max_value(x: float) -> Callable[[float], bool]:
        return lambda v: v <= x

    rows: list[
        tuple[str, Callable[[int], float | None], str, Callable[[float], bool] | None, bool, str]
    ] = [
        (
            "JSON+gzip sync / stdlib ceiling, events/s",
            lambda s: ratio(eps(s, "json-s3"), eps(s, "stdlib")),
            ">= 1.5 (largest size)",
            min_speed(1.5),
            False,
            "",
        ),
        (
            "JSON+gzip object size / zlib-6 size",
            size_ratio,
            "<= 1.5",
            max_value(1.5),
            True,
            "",
        ),
        (
            "JSON+gzip sync / floor, events/s",
            lambda s: ratio(eps(s, "json-s3"), eps(s, "floor")),
            ">= 0.6 (largest size)",
            min_speed(0.6),
            False,
            "",
        ),
        (
            "JSON+gzip sync / naive, events/s",
            lambda s: ratio(eps(s, "json-s3"), eps(s, "naive")),
            ">= 5 (largest size)",
            min_speed(5),
            False,
            "",
        ),
        (
            "JSON+gzip sync peak RSS / naive peak RSS",
            lambda s: ratio(rss(s, "json-s3"), rss(s, "naive")),
            "<= 0.5 (largest size)",
            max_value(0.5),
            False,
            "'far less memory'",
        ),
        (
            "JSON+gzip sync peak RSS, MB",
            lambda s: rss(s, "json-s3"),
            "<= 200",
            max_value(200),
            True,
            "",
        ),
        (
            f"peak RSS at this size / at {smallest:,} events",
            lambda s: ratio(rss(s, "json-s3"), rss(smallest, "json-s3")),
            "<= 1.2 (same at any size)",
            max_value(1.2) if largest != smallest else None,
            True,
            "",
        ),
        (
            "SYSLOG -> file / rsyslog 1 worker, events/s",
            rt("rsyslog-1"),
            ">= 1.2 (largest size)",
            min_speed(1.2),
            False,
            "",
        ),
        (
            "SYSLOG -> file / rsyslog fastest multi-threaded",
            rt("rsyslog-mt"),
            "reported",
            None,
            False,
            "",
        ),
        (
            "with 3 observer plugins / without, events/s",
            lambda s: ratio(eps(s, "json-local-hooks"), eps(s, "json-local")),
            ">= 0.95 (invisible)",
            min_speed(0.95),
            False,
            "hooks per object, never per event or batch",
        ),
        (
            "SYSLOG+gzip sync / stdlib ceiling, events/s",
            lambda s: ratio(eps(s, "syslog-s3"), eps(s, "stdlib")),
            "reported",
            None,
            False,
            "",
        ),
        (
            "JSON+gzip sync: S3 (moto) / local sink, events/s",
            lambda s: ratio(eps(s, "json-s3"), eps(s, "json-local")),
            "reported",
            None,
            False,
            "S3 server overhead",
        ),
        (
            "JSON+gzip sync: PostgreSQL / SQLite store, events/s",
            lambda s: ratio(eps(s, "json-pg-s3"), eps(s, "json-s3")),
            "reported",
            None,
            False,
            "",
        ),
        (
            "fixed cost of one sync (start-up, nothing new), s",
            lambda s: by[(s, "noop")].seconds if (s, "noop") in by else None,
            "reported",
            None,
            False,
            "included in every sync's time above",
        ),
    ]
    out = []
    for name, fn, target, ok, every, note in rows:
        values = per_size(fn)
        if name.startswith("peak RSS at this size"):
            values = {s: v for s, v in values.items() if s != smallest} or {smallest: None}
        if name.startswith("with 3 observer") and hook_calls:
            note = f"{note}; {max(hook_calls.values()) // 3} calls per plugin per sync"
        out.append(Metric(name, values, target, status(values, ok, every), note))
    return out


# --------------------------------------------------------------------------- output


def fmt_size(n: int) -> str:
    return (
        f"{n // 1_000_000} M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000} k" if n >= 1000 and n % 1000 == 0 else str(n))
    )


def print_tables(results: list[Result], table: list[Metric], sizes: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for the labels on one line even when stdout is a file or a pipe.
    console = Console(width=max(150, shutil.get_terminal_size((150, 40)).columns))
    cases = Table(title="Measured cases (best of runs; each case in its own process)")
    for col, justify in (
        ("events", "right"),
        ("events/s", "right"),
        ("time s", "right"),
        ("out MB", "right"),
        ("size / zlib-6", "right"),
        ("peak RSS MB", "right"),
        ("S3 srv CPU s", "right"),
        ("check", "left"),
    ):
        cases.add_column(col, justify=justify)  # type: ignore[arg-type]
        if col == "events":
            cases.add_column("case", no_wrap=True)
    by = _by(results)
    for i, size in enumerate(sizes):
        if i:
            cases.add_section()
        zlib6 = by.get((size, "stdlib"))
        for r in (r for r in results if r.size == size):
            if r.status != "ok":
                cases.add_row(
                    fmt_size(size),
                    r.label,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    f"{r.status}: {r.note}"[:60],
                )
                continue
            rel = (
                f"{r.bytes_out / zlib6.bytes_out:.2f}"
                if zlib6 and r.bytes_out and r.case in JSON_CASES
                else "-"
            )
            cases.add_row(
                fmt_size(size),
                r.label,
                f"{r.eps:,.0f}" if r.events else "-",
                f"{r.seconds:.2f}",
                f"{r.bytes_out / MiB:.1f}" if r.bytes_out else "-",
                rel,
                f"{r.maxrss_mb:.0f}",
                f"{r.server_cpu_s:.1f}" if r.server_cpu_s is not None else "-",
                "verified" + (f" ({r.note})" if r.note else ""),
            )
    console.print(cases)
    ratios = Table(title="Ratios and targets")
    ratios.add_column("metric")
    for size in sizes:
        ratios.add_column(fmt_size(size), justify="right")
    ratios.add_column("target")
    ratios.add_column("status")
    colors = {"PASS": "green", "MISS": "red", "n/a": "yellow", "info": "dim"}
    for m in table:
        cells = []
        for size in sizes:
            v = m.values.get(size)
            cells.append("-" if v is None else f"{v:,.2f}")
        ratios.add_row(
            m.name + (f" [dim]({m.note})[/dim]" if m.note else ""),
            *cells,
            m.target,
            f"[{colors[m.status]}]{m.status}[/]",
        )
    console.print(ratios)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="siem-plugins benchmark suite (docs/performance.md)",
    )
    p.add_argument(
        "--events",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated dataset sizes (default: 100000,1000000)",
    )
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_EVENTS} events, one run each")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the best counts")
    p.add_argument("--skip-rsyslog", action="store_true")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--pg-url", help=f"PostgreSQL (default $SIEM_TEST_PG_URL or {DEFAULT_PG})")
    p.add_argument("--keep-pg", action="store_true", help="keep the loaded schemas for next time")
    p.add_argument(
        "--cases",
        default=",".join(CASE_KEYS),
        help="comma-separated subset of: " + ", ".join(CASE_KEYS),
    )
    p.add_argument("--floor-codec", help="force the floor's codec (isal:1, zlib-ng:1, ...)")
    p.add_argument(
        "--rsyslog-workers",
        default=",".join(str(w) for w in RSYSLOG_WORKERS),
        help="multi-threaded rsyslog configurations to try (main queue workers)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "siem-plugins-bench",
        help="where generated datasets are cached",
    )
    p.add_argument(
        "--sut",
        type=Path,
        help="run the siem-plugins CLI from this source tree (a folder holding a "
        "siem_plugins package) instead of the installed one: before/after comparisons",
    )
    p.add_argument("--json", type=Path, help="also write all results to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    args.sizes = [SMOKE_EVENTS] if args.smoke else [int(x) for x in args.events.split(",") if x]
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(CASE_KEYS)
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    args.cases = [k for k in CASE_KEYS if k in args.cases]  # dependencies need this order
    args.rsyslog_workers = [int(w) for w in str(args.rsyslog_workers).split(",") if w]
    if args.smoke:
        args.repeat = 1
        # One multi-threaded configuration: the (3 workers), or the first given.
        workers = args.rsyslog_workers
        args.rsyslog_workers = [3] if 3 in workers else workers[:1]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="siem-bench-"))
    bench = Bench(args, work, log)
    results: list[Result] = []
    try:
        for size in args.sizes:
            data = ds_mod.prepare(size, args.data_dir, log=log)
            log(
                f"dataset: {size:,} events, {data.ndjson_bytes / MiB:.1f} MiB NDJSON "
                f"(records {data.min_record}-{data.max_record} bytes, "
                f"{data.unicode_share:.0%} with non-ASCII)"
            )
            results.extend(bench.run_size(data))
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    table = metrics(results, args.sizes, bench.hook_calls)
    print_tables(results, table, args.sizes)
    info = machine()
    print(
        f"machine: {info['cores']} cores, {info['cpu']}, {info['memory_mib'] / 1024:.0f} GiB, "
        f"Python {info['python']}; floor codec {bench.codec}; sync caps: max_events "
        f"{MAX_EVENTS:,}, max_bytes {MAX_BYTES}, batch 5000; took "
        f"{time.monotonic() - started:.0f} s"
    )
    if args.smoke:
        # Start-up (~0.3-1 s per CLI run) dominates 3,000 events: the ratios say nothing.
        print("smoke mode: checks that every case runs and verifies; ignore PASS/MISS here")
    if args.sut:
        print(f"siem-plugins under test: {args.sut.resolve()} (--sut)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": {
                        "sizes": args.sizes,
                        "repeat": args.repeat,
                        "floor_codec": bench.codec,
                        "max_events": MAX_EVENTS,
                        "max_bytes": MAX_BYTES,
                        "rsyslog_workers": args.rsyslog_workers,
                        "sut": str(args.sut) if args.sut else None,
                    },
                    "results": [asdict(r) for r in results],
                    "metrics": [
                        {**asdict(m), "values": {str(k): v for k, v in m.values.items()}}
                        for m in table
                    ],
                },
                indent=2,
            )
        )
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"FAILED {fmt_size(r.size)} {r.case}: {r.note}", file=sys.stderr)
    return 1 if failed else 0
