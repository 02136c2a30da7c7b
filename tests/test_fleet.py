"""Scale-out on Celery with real parts: PostgreSQL, Redis (and RabbitMQ), several worker
processes, dozens of integrations, and a worker SIGKILLed in the middle of a sync."""

from __future__ import annotations

import gzip
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from siem_plugins.events import canonicalize
from siem_plugins.storage import SINK, PgState, PostgresStore
from siem_plugins.testing.s3server import S3Server
from tests.helpers import drop_in_folder

PLUGINS = Path(__file__).parent / "plugins"
REDIS = os.environ.get("SIEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")
RABBIT = os.environ.get("SIEM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def write_config(
    path: Path,
    pg_url: str,
    s3: S3Server,
    broker: str,
    integrations: list[tuple[str, str, dict[str, Any]]],
) -> None:
    opts = s3.sink_options("x")
    plugins = drop_in_folder(path.parent / "plugins", PLUGINS)
    text = f"""
interval = "1s"
plugins_dir = "{plugins}"
[store]
url = "{pg_url}"
[celery]
broker_url = "{broker}"
queue = "siem-test-{secrets.token_hex(4)}"
[s3]
endpoint_url = "{opts["endpoint_url"]}"
region = "{opts["region"]}"
access_key_id = "{opts["access_key_id"]}"
secret_access_key = "{opts["secret_access_key"]}"
"""
    for name, bucket, extra in integrations:
        sink_type = extra.pop("sink_type", "s3")
        sink_extra = "".join(f", {k} = {v}" for k, v in extra.pop("sink", {}).items())
        text += f"""
[[integration]]
name = "{name}"
account = "{name}"
format = "json"
max_events = {extra.get("max_events", 1000)}
batch_size = {extra.get("batch_size", 5000)}
sink = {{ type = "{sink_type}", bucket = "{bucket}"{sink_extra} }}
notify = {{ type = "outbox", path = "{path.parent / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["config"] }}
"""
    path.write_text(text)


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "siem_plugins", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for p in running:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def shipped(s3: S3Server, bucket: str) -> Counter[int]:
    client = s3.client()
    seen: Counter[int] = Counter()
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for line in gzip.decompress(body).splitlines():
            seen[orjson.loads(line)["seq"]] += 1
    return seen


