"""``siem-plugins verify``: real syncs to a real S3 endpoint (moto over HTTP), then the
bucket tampered with through boto3 as an operator or an attacker could, and each change
found, named and located; the command is run as users run it (a subprocess)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.config import load_config
from siem_plugins.host import create_host
from siem_plugins.keys import parse_key
from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import SINK, open_store
from siem_plugins.testing.s3server import S3Server
from siem_plugins.verify import S3Bucket, verify_integration
from tests.helpers import drop_in_folder, ingest, numbered

REPO = Path(__file__).resolve().parents[1]
PREFIX = "siem/"


def toml(value: Any) -> str:
    """A TOML value for the simple shapes of these configs (JSON strings are TOML's)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


class Setup:
    """A store, a config file with integrations, and the command to run against them."""

    def __init__(self, tmp_path: Path, plugins: Path | None = None, url: str = "") -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "siem.db"
        self.store_url = url or f"sqlite:///{self.db}"
        self.store: Any = open_store(self.store_url)
        self.cfg = tmp_path / "siem.toml"
        self.plugins = plugins
        self.integrations: list[dict[str, Any]] = []

    def add(self, name: str, sink: dict[str, Any], fmt: Any = "json", **extra: Any) -> None:
        self.integrations.append(
            {
                "name": name,
                "account": "acme",
                "format": fmt,
                "max_events": 100,
                "sink": sink,
                "notify": {
                    "type": "outbox",
                    "path": str(self.tmp / "outbox"),
                    "from": "siem@example.com",
                    "to": ["soc@example.com"],
                    "events": ["config"],
                },
                **extra,
            }
        )
        self.write()

    def write(self) -> None:
        text = f"[store]\nurl = {toml(self.store_url)}\n"
        if self.plugins is not None:
            text = f"plugins_dir = {toml(str(self.plugins))}\n" + text
        for integ in self.integrations:
            text += "\n[[integration]]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in integ.items())
        self.cfg.write_text(text)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONPATH"] = str(REPO)  # the drop-in test plugins import from tests/
        env.pop("SIEM_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(self.cfg)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    def sync(self) -> None:
        proc = self.run("sync", "--no-progress")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def verify(self, *args: str, status: int | None = None) -> dict[str, Any]:
        """``verify --json``: the report of each integration by name (the exit status
        checked against ``status``, or against the reports' findings)."""
        proc = self.run("verify", "--json", *args)
        out: dict[str, Any] = json.loads(proc.stdout)
        failed = not out["ok"]
        assert proc.returncode == (status if status is not None else int(failed)), proc.stderr
        reports = {r["integration"]: r for r in out["integrations"]}
        return reports

    def runtime(self) -> Runtime:
        cfg = load_config(self.cfg)
        return Runtime(cfg, create_host(self.plugins, entry_points=False, disabled=()))


def kinds(report: dict[str, Any]) -> list[str]:
    return [f["kind"] for f in report["findings"]]


def info(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["info"] if f["kind"] == kind]


@pytest.fixture
def s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any) -> S3Setup:
    return S3Setup(tmp_path, s3_server, s3_bucket, siem_events)


class S3Setup(Setup):
    """Account ``acme`` with ids 1-200 and 251-500 (another account's between), shipped
    in objects of 100 events by integration ``acme`` (JSON) under ``siem/``."""

    def __init__(self, tmp_path: Path, server: S3Server, bucket: str, siem_events: Any) -> None:
        super().__init__(tmp_path)
        self.server = server
        self.bucket = bucket
        self.client = server.client()
        self.events = numbered(siem_events(450))
        ingest(self.store, "acme", self.events[:200])
        ingest(self.store, "globex", siem_events(50, seed=2))
        ingest(self.store, "acme", self.events[200:])
        self.add("acme", server.sink_options(bucket, prefix=PREFIX))
        self.sync()

    def keys(self, ext: str = ".json.gz") -> dict[tuple[int, int], str]:
        """The objects by id range."""
        out = {}
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=PREFIX)
        for obj in listing.get("Contents", []):
            key = obj["Key"]
            parts = parse_key(key[len(PREFIX) :])
            if parts is not None and key.endswith(ext):
                out[(parts.first_id, parts.last_id)] = key
        return out

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def body(self, key: str) -> bytes:
        got = self.client.get_object(Bucket=self.bucket, Key=key)
        return gzip.decompress(got["Body"].read())

    def put_like(self, source: str, key: str, body: bytes, **metadata: str) -> None:
        """Put ``body`` (gzipped) at ``key`` with ``source``'s metadata, changed as given."""
        head = self.client.head_object(Bucket=self.bucket, Key=source)
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=gzip.compress(body, mtime=0),
            ContentType=head["ContentType"],
            ContentEncoding="gzip",
            Metadata={**head["Metadata"], **metadata},
        )


