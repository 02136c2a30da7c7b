"""The siem-plugins command, run as users run it: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siem_plugins.storage import SQLiteStore
from tests.helpers import drop_in_folder

DATA = Path(__file__).parent / "data"
COMMANDS = ("run", "sync", "ingest", "check", "prune", "plugins", "demo", "verify")


def cli(
    *args: str, cwd: Path | None = None, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SIEM_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_help_everywhere() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for cmd in COMMANDS:
        assert cmd in top.stdout
        sub = cli(cmd, "--help")
        assert sub.returncode == 0 and "usage: siem-plugins " + cmd in sub.stdout
        assert "--config" in sub.stdout and "--verbose" in sub.stdout


def test_demo_on_embedded_defaults(tmp_path: Path) -> None:
    proc = cli("demo", "--events", "300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    objects = sorted((tmp_path / "siem-demo" / "bucket").rglob("*.gz"))
    assert {p.name.split(".", 1)[1] for p in objects} == {"json.gz", "log.gz"}
    assert len(objects) == 4  # two accounts x two formats
    for p in objects:
        assert str(p.relative_to(tmp_path / "siem-demo" / "bucket")) in proc.stdout
    assert len(list((tmp_path / "siem-demo" / "outbox").rglob("*.eml"))) == 4
    assert "first SYSLOG line" in proc.stdout and "<134>1 2022-07-15T" in proc.stdout


def test_ingest_keeps_good_lines_and_locates_bad_ones(tmp_path: Path) -> None:
    good = (DATA / "seed_events.ndjson").read_bytes().splitlines()
    bad = [
        b"{not json",
        b"[1,2,3]",
        b'{"type": "Device", "log_type": "added"}',
        b'{"log_type": "config", "details": "d", "admin_name": "a", "type": "Account",'
        b' "event": "e", "admin_email": "a@b", "timestamp": "never"}',
        b'{"type": "Printer"}',
        b"\xff\xfe{}",
    ]
    lines = [
        good[0],
        bad[0],
        good[1],
        b"",
        bad[1],
        bad[2],
        good[2],
        bad[3],
        bad[4],
        bad[5],
        good[3],
    ]
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    db = tmp_path / "s.db"
    proc = cli(
        "ingest",
        "--account",
        "acme",
        "--store",
        f"sqlite:///{db}",
        "--rejects",
        str(rejects),
        str(src),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert f"{src}: stored 4 events for account 'acme' (ids 1-4)" in proc.stdout
    err = proc.stderr
    assert f"rejected: {src}:2: invalid JSON" in err
    assert f"rejected: {src}:5: expected a JSON object, got an array" in err
    assert f"rejected: {src}:6: device_name: missing required field" in err
    assert f"rejected: {src}:8: timestamp: unparsable timestamp 'never'" in err
    assert f"rejected: {src}:9: type: unknown event type 'Printer'" in err
    assert f"rejected: {src}:10: invalid JSON" in err
    assert "6 line(s) rejected, 4 stored" in err
    assert rejects.read_bytes() == b"".join(line + b"\n" for line in bad)
    store = SQLiteStore(db)
    assert store.count("acme") == 4
    store.close()
    # All good: exit 0, from stdin.
    ok = cli(
        "ingest",
        "--account",
        "acme",
        "--store",
        f"sqlite:///{db}",
        "-",
        stdin=b"\n".join(good) + b"\n",
    )
    assert ok.returncode == 0 and "<stdin>: stored 4 events" in ok.stdout
    assert (
        cli("ingest", "--account", "../x", "--store", f"sqlite:///{db}", "-", stdin=b"").returncode
        == 2
    )


def test_plugins_lists_builtins_and_broken_ones(tmp_path: Path) -> None:
    hooks = drop_in_folder(
        tmp_path / "hooks", files={"broken.py": "raise RuntimeError('boom at import')\n"}
    )
    proc = cli("plugins", "--json", "--plugins-dir", str(hooks), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # a plugin failed to load
    data = json.loads(proc.stdout)
    provided = {(p["kind"], p["name"]) for row in data["plugins"] for p in row["provides"]}
    assert {
        ("source", "store"),
        ("formatter", "json"),
        ("formatter", "syslog"),
        ("sink", "s3"),
        ("sink", "local"),
        ("notifier", "email"),
    } <= provided
    assert data["failures"] == [
        {
            "name": "broken",
            "origin": f"file {hooks / 'broken.py'}",
            "error": "import failed: RuntimeError: boom at import",
        }
    ]
    table = cli("plugins", "--plugins-dir", str(hooks), cwd=tmp_path)
    assert table.returncode == 1 and "boom at import" in table.stdout


def test_no_config_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("sync", cwd=tmp_path)
    assert proc.returncode == 2
    assert "config error: no config file (siem.toml)" in proc.stderr


def test_run_rejects_a_zero_interval(tmp_path: Path) -> None:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    proc = cli("run", "-c", str(cfg), "--interval", "0")
    assert proc.returncode == 2, proc.stderr
    assert "--interval: must be at least 1 second, got a string '0'" in proc.stderr


@pytest.mark.slow
def test_run_syncs_every_interval_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    out = tmp_path / "out"
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
interval = "1s"
[store]
url = "sqlite:///{db}"
[[integration]]
name = "acme"
format = "json"
sink = {{ type = "local", path = "{out}" }}
[integration.notify]
type = "outbox"
path = "{tmp_path / "outbox"}"
from = "s@example.com"
to = ["a@example.com"]
events = ["config"]
""")
    seed = (DATA / "seed_events.ndjson").read_bytes()
    assert cli("ingest", "--account", "acme", "-c", str(cfg), "-", stdin=seed).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", "run", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(out.rglob("*.gz")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(out.rglob("*.gz"))) == 1
        # New events are picked up by a later cycle (the same bytes again: --force).
        again = cli("ingest", "--account", "acme", "-c", str(cfg), "--force", "-", stdin=seed)
        assert again.returncode == 0 and "<stdin>: stored 4 events" in again.stdout
        while len(list(out.rglob("*.gz"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(out.rglob("*.gz"))) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "SIGTERM: finishing in-flight objects, then stopping" in stderr
    store = SQLiteStore(db)
    assert store.count("acme") == 8
    store.close()


def test_ingest_bad_input_matrix(tmp_path: Path) -> None:
    from siem_plugins.events import MAX_RECORD_BYTES

    seed = (DATA / "seed_events.ndjson").read_bytes().splitlines()
    device = json.loads(seed[0])
    big = json.dumps({**device, "details": "x" * MAX_RECORD_BYTES}).encode()
    cases: list[tuple[bytes, str | None]] = [  # (line, expected rejection or None if kept)
        (seed[0] + b"\r", None),  # CRLF line ending
        (json.dumps({**device, "details": "two\r\nlines"}).encode(), None),  # CR/LF in a field
        (json.dumps({**device, "device_name": "tab\there"}).encode(), None),
        (b"   ", None),  # blank: skipped, not an error
        (big, f"record is over the {MAX_RECORD_BYTES} byte limit"),
        (seed[1].replace(b"Cuong Ba", b"Cuong\x00Ba"), "invalid JSON"),  # raw NUL
        (json.dumps({**device, "details": "bell\u0007"}).encode(), None),  # kept, escaped
        (json.dumps({**device, "device_group": "nul\u0000"}).encode(), None),
        (
            json.dumps({**device, "device_id": None}).encode(),
            "device_id: expected a string, got null",
        ),
        (json.dumps({**device, "type": "device"}).encode(), "type: unknown event type 'device'"),
        (b"\xc3\x28" + seed[0], "invalid JSON"),  # invalid UTF-8
        (b"null", "expected a JSON object, got null"),
        (seed[3], None),
    ]
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(line for line, _ in cases) + b"\n")
    db = tmp_path / "s.db"
    proc = cli("ingest", "--store", f"sqlite:///{db}", "--rejects", str(tmp_path / "rej"), str(src))
    assert proc.returncode == 1
    expected_rejects = [(n, why) for n, (_, why) in enumerate(cases, 1) if why]
    for lineno, why in expected_rejects:
        assert f"rejected: {src}:{lineno}: {why}" in proc.stderr, (lineno, proc.stderr)
    assert proc.stderr.count("rejected: ") == len(expected_rejects)
    kept = sum(1 for line, why in cases if why is None and line.strip())
    assert f"stored {kept} events" in proc.stdout
    assert (tmp_path / "rej").read_bytes().count(b"\n") == len(expected_rejects)
    store = SQLiteStore(db)
    bodies = [e.fields() for batch in store.read("default", 1, 100) for e in batch]
    store.close()
    assert bodies[1]["details"] == "two\r\nlines"
    assert [b["details"] for b in bodies if b["details"].startswith("bell")] == ["bell\u0007"]
    assert [b["device_group"] for b in bodies if b["device_group"].startswith("nul")] == [
        "nul\u0000"
    ]


def test_ingest_skips_a_byte_order_mark_at_the_start_of_the_input(tmp_path: Path) -> None:
    seed = (DATA / "seed_events.ndjson").read_bytes().splitlines()
    bom = b"\xef\xbb\xbf"
    src = tmp_path / "bom.ndjson"
    src.write_bytes(bom + seed[0] + b"\r\n" + seed[1] + b"\r\n" + bom + seed[2] + b"\r\n")
    db = tmp_path / "s.db"
    rejects = tmp_path / "rej"
    proc = cli("ingest", "--store", f"sqlite:///{db}", "--rejects", str(rejects), str(src))
    # Only at the start of the input: a BOM inside is not whitespace in JSON.
    assert proc.returncode == 1, proc.stderr
    assert f"{src}: stored 2 events for account 'default' (ids 1-2); 3 lines, 1 rejected" in (
        proc.stdout
    )
    assert f"rejected: {src}:3: invalid JSON" in proc.stderr
    assert rejects.read_bytes() == bom + seed[2] + b"\r\n"
    piped = cli("ingest", "--store", f"sqlite:///{db}", "-", stdin=bom + seed[3] + b"\n")
    assert piped.returncode == 0, piped.stderr
    assert "<stdin>: stored 1 events for account 'default' (ids 3-3)" in piped.stdout
    store = SQLiteStore(db)
    bodies = [e.fields() for batch in store.read("default", 1, 3) for e in batch]
    store.close()
    assert bodies == [json.loads(line) for line in (seed[0], seed[1], seed[3])]


def test_help_names_the_user_guide_folder_that_exists(tmp_path: Path) -> None:
    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    docs = Path(proc.stdout.split("documentation: ", 1)[1].split()[0])
    assert (docs / "configuration.md").is_file() and (docs / "plugins.md").is_file()
