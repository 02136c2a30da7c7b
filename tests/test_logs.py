"""Log lines a machine can read, from real processes: ``--log-format json`` (one object
per stderr line), the text format's UTC time, one line per record whatever the event text,
and the stop line of ``run``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.storage import SQLiteStore
from siem_plugins.testing.s3server import S3Server
from tests.helpers import drop_in_folder, ingest, numbered

#: RFC 3339, UTC, milliseconds: what both formats put first.
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
#: The start of a text record: the time, the level, the logger.
TEXT_RECORD = re.compile(rf"{TIME} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: ")
REQUIRED = {"time", "level", "logger", "message"}

#: A device name that tries everything: a line break followed by a forged text record, a
#: quote and a forged JSON field, a carriage return, ESC, and U+2028 (a line break for
#: str.splitlines() and some JSON readers).
EVIL = (
    'evil"\n2026-01-01T00:00:00.000Z CRITICAL siem_plugins.pipeline: forged'
    '\n{"level": "CRITICAL", "message": "forged"}", "level": "CRITICAL\r\x1b[2K\u2028end'
)

#: A formatter that logs the device name of every event (as a careless plugin might) and
#: a notifier that fails naming one (the traceback at -v carries it).
CHATTY = """
import logging

import orjson

from siem_plugins import hookimpl
from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.kinds import FormatterSpec, NotifierBase, NotifierSpec

log = logging.getLogger("chatty")


class Chatty(JSONFormatter):
    format_raw = None  # every event through format(), which names its device

    def format(self, events):
        for e in events:
            log.warning("formatting device %s", orjson.loads(e.raw)["device_name"])
        return super().format(events)


class Refusing(NotifierBase):
    def notify(self, digest):
        name = orjson.loads(digest.events[0].raw)["device_name"]
        raise RuntimeError(f"will not notify about {name}")

    def describe(self):
        return "refusing"

    def probe(self):
        pass


@hookimpl
def siem_register_formatters():
    return [FormatterSpec(name="chatty", factory=lambda options: Chatty())]


@hookimpl
def siem_register_notifiers():
    return [NotifierSpec(name="refusing", factory=lambda options: Refusing())]
"""


def siem(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ.pop("SIEM_CONFIG", None)
    if env is None or "SIEM_LOG_FORMAT" not in env:
        environ.pop("SIEM_LOG_FORMAT", None)
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def records(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object with the required keys and a UTC time."""
    out = []
    assert stderr.endswith("\n"), stderr[-300:]
    for line in stderr.split("\n")[:-1]:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert record.keys() >= REQUIRED, line
        assert re.fullmatch(TIME, record["time"]), line
        parsed = datetime.fromisoformat(record["time"])
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert abs((datetime.now(UTC) - parsed).total_seconds()) < 600, line
        out.append(record)
    return out


def device(name: str) -> dict[str, Any]:
    return {
        "log_type": "exempt_all",
        "device_name": name,
        "device_id": "dev-1",
        "last_seen": "2022-07-15T08:55:12.279Z",
        "device_group": "Default",
        "details": "All devices exempted",
        "type": "Device",
        "device_username": "someone",
        "timestamp": "2022-07-15T08:55:12.279Z",
    }


def local_config(tmp_path: Path, *, top: str = "", fmt: str = "json", notify: str = "") -> Path:
    cfg = tmp_path / "siem.toml"
    notify = notify or (
        f'type = "outbox"\npath = "{tmp_path / "outbox"}"\nfrom = "s@example.com"\n'
        'to = ["a@example.com"]'
    )
    cfg.write_text(f"""{top}
[store]
url = "sqlite:///{tmp_path / "s.db"}"
[[integration]]
name = "acme"
format = "{fmt}"
sink = {{ type = "local", path = "{tmp_path / "out"}" }}
[integration.notify]
{notify}
events = ["exempt_all", "config"]
""")
    return cfg