def same_shape(key: str, first: int, last: int, created: str = "2026-01-02T030405Z") -> str:
    """``key`` moved to another creation time (and id range): still of the shipper's shape."""
    folder = key.split("/")[0] + "/acme/"
    return f"{folder}{created[:4]}/{created[5:7]}/{created[8:10]}/{created}_{first:020d}-{last:020d}.json.gz"


# --------------------------------------------------------------------------- clean


def test_a_clean_integration_verifies_clean(s3: S3Setup) -> None:
    s3.add("acme-syslog", s3.server.sink_options(s3.bucket, prefix=PREFIX), fmt="syslog")
    s3.sync()
    # Files of other shapes in the folder are not the shipper's: ignored.
    s3.client.put_object(Bucket=s3.bucket, Key=PREFIX + "acme/README.txt", Body=b"hello")
    s3.client.put_object(Bucket=s3.bucket, Key=PREFIX + "acme/2026/01/01/x.json.gz", Body=b"x")
    assert sorted(s3.keys()) == [(1, 100), (101, 200), (251, 350), (351, 450), (451, 500)]
    for deep in ((), ("--deep",)):
        reports = s3.verify(*deep, status=0)
        for name in ("acme", "acme-syslog"):
            r = reports[name]
            assert r["ok"] and r["findings"] == [] and r["error"] is None
            assert (r["objects"], r["events"], r["cursor"]) == (5, 450, 500)
            assert r["sink"] == f"s3://{s3.bucket}/{PREFIX}acme/"
            # The other integration's five objects and the two foreign files.
            (ignored,) = info(r, "ignored")
            assert ignored["events"] == 7
            assert info(r, "backlog") == info(r, "pending") == info(r, "set-aside") == []
    text = s3.run("verify", "--deep")
    assert text.returncode == 0, text.stderr
    assert f"acme: clean (deep): 5 object(s), 450 events, sink cursor 500; s3://{s3.bucket}/" in (
        text.stdout
    )


def test_events_not_shipped_yet_are_information(s3: S3Setup, siem_events: Any) -> None:
    ingest(s3.store, "acme", siem_events(30, seed=3))
    (backlog,) = info(s3.verify(status=0)["acme"], "backlog")
    assert (backlog["first_id"], backlog["last_id"], backlog["events"]) == (501, 530, 30)


# --------------------------------------------------------------------------- tampering


def test_a_deleted_object_is_a_gap(s3: S3Setup) -> None:
    s3.client.delete_object(Bucket=s3.bucket, Key=s3.keys()[(251, 350)])
    r = s3.verify()["acme"]
    assert kinds(r) == ["gap"]
    (gap,) = r["findings"]
    assert (gap["first_id"], gap["last_id"], gap["events"]) == (251, 350, 100)
    assert "100 event(s), ids 251-350, are in no object" in gap["message"]
    text = s3.run("verify")
    assert text.returncode == 1
    assert "acme: 1 finding(s): 4 object(s), 350 events, sink cursor 500" in text.stdout
    assert "  GAP: 100 event(s), ids 251-350, are in no object" in text.stdout


