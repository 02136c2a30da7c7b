"""The worked examples: the two drop-in plugins in hooks/ and the third-party package in
docs/example-plugin, each used the way an operator would use it.

The drop-ins talk to a real HTTP server on 127.0.0.1 that records every request; the
package is built and installed into a fresh virtual environment, where the installed
``siem-plugins`` command lists it and syncs with it.

The HEC sink runs the stream-sink conformance suite: HEC cannot take back a request it
accepted, so an object larger than one request is not all-or-nothing (its docstring says
so): it is a stream destination, at least once, every line whole.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.config import config_from_dict
from siem_plugins.host import PluginHost, create_host
from siem_plugins.kinds import Notifier, ObjectMeta, Sink
from siem_plugins.options import ConfigError, Options
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import SQLiteStore
from siem_plugins.testing import NotifierConformance, StreamSinkConformance
from siem_plugins.testing.conformance import digest_of, events_from_dicts, sample_events
from tests.helpers import drop_in_folder, ingest

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "hooks"
EXAMPLE = REPO / "docs" / "example-plugin"
SEED = REPO / "tests" / "data" / "seed_events.ndjson"
SECRET = "whsec-0123456789abcdef"
TOKEN = "11111111-2222-3333-4444-555555555555"
HEC_OK = b'{"text":"Success","code":0}'


def seed_dicts() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SEED.read_text().splitlines()]


# --------------------------------------------------------------------------- HTTP server


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers as told
    (200 with HEC's success reply unless :meth:`reply_next` queued something else)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._replies: deque[tuple[int, bytes, dict[str, str]]] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request would drown the test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for it, after every test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply_next(
        self, status: int, body: bytes = b"", *, headers: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self._replies.append((status, body, headers or {}))

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        parts = urlsplit(handler.path)
        with self._lock:
            self.requests.append(
                Received(
                    handler.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                )
            )
            status, reply, headers = self._replies.popleft() if self._replies else (200, HEC_OK, {})
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> PluginHost:
    """The real host, with (a copy of) the repository's hooks/ folder as its drop-in
    folder: copied with explicit modes, as a checkout's may be group-writable (umask 002),
    which the host refuses."""
    hooks = drop_in_folder(tmp_path_factory.mktemp("examples") / "hooks", HOOKS)
    return create_host(hooks, entry_points=False, disabled=())


def test_the_examples_load_from_the_hooks_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_in_folder(tmp_path / "hooks", HOOKS)
    monkeypatch.chdir(tmp_path)
    host = create_host(Path("hooks"), entry_points=False, disabled=())
    assert host.failures == []
    assert host.plugins["webhook"].origin == "file hooks/webhook.py"
    assert [(p.kind, p.name) for p in host.plugins["webhook"].provides] == [("notifier", "webhook")]
    assert host.plugins["splunk_hec"].origin == "file hooks/splunk_hec.py"
    assert [(p.kind, p.name) for p in host.plugins["splunk_hec"].provides] == [
        ("sink", "splunk_hec")
    ]


def test_plugins_command_lists_the_examples_and_a_broken_plugin(tmp_path: Path) -> None:
    drop_in_folder(
        tmp_path / "hooks",
        HOOKS / "webhook.py",
        HOOKS / "splunk_hec.py",
        files={"broken.py": 'raise RuntimeError("broken on purpose")\n'},
    )
    # hooks/ beside the config file in use (./siem.toml here) is the drop-in folder.
    (tmp_path / "siem.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path}/siem.db"\n')
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("SIEM_CONFIG", None)
    run = [sys.executable, "-m", "siem_plugins", "plugins"]
    proc = subprocess.run(
        [*run, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr  # one plugin failed to load
    listing = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["webhook"]["origin"] == "file hooks/webhook.py"
    assert [(p["kind"], p["name"]) for p in plugins["webhook"]["provides"]] == [
        ("notifier", "webhook")
    ]
    assert "HMAC-signed" in plugins["webhook"]["provides"][0]["description"]
    assert plugins["splunk_hec"]["origin"] == "file hooks/splunk_hec.py"
    assert [(p["kind"], p["name"]) for p in plugins["splunk_hec"]["provides"]] == [
        ("sink", "splunk_hec")
    ]
    assert listing["failures"] == [
        {
            "name": "broken",
            "origin": "file hooks/broken.py",
            "error": "import failed: RuntimeError: broken on purpose",
        }
    ]
    table = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 1
    assert (
        "plugin 'broken' (file hooks/broken.py) was not loaded: "
        "import failed: RuntimeError: broken on purpose"
    ) in table.stdout
    assert "notifier: webhook" in table.stdout and "sink: splunk_hec" in table.stdout


# --------------------------------------------------------------------------- webhook


def webhook(host: PluginHost, url: str, **options: Any) -> Notifier:
    return host.notifier("webhook", Options({"url": url, **options}, path="notify"))


def test_webhook_posts_one_signed_json_digest(receiver: Receiver, host: PluginHost) -> None:
    notifier = webhook(
        host, f"{receiver.url}/hooks/siem?team=secops", secret=SECRET, headers={"X-Team": "ops"}
    )
    dicts = seed_dicts()
    events = events_from_dicts(dicts, first_id=101)
    digest = digest_of(events, integration="acme")
    notifier.notify(digest)

    (req,) = receiver.requests
    assert (req.method, req.path, req.query) == ("POST", "/hooks/siem", {"team": ["secops"]})
    # What a receiver does: recompute the HMAC over the exact body bytes.
    mac = hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["x-siem-signature"], f"sha256={mac}")
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-team"] == "ops"
    assert req.headers["x-siem-message-id"] == digest.message_id
    assert req.body.isascii()
    assert json.loads(req.body) == {
        "integration": "acme",
        "account": "acme",
        "first_id": 101,
        "last_id": 104,
        "total": 4,
        "counts": {"added": 1, "config": 1, "exempt_all": 1, "unexempt": 1},
        "message_id": "siem.acme.00000000000000000101-00000000000000000104@siem-plugins",
        "listed": 4,
        "events": [
            {
                "id": 101 + i,
                "type": d["type"],
                "log_type": d["log_type"],
                "timestamp": d["timestamp"],
                "fields": d,
            }
            for i, d in enumerate(dicts)
        ],
    }


def test_webhook_lists_at_most_max_listed(receiver: Receiver, host: PluginHost) -> None:
    notifier = webhook(host, receiver.url, max_listed=2)
    assert getattr(notifier, "max_listed", None) == 2  # the pipeline reads it
    notifier.notify(digest_of(sample_events(5)))
    body = json.loads(receiver.requests[0].body)
    assert (body["total"], body["listed"], [e["id"] for e in body["events"]]) == (5, 2, [1, 2])
    assert "x-siem-signature" not in receiver.requests[0].headers  # no secret, no signature


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        (500, b"upstream down", "HTTP 500 Internal Server Error: upstream down"),
        (
            403,
            f'{{"error":"bad signature for key {SECRET}"}}'.encode(),
            'HTTP 403 Forbidden: {"error":"bad signature for key ***"}',
        ),
        (302, b"", "HTTP 302 Found"),  # a redirected POST is not followed as a GET
    ],
)
def test_webhook_errors_are_clear_and_keep_secrets_out(
    receiver: Receiver, host: PluginHost, status: int, reply: bytes, expected: str
) -> None:
    # Slack-style: the URL path is itself a credential, so messages name the origin only.
    notifier = webhook(host, f"{receiver.url}/services/T000/B000/tok-XYZ", secret=SECRET)
    receiver.reply_next(status, reply, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    with pytest.raises(RuntimeError) as info:
        notifier.notify(digest_of(sample_events(3)))
    assert type(info.value).__name__ == "WebhookError"
    assert str(info.value) == f"{receiver.url}: {expected}"
    assert SECRET not in str(info.value) and "tok-XYZ" not in str(info.value)
    assert len(receiver.requests) == 1


def test_webhook_unreachable_and_probe(receiver: Receiver, host: PluginHost) -> None:
    webhook(host, f"{receiver.url}/x").probe()  # connects, sends nothing
    assert receiver.requests == []
    down = webhook(host, f"http://127.0.0.1:{closed_port()}/x", secret=SECRET)
    with pytest.raises(RuntimeError, match=r"^http://127\.0\.0\.1:\d+: .*[Rr]efused"):
        down.notify(digest_of(sample_events(1)))
    with pytest.raises(RuntimeError, match=r"cannot connect: .*[Rr]efused"):
        down.probe()


@pytest.mark.parametrize(
    ("options", "where", "message"),
    [
        ({"url": "ftp://example.com/x"}, "url", "expected an http:// or https:// URL"),
        ({"url": "https://x", "headers": {"X-A": "v\r\nBcc: e"}}, "headers", "one-line"),
        ({"url": "https://x", "headers": {"Content-Type": "a"}}, "headers", "reserved"),
        ({"url": "https://x", "retries": 3}, "retries", "unknown setting 'retries'"),
    ],
)
def test_webhook_config_errors_are_located(
    host: PluginHost, options: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        host.notifier("webhook", Options(options, path="integration[0].notify", file="s.toml"))
    assert str(info.value).startswith(f"s.toml: integration[0].notify.{where}: ")
    assert message in str(info.value)


class TestWebhookConformance(NotifierConformance):
    @pytest.fixture
    def notifier(self, receiver: Receiver, host: PluginHost) -> Notifier:
        return webhook(host, receiver.url, secret=SECRET)

    @pytest.fixture
    def delivered(self, receiver: Receiver) -> Any:
        return lambda: [r.body for r in receiver.requests]

    def delivered_text(self, payload: bytes | str) -> str:
        # The body is ASCII JSON (non-ASCII as \uXXXX): decode it to search the text.
        return json.dumps(json.loads(payload), ensure_ascii=False)


# --------------------------------------------------------------------------- Splunk HEC


class TestHECStreamConformance(StreamSinkConformance):
    """HEC cannot take back a request it accepted: a stream sink, at least once."""

    large_object_size = 64 * 1024  # far above the 2 KiB requests below

    @pytest.fixture
    def sink(self, receiver: Receiver, host: PluginHost) -> Sink:
        return hec(host, receiver.url, max_request_bytes=2048)

    @pytest.fixture
    def received(self, receiver: Receiver) -> Callable[[], bytes]:
        return lambda: b"".join(r.body for r in receiver.requests)


def hec(host: PluginHost, url: str, **options: Any) -> Sink:
    return host.sink("splunk_hec", Options({"url": url, "token": TOKEN, **options}, path="sink"))


def meta(count: int, encoding: str | None = None) -> ObjectMeta:
    return ObjectMeta("acme", "acme", 1, count, count, "json", "application/x-ndjson", encoding)


KEY = "acme/2022/07/15/2022-07-15T085512Z_00000000000000000001-00000000000000000004.json"


def test_hec_sends_a_small_object_in_one_request_at_commit(
    receiver: Receiver, host: PluginHost
) -> None:
    sink = hec(host, receiver.url + "/", sourcetype="_json", index="security")
    data = JSONFormatter().format(events_from_dicts(seed_dicts()))
    with sink.open(KEY, meta(4)) as writer:
        writer.write(data[:50])
        writer.write(data[50:])
        assert receiver.requests == []  # all or nothing while it fits one request
        receipt = writer.commit()
    (req,) = receiver.requests
    assert (req.method, req.path) == ("POST", "/services/collector/raw")
    assert req.query == {"sourcetype": ["_json"], "index": ["security"], "source": [KEY]}
    assert req.headers["authorization"] == f"Splunk {TOKEN}"
    assert req.body == data
    assert (receipt.key, receipt.size) == (KEY, len(data))
    assert receipt.location == f"{receiver.url}/services/collector/raw?{urlencode({'source': KEY})}"
    assert sink.describe() == (
        f"{receiver.url}/services/collector/raw?sourcetype=_json&index=security"
    )


def test_hec_splits_a_large_object_at_line_breaks(receiver: Receiver, host: PluginHost) -> None:
    sink = hec(host, receiver.url, max_request_bytes=1024)
    events = sample_events(60)
    big = events_from_dicts([{**events[0].fields(), "details": "y" * 3000}], first_id=61)
    data = JSONFormatter().format(events + big)
    with sink.open(KEY, meta(61)) as writer:
        for i in range(0, len(data), 700):  # chunks that end mid-line
            writer.write(data[i : i + 700])
        writer.commit()
    bodies = [r.body for r in receiver.requests]
    assert b"".join(bodies) == data
    assert len(bodies) > 15
    for body in bodies:
        assert body.endswith(b"\n")  # whole events only
        assert len(body) <= 1024 or body.count(b"\n") == 1  # only an oversized line exceeds
    assert any(len(b) > 3000 for b in bodies)
    assert {r.query["source"][0] for r in receiver.requests} == {KEY}


def test_hec_decompresses_gzip_objects(receiver: Receiver, host: PluginHost) -> None:
    sink = hec(host, receiver.url)
    data = JSONFormatter().format(sample_events(20))
    packed = gzip.compress(data, mtime=0)
    with sink.open(KEY, meta(20, "gzip")) as writer:
        for i in range(0, len(packed), 100):
            writer.write(packed[i : i + 100])
        receipt = writer.commit()
    assert [r.body for r in receiver.requests] == [data]
    assert receipt.size == len(packed)  # what the pipeline wrote, as for every sink


def test_hec_abort_before_the_limit_sends_nothing(receiver: Receiver, host: PluginHost) -> None:
    sink = hec(host, receiver.url)

    def crash() -> None:
        with sink.open(KEY, meta(4)) as writer:
            writer.write(JSONFormatter().format(sample_events(4)))
            raise OSError("formatter crashed")

    with pytest.raises(OSError, match="formatter crashed"):
        crash()
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        (403, b'{"text":"Invalid token","code":4}', 'HTTP 403: {"text":"Invalid token","code":4}'),
        (400, f'{{"text":"bad token {TOKEN}"}}'.encode(), 'HTTP 400: {"text":"bad token ***"}'),
        (503, b"", "HTTP 503: Service Unavailable"),
        (307, b"", "HTTP 307: Temporary Redirect"),  # the token must not follow a redirect
    ],
)
def test_hec_errors_are_clear_and_keep_the_token_out(
    receiver: Receiver, host: PluginHost, status: int, reply: bytes, expected: str
) -> None:
    sink = hec(host, receiver.url)
    receiver.reply_next(status, reply, headers={"Location": "http://127.0.0.1:9/elsewhere"})

    def ship() -> None:
        with sink.open(KEY, meta(4)) as writer:
            writer.write(JSONFormatter().format(sample_events(4)))
            writer.commit()

    with pytest.raises(RuntimeError) as info:
        ship()
    assert type(info.value).__name__ == "HECError"
    assert str(info.value) == f"{receiver.url}/services/collector/raw: {expected}"
    assert TOKEN not in str(info.value)
    assert len(receiver.requests) == 1


def test_hec_probe_checks_url_and_token(receiver: Receiver, host: PluginHost) -> None:
    sink = hec(host, receiver.url)
    receiver.reply_next(400, b'{"text":"No data","code":5}')  # valid token, empty request
    sink.probe()
    assert receiver.requests[0].body == b""
    assert receiver.requests[0].headers["authorization"] == f"Splunk {TOKEN}"
    receiver.reply_next(403, b'{"text":"Invalid token","code":4}')
    with pytest.raises(RuntimeError, match="Invalid token"):
        sink.probe()
    with pytest.raises(RuntimeError, match=r"[Rr]efused"):
        hec(host, f"http://127.0.0.1:{closed_port()}").probe()


def test_hec_config_errors_are_located(host: PluginHost) -> None:
    def error(table: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            host.sink("splunk_hec", Options(table, path="sink", file="s.toml"))
        return str(info.value)

    assert error({"url": "https://s:8088"}).startswith("s.toml: sink.token: missing required")
    assert error({"url": "s:8088", "token": "t"}).startswith("s.toml: sink.url: expected an http")
    assert "at least 1024" in error({"url": "https://s", "token": "t", "max_request_bytes": 10})


# --------------------------------------------------------------------------- both, in a sync


def test_both_examples_in_a_real_sync(tmp_path: Path, receiver: Receiver, host: PluginHost) -> None:
    store = SQLiteStore(tmp_path / "siem.db")
    dicts = seed_dicts() + [e.fields() for e in sample_events(150, seed=4)]
    ingest(store, "acme", dicts)
    store.close()
    raw = {
        "store": {"url": f"sqlite:///{tmp_path / 'siem.db'}"},
        "integration": [
            {
                "name": "acme",
                "format": "json",
                "compression": "gzip",
                "max_events": 100,
                "sink": {
                    "type": "splunk_hec",
                    "url": receiver.url,
                    "token": TOKEN,
                    "max_request_bytes": 4096,
                },
                "notify": {
                    "type": "webhook",
                    "url": f"{receiver.url}/webhook",
                    "secret": SECRET,
                    "events": ["exempt_all", "config"],
                },
            }
        ],
    }
    rt = Runtime(config_from_dict(raw, file="siem.toml"), host)
    try:
        result = Pipeline(rt).sync(rt.integrations[0])
    finally:
        rt.close()
    assert result.ok, result.errors
    assert [r.meta.count for r in result.objects] == [100, 54]
    hec_requests = [r for r in receiver.requests if r.path == "/services/collector/raw"]
    shipped = b"".join(r.body for r in hec_requests)
    assert shipped == JSONFormatter().format(events_from_dicts(dicts))  # in order, once
    sources = [r.query["source"][0] for r in hec_requests]
    assert list(dict.fromkeys(sources)) == [o.key for o in result.objects]  # object by object
    (hook,) = [r for r in receiver.requests if r.path == "/webhook"]
    body = json.loads(hook.body)
    selected = [d for d in dicts if d["log_type"] in ("exempt_all", "config")]
    assert body["total"] == len(selected) and body["first_id"] == 1 and body["last_id"] == 154
    assert body["listed"] == min(len(selected), 50)  # the webhook's default max_listed
    assert [e["fields"] for e in body["events"]] == selected[:50]
    mac = hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-siem-signature"] == f"sha256={mac}"


# --------------------------------------------------------------------------- the package


CSV_COLUMNS = (
    "id",
    "timestamp",
    "type",
    "log_type",
    "device_name",
    "device_id",
    "device_group",
    "device_username",
    "last_seen",
    "admin_name",
    "admin_email",
    "event",
    "details",
)


def _builds_wheels_offline() -> bool:
    """Whether setuptools in *this* interpreter can build a wheel without fetching
    anything: from 70.1 it has bdist_wheel built in; before, it needs ``wheel``."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(p) for p in version.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _site_dirs() -> list[str]:
    """Where this interpreter finds installed packages, in its own order: the venv's
    site-packages, and the base interpreter's when the venv sees system packages."""
    stdlib = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    return [
        p
        for p in sys.path
        if p
        and Path(p).is_dir()
        and Path(p).name in ("site-packages", "dist-packages")
        and p not in stdlib
    ]


