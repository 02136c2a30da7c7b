"""The hand-written comparison cases, each run as its own process by the benchmark.

``python -m benchmarks.children CASE --db FILE --out FILE [...]``

* ``stdlib``: the stdlib ceiling. The bare loop, no framework: rows from the same
  SQLite file in id order, each event parsed and serialised by orjson, one line each,
  gzip by the stdlib's zlib at level 6, into memory.
* ``floor``: the least work the job can be: the stored bytes of each event joined by
  newlines and deflated (gzip framing) by the fastest gzip-compatible codec available,
  into memory.
* ``naive``: what a user writes by hand: ``fetchall``, ``json.dumps`` per event, gzip
  (stdlib, level 6, kinder than ``gzip.compress``'s default 9), one ``put_object``.

When the job is done the child prints one JSON line: the monotonic clock at that moment
(``time.monotonic`` is system-wide on Linux, so the parent subtracts its own spawn time),
its peak RSS (``VmHWM``), bytes and events. Only then does it write the output to ``--out`` for the
parent to verify, so neither the write nor the check is timed or counted in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.measure import vm_hwm_kb

#: Codecs the floor may use (gzip framing: wbits 31), in order of preference: ISA-L's
#: level 1 (its default fast level), then the rest at their fastest levels.
CODECS = ("isal:1", "isal:0", "zlib-ng:1", "zlib:1")


def make_compressor(codec: str) -> Any:
    """A zlib-style compress object with gzip framing for ``codec`` (``name:level``)."""
    name, _, level_text = codec.partition(":")
    level = int(level_text or "1")
    if name == "isal":
        from isal import isal_zlib

        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    if name == "zlib-ng":
        from zlib_ng import zlib_ng

        return zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31)
    if name == "zlib":
        import zlib

        return zlib.compressobj(level, zlib.DEFLATED, 31)
    raise ValueError(f"unknown codec {codec!r}")


def available_codecs() -> list[str]:
    out = []
    for codec in CODECS:
        try:
            make_compressor(codec)
        except ImportError:
            continue
        out.append(codec)
    return out


def _rows(db: str, account: str, columns: str = "body") -> tuple[sqlite3.Connection, Any]:
    conn = sqlite3.connect(db)
    cur = conn.execute(
        f"SELECT {columns} FROM siem_event WHERE account=? ORDER BY id",  # noqa: S608 (constant)
        (account,),
    )
    return conn, cur


def stdlib_ceiling(args: argparse.Namespace) -> tuple[list[bytes], int]:
    import zlib

    import orjson

    loads, dumps = orjson.loads, orjson.dumps
    conn, cur = _rows(args.db, args.account)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    out: list[bytes] = []
    n = 0
    while rows := cur.fetchmany(5000):
        n += len(rows)
        out.append(z.compress(b"".join([dumps(loads(r[0])) + b"\n" for r in rows])))
    out.append(z.flush())
    conn.close()
    return out, n


def floor(args: argparse.Namespace) -> tuple[list[bytes], int]:
    conn, cur = _rows(args.db, args.account)
    z = make_compressor(args.codec)
    out: list[bytes] = []
    n = 0
    while rows := cur.fetchmany(5000):
        n += len(rows)
        out.append(z.compress(b"\n".join([r[0] for r in rows]) + b"\n"))
    out.append(z.flush())
    conn.close()
    return out, n


def naive(args: argparse.Namespace) -> tuple[list[bytes], int]:
    import gzip
    import json

    import boto3

    conn = sqlite3.connect(args.db)
    rows = conn.execute(
        "SELECT id, type, log_type, ts, body FROM siem_event WHERE account=? ORDER BY id",
        (args.account,),
    ).fetchall()
    text = "".join([json.dumps(json.loads(row[4])) + "\n" for row in rows])
    payload = gzip.compress(text.encode(), compresslevel=6)
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
    )
    s3.put_object(Bucket=args.bucket, Key=args.key, Body=payload, ContentEncoding="gzip")
    conn.close()
    # Returned for its size only (no --out): the parent verifies the object in S3.
    return [payload], len(rows)


CASES: dict[str, Callable[[argparse.Namespace], tuple[list[bytes], int]]] = {
    "stdlib": stdlib_ceiling,
    "floor": floor,
    "naive": naive,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.children")
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--db", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--out", help="where to write the output after the timed part")
    parser.add_argument("--codec", default="isal:1")
    for name in ("endpoint", "region", "bucket", "key", "access_key_id", "secret_access_key"):
        parser.add_argument(f"--{name.replace('_', '-')}")
    args = parser.parse_args(argv)
    chunks, n = CASES[args.case](args)
    t_end = time.monotonic()
    # VmHWM, not ru_maxrss: the latter includes the parent's image folded in at exec.
    maxrss_kb = vm_hwm_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = sum(map(len, chunks))
    report = {"t_end": t_end, "maxrss_kb": maxrss_kb, "bytes": size, "events": n}
    if args.case == "floor":
        report["codec"] = args.codec
    print(json.dumps(report), flush=True)
    if args.out and chunks:
        with open(args.out, "wb") as f:
            f.writelines(chunks)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
