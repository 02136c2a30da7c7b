"""Prometheus metrics, /healthz and /readyz of `run` and `worker`, scraped over HTTP while
real syncs go to moto's S3 (and, for the fleet, PostgreSQL and Redis), and held against
what reached the bucket."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import siem_plugins
from siem_plugins import FormatterBase, FormatterSpec, hookimpl, metrics
from siem_plugins.endpoint import (
    HealthCollector,
    Readiness,
    StoreProbe,
    Watched,
    endpoint,
)
from siem_plugins.events import Event
from siem_plugins.metrics import COUNTERS, GAUGES
from siem_plugins.options import Options
from siem_plugins.pipeline import Pipeline
from siem_plugins.storage import NOTIFIER, SINK, PgState, PostgresStore, SQLiteStore
from siem_plugins.testing.s3server import Faults, S3Server
from siem_plugins.testing.smtpserver import SMTPServer
from tests.helpers import ingest, integration, numbered, runtime

DOCS = Path(__file__).resolve().parent.parent / "docs"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    """An HTTP request over a real socket: (status, body)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, parts.path or "/")
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def scrape(url: str) -> Samples:
    """Every sample of ``url``/metrics, by name and sorted labels."""
    status, body = fetch(f"{url}/metrics")
    assert status == 200, body
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def get(url: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    status, body = fetch(url, method)
    return status, json.loads(body)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def served_url(log: Path, timeout: float = 60) -> str:
    """The endpoint's URL, from the process's JSON log."""

    def find() -> str | None:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record["message"].startswith("metrics: serving"):
                    return str(record["url"])
        return None

    try:
        return str(wait_for(find, timeout, "the metrics endpoint"))
    except AssertionError:
        raise AssertionError(log.read_text()[-3000:]) from None


def bucket_totals(s3: S3Server, bucket: str) -> tuple[int, int, int]:
    """(objects, events by their siem-count metadata, bytes) in a bucket."""
    client = s3.client()
    objects = events = size = 0
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        head = client.head_object(Bucket=bucket, Key=obj["Key"])
        objects += 1
        events += int(head["Metadata"]["siem-count"])
        size += int(head["ContentLength"])
    return objects, events, size


def s3_integration(name: str, sink: dict[str, Any], outbox: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "format": "json",
        "sink": sink,
        "notify": {
            "type": "outbox",
            "path": str(outbox),
            "from": "s@example.com",
            "to": ["a@example.com"],
            "events": ["config"],
        },
        **extra,
    }


def spawn(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "siem_plugins", *args, "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for p in running:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


@pytest.fixture
def counting() -> Iterator[Any]:
    """Counters on in this process, for an in-process sync; off again afterwards."""
    registry = metrics.enable()
    yield registry
    metrics.disable()


# --------------------------------------------------------------------------- run, end to end


def test_run_serves_counters_that_match_what_reached_the_bucket(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_faults: Faults,
    siem_events: Any,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    db = tmp_path / "siem.db"
    store = SQLiteStore(db)
    first = siem_events(1200)
    ingest(store, "acme", first)
    opts = s3_server.sink_options(s3_bucket)
    sink = ", ".join(f'{k} = "{v}"' for k, v in opts.items())
    cfg = tmp_path / "siem.toml"
    cfg.write_text(
        f'interval = "1s"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[[integration]]\nname = "acme"\nformat = "json"\nmax_events = 500\n'
        f"sink = {{ {sink} }}\n"
        f'notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", '
        f'from = "s@example.com", to = ["a@example.com"], events = ["config"] }}\n'
    )
    # One PutObject fails once with a 500: botocore sends it again, and says so.
    s3_faults.fail_next(1, status=500, code="InternalError", op="PutObject")
    log = tmp_path / "run.log"
    procs.append(spawn(["run", "-c", str(cfg), "--metrics-port", "0"], log))
    url = served_url(log)

    def shipped(n: int) -> Samples | None:
        samples = scrape(url)
        return (
            samples
            if value(samples, "siem_events_shipped_total", integration="acme") == n
            else None
        )

    wait_for(lambda: shipped(1200), 60, "1200 events shipped")
    more = siem_events(300, seed=2)
    ingest(store, "acme", more)  # while it runs
    store.close()
    wait_for(lambda: shipped(1500), 60, "1500 events shipped")

    # The lag gauges come from the health record of the last pass: wait for one that
    # found nothing left.
    def caught_up() -> Samples | None:
        s = scrape(url)
        lag = value(s, "siem_destination_lag_events", integration="acme", destination="sink")
        return s if lag == 0 else None

    samples = wait_for(caught_up, 30, "a pass that left nothing behind")
    objects, events, size = bucket_totals(s3_server, s3_bucket)
    assert events == 1500
    assert value(samples, "siem_objects_written_total", integration="acme") == objects
    assert value(samples, "siem_bytes_shipped_total", integration="acme") == size
    assert s3_faults.injected("PutObject") == 1
    retries = value(
        samples,
        "siem_request_retries_total",
        integration="acme",
        destination="sink",
        service="s3",
        operation="PutObject",
    )
    assert retries == 1
    selected = sum(1 for e in first + more if e["log_type"] == "config")
    assert value(samples, "siem_digest_events_total", integration="acme") == selected
    assert total(samples, "siem_passes_total", outcome="failed") == 0
    ok_passes = value(
        samples, "siem_passes_total", integration="acme", destination="sink", outcome="ok"
    )
    assert ok_passes is not None and ok_passes >= 2
    assert value(samples, "siem_pass_duration_seconds_count", destination="sink") == ok_passes
    assert (
        value(samples, "siem_destination_lag_seconds", integration="acme", destination="sink") == 0
    )
    assert (
        value(
            samples, "siem_destination_consecutive_failures", integration="acme", destination="sink"
        )
        == 0
    )
    success = value(
        samples,
        "siem_destination_last_success_timestamp_seconds",
        integration="acme",
        destination="sink",
    )
    assert success is not None and abs(success - time.time()) < 30
    assert value(samples, "siem_destinations", state="ok") == 2
    assert value(samples, "siem_store_up") == 1
    assert value(samples, "siem_build_info", version=siem_plugins.__version__, role="run") == 1
    assert value(samples, "process_cpu_seconds_total") is not None

    code, body = get(f"{url}/healthz")
    assert (code, body["status"], body["store"]) == (200, "ok", "ok")
    code, body = get(f"{url}/readyz")
    assert (code, body["status"], body["store"], body["role"]) == (200, "ok", "ok", "run")
    assert get(f"{url}/nothing")[0] == 404
    assert get(f"{url}/healthz", method="POST")[0] == 405
    assert stop(procs[0]) == 0


# --------------------------------------------------------------------------- in process


class _Picky(FormatterBase):
    """NDJSON that cannot format an event whose details say "boom"."""

    extension = "json"
    content_type = "application/x-ndjson"

    def format(self, events: Sequence[Event]) -> bytes:
        if any(b"boom" in e.raw for e in events):
            raise ValueError("cannot format a boom")
        return b"".join(e.raw + b"\n" for e in events)


class _PickyPlugin:
    @hookimpl
    def siem_register_formatters(self) -> list[FormatterSpec]:
        def build(options: Options) -> _Picky:
            options.finish()
            return _Picky()

        return [FormatterSpec(name="picky", factory=build)]


def test_failures_retries_replays_dead_letters_and_skips_are_counted(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_faults: Faults,
    s3_fast_retries: None,
    siem_events: Any,
    counting: Any,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    events = numbered(siem_events(30))
    events[4]["details"] = "boom"
    ingest(store, "acme", events)
    store.close()
    sink = s3_server.sink_options(s3_bucket, max_attempts=3)
    rt = runtime(
        tmp_path / "s.db",
        [s3_integration("acme", sink, tmp_path / "outbox", format="picky")],
        plugins=[("picky", _PickyPlugin())],
    )
    try:
        integ = rt.integrations[0]
        pipeline = Pipeline(rt)
        # The bad event is set aside first; then every attempt of the object fails: 3
        # attempts, 2 of them retries; the intent stays pending.
        s3_faults.fail_next(3, status=503, code="SlowDown", op="PutObject")
        first = pipeline.sync(integ)
        assert SINK in first.errors and len(first.set_aside) == 1
        r = counting.get_sample_value
        sink_labels = {"integration": "acme", "destination": "sink"}
        assert r("siem_passes_total", {**sink_labels, "outcome": "failed"}) == 1
        assert r("siem_passes_total", {**sink_labels, "outcome": "ok"}) is None
        retried = {**sink_labels, "service": "s3", "operation": "PutObject"}
        assert r("siem_request_retries_total", retried) == 2
        assert r("siem_events_set_aside_total", {"integration": "acme"}) == 1
        assert r("siem_objects_written_total", {"integration": "acme"}) is None
        # The next pass finishes the pending intent: a replay.
        assert pipeline.sync(integ).ok
        assert r("siem_intents_replayed_total", sink_labels) == 1
        assert r("siem_events_set_aside_total", {"integration": "acme"}) == 1
        assert r("siem_events_shipped_total", {"integration": "acme"}) == 29
        assert r("siem_objects_written_total", {"integration": "acme"}) == 1
        # Another process holds the sink's lock: the pass is skipped, and counted so.
        lock = rt.state.try_lock("acme", SINK)
        assert lock is not None
        with lock:
            assert SINK in pipeline.sync(integ).skipped
        assert r("siem_passes_total", {**sink_labels, "outcome": "skipped"}) == 1
        assert r("siem_pass_duration_seconds_count", {"destination": "sink"}) == 2
        assert (
            r(
                "siem_passes_total",
                {"integration": "acme", "destination": "notifier", "outcome": "ok"},
            )
            == 3
        )
    finally:
        rt.close()


def test_a_digest_the_relay_refused_is_sent_again_and_counted_so(
    tmp_path: Path, smtp_server: SMTPServer, siem_events: Any, counting: Any
) -> None:
    """The email notifier does not retry within a pass: the next pass sends the digest
    again (its pending intent), which is what siem_intents_replayed_total counts."""
    store = SQLiteStore(tmp_path / "s.db")
    events = siem_events(50)
    ingest(store, "acme", events)
    store.close()
    notify = {
        "type": "email",
        "host": smtp_server.host,
        "port": smtp_server.port,
        "security": "none",
        "from": "siem@example.com",
        "to": ["soc@example.com"],
        "events": ["config"],
    }
    rt = runtime(
        tmp_path / "s.db",
        [integration("acme", {"type": "local", "path": str(tmp_path / "o")}, notify=notify)],
    )
    try:
        integ = rt.integrations[0]
        smtp_server.fail_next(451, "try later", "DATA")
        assert NOTIFIER in Pipeline(rt).sync(integ).errors
        assert Pipeline(rt).sync(integ).ok
        r = counting.get_sample_value
        labels = {"integration": "acme", "destination": "notifier"}
        assert r("siem_passes_total", {**labels, "outcome": "failed"}) == 1
        assert r("siem_passes_total", {**labels, "outcome": "ok"}) == 1
        assert r("siem_intents_replayed_total", labels) == 1
        assert r("siem_digests_sent_total", {"integration": "acme"}) == 1
        selected = sum(1 for e in events if e["log_type"] == "config")
        assert r("siem_digest_events_total", {"integration": "acme"}) == selected
        assert len(smtp_server.messages) == 1
    finally:
        rt.close()


def test_retries_of_parts_uploaded_on_another_thread_are_the_pass_s(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_faults: Faults,
    s3_fast_retries: None,
    siem_events: Any,
    counting: Any,
) -> None:
    """A multipart object's parts go up on an upload thread: its retries still carry the
    integration and destination of the pass."""
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", siem_events(18_000))
    store.close()
    sink = s3_server.sink_options(s3_bucket, part_size=5 * 1024 * 1024)
    rt = runtime(
        tmp_path / "s.db",
        [s3_integration("acme", sink, tmp_path / "outbox", compression="none", max_events=18_000)],
    )
    try:
        s3_faults.fail_next(1, status=500, code="InternalError", op="UploadPart")
        assert Pipeline(rt).sync(rt.integrations[0]).ok
        assert s3_faults.injected("UploadPart") == 1
        labels = {
            "integration": "acme",
            "destination": "sink",
            "service": "s3",
            "operation": "UploadPart",
        }
        assert counting.get_sample_value("siem_request_retries_total", labels) == 1
    finally:
        rt.close()


def test_the_gauges_show_a_failing_bucket_and_its_backlog(
    tmp_path: Path, s3_server: S3Server, siem_events: Any, counting: Any
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", siem_events(40))
    ingest(store, "globex", siem_events(5))
    store.close()
    missing = s3_server.sink_options("no-such-bucket-here")
    rt = runtime(
        tmp_path / "s.db",
        [
            s3_integration("acme", missing, tmp_path / "outbox"),
            integration("globex", {"type": "local", "path": str(tmp_path / "out")}),
            integration("later", {"type": "local", "path": str(tmp_path / "o2")}, enabled=False),
        ],
    )
    try:
        pipeline = Pipeline(rt)
        for integ in rt.enabled():
            pipeline.sync(integ)
        probe = StoreProbe(lambda: rt.state)
        counting.register(
            HealthCollector(
                probe, [Watched(i.name, i.config.enabled) for i in rt.integrations], 300.0
            )
        )
        r = counting.get_sample_value
        acme = {"integration": "acme", "destination": "sink"}
        assert r("siem_destination_consecutive_failures", acme) == 1
        assert r("siem_destination_lag_events", acme) == 40
        lag = r("siem_destination_lag_seconds", acme)
        assert lag is not None and lag > 0  # the events' own times are in the past
        assert r("siem_destination_last_success_timestamp_seconds", acme) is None
        assert (
            r("siem_destination_lag_events", {"integration": "globex", "destination": "sink"}) == 0
        )
        assert r("siem_destinations", {"state": "failing"}) == 1
        assert r("siem_destinations", {"state": "ok"}) == 3
        assert r("siem_destinations", {"state": "disabled"}) == 2
        assert r("siem_store_up") == 1
        probe.close(close_state=False)
    finally:
        rt.close()


# --------------------------------------------------------------------------- health answers


def test_healthz_says_within_seconds_when_the_store_stops_answering(pg_url: str) -> None:
    """A table lock makes the store hang on a real PostgreSQL: /healthz answers 503 within
    the time limit, a scrape still comes out (siem_store_up 0), and all is well again
    once the lock goes."""
    readiness = Readiness()
    with endpoint(
        address="127.0.0.1",
        port=0,
        role="run",
        open_state=lambda: PgState(pg_url),
        close_state=True,
        readiness=readiness,
        watched=[Watched("acme", True)],
    ) as server:
        url = server.url
        code, body = get(f"{url}/readyz")
        assert (code, body["reason"]) == (503, "starting")
        readiness.ready()
        assert get(f"{url}/healthz")[0] == 200
        assert get(f"{url}/readyz")[0] == 200
        with psycopg.connect(pg_url) as locker:
            locker.execute("LOCK TABLE siem_cursor IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            code, body = get(f"{url}/healthz")
            assert code == 503 and body["store"] == "unreachable"
            assert "did not answer within 2 s" in body["error"]
            assert time.monotonic() - started < 5
            # Still stuck: the next check does not queue behind it.
            started = time.monotonic()
            code, body = get(f"{url}/readyz")
            assert code == 503 and "earlier check" in body["error"]
            assert time.monotonic() - started < 1
            assert value(scrape(url), "siem_store_up") == 0
            locker.rollback()
        wait_for(lambda: get(f"{url}/healthz")[0] == 200, 10, "the store to answer again")
        readiness.not_ready("stopping")
        code, body = get(f"{url}/readyz")
        assert (code, body["status"], body["reason"]) == (503, "not ready", "stopping")
    with pytest.raises(OSError):
        fetch(f"{url}/healthz")


def test_run_is_ready_while_its_loop_runs(tmp_path: Path) -> None:
    """`run`'s /readyz: "starting" until the scheduler loop runs, "stopping" from the
    moment it stops (while in-flight passes may still finish)."""
    from siem_plugins.scheduler import Scheduler

    rt = runtime(
        tmp_path / "s.db", [integration("acme", {"type": "local", "path": str(tmp_path / "o")})]
    )
    try:
        sched = Scheduler(rt, interval=1.0)
        assert sched.readiness.reason() == "starting"
        loop = threading.Thread(target=sched.run)
        loop.start()
        wait_for(lambda: sched.readiness.reason() == "", 10, "the loop to run")
        sched.stop.set()
        loop.join(timeout=10)
        assert sched.readiness.reason() == "stopping"
    finally:
        rt.close()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    db = tmp_path / "s.db"
    cfg = tmp_path / "siem.toml"
    cfg.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n[[integration]]\nname = "acme"\nformat = "json"\n'
        f'sink = {{ type = "local", path = "{tmp_path / "out"}" }}\n'
        f'notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", '
        f'from = "s@example.com", to = ["a@example.com"], events = ["config"] }}\n'
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "siem_plugins", "run", "-c", str(cfg), "--cycles", "1"]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("--metrics-port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert (
        f"error: metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    proc = run("--metrics-port", "0", "--metrics-address", "not a host")
    assert proc.returncode == 2
    assert "--metrics-address: expected an IP address" in proc.stderr


def test_metrics_off_costs_no_import() -> None:
    """Without an endpoint the pipeline never imports prometheus-client."""
    code = (
        "import sys, siem_plugins.pipeline, siem_plugins.builtin.s3, siem_plugins.cli;"
        "sys.exit('prometheus_client' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --------------------------------------------------------------------------- the fleet

REDIS = os.environ.get("SIEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


def test_a_worker_adds_up_its_pool_processes_and_the_beat_serves_the_gauges(
    tmp_path: Path,
    pg_url: str,
    s3_server: S3Server,
    siem_events: Any,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    names = [f"m{i}" for i in range(4)]
    store = PostgresStore(pg_url)
    for n in names:
        s3_server.create_bucket(f"b-{n}-{os.getpid()}")
        store.append(n, (e for e in _canonical(siem_events(150, seed=len(n)))))
    store.close()
    opts = s3_server.sink_options("x")
    cfg = tmp_path / "siem.toml"
    text = (
        f'interval = "60s"\n[store]\nurl = "{pg_url}"\n'
        f'[celery]\nbroker_url = "{REDIS}"\nqueue = "siem-metrics-{os.getpid()}-{time.time_ns()}"\n'
        f'[s3]\nendpoint_url = "{opts["endpoint_url"]}"\nregion = "{opts["region"]}"\n'
        f'access_key_id = "{opts["access_key_id"]}"\n'
        f'secret_access_key = "{opts["secret_access_key"]}"\n'
        "[metrics]\nport = 0\nworker_port = 0\n"
    )
    for n in names:
        text += (
            f'[[integration]]\nname = "{n}"\nformat = "json"\nmax_events = 100\n'
            f'sink = {{ type = "s3", bucket = "b-{n}-{os.getpid()}" }}\n'
            f'notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", '
            f'from = "s@example.com", to = ["a@example.com"], events = ["config"] }}\n'
        )
    cfg.write_text(text)
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = spawn(
        ["worker", "-c", str(cfg), "--pool", "prefork", "--concurrency", "2"], worker_log
    )
    procs.append(worker)
    worker_url = served_url(worker_log)
    wait_for(lambda: get(f"{worker_url}/readyz")[0] == 200, 60, "the worker to be ready")
    beat = spawn(["run", "--executor", "celery", "-c", str(cfg)], beat_log)
    procs.append(beat)
    beat_url = served_url(beat_log)

    def all_shipped() -> Samples | None:
        s = scrape(worker_url)
        done = total(s, "siem_passes_total") == 2 * len(names)
        return s if done and total(s, "siem_events_shipped_total") == 150 * len(names) else None

    samples = wait_for(all_shipped, 90, "every pass of the first tick")
    for n in names:
        objects, events, size = bucket_totals(s3_server, f"b-{n}-{os.getpid()}")
        assert (objects, events) == (2, 150)
        assert value(samples, "siem_objects_written_total", integration=n) == objects
        assert value(samples, "siem_bytes_shipped_total", integration=n) == size
    # The passes ran in the pool's processes, not in the one that serves the endpoint.
    with psycopg.connect(pg_url) as conn:
        pids = {w.split(":")[1] for (w,) in conn.execute("SELECT worker FROM siem_sync_run")}
    assert str(worker.pid) not in pids
    assert value(samples, "siem_build_info", version=siem_plugins.__version__, role="worker") == 1
    assert total(samples, "siem_destination_lag_events") == 0  # workers serve no gauges

    gauges = scrape(beat_url)
    for n in names:
        for destination in (SINK, NOTIFIER):
            labels = {"integration": n, "destination": destination}
            assert value(gauges, "siem_destination_lag_events", **labels) == 0, labels
            assert value(gauges, "siem_destination_consecutive_failures", **labels) == 0
    assert value(gauges, "siem_destinations", state="ok") == 2 * len(names)
    assert total(gauges, "siem_passes_total") == 0  # the beat syncs nothing itself
    code, body = get(f"{beat_url}/readyz")
    assert (code, body["role"]) == (200, "beat")
    assert stop(beat) == 0
    assert stop(worker) == 0
    leftovers = re.findall(r"siem-metrics-\w+", worker_log.read_text())
    assert not leftovers or not any(Path("/tmp", d).exists() for d in leftovers)


def _canonical(events: list[dict[str, Any]]) -> Iterator[Any]:
    from siem_plugins.events import canonicalize

    for i, e in enumerate(events):
        yield canonicalize({**e, "seq": i})


# --------------------------------------------------------------------------- docs


def test_every_metric_is_documented_with_its_labels() -> None:
    """docs/operations.md lists each metric with its type and labels, and no other."""
    text = (DOCS / "operations.md").read_text()
    rows = re.findall(r"^\| `(siem_\w+)` \| (\w+) \| ([^|]*) \|", text, re.M)
    documented = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    }
    expected = {name: (kind, labels) for name, kind, labels, _ in COUNTERS}
    expected |= {name: ("gauge", labels) for name, labels, _ in GAUGES}
    expected[metrics.INFO[0]] = ("gauge", metrics.INFO[1])
    assert documented == expected


def test_the_threads_that_serve_never_outlive_the_block(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    state = SQLiteStore(tmp_path / "s.db")
    state.close()
    from siem_plugins.storage import open_state

    with endpoint(
        address="127.0.0.1",
        port=0,
        role="run",
        open_state=lambda: open_state(f"sqlite:///{tmp_path / 's.db'}"),
        close_state=True,
        readiness=Readiness(),
    ) as server:
        assert get(f"{server.url}/healthz")[0] == 200
    wait_for(lambda: {t.name for t in threading.enumerate()} <= before, 10, "the threads to end")
