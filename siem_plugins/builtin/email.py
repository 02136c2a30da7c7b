"""The built-in ``email`` notifier: one plain-text digest mail per sync, over SMTP.

Settings come from the integration's ``notify`` table layered over the top-level
``[smtp]`` table, so a deployment names its relay once and an integration overrides only
what differs (usually ``to``).

Event text is attacker-influenced (a device can be named anything), so none of it goes
into a header: the subject carries only the integration name, counts and log types
(identifiers, and sanitised anyway). In the body every control character, CR and LF
included, is shown as a visible escape, so no event can start a line of its own, let
alone one that looks like a header.

Failures raise :class:`NotifierError`, whose message names ``smtp://host:port`` and the
server's code and reply (never the password), and whose ``permanent`` flag says whether
retrying without a config change can help.

Two clocks bound a delivery: ``timeout`` for each network read or write, and
``deadline`` for the whole session, connect to QUIT. The per-read timeout alone never
fires against a tarpit, a server that keeps sending a byte or a ``220-`` continuation
line every few seconds; the deadline ends such a session by shutting its socket down.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from typing import Any

from siem_plugins import hookimpl
from siem_plugins.events import ACCOUNT, DEVICE, Event
from siem_plugins.kinds import Digest, NotifierBase, NotifierSpec
from siem_plugins.options import MAX_TIMEOUT_S, Options, Secret

log = logging.getLogger(__name__)

SECURITIES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEFAULT_TIMEOUT = 30.0
#: The whole SMTP session (connect, greeting, TLS, login, send, QUIT) must end within this.
DEFAULT_DEADLINE = 120.0
#: Upper bound for ``deadline``: beyond it a stuck relay is just stuck.
MAX_DEADLINE_S = 3600.0
DEFAULT_SUBJECT_PREFIX = "[SIEM]"
DEFAULT_MAX_LISTED = 200
#: Upper bound for ``max_listed``: beyond this a mail is a data dump, not a digest.
MAX_MAX_LISTED = 10_000
#: Longest field value shown in the body; a 64 KiB ``details`` would drown the digest.
MAX_FIELD_CHARS = 2_000
#: Log types named in the subject; the rest are summarised, the body has them all.
SUBJECT_LOG_TYPES = 5

# A deliberately conservative address check: ASCII dot-atom local part and a hostname
# (or bracketed literal). Quoted local parts and SMTPUTF8 addresses are not needed for
# admin mailboxes and are where parsers disagree (CVE-2023-27043).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rf"{_ATOM}(?:\.{_ATOM})*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_ADDR_RE = re.compile(rf"{_LOCAL}@{_DOMAIN}\Z")
# "Display Name <addr>" or a bare address. The name may be quoted; it may not contain
# angle brackets, so there is exactly one way to read the value.
_NAMED_ADDR_RE = re.compile(
    r'\s*(?:"?(?P<name>[^<>"]*?)"?\s*<(?P<addr>[^<>\s]+)>|(?P<bare>\S+))\s*\Z'
)
# Message-ID: dot-atom "@" dot-atom (RFC 5322 msg-id without the obsolete forms).
_MSGID_RE = re.compile(rf"{_LOCAL}@{_LOCAL}\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9._:\[\]-]+\Z")

# Everything a mail reader or terminal might treat as a line break or a formatting
# command: C0 and C1 controls, DEL, Unicode line/paragraph separators and the bidi
# overrides (which can make text read backwards, e.g. a spoofed file name).
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


class NotifierError(RuntimeError):
    """A digest could not be delivered (or a probe failed).

    :ivar permanent: ``True`` when retrying without changing the configuration cannot
        help (5xx replies, bad credentials, certificate rejected); ``False`` for 4xx
        replies, refused connections, timeouts and dropped connections.
    :ivar code: the SMTP reply code, when the server sent one.
    """

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class _Mailbox:
    name: str
    addr: str

    def address(self) -> Address:
        local, _, domain = self.addr.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)


class EmailNotifier(NotifierBase):
    """Sends one digest mail per sync. Implements :class:`~siem_plugins.kinds.Notifier`."""

    def __init__(
        self,
        host: str,
        *,
        sender: str,
        recipients: Sequence[str],
        port: int | None = None,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        verify: bool = True,
        ca_file: str | None = None,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        max_listed: int = DEFAULT_MAX_LISTED,
        client_hostname: str | None = None,
    ) -> None:
        if security not in SECURITIES:
            raise ValueError(
                f"unknown security {security!r}; choose one of: {', '.join(SECURITIES)}"
            )
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.host = host
        self.port = port if port is not None else DEFAULT_PORTS[security]
        self.security = security
        self._sender = _mailbox(sender)
        self._recipients = [_mailbox(r) for r in recipients]
        if not self._recipients:
            raise ValueError("at least one recipient is needed")
        self.username = username
        self._password = Secret(password) if password is not None else None
        self.timeout = timeout
        self.deadline = deadline
        self.verify = verify
        self.ca_file = ca_file
        self.subject_prefix = _header_text(subject_prefix)
        self.max_listed = max_listed
        self.client_hostname = client_hostname
        # Built once: loading a CA bundle is not free, and a bad ca_file should fail at
        # start-up rather than at the first alert.
        self._tls = _tls_context(verify, ca_file) if security != "none" else None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_options(cls, options: Options) -> EmailNotifier:
        host = options.string("host", required=True)
        if not host or not _HOST_RE.match(host):
            raise options.error("host", f"expected a host name or IP address, got {host!r}")
        security = options.string("security", "starttls", choices=SECURITIES)
        port = options.integer("port", DEFAULT_PORTS[security], min=1, max=65535)
        username = options.string("username")
        password = options.secret("password")
        if username is not None and password is None:
            raise options.error("username", "a username needs a password (set both or neither)")
        if password is not None and username is None:
            raise options.error("password", "a password needs a username (set both or neither)")
        if username is not None and security == "none":
            # smtplib would send the credentials in clear text over the network.
            raise options.error(
                "security",
                "refusing to log in without TLS; use "
                'security = "starttls" or "tls" with a username',
            )
        if username is not None and (not username or _UNSAFE_RE.search(username)):
            raise options.error("username", "must be non-empty, without control characters")

        sender = options.string("from", required=True)
        try:
            _mailbox(sender)
        except ValueError as exc:
            raise options.error("from", str(exc)) from None
        recipients = options.strings("to", required=True) or []
        if not recipients:
            raise options.error("to", "needs at least one address")
        for i, rcpt in enumerate(recipients):
            try:
                _mailbox(rcpt)
            except ValueError as exc:
                raise options.error("to", f"item {i}: {exc}") from None
        # Duplicates would only earn the recipient two copies.
        recipients = list(dict.fromkeys(recipients))

        bounds: dict[str, float] = {}
        for key, default, most in (
            ("timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT_S),
            ("deadline", DEFAULT_DEADLINE, MAX_DEADLINE_S),
        ):
            value = options.number(key, default, max=most)
            if value <= 0:
                raise options.error(key, f"must be more than 0 seconds, got {value}")
            bounds[key] = value
        verify = options.boolean("verify", True)
        ca_file = options.string("ca_file")
        subject_prefix = options.string("subject_prefix", DEFAULT_SUBJECT_PREFIX)
        if _UNSAFE_RE.search(subject_prefix):
            raise options.error("subject_prefix", "must not contain control characters")
        max_listed = options.integer("max_listed", DEFAULT_MAX_LISTED, min=0, max=MAX_MAX_LISTED)
        client_hostname = options.string("client_hostname")
        if client_hostname is not None and not _HOST_RE.match(client_hostname):
            raise options.error(
                "client_hostname",
                f"expected a host name or address literal, got {client_hostname!r}",
            )
        try:
            return cls(
                host,
                sender=sender,
                recipients=recipients,
                port=port,
                security=security,
                username=username,
                password=password,
                timeout=bounds["timeout"],
                deadline=bounds["deadline"],
                verify=verify,
                ca_file=ca_file,
                subject_prefix=subject_prefix,
                max_listed=max_listed,
                client_hostname=client_hostname,
            )
        except OSError as exc:
            # Only the CA bundle is read here: missing, unreadable or not PEM (SSLError).
            raise options.error("ca_file", f"cannot load CA bundle {ca_file!r}: {exc}") from None

    # ------------------------------------------------------------------ Notifier

    def describe(self) -> str:
        """Where mail goes: ``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        return self.url

    @property
    def url(self) -> str:
        """Where mail goes, for messages: ``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        scheme = "smtps" if self.security == "tls" else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def recipients(self) -> list[str]:
        return [r.addr for r in self._recipients]

    @property
    def sender(self) -> str:
        return self._sender.addr

    def build_message(self, digest: Digest, *, now: datetime | None = None) -> EmailMessage:
        """The digest as a mail, ready to send (exposed for tests and previews)."""
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = self._sender.address()
        msg["To"] = tuple(r.address() for r in self._recipients)
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = f"<{_message_id(digest.message_id)}>"
        msg["Subject"] = self._subject(digest)
        # RFC 3834: keeps vacation responders and ticket systems from answering alerts.
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(self._body(digest), charset="utf-8", cte="quoted-printable")
        return msg

    def notify(self, digest: Digest) -> None:
        msg = self.build_message(digest)
        with self._session() as smtp:
            refused = self._send(smtp, msg)
        if refused:
            log.warning(
                "%s: digest %s: recipients refused: %s",
                self.url,
                digest.message_id,
                ", ".join(
                    f"{addr} ({_reply(code, text)})" for addr, (code, text) in refused.items()
                ),
            )
        log.info(
            "%s: sent digest %s (%d events) to %d recipient(s)",
            self.url,
            digest.message_id,
            digest.total,
            len(self._recipients) - len(refused),
        )

    def probe(self) -> None:
        with self._session() as smtp:
            try:
                code, text = smtp.noop()
            except (smtplib.SMTPException, OSError) as exc:
                raise self._error("NOOP", exc) from exc
            if code != 250:
                raise NotifierError(
                    f"{self.url}: NOOP failed: {_reply(code, text)}",
                    permanent=500 <= code < 600,
                    code=code,
                )

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"EmailNotifier({self.url}, to={self.recipients!r})"

    # ------------------------------------------------------------------ SMTP

    @contextlib.contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """An open session (after EHLO, STARTTLS and login as configured) that must be
        over within ``deadline`` seconds; QUIT at the end."""
        watchdog = _Deadline(self.deadline)
        try:
            smtp = self._open(watchdog)
            try:
                yield smtp
            finally:
                if watchdog.expired:
                    smtp.close()
                else:
                    _quit(smtp)
        except NotifierError as exc:
            if watchdog.expired:
                # Whatever the socket said last, the deadline is why it said it.
                raise NotifierError(
                    f"{self.url}: gave up after the {self.deadline:g}s deadline for the whole "
                    "delivery (the server answers too slowly or not at all)",
                    permanent=False,
                ) from exc
            raise
        finally:
            watchdog.stop()

    def _open(self, watchdog: _Deadline) -> smtplib.SMTP:
        """Connect, EHLO, STARTTLS and log in as configured, watched by ``watchdog``."""
        log.debug("%s: connecting (security %s)", self.url, self.security)
        stage = "connect"
        smtp: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                smtp = _WatchedSMTP_SSL(
                    watchdog,
                    self.host,
                    self.port,
                    local_hostname=self.client_hostname,
                    timeout=self.timeout,
                    context=self._tls,
                )
            else:
                smtp = _WatchedSMTP(
                    watchdog,
                    self.host,
                    self.port,
                    local_hostname=self.client_hostname,
                    timeout=self.timeout,
                )
            stage = "EHLO"
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                stage = "STARTTLS"
                if not smtp.has_extn("starttls"):
                    # Never fall back to clear text: that is what a downgrade attack wants.
                    raise NotifierError(
                        f"{self.url}: the server does not offer STARTTLS "
                        '(set security = "tls" for implicit TLS, or "none")',
                        permanent=True,
                    )
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if self.username is not None and self._password is not None:
                stage = "login"
                smtp.login(self.username, self._password.reveal())
        except NotifierError:
            _abandon(smtp or watchdog.smtp)
            raise
        except (smtplib.SMTPException, OSError) as exc:
            _abandon(smtp or watchdog.smtp)
            raise self._error(stage, exc) from exc
        return smtp

    def _send(self, smtp: smtplib.SMTP, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        try:
            refused = smtp.send_message(msg, from_addr=self._sender.addr, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error("send", exc) from exc
        return refused

    def _error(self, stage: str, exc: BaseException) -> NotifierError:
        """Translate a smtplib/socket/ssl failure into a NotifierError (password-free)."""
        code: int | None = None
        permanent = False
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [c for c, _ in exc.recipients.values()]
            permanent = bool(codes) and all(500 <= c < 600 for c in codes)
            what = "all recipients refused: " + ", ".join(
                f"{addr} ({_reply(c, t)})" for addr, (c, t) in exc.recipients.items()
            )
            code = codes[0] if codes else None
        elif isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            permanent = 500 <= code < 600
            what = _reply(code, exc.smtp_error)
            if isinstance(exc, smtplib.SMTPSenderRefused):
                what = f"sender {exc.sender} refused: {what}"
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            permanent = True  # e.g. no AUTH offered: a config mismatch, not a hiccup
            what = str(exc)
        elif isinstance(exc, smtplib.SMTPServerDisconnected):
            # smtplib reports a read timeout as a disconnect; say what really happened.
            if isinstance(exc.__context__, TimeoutError):
                what = f"timed out after {self.timeout:g}s waiting for the server"
            else:
                what = (
                    f"connection closed by the server ({exc})"
                    if str(exc)
                    else "connection closed by the server"
                )
        elif isinstance(exc, smtplib.SMTPException):
            permanent = True  # e.g. "No suitable authentication method found."
            what = str(exc)
        elif isinstance(exc, ssl.SSLCertVerificationError):
            # Retrying will not make an untrusted certificate trusted; the operator must.
            permanent = True
            what = f"TLS certificate rejected: {exc.verify_message or exc}"
        elif isinstance(exc, ssl.SSLError):
            what = f"TLS error: {exc.reason or exc}"
        elif isinstance(exc, TimeoutError):
            what = f"timed out after {self.timeout:g}s"
        elif isinstance(exc, socket.gaierror):
            what = f"cannot resolve host: {exc.strerror or exc}"
        elif isinstance(exc, OSError):
            what = exc.strerror or str(exc) or type(exc).__name__
        else:  # pragma: no cover - _open/_send only pass the types above
            what = str(exc)
        return NotifierError(
            self._redact(f"{self.url}: {stage} failed: {what}"), permanent=permanent, code=code
        )

    def _redact(self, text: str) -> str:
        # Servers do not echo credentials, but a message that might be logged is no place
        # to find out that one does.
        if self._password:
            text = text.replace(self._password.reveal(), "***")
        return text

    # ------------------------------------------------------------------ content

    def _subject(self, digest: Digest) -> str:
        counts = _ordered_counts(digest.counts)
        parts = [
            f"{_header_text(lt)} \N{MULTIPLICATION SIGN}{n}" for lt, n in counts[:SUBJECT_LOG_TYPES]
        ]
        if len(counts) > SUBJECT_LOG_TYPES:
            parts.append(f"+{len(counts) - SUBJECT_LOG_TYPES} more")
        noun = "event" if digest.total == 1 else "events"
        subject = f"{_header_text(digest.integration)}: {digest.total} selected {noun}"
        if parts:
            subject += f" ({', '.join(parts)})"
        return f"{self.subject_prefix} {subject}" if self.subject_prefix else subject

    def _body(self, digest: Digest) -> str:
        listed = list(digest.events[: self.max_listed])
        counts = ", ".join(f"{_visible(lt)}: {n}" for lt, n in _ordered_counts(digest.counts))
        lines = [
            f"Integration: {_visible(digest.integration)}",
            f"Account:     {_visible(digest.account)}",
            f"Event ids:   {digest.first_id} to {digest.last_id}",
            f"Selected:    {digest.total} event{'' if digest.total == 1 else 's'}"
            + (f" ({counts})" if counts else ""),
        ]
        if len(listed) < digest.total:
            lines.append(f"Showing the first {len(listed)} of {digest.total} selected events.")
        for number, event in enumerate(listed, 1):
            lines.append("")
            lines.extend(_event_lines(number, event))
        lines.append("")
        lines.append("-- ")
        lines.append(
            "Sent by siem-plugins. Each event's full record is in the integration's log storage."
        )
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- helpers


def _event_lines(number: int, event: Event) -> list[str]:
    try:
        fields = event.fields()
    except ValueError:
        fields = {}
    head = (
        f"[{number}] {_visible(event.timestamp)}  {_visible(event.type)} / "
        f"{_visible(event.log_type)}  (event {event.id})"
    )
    out = [head]

    def add(label: str, value: str) -> None:
        if value:
            out.append(f"    {label + ':':<9}{value}")

    if event.type == DEVICE:
        name, device_id = _field(fields, "device_name"), _field(fields, "device_id")
        add("Device", f"{name} ({device_id})" if name and device_id else name or device_id)
        group, user = _field(fields, "device_group"), _field(fields, "device_username")
        add("On", ", ".join(p for p in (group and f"group {group}", user and f"user {user}") if p))
    elif event.type == ACCOUNT:
        name, email = _field(fields, "admin_name"), _field(fields, "admin_email")
        add("Admin", f"{name} <{email}>" if name and email else name or email)
        add("Event", _field(fields, "event"))
    add("Details", _field(fields, "details"))
    return out


def _field(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_CHARS:
        text = f"{text[:MAX_FIELD_CHARS]}… ({len(text) - MAX_FIELD_CHARS} more characters)"
    return _visible(text)


def _visible(text: str) -> str:
    """``text`` on one line, with every control or layout character as a visible escape."""
    return _UNSAFE_RE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _header_text(text: str) -> str:
    """``text`` fit for a header: controls dropped, whitespace runs collapsed."""
    return " ".join(_UNSAFE_RE.sub(" ", text).split())


def _ordered_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _message_id(seed: str) -> str:
    """The core's id if it is a valid msg-id, else a stable one derived from it."""
    if _MSGID_RE.match(seed) and len(seed) <= 250:
        return seed
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{digest}@siem-plugins.invalid"


