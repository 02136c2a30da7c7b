"""The digest mail is rendered in one place: the ``outbox`` notifier writes exactly the mail
the ``email`` notifier sends (real aiosmtpd server), and needs none of the SMTP code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from siem_plugins.builtin.email import EmailNotifier
from siem_plugins.builtin.outbox import OutboxNotifier
from siem_plugins.options import Options
from siem_plugins.testing.conformance import (
    CONTROL_TEXTS,
    INJECTION_TEXTS,
    UNICODE_TEXTS,
    digest_of,
    events_from_dicts,
    hostile_event_dicts,
    sample_events,
)
from siem_plugins.testing.smtpserver import SMTPServer

_DATE = re.compile(rb"^Date: [^\r\n]*\r\n", re.M)

# What both notifiers share: every key that shapes the mail, with values that exercise
# the display names, the listing limit and the escaping.
MAIL = {
    "from": "SIEM alerts <siem@example.com>",
    "to": ["soc@example.com", "Nguyễn Văn A <oncall@example.org>", '"Ops, night" <ops@[10.0.0.1]>'],
    "max_listed": 7,
}


def without_date(data: bytes) -> bytes:
    found = _DATE.findall(data)
    assert len(found) == 1, f"expected one Date header, found {found}"
    return _DATE.sub(b"", data)


def notifiers(smtp_server: SMTPServer, folder: Path) -> tuple[EmailNotifier, OutboxNotifier]:
    email = EmailNotifier.from_options(
        Options(
            {
                **MAIL,
                "host": smtp_server.host,
                "port": smtp_server.port,
                "security": "none",
                "client_hostname": "siem-test.example",
            },
            path="integration[0].notify",
        )
    )
    outbox = OutboxNotifier.from_options(
        Options({**MAIL, "path": str(folder)}, path="integration[1].notify")
    )
    return email, outbox


def test_outbox_file_is_the_sent_mail_byte_for_byte_apart_from_date(
    smtp_server: SMTPServer, tmp_path: Path
) -> None:
    email, outbox = notifiers(smtp_server, tmp_path / "outbox")
    hostile = events_from_dicts(
        hostile_event_dicts(INJECTION_TEXTS + UNICODE_TEXTS + CONTROL_TEXTS), first_id=500
    )
    digests = [
        digest_of(sample_events(1)),
        digest_of(sample_events(40), listed=20),  # more listed than max_listed
        digest_of(hostile, integration="acme"),
    ]
    for digest in digests:
        email.notify(digest)
        outbox.notify(digest)
        sent = smtp_server.messages[-1].data
        written = (
            tmp_path
            / "outbox"
            / digest.integration
            / f"{digest.first_id:020d}-{digest.last_id:020d}.eml"
        ).read_bytes()
        assert without_date(written) == without_date(sent)
    assert len(smtp_server.messages) == len(digests)
    # Both applied the same max_listed (the core had put 20 events in the digest).
    assert b"Showing the first 7 of 40 selected events." in smtp_server.messages[1].data


def test_outbox_needs_none_of_the_smtp_code() -> None:
    probe = (
        "import sys, siem_plugins.builtin.outbox\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m == 'smtplib' or m.startswith('siem_plugins.builtin.email')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
