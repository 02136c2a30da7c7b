"""What ``siem-plugins verify`` costs: ``python -m benchmarks.verify [--events N]``.

Two cases against moto's S3 over HTTP (in a process of its own, as in the benchmark
suite), each on a fresh SQLite store:

* ``listing``: 200 objects of 100 events; ``verify`` (one listing, one HEAD per object,
  one upload listing) timed, and the S3 requests it sent counted by operation;
* ``deep``: ``--events`` events (default 1,000,000) in objects of the default
  ``max_events``; ``verify --deep`` (every object read and compared) timed, with the
  process's peak RSS before and after.

Prints one line per case. Not part of the test run (the numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from siem_plugins.config import config_from_dict
from siem_plugins.demo import generate
from siem_plugins.events import canonicalize
from siem_plugins.host import create_host
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import SQLiteStore
from siem_plugins.verify import verify_integration


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _runtime(db: Path, s3: dict[str, Any], bucket: str, max_events: int) -> Runtime:
    raw = {
        "store": {"url": f"sqlite:///{db}"},
        "integration": [
            {
                "name": "acme",
                "account": "acme",
                "format": "json",
                "max_events": max_events,
                "sink": {
                    "type": "s3",
                    "bucket": bucket,
                    "prefix": "siem/",
                    "endpoint_url": s3["endpoint"],
                    "region": s3["region"],
                    "access_key_id": s3["access_key_id"],
                    "secret_access_key": s3["secret_access_key"],
                },
                "notify": {
                    "type": "outbox",
                    "path": str(db.parent / "outbox"),
                    "from": "siem@example.com",
                    "to": ["soc@example.com"],
                    "events": ["config"],
                },
            }
        ],
    }
    cfg = config_from_dict(raw, file="<benchmark>")
    return Runtime(cfg, create_host(None, entry_points=False, disabled=()))


def _case(folder: Path, s3: dict[str, Any], events: int, max_events: int, deep: bool) -> str:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
    )
    bucket = f"verify-{events}-{int(deep)}"
    client.create_bucket(Bucket=bucket)
    db = folder / f"{bucket}.db"
    store = SQLiteStore(db)
    store.append("acme", (canonicalize(e) for e in generate(events, seed=1)))
    store.close()
    rt = _runtime(db, s3, bucket, max_events)
    try:
        integ = rt.integrations[0]
        started = time.perf_counter()
        result = Pipeline(rt).sync(integ)
        synced = time.perf_counter() - started
        assert result.ok, result.errors
        rss = _rss_mib()
        requests: dict[str, int] = {}

        def count(event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            requests[operation] = requests.get(operation, 0) + 1

        # botocore's event system: every request the sink's client sends, by operation.
        integ.sink.client.meta.events.register("before-send.s3", count)  # type: ignore[attr-defined]
        started = time.perf_counter()
        report = verify_integration(rt, integ, deep=deep)
        took = time.perf_counter() - started
    finally:
        rt.close()
    assert report.ok and report.error is None, (report.findings, report.error)
    size = sum(o["Size"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    return (
        f"{'verify --deep' if deep else 'verify'}: {report.objects} objects, {events} events, "
        f"{size / 2**20:.1f} MiB stored (sync took {synced:.1f}s): {took:.2f}s, "
        f"{took / report.objects * 1000:.1f} ms per object; requests "
        f"{json.dumps(dict(sorted(requests.items())))}; peak RSS {rss:.0f} -> "
        f"{_rss_mib():.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verify")
    parser.add_argument("--events", type=int, default=1_000_000, help="events for --deep")
    parser.add_argument("--objects", type=int, default=200, help="objects for the listing")
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.s3server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        s3 = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            print(_case(Path(tmp), s3, args.objects * 100, 100, deep=False), flush=True)
            print(_case(Path(tmp), s3, args.events, 100_000, deep=True), flush=True)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
