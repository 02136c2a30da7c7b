"""``ocsf`` and ``ecs`` end to end, as users run them (the CLI in a subprocess) against
moto's S3 over HTTP: the spec's JSON and both new formats of one account in one bucket
and prefix, ``verify --deep`` clean for each, the stable event id the same after a
replay, an event the formatter cannot read set aside while the rest ships."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.builtin.eventid import event_id
from siem_plugins.config import config_from_dict
from siem_plugins.host import create_host
from siem_plugins.keys import parse_key
from siem_plugins.options import ConfigError
from siem_plugins.runtime import Runtime
from siem_plugins.storage import open_store
from siem_plugins.testing.s3server import S3Server
from tests.helpers import ingest
from tests.structured import every_log_type
from tests.test_ecs import ecs_errors
from tests.test_ocsf import schema_errors

REPO = Path(__file__).resolve().parents[1]
PREFIX = "siem/"
FORMATS = {"acme-json": "json", "acme-ocsf": "ocsf", "acme-ecs": {"type": "ecs", "original": False}}
EXTENSIONS = {"acme-json": "json.gz", "acme-ocsf": "ocsf.json.gz", "acme-ecs": "ecs.json.gz"}


def test_event_id_is_the_shared_definition() -> None:
    """The definition every structured format shares (CEF, LEEF, OCSF, ECS): the first 32
    hex characters of SHA-256 over account, NUL, store id."""
    assert event_id("acme", 1) == hashlib.sha256(b"acme\x001").hexdigest()[:32]
    assert len(event_id("acme", 1)) == 32 and event_id("acme", 1) != event_id("acme", 2)
    assert event_id("a1", 2) != event_id("a", 12)


class Shipper:
    """A store, a config file with the three integrations of account ``acme`` writing to
    one bucket under one prefix, and the CLI to run against them."""

    def __init__(self, tmp_path: Path, server: S3Server, bucket: str) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "siem.db"
        self.store: Any = open_store(f"sqlite:///{self.db}")
        self.server = server
        self.bucket = bucket
        self.client = server.client()
        self.cfg = tmp_path / "siem.toml"
        self.integrations = [self.integration(name, fmt) for name, fmt in FORMATS.items()]
        self.write()

    def integration(self, name: str, fmt: Any, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "account": "acme",
            "format": fmt,
            "max_events": 40,
            "sink": self.server.sink_options(self.bucket, prefix=PREFIX),
            "notify": {
                "type": "outbox",
                "path": str(self.tmp / "outbox"),
                "from": "siem@example.com",
                "to": ["soc@example.com"],
                "events": ["threat_detected"],
            },
            **extra,
        }

    def write(self) -> None:
        raw = {"store": {"url": f"sqlite:///{self.db}"}, "integration": self.integrations}
        self.cfg.write_text(toml_document(raw))

    def run(self, *args: str, status: int = 0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.pop("SIEM_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(self.cfg)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == status, proc.stdout + proc.stderr
        return proc.stdout

    def objects(self, prefix: str = PREFIX) -> dict[str, bytes]:
        """Every object under ``prefix``, decompressed, by key."""
        out = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                body = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"]] = gzip.decompress(body)
        return out

    def of(self, name: str, prefix: str = PREFIX) -> list[tuple[str, bytes]]:
        """The objects of one integration (by extension), in key order."""
        ext = EXTENSIONS[name]
        return sorted(
            (key, body)
            for key, body in self.objects(prefix).items()
            if (parts := parse_key(key[len(prefix) :])) is not None and parts.extension == ext
        )


def toml_document(raw: dict[str, Any]) -> str:
    """The config as TOML (the CLI reads TOML): JSON strings, arrays and inline tables are
    TOML's too."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)

    text = f"[store]\nurl = {value(raw['store']['url'])}\n"
    for integ in raw["integration"]:
        text += "\n[[integration]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in integ.items())
    return text


@pytest.fixture
def shipper(tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any) -> Shipper:
    s = Shipper(tmp_path, s3_server, s3_bucket)
    ingest(s.store, "acme", siem_events(60))
    ingest(s.store, "globex", siem_events(10, seed=2))  # another account between
    ingest(s.store, "acme", [e.fields() for e in every_log_type()])
    return s


def acme_ids(shipper: Shipper) -> list[int]:
    with sqlite3.connect(shipper.db) as db:
        return [
            r[0] for r in db.execute("SELECT id FROM siem_event WHERE account = 'acme' ORDER BY id")
        ]


