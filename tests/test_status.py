"""`siem-plugins status` and the health record it reads: what an operator (or a cron
monitoring check) sees of each integration, from real syncs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from siem_plugins.config import config_from_dict
from siem_plugins.health import Thresholds, collect
from siem_plugins.host import create_host
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import SINK, PostgresStore
from siem_plugins.testing import store_events


def recent(n: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """Seed-shaped events with timestamps of the last five minutes (at most about 4 s
    apart, so 10 of them are all 4-5 minutes old)."""
    from siem_plugins.demo import generate

    return list(generate(n, seed=seed, start=datetime.now(UTC) - timedelta(minutes=5)))


def write_config(tmp_path: Path, store_url: str | None = None) -> Path:
    (tmp_path / "notadir").write_text("a file where the broken sink wants a folder\n")
    notify = (
        f'{{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", '
        'to = ["a@example.com"], events = ["config"] }'
    )
    cfg = tmp_path / "siem.toml"
    url = store_url or f"sqlite:///{tmp_path / 's.db'}"
    cfg.write_text(
        f'interval = "2m"\n[store]\nurl = "{url}"\n'
        f'[[integration]]\nname = "acme"\nformat = "json"\n'
        f'sink = {{ type = "local", path = "{tmp_path / "bucket"}" }}\nnotify = {notify}\n'
        f'[[integration]]\nname = "broken"\naccount = "acme"\nformat = "syslog"\n'
        f'sink = {{ type = "local", path = "{tmp_path / "notadir" / "bucket"}" }}\n'
        f"notify = {notify}\n"
        f'[[integration]]\nname = "later"\naccount = "globex"\nformat = "json"\n'
        f'enabled = false\nsink = {{ type = "local", path = "{tmp_path / "b2"}" }}\n'
        f"notify = {notify}\n"
    )
    return cfg


def siem(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cfg.parent,
    )


def status(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = siem(cfg, "status", "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def states(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (i["integration"], d["destination"]): d["state"]
        for i in report["integrations"]
        for d in i["destinations"]
    }


def test_status_shows_each_destination_and_exits_1_while_one_fails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    siem(cfg, "store", "status")  # creates the store
    from siem_plugins.storage import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    store_events(store, "acme", recent(30))
    store.close()

    code, report = status(cfg)
    assert code == 1  # nothing has run yet
    assert set(states(report).values()) == {"never run", "disabled"}

    assert siem(cfg, "sync").returncode == 1  # the broken sink fails
    siem(cfg, "sync")  # and once more: two consecutive failures
    code, report = status(cfg)
    assert code == 1
    assert states(report) == {
        ("acme", "sink"): "ok",
        ("acme", "notifier"): "ok",
        ("broken", "sink"): "failing",
        ("broken", "notifier"): "ok",
        ("later", "sink"): "disabled",
        ("later", "notifier"): "disabled",
    }
    broken = next(i for i in report["integrations"] if i["integration"] == "broken")
    sink = broken["destinations"][0]
    assert sink["consecutive_failures"] == 2 and sink["behind_events"] == 30
    assert "Not a directory" in sink["last_error"] and sink["last_success"] is None
    assert sink["lag_seconds"] > 4 * 60  # the oldest unshipped event is ~5 minutes old
    assert sink["oldest_unshipped"].endswith("Z")
    acme = next(i for i in report["integrations"] if i["integration"] == "acme")
    assert acme["destinations"][0]["behind_events"] == 0
    assert acme["destinations"][0]["last_success"] == acme["destinations"][0]["last_attempt"]

    # Fixed: the next pass succeeds, the failure count resets, the last error stays on file.
    (tmp_path / "notadir").unlink()
    assert siem(cfg, "sync").returncode == 0
    code, report = status(cfg)
    assert code == 0, report
    broken = next(i for i in report["integrations"] if i["integration"] == "broken")
    sink = broken["destinations"][0]
    assert (sink["state"], sink["consecutive_failures"], sink["behind_events"]) == ("ok", 0, 0)
    assert "Not a directory" in sink["last_error"]

    # The table says the same, one row per destination.
    table = siem(cfg, "status")
    assert table.returncode == 0
    assert "broken" in table.stdout and "failing" not in table.stdout


def test_behind_and_stale_are_alarms_too(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "notadir").unlink()
    assert siem(cfg, "sync").returncode == 0  # nothing to ship yet, but every pass ran
    from siem_plugins.storage import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    store_events(store, "acme", recent(10))
    store.close()
    # 10 events wait, the oldest ~5 minutes old: behind for a 1-minute allowance or a
    # 5-event one, fine for the default (3 intervals of 2 minutes).
    assert status(cfg)[0] == 0
    code, report = status(cfg, "--max-lag", "1m")
    assert code == 1 and states(report)[("acme", "sink")] == "behind"
    code, report = status(cfg, "--max-lag-events", "5")
    assert code == 1 and states(report)[("acme", "sink")] == "behind"
    assert siem(cfg, "sync").returncode == 0
    assert status(cfg, "--max-lag", "1m")[0] == 0

    # No pass for longer than three intervals: the shipper is not running it.
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(
            "UPDATE siem_health SET last_attempt = ?",
            ((datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),),
        )
    code, report = status(cfg)
    assert code == 1 and states(report)[("acme", "sink")] == "stale"


def test_one_integration_in_detail(tmp_path: Path) -> None:
    from siem_plugins.storage import SQLiteStore

    cfg = write_config(tmp_path)
    store = SQLiteStore(tmp_path / "s.db")
    store_events(store, "acme", recent(5))
    store.close()
    siem(cfg, "sync")
    code, report = status(cfg, "-i", "broken")
    assert code == 1
    (only,) = report["integrations"]
    assert only["integration"] == "broken" and only["state"] == "failing"
    assert sorted(r["destination"] for r in only["recent_runs"]) == ["notifier", "sink"]
    assert all(r["finished"] for r in only["recent_runs"])
    failed = next(r for r in only["recent_runs"] if r["destination"] == "sink")
    assert "Not a directory" in failed["error"]
    sink = only["destinations"][0]
    assert sink["pending"]["first_id"] == 1 and sink["pending"]["count"] == 5  # kept
    table = siem(cfg, "status", "-i", "broken")
    assert "broken: recent passes" in table.stdout and "pending intent 1-5" in table.stdout
    unknown = siem(cfg, "status", "-i", "nope")
    assert unknown.returncode == 2 and "no integration named 'nope'" in unknown.stderr


def test_the_health_record_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, pg_url)
    store = PostgresStore(pg_url)
    store_events(store, "acme", recent(20))
    store.close()
    assert siem(cfg, "sync").returncode == 1
    raw = config_from_dict(
        {
            "interval": "2m",
            "store": {"url": pg_url},
            "integration": [
                {
                    "name": "broken",
                    "account": "acme",
                    "format": "json",
                    "sink": {"type": "local", "path": str(tmp_path / "notadir" / "b")},
                    "notify": {
                        "type": "outbox",
                        "path": str(tmp_path / "outbox"),
                        "from": "s@example.com",
                        "to": ["a@example.com"],
                        "events": ["config"],
                    },
                }
            ],
        }
    )
    rt = Runtime(raw, create_host(None, entry_points=False, disabled=()))
    try:
        assert not Pipeline(rt).sync(rt.integrations[0]).ok  # the second failure
        (health,) = collect(rt, thresholds=Thresholds.for_interval(120))
        sink = next(d for d in health.destinations if d.destination == SINK)
        assert sink.state == "failing" and sink.record is not None
        assert sink.record.failures == 2 and sink.lag is not None and sink.lag.events == 20
        assert health.state == "failing"
    finally:
        rt.close()
