"""Ingest stores each input file whole or not at all, once: bad lines, full disks, killed
connections and killed processes, against real SQLite files and the real PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from siem_plugins.demo import generate
from siem_plugins.events import MAX_RECORD_BYTES, Canonical, canonicalize
from siem_plugins.ingest import InputError, NdjsonInput, Rejection
from siem_plugins.storage import SQLiteStore, open_store

ACCOUNT = "acme"


def lines_of(n: int, *, start: int = 0, seed: int = 1) -> list[bytes]:
    """``n`` generated events as NDJSON lines, each with a unique ``seq``."""
    return [
        orjson.dumps({**e, "seq": start + i}) + b"\n" for i, e in enumerate(generate(n, seed=seed))
    ]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def ingest(
    *args: str, stdin: bytes | None = None, account: str = ACCOUNT
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", "ingest", "--account", account, *args],
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "siem_plugins", "ingest", "--account", ACCOUNT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def seqs(url: str) -> Counter[int]:
    """How many times each ``seq`` is stored for the account."""
    store = open_store(url)
    try:
        last = 1 << 62
        return Counter(
            int(e.fields()["seq"]) for batch in store.read(ACCOUNT, 1, last) for e in batch
        )
    finally:
        store.close()


def count(url: str) -> int:
    store = open_store(url)
    try:
        return int(store.count(ACCOUNT))
    finally:
        store.close()


def wait_for(what: Callable[[], Any], *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(conn: psycopg.Connection[Any], sql: str, *params: object) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def tagged(url: str) -> tuple[str, str]:
    """``url`` with an application_name of its own, to find its backend; and that name."""
    tag = f"siem-ingest-test-{secrets.token_hex(4)}"
    return f"{url}{'&' if '?' in url else '?'}application_name={tag}", tag


# --------------------------------------------------------------------------- bad lines


def test_bad_timestamps_deep_in_a_file_are_located_and_everything_else_stored(
    tmp_path: Path, store_url: str
) -> None:
    lines = lines_of(8000)
    lines[6000] = lines[6000].replace(
        re.search(rb'"timestamp":"[^"]+"', lines[6000]).group(),  # type: ignore[union-attr]
        b'"timestamp":"9999-12-31T23:59:59-01:00"',
    )
    device = next(i for i in range(7000, 8000) if b'"type":"Device"' in lines[i])
    lines[device] = lines[device].replace(
        re.search(rb'"last_seen":"[^"]+"', lines[device]).group(),  # type: ignore[union-attr]
        b'"last_seen":"0001-01-01T00:00:00+01:00"',
    )
    src = write(tmp_path / "in.ndjson", lines)
    rejects = tmp_path / "rejects.ndjson"
    proc = ingest("--store", store_url, "--rejects", str(rejects), str(src))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    note = "(after conversion to UTC; accepted 0001-01-01 to 9999-12-31)"
    assert (
        f"rejected: {src}:6001: timestamp: out of range: '9999-12-31T23:59:59-01:00' {note}"
        in err.splitlines()
    )
    assert (
        f"rejected: {src}:{device + 1}: last_seen: out of range: "
        f"'0001-01-01T00:00:00+01:00' {note}" in err.splitlines()
    )
    assert rejects.read_bytes() == lines[6000] + lines[device]
    assert (
        f"{src}: stored 7998 events for account 'acme' (ids 1-7998); 8000 lines, 2 rejected" in out
    )
    assert "2 line(s) rejected, 7998 stored" in err
    stored = seqs(store_url)
    assert sorted(stored) == [i for i in range(8000) if i not in (6000, device)]
    assert set(stored.values()) == {1}
    store = open_store(store_url)
    record = store.ingested(ACCOUNT, hashlib.sha256(src.read_bytes()).hexdigest())
    store.close()
    assert record is not None
    assert (record.source, record.lines, record.stored, record.first_id, record.last_id) == (
        str(src),
        8000,
        7998,
        1,
        7998,
    )


def test_a_line_that_breaks_the_parser_costs_that_line_only(tmp_path: Path) -> None:
    """Nesting orjson reads (1024 levels) but cannot write (254) used to raise a
    TypeError out of the whole ingest."""
    lines = lines_of(20)
    lines[9] = lines[9][:-2] + b',"deep":' + b"[" * 300 + b"]" * 300 + b"}\n"
    src = write(tmp_path / "in.ndjson", lines)
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = ingest("--store", url, str(src))
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert f"rejected: {src}:10: cannot be stored as JSON: Recursion limit reached" in err
    assert sorted(seqs(url)) == [i for i in range(20) if i != 9]


def test_an_unexpected_error_while_parsing_rejects_the_line_not_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import siem_plugins.ingest as ingest_module
    from siem_plugins.events import parse_line as real

    def flaky(line: bytes) -> Canonical:
        if b'"seq":3,' in line or line.endswith(b'"seq":3}'):
            raise RuntimeError("a bug in one line")
        return real(line)

    monkeypatch.setattr(ingest_module, "parse_line", flaky)
    rejected: list[Rejection] = []
    data = b"".join(lines_of(6))
    got = list(NdjsonInput(io.BytesIO(data), "in", rejected.append))
    assert [orjson.loads(c.raw)["seq"] for c in got] == [0, 1, 2, 4, 5]
    assert [str(r) for r in rejected] == ["in:4: cannot parse: RuntimeError: a bug in one line"]
    assert rejected[0].raw == data.splitlines(keepends=True)[3]


# --------------------------------------------------------------------------- one transaction


def test_a_file_is_one_transaction(store_url: str) -> None:
    """Nothing of a file is visible before its end; an error anywhere in it (here the
    input failing to read) stores nothing of it."""
    seen_mid_file: list[int] = []

    def records(fail_at: int | None) -> Iterator[Canonical]:
        for i, e in enumerate(generate(12_000, seed=5)):
            if i == 6000:
                seen_mid_file.append(count(store_url))
            if i == fail_at:
                raise InputError("cannot read: Input/output error")
            yield canonicalize({**e, "seq": i})

    store = open_store(store_url)
    with pytest.raises(InputError):
        store.append(ACCOUNT, records(11_000), chunk=1000)
    assert seen_mid_file == [0]  # 6 chunks inserted, none visible
    assert count(store_url) == 0
    result = store.append(ACCOUNT, records(None), chunk=1000)
    store.close()
    assert seen_mid_file == [0, 0]
    assert result.accepted == 12_000
    assert result.last_id is not None and result.first_id is not None
    assert result.last_id - result.first_id + 1 == 12_000
    assert sorted(seqs(store_url)) == list(range(12_000))


def test_sqlite_disk_full_rolls_the_file_back_and_names_the_cause(tmp_path: Path) -> None:
    """A real "database or disk is full" (SQLite's page limit): the cause is reported,
    not "cannot rollback" (SQLite had rolled back already), and nothing is kept."""
    store = SQLiteStore(tmp_path / "s.db")
    store.append(ACCOUNT, (canonicalize(e) for e in generate(100)))
    conn = store._conns.get()  # the connection append uses: the limit is per connection
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 50}")
    with pytest.raises(sqlite3.OperationalError) as info:
        store.append(ACCOUNT, (canonicalize(e) for e in generate(20_000, seed=2)))
    assert str(info.value) == "database or disk is full"
    assert not conn.in_transaction
    assert store.count(ACCOUNT) == 100
    conn.execute("PRAGMA max_page_count = 1073741823")
    result = store.append(ACCOUNT, (canonicalize(e) for e in generate(20_000, seed=2)))
    assert (result.accepted, result.first_id, result.last_id) == (20_000, 101, 20_100)
    store.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root; skipped where mounting is impossible)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_the_ingest_and_a_rerun_completes_it(
    tmp_path: Path, small_fs: Path
) -> None:
    url = f"sqlite:///{small_fs / 's.db'}"
    first = write(tmp_path / "first.ndjson", lines_of(100))
    big = write(tmp_path / "big.ndjson", lines_of(20_000, start=100))
    last = write(tmp_path / "last.ndjson", lines_of(10, start=20_100))
    assert ingest("--store", url, str(first)).returncode == 0
    proc = ingest("--store", url, str(first), str(big), str(last))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert f"{first}: already stored as ids 1-100 on " in out
    assert f"{big}: nothing stored: database or disk is full" in err.splitlines()
    assert f"not read, after the store failed: {last} " in err
    assert count(url) == 100
    # Space freed: the same command stores what is missing, once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    again = ingest("--store", url, str(first), str(big), str(last))
    assert again.returncode == 0, again.stderr
    stored = seqs(url)
    assert sorted(stored) == list(range(20_110)) and set(stored.values()) == {1}


def test_a_killed_postgres_connection_stores_nothing_of_the_file_and_says_so(
    pg_url: str, tmp_path: Path
) -> None:
    password = "s3cret-pw-4711"
    url, tag = tagged(pg_url.replace("postgres@", f"postgres:{password}@", 1))
    first = write(tmp_path / "first.ndjson", lines_of(1000))
    middle = b"".join(lines_of(60_000, start=1000, seed=2))
    last = write(tmp_path / "last.ndjson", lines_of(500, start=61_000, seed=3))
    proc = spawn("--store", url, str(first), "-", str(last))
    assert proc.stdin is not None
    with psycopg.connect(pg_url, autocommit=True) as admin:
        half = middle.index(b"\n", len(middle) // 2) + 1
        proc.stdin.write(middle[:half])  # returns once ingest has read most of it
        proc.stdin.flush()
        # The first file is committed; the second's transaction has written rows.
        wait_for(lambda: scalar(admin, "SELECT count(*) FROM siem_event") == 1000)
        (pid,) = wait_for(
            lambda: admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name=%s"
                " AND backend_xid IS NOT NULL",
                (tag,),
            ).fetchone()
        )
        assert scalar(admin, "SELECT pg_terminate_backend(%s)", pid)
        out_b, err_b = proc.communicate(middle[half:], timeout=120)
        out, err = out_b.decode(), err_b.decode()
        assert proc.returncode == 1, out + err
        assert "Traceback" not in err and password not in out + err
        assert f"{first}: stored 1000 events for account 'acme' (ids 1-1000)" in out
        assert (
            "<stdin>: nothing stored: terminating connection due to administrator command"
            in err.splitlines()
        )
        assert f"not read, after the store failed: {last} " in err
        assert scalar(admin, "SELECT count(*) FROM siem_event") == 1000
    # The same command again: the first file is recognised, the rest stored once.
    again = ingest("--store", url, str(first), "-", str(last), stdin=middle)
    assert again.returncode == 0, again.stderr
    assert f"{first}: already stored as ids 1-1000 on " in again.stdout.decode()
    stored = seqs(pg_url)
    assert sorted(stored) == list(range(61_500)) and set(stored.values()) == {1}


def test_kill_9_in_the_middle_of_a_file_then_a_rerun_stores_it_once(
    store_url: str, tmp_path: Path
) -> None:
    url, tag = tagged(store_url) if store_url.startswith("postgresql") else (store_url, "")
    data = b"".join(lines_of(60_000))
    proc = spawn("--store", url, "-")
    assert proc.stdin is not None
    half = data.index(b"\n", len(data) // 2) + 1
    proc.stdin.write(data[:half])
    proc.stdin.flush()
    if tag:
        with psycopg.connect(store_url, autocommit=True) as admin:
            wait_for(
                lambda: admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name=%s"
                    " AND backend_xid IS NOT NULL",
                    (tag,),
                ).fetchone()
            )
    else:
        # The ingest holds SQLite's write lock: its transaction is open.
        probe = sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")
        probe.close()
    assert proc.poll() is None
    assert count(store_url) == 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert count(store_url) == 0
    again = ingest("--store", url, "-", stdin=data)
    assert again.returncode == 0, again.stderr
    stored = seqs(store_url)
    assert sorted(stored) == list(range(60_000)) and set(stored.values()) == {1}


# --------------------------------------------------------------------------- once per file


def test_rerunning_a_stored_file_stores_nothing_and_force_stores_it_again(
    tmp_path: Path, store_url: str
) -> None:
    src = write(tmp_path / "in.ndjson", lines_of(200))
    assert ingest("--store", store_url, str(src)).returncode == 0
    again = ingest("--store", store_url, str(src))
    out = again.stdout.decode()
    assert again.returncode == 0, again.stderr
    assert re.search(
        rf"^{re.escape(str(src))}: already stored as ids 1-200 on "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; nothing stored \(use --force to store it again\)$",
        out,
        re.M,
    ), out
    assert "0 line(s) rejected, 0 stored; files: 0 stored, 1 already stored" in out
    assert count(store_url) == 200
    # The same bytes from standard input are the same file.
    piped = ingest("--store", store_url, "-", stdin=src.read_bytes())
    assert piped.returncode == 0 and "<stdin>: already stored as ids 1-200" in piped.stdout.decode()
    forced = ingest("--store", store_url, "--force", str(src))
    assert forced.returncode == 0, forced.stderr
    stored = re.search(
        rf"^{re.escape(str(src))}: stored 200 events for account 'acme' \(ids (\d+)-(\d+)\)",
        forced.stdout.decode(),
        re.M,
    )
    assert stored is not None, forced.stdout
    first, last = int(stored.group(1)), int(stored.group(2))
    assert last - first == 199 and first > 200
    if store_url.startswith("sqlite"):
        # SQLite draws no ids for a rolled-back insert; PostgreSQL's sequence does.
        assert (first, last) == (201, 400)
    assert Counter(seqs(store_url).values()) == {2: 200}
    latest = ingest("--store", store_url, str(src))
    assert f"{src}: already stored as ids {first}-{last} on " in latest.stdout.decode()
    assert count(store_url) == 400
    # Another account does not share the record.
    other = ingest("--store", store_url, str(src), account="globex")
    assert other.returncode == 0 and b"stored 200 events for account 'globex'" in other.stdout


def test_unreadable_and_all_rejected_files_are_reported_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    missing = tmp_path / "missing.ndjson"
    bad = write(tmp_path / "bad.ndjson", [b"\xef\xbb\xbf{not json\n", b"[]\n"])
    good = write(tmp_path / "good.ndjson", lines_of(3))
    rejects = tmp_path / "rejects"
    for run in range(2):
        proc = ingest(
            "--store", url, "--rejects", str(rejects), str(missing), str(tmp_path), str(bad)
        )
        out, err = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err
        assert f"{missing}: nothing stored: No such file or directory" in err.splitlines()
        assert f"{tmp_path}: nothing stored: Is a directory" in err.splitlines()
        # Nothing stored, so nothing recorded: never "already stored".
        assert f"{bad}: stored 0 events for account 'acme'; 2 lines, 2 rejected" in out
        assert (
            "2 line(s) rejected, 0 stored; files: 1 stored, 0 already stored, 2 not stored" in err
        )
        # The rejects file has the lines without the input's byte-order mark.
        assert rejects.read_bytes() == b"{not json\n[]\n", run
    proc = ingest("--store", url, str(missing), str(good))
    assert proc.returncode == 1
    assert f"{good}: stored 3 events" in proc.stdout.decode()


# --------------------------------------------------------------------------- memory


def test_reading_holds_neither_the_file_nor_an_oversize_line(tmp_path: Path) -> None:
    one = lines_of(1)[0]
    big = tmp_path / "big.ndjson"
    with big.open("wb") as f:
        f.write(one)
        f.write(b'{"x":"' + b"y" * (40 << 20) + b'"}\n')  # a 40 MiB line
        for _ in range(60_000):  # ~20 MB of records
            f.write(one)
    rejected: list[Rejection] = []
    tracemalloc.start()
    try:
        with big.open("rb") as f:
            source = NdjsonInput(f, "big", rejected.append)
            stored = sum(1 for _ in source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored == 60_001
    assert [str(r) for r in rejected] == [
        f"big:2: record is over the {MAX_RECORD_BYTES} byte limit"
    ]
    assert len(rejected[0].raw) == MAX_RECORD_BYTES + 2
    assert source.lines == 60_002
    assert source.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert peak < 8 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize("block_edge", [0, 1, 2, 3])
def test_lines_are_found_whatever_the_block_boundaries(
    monkeypatch: pytest.MonkeyPatch, block_edge: int
) -> None:
    import siem_plugins.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "BLOCK_BYTES", 7 + block_edge)
    lines = lines_of(5)
    data = (
        b"\xef\xbb\xbf"
        + lines[0]
        + b"\n  \n"
        + lines[1].replace(b"\n", b"\r\n")
        + b"".join(lines[2:])
    )
    rejected: list[Rejection] = []
    source = NdjsonInput(io.BytesIO(data[:-1]), "f", rejected.append)  # no final newline
    got = [json.loads(c.raw)["seq"] for c in source]
    assert got == [0, 1, 2, 3, 4] and not rejected
    assert source.lines == 7


# --------------------------------------------------------------------------- the docs


def docs_example_lines() -> list[bytes]:
    account = {
        "log_type": "config",
        "details": "Administrator changed Settings",
        "admin_name": "Phuong Weekly 1",
        "type": "Account",
        "event": "Configuration Change",
        "admin_email": "phuongphweekly@gmail.com",
        "timestamp": "2022-07-15T11:19:41.629Z",
    }
    device = {
        "log_type": "added",
        "device_name": "Cuong Ba",
        "device_id": "cuongbavuacakhia1657883993",
        "device_group": "Default",
        "details": "OPSWAT Client Installed",
        "type": "Device",
        "device_username": "Christy Stokes",
        "timestamp": "2022-07-15T11:19:54.239Z",
    }
    bad: list[dict[str, Any] | list[int]] = [
        account | {"timestamp": "9999-12-31T23:59:59-01:00"},
        account | {"timestamp": "2022-07-15T11:19:41"},
        account | {"type": "Printer"},
        account | {"admin_name": 42},
        account | {"log_type": "Config"},
        account | {"details": "x" * 70_000},
        [1, 2],
        account | {"log_type": ""},
        {k: v for k, v in device.items() if k != "device_name"},
    ]
    lines = [json.dumps(b).encode() for b in bad]
    lines.append(b"garbage")
    lines.append(json.dumps(device | {"details": "NUL \x00 and ESC \x1b are kept"}).encode())
    return [line + b"\n" for line in lines]


def test_the_ingest_example_of_the_formats_page_is_what_ingest_prints(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    start = page.index("\n## Ingest input\n")
    block = re.search(r"```\n(rejected: .*?)```", page[start:], re.S)
    assert block is not None
    write(tmp_path / "in.ndjson", docs_example_lines())
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "ingest", "--store", "sqlite:///s.db", "in.ndjson"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    # The page shows both streams in the order a terminal does.
    assert [*err[:-1], *proc.stdout.splitlines(), err[-1]] == block.group(1).splitlines()