def _mailbox(value: str) -> _Mailbox:
    """Parse ``addr`` or ``Name <addr>``; raise ValueError saying what is wrong."""
    if _UNSAFE_RE.search(value):
        raise ValueError(f"{value!r} contains control characters")
    match = _NAMED_ADDR_RE.match(value)
    if match is None:
        raise ValueError(
            f"expected an address like admin@example.com or "
            f'"Name <admin@example.com>", got {value!r}'
        )
    addr = match.group("addr") or match.group("bare")
    name = (match.group("name") or "").strip()
    if not _ADDR_RE.match(addr) or len(addr) > 254:
        raise ValueError(f"{addr!r} is not an email address like admin@example.com")
    return _Mailbox(name, addr)


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # Explicitly asked for (self-signed relays on a private network); still encrypted.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {_header_text(text)}".strip()


def _quit(smtp: smtplib.SMTP) -> None:
    # The mail is accepted once DATA got its 250; a failing QUIT must not turn a delivered
    # digest into an error (the retry would deliver it twice).
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _abandon(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        smtp.close()


class _Deadline:
    """Ends an SMTP session that is still running after ``seconds``.

    smtplib's timeout applies to each socket operation, so a server that trickles its
    replies (a tarpit) can hold a session open for ever. When the deadline passes, this
    shuts the session's socket down from another thread: the blocked read returns at
    once and smtplib raises. Until the session ends it keeps shutting down whatever
    socket the client holds, in case the deadline passed while a connection was still
    being made (an implicit-TLS handshake inside the connect is bounded by ``timeout``
    alone: the socket is the client's only once the handshake is done).
    """

    def __init__(self, seconds: float) -> None:
        self.smtp: smtplib.SMTP | None = None
        self._done = threading.Event()
        self.expired = False
        self._thread = threading.Thread(
            target=self._watch, args=(seconds,), name="siem-smtp-deadline", daemon=True
        )
        self._thread.start()

    def _watch(self, seconds: float) -> None:
        if self._done.wait(seconds):
            return
        self.expired = True
        while not self._done.is_set():
            sock = self.smtp.sock if self.smtp is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class _WatchedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that shows itself to its deadline before it connects (the
    constructor connects and reads the greeting, the first place a tarpit stalls)."""

    def __init__(self, watchdog: _Deadline, *args: Any, **kwargs: Any) -> None:
        watchdog.smtp = self
        super().__init__(*args, **kwargs)


class _WatchedSMTP_SSL(smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` watched by a deadline (see :class:`_WatchedSMTP`)."""

    def __init__(self, watchdog: _Deadline, *args: Any, **kwargs: Any) -> None:
        watchdog.smtp = self
        super().__init__(*args, **kwargs)


@hookimpl
def siem_register_notifiers() -> list[NotifierSpec]:
    return [
        NotifierSpec(
            name="email",
            factory=EmailNotifier.from_options,
            description="one plain-text digest mail per sync over SMTP (STARTTLS/TLS, AUTH)",
            section="smtp",
        )
    ]
