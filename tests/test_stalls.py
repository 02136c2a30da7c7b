"""A destination that hangs must not hold the other one back: a tarpitting mail relay
never delays the objects, a black-holed S3 endpoint never delays the alerts, and an SMTP
delivery ends at its deadline however slowly the server trickles its replies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.builtin.email import EmailNotifier, NotifierError
from siem_plugins.options import ConfigError, Options
from siem_plugins.runtime import Runtime
from siem_plugins.scheduler import Scheduler
from siem_plugins.storage import NOTIFIER, SINK, SQLiteStore
from siem_plugins.testing.conformance import digest_of, sample_events
from siem_plugins.testing.netfaults import Tarpit
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer
from tests.helpers import ingest, numbered, runtime


@pytest.fixture
def smtp_tarpit() -> Iterator[Tarpit]:
    with Tarpit("smtp", every=0.2) as tarpit:
        yield tarpit


@pytest.fixture
def black_hole() -> Iterator[Tarpit]:
    with Tarpit("silent") as hole:
        yield hole


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def notifier(host: str, port: int, **extra: Any) -> EmailNotifier:
    table = {
        "host": host,
        "port": port,
        "security": "none",
        "from": "siem@example.com",
        "to": ["soc@example.com"],
        **extra,
    }
    return EmailNotifier.from_options(Options(table, path="notify"))


def test_the_deadline_ends_a_session_the_per_read_timeout_never_would(
    smtp_tarpit: Tarpit,
) -> None:
    # The tarpit answers every 0.2 s, well inside the 5 s read timeout: only the
    # deadline can end this session.
    mailer = notifier(smtp_tarpit.host, smtp_tarpit.port, timeout=5, deadline=1.5)
    outcome: list[BaseException | None] = []

    def deliver() -> None:
        try:
            mailer.notify(digest_of(sample_events(3)))
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the delivery was still stuck in the tarpit after 10 s"
    elapsed = time.monotonic() - started
    (error,) = outcome
    assert isinstance(error, NotifierError)
    assert "1.5s deadline" in str(error) and f"127.0.0.1:{smtp_tarpit.port}" in str(error)
    assert not error.permanent
    assert 1.4 <= elapsed < 4, elapsed


def test_probe_obeys_the_deadline_too(smtp_tarpit: Tarpit) -> None:
    mailer = notifier(smtp_tarpit.host, smtp_tarpit.port, timeout=5, deadline=1)
    started = time.monotonic()
    with pytest.raises(NotifierError, match="1s deadline"):
        mailer.probe()
    assert time.monotonic() - started < 4


def test_deadline_is_validated() -> None:
    for bad, why in (
        (0, "must be more than 0 seconds"),
        (-1, "must be more than 0 seconds"),
        (float("inf"), "must be a finite number"),
        (float("nan"), "must be a finite number"),
        (7200, "must be at most 3600"),
    ):
        with pytest.raises(ConfigError, match=rf"notify\.deadline: {why}"):
            notifier("127.0.0.1", 25, deadline=bad)


def run_scheduler(rt: Runtime, interval: float) -> tuple[Scheduler, threading.Thread]:
    sched = Scheduler(rt, interval=interval)
    thread = threading.Thread(target=sched.run, daemon=True)
    thread.start()
    return sched, thread


def test_a_tarpitting_mail_relay_never_delays_the_objects(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any, smtp_tarpit: Tarpit
) -> None:
    """The notifier pass hangs in the tarpit for its whole deadline, tick after tick;
    meanwhile every tick's new events still reach the bucket."""
    integ = {
        "name": "acme",
        "format": "json",
        "sink": {"type": "local", "path": str(tmp_path / "bucket")},
        "notify": {
            "host": smtp_tarpit.host,
            "port": smtp_tarpit.port,
            "security": "none",
            "from": "siem@example.com",
            "to": ["soc@example.com"],
            "events": ["exempt_all", "config"],
            "timeout": 5,
            "deadline": 4,
        },
    }
    rt = runtime(siem_store.path, [integ])
    ingest(siem_store, "acme", numbered(siem_events(100)))
    sched, thread = run_scheduler(rt, interval=0.3)
    try:
        assert wait_until(lambda: rt.state.cursor("acme", SINK) == 100, 5)
        assert wait_until(lambda: smtp_tarpit.accepted >= 1, 5)  # the digest is stuck
        for batch in range(2, 5):
            ingest(siem_store, "acme", numbered(siem_events(50, seed=batch)))
            target = 100 + 50 * (batch - 1)
            # Well inside the relay's 4 s deadline: only a decoupled sink pass makes it.
            assert wait_until(lambda t=target: rt.state.cursor("acme", SINK) == t, 2.5), (
                f"the objects waited for the stuck relay (cursor "
                f"{rt.state.cursor('acme', SINK)}, want {target})"
            )
        assert rt.state.cursor("acme", NOTIFIER) == 0  # no digest got through, rightly
    finally:
        sched.stop.set()
        thread.join(30)
        rt.close()
    assert not thread.is_alive()


def test_a_black_holed_s3_endpoint_never_delays_the_alerts(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    black_hole: Tarpit,
    smtp_server: SMTPServer,
    s3_server: S3Server,
) -> None:
    """The sink pass waits on an S3 endpoint that accepts and never answers; every tick's
    selected events still reach the admins."""
    sink = s3_server.sink_options(
        "acme-bucket", endpoint_url=black_hole.url, max_attempts=1, read_timeout=4
    )
    integ = {
        "name": "acme",
        "format": "json",
        "sink": sink,
        "notify": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "security": "none",
            "from": "siem@example.com",
            "to": ["soc@example.com"],
            "events": ["config"],
        },
    }
    rt = runtime(siem_store.path, [integ])
    config = {
        "log_type": "config",
        "details": "Policy changed",
        "admin_name": "Ann",
        "type": "Account",
        "event": "changed",
        "admin_email": "ann@example.com",
        "timestamp": "2022-07-15T08:55:12.279Z",
    }
    ingest(siem_store, "acme", [config])
    sched, thread = run_scheduler(rt, interval=0.3)
    try:
        assert wait_until(lambda: len(smtp_server.messages) == 1, 5)
        assert wait_until(lambda: black_hole.accepted >= 1, 5)  # the upload is stuck
        for n in range(2, 5):
            ingest(siem_store, "acme", [config])
            assert wait_until(lambda n=n: len(smtp_server.messages) == n, 2.5), (
                f"the alerts waited for the black-holed bucket ({len(smtp_server.messages)} "
                f"digests, want {n})"
            )
        assert rt.state.cursor("acme", SINK) == 0
    finally:
        sched.stop.set()
        thread.join(30)
        rt.close()
    assert not thread.is_alive()
