"""The deploy/ folder: the systemd units, the single-host config and its environment file.

The units are checked three ways: by systemd itself (``systemd-analyze verify`` and
``security``, where it is installed), by reading their directives, and by running the
shipper under the seccomp filters they install (tests/sandbox.py), against real S3 and
SMTP servers, and a Celery worker stopped the way the worker unit stops it.
"""

from __future__ import annotations

import configparser
import contextlib
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.builtin.email import DEFAULT_DEADLINE
from siem_plugins.cli import build_parser, cmd_run, cmd_worker
from siem_plugins.config import load_config
from siem_plugins.events import canonicalize
from siem_plugins.storage import SINK, PgState, PostgresStore, SQLiteStore, sqlite_path
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer
from tests.sandbox import Unit, libseccomp, read_unit, seccomp_spec, timespan, value

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SANDBOX = Path(__file__).with_name("sandbox.py")
RUN_UNIT = DEPLOY / "systemd" / "siem-plugins.service"
WORKER_UNIT = DEPLOY / "systemd" / "siem-plugins-worker.service"
UNITS = {"run": RUN_UNIT, "worker": WORKER_UNIT}
SYSUSERS = DEPLOY / "systemd" / "siem-plugins.sysusers.conf"
CONFIG = DEPLOY / "siem.toml"
ENV_EXAMPLE = DEPLOY / "siem-plugins.env.example"

#: Where the units expect things (docs/deployment.md, "A single host").
PROGRAM = "/opt/siem-plugins/bin/siem-plugins"
CONFIG_PATH = "/etc/siem-plugins/siem.toml"
ENV_PATH = "/etc/siem-plugins/siem-plugins.env"

#: What every unit must say, as systemd reads it (the last assignment wins).
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "KillSignal": "SIGTERM",
    "Restart": "on-failure",
    "EnvironmentFile": ENV_PATH,
}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: the systemd package)"
)
needs_seccomp = pytest.mark.skipif(
    ANALYZE is None or not sys.platform.startswith("linux") or libseccomp() is None,
    reason="the unit's seccomp sandbox needs Linux, libseccomp and systemd-analyze "
    "(for the system call groups)",
)


def exec_start(unit: Unit) -> list[str]:
    line = value(unit, "Service", "ExecStart")
    assert line is not None
    return shlex.split(line)


def local_command(unit: Unit, config: Path) -> list[str]:
    """The unit's ExecStart with this checkout's shipper and a test config."""
    argv = exec_start(unit)
    argv[argv.index("-c") + 1] = str(config)
    return [sys.executable, "-m", "siem_plugins", *argv[1:]]


def sandboxed(unit: Unit, argv: list[str]) -> list[str]:
    return [sys.executable, str(SANDBOX), json.dumps(seccomp_spec(unit)), *argv]