def test_json_ocsf_and_ecs_of_one_account_share_a_bucket_and_verify_clean(shipper: Shipper) -> None:
    out = shipper.run("sync", "--no-progress")
    ids = acme_ids(shipper)
    assert len(ids) == 86
    for name in FORMATS:
        assert f"{name}: ok: 3 objects, 86 events" in out, out
    # Each integration's objects carry its own extension: none is taken for another's.
    by_name = {name: shipper.of(name) for name in FORMATS}
    assert len(shipper.objects()) == 9 and all(len(objs) == 3 for objs in by_name.values())
    for name, objs in by_name.items():
        for key, _ in objs:
            head = shipper.client.head_object(Bucket=shipper.bucket, Key=key)
            assert head["Metadata"]["siem-format"] == ("ecs" if name == "acme-ecs" else name[5:])
            assert head["ContentType"] == "application/x-ndjson"
    # The same events, in the same order, in each format; each record carries its id.
    lines = {
        name: b"".join(body for _, body in objs).splitlines() for name, objs in by_name.items()
    }
    stored = [json.loads(line) for line in lines["acme-json"]]
    ocsf = [json.loads(line) for line in lines["acme-ocsf"]]
    ecs = [json.loads(line) for line in lines["acme-ecs"]]
    assert len(stored) == len(ocsf) == len(ecs) == 86
    for store_id, event, o, e in zip(ids, stored, ocsf, ecs, strict=True):
        assert schema_errors(o) == [] and ecs_errors(e) == []
        assert o["metadata"]["uid"] == e["event"]["id"] == event_id("acme", store_id)
        assert json.loads(o["raw_data"]) == event and "original" not in e["event"]
        assert o["message"] == e["message"] == event["details"]
    # verify --deep reads every object of each integration and compares it with the
    # store's events formatted again: clean for all three, each ignoring the others'.
    for deep in ((), ("--deep",)):
        report = json.loads(shipper.run("verify", "--json", *deep))
        assert report["ok"]
        for r in report["integrations"]:
            assert r["ok"] and r["findings"] == [] and r["error"] is None, r
            assert (r["objects"], r["events"]) == (3, 86)
            (ignored,) = [i for i in r["info"] if i["kind"] == "ignored"]
            assert ignored["events"] == 6  # the other two integrations' objects
    text = shipper.run("verify", "--deep")
    assert "acme-ocsf: clean (deep): 3 object(s), 86 events" in text
    assert "acme-ecs: clean (deep): 3 object(s), 86 events" in text


def test_a_replay_carries_the_same_event_ids(shipper: Shipper) -> None:
    shipper.run("sync", "--no-progress")
    first = {
        json.loads(line)["metadata"]["uid"]
        for _, body in shipper.of("acme-ocsf")
        for line in body.splitlines()
    }
    shipper.run("replay", "start", "-i", "acme-ocsf", "--from-id", "1", "--set", "prefix=again/")
    again = shipper.of("acme-ocsf", prefix="again/")
    assert again, shipper.objects("again/")
    replayed = [json.loads(line) for _, body in again for line in body.splitlines()]
    assert len(replayed) == 86
    assert {r["metadata"]["uid"] for r in replayed} == first  # a SIEM deduplicates on it


def test_an_event_the_formatter_cannot_read_is_set_aside(shipper: Shipper) -> None:
    """A row written by another writer without a device id: the spec's JSON ships it as
    stored, OCSF and ECS set it aside (a dead letter) and ship every other event."""
    bad = acme_ids(shipper)[10]
    with sqlite3.connect(shipper.db) as db:
        (body,) = db.execute("SELECT body FROM siem_event WHERE id = ?", (bad,)).fetchone()
        fields = json.loads(body)
        fields.pop("device_id", None)
        fields.pop("admin_name", None)
        db.execute(
            "UPDATE siem_event SET body = ? WHERE id = ?",
            (json.dumps(fields, separators=(",", ":")).encode(), bad),
        )
    out = shipper.run("sync", "--no-progress")
    assert "acme-json: ok: 3 objects, 86 events" in out
    for name in ("acme-ocsf", "acme-ecs"):
        assert f"{name}: ok: 3 objects, 85 events" in out, out
        shipped = [json.loads(line) for _, body in shipper.of(name) for line in body.splitlines()]
        assert len(shipped) == 85
    letters = {
        d["integration"]: d for d in json.loads(shipper.run("dead-letters", "list", "--json"))
    }
    assert sorted(letters) == ["acme-ecs", "acme-ocsf"]
    for name, fmt in (("acme-ocsf", "OCSF"), ("acme-ecs", "ECS")):
        assert letters[name]["event_id"] == bad
        assert f"cannot write it as {fmt}: missing field" in letters[name]["error"]
    report = json.loads(shipper.run("verify", "--json", "--deep"))
    assert report["ok"], report


def test_the_destination_check_tells_dotted_extensions_apart(tmp_path: Path) -> None:
    sink = {"type": "local", "path": str(tmp_path / "bucket")}
    notify = {
        "type": "outbox",
        "path": str(tmp_path / "o"),
        "from": "s@example.com",
        "to": ["a@example.com"],
        "events": ["config"],
    }

    def runtime(*formats: Any) -> Runtime:
        raw = {
            "store": {"url": f"sqlite:///{tmp_path / 'siem.db'}"},
            "integration": [
                {"name": f"i{n}", "account": "acme", "format": f, "sink": sink, "notify": notify}
                for n, f in enumerate(formats)
            ],
        }
        return Runtime(
            config_from_dict(raw, file="t.toml"), create_host(None, entry_points=False, disabled=())
        )

    runtime("json", "ocsf", "ecs", "syslog").close()  # four extensions, no clash
    with pytest.raises(ConfigError, match=r"both ship account 'acme' as \.ocsf\.json\.gz"):
        runtime("ocsf", {"type": "ocsf", "raw_data": False})


def test_plugins_lists_both_with_a_description(shipper: Shipper) -> None:
    listed = json.loads(shipper.run("plugins", "--json"))
    provides = {
        (p["kind"], p["name"]): p["description"]
        for plugin in listed["plugins"]
        for p in plugin["provides"]
    }
    assert provides[("formatter", "ocsf")].startswith("OCSF 1.1.0 JSON")
    assert provides[("formatter", "ecs")].startswith("Elastic Common Schema JSON")


@pytest.mark.slow
def test_the_formats_benchmark_runs_and_checks_its_output(tmp_path: Path) -> None:
    """``python -m benchmarks.formats`` on a few hundred events, so it cannot rot: every
    case ran and its output was read back (no timing is asserted)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.formats", "--events", "300", "--data-dir", str(data)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = [
        line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")
    ]
    assert rows == ["format", "json", "ocsf", "ocsf-no-raw", "ecs", "ecs-no-original"]
    assert "every output read back and checked" in proc.stdout
