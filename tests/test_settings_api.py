"""The settings API, served by ``siem-plugins serve`` as users run it, against real S3
(moto over HTTP) and SMTP (aiosmtpd): an account's integration read, saved, enabled,
disabled, tested and deleted; every refusal located by field; its OpenAPI description
valid; and every route tried as an adversary would (no token, a garbage token, a revoked
one, a right id with a wrong secret, another account's token): all refused, nothing
changed, nothing leaked, not even whether another account exists."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siem_plugins.control.secrets import generate_key
from siem_plugins.control.store import open_control
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-secret-77"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"


class Server:
    """``siem-plugins serve`` in a subprocess, with its config, keys and tokens."""

    def __init__(self, tmp: Path, s3: S3Server, smtp: SMTPServer) -> None:
        self.tmp = tmp
        self.db = tmp / "siem.db"
        self.cfg = tmp / "siem.toml"
        self.cfg.write_text(
            f'[store]\nurl = "sqlite:///{self.db}"\n'
            f'[s3]\nendpoint_url = "{s3.endpoint_url}"\nregion = "{s3.region}"\n'
            f'[smtp]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "none"\n'
            f'from = "SIEM <siem@example.com>"\ntimeout = 5\n'
            f'client_hostname = "siem-test.example"\n'
        )
        self.env = {**os.environ, "SIEM_SECRET_KEYS": generate_key()}
        self.log = tmp / "serve.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "siem_plugins", "serve", "-c", str(self.cfg), "--port", "0"],
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"serving on (http://\S+)", self.log.read_text())
            if found:
                self.url = found.group(1)
                break
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not start: " + self.log.read_text())
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(self.cfg)],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def token(self, account: str | None, name: str = "Jane Admin") -> str:
        scope = ["--account", account] if account else ["--operator"]
        out = self.cli(
            "tokens", "create", *scope, "--admin-name", name, "--admin-email", "jane@x.example"
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.request(method, path, headers=headers, json=body)

    def state(self) -> tuple[int, list[Any]]:
        control = open_control(f"sqlite:///{self.db}")
        try:
            return control.generation(), control.list()
        finally:
            control.close()

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path, s3_server: S3Server, smtp_server: SMTPServer) -> Iterator[Server]:
    started = Server(tmp_path, s3_server, smtp_server)
    yield started
    started.stop()


def document(bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "format": "json",
        "sink": {
            "type": "s3",
            "bucket": bucket,
            "prefix": "siem/",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET,
        },
        "notify": {
            "type": "email",
            "to": ["soc@acme.example"],
            "events": ["exempt_all", "config"],
        },
        **extra,
    }


def test_an_account_manages_its_integration_through_the_api(
    server: Server, s3_server: S3Server, s3_bucket: str, smtp_server: SMTPServer
) -> None:
    token = server.token("acme")
    assert server.call("GET", "/api/v1/accounts/acme/integration", token).status_code == 404
    saved = server.call("PUT", "/api/v1/accounts/acme/integration", token,
                        {"document": document(s3_bucket), "expected_version": 0})  # fmt: skip
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert (body["name"], body["account"], body["version"], body["enabled"]) == (
        "acme", "acme", 1, True
    )  # fmt: skip
    assert body["document"]["sink"]["secret_access_key"] == "set"
    assert body["document"]["sink"]["access_key_id"] == "AKIA…MPLE"
    read = server.call("GET", "/api/v1/accounts/acme/integration", token)
    assert read.json() == body and SECRET not in read.text and ACCESS_KEY not in read.text
    # The change is the account's config event, signed by the token's administrator.
    events = server.call("GET", "/api/v1/event-types", token).json()
    assert {"log_type": "config", "type": "Account"}.items() <= next(
        e for e in events if e["log_type"] == "config"
    ).items()
    assert {e["type"] for e in events} == {"Device", "Account"}
    assert all(e["description"] for e in events)
    # The two tests reach the real bucket and the real mail server.
    obj = server.call("POST", "/api/v1/accounts/acme/integration/test-object", token)
    assert obj.status_code == 200, obj.text
    key = obj.json()["location"].split(f"s3://{s3_bucket}/", 1)[1]
    assert key.startswith("siem/acme/test/")
    s3_server.client().head_object(Bucket=s3_bucket, Key=key)
    mail = server.call("POST", "/api/v1/accounts/acme/integration/test-email", token)
    assert mail.status_code == 200, mail.text
    assert [m.rcpt_tos for m in smtp_server.messages] == [["soc@acme.example"]]
    # A save without the secret keeps it; a stale version is refused.
    keep = document(s3_bucket)
    del keep["sink"]["secret_access_key"]
    assert server.call("PUT", "/api/v1/accounts/acme/integration", token,
                       {"document": keep, "expected_version": 1}).json()["version"] == 2  # fmt: skip
    stale = server.call("PUT", "/api/v1/accounts/acme/integration", token,
                        {"document": keep, "expected_version": 1})  # fmt: skip
    assert stale.status_code == 409
    off = server.call("POST", "/api/v1/accounts/acme/integration/disable", token)
    assert off.status_code == 200 and off.json()["enabled"] is False
    health = server.call("GET", "/api/v1/accounts/acme/integration/health", token).json()
    assert {d["destination"] for d in health["destinations"]} == {"sink", "notifier"}
    assert all(d["state"] == "disabled" for d in health["destinations"])
    assert server.call("DELETE", "/api/v1/accounts/acme/integration", token).status_code == 204
    assert server.call("GET", "/api/v1/accounts/acme/integration", token).status_code == 404
    log = server.log.read_text()
    assert SECRET not in log and token not in log


def test_refusals_name_the_field_and_store_nothing(server: Server, s3_bucket: str) -> None:
    token = server.token("acme")
    before = server.state()

    def refused(body: Any, status: int = 422) -> list[dict[str, str]]:
        got = server.call("PUT", "/api/v1/accounts/acme/integration", token, body)
        assert got.status_code == status, got.text
        errors: list[dict[str, str]] = got.json()["errors"]
        return errors

    no_events = document(s3_bucket)
    no_events["notify"]["events"] = []
    (e,) = refused({"document": no_events})
    assert e["field"] == "notify.events" and "at least one event" in e["message"]
    (e,) = refused({"document": document(s3_bucket, format="xml")})
    assert e["field"] == "format"
    (e,) = refused({"document": document("no-such-bucket-here")})
    assert e["field"] == "sink" and "NoSuchBucket" in e["message"]
    (e,) = refused({"document": {**document(s3_bucket), "account": "globex"}})
    assert e["field"] == "account"
    (e,) = refused({"nothing": 1})
    assert "expected {document" in e["message"]
    huge = {"document": document(s3_bucket, comment="x" * 100_000)}
    refused(huge, 413)
    bad = server.http.put("/api/v1/accounts/acme/integration", content=b"{not json",
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["errors"][0]["message"] == "the body is not JSON"
    assert server.state() == before


ROUTES = [
    ("GET", "/api/v1/accounts/{account}/integration", None),
    ("PUT", "/api/v1/accounts/{account}/integration", "doc"),
    ("POST", "/api/v1/accounts/{account}/integration/enable", None),
    ("POST", "/api/v1/accounts/{account}/integration/disable", None),
    ("GET", "/api/v1/accounts/{account}/integration/health", None),
    ("POST", "/api/v1/accounts/{account}/integration/test-object", None),
    ("POST", "/api/v1/accounts/{account}/integration/test-email", None),
    ("DELETE", "/api/v1/accounts/{account}/integration", None),
]


def test_every_route_refuses_everyone_but_the_accounts_own_tokens(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    acme = server.token("acme")
    globex = server.token("globex", name="Mallory")
    operator = server.token(None, name="Ops")
    revoked = server.token("acme", name="Former Admin")
    revoked_id = revoked.split("_")[1]
    assert server.cli("tokens", "revoke", revoked_id).returncode == 0
    wrong_secret = re.sub(r"_[^_]+$", "_" + "A" * 43, acme)
    saved = server.call("PUT", "/api/v1/accounts/acme/integration", acme,
                        {"document": document(s3_bucket)})  # fmt: skip
    assert saved.status_code == 200, saved.text
    before = server.state()
    objects_before = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount")
    for method, template, body in ROUTES:
        payload = {"document": document(s3_bucket)} if body else None
        path = template.format(account="acme")
        for token in (None, "garbage", "Bearer x", revoked, wrong_secret, acme + "x", "basic"):
            if token == "basic":  # another scheme, the right token
                got = server.http.request(
                    method, path, json=payload, headers={"Authorization": f"Basic {acme}"}
                )
            else:
                got = server.call(method, path, token, payload)
            assert got.status_code == 401, (method, path, token, got.text)
            assert got.headers["www-authenticate"] == "Bearer"
            assert "acme" not in got.text and SECRET not in got.text
        # Another account's token: exactly what a missing account answers.
        theirs = server.call(method, path, globex, payload)
        missing = server.call(method, template.format(account="nobody-here"), globex, payload)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert (theirs.status_code, theirs.text) == (missing.status_code, missing.text)
        assert theirs.headers.get("content-length") == missing.headers.get("content-length")
    assert server.state() == before  # nothing changed by any refused request
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == objects_before
    # The operator's token touches any account; the account's own, its own.
    assert server.call("GET", "/api/v1/accounts/acme/integration", operator).status_code == 200
    assert server.call("GET", "/api/v1/accounts/acme/integration", acme).status_code == 200
    assert server.call("GET", "/api/v1/event-types", None).status_code == 401


def test_the_openapi_description_is_valid_and_complete(server: Server) -> None:
    from openapi_spec_validator import validate

    spec = server.http.get("/openapi.json").json()
    validate(spec)
    operations = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete")
    }
    assert operations == {(m, p) for m, p, _ in ROUTES} | {("GET", "/api/v1/event-types")}
    for (method, path), op in (
        ((m.upper(), p), o) for p, item in spec["paths"].items() for m, o in item.items()
    ):
        assert op.get("description") or op.get("summary"), (method, path)
        assert "401" in op["responses"] and "404" in op["responses"], (method, path)
    put = spec["paths"]["/api/v1/accounts/{account}/integration"]["put"]
    assert "nothing is saved" in put["description"].lower()
    # Served as JSON with the security headers of every answer.
    got = server.http.get("/openapi.json")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in got.headers["content-security-policy"]


def test_tokens_are_kept_only_as_digests(server: Server) -> None:
    token = server.token("acme")
    raw = server.db.read_bytes()
    secret_part = token.split("_", 2)[2]
    assert secret_part.encode() not in raw
    listed = json.loads(server.cli("tokens", "list", "--json").stdout)
    assert [t["account"] for t in listed] == ["acme"] and "digest" not in listed[0]
    assert token not in server.cli("tokens", "list").stdout


def test_an_account_cannot_point_the_server_elsewhere(
    server: Server, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Where the shipper connects is the operator's: a customer who could set
    endpoint_url, a local folder or an SMTP host could aim the server's own requests at
    internal addresses, or write to its disk."""
    token = server.token("acme")
    before = server.state()
    hostile = [
        (document(s3_bucket, sink={"type": "local", "path": str(tmp_path / "x")}), "sink"),
        (
            {
                **document(s3_bucket),
                "sink": {**document(s3_bucket)["sink"], "endpoint_url": "http://169.254.169.254/"},
            },
            "sink.endpoint_url",
        ),
        (
            {
                **document(s3_bucket),
                "notify": {**document(s3_bucket)["notify"], "host": "10.0.0.1"},
            },
            "notify.host",
        ),
        ({**document(s3_bucket), "plugins_dir": "/tmp"}, "plugins_dir"),
        (document(s3_bucket, format={"type": "syslog", "hostname": "x"}), "format"),
    ]
    for doc, field in hostile:
        got = server.call("PUT", "/api/v1/accounts/acme/integration", token, {"document": doc})
        assert got.status_code == 422, got.text
        assert field in [e["field"] for e in got.json()["errors"]], got.text
    assert server.state() == before
    assert not (tmp_path / "x").exists()
    # The operator may (here: its own endpoint, explicitly).
    operator = server.token(None, name="Ops")
    doc = {**document(s3_bucket), "sink": {**document(s3_bucket)["sink"],
           "endpoint_url": s3_server.endpoint_url}}  # fmt: skip
    got = server.call("PUT", "/api/v1/accounts/acme/integration", operator, {"document": doc})
    assert got.status_code == 200, got.text