def env_example() -> dict[str, str]:
    """The example environment file's variables (every line is NAME=value)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, text = line.partition("=")
            out[name] = text
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SIEM_", "SMTP_")) and k != "STATE_DIRECTORY"
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- the units


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_is_hardened(name: str) -> None:
    unit = read_unit(UNITS[name])
    said = {key: value(unit, "Service", key) for key in HARDENING}
    assert said == HARDENING
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:])
    assert value(unit, "Service", "DynamicUser") in (None, "no")
    user = value(unit, "Service", "User")
    assert user not in (None, "root", "0")
    # The user the units run as is the one the sysusers.d file creates.
    assert re.search(rf"^u\s+{re.escape(str(user))}\s", SYSUSERS.read_text(), re.M)
    # A configuration error (exit 2) is not retried every RestartSec.
    assert "2" in (value(unit, "Service", "RestartPreventExitStatus") or "").split()


@pytest.mark.parametrize("name", UNITS)
def test_the_stop_timeout_covers_the_smtp_deadline(name: str) -> None:
    """A digest being delivered when SIGTERM comes is waited for, up to the email
    notifier's ``deadline`` from its connect; the range was read and rendered before,
    and the cursor is committed after: a minute is left for those and the last object."""
    unit = read_unit(UNITS[name])
    stop = value(unit, "Service", "TimeoutStopSec")
    assert stop is not None
    assert timespan(stop) >= DEFAULT_DEADLINE + 60


def test_the_run_unit_runs_run_with_the_etc_config() -> None:
    unit = read_unit(RUN_UNIT)
    argv = exec_start(unit)
    assert argv[:4] == [PROGRAM, "run", "-c", CONFIG_PATH]
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_run and args.config == CONFIG_PATH and args.executor == "local"
    # SQLite lives in the state directory: writable under ProtectSystem=strict.
    assert value(unit, "Service", "StateDirectory") == "siem-plugins"


def test_the_worker_unit_runs_a_worker_and_signals_its_main_process_only() -> None:
    unit = read_unit(WORKER_UNIT)
    argv = exec_start(unit)
    assert argv[:4] == [PROGRAM, "worker", "-c", CONFIG_PATH]
    assert build_parser().parse_args(argv[1:]).func is cmd_worker
    # See test_a_sandboxed_worker_finishes_its_task_when_the_unit_stops.
    assert value(unit, "Service", "KillMode") == "mixed"


def test_the_example_config_keeps_the_store_in_the_units_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = value(read_unit(RUN_UNIT), "Service", "StateDirectory")
    for name, text in env_example().items():
        monkeypatch.setenv(name, text)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    url = load_config(CONFIG).store_options.raw("url")
    assert isinstance(url, str)
    assert sqlite_path(url) == Path("/var/lib") / str(state) / "siem.db"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))  # what systemd sets
    url = load_config(CONFIG).store_options.raw("url")
    assert isinstance(url, str)
    assert sqlite_path(url) == tmp_path / "siem.db"


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verifies_the_unit(name: str, tmp_path: Path) -> None:
    """No error and no warning: an unknown or misspelt directive is only a warning to
    systemd, which then runs the service without it. The program must exist, so the
    copy checked runs this installation's ``siem-plugins``."""
    program = Path(sys.executable).with_name("siem-plugins")
    assert program.exists()
    unit = tmp_path / UNITS[name].name
    unit.write_text(UNITS[name].read_text().replace(PROGRAM, str(program)))
    verify = subprocess.run(
        [str(ANALYZE), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert exposure, security.stdout + security.stderr
    # 1.4 with systemd 252; other versions weigh a little differently.
    assert float(exposure[1]) <= 2.0, security.stdout


@needs_analyze
def test_systemd_sysusers_creates_the_user(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", "--dry-run", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Creating user 'siem-plugins'" in done.stderr


# --------------------------------------------------------------------------- shipping


def test_the_deploy_folder_is_installed_with_the_package() -> None:
    """setup.cfg's data_files install every file of deploy/ under
    ``share/siem-plugins/deploy/``, in the same layout."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    installed = set()
    for target, files in cfg["options.data_files"].items():
        for name in files.split():
            if name.startswith("deploy/"):
                installed.add(name)
                assert target == str(Path("share/siem-plugins") / Path(name).parent)
    present = {str(p.relative_to(REPO)) for p in DEPLOY.rglob("*") if p.is_file()}
    assert installed == present


USES = re.compile(r"\$\{([A-Za-z_]\w*)\}")  # ${NAME:-default} does not need NAME


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for item in node.values():
            yield from strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def single_host_guide() -> str:
    text = (REPO / "docs" / "deployment.md").read_text()
    return text.split("\n## A single host\n", 1)[1].split("\n## ", 1)[0]


def test_the_guide_lists_the_deploy_folder() -> None:
    table = single_host_guide().split("### The files", 1)[1].split("\n### ", 1)[0]
    named = {row.split("`")[1] for row in table.splitlines() if row.startswith("| `")}
    present = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    assert named == present


def test_the_readmes_deploy_row_names_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `deploy/` |")]
    named = [n for n in re.findall(r"`([\w./-]+)`", row.split("|")[2]) if "." in n]
    assert named and not [n for n in named if not (DEPLOY / n).is_file()]


def test_the_guides_sql_runs_on_the_store(tmp_path: Path, siem_events: Any) -> None:
    """The backup and the run-log query of the guide, on a store that synced."""
    from siem_plugins.pipeline import Pipeline
    from tests.helpers import integration, numbered, runtime

    db = tmp_path / "siem.db"
    store = SQLiteStore(db)
    store.append("acme", (canonicalize(e) for e in numbered(siem_events(20))))
    rt = runtime(db, [integration("acme", {"type": "local", "path": str(tmp_path / "b")})])
    try:
        assert Pipeline(rt).sync(rt.integrations[0]).ok
        commands = re.findall(
            r'^\s*sqlite3 /var/lib/siem-plugins/siem.db "(.*)"$', single_host_guide(), re.M
        )
        assert len(commands) == 2
        backup = tmp_path / "backup.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:  # beside the open store
            rows = []
            for sql in commands:
                rows = conn.execute(
                    sql.replace("/var/backups/siem-plugins.db", str(backup))
                ).fetchall()
    finally:
        rt.close()
        store.close()
    assert sorted(r[:2] for r in rows) == [("acme", "notifier"), ("acme", "sink")]
    assert all(r[3] is not None and r[6] is None for r in rows)  # finished, no error
    with contextlib.closing(sqlite3.connect(backup)) as copy:
        assert copy.execute("SELECT count(*) FROM siem_event").fetchone() == (20,)
        assert copy.execute(
            "SELECT last_id FROM siem_cursor WHERE destination = 'sink'"
        ).fetchone() == (20,)


def test_the_env_example_sets_what_the_config_needs() -> None:
    """Lines systemd and a shell read alike, and exactly the variables siem.toml needs
    (those it uses without a default)."""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\s'\"\\$`]+", line), line
    needed = {
        name for text in strings(tomllib.loads(CONFIG.read_text())) for name in USES.findall(text)
    }
    assert set(env_example()) == needed


def test_the_example_config_passes_check(tmp_path: Path) -> None:
    values = {name: f"test-{name.lower()}-value" for name in env_example()}
    env = clean_env(STATE_DIRECTORY=str(tmp_path), **values)
    cmd = [sys.executable, "-m", "siem_plugins", "check", "--no-probe", "-c", str(CONFIG)]
    done = subprocess.run(
        [*cmd, "--print-config"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"config {CONFIG}: ok (1 integrations)" in done.stdout
    assert not [v for v in values.values() if v in done.stdout + done.stderr]
    assert (tmp_path / "siem.db").exists()  # the store went to $STATE_DIRECTORY

    # Without the environment file's variables the config does not load.
    first = next(iter(values))
    del env[first]
    failed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 2
    assert f"environment variable {first} is not set" in failed.stderr


# --------------------------------------------------------------------------- the sandbox


@needs_seccomp
def test_the_sandbox_applies_the_units_filters() -> None:
    """What the units forbid is refused inside the sandbox (else the tests below prove
    nothing): writable+executable memory, a system call of @resources, a netlink socket."""
    probe = """
import mmap, os, socket
for name, attempt in (
    ("wx", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)),
    ("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0))),
    ("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    ("inet6", lambda: socket.socket(socket.AF_INET6).close()),
):
    try:
        attempt()
    except OSError as exc:
        print(name, exc.errno)
    else:
        print(name, "ok")
"""
    argv = [sys.executable, "-c", probe]
    outside = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    inside = subprocess.run(
        sandboxed(read_unit(RUN_UNIT), argv), capture_output=True, text=True, timeout=60
    )
    assert outside.stdout.split("\n")[:2] == ["wx ok", "setpriority ok"]
    assert inside.stdout.split("\n") == ["wx 1", "setpriority 1", "netlink 97", "inet6 ok", ""]


def seed(store: SQLiteStore, events: list[dict[str, Any]]) -> None:
    store.append("acme", (canonicalize({**e, "seq": i}) for i, e in enumerate(events)))
    store.close()


@needs_seccomp
def test_run_ships_inside_the_units_sandbox(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    siem_events: Any,
) -> None:
    """`run` as the unit starts it, under its system call filter, W^X memory and address
    families: ISA-L, orjson, SQLite, botocore and smtplib all work."""
    unit = read_unit(RUN_UNIT)
    events = siem_events(500)
    seed(SQLiteStore(tmp_path / "siem.db"), events)
    sink = s3_server.sink_options(s3_bucket)
    sink_table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sink.items())
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "siem.db"}"
[smtp]
host = "{smtp_server.host}"
port = {smtp_server.port}
security = "none"
from = "siem@example.com"
[[integration]]
name = "acme"
account = "acme"
format = "json"
sink = {{ {sink_table} }}
notify = {{ events = ["exempt_all", "threat_detected", "config", "login_failed"], to = ["soc@acme.example"] }}
[metrics]
port = 0
""")
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(
            sandboxed(unit, local_command(unit, cfg)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        client = s3_server.client()
        deadline = time.monotonic() + 60
        keys: list[str] = []
        while time.monotonic() < deadline and not (keys and smtp_server.messages):
            assert run.poll() is None, log.read_text()
            time.sleep(0.2)
            keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        # The metrics endpoint works under the sandbox too (it listens and reads the store).
        url = metrics_url(log)
        assert b"siem_store_up 1.0" in wait_for_metric(url, b"siem_events_shipped_total")
        run.send_signal(signal.SIGTERM)  # the unit's KillSignal
        assert run.wait(timeout=60) == 0, log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = log.read_text()
    assert "Operation not permitted" not in text, text
    # The lines docs/deployment.md ("Is it healthy?") tells an operator to look for.
    assert "running 1 integrations every 300s (Ctrl-C or SIGTERM stops cleanly)" in text
    assert re.search(r"acme: sink pass done in \d+\.\ds: 1 objects, 500 events\n", text)
    assert re.search(r"acme: notifier pass done in \d+\.\ds: 1 digests\n", text)
    assert "SIGTERM: finishing in-flight objects, then stopping" in text
    assert len(keys) == 1 and keys[0].endswith(".json.gz"), text
    body = gzip.decompress(client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].read())
    assert [json.loads(line)["seq"] for line in body.splitlines()] == list(range(500))
    assert len(smtp_server.messages) == 1, text


def metrics_url(log: Path) -> str:
    found = re.search(r"metrics: serving (http://\S+)/metrics", log.read_text())
    assert found, log.read_text()
    return found.group(1)


def wait_for_metric(url: str, needle: bytes, timeout: float = 30) -> bytes:
    """The endpoint's /metrics, once it holds ``needle``."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read()
        finally:
            conn.close()
        if needle in body or time.monotonic() > deadline:
            assert needle in body, body.decode()[-2000:]
            return body
        time.sleep(0.2)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


@pytest.fixture
def worker_proc() -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for p in running:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


@needs_seccomp
def test_a_sandboxed_worker_finishes_its_task_when_the_unit_stops(
    tmp_path: Path,
    pg_url: str,
    s3_server: S3Server,
    siem_events: Any,
    worker_proc: list[subprocess.Popen[bytes]],
) -> None:
    """The worker unit's command, under its sandbox, syncs a slow integration; the unit is
    stopped in the middle of it: SIGTERM as the unit's KillMode sends it (to the main
    process only with ``mixed``, to every process of the unit by default). The sync in
    flight completes and the worker exits 0. With the default KillMode, Celery's prefork
    children would get the SIGTERM too and exit in mid-sync (``WorkerLostError``)."""
    from tests.test_fleet import REDIS, shipped, sync_runs, write_config

    unit = read_unit(WORKER_UNIT)
    store = PostgresStore(pg_url)
    s3_server.create_bucket("b-slowpoke")
    total = 1200
    store.append(
        "slowpoke", (canonicalize({**e, "seq": i}) for i, e in enumerate(siem_events(total)))
    )
    store.close()
    cfg = tmp_path / "siem.toml"
    slow = {"sink_type": "slow-s3", "sink": {"delay": 3.0}, "max_events": 10_000}
    write_config(cfg, pg_url, s3_server, REDIS, [("slowpoke", "b-slowpoke", slow)])
    # Tasks expire after one interval: long enough for a worker that is starting.
    cfg.write_text(
        cfg.read_text().replace('interval = "1s"', 'interval = "1m"')
        + "[metrics]\nworker_port = 0\n"
    )
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            sandboxed(unit, local_command(unit, cfg)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the unit's control group
            env=clean_env(),
        )
    worker_proc.append(worker)
    enqueue = ["run", "--executor", "celery", "--cycles", "1", "-c", str(cfg)]
    beat = subprocess.run(
        [sys.executable, "-m", "siem_plugins", *enqueue],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert beat.returncode == 0, beat.stderr
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = [r for r in sync_runs(pg_url) if r[0] == "slowpoke/sink"]
        if runs:
            break
        assert worker.poll() is None, log.read_text()
        time.sleep(0.1)
    assert runs and runs[0][3] is None, log.read_text()  # started, not finished
    # A pool process counts the notifier pass into the worker's metrics folder (in the
    # unit's private /tmp), and the parent serves it, all under the sandbox.
    url = metrics_url(log)
    wait_for_metric(
        url,
        b'siem_passes_total{destination="notifier",integration="slowpoke",outcome="ok"} 1.0',
    )
    assert get_json(f"{url}/readyz")[0] == 200
    time.sleep(0.5)

    stopped_at = time.time()
    kill_mode = value(unit, "Service", "KillMode") or "control-group"
    if kill_mode == "control-group":
        os.killpg(worker.pid, signal.SIGTERM)
    else:  # mixed, process: SIGTERM to the main process only
        os.kill(worker.pid, signal.SIGTERM)
    # During the warm shutdown the worker says it takes no more work, and is still alive.
    deadline = time.monotonic() + 5
    while (ready := get_json(f"{url}/readyz"))[0] != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready == (503, {**ready[1], "status": "not ready", "reason": "stopping"}), ready
    assert get_json(f"{url}/healthz")[0] == 200
    assert worker.wait(timeout=timespan(value(unit, "Service", "TimeoutStopSec") or "90")) == 0, (
        log.read_text()
    )

    [run] = [r for r in sync_runs(pg_url) if r[0] == "slowpoke/sink"]
    assert run[3] is not None, log.read_text()  # the pass finished...
    assert run[3].timestamp() > stopped_at  # ...after the stop began
    state = PgState(pg_url)
    try:
        assert state.pending("slowpoke", SINK) is None
        assert state.cursor("slowpoke", SINK) > 0
    finally:
        state.close()
    seen = shipped(s3_server, "b-slowpoke")
    assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}


# --------------------------------------------------------------------------- backups


def test_a_restored_backup_replays_its_intent_and_ships_later_ranges_again(
    tmp_path: Path, siem_events: Any
) -> None:
    """docs/deployment.md, "Backups": a ``VACUUM INTO`` copy taken while the shipper runs
    holds the events and the delivery state of one moment. Restored, a pending intent is
    replayed to its key (same bytes); ranges recorded after the backup are planned again,
    objects under keys made now: their events are shipped a second time. Events stored
    after the backup are gone and their ids are handed out again, so a digest of the same
    id range keeps its Message-ID while it lists other events."""
    from siem_plugins.pipeline import Pipeline
    from tests.helpers import integration, local_objects, numbered, runtime, seqs_in

    db, bucket, outbox = tmp_path / "siem.db", tmp_path / "bucket", tmp_path / "outbox"
    bucket.mkdir()
    events = numbered(siem_events(170))
    notify = {
        "type": "outbox",
        "path": str(outbox),
        "from": "siem@example.com",
        "to": ["soc@example.com"],
        "events": sorted({e["log_type"] for e in events}),  # a digest for every range
    }
    config = [
        integration("acme", {"type": "local", "path": str(bucket)}, notify=notify, max_events=100)
    ]
    store = SQLiteStore(db)
    store.append("acme", (canonicalize(e) for e in events[:150]))
    rt = runtime(db, config)
    [integ] = rt.integrations
    # The first object cannot be written (a file stands where its folder goes): its
    # intent, ids 1-100, stays pending. The digest of 1-150 goes out.
    (bucket / "acme").write_text("")
    assert not Pipeline(rt).sync(integ).ok
    pending = rt.state.pending("acme", SINK)
    assert pending is not None and (pending.first_id, pending.last_id) == (1, 100)

    backup = tmp_path / "backup.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:  # beside the open runtime
        conn.execute("VACUUM INTO ?", (str(backup),))

    (bucket / "acme").unlink()
    store.append("acme", (canonicalize(e) for e in events[150:160]))  # ids 151-160
    assert Pipeline(rt).sync(integ).ok
    rt.close()
    store.close()
    objects_before = local_objects(bucket)
    assert sorted(seqs_in(b) for b in objects_before.values()) == [
        list(range(1, 101)),
        list(range(101, 161)),
    ]
    digest = outbox / "acme" / f"{151:020d}-{160:020d}.eml"
    digest_before = digest.read_bytes()

    # Restore, the service stopped: the WAL files belong to the replaced database.
    for leftover in (tmp_path / "siem.db-wal", tmp_path / "siem.db-shm"):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(backup, db)
    time.sleep(1.1)  # keys carry their intent's creation time, to the second

    store = SQLiteStore(db)
    again = store.append("acme", (canonicalize(e) for e in events[160:170]))
    assert (again.first_id, again.last_id) == (151, 160)  # the lost events' ids
    store.close()
    rt = runtime(db, config)
    try:
        assert Pipeline(rt).sync(rt.integrations[0]).ok
    finally:
        rt.close()
    objects = local_objects(bucket)
    assert objects[pending.key] == objects_before[pending.key]
    [new_key] = set(objects) - set(objects_before)
    assert seqs_in(objects[new_key]) == list(range(101, 151)) + list(range(161, 171))
    # The digest of ids 151-160 again: same Message-ID, other events.
    message_id = re.compile(rb"^Message-ID: (.*)$", re.M)
    assert message_id.findall(digest.read_bytes()) == message_id.findall(digest_before)
    date = re.compile(rb"^Date: .*$", re.M)
    assert date.sub(b"", digest.read_bytes()) != date.sub(b"", digest_before)


def test_the_cli_starts_with_a_home_it_cannot_read(tmp_path: Path) -> None:
    """A service user whose home is out of reach (``ProtectHome=``, or a command run with
    another user's ``HOME``): looking for the user guide under ``~/.local`` must not end
    the command with a traceback."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in clean_env(HOME=str(home / "siem")).items() if k != "PYTHONUSERBASE"}
    argv = [sys.executable, "-m", "siem_plugins", "--version"]
    if os.geteuid() == 0:  # root reads any folder: be someone else
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop to another user")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        # The package must be readable by that user: a venv or checkout in a private
        # folder (root's home, a 0700 temp dir) is not, and then this cannot be tried.
        probe = subprocess.run(
            [*nobody, sys.executable, "-c", "import siem_plugins"],
            capture_output=True, text=True, env=env, cwd="/", timeout=60,
        )  # fmt: skip
        if probe.returncode != 0:
            pytest.skip(f"user 65534 cannot import siem_plugins here: {probe.stderr.strip()}")
        argv = [*nobody, *argv]
    else:
        home.chmod(0)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    home.chmod(0o700)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("siem-plugins ")
