"""A digest as a mail: the one renderer the ``email`` and ``outbox`` notifiers share.

:class:`MailTemplate` holds what every mail of a notifier has in common (sender,
recipients, subject prefix, how many events to list) and renders a
:class:`~siem_plugins.kinds.Digest` as an :class:`~email.message.EmailMessage`: plain
text, UTF-8, quoted-printable, with a stable Message-ID. Nothing here opens a connection,
so the outbox can use it without the SMTP code.

Event text is attacker-influenced (a device can be named anything), so none of it goes
into a header: the subject carries only the integration name, counts and log types
(identifiers, and sanitised anyway). In the body every control character, CR and LF
included, is shown as a visible escape, so no event can start a line of its own, let
alone one that looks like a header.

Addresses are parsed here too (:func:`parse_mailbox`), by one deliberately conservative
rule, because both notifiers validate their ``from`` and ``to`` settings with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from typing import Any

from siem_plugins.events import ACCOUNT, DEVICE, Event
from siem_plugins.kinds import DEFAULT_MAX_LISTED, Digest, Problem
from siem_plugins.options import Options

DEFAULT_SUBJECT_PREFIX = "[SIEM]"
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

# Everything a mail reader or terminal might treat as a line break or a formatting
# command: C0 and C1 controls, DEL, Unicode line/paragraph separators and the bidi
# overrides (which can make text read backwards, e.g. a spoofed file name).
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Mailbox:
    """A parsed mailbox: display ``name`` (may be empty) and ``addr`` (``local@domain``)."""

    name: str
    addr: str

    def address(self) -> Address:
        """The mailbox as a header value."""
        local, _, domain = self.addr.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)


def parse_mailbox(value: str) -> Mailbox:
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
    return Mailbox(name, addr)


def read_sender(options: Options) -> Mailbox:
    """The required ``from`` setting, parsed; a located error when it is no address."""
    value: str = options.string("from", required=True)
    try:
        return parse_mailbox(value)
    except ValueError as exc:
        raise options.error("from", str(exc)) from None


def read_recipients(options: Options) -> list[tuple[str, Mailbox]]:
    """The required ``to`` setting: each item as written and parsed, in order (duplicates
    kept, the list may be empty). A bad item is an error naming its index."""
    values = options.strings("to", required=True) or []
    out: list[tuple[str, Mailbox]] = []
    for i, value in enumerate(values):
        try:
            out.append((value, parse_mailbox(value)))
        except ValueError as exc:
            raise options.error("to", f"item {i}: {exc}") from None
    return out


def read_max_listed(options: Options) -> int:
    """The ``max_listed`` setting (``0``..:data:`MAX_MAX_LISTED`)."""
    value: int = options.integer("max_listed", DEFAULT_MAX_LISTED, min=0, max=MAX_MAX_LISTED)
    return value


# --------------------------------------------------------------------------- text


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a control or layout character (see :func:`visible`)."""
    return _UNSAFE_RE.search(text) is not None


def visible(text: str) -> str:
    """``text`` on one line, with every control or layout character as a visible escape."""
    return _UNSAFE_RE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def header_text(text: str) -> str:
    """``text`` fit for a header: controls dropped, whitespace runs collapsed."""
    return " ".join(_UNSAFE_RE.sub(" ", text).split())


def message_id(seed: str) -> str:
    """The core's id if it is a valid msg-id, else a stable one derived from it."""
    if _MSGID_RE.match(seed) and len(seed) <= 250:
        return seed
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{digest}@siem-plugins.invalid"


# --------------------------------------------------------------------------- the mail