def test_a_save_stuck_on_one_customers_bucket_never_holds_up_anothers(
    server: Server, s3_bucket: str
) -> None:
    """One bad server must never stop other tenants: a probe that hangs on a silent
    endpoint (the operator gave one account its own) keeps only that account waiting."""
    import threading

    from siem_plugins.testing.netfaults import Tarpit

    operator = server.token(None, name="Ops")
    globex = server.token("globex")
    with Tarpit("silent") as hole:
        stuck = {**document(s3_bucket), "sink": {**document(s3_bucket)["sink"],
                 "endpoint_url": hole.url, "max_attempts": 1, "read_timeout": 4}}  # fmt: skip
        waiting: dict[str, Any] = {}

        def save_stuck() -> None:
            waiting["response"] = server.call(
                "PUT", "/api/v1/accounts/acme/integration", operator, {"document": stuck}
            )

        thread = threading.Thread(target=save_stuck)
        thread.start()
        time.sleep(0.5)  # the stuck probe is under way
        started = time.monotonic()
        got = server.call("PUT", "/api/v1/accounts/globex/integration", globex,
                          {"document": document(s3_bucket)})  # fmt: skip
        took = time.monotonic() - started
        assert got.status_code == 200, got.text
        assert thread.is_alive(), waiting["response"].text if waiting else ""
        assert took < 5, took
        thread.join(timeout=120)
    assert waiting["response"].status_code == 422
    assert waiting["response"].json()["errors"][0]["field"] == "sink"


