"""The built-in email notifier against a real SMTP server on loopback (aiosmtpd).

Nothing here mocks smtplib: every mail crosses a socket, every TLS session verifies a
certificate from a throwaway trustme CA, and faults are the server's real replies.
The ``smtp_server`` / ``smtp_tls_server`` fixtures come from the ``siem_plugins.testing``
pytest plugin.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from siem_plugins.builtin import email as email_plugin
from siem_plugins.builtin.email import EmailNotifier, NotifierError
from siem_plugins.events import Event, canonicalize
from siem_plugins.kinds import Digest, Notifier
from siem_plugins.options import ConfigError, Options
from siem_plugins.testing import SMTP_PASSWORD, SMTP_USER
from siem_plugins.testing.smtpserver import SMTPServer, closed_port

NOTIFY_PATH = "integration[0].notify"
SENDER = "siem@example.com"
ADMINS = ["soc@example.com", "oncall@example.org"]
MESSAGE_ID = "siem.acme.00000000000000000101-00000000000000000104@siem-plugins"

# Shaped like the seed's examples ("Receiving Logs"): two Device events, one Account.
SEED_EVENTS: list[dict[str, str]] = [
    {
        "log_type": "exempt_all",
        "device_name": "Cuong Ba",
        "device_id": "cuongbavuacakhia1657786592",
        "last_seen": "2022-07-15T08:55:12.279Z",
        "device_group": "Default",
        "details": "Device Cuong Ba was exempted by Phuong Phuong Phuong Phuong Phuong"
        "(phuongphweekly@gmail.com)24 hour(s)",
        "type": "Device",
        "device_username": "Wilfred Hoeger",
        "timestamp": "2022-07-15T08:55:12.279Z",
    },
    {
        "log_type": "exempt_all",
        "device_name": "Cuong Ba",
        "device_id": "cuongbavuacakhia1657868171",
        "last_seen": "2022-07-15T08:55:25.377Z",
        "device_group": "Default",
        "details": "Device Cuong Ba was exempted by Phuong Phuong Phuong Phuong Phuong"
        "(phuongphweekly@gmail.com)1 hour(s)",
        "type": "Device",
        "device_username": "Nicholas Roob",
        "timestamp": "2022-07-15T08:55:25.377Z",
    },
    {
        "log_type": "config",
        "details": "Administrator Phuong Phuong Phuong Phuong Phuong (phuongphweekly@gmail.com)"
        " changed Settings - Integrations - SIEM Integration ",
        "admin_name": "Phuong Weekly 1",
        "type": "Account",
        "event": "Configuration Change",
        "admin_email": "phuongphweekly@gmail.com",
        "timestamp": "2022-07-15T11:19:41.629Z",
    },
]


# --------------------------------------------------------------------------- helpers


def make_event(event_id: int, record: Mapping[str, Any], account: str = "acme") -> Event:
    c = canonicalize(record)
    return Event(event_id, account, c.type, c.log_type, c.timestamp, c.raw)


def make_digest(
    events: list[Event],
    *,
    total: int | None = None,
    first_id: int = 101,
    last_id: int = 104,
    message_id: str = MESSAGE_ID,
) -> Digest:
    counts: dict[str, int] = {}
    for e in events:
        counts[e.log_type] = counts.get(e.log_type, 0) + 1
    return Digest(
        integration="acme",
        account="acme",
        first_id=first_id,
        last_id=last_id,
        total=len(events) if total is None else total,
        counts=counts,
        events=tuple(events),
        message_id=message_id,
    )


def seed_digest() -> Digest:
    # Ids 101, 102, 104: 103 was an unselected event inside the range.
    return make_digest(
        [make_event(i, r) for i, r in zip((101, 102, 104), SEED_EVENTS, strict=True)]
    )


def options(notify: Mapping[str, Any], smtp: Mapping[str, Any] | None = None) -> Options:
    """The Options the core hands the factory: ``notify`` over ``[smtp]``."""
    return Options(
        {"type": "email", "events": ["exempt_all"], **notify},
        path=NOTIFY_PATH,
        file="siem.toml",
        defaults=[("smtp", dict(smtp or {}))],
        ignore=("type", "events"),
    )


def build(notify: Mapping[str, Any], smtp: Mapping[str, Any] | None = None) -> EmailNotifier:
    opts = options(notify, smtp)
    notifier = EmailNotifier.from_options(opts)
    opts.finish()  # as the core does: every key given must have been read
    return notifier


def smtp_table(server: SMTPServer, **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "from": f"SIEM alerts <{SENDER}>",
        "timeout": 5,
        # Skips smtplib's getfqdn() (a DNS lookup) and makes the EHLO name checkable.
        "client_hostname": "siem-test.example",
    }
    table.update(extra)
    return table


def tls_table(server: SMTPServer, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "security": "starttls",
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "ca_file": server.ca_file,
    }
    return smtp_table(server, **{**settings, **extra})


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    # The wire format is CRLF; only a *bare* CR would be news, so keep that visible.
    return content.replace("\r\n", "\n")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret(text: str, secret: str = SMTP_PASSWORD) -> None:
    # Also the forms it takes on the wire: AUTH LOGIN's base64 password and AUTH PLAIN's
    # base64 "\0user\0password" (a server log of the session could show those).
    forms = [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"\0{SMTP_USER}\0{secret}".encode()).decode(),
    ]
    for form in forms:
        assert form not in text


# --------------------------------------------------------------------------- registration


def test_registers_email_notifier_over_the_smtp_section() -> None:
    (spec,) = email_plugin.siem_register_notifiers()
    assert spec.name == "email"
    assert spec.section == "smtp"
    assert spec.factory == EmailNotifier.from_options
    notifier = spec.factory(options({"to": ADMINS}, {"host": "mail.example.com", "from": SENDER}))
    assert isinstance(notifier, Notifier)


# --------------------------------------------------------------------------- options


def test_smtp_section_supplies_defaults_and_notify_overrides() -> None:
    notifier = build(
        {"to": ["one@example.com"], "subject_prefix": "[acme]"},
        {
            "host": "mail.example.com",
            "from": SENDER,
            "to": ["all@example.com"],
            "subject_prefix": "[SIEM]",
        },
    )
    assert notifier.settings.host == "mail.example.com"
    assert notifier.settings.port == 587  # starttls default
    assert notifier.recipients == ["one@example.com"]
    assert notifier.template.subject_prefix == "[acme]"
    assert notifier.max_listed == 200
    assert notifier.settings.timeout == 30.0
    assert notifier.url == "smtp://mail.example.com:587"


@pytest.mark.parametrize(
    ("security", "port", "url"),
    [
        ("starttls", 587, "smtp://mail.example.com:587"),
        ("tls", 465, "smtps://mail.example.com:465"),
        ("none", 25, "smtp://mail.example.com:25"),
    ],
)
def test_default_port_follows_security(security: str, port: int, url: str) -> None:
    notifier = build(
        {"to": ADMINS, "security": security}, {"host": "mail.example.com", "from": SENDER}
    )
    assert (notifier.settings.port, notifier.url) == (port, url)


def test_duplicate_recipients_are_sent_once() -> None:
    notifier = build(
        {"to": ["a@example.com", "b@example.com", "a@example.com"]},
        {"host": "mail.example.com", "from": SENDER},
    )
    assert notifier.recipients == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("notify", "smtp", "where", "words"),
    [
        ({"to": ADMINS}, {"from": SENDER}, f"{NOTIFY_PATH}.host", "missing required"),
        ({"to": ADMINS}, {"host": "mail example.com", "from": SENDER}, "smtp.host", "host name"),
        ({"to": ADMINS}, {"host": "m.example.com"}, f"{NOTIFY_PATH}.from", "missing required"),
        (
            {"to": ADMINS, "from": "not an address"},
            {"host": "m.example.com"},
            f"{NOTIFY_PATH}.from",
            "expected an address like admin@example.com",
        ),
        (
            {"to": ADMINS, "from": "SIEM <siem@>"},
            {"host": "m.example.com"},
            f"{NOTIFY_PATH}.from",
            "'siem@' is not an email address",
        ),
        (
            {"to": ADMINS, "from": "x@example.com\r\nBcc: evil@example.com"},
            {"host": "m.example.com"},
            f"{NOTIFY_PATH}.from",
            "control characters",
        ),
        ({}, {"host": "m.example.com", "from": SENDER}, f"{NOTIFY_PATH}.to", "missing required"),
        (
            {"to": []},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.to",
            "at least one",
        ),
        (
            {"to": ["soc@example.com", "oops"]},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.to",
            "item 1",
        ),
        (
            {"to": ["a@example.com, b@example.com"]},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.to",
            "item 0",
        ),
        (
            {"to": [7]},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.to",
            "expected a string",
        ),
        (
            {"to": ADMINS, "security": "ssl"},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.security",
            "starttls, tls, none",
        ),
        (
            {"to": ADMINS},
            {"host": "m.example.com", "from": SENDER, "port": 70000},
            "smtp.port",
            "at most 65535",
        ),
        (
            {"to": ADMINS},
            {"host": "m.example.com", "from": SENDER, "username": "siem"},
            "smtp.username",
            "needs a password",
        ),
        (
            {"to": ADMINS, "password": "pw"},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.password",
            "needs a username",
        ),
        (
            {"to": ADMINS, "security": "none"},
            {"host": "m.example.com", "from": SENDER, "username": "u", "password": "pw"},
            f"{NOTIFY_PATH}.security",
            "without TLS",
        ),
        (
            {"to": ADMINS, "timeout": 0},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.timeout",
            "more than 0",
        ),
        (
            {"to": ADMINS, "verify": "no"},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.verify",
            "true or false",
        ),
        (
            {"to": ADMINS, "max_listed": -1},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.max_listed",
            "at least 0",
        ),
        (
            {"to": ADMINS, "subject_prefix": "[SIEM]\r\nBcc: x@example.com"},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.subject_prefix",
            "control",
        ),
        (
            {"to": ADMINS, "ca_file": "/nonexistent/ca.pem"},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.ca_file",
            "cannot load CA bundle",
        ),
        (
            {"to": ADMINS, "tos": ["x@example.com"]},
            {"host": "m.example.com", "from": SENDER},
            f"{NOTIFY_PATH}.tos",
            "unknown setting",
        ),
    ],
)
def test_bad_options_name_the_key(
    notify: dict[str, Any], smtp: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(notify, smtp)
    assert info.value.file == "siem.toml"
    assert info.value.path == where
    assert words in info.value.message
    assert str(info.value).startswith(f"siem.toml: {where}: ")


def test_password_is_a_secret_in_the_notifier() -> None:
    notifier = build(
        {"to": ADMINS},
        {"host": "m.example.com", "from": SENDER, "username": "siem", "password": SMTP_PASSWORD},
    )
    assert_no_secret(repr(notifier))
    assert_no_secret(repr(vars(notifier)))


# --------------------------------------------------------------------------- delivery


def test_digest_arrives_once_with_headers_and_body(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS}, smtp_table(smtp_server))
    before = datetime.now(UTC).replace(microsecond=0)
    notifier.notify(seed_digest())

    assert len(smtp_server.messages) == 1
    got = smtp_server.messages[0]
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ADMINS
    assert got.tls is False
    assert got.login is None
    msg = got.message
    assert msg["From"] == f"SIEM alerts <{SENDER}>"
    assert msg["To"] == ", ".join(ADMINS)
    assert msg["Subject"] == "[SIEM] acme: 3 selected events (exempt_all ×2, config ×1)"  # noqa: RUF001
    assert msg["Message-ID"] == f"<{MESSAGE_ID}>"
    assert msg["Auto-Submitted"] == "auto-generated"
    sent = msg["Date"].datetime
    assert sent.utcoffset() == timedelta(0)
    assert before <= sent <= datetime.now(UTC)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    # Folded lines are CRLF + whitespace; an unfolded header line would be an injection.
    assert all(len(line) <= 998 for line in got.data.split(b"\r\n"))

    body = body_of(msg)
    assert body.startswith(
        "Integration: acme\n"
        "Account:     acme\n"
        "Event ids:   101 to 104\n"
        "Selected:    3 events (exempt_all: 2, config: 1)\n"
        "\n"
    )
    assert "Showing the first" not in body
    assert (
        "[1] 2022-07-15T08:55:12.279Z  Device / exempt_all  (event 101)\n"
        "    Device:  Cuong Ba (cuongbavuacakhia1657786592)\n"
        "    On:      group Default, user Wilfred Hoeger\n"
        "    Details: Device Cuong Ba was exempted by Phuong Phuong Phuong Phuong Phuong"
        "(phuongphweekly@gmail.com)24 hour(s)\n"
    ) in body
    assert "[2] 2022-07-15T08:55:25.377Z  Device / exempt_all  (event 102)\n" in body
    assert "    Device:  Cuong Ba (cuongbavuacakhia1657868171)\n" in body
    assert (
        "[3] 2022-07-15T11:19:41.629Z  Account / config  (event 104)\n"
        "    Admin:   Phuong Weekly 1 <phuongphweekly@gmail.com>\n"
        "    Event:   Configuration Change\n"
        "    Details: Administrator Phuong Phuong Phuong Phuong Phuong "
        "(phuongphweekly@gmail.com) changed Settings - Integrations - SIEM Integration \n"
    ) in body
    assert "[4]" not in body


def test_single_event_subject_is_singular(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS[:1], "subject_prefix": ""}, smtp_table(smtp_server))
    notifier.notify(make_digest([make_event(7, SEED_EVENTS[2])]))
    subject = smtp_server.messages[0].message["Subject"]
    assert subject == "acme: 1 selected event (config ×1)"  # noqa: RUF001


def test_starttls_and_auth_with_the_test_ca(
    smtp_tls_server: SMTPServer, logs: pytest.LogCaptureFixture
) -> None:
    notifier = build({"to": ADMINS}, tls_table(smtp_tls_server))
    notifier.notify(seed_digest())
    assert len(smtp_tls_server.messages) == 1
    got = smtp_tls_server.messages[0]
    assert got.tls is True
    assert got.login == SMTP_USER
    assert got.rcpt_tos == ADMINS
    assert got.message["Message-ID"] == f"<{MESSAGE_ID}>"
    for record in logs.records:
        assert_no_secret(record.getMessage())


def test_implicit_tls_and_auth() -> None:
    with SMTPServer(implicit_tls=True, auth=(SMTP_USER, SMTP_PASSWORD)) as server:
        notifier = build({"to": ADMINS}, tls_table(server, security="tls"))
        assert notifier.url == f"smtps://127.0.0.1:{server.port}"
        notifier.notify(seed_digest())
        assert [(m.tls, m.login) for m in server.messages] == [(True, SMTP_USER)]


def test_partially_refused_recipients_succeed_with_a_warning(
    smtp_server: SMTPServer, logs: pytest.LogCaptureFixture
) -> None:
    smtp_server.reject_recipient(ADMINS[1], 550, "5.1.1 no such mailbox")
    build({"to": ADMINS}, smtp_table(smtp_server)).notify(seed_digest())
    assert [m.rcpt_tos for m in smtp_server.messages] == [ADMINS[:1]]
    warnings = [
        r.getMessage()
        for r in logs.records
        if r.levelno == logging.WARNING and r.name == email_plugin.__name__
    ]
    assert len(warnings) == 1
    assert ADMINS[1] in warnings[0]
    assert "550 5.1.1 no such mailbox" in warnings[0]


# --------------------------------------------------------------------------- failures


def test_wrong_password_is_permanent_and_never_shown(
    smtp_tls_server: SMTPServer, logs: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-Passw0rd-xyzzy"
    notifier = build({"to": ADMINS}, tls_table(smtp_tls_server, password=wrong))
    with pytest.raises(NotifierError) as info:
        notifier.notify(seed_digest())
    err = info.value
    assert err.permanent is True
    assert err.code == 535
    assert str(err) == (
        f"smtp://127.0.0.1:{smtp_tls_server.port}: login failed: "
        "535 5.7.8 Authentication credentials invalid"
    )
    # smtplib tries each offered mechanism (PLAIN, then LOGIN) before giving up.
    assert smtp_tls_server.failed_logins >= 1
    assert smtp_tls_server.messages == []
    for text in [str(err), repr(err), repr(notifier)] + [r.getMessage() for r in logs.records]:
        assert_no_secret(text, wrong)


def test_server_down_is_transient(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS}, smtp_table(smtp_server))
    smtp_server.stop()
    with pytest.raises(NotifierError) as info:
        notifier.notify(seed_digest())
    assert info.value.permanent is False
    assert info.value.code is None
    assert str(info.value).startswith(f"smtp://127.0.0.1:{smtp_server.port}: connect failed: ")
    assert "refused" in str(info.value).lower()


def test_451_at_data_is_transient_and_a_retry_delivers_once(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS}, smtp_table(smtp_server))
    digest = seed_digest()
    smtp_server.fail_next(451, "4.3.0 try later", stage="DATA")
    with pytest.raises(NotifierError) as info:
        notifier.notify(digest)
    assert info.value.permanent is False
    assert info.value.code == 451
    assert "send failed: 451 4.3.0 try later" in str(info.value)
    assert smtp_server.messages == []

    notifier.notify(digest)
    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0].message["Message-ID"] == f"<{MESSAGE_ID}>"


@pytest.mark.parametrize(
    ("stage", "code", "permanent", "words"),
    [
        ("MAIL", 550, True, f"sender {SENDER} refused: 550 5.7.1 not allowed"),
        ("MAIL", 421, False, "421 4.7.0 busy"),
        ("DATA", 554, True, "554 5.6.0 rejected"),
    ],
)
def test_server_replies_map_to_permanence(
    smtp_server: SMTPServer, stage: Any, code: int, permanent: bool, words: str
) -> None:
    text = words.rsplit(f"{code} ", 1)[1]
    smtp_server.fail_next(code, text, stage=stage)
    with pytest.raises(NotifierError) as info:
        build({"to": ADMINS}, smtp_table(smtp_server)).notify(seed_digest())
    assert (info.value.permanent, info.value.code) == (permanent, code)
    assert words in str(info.value)
    assert smtp_server.messages == []


def test_all_recipients_refused_is_permanent(smtp_server: SMTPServer) -> None:
    for admin in ADMINS:
        smtp_server.reject_recipient(admin)
    with pytest.raises(NotifierError) as info:
        build({"to": ADMINS}, smtp_table(smtp_server)).notify(seed_digest())
    assert info.value.permanent is True
    assert "all recipients refused" in str(info.value)
    assert all(admin in str(info.value) for admin in ADMINS)
    assert smtp_server.messages == []


def test_no_plaintext_fallback_when_starttls_is_missing(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS}, smtp_table(smtp_server, security="starttls"))
    with pytest.raises(NotifierError) as info:
        notifier.notify(seed_digest())
    assert info.value.permanent is True
    assert "does not offer STARTTLS" in str(info.value)
    assert smtp_server.messages == []


def test_untrusted_certificate_is_rejected(smtp_tls_server: SMTPServer) -> None:
    table = tls_table(smtp_tls_server)
    del table["ca_file"]  # the system store does not know the test CA
    with pytest.raises(NotifierError) as info:
        build({"to": ADMINS}, table).notify(seed_digest())
    assert info.value.permanent is True
    assert "STARTTLS failed: TLS certificate rejected" in str(info.value)
    assert smtp_tls_server.messages == []


def test_verify_false_accepts_an_untrusted_certificate(smtp_tls_server: SMTPServer) -> None:
    table = tls_table(smtp_tls_server, verify=False)
    del table["ca_file"]
    build({"to": ADMINS}, table).notify(seed_digest())
    assert [m.tls for m in smtp_tls_server.messages] == [True]


def test_silent_server_times_out_as_transient() -> None:
    # Listening but never accepting: the TCP connect succeeds, the greeting never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        notifier = build(
            {"to": ADMINS},
            {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "from": SENDER,
                "timeout": 0.3,
                "client_hostname": "siem-test.example",
            },
        )
        started = time.monotonic()
        with pytest.raises(NotifierError) as info:
            notifier.notify(seed_digest())
        assert time.monotonic() - started < 3
    assert info.value.permanent is False
    assert str(info.value) == (
        f"smtp://127.0.0.1:{port}: connect failed: timed out after 0.3s waiting for the server"
    )


# --------------------------------------------------------------------------- content safety


def test_non_ascii_event_text_round_trips(smtp_server: SMTPServer) -> None:
    record = dict(SEED_EVENTS[0], device_name="Cường Bá", device_username="Nguyễn Văn A")
    build({"to": ADMINS}, smtp_table(smtp_server)).notify(make_digest([make_event(1, record)]))
    got = smtp_server.messages[0]
    assert got.data.isascii()  # quoted-printable: safe through any relay, 8BITMIME or not
    body = body_of(got.message)
    assert "    Device:  Cường Bá (cuongbavuacakhia1657786592)\n" in body
    assert "    On:      group Default, user Nguyễn Văn A\n" in body


def test_event_text_cannot_inject_headers(smtp_server: SMTPServer) -> None:
    hostile = dict(
        SEED_EVENTS[0],
        device_name="Cuong Ba\r\nBcc: evil@example.com",
        details="exempted\nSubject: x\n\nfake body\u2028line\u202eevil",
    )
    admin = dict(SEED_EVENTS[2], admin_name="Eve\r\nTo: evil@example.com")
    digest = make_digest([make_event(101, hostile), make_event(102, admin)])
    build({"to": ADMINS}, smtp_table(smtp_server)).notify(digest)

    (got,) = smtp_server.messages
    assert got.rcpt_tos == ADMINS
    msg = got.message
    assert msg["Bcc"] is None
    expected = "[SIEM] acme: 2 selected events (config ×1, exempt_all ×1)"  # noqa: RUF001
    assert msg.get_all("Subject") == [expected]
    assert msg.get_all("To") == [", ".join(ADMINS)]
    header_block = got.data.split(b"\r\n\r\n", 1)[0]
    assert b"evil" not in header_block
    body = body_of(msg)
    assert "    Device:  Cuong Ba\\r\\nBcc: evil@example.com (cuongbavuacakhia1657786592)\n" in body
    assert "    Details: exempted\\nSubject: x\\n\\nfake body\\u2028line\\u202eevil\n" in body
    assert "    Admin:   Eve\\r\\nTo: evil@example.com <phuongphweekly@gmail.com>\n" in body
    # No body line starts with something a reader could take for a header.
    assert not [
        line
        for line in body.splitlines()
        if line.startswith(("Bcc:", "Subject:", "To:", "fake body", "line"))
    ]


def test_control_characters_ingest_keeps_are_shown_as_visible_escapes(
    smtp_server: SMTPServer,
) -> None:
    # NUL, ESC (terminal colours), DEL and NEL are stored since events are never dropped
    # for their text; the mail shows them as escapes, never raw.
    record = dict(SEED_EVENTS[0], details="a\x00b\x1b[31mred\x7fdel\x85nel\u2029end")
    build({"to": ADMINS}, smtp_table(smtp_server)).notify(make_digest([make_event(1, record)]))
    body = body_of(smtp_server.messages[0].message)
    assert "    Details: a\\x00b\\x1b[31mred\\x7fdel\\x85nel\\u2029end\n" in body
    assert not any(c in body for c in "\x00\x1b\x7f\x85\u2029")


def test_unsafe_message_id_is_replaced_by_a_stable_safe_one(smtp_server: SMTPServer) -> None:
    notifier = build({"to": ADMINS}, smtp_table(smtp_server))
    bad = "acme 1-3>\r\nBcc: evil@example.com"
    notifier.notify(make_digest([make_event(1, SEED_EVENTS[2])], message_id=bad))
    notifier.notify(make_digest([make_event(1, SEED_EVENTS[2])], message_id=bad))
    ids = [m.message["Message-ID"] for m in smtp_server.messages]
    assert ids[0] == ids[1]
    assert ids[0].startswith("<")
    assert ids[0].endswith("@siem-plugins.invalid>")
    assert all(m.message["Bcc"] is None for m in smtp_server.messages)


@pytest.mark.parametrize("listed", [200, 500], ids=["core-truncated", "notifier-truncates"])
def test_long_digest_lists_max_listed_of_total(smtp_server: SMTPServer, listed: int) -> None:
    records = [dict(SEED_EVENTS[i % 2], device_id=f"dev{i:04d}") for i in range(500)]
    events = [make_event(1000 + i, r) for i, r in enumerate(records)]
    digest = make_digest(events[:listed], total=500)
    notifier = build({"to": ADMINS, "max_listed": 200}, smtp_table(smtp_server))
    assert notifier.max_listed == 200
    notifier.notify(digest)

    body = body_of(smtp_server.messages[0].message)
    assert "Showing the first 200 of 500 selected events.\n" in body
    assert "Selected:    500 events" in body
    assert "[200] " in body
    assert "(dev0199)" in body
    assert "[201] " not in body
    assert "(dev0200)" not in body
    assert sum(line.startswith("    Device:") for line in body.splitlines()) == 200


def test_oversized_field_is_shortened(smtp_server: SMTPServer) -> None:
    record = dict(SEED_EVENTS[0], details="x" * 10_000)
    build({"to": ADMINS}, smtp_table(smtp_server)).notify(make_digest([make_event(1, record)]))
    body = body_of(smtp_server.messages[0].message)
    assert f"    Details: {'x' * 2000}… (8000 more characters)\n" in body


# --------------------------------------------------------------------------- probe


def test_probe_logs_in_and_sends_noop(smtp_tls_server: SMTPServer) -> None:
    build({"to": ADMINS}, tls_table(smtp_tls_server)).probe()
    assert smtp_tls_server.noops == 1
    assert smtp_tls_server.failed_logins == 0
    assert smtp_tls_server.messages == []


def test_probe_reports_bad_credentials(smtp_tls_server: SMTPServer) -> None:
    with pytest.raises(NotifierError) as info:
        build({"to": ADMINS}, tls_table(smtp_tls_server, password="nope-nope")).probe()
    assert info.value.permanent is True
    assert "nope-nope" not in str(info.value)
    assert smtp_tls_server.noops == 0


def test_probe_fails_on_a_closed_port() -> None:
    port = closed_port()
    notifier = build(
        {"to": ADMINS},
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from": SENDER,
            "timeout": 2,
            "client_hostname": "siem-test.example",
        },
    )
    with pytest.raises(NotifierError) as info:
        notifier.probe()
    assert info.value.permanent is False
    assert str(info.value).startswith(f"smtp://127.0.0.1:{port}: connect failed")
    notifier.close()  # a no-op, and safe after a failure
