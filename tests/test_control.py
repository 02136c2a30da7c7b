"""Integrations kept as data: one validation path with siem.toml, probed before a save,
secrets sealed at rest and rotated, nothing half-saved, a ``config`` event per change;
and ``run`` picking changes up at its next tick, against real S3 (moto over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.control.secrets import SecretBox, generate_key
from siem_plugins.control.service import Actor, SaveRefused, config_event, save
from siem_plugins.control.store import VersionConflict, open_control
from siem_plugins.events import canonicalize
from siem_plugins.storage import SQLiteStore, open_store
from siem_plugins.testing.s3server import S3Server
from tests.helpers import runtime

ADMIN = Actor("Jane Admin", "jane@globex.example")


def toml_integration(tmp_path: Path) -> dict[str, Any]:
    return {
        "name": "from-toml",
        "account": "acme",
        "format": "json",
        "sink": {"type": "local", "path": str(tmp_path / "toml-out")},
        "notify": {
            "type": "outbox",
            "path": str(tmp_path / "outbox"),
            "from": "s@example.com",
            "to": ["a@example.com"],
            "events": ["config"],
        },
    }


def customer(s3_server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    # A secret of its own (moto accepts any): "testing" is also the access key id.
    sink = s3_server.sink_options(
        bucket, prefix="siem/", secret_access_key="wJalrXUtnFEMI-K7MDENG-bPxRfiCY-42"
    )
    return {
        "name": "globex-siem",
        "account": "globex",
        "format": "syslog",
        "sink": sink,
        "notify": {
            "type": "outbox",
            "path": "/tmp/unused-outbox",
            "from": "s@example.com",
            "to": ["soc@globex.example"],
            "events": ["config", "exempt_all"],
        },
        **extra,
    }


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made = [generate_key()]
    monkeypatch.setenv("SIEM_SECRET_KEYS", made[0])
    monkeypatch.delenv("SIEM_SECRET_KEYS_FILE", raising=False)
    return made


@pytest.fixture
def rt(tmp_path: Path, keys: list[str]) -> Iterator[Any]:
    built = runtime(tmp_path / "s.db", [toml_integration(tmp_path)])
    yield built
    built.close()


def raw_documents(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return "\n".join(r[0] for r in conn.execute("SELECT document FROM siem_integration"))


def test_a_save_is_sealed_probed_stored_and_recorded(
    rt: Any, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    doc = customer(s3_server, s3_bucket)
    secret = doc["sink"]["secret_access_key"]
    saved = save(rt, doc, actor=ADMIN)
    assert (saved.name, saved.account, saved.version, saved.enabled) == (
        "globex-siem",
        "globex",
        1,
        True,
    )
    assert saved.updated_by == "Jane Admin <jane@globex.example>"
    # At rest: no secret in clear, not even in the database file's bytes.
    raw = raw_documents(tmp_path / "s.db")
    assert secret not in raw and "fernet:" in raw
    assert secret.encode() not in (tmp_path / "s.db").read_bytes()
    # The change is the account's own event, as the documentation's example shows it.
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        (batch,) = store.read("globex", 1, 10**9)  # type: ignore[attr-defined]
    finally:
        store.close()
    (event,) = batch
    body = json.loads(event.raw)
    assert event.log_type == "config" and body["type"] == "Account"
    assert body["details"] == (
        "Administrator Jane Admin (jane@globex.example) changed Settings - Integrations - "
        "SIEM Integration "
    )
    assert (body["admin_name"], body["admin_email"], body["event"]) == (
        "Jane Admin",
        "jane@globex.example",
        "Configuration Change",
    )
    # The runtime picks it up, with the secret unsealed for its sink.
    assert rt.refresh()
    assert [i.name for i in rt.integrations] == ["from-toml", "globex-siem"]
    assert rt.integration("globex-siem").version == 1
    assert not rt.refresh()  # nothing changed: nothing rebuilt


def test_invalid_settings_are_refused_by_field_with_the_configs_messages(
    rt: Any, s3_server: S3Server, s3_bucket: str
) -> None:
    def refused(doc: dict[str, Any]) -> list[tuple[str, str]]:
        with pytest.raises(SaveRefused) as caught:
            save(rt, doc, actor=ADMIN)
        return [(e.field, e.message) for e in caught.value.errors]

    good = customer(s3_server, s3_bucket)
    no_events = {**good, "notify": {**good["notify"], "events": []}}
    ((field, message),) = refused(no_events)
    assert field == "notify.events" and "select at least one event type" in message
    typo = {**good, "sink": {**good["sink"], "bukket": "x"}}
    ((field, message),) = refused(typo)
    assert field == "sink.bukket" and "unknown setting 'bukket'" in message
    ((field, message),) = refused({**good, "format": "xml"})
    assert field == "format" and "xml" in message
    # The name of an integration of the config file is taken.
    ((field, message),) = refused({**good, "name": "from-toml"})
    assert field == "name" and "taken by an integration of test.toml" in message
    # The probe: a bucket that does not exist is refused before anything is stored.
    missing = {**good, "sink": {**good["sink"], "bucket": "no-such-bucket"}}
    ((field, message),) = refused(missing)
    assert field == "sink" and "NoSuchBucket" in message
    assert rt.control.list() == [] and rt.control.generation() == 0


def test_two_integrations_may_not_write_the_same_keys(
    rt: Any, s3_server: S3Server, s3_bucket: str
) -> None:
    save(rt, customer(s3_server, s3_bucket), actor=ADMIN)
    rt.refresh()
    twin = {**customer(s3_server, s3_bucket), "name": "globex-twin"}
    with pytest.raises(SaveRefused, match=r"already ships account 'globex' as \.log\.gz"):
        save(rt, twin, actor=ADMIN)
    save(rt, {**twin, "sink": {**twin["sink"], "prefix": "twin/"}}, actor=ADMIN)


def test_secrets_are_write_only_and_rotate_to_a_new_key(
    rt: Any,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    keys: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = customer(s3_server, s3_bucket)
    save(rt, doc, actor=ADMIN)
    # A save without the secret (a form never shows it) keeps the stored one.
    again = {**doc, "sink": {k: v for k, v in doc["sink"].items() if k != "secret_access_key"}}
    second = save(rt, again, actor=ADMIN, expected_version=1)
    assert second.version == 2 and second.document["sink"]["secret_access_key"].startswith(
        "fernet:"
    )
    with pytest.raises(VersionConflict, match="at version 2, not 1"):
        save(rt, again, actor=ADMIN, expected_version=1)
    # Rotation: a new key first, the old one after it; `secrets rotate` re-encrypts.
    new = generate_key()
    env = {**os.environ, "SIEM_SECRET_KEYS": f"{new},{keys[0]}"}
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    run = [sys.executable, "-m", "siem_plugins", "secrets", "rotate", "-c", str(cfg)]
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1 secrets re-encrypted with the newest key, 0 were already" in out.stdout
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert "0 secrets re-encrypted with the newest key, 1 were already" in out.stdout
    # The old key can go: the new one alone opens the stored secret.
    monkeypatch.setenv("SIEM_SECRET_KEYS", new)
    only_new = runtime(tmp_path / "s.db", [])
    try:
        (integ,) = only_new.integrations
        assert integ.name == "globex-siem"
        integ.sink.probe()  # it authenticates with the unsealed secret
    finally:
        only_new.close()
    # Without any key the stored integration is left out, with the reason; the rest runs.
    monkeypatch.setenv("SIEM_SECRET_KEYS", generate_key())
    wrong = runtime(tmp_path / "s.db", [toml_integration(tmp_path)])
    try:
        assert [i.name for i in wrong.integrations] == ["from-toml"]
    finally:
        wrong.close()


def test_a_secret_cannot_be_stored_without_keys(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIEM_SECRET_KEYS", raising=False)
    monkeypatch.delenv("SIEM_SECRET_KEYS_FILE", raising=False)
    rt = runtime(tmp_path / "s.db", [])
    try:
        with pytest.raises(SaveRefused, match="no key is configured: set SIEM_SECRET_KEYS"):
            save(rt, customer(s3_server, s3_bucket), actor=ADMIN)
        assert rt.control.list() == []
    finally:
        rt.close()


def test_the_config_event_matches_the_documentations_example() -> None:
    from datetime import UTC, datetime

    event = config_event(
        Actor("Phuong Weekly 1", "phuongphweekly@gmail.com"),
        datetime(2022, 7, 15, 11, 19, 41, 629000, tzinfo=UTC),
    )
    seed = Path(__file__).parent / "data" / "seed_events.ndjson"
    example = next(
        json.loads(line) for line in seed.read_text().splitlines() if '"log_type": "config"' in line
    )
    assert list(event) == list(example)  # the same fields, in the same order
    assert {k: v for k, v in event.items() if k != "details"} == {
        k: v for k, v in example.items() if k != "details"
    }
    assert event["details"].endswith("changed Settings - Integrations - SIEM Integration ")
    assert canonicalize(event).log_type == "config"


def test_the_control_store_on_postgresql(pg_url: str, keys: list[str]) -> None:
    control = open_control(pg_url)
    try:
        box = SecretBox(keys)
        doc = {"name": "a", "account": "acme", "sink": {"password": box.encrypt("pw")}}
        first = control.put(doc, updated_by="t", expected_version=0)
        assert (first.version, control.generation()) == (1, 1)
        with pytest.raises(VersionConflict):
            control.put(doc, updated_by="t", expected_version=0)
        disabled = control.set_enabled("a", False, updated_by="t")
        assert (disabled.version, disabled.enabled, control.generation()) == (2, False, 2)
        assert [s.name for s in control.list("acme")] == ["a"] and control.list("x") == []
        assert control.reseal(SecretBox([generate_key(), *keys])) == (1, 0)
        assert control.delete("a") and not control.delete("a")
        assert control.generation() == 3 and control.get("a") is None
    finally:
        control.close()


# --------------------------------------------------------------------------- hot reload


def wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_picks_up_added_changed_disabled_and_deleted_integrations(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any, keys: list[str]
) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    store.append("globex", [canonicalize(e) for e in siem_events(50)])
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'interval = "1s"\n[store]\nurl = "sqlite:///{db}"\n')
    env = {**os.environ, "SIEM_SECRET_KEYS": keys[0]}
    cli = [sys.executable, "-m", "siem_plugins"]
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [*cli, "run", "-c", str(cfg)], stderr=log, env=env, start_new_session=True
    )
    client = s3_server.client()

    def keys_under(prefix: str) -> list[str]:
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    def put(doc: dict[str, Any], *extra: str) -> float:
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(doc))
        out = subprocess.run(
            [*cli, "integrations", "put", str(path), "-c", str(cfg), "--admin-name", "Ops",
             "--admin-email", "ops@example.com", *extra],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return time.monotonic()

    try:
        saved_at = put(customer(s3_server, s3_bucket))
        wait_for(lambda: keys_under("siem/globex/"), 15, "the new integration's first object")
        latency = time.monotonic() - saved_at
        # Its own config event ships too (51 events: the 50 and the save).
        # A change of prefix applies from the next object.
        put(customer(s3_server, s3_bucket, **{"sink": {**customer(s3_server, s3_bucket)["sink"],
                                                       "prefix": "moved/"}}))  # fmt: skip
        wait_for(lambda: keys_under("moved/globex/"), 15, "an object under the new prefix")
        # Disabled: no more objects, though events (its own config events) arrive.
        before = len(keys_under("moved/"))
        doc = customer(s3_server, s3_bucket, enabled=False)
        doc["sink"]["prefix"] = "moved/"
        put(doc)
        store.append("globex", [canonicalize(e) for e in siem_events(5, seed=9)])
        time.sleep(3)
        assert len(keys_under("moved/")) == before
        # Deleted: the same.
        out = subprocess.run(
            [*cli, "integrations", "delete", "globex-siem", "-c", str(cfg)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        time.sleep(2)
        assert len(keys_under("moved/")) == before
        assert proc.poll() is None  # never restarted
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        store.close()
    text = (tmp_path / "run.log").read_text()
    assert "stored integrations: 1 in use (1 added" in text
    assert "(0 added, 1 changed" in text and "1 removed: globex-siem" in text
    assert latency < 5, latency
    print(f"reload latency: {latency:.2f}s")
