"""Crash anywhere: SIGKILL `siem-plugins sync` at random moments, many times, then let it
finish. Every event must land in exactly one complete object, with no multipart upload
left open and the cursors at the last id.

Two kinds of kill: a timer at a random moment (start-up, mid-read, mid-upload, mid-commit)
and a plugin that kills the process right after an object completed in S3 but before the
cursor moved (tests/plugins/crashy.py)."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from siem_plugins.events import canonicalize
from siem_plugins.storage import NOTIFIER, SINK, SQLiteStore, State
from siem_plugins.testing.s3server import S3Server
from tests.helpers import drop_in_folder

PLUGINS = Path(__file__).parent / "plugins"
EVENTS = 64_000
TRIALS = 20


def config(tmp_path: Path, s3: S3Server, bucket: str, crash_rate: float) -> Path:
    opts = s3.sink_options(bucket)
    plugins = drop_in_folder(tmp_path / "plugins", PLUGINS)
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
plugins_dir = "{plugins}"
[store]
url = "sqlite:///{tmp_path / "siem.db"}"
[s3]
endpoint_url = "{opts["endpoint_url"]}"
region = "{opts["region"]}"
access_key_id = "{opts["access_key_id"]}"
secret_access_key = "{opts["secret_access_key"]}"
part_size = 5242880
max_attempts = 2

[[integration]]
name = "gz"
account = "acme"
format = "json"
max_events = 3000
sink = {{ type = "crashy-s3", bucket = "{bucket}", prefix = "gz/", crash_rate = {crash_rate} }}
notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["config"] }}

[[integration]]
name = "big"
account = "acme"
format = "syslog"
compression = "none"
max_events = 25000
sink = {{ type = "crashy-s3", bucket = "{bucket}", prefix = "big/", crash_rate = {crash_rate} }}
notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["threat_detected"] }}
""")
    return cfg


def sync(cfg: Path, seed: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SIEM_CRASH_SEED": str(seed)}
    return subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_exactly_once(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    from siem_plugins.demo import generate

    events = [{**e, "seq": i} for i, e in enumerate(generate(EVENTS, seed=11))]
    chunk = EVENTS // TRIALS
    store = SQLiteStore(tmp_path / "siem.db")
    client = s3_server.client()
    rng = random.Random(20261128)
    crashy = config(tmp_path, s3_server, s3_bucket, crash_rate=0.25)
    kills = {"timer": 0, "plugin": 0, "finished": 0}
    open_uploads_seen = 0
    # How long a whole run takes here, learnt from the runs that finish: the timer is
    # drawn within it, so the kills land inside runs on a fast machine and a slow one.
    run_time = 1.0
    for trial in range(TRIALS):
        # New events arrive before every run, so every trial has work to be killed in.
        part = events[trial * chunk : (trial + 1) * chunk]
        store.append("acme", (canonicalize(e) for e in part))
        started = time.monotonic()
        proc = sync(crashy, seed=trial)
        # Odd trials: a timer at a random moment. Even ones: only the plugin may kill.
        timer = rng.uniform(0.05, 0.8) * run_time if trial % 2 else 120.0
        try:
            proc.wait(timeout=timer)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills["timer"] += 1
        else:
            if proc.returncode == -signal.SIGKILL:
                kills["plugin"] += 1
            else:
                assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
                kills["finished"] += 1
                run_time = time.monotonic() - started
        open_uploads_seen += len(client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []))
    store.close()
    assert kills["timer"] >= 4 and kills["plugin"] >= 2, kills

    # Now let it finish, without the crashing plugin.
    final = sync(config(tmp_path, s3_server, s3_bucket, crash_rate=0.0), seed=0)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()

    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    for prefix, compressed in (("gz/", True), ("big/", False)):
        seen: Counter[int] = Counter()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                keys.append(obj["Key"])
                got = client.get_object(Bucket=s3_bucket, Key=obj["Key"])
                body = got["Body"].read()
                data = gzip.decompress(body) if compressed else body
                lines = data.splitlines()
                meta = got["Metadata"]
                assert len(lines) == int(meta["siem-count"])  # complete, never partial
                first, last = int(meta["siem-first-id"]), int(meta["siem-last-id"])
                assert obj["Key"].endswith(
                    f"_{first:020d}-{last:020d}.{'json.gz' if compressed else 'log'}"
                )
                for line in lines:
                    text = line if compressed else b"{" + line.split(b" - ", 3)[3] + b"}"
                    seen[orjson.loads(text)["seq"]] += 1
        assert sorted(seen) == list(range(EVENTS)), f"{prefix}: missing events"
        assert set(seen.values()) == {1}, f"{prefix}: duplicated events"
        assert keys == sorted(keys)
    state = State(tmp_path / "siem.db")
    for name in ("gz", "big"):
        assert state.cursor(name, SINK) == EVENTS
        assert state.cursor(name, NOTIFIER) == EVENTS
        assert state.pending(name, SINK) is None
    state.close()
    print(f"crash trials: {kills}; multipart uploads found open after kills: {open_uploads_seen}")