def test_the_first_and_last_objects_deleted_are_gaps(s3: S3Setup) -> None:
    keys = s3.keys()
    for ids in ((1, 100), (451, 500)):
        s3.client.delete_object(Bucket=s3.bucket, Key=keys[ids])
    r = s3.verify()["acme"]
    assert [(f["kind"], f["first_id"], f["last_id"], f["events"]) for f in r["findings"]] == [
        ("gap", 1, 100, 100),
        ("gap", 451, 500, 50),
    ]


def test_a_copy_under_another_key_is_a_duplicate(s3: S3Setup) -> None:
    key = s3.keys()[(101, 200)]
    copy = same_shape(key, 101, 200)
    s3.client.copy_object(Bucket=s3.bucket, Key=copy, CopySource={"Bucket": s3.bucket, "Key": key})
    r = s3.verify()["acme"]
    assert kinds(r) == ["duplicate"]
    (dup,) = r["findings"]
    assert sorted(dup["keys"]) == sorted([s3.url(key), s3.url(copy)])
    assert (dup["first_id"], dup["last_id"]) == (101, 200)
    assert "ids 101-200 are in 2 objects" in dup["message"]


def test_an_object_over_other_objects_ranges_is_an_overlap(s3: S3Setup) -> None:
    keys = s3.keys()
    # A well-formed object for ids 51-150 (100 events there: its count is right).
    extra = same_shape(keys[(1, 100)], 51, 150)
    s3.put_like(
        keys[(1, 100)],
        extra,
        s3.body(keys[(1, 100)]),
        **{
            "siem-first-id": "51",
            "siem-last-id": "150",
        },
    )
    r = s3.verify()["acme"]
    assert [(f["kind"], f["first_id"], f["last_id"]) for f in r["findings"]] == [
        ("overlap", 51, 100),
        ("overlap", 101, 150),
    ]
    assert r["findings"][0]["keys"] == [s3.url(keys[(1, 100)]), s3.url(extra)]
    assert r["findings"][1]["keys"] == [s3.url(extra), s3.url(keys[(101, 200)])]
    # Its lines are events 1-100, not 51-150: only reading it tells.
    deep = s3.verify("--deep")["acme"]
    content = [f for f in deep["findings"] if f["kind"] == "content"]
    assert [f["keys"] for f in content] == [[s3.url(extra)]]
    lines = s3.body(keys[(1, 100)]).splitlines()
    # Event 1's line stands where event 51's belongs: they differ after a common start.
    at = next(i for i, (a, b) in enumerate(zip(lines[0], lines[50], strict=False)) if a != b)
    assert (
        f"differs from the store's events at byte {at} (line 1, event 51)"
        in (content[0]["message"])
    )


@pytest.mark.parametrize("change", ["edited", "truncated", "extended"])
def test_a_changed_body_is_found_by_deep(s3: S3Setup, change: str) -> None:
    key = s3.keys()[(351, 450)]
    lines = s3.body(key).splitlines(keepends=True)
    if change == "edited":  # event 400 is the 50th line
        lines[49] = lines[49].replace(b'"timestamp":"', b'"timestamp":"1', 1)
    elif change == "truncated":
        lines = lines[:-1]
    else:
        lines.append(b'{"forged":true}\n')
    s3.put_like(key, key, b"".join(lines))
    assert s3.verify(status=0)["acme"]["findings"] == []  # the metadata is intact
    r = s3.verify("--deep")["acme"]
    assert kinds(r) == ["content"]
    (found,) = r["findings"]
    assert found["keys"] == [s3.url(key)]
    size = sum(len(x) for x in lines[:49])
    expected = {
        "edited": f"differs from the store's events at byte {size + lines[49].index(b'1', lines[49].index(b'timestamp'))} (line 50, event 400)",
        "truncated": f"ends at byte {sum(len(x) for x in lines)}, before line 100: the store's events go on with event 450",
        "extended": "16 byte(s) after line 100 that are not events of ids 351-450",
    }[change]
    assert expected in found["message"]


