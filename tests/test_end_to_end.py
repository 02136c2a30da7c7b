"""End to end, as the product documentation describes it: the seed's four events go in,
objects come out of a real S3 endpoint (moto over HTTP) in JSON and SYSLOG, and the
admins get one mail per sync over real SMTP (aiosmtpd) listing the selected events only."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer

DATA = Path(__file__).parent / "data"
RFC5424 = re.compile(r"<134>1 (\S+) - metadefender-it-access - (\S+) - (.*)\Z")
KEY = re.compile(
    r"siem/acme/2\d{3}/\d\d/\d\d/2\d{3}-\d\d-\d\dT\d{6}Z_"
    r"(\d{20})-(\d{20})\.(json|log)\.gz\Z"
)


def toml_value(value: Any) -> str:
    return json.dumps(value)


def write_config(path: Path, s3: S3Server, bucket: str, smtp: SMTPServer) -> None:
    sink = s3.sink_options(bucket)
    sink.pop("type")
    sink_lines = "\n".join(f"{k} = {toml_value(v)}" for k, v in sink.items() if k != "bucket")
    integrations = ""
    for name, fmt in (
        ("acme-json", '"json"'),
        ("acme-syslog", '{ type = "syslog" }'),
        ("acme-bare", '{ type = "syslog", framing = "bare" }'),
    ):
        integrations += f"""
[[integration]]
name = "{name}"
account = "acme"
format = {fmt}
[integration.sink]
type = "s3"
bucket = "{bucket}"
prefix = "siem/{name}/"
[integration.notify]
events = ["exempt_all", "config"]
to = ["soc@acme.example", "ciso@acme.example"]
"""
    path.write_text(f"""
[store]
url = "sqlite:///{path.parent / "siem.db"}"

[s3]
{sink_lines}

[smtp]
host = "{smtp.host}"
port = {smtp.port}
security = "none"
from = "siem@metadefender.example"
{integrations}""")


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
    )


def objects(s3: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    out = {}
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        got = client.get_object(Bucket=bucket, Key=obj["Key"])
        assert got["ContentEncoding"] == "gzip"
        out[obj["Key"]] = gzip.decompress(got["Body"].read())
    return out


def test_seed_events_to_s3_and_email(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, smtp_server: SMTPServer
) -> None:
    cfg = tmp_path / "siem.toml"
    write_config(cfg, s3_server, s3_bucket, smtp_server)
    seed = (DATA / "seed_events.ndjson").read_bytes()
    ingest = cli("ingest", "--account", "acme", "-c", str(cfg), "-", stdin=seed)
    assert ingest.returncode == 0, ingest.stderr
    sync = cli("sync", "--once", "-c", str(cfg))
    assert sync.returncode == 0, sync.stderr.decode()
    out = sync.stdout.decode()
    assert "acme-json: ok: 1 objects, 4 events, 1 digests" in out

    # JSON: the documentation's objects, field order included.
    [(key, body)] = objects(s3_server, s3_bucket, "siem/acme-json/").items()
    m = KEY.fullmatch(key.replace("siem/acme-json/", "siem/"))
    assert m and (int(m[1]), int(m[2]), m[3]) == (1, 4, "json")
    lines = body.decode().splitlines()
    seed_objects = [json.loads(x) for x in seed.decode().splitlines()]
    assert [json.loads(x) for x in lines] == seed_objects
    assert [list(json.loads(x)) for x in lines] == [list(o) for o in seed_objects]
    expected_json = json.loads((DATA / "seed_json_examples.json").read_text())
    assert [json.loads(x) for x in lines[:2]] == expected_json
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["Metadata"] == {
        "siem-integration": "acme-json",
        "siem-account": "acme",
        "siem-first-id": "1",
        "siem-last-id": "4",
        "siem-count": "4",
        "siem-format": "json",
    }

    # SYSLOG: RFC 5424 lines whose bodies are the documentation's SYSLOG lines.
    seed_syslog = (DATA / "seed_syslog_examples.txt").read_text().splitlines()
    [(key, body)] = objects(s3_server, s3_bucket, "siem/acme-syslog/").items()
    assert key.endswith("_00000000000000000001-00000000000000000004.log.gz")
    parsed = [RFC5424.fullmatch(x) for x in body.decode().splitlines()]
    assert all(parsed)
    assert [p[1] for p in parsed] == [o["timestamp"] for o in seed_objects]  # type: ignore[index]
    assert [p[2] for p in parsed] == [o["log_type"] for o in seed_objects]  # type: ignore[index]
    assert [p[3] for p in parsed[2:]] == seed_syslog  # type: ignore[index]
    [(key, body)] = objects(s3_server, s3_bucket, "siem/acme-bare/").items()
    assert body.decode().splitlines()[2:] == seed_syslog

    # One mail per integration, selected events only (exempt_all and config).
    assert len(smtp_server.messages) == 3
    for received in smtp_server.messages:
        assert sorted(received.rcpt_tos) == ["ciso@acme.example", "soc@acme.example"]
        text = received.message.get_body(preferencelist=("plain",)).get_content()
        assert "exempt_all" in text and "config" in text
        assert "unexempt" not in text and "added" not in text
        assert "Cuong Ba" in text and "Phuong Weekly 1" in text
        assert "2022-07-15T08:55:12.279Z" in text

    # A second sync with nothing new writes and sends nothing.
    again = cli("sync", "-c", str(cfg))
    assert again.returncode == 0
    assert len(objects(s3_server, s3_bucket, "siem/")) == 3
    assert len(smtp_server.messages) == 3
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_check_probes_s3_and_smtp(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, smtp_server: SMTPServer
) -> None:
    cfg = tmp_path / "siem.toml"
    write_config(cfg, s3_server, s3_bucket, smtp_server)
    ok = cli("check", "-c", str(cfg))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.decode().splitlines()
    assert sum(x.startswith("  ") and x.endswith(": ok") for x in lines) == 6
    assert f"  notifier smtp://{smtp_server.host}:{smtp_server.port}: ok" in lines
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    smtp_server.stop()
    down = cli("check", "-c", str(cfg))
    assert down.returncode == 1
    assert down.stdout.decode().count("FAILED") == 3