def test_a_sync_in_json_writes_one_object_per_stderr_line(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", numbered(siem_events(30)))
    store.close()
    opts = s3_server.sink_options(s3_bucket)
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "s.db"}"
[s3]
endpoint_url = "{opts["endpoint_url"]}"
region = "{opts["region"]}"
access_key_id = "{opts["access_key_id"]}"
secret_access_key = "{opts["secret_access_key"]}"
max_attempts = 1
[[integration]]
name = "ok"
account = "acme"
format = "json"
sink = {{ type = "s3", bucket = "{s3_bucket}" }}
notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["exempt_all", "config"] }}
[[integration]]
name = "denied"
account = "acme"
format = "syslog"
sink = {{ type = "s3", bucket = "{s3_bucket}", prefix = "denied/" }}
notify = {{ type = "outbox", path = "{tmp_path / "outbox"}", from = "s@example.com", to = ["a@example.com"], events = ["exempt_all", "config"] }}
""")
    assert s3_server.faults is not None
    s3_server.faults.fail_next(20, status=403, code="AccessDenied", path_contains="/denied/")
    proc = siem("sync", "-v", "--log-format", "json", "-c", str(cfg))
    assert proc.returncode == 1, proc.stderr  # the denied integration failed
    got = records(proc.stderr)
    pipeline = [r for r in got if r["logger"] == "siem_plugins.pipeline"]
    assert pipeline and all(
        r["integration"] in ("ok", "denied") and r["destination"] in ("sink", "notifier")
        for r in pipeline
    ), pipeline
    [wrote] = [r for r in pipeline if r["message"].startswith("ok: wrote ")]
    obj = s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    [listed] = [o for o in obj if not o["Key"].startswith("denied/")]
    assert wrote["key"] == listed["Key"] and wrote["bytes"] == listed["Size"]
    assert wrote["location"] == f"s3://{s3_bucket}/{listed['Key']}"
    assert (wrote["first_id"], wrote["last_id"], wrote["events"]) == (1, 30, 30)
    assert wrote["destination"] == "sink" and wrote["level"] == "INFO"
    [failed] = [r for r in pipeline if r["level"] == "ERROR"]
    assert failed["integration"] == "denied" and failed["destination"] == "sink"
    assert "AccessDenied" in failed["message"] and "Traceback" in failed["exc"]
    notified = [r for r in pipeline if "notified" in r["message"]]
    assert {r["integration"] for r in notified} == {"ok", "denied"}
    assert all(r["destination"] == "notifier" and r["events"] > 0 for r in notified)
    assert "ok: ok: 1 objects, 30 events" in proc.stdout  # the report stays on stdout


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_event_text_cannot_break_a_line_or_forge_a_record(tmp_path: Path, log_format: str) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", [device(EVIL), device("plain")])
    store.close()
    drop_in_folder(tmp_path / "hooks", files={"chatty.py": CHATTY})
    cfg = local_config(tmp_path, fmt="chatty", notify='type = "refusing"')
    # -v: the notifier's failure comes with its traceback, which holds the device name.
    # Text is the default: no option for it.
    chosen = ("--log-format", "json") if log_format == "json" else ()
    proc = siem("sync", "-v", *chosen, "-c", str(cfg))
    assert proc.returncode == 1, proc.stderr  # the notifier failed
    if log_format == "json":
        got = records(proc.stderr)
        chatty = [r for r in got if r["logger"] == "chatty"]
        # The message survives whole, and the pass it ran in is named (log_context).
        assert [r["message"] for r in chatty] == [
            f"formatting device {EVIL}",
            "formatting device plain",
        ]
        assert all(r["integration"] == "acme" and r["destination"] == "sink" for r in chatty)
        [failed] = [r for r in got if r["level"] == "ERROR"]
        assert f"will not notify about {EVIL}" in failed["exc"]
        assert failed["destination"] == "notifier"
        assert not [r for r in got if r["level"] == "CRITICAL" or r["message"] == "forged"]
        return
    lines = proc.stderr.split("\n")
    assert lines.pop() == ""
    for line in lines:
        # A record, a traceback line under one, or sync's list of errors: never a line
        # of its own that the event text started.
        assert TEXT_RECORD.match(line) or line.startswith(("    ", "  error: ")), line
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", line), line
    escaped = (
        'evil"\\n2026-01-01T00:00:00.000Z CRITICAL siem_plugins.pipeline: forged'
        '\\n{"level": "CRITICAL", "message": "forged"}", "level": "CRITICAL\\r\\x1b[2K\\u2028end'
    )
    assert [line for line in lines if " chatty: " in line] == [
        line
        for line in lines
        if re.fullmatch(rf"{TIME} WARNING +chatty: formatting device .*", line)
    ]
    chatty = [line.split(" chatty: ", 1)[1] for line in lines if " chatty: " in line]
    assert chatty == [f"formatting device {escaped}", "formatting device plain"]
    assert not [line for line in lines if re.match(rf"{TIME} CRITICAL", line)]
    assert any(line.startswith("    Traceback") for line in lines)


def test_text_lines_carry_the_utc_time(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", [device("one")])
    store.close()
    cfg = local_config(tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)
    proc = siem("sync", "-c", str(cfg), env={"TZ": "America/New_York"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(TEXT_RECORD.match(line) for line in lines), proc.stderr
    wrote = next(line for line in lines if " acme: wrote " in line)
    assert wrote.split(" ")[1] == "INFO"
    when = datetime.fromisoformat(wrote.split(" ")[0])
    assert before.timestamp() - 1 <= when.timestamp() <= time.time() + 1


def test_log_format_comes_from_the_command_line_the_environment_or_the_config(
    tmp_path: Path,
) -> None:
    cfg = local_config(tmp_path, top='log_format = "json"')

    def sync(*args: str, env: dict[str, str] | None = None) -> str:
        store = SQLiteStore(tmp_path / "s.db")
        ingest(store, "acme", [device("one")])  # something to log about
        store.close()
        proc = siem("sync", "-c", str(cfg), *args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert " acme: wrote " in proc.stderr or '"acme: wrote ' in proc.stderr
        return "json" if proc.stderr.startswith("{") else "text"

    assert sync() == "json"  # the config's
    assert sync(env={"SIEM_LOG_FORMAT": "text"}) == "text"  # the environment beats it
    assert sync("--log-format", "json", env={"SIEM_LOG_FORMAT": "text"}) == "json"
    assert sync("--log-format", "text") == "text"

    bad = siem("sync", "-c", str(cfg), env={"SIEM_LOG_FORMAT": "xml"})
    assert bad.returncode == 2
    assert bad.stderr == "error: SIEM_LOG_FORMAT: expected one of text, json, got 'xml'\n"
    wrong = local_config(tmp_path, top='log_format = "xml"')
    bad = siem("sync", "-c", str(wrong))
    assert bad.returncode == 2
    assert (
        f"config error: {wrong}: log_format: unknown value 'xml'; choose one of: text, json"
        in bad.stderr
    )
    # A config error in JSON mode is a JSON record too.
    bad = siem("sync", "--log-format", "json", "-c", str(wrong))
    [record] = records(bad.stderr)
    assert record["level"] == "ERROR" and record["message"].startswith("config error: ")
    # So is what sync would print to stderr.
    empty = tmp_path / "empty.toml"
    empty.write_text(f'log_format = "json"\n[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    quiet = siem("sync", "-c", str(empty))
    [record] = records(quiet.stderr)
    assert (record["level"], record["message"]) == ("WARNING", "no enabled integrations")


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_run_logs_a_stop_line_after_sigterm(tmp_path: Path, log_format: str) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", [device("one"), device("two")])
    store.close()
    cfg = local_config(tmp_path, top='interval = "1s"')
    env = {k: v for k, v in os.environ.items() if k not in ("SIEM_CONFIG", "SIEM_LOG_FORMAT")}
    chosen = ["--log-format", "json"] if log_format == "json" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", "run", "-c", str(cfg), *chosen],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 30
        while not list(out.rglob("*.gz")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(out.rglob("*.gz"))
        time.sleep(1.5)  # another tick
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    if log_format == "json":
        got = records(stderr)
        done = [r for r in got if "pass done in" in r["message"]]
        sink = [r for r in done if r["destination"] == "sink"]
        assert sum(r["objects"] for r in sink) == 1 and sum(r["events"] for r in sink) == 2
        notifier = [r for r in done if r["destination"] == "notifier"]
        assert sum(r["digests"] for r in notifier) == 1
        assert all(r["integration"] == "acme" and r["failed"] is False for r in done)
        assert all(0 <= r["seconds"] < 30 for r in done)
        last = got[-1]
        assert last["logger"] == "siem_plugins.scheduler", stderr
        assert last["message"].startswith("stopped: "), stderr
        assert last["passes"] >= 4 and last["failures"] == 0 and last["skipped"] == 0
        assert last["seconds"] >= 1
        passes = last["passes"]
    else:
        last = stderr.splitlines()[-1]
        m = re.fullmatch(
            rf"{TIME} INFO    siem_plugins.scheduler: stopped: (\d+) passes, 0 failures, "
            r"0 skipped in \d+s",
            last,
        )
        assert m, stderr
        passes = int(m.group(1))
    done = stderr.count("pass done in")
    assert passes == done >= 4


@pytest.mark.slow
def test_sync_stderr_in_json_is_json_to_the_last_line_when_stopped(tmp_path: Path) -> None:
    """What `sync` would print to stderr, and a plugin's Python warning, are records too."""
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", [device(f"d{i}") for i in range(20)])
    store.close()
    drop_in_folder(
        tmp_path / "hooks",
        Path(__file__).parent / "plugins_run" / "pace.py",
        files={"warns.py": "import warnings\nwarnings.warn('a plugin warns\\nover two lines')\n"},
    )
    cfg = local_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('format = "json"', 'format = "json"\nmax_events = 1'))
    env = {k: v for k, v in os.environ.items() if k not in ("SIEM_CONFIG", "SIEM_LOG_FORMAT")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", "sync", "-c", str(cfg), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "SIEM_TEST_PACE": "0.5"},
    )
    out = tmp_path / "out"
    deadline = time.monotonic() + 30
    while not list(out.rglob("*.gz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert 1 <= len(list(out.rglob("*.gz"))) < 20, stdout
    got = records(stderr)
    assert got[-1]["level"] == "WARNING"
    assert got[-1]["message"] == "stopped by signal; the rest resumes next time"
    [warned] = [r for r in got if r["logger"] == "py.warnings"]
    assert "UserWarning: a plugin warns\nover two lines" in warned["message"]


@pytest.mark.parametrize("count", [3, 5000])
def test_the_redactor_finds_every_secret_however_many_it_holds(count: int) -> None:
    """A settings server holds thousands of customers' secrets: past a few dozen the
    redactor scans the text once through an index instead of trying each secret; both
    ways redact every secret, the longest first where one contains another."""
    import logging as _logging
    import secrets as _secrets

    from siem_plugins.logs import RedactingFilter

    redactor = RedactingFilter()
    many = [_secrets.token_urlsafe(24) for _ in range(count)]
    redactor.add([*many, "abcd1234", "abcd12345678", 73914528861, "abc"])
    text = f"start {many[-1]} mid {many[0]}{many[1]} abcd12345678 abcd1234 73914528861 abc end"
    assert redactor.redact(text) == "start *** mid ****** *** *** *** abc end"
    record = _logging.LogRecord("x", _logging.ERROR, "f", 1, "%s", (many[2],), None)
    record.key = f"acme/{many[2]}"  # a structured field (FIELDS) is redacted too
    assert redactor.filter(record)
    assert record.getMessage() == "***" and record.key == "acme/***"
    assert redactor.redact("nothing secret here") == "nothing secret here"