def test_a_body_that_is_not_gzip_is_found_by_deep(s3: S3Setup) -> None:
    key = s3.keys()[(1, 100)]
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    s3.client.put_object(
        Bucket=s3.bucket,
        Key=key,
        Body=s3.body(key),  # uncompressed, still labelled gzip
        ContentEncoding="gzip",
        Metadata=head["Metadata"],
    )
    (found,) = s3.verify("--deep")["acme"]["findings"]
    assert found["kind"] == "content" and "not valid gzip" in found["message"]


def test_a_changed_count_is_a_count_mismatch(s3: S3Setup) -> None:
    key = s3.keys()[(1, 100)]
    s3.put_like(key, key, s3.body(key), **{"siem-count": "99"})
    r = s3.verify()["acme"]
    assert kinds(r) == ["count"]
    (found,) = r["findings"]
    assert found["message"] == (
        f"{s3.url(key)}: its metadata says 99 events for ids 1-100; the store has 100 "
        "events of account 'acme' there"
    )
    assert (found["first_id"], found["last_id"], found["events"]) == (1, 100, 100)


def test_an_open_multipart_upload_is_reported(s3: S3Setup) -> None:
    key = same_shape(s3.keys()[(1, 100)], 501, 600)
    upload = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key)
    # One of another shape (another tool's) is not ours to report.
    s3.client.create_multipart_upload(Bucket=s3.bucket, Key=PREFIX + "acme/backup.tar")
    r = s3.verify()["acme"]
    assert kinds(r) == ["upload"]
    (found,) = r["findings"]
    assert found["keys"] == [s3.url(key)]
    assert "open multipart upload initiated" in found["message"]
    s3.client.abort_multipart_upload(Bucket=s3.bucket, Key=key, UploadId=upload["UploadId"])
    assert s3.verify(status=0)["acme"]["findings"] == []


def test_objects_the_state_does_not_explain_are_unknown(s3: S3Setup) -> None:
    key = s3.keys()[(451, 500)]
    beyond = same_shape(key, 501, 600)
    s3.put_like(key, beyond, b"", **{"siem-first-id": "501", "siem-last-id": "600"})
    bare = same_shape(key, 451, 500, created="2026-01-03T000000Z")
    s3.client.put_object(Bucket=s3.bucket, Key=bare, Body=gzip.compress(b"x"))
    other = same_shape(key, 1, 100, created="2026-01-04T000000Z")
    s3.put_like(key, other, s3.body(key), **{"siem-integration": "globex"})
    r = s3.verify()["acme"]
    assert kinds(r) == ["unknown", "unknown", "unknown"]
    messages = {f["keys"][0]: f["message"] for f in r["findings"]}
    assert (
        "ids 501-600 go beyond the sink cursor (500) and no pending intent"
        in messages[s3.url(beyond)]
    )
    assert "no siem-first-id/-last-id/-count metadata" in messages[s3.url(bare)]
    assert "written by integration 'globex'" in messages[s3.url(other)]


# --------------------------------------------------------------------------- a crash


def test_an_object_written_before_a_crash_moved_the_cursor_is_information(
    s3: S3Setup, siem_events: Any
) -> None:
    """The process died after the object was complete and before the cursor moved: the
    object beyond the cursor is the pending intent's, which the next sync rewrites."""
    ingest(s3.store, "acme", siem_events(40, seed=3))
    rt = s3.runtime()
    try:
        integ = rt.integrations[0]
        pipe = Pipeline(rt)
        intent = pipe._next_intent(integ, SINK, 100, 1 << 40)
        assert intent is not None and (intent.first_id, intent.last_id) == (501, 540)
        pipe._write(integ, intent)  # and no complete(): the crash
        assert rt.state.cursor("acme", SINK) == 500
    finally:
        rt.close()
    # And an upload of that key left open (had it been a multipart object).
    upload = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=PREFIX + intent.key)
    for deep in ((), ("--deep",)):
        r = s3.verify(*deep, status=0)["acme"]
        assert r["findings"] == [] and r["objects"] == 6
        (left, pending) = sorted(info(r, "pending"), key=lambda f: f["first_id"] or 0)
        assert pending["keys"] == left["keys"] == [s3.url(PREFIX + intent.key)]
        assert (pending["first_id"], pending["last_id"]) == (501, 540)
        assert "open multipart upload initiated" in left["message"]
    s3.client.abort_multipart_upload(
        Bucket=s3.bucket, Key=PREFIX + intent.key, UploadId=upload["UploadId"]
    )
    s3.sync()
    r = s3.verify(status=0)["acme"]
    assert info(r, "pending") == [] and r["cursor"] == 540 and r["objects"] == 6