class MailTemplate:
    """What every digest mail of one notifier shares; :meth:`render` makes the mail.

    ``subject_prefix`` is sanitised like any header text (controls dropped, whitespace
    collapsed); an empty one leaves the subject without a prefix.
    """

    def __init__(
        self,
        sender: Mailbox,
        recipients: Sequence[Mailbox],
        *,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        max_listed: int = DEFAULT_MAX_LISTED,
    ) -> None:
        if not recipients:
            raise ValueError("at least one recipient is needed")
        self.sender = sender
        self.recipients = tuple(recipients)
        self.subject_prefix = header_text(subject_prefix)
        self.max_listed = max_listed

    def __repr__(self) -> str:
        return f"MailTemplate(from={self.sender.addr!r}, to={[r.addr for r in self.recipients]!r})"

    def render(self, digest: Digest, *, now: datetime | None = None) -> EmailMessage:
        """The digest as a mail, ready to send or to write out (``now`` sets ``Date``)."""
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = self.sender.address()
        msg["To"] = tuple(r.address() for r in self.recipients)
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = f"<{message_id(digest.message_id)}>"
        msg["Subject"] = self.subject(digest)
        # RFC 3834: keeps vacation responders and ticket systems from answering alerts.
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(self.body(digest), charset="utf-8", cte="quoted-printable")
        return msg

    def subject(self, digest: Digest) -> str:
        """Integration, counts and log types only: no event text ever reaches a header."""
        counts = _ordered_counts(digest.counts)
        parts = [
            f"{header_text(lt)} \N{MULTIPLICATION SIGN}{n}" for lt, n in counts[:SUBJECT_LOG_TYPES]
        ]
        if len(counts) > SUBJECT_LOG_TYPES:
            parts.append(f"+{len(counts) - SUBJECT_LOG_TYPES} more")
        noun = "event" if digest.total == 1 else "events"
        subject = f"{header_text(digest.integration)}: {digest.total} selected {noun}"
        if parts:
            subject += f" ({', '.join(parts)})"
        return f"{self.subject_prefix} {subject}" if self.subject_prefix else subject

    def body(self, digest: Digest) -> str:
        """The plain-text body: a summary, then the first ``max_listed`` events."""
        listed = list(digest.events[: self.max_listed])
        counts = ", ".join(f"{visible(lt)}: {n}" for lt, n in _ordered_counts(digest.counts))
        lines = [
            f"Integration: {visible(digest.integration)}",
            f"Account:     {visible(digest.account)}",
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

    def render_problem(self, problem: Problem, *, now: datetime | None = None) -> EmailMessage:
        """The mail telling the admins that the integration's bucket fails (or works
        again). Its Message-ID is stable per problem, so a mail sent twice is one mail."""
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = self.sender.address()
        msg["To"] = tuple(r.address() for r in self.recipients)
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        state = "recovered" if problem.recovered else "failing"
        msg["Message-ID"] = (
            f"<{message_id(f'siem.{problem.integration}.{state}.{problem.since}@siem-plugins')}>"
        )
        what = "works again" if problem.recovered else "is failing"
        subject = f"{header_text(problem.integration)}: log delivery to the bucket {what}"
        msg["Subject"] = f"{self.subject_prefix} {subject}" if self.subject_prefix else subject
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(_problem_body(problem), charset="utf-8", cte="quoted-printable")
        return msg


def _problem_body(problem: Problem) -> str:
    waiting = "" if problem.waiting is None else f"{problem.waiting:,} events"
    if problem.recovered:
        lines = [
            f"Log delivery of integration {visible(problem.integration)} (account "
            f"{visible(problem.account)}) to {visible(problem.where)} works again since "
            f"{visible(problem.since)}.",
            "",
            "The events stored while it failed are being shipped now, in order, each exactly",
            "once. Nothing needs to be done.",
            "",
            f"The last error was: {visible(problem.error)}",
        ]
    else:
        lines = [
            f"Log delivery of integration {visible(problem.integration)} (account "
            f"{visible(problem.account)}) to {visible(problem.where)} has been failing since "
            f"{visible(problem.since)} ({problem.failures} attempts in a row).",
            "",
            f"Last error: {visible(problem.error)}",
            "",
            f"What usually fixes it: {visible(problem.hint)}",
            "",
            "No event is lost: they are kept"
            + (f" ({waiting} wait so far)" if waiting else "")
            + " and shipped, in order, as soon as the bucket accepts them again. You will get",
            "one more mail when it does; none in between.",
        ]
    lines += ["", "-- ", "Sent by siem-plugins."]
    return "\n".join(lines) + "\n"


def _event_lines(number: int, event: Event) -> list[str]:
    try:
        fields = event.fields()
    except ValueError:
        fields = {}
    head = (
        f"[{number}] {visible(event.timestamp)}  {visible(event.type)} / "
        f"{visible(event.log_type)}  (event {event.id})"
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
    return visible(text)


def _ordered_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
