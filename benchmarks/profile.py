"""Profile one sync with py-spy: ``python -m benchmarks.profile [--events 1000000]``.

Runs the same ``siem-plugins sync`` child as the benchmark (same dataset, same config,
the S3 server in its own process) under ``py-spy record`` and writes, to ``--out``:

* ``<case>-<events>.speedscope.json``: open it in https://www.speedscope.app;
* ``<case>-<events>.txt``: py-spy's raw collapsed stacks;

then prints where the time goes, by stage (imports, SQLite fetch, Event objects,
formatter, gzip, S3 client, notifier pass, plugin host, ...) and by leaf function.
``--idle`` (the default) keeps samples where the process waits (socket, fsync), so the
stages add up to wall-clock time, not CPU time.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import bench as bench_mod
from benchmarks import dataset as ds_mod
from benchmarks.dataset import Dataset

#: (stage, test on the whole stack) checked first, in order.
WHOLE_STACK: tuple[tuple[str, Callable[[list[str]], bool]], ...] = (
    ("start-up: imports", lambda st: any("_find_and_load" in f for f in st)),
    ("notifier pass (digest scan)", lambda st: any("_digest (" in f for f in st)),
    ("plugin host (pluggy)", lambda st: any("pluggy" in f for f in st)),
)
#: (stage, substrings of a frame), matched from the leaf up: the innermost known frame.
LEAF_UP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gzip (compress.py)", ("siem_plugins/compress.py",)),
    ("formatter", ("builtin/jsonfmt.py", "builtin/syslog.py")),
    (
        "S3 client (botocore, http)",
        ("botocore", "urllib3", "http/client", "socket.py", "ssl.py", "boto3"),
    ),
    ("local sink (write, fsync)", ("builtin/local.py",)),
    ("Event objects (store.read listcomp)", ("<listcomp> (", "<genexpr> (")),
    ("SQLite fetch (store.read)", ("read (/", "read (siem")),
    ("plan / state (SQLite)", ("plan (", "storage/state.py", "storage/postgres.py")),
    ("pipeline loop", ("siem_plugins/pipeline.py",)),
)


def stage(stack: list[str]) -> str:
    for name, test in WHOLE_STACK:
        if test(stack):
            return name
    for frame in reversed(stack):
        for name, needles in LEAF_UP:
            if any(n in frame for n in needles):
                if name.startswith(("Event objects", "SQLite fetch")) and "storage/" not in frame:
                    continue
                return name
    return "other (interpreter, CLI, config)"


def summarize(raw: Path, top: int = 15) -> str:
    stages: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if not f.startswith("process ")]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        total += count
        stages[stage(frames)] += count
        leaf = frames[-1] if frames else "?"
        leaves[leaf.replace(str(bench_mod.REPO) + "/", "")] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "by stage:"]
    for name, n in stages.most_common():
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    out += ["", f"top {top} leaf frames (self time):"]
    for name, n in leaves.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--case", choices=("json-s3", "syslog-s3", "json-local", "syslog-local"))
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--no-idle", action="store_true", help="CPU samples only")
    p.add_argument("--out", type=Path, default=Path("profiles"))
    p.add_argument("--sut", type=Path, help="profile siem_plugins from this source tree")
    p.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "siem-plugins-bench"
    )
    args = p.parse_args(argv)
    case = args.case or "json-s3"
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("py-spy is not installed: bash benchmarks/setup.sh", file=sys.stderr)
        return 2
    args.out = args.out.resolve()  # the child runs in a scratch folder
    args.out.mkdir(parents=True, exist_ok=True)
    bargs = bench_mod.parse_args(["--data-dir", str(args.data_dir), "--quiet"])
    work = Path(tempfile.mkdtemp(prefix="siem-profile-"))
    b = bench_mod.Bench(bargs, work, lambda m: print(m, file=sys.stderr))
    try:
        data: Dataset = ds_mod.prepare(args.events, args.data_dir)
        ds_mod.warm(data)
        fmt = "json" if case.startswith("json") else {"type": "syslog"}
        compression = "none" if case == "syslog-local" else "gzip"

        def fresh_config(tag: str) -> Path:
            # A new integration name each time: its cursor starts at 0, all is synced.
            if case.endswith("s3"):
                s3 = b.server()
                bucket = b.uniq(case)
                s3.client.create_bucket(Bucket=bucket)
                sink = s3.sink(bucket)
            else:
                sink = {"type": "local", "path": str(work / f"out-{tag}")}
            return b._config(
                case,
                data,
                store_url=data.url,
                fmt=fmt,
                compression=compression,
                sink=sink,
                plugins=b.plugins_empty,
            )

        stem = args.out / f"{case}-{args.events}"
        record = [pyspy, "record", "--rate", str(args.rate)]
        if not args.no_idle:
            record.append("--idle")
        # One recording per output format: py-spy writes a single format per run.
        for fmt_name, target in (
            ("raw", Path(f"{stem}.txt")),
            ("speedscope", Path(f"{stem}.speedscope.json")),
        ):
            sync = ["-m", "siem_plugins", "sync", "-c", str(fresh_config(fmt_name))]
            cmd = [*record, "--format", fmt_name, "-o", str(target), "--", sys.executable]
            proc = subprocess.run(
                [*cmd, *sync, "--no-progress"],
                cwd=work,
                env=bench_mod.child_env(sut=args.sut),
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
        print(f"profile of `siem-plugins sync` ({case}, {args.events:,} events):")
        print(f"  raw: {stem}.txt\n  speedscope: {stem}.speedscope.json\n")
        print(summarize(Path(f"{stem}.txt")))
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