# --------------------------------------------------------------------------- dead letters


def test_dead_letters_and_their_replay_are_accounted_for(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any
) -> None:
    plugins = drop_in_folder(
        tmp_path / "plugins",
        files={
            "picky.py": "from tests.test_dead_letters import PickyPlugin\n"
            "_p = PickyPlugin()\n"
            "siem_register_formatters = _p.siem_register_formatters\n"
        },
    )
    setup = Setup(tmp_path, plugins)
    events = numbered(siem_events(250))
    for e in events:
        if e["seq"] in (5, 150):
            e["details"] = f"boom {e['seq']}"
    ingest(setup.store, "acme", events)
    sink = s3_server.sink_options(s3_bucket, prefix=PREFIX)
    setup.add("acme", sink, fmt={"type": "picky"})
    setup.sync()
    for deep in ((), ("--deep",)):
        r = setup.verify(*deep, status=0)["acme"]
        assert r["findings"] == [] and (r["objects"], r["events"]) == (3, 248)
        (aside,) = info(r, "set-aside")
        assert (aside["first_id"], aside["last_id"], aside["events"]) == (5, 150, 2)
        assert "(ids 5, 150)" in aside["message"]

    setup.integrations[0]["format"] = {"type": "picky", "tolerant": True}
    setup.write()
    replay = setup.run("dead-letters", "replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    (extra,) = [k for k in keys if "_00000000000000000005-00000000000000000150." in k]
    assert client.head_object(Bucket=s3_bucket, Key=extra)["Metadata"]["siem-replay"] == "1"
    for deep in ((), ("--deep",)):
        r = setup.verify(*deep, status=0)["acme"]
        assert r["findings"] == [], r["findings"]
        assert (r["objects"], r["events"]) == (4, 250)
        assert info(r, "set-aside") == []
        (replayed,) = info(r, "replay")
        assert replayed["keys"] == [f"s3://{s3_bucket}/{extra}"] and replayed["events"] == 2

    # Without its marker (as written before there was one) it is an overlap.
    head = client.head_object(Bucket=s3_bucket, Key=extra)
    unmarked = {k: v for k, v in head["Metadata"].items() if k != "siem-replay"}
    client.copy_object(
        Bucket=s3_bucket,
        Key=extra,
        CopySource={"Bucket": s3_bucket, "Key": extra},
        Metadata=unmarked,
        MetadataDirective="REPLACE",
        ContentEncoding="gzip",
    )
    r = setup.verify()["acme"]
    assert set(kinds(r)) == {"overlap", "count"} and info(r, "replay") == []

    # The replay object lost: two events are nowhere, and the counts and the lines say so.
    client.delete_object(Bucket=s3_bucket, Key=extra)
    r = setup.verify()["acme"]
    assert kinds(r) == ["count"]
    assert (
        "left out 2 event(s) (siem-set-aside); 0 are dead letters and replay objects hold 0"
        in (r["findings"][0]["message"])
    )
    r = setup.verify("--deep")["acme"]
    gaps = [(f["first_id"], f["message"]) for f in r["findings"] if f["kind"] == "gap"]
    assert [i for i, _ in gaps] == [5, 150]
    assert (
        "is left out of" in gaps[0][1]
        and "neither a dead letter nor in a replay object" in (gaps[0][1])
    )


# --------------------------------------------------------------------------- other sinks


def test_a_local_sink_is_verified_from_its_keys(tmp_path: Path, siem_events: Any) -> None:
    setup = Setup(tmp_path)
    ingest(setup.store, "acme", numbered(siem_events(250)))
    setup.add("acme", {"type": "local", "path": str(tmp_path / "bucket")}, fmt="syslog")
    setup.sync()
    for deep in ((), ("--deep",)):
        r = setup.verify(*deep, status=0)["acme"]
        assert r["findings"] == [] and (r["objects"], r["events"]) == (3, None)
    files = sorted((tmp_path / "bucket" / "acme").rglob("*.log.gz"))
    middle = files[1]
    lines = gzip.decompress(middle.read_bytes()).splitlines(keepends=True)
    lines[9] = lines[9].replace(b"<134>", b"<135>")
    middle.write_bytes(gzip.compress(b"".join(lines), mtime=0))
    (found,) = setup.verify("--deep")["acme"]["findings"]
    assert found["kind"] == "content" and "(line 10, event 110)" in found["message"]
    middle.unlink()
    # A temporary file of an object being written (or of a killed run): readers skip it.
    (middle.parent / f".{middle.name}.1a2b3c4d.tmp").write_bytes(b"partial")
    r = setup.verify()["acme"]
    (found,) = r["findings"]
    assert (found["kind"], found["first_id"], found["last_id"]) == ("gap", 101, 200)
    (left,) = info(r, "leftover")
    assert left["keys"] == [str(middle.parent / f".{middle.name}.1a2b3c4d.tmp")]


def test_a_sink_it_cannot_read_is_not_verified(tmp_path: Path, siem_events: Any) -> None:
    plugins = drop_in_folder(
        tmp_path / "plugins",
        files={
            "nowhere.py": "from siem_plugins import SinkBase, SinkSpec, hookimpl\n"
            "class Nowhere(SinkBase):\n"
            "    def identity(self): return 'nowhere:'\n"
            "    def open(self, key, meta): raise RuntimeError('nowhere')\n"
            "    def probe(self): pass\n"
            "def build(options):\n"
            "    return Nowhere()\n"
            "@hookimpl\n"
            "def siem_register_sinks():\n"
            "    return [SinkSpec(name='nowhere', factory=build)]\n"
        },
    )
    setup = Setup(tmp_path, plugins)
    setup.add("acme", {"type": "local", "path": str(tmp_path / "bucket")})
    setup.integrations.append({**setup.integrations[0], "name": "other", "account": "globex"})
    setup.integrations[1]["sink"] = {"type": "nowhere"}
    setup.write()
    reports = setup.verify(status=0)
    assert reports["other"]["skipped"] == "cannot verify a nowhere sink"
    assert reports["acme"]["skipped"] is None
    text = setup.run("verify")
    assert "other: NOT VERIFIED: cannot verify a nowhere sink" in text.stdout
    # Asked for by name, it must be proved: it cannot be.
    assert setup.verify("-i", "other", status=1)["other"]["skipped"]


def test_an_unknown_integration_is_bad_usage(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    setup.add("acme", {"type": "local", "path": str(tmp_path / "bucket")})
    proc = setup.run("verify", "-i", "nope")
    assert proc.returncode == 2
    assert "no integration named 'nope'" in proc.stderr


def test_metadata_that_contradicts_the_key_is_reported(s3: S3Setup) -> None:
    key = s3.keys()[(101, 200)]
    s3.put_like(key, key, s3.body(key), **{"siem-last-id": "199", "siem-format": "syslog"})
    r = s3.verify()["acme"]
    assert kinds(r) == ["metadata", "metadata"]
    assert r["findings"][0]["message"] == (
        f"{s3.url(key)}: the key says ids 101-200, the metadata 101-199"
    )
    assert r["findings"][1]["message"] == (
        f"{s3.url(key)}: format 'syslog', the integration writes 'json'"
    )


def test_a_content_encoding_that_contradicts_the_extension_is_reported(s3: S3Setup) -> None:
    key = s3.keys()[(251, 350)]
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    # The content as it should be, but stored uncompressed under a .gz key.
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=s3.body(key), Metadata=head["Metadata"])
    for deep in ((), ("--deep",)):
        r = s3.verify(*deep)["acme"]
        assert kinds(r) == ["metadata"]  # --deep reads it as stored: its lines are right
        assert r["findings"][0]["message"] == (
            f"{s3.url(key)}: Content-Encoding none does not match its extension"
        )


def test_objects_written_before_a_change_of_compression_still_count(
    s3: S3Setup, siem_events: Any
) -> None:
    ingest(s3.store, "acme", siem_events(40, seed=3))
    s3.integrations[0]["compression"] = "none"
    s3.write()
    s3.sync()
    assert len(s3.keys("")) == 6 and len(s3.keys(".json")) == 1  # the new one: no .gz
    for deep in ((), ("--deep",)):
        r = s3.verify(*deep, status=0)["acme"]
        assert (r["objects"], r["events"], r["cursor"]) == (6, 490, 540)


def test_a_bucket_it_cannot_read_is_an_error(s3: S3Setup) -> None:
    s3.integrations[0]["sink"]["bucket"] = "no-such-bucket-here"
    s3.write()
    r = s3.verify(status=1)["acme"]
    assert r["error"].startswith(
        "s3://no-such-bucket-here/siem/acme/: could not list the objects: NoSuchBucket:"
    )
    text = s3.run("verify")
    assert text.returncode == 1 and "acme: ERROR: s3://no-such-bucket-here/" in text.stdout
    assert s3.server.secret_access_key not in text.stdout + text.stderr


def test_a_sync_during_the_listing_causes_no_false_finding(
    s3: S3Setup, siem_events: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objects are listed, then a sync writes one more and moves the cursor before
    the state is read again: the listing is taken again, not reported as a gap."""
    ingest(s3.store, "acme", siem_events(40, seed=3))
    listed = S3Bucket.keys
    rt = s3.runtime()
    syncs = []

    def list_then_sync(self: S3Bucket, folder: str) -> list[str]:
        keys = listed(self, folder)
        if not syncs:
            syncs.append(Pipeline(rt).sync(rt.integrations[0]))
        return keys

    monkeypatch.setattr(S3Bucket, "keys", list_then_sync)
    try:
        report = verify_integration(rt, rt.integrations[0])
    finally:
        rt.close()
    assert syncs and syncs[0].ok and len(syncs[0].objects) == 1
    assert report.findings == [] and (report.objects, report.cursor) == (6, 540)


def test_a_postgresql_store_verifies_the_same(
    tmp_path: Path, pg_url: str, s3_server: S3Server, s3_bucket: str, siem_events: Any
) -> None:
    setup = Setup(tmp_path, url=pg_url)
    ingest(setup.store, "acme", numbered(siem_events(150)))
    ingest(setup.store, "globex", siem_events(20, seed=2))
    ingest(setup.store, "acme", numbered(siem_events(100), start=151))
    setup.add("acme", s3_server.sink_options(s3_bucket, prefix=PREFIX))
    setup.sync()
    for deep in ((), ("--deep",)):
        r = setup.verify(*deep, status=0)["acme"]
        assert r["findings"] == [] and (r["objects"], r["events"]) == (3, 250)
    client = s3_server.client()
    (middle,) = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]
        if "_00000000000000000101-" in o["Key"]
    ]
    client.delete_object(Bucket=s3_bucket, Key=middle)
    (gap,) = setup.verify()["acme"]["findings"]
    # Ids 101-150, then the other account's 151-170, then 171-220.
    assert (gap["kind"], gap["first_id"], gap["last_id"], gap["events"]) == ("gap", 101, 220, 100)
    setup.store.close()