def _copy_tree(src: Path, dst: Path) -> None:
    # Builds write build/ and *.egg-info beside the sources: build from copies.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))


@pytest.mark.slow
def test_example_package_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    src, example, venv = tmp_path / "siem-plugins", tmp_path / "example", tmp_path / "venv"
    _copy_tree(REPO / "siem_plugins", src / "siem_plugins")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _copy_tree(REPO / "docs", src / "docs")
    _copy_tree(REPO / "deploy", src / "deploy")  # data files setup.cfg installs
    _copy_tree(EXAMPLE, example)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "COLUMNS": "160"}
    env.pop("SIEM_CONFIG", None)

    # 1. Build both wheels with *this* interpreter, the one whose setuptools was just
    #    checked (a nested venv would see another one: the base interpreter's).
    #    Without a wheel-capable setuptools here, pip fetches one for an isolated build.
    isolation = ["--no-build-isolation"] if _builds_wheels_offline() else []
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
         "--wheel-dir", str(wheels), str(src), str(example)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["siem_plugins", "siem_plugins_example"]

    # 2. A fresh environment holding neither package. It finds their dependencies
    #    (and pip, and pytest) where this interpreter finds them, through a .pth file
    #    of plain paths: nothing is downloaded, and the .pth files of those folders
    #    (this checkout's editable install among them) are not run, so the installed
    #    wheels are the only siem_plugins it can import.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python, command = venv / "bin" / "python", venv / "bin" / "siem-plugins"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "zz_outer_site.pth").write_text("\n".join(_site_dirs()) + "\n")

    # 3. Install the wheels: no build step, no index, whatever else is visible.
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--ignore-installed", *map(str, built)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert command.exists()
    where = subprocess.run(
        [str(python), "-c", "import siem_plugins; print(siem_plugins.__file__)"],
        check=True, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(command), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    # The user guide is installed with the package, and --help names where it is.
    help_text = run("--help").stdout
    docs = Path(help_text.split("documentation: ", 1)[1].split()[0])
    assert docs.is_relative_to(venv) and docs.is_dir(), help_text
    shipped = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {p.name for p in docs.glob("*.md")} == shipped
    assert (docs / "configuration.md").read_text() == (REPO / "docs/configuration.md").read_text()

    listing = json.loads(run("plugins", "--json").stdout)
    assert listing["failures"] == []
    (plugin,) = [p for p in listing["plugins"] if p["name"] == "example"]
    assert plugin["origin"] == "package siem-plugins-example 0.1.0"
    assert plugin["version"] == "0.1.0"
    assert plugin["provides"] == [
        {
            "kind": "formatter",
            "name": "csv",
            "description": "CSV, one record per event, fixed columns (columns = [...]), no header",
        }
    ]
    assert plugin["hooks"] == ["siem_register_formatters"]

    (tmp_path / "siem.toml").write_text(
        f"""
[store]
url = "sqlite:///{tmp_path}/siem.db"

[[integration]]
name = "acme"
format = "csv"
compression = "none"
sink = {{ type = "local", path = "{tmp_path}/bucket" }}
notify = {{ type = "outbox", path = "{tmp_path}/outbox", from = "siem@example.com", to = ["admin@example.com"], events = ["exempt_all", "config"] }}
"""
    )
    run("ingest", "--account", "acme", "-c", "siem.toml", str(SEED))
    sync = run("sync", "-c", "siem.toml")
    assert "acme: ok: 1 objects, 4 events, 1 digests" in sync.stdout
    (obj,) = (tmp_path / "bucket").rglob("*.csv")
    assert obj.name.endswith("_00000000000000000001-00000000000000000004.csv")
    rows = list(csv.reader(obj.read_text().splitlines()))
    assert rows == [
        [str(i), *(d.get(column, "") for column in CSV_COLUMNS[1:])]
        for i, d in enumerate(seed_dicts(), 1)
    ]

    # The package's own tests, which subclass FormatterConformance, pass where it is
    # installed (run from elsewhere, so the installed copy is the one imported).
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "13 passed" in tests.stdout
