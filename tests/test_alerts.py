"""Tell the customer: after `alert_after` of uninterrupted bucket failures the admins get
one mail saying what fails and how to fix it, and one more when it works again; never a
mail per failure. Real moto S3 over HTTP and a real SMTP server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from siem_plugins.storage import SINK, SQLiteStore
from siem_plugins.testing import store_events, sync_once
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer


def config(store: SQLiteStore, s3: S3Server, smtp: SMTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{store.path}"},
        "integration": [
            {
                "name": "acme",
                "format": "json",
                "sink": s3.sink_options("acme-logs", max_attempts=1),
                "notify": {
                    "host": smtp.host,
                    "port": smtp.port,
                    "security": "none",
                    "from": "siem@example.com",
                    "to": ["soc@acme.example"],
                    "events": ["exempt_all", "config"],
                },
                **extra,
            }
        ],
    }


def subjects(smtp: SMTPServer) -> list[str]:
    return [
        str(m.message["Subject"])
        for m in smtp.messages
        if "log delivery" in str(m.message["Subject"])
    ]


def test_one_mail_when_the_bucket_fails_and_one_when_it_works_again(
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
) -> None:
    store_events(siem_store, "acme", siem_events(40))
    cfg = config(siem_store, s3_server, smtp_server, alert_after="1s")
    first = sync_once(cfg)["acme"]  # the bucket does not exist yet
    assert SINK in first.errors and "NoSuchBucket" in first.errors[SINK]
    assert subjects(smtp_server) == []  # failing, but not for a second yet
    time.sleep(1.2)
    for _ in range(3):  # three more failing cycles: one mail, not three
        sync_once(cfg)
    assert subjects(smtp_server) == ["[SIEM] acme: log delivery to the bucket is failing"]
    (alert,) = [m for m in smtp_server.messages if "is failing" in str(m.message["Subject"])]
    body = alert.message.get_content()
    assert "s3://acme-logs/" in body and "NoSuchBucket" in body
    assert "The bucket does not exist: create it, or correct its name or region." in body
    assert "No event is lost" in body and "40 events wait" in body
    assert alert.rcpt_tos == ["soc@acme.example"]
    assert s3_server.secret_access_key not in alert.data.decode()

    s3_server.create_bucket("acme-logs")
    for _ in range(3):  # recovered: the notifier pass sees it at the latest one pass later
        assert sync_once(cfg)["acme"].ok
    assert subjects(smtp_server) == [
        "[SIEM] acme: log delivery to the bucket is failing",
        "[SIEM] acme: log delivery to the bucket works again",
    ]
    assert s3_server.client().list_objects_v2(Bucket="acme-logs")["KeyCount"] == 1


def test_no_mail_before_alert_after_nor_when_turned_off(
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
) -> None:
    store_events(siem_store, "acme", siem_events(10))
    for setting in ("1h", "never"):
        cfg = config(siem_store, s3_server, smtp_server, alert_after=setting)
        for _ in range(3):
            assert not sync_once(cfg)["acme"].ok
        assert subjects(smtp_server) == []


def test_the_outbox_keeps_the_problem_mails_too(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    store_events(siem_store, "acme", siem_events(10))
    (tmp_path / "notadir").write_text("a file where the sink wants a folder")
    cfg = {
        "store": {"url": f"sqlite:///{siem_store.path}"},
        "integration": [
            {
                "name": "acme",
                "format": "json",
                "alert_after": "1s",
                "sink": {"type": "local", "path": str(tmp_path / "notadir" / "b")},
                "notify": {
                    "type": "outbox",
                    "path": str(tmp_path / "outbox"),
                    "from": "siem@example.com",
                    "to": ["soc@acme.example"],
                    "events": ["config"],
                },
            }
        ],
    }
    sync_once(cfg)
    time.sleep(1.2)
    sync_once(cfg)
    sync_once(cfg)
    (mail,) = (tmp_path / "outbox" / "acme").glob("problem-failing-*.eml")
    text = mail.read_text()
    assert "Subject: [SIEM] acme: log delivery to the bucket is failing" in text
    assert "Not a directory" in text
