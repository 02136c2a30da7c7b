"""The ``email`` notifier's settings: read from the integration's ``notify`` table layered
over ``[smtp]``, checked, and held as one immutable :class:`SMTPSettings`.

Every error names the key it is about (``siem.toml: smtp.port: must be at most 65535``).
The password is a :class:`~siem_plugins.options.Secret` and is left out of ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from siem_plugins.builtin.mail import (
    DEFAULT_SUBJECT_PREFIX,
    Mailbox,
    has_controls,
    read_max_listed,
    read_recipients,
    read_sender,
)
from siem_plugins.kinds import DEFAULT_MAX_LISTED
from siem_plugins.options import MAX_TIMEOUT_S, Options, Secret

SECURITIES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEFAULT_TIMEOUT = 30.0
#: The whole SMTP session (connect, greeting, TLS, login, send, QUIT) must end within this.
DEFAULT_DEADLINE = 120.0
#: Upper bound for ``deadline``: beyond it a stuck relay is just stuck.
MAX_DEADLINE_S = 3600.0

_HOST_RE = re.compile(r"[A-Za-z0-9._:\[\]-]+\Z")


@dataclass(frozen=True)
class SMTPSettings:
    """Where and how to send, and to whom. Build it with :meth:`from_options`; direct
    construction checks only what the session relies on (security, credentials in pairs,
    at least one recipient)."""

    host: str
    sender: Mailbox
    recipients: tuple[Mailbox, ...]
    port: int
    security: str = "starttls"
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    #: Seconds for each network read or write.
    timeout: float = DEFAULT_TIMEOUT
    #: Seconds for the whole session, connect to QUIT.
    deadline: float = DEFAULT_DEADLINE
    verify: bool = True
    ca_file: str | None = None
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    max_listed: int = DEFAULT_MAX_LISTED
    client_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ValueError(
                f"unknown security {self.security!r}; choose one of: {', '.join(SECURITIES)}"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if not self.recipients:
            raise ValueError("at least one recipient is needed")

    @property
    def url(self) -> str:
        """Where mail goes, for messages: ``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        scheme = "smtps" if self.security == "tls" else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def recipient_addrs(self) -> list[str]:
        """The envelope recipients (``RCPT TO``)."""
        return [r.addr for r in self.recipients]

    @classmethod
    def from_options(cls, options: Options) -> SMTPSettings:
        """Read and check every setting, in a fixed order (the first problem is reported)."""
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
        if username is not None and (not username or has_controls(username)):
            raise options.error("username", "must be non-empty, without control characters")

        sender = read_sender(options)
        recipients = read_recipients(options)
        if not recipients:
            raise options.error("to", "needs at least one address")
        # Duplicates would only earn the recipient two copies. Keyed by the text as
        # written, so every item was checked (and named by its index) before.
        unique = dict(recipients)

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
        if has_controls(subject_prefix):
            raise options.error("subject_prefix", "must not contain control characters")
        max_listed = read_max_listed(options)
        client_hostname = options.string("client_hostname")
        if client_hostname is not None and not _HOST_RE.match(client_hostname):
            raise options.error(
                "client_hostname",
                f"expected a host name or address literal, got {client_hostname!r}",
            )
        return cls(
            host,
            sender=sender,
            recipients=tuple(unique.values()),
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