def sync_runs(pg_url: str) -> list[tuple[str, str, Any, Any]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            # One lock per (integration, destination): passes of one destination never
            # overlap; a sink pass and a notifier pass of one integration may.
            "SELECT integration || '/' || destination, worker, started, finished"
            " FROM siem_sync_run ORDER BY integration, destination, started"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.mark.slow
def test_workers_share_integrations_exactly_once_and_survive_a_kill(
    tmp_path: Path,
    pg_url: str,
    s3_server: S3Server,
    siem_events: Any,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    names = [f"acct{i:02d}" for i in range(24)]
    per_account = 300
    store = PostgresStore(pg_url)
    expected: dict[str, int] = {}
    events = siem_events(per_account * 2)
    for n in names:
        s3_server.create_bucket(f"b-{n}")
        store.append(n, (canonicalize({**e, "seq": i}) for i, e in enumerate(events[:per_account])))
        expected[n] = per_account
    slow_total = 600
    s3_server.create_bucket("b-slowpoke")
    store.append(
        "slowpoke",
        (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(slow_total, seed=4))),
    )
    integrations = [(n, f"b-{n}", {}) for n in names]
    integrations.append(
        (
            "slowpoke",
            "b-slowpoke",
            {
                "sink_type": "slow-s3",
                "sink": {"delay": 0.25},
                "batch_size": 20,
                "max_events": 10_000,
            },
        )
    )
    cfg = tmp_path / "siem.toml"
    write_config(cfg, pg_url, s3_server, REDIS, integrations)
    log = tmp_path / "fleet.log"
    for _ in range(3):
        procs.append(spawn("worker", "-c", str(cfg), "--pool", "solo", log=log))
    procs.append(spawn("run", "--executor", "celery", "-c", str(cfg), log=log))

    # Kill the worker that is in the middle of syncing the slow integration.
    deadline = time.monotonic() + 90
    victim = None
    while victim is None and time.monotonic() < deadline:
        for name, worker, _started, finished in sync_runs(pg_url):
            if name == "slowpoke/sink" and finished is None:
                victim = int(worker.split(":")[1])
        time.sleep(0.1)
    assert victim is not None, log.read_text()[-3000:]
    time.sleep(0.5)  # well inside the ~7 s sync
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()

    # More events arrive while the fleet runs.
    for n in names[:6]:
        store.append(
            n,
            (
                canonicalize({**e, "seq": i})
                for i, e in enumerate(events[per_account:], start=per_account)
            ),
        )
        expected[n] = per_account * 2
    store.close()

    state = PgState(pg_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = all(state.cursor(n, SINK) >= 1 for n in names) and all(
            sum(shipped_counts.values()) == expected[n]
            for n in names[:6]
            for shipped_counts in [shipped(s3_server, f"b-{n}")]
        )
        if done and state.cursor("slowpoke", SINK) > 0 and state.pending("slowpoke", SINK) is None:
            break
        time.sleep(1)
    state.close()

    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)

    for n in names:
        seen = shipped(s3_server, f"b-{n}")
        assert sorted(seen) == list(range(expected[n])), n
        assert set(seen.values()) == {1}, n
    seen = shipped(s3_server, "b-slowpoke")
    assert sorted(seen) == list(range(slow_total)) and set(seen.values()) == {1}
    assert s3_server.client().list_multipart_uploads(Bucket="b-slowpoke").get("Uploads", []) == []

    # No integration was ever synced by two workers at once.
    runs = sync_runs(pg_url)
    workers = {w.split(":")[1] for _, w, _, _ in runs}
    assert len(workers) >= 2
    by_name: dict[str, list[tuple[float, float]]] = {}
    for name, worker, started, finished in runs:
        end = finished.timestamp() if finished else killed_at
        assert finished or int(worker.split(":")[1]) == victim
        by_name.setdefault(name, []).append((started.timestamp(), end))
    for name, spans in by_name.items():
        for (s1, e1), (s2, _e2) in itertools.pairwise(spans):
            assert s2 >= e1, f"{name}: overlapping syncs {s1}-{e1} and {s2}"
    print(f"fleet: {len(runs)} passes by {len(workers)} workers over {len(by_name)} destinations")


@pytest.mark.parametrize("broker", [REDIS, RABBIT], ids=["redis", "rabbitmq"])
def test_both_brokers_carry_the_tasks(
    tmp_path: Path,
    pg_url: str,
    s3_server: S3Server,
    siem_events: Any,
    broker: str,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    names = ["one", "two", "three"]
    store = PostgresStore(pg_url)
    for n in names:
        s3_server.create_bucket(f"b-{n}")
        store.append(n, (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(200))))
    store.close()
    cfg = tmp_path / "siem.toml"
    write_config(cfg, pg_url, s3_server, broker, [(n, f"b-{n}", {}) for n in names])
    log = tmp_path / "fleet.log"
    procs.append(
        spawn("worker", "-c", str(cfg), "--pool", "threads", "--concurrency", "2", log=log)
    )
    beat = subprocess.run(
        [
            sys.executable,
            "-m",
            "siem_plugins",
            "run",
            "--executor",
            "celery",
            "--cycles",
            "1",
            "-c",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert beat.returncode == 0, beat.stderr
    state = PgState(pg_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        state.cursor(n, SINK) > 0 and state.pending(n, SINK) is None for n in names
    ):
        time.sleep(0.2)
    state.close()
    for n in names:
        seen = shipped(s3_server, f"b-{n}")
        assert sorted(seen) == list(range(200)) and set(seen.values()) == {1}, log.read_text()


def test_a_worker_loads_the_drop_in_folder_beside_its_config(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ./hooks of wherever the worker was started: hooks/ beside the config file."""
    from siem_plugins.fleet import TASK_NAME, make_app

    conf = tmp_path / "etc"
    drop_in_folder(
        conf / "hooks",
        files={
            "mirror.py": "from siem_plugins import SinkSpec, hookimpl\n"
            "from siem_plugins.builtin.local import LocalSink\n"
            "@hookimpl\n"
            "def siem_register_sinks():\n"
            "    return [SinkSpec(name='mirror', factory=LocalSink.from_options)]\n"
        },
    )
    (conf / "siem.toml").write_text(f"""
[store]
url = "{pg_url}"
[celery]
broker_url = "{REDIS}"
[[integration]]
name = "acme"
format = "json"
sink = {{ type = "mirror", path = "{tmp_path / "out"}" }}
notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["config"] }}
""")
    elsewhere = tmp_path / "elsewhere"
    drop_in_folder(elsewhere / "hooks", files={"stray.py": "raise SystemExit('ran')\n"})
    monkeypatch.chdir(elsewhere)
    app = make_app(conf / "siem.toml")
    # The task body, run here: it builds the worker's runtime (host included).
    assert app.tasks[TASK_NAME]("acme")["status"] == "ok"


def test_a_worker_logs_what_its_processes_did_when_it_stops(
    tmp_path: Path, pg_url: str, s3_server: S3Server, siem_events: Any
) -> None:
    """The passes run in the prefork pool's processes; the stop line of the parent counts
    them all (two passes per task: sink and notifier)."""
    names = [f"stop{secrets.token_hex(3)}-{i}" for i in range(3)]
    store = PostgresStore(pg_url)
    for n in names:
        s3_server.create_bucket(f"b-{n}")
        store.append(n, (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(50))))
    store.close()
    cfg = tmp_path / "siem.toml"
    write_config(cfg, pg_url, s3_server, REDIS, [(n, f"b-{n}", {}) for n in names])
    # Tasks expire after one interval: long enough for a worker that is still starting.
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "60s"'))
    err = tmp_path / "worker.err"
    with open(err, "wb") as stderr:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "siem_plugins",
                "worker",
                "-c",
                str(cfg),
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,  # Celery's banner
            stderr=stderr,
            start_new_session=True,
        )
    try:
        beat = subprocess.run(
            [
                sys.executable,
                "-m",
                "siem_plugins",
                "run",
                "--executor",
                "celery",
                "--cycles",
                "1",
                "-c",
                str(cfg),
                "--log-format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert beat.returncode == 0, beat.stderr
        last = orjson.loads(beat.stderr.splitlines()[-1])
        assert last["message"].startswith("stopped: 1 ticks, 3 tasks enqueued in ")
        assert (last["ticks"], last["tasks"]) == (1, 3)
        deadline = time.monotonic() + 60
        while err.read_text().count("succeeded in") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert err.read_text().count("succeeded in") == 3, err.read_text()[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    records = [orjson.loads(line) for line in err.read_text().splitlines()]
    stop = records[-1]
    assert stop["logger"] == "siem_plugins.fleet" and stop["message"].startswith("stopped: ")
    # Another test's worker on this machine may hold an advisory lock: skipped, not lost.
    assert stop["passes"] + stop["skipped"] == 6 and stop["failures"] == 0, stop
    assert stop["passes"] >= 1


def test_the_beat_and_the_workers_pick_up_stored_integrations_without_a_restart(
    tmp_path: Path,
    pg_url: str,
    s3_server: S3Server,
    siem_events: Any,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """Integrations kept as data (the settings API's) reach a running fleet: the beat
    enqueues them and a worker built before they existed syncs them; a disabled one is
    no longer synced."""
    import json

    from siem_plugins.control.secrets import generate_key

    key = generate_key()
    env = {**os.environ, "SIEM_SECRET_KEYS": key}
    s3_server.create_bucket("b-late")
    store = PostgresStore(pg_url)
    store.append("late", (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(300))))
    cfg = tmp_path / "siem.toml"
    write_config(cfg, pg_url, s3_server, REDIS, [])
    log = tmp_path / "fleet.log"
    with open(log, "ab") as out:
        for args in (
            ["worker", "-c", str(cfg), "--pool", "threads", "--concurrency", "2"],
            ["run", "--executor", "celery", "-c", str(cfg)],
        ):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "siem_plugins", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            )
    time.sleep(3)  # both run, with no integration at all
    doc = {
        "name": "late",
        "account": "late",
        "format": "json",
        "sink": {"type": "s3", "bucket": "b-late"},
        "notify": {"type": "outbox", "path": str(tmp_path / "outbox"), "from": "s@example.com",
                   "to": ["a@example.com"], "events": ["config"]},
    }  # fmt: skip
    (tmp_path / "late.json").write_text(json.dumps(doc))
    put = [sys.executable, "-m", "siem_plugins", "integrations", "put", str(tmp_path / "late.json"),
           "-c", str(cfg), "--no-probe"]  # fmt: skip
    saved = subprocess.run(put, env=env, capture_output=True, text=True, timeout=60)
    assert saved.returncode == 0, saved.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(lines(s3_server, "b-late")) < 301:
        time.sleep(0.2)
    got = lines(s3_server, "b-late")  # the 300, and the save's own config event
    seqs = Counter(x.get("seq") for x in got)
    assert len(got) == 301 and seqs[None] == 1, log.read_text()
    assert sorted(s for s in seqs if s is not None) == list(range(300))
    assert set(seqs.values()) == {1}
    # Disabled: the beat stops enqueueing it (and a worker would ignore a queued task).
    doc["enabled"] = False
    (tmp_path / "late.json").write_text(json.dumps(doc))
    assert subprocess.run(put, env=env, capture_output=True, timeout=60).returncode == 0
    time.sleep(3)
    store.append("late", [canonicalize({**siem_events(1)[0], "seq": 999})])
    store.close()
    time.sleep(4)
    assert 999 not in {x.get("seq") for x in lines(s3_server, "b-late")}


def lines(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    client = s3.client()
    out = []
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        out += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
    return out