def test_a_document_read_and_sent_back_keeps_its_secret_and_key_id(
    server: Server, s3_bucket: str
) -> None:
    """GET shows "set" and a shortened access key id; a client that sends the document
    back as it read it must not overwrite them with what it was shown."""
    from siem_plugins.control.secrets import SecretBox

    token = server.token("acme")
    first = server.call("PUT", "/api/v1/accounts/acme/integration", token,
                        {"document": document(s3_bucket)})  # fmt: skip
    assert first.status_code == 200, first.text
    read = server.call("GET", "/api/v1/accounts/acme/integration", token).json()
    assert read["document"]["sink"]["secret_access_key"] == "set"
    again = server.call("PUT", "/api/v1/accounts/acme/integration", token,
                        {"document": read["document"], "expected_version": read["version"]})  # fmt: skip
    assert again.status_code == 200, again.text
    _, (stored,) = server.state()
    box = SecretBox([server.env["SIEM_SECRET_KEYS"]])
    assert box.decrypt(stored.document["sink"]["secret_access_key"]) == SECRET
    assert stored.document["sink"]["access_key_id"] == ACCESS_KEY


def test_an_account_writes_only_with_its_own_credentials(server: Server, s3_bucket: str) -> None:
    """Without a key of its own, the sink would use the server's (its role, its
    environment) on whatever bucket the account names: refused, by field."""
    token = server.token("acme")
    doc = document(s3_bucket)
    del doc["sink"]["access_key_id"], doc["sink"]["secret_access_key"]
    got = server.call("PUT", "/api/v1/accounts/acme/integration", token, {"document": doc})
    assert got.status_code == 422
    assert sorted(e["field"] for e in got.json()["errors"]) == [
        "sink.access_key_id", "sink.secret_access_key"
    ]  # fmt: skip
    assert server.state()[1] == []


def test_an_account_may_keep_but_not_change_what_the_operator_set(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    """The operator gave the account its own endpoint: the account's saves carry it over
    unchanged (as the page does), and may not change it."""
    operator = server.token(None, name="Ops")
    acme = server.token("acme")
    doc = document(s3_bucket)
    doc["sink"]["endpoint_url"] = s3_server.endpoint_url
    got = server.call("PUT", "/api/v1/accounts/acme/integration", operator, {"document": doc})
    assert got.status_code == 200, got.text
    kept = {**doc, "notify": {**doc["notify"], "events": ["config"]}}
    got = server.call("PUT", "/api/v1/accounts/acme/integration", acme, {"document": kept})
    assert got.status_code == 200, got.text
    changed = {**kept, "sink": {**kept["sink"], "endpoint_url": "http://169.254.169.254/"}}
    got = server.call("PUT", "/api/v1/accounts/acme/integration", acme, {"document": changed})
    assert got.status_code == 422
    assert [e["field"] for e in got.json()["errors"]] == ["sink.endpoint_url"]
    _, (stored,) = server.state()
    assert stored.document["sink"]["endpoint_url"] == s3_server.endpoint_url
