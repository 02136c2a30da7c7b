"""Secrets never reach a log line (ours, botocore's, smtplib's — at DEBUG), an error or
`check` output; event text cannot inject mail headers (see test_email) or escape the
key prefix (test_pipeline)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from siem_plugins.storage import SQLiteStore
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer
from tests.helpers import ingest, numbered

AWS_SECRET = "aWsSeCrEt/do-not-log+0123456789abcdefXYZ"
SMTP_SECRET = "smtp-Pa55-do-not-log-987"


def forms(secret: str) -> list[str]:
    """The secret and the encodings a careless logger might print."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"\0siem\0{secret}".encode()).decode(),
    ]


def test_no_secret_in_any_output_at_debug(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_tls_server: SMTPServer,
    siem_events: object,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    ingest(store, "acme", numbered(siem_events(50)))  # type: ignore[operator]
    store.close()
    opts = s3_server.sink_options(s3_bucket)
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "s.db"}"
[smtp]
host = "{smtp_tls_server.host}"
port = {smtp_tls_server.port}
security = "starttls"
ca_file = "{smtp_tls_server.ca_file}"
username = "siem"
password = "${{SMTP_PASSWORD}}"
from = "siem@example.com"
[s3]
endpoint_url = "{opts["endpoint_url"]}"
region = "us-east-1"
access_key_id = "AKIATESTING"
secret_access_key = "${{AWS_SECRET}}"
max_attempts = 2
[[integration]]
name = "ok"
account = "acme"
format = "json"
sink = {{ type = "s3", bucket = "{s3_bucket}" }}
notify = {{ events = ["config"], to = ["soc@example.com"] }}
[[integration]]
name = "denied"
account = "acme"
format = "syslog"
sink = {{ type = "s3", bucket = "{s3_bucket}", prefix = "denied/" }}
notify = {{ events = ["config"], to = ["soc@example.com"] }}
""")
    faults = s3_server.faults
    assert faults is not None
    faults.fail_next(50, status=403, code="AccessDenied", path_contains="/denied/")
    env = {**os.environ, "SMTP_PASSWORD": SMTP_SECRET, "AWS_SECRET": AWS_SECRET}
    outputs = []
    runs = (
        ["sync", "-vv"],
        ["check", "-vv", "--print-config"],
        ["sync", "-vv"],
        ["sync", "-vv", "--log-format", "json"],
    )
    for args in runs:
        proc = subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 1  # the wrong SMTP password and the denied prefix fail
    text = "\n".join(outputs)
    # The JSON run's (the last) lines decoded: a secret JSON-escaped in a line would not be
    # seen as it is.
    decoded = [json.loads(line) for line in proc.stderr.splitlines()]
    assert any(r["logger"].startswith("botocore") and r["level"] == "DEBUG" for r in decoded)
    assert any("535" in r.get("exc", "") for r in decoded)  # tracebacks were on
    text += "\n".join(str(value) for record in decoded for value in record.values())
    assert "botocore" in text and "DEBUG" in text  # botocore's debug logs were on
    assert "AccessDenied" in text and "535" in text  # the failures were reported
    assert '"secret_access_key": "***"' in text and '"password": "***"' in text
    for secret in (AWS_SECRET, SMTP_SECRET):
        for form in forms(secret):
            assert form not in text, f"secret leaked as {form!r}"


def test_no_secret_in_json_fields_context_or_tracebacks(tmp_path: Path) -> None:
    """What the JSON format adds to a line (the fields of ``extra=``, those of the pass
    being run, the traceback) goes through the same redaction as the message."""
    script = f"""
import logging
from siem_plugins.logs import REDACTOR, log_context, setup_logging
setup_logging(1, "json")
REDACTOR.add([{AWS_SECRET!r}])
log = logging.getLogger("siem_plugins.test")
with log_context(integration="in-{AWS_SECRET}", destination="sink"):
    try:
        raise RuntimeError("failed with {AWS_SECRET}")
    except RuntimeError:
        log.exception(
            "wrote %s",
            "s3://b/{AWS_SECRET}/k",
            extra={{"location": "s3://b/{AWS_SECRET}/k", "key": "{AWS_SECRET}/k", "bytes": 7}},
        )
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    [record] = [json.loads(line) for line in proc.stderr.splitlines()]
    assert record["message"] == "wrote s3://b/***/k"
    assert record["location"] == "s3://b/***/k" and record["key"] == "***/k"
    assert record["integration"] == "in-***" and record["bytes"] == 7
    assert "RuntimeError: failed with ***" in record["exc"]
    assert AWS_SECRET not in proc.stderr
