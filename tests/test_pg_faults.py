"""Lost PostgreSQL connections: a terminated backend is replaced without a duplicate
digest, and a store that goes away mid-run is reported in one line per pass and
caught up once it is back. Real PostgreSQL throughout (pg_terminate_backend on the
test's own sessions, and a TCP proxy that drops every connection)."""

from __future__ import annotations

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

import psycopg
import pytest

from siem_plugins import NotifierSpec, hookimpl
from siem_plugins.builtin.outbox import OutboxNotifier
from siem_plugins.config import config_from_dict
from siem_plugins.events import canonicalize
from siem_plugins.host import create_host
from siem_plugins.kinds import Digest
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import NOTIFIER, SINK, PgState, PostgresStore
from siem_plugins.testing import DEFAULT_PG_URL
from siem_plugins.testing.netfaults import TCPProxy
from siem_plugins.testing.smtpserver import SMTPServer
from tests.helpers import local_objects, seqs_in


def terminate(application_name: str) -> int:
    """End every session of this test's processes (they carry its application_name)."""
    base = os.environ.get("SIEM_TEST_PG_URL", DEFAULT_PG_URL)
    with psycopg.connect(base, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name=%s",
            (application_name,),
        ).fetchall()
    return len(rows)


class TerminatingOutbox(OutboxNotifier):
    """An outbox that, right after a digest is out, has the server end every session of
    the shipper: the state write that follows finds its pooled connection dead."""

    app = ""
    sent: list[tuple[int, int]] = []

    def notify(self, digest: Digest) -> None:
        super().notify(digest)
        TerminatingOutbox.sent.append((digest.first_id, digest.last_id))
        assert terminate(self.app) >= 1


class TerminatingPlugin:
    @hookimpl
    def siem_register_notifiers(self) -> list[NotifierSpec]:
        return [NotifierSpec(name="terminating", factory=TerminatingOutbox.from_options)]


@pytest.fixture
def app_name() -> str:
    return f"siem-test-{secrets.token_hex(4)}"


def test_a_terminated_session_is_replaced_and_no_digest_is_sent_twice(
    pg_url: str, tmp_path: Path, siem_events: Any, app_name: str
) -> None:
    url = f"{pg_url}&application_name={app_name}"
    store = PostgresStore(pg_url)
    store.append("acme", (canonicalize(e) for e in siem_events(300)))
    store.close()
    TerminatingOutbox.app, TerminatingOutbox.sent = app_name, []
    raw = {
        "store": {"url": url},
        "integration": [
            {
                "name": "acme",
                "format": "json",
                "sink": {"type": "local", "path": str(tmp_path / "out")},
                "notify": {
                    "type": "terminating",
                    "path": str(tmp_path / "outbox"),
                    "from": "s@example.com",
                    "to": ["a@example.com"],
                    "events": ["exempt_all", "config"],
                },
            }
        ],
    }
    host = create_host(None, entry_points=False, disabled=(), extra=[("t", TerminatingPlugin())])
    rt = Runtime(config_from_dict(raw), host)
    try:
        first = Pipeline(rt).sync(rt.integrations[0])
        assert first.ok, first.errors
        assert len(TerminatingOutbox.sent) == 1
        assert rt.state.cursor("acme", NOTIFIER) == rt.state.cursor("acme", SINK) > 0
        again = Pipeline(rt).sync(rt.integrations[0])
        assert again.ok, again.errors
        assert len(TerminatingOutbox.sent) == 1, "the digest was sent twice"
    finally:
        rt.close()


def test_state_writes_survive_a_lost_answer(pg_url: str, app_name: str) -> None:
    """A retried write whose first try did commit (only its answer was lost) is not
    reported as a protocol violation."""
    from siem_plugins.kinds import Intent

    state = PgState(f"{pg_url}&application_name={app_name}")
    try:
        intent = Intent("acme", SINK, 1, 10, 10, "k", "2026-01-01T000000Z", "f")
        state.record(intent)
        # As if the first try committed and the connection died before the answer:
        # the retry finds its own work done.
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute(
                "INSERT INTO siem_cursor (integration, destination, last_id) VALUES (%s,%s,%s)",
                ("acme", SINK, 10),
            )
            other.execute("DELETE FROM siem_intent")
        assert terminate(app_name) >= 1
        state.complete(intent)  # retried on a fresh connection: already complete
        assert state.cursor("acme", SINK) == 10 and state.pending("acme", SINK) is None
    finally:
        state.close()


@pytest.fixture
def pg_proxy() -> Iterator[TCPProxy]:
    base = os.environ.get("SIEM_TEST_PG_URL", DEFAULT_PG_URL)
    info = psycopg.conninfo.conninfo_to_dict(base)
    with TCPProxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432))) as proxy:
        yield proxy


@pytest.mark.slow
def test_a_store_lost_mid_run_is_reported_in_one_line_and_caught_up(
    pg_url: str,
    tmp_path: Path,
    siem_events: Any,
    pg_proxy: TCPProxy,
    smtp_server: SMTPServer,
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    where = f"@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/"
    assert where in pg_url
    via_proxy = pg_url.replace(where, f"@{pg_proxy.host}:{pg_proxy.port}/")
    store = PostgresStore(pg_url)

    def add(n: int, seed: int, start: int) -> None:
        store.append(
            "acme",
            (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(n, seed=seed), start)),
        )

    add(200, 1, 0)
    cfg = tmp_path / "siem.toml"
    cfg.write_text(
        f'interval = "1s"\n[store]\nurl = "{via_proxy}"\n'
        f'[[integration]]\nname = "acme"\nformat = "json"\n'
        f'sink = {{ type = "local", path = "{tmp_path / "out"}" }}\n'
        f'[integration.notify]\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\n'
        f'security = "none"\nfrom = "s@example.com"\nto = ["a@example.com"]\n'
        f'events = ["exempt_all", "config"]\n'
    )
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "siem_plugins", "run", "-c", str(cfg)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    state = PgState(pg_url)
    try:

        def shipped() -> int:
            return state.cursor("acme", SINK)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (shipped() == 0 or not smtp_server.messages):
            time.sleep(0.1)
        assert shipped() > 0 and len(smtp_server.messages) == 1, log.read_text()
        pg_proxy.cut()
        add(100, 2, 200)
        time.sleep(3.5)  # three ticks with the store gone
        assert run.poll() is None, log.read_text()
        pg_proxy.restore()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            state.cursor("acme", SINK) < store.count("acme") or len(smtp_server.messages) < 2
        ):
            time.sleep(0.1)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        state.close()
        store.close()
    text = log.read_text()
    assert run.returncode == 0, text
    assert "Traceback" not in text, text
    failures = [line for line in text.splitlines() if " ERROR " in line]
    assert failures, text
    for line in failures:
        assert "integration 'acme': " in line and "\n" not in line
        assert ("sink " in line or "notifier " in line) and "password" not in line
    seen = Counter(s for d in local_objects(tmp_path / "out").values() for s in seqs_in(d))
    assert sorted(seen) == list(range(300)) and set(seen.values()) == {1}
    assert len(smtp_server.messages) == 2  # one digest per new range, none twice
