"""A real SMTP server on loopback for tests: aiosmtpd in a thread, recording every mail.

Modes: plain, STARTTLS (optionally required), implicit TLS, AUTH (PLAIN/LOGIN against
one fixed account). Certificates come from a throwaway ``trustme`` CA whose bundle is
written to :attr:`SMTPServer.ca_file`, so clients verify the server exactly as they
would in production instead of switching verification off.

Faults are programmable: :meth:`SMTPServer.fail_next` makes the next MAIL, RCPT or DATA
command get a chosen reply, and :meth:`SMTPServer.reject_recipient` refuses one address,
so tests can drive 4xx/5xx paths without mocking smtplib.
"""

from __future__ import annotations

import email
import email.policy
import errno
import shutil
import socket
import ssl
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["MAIL", "RCPT", "DATA"]
STAGES: tuple[Stage, ...] = ("MAIL", "RCPT", "DATA")
LOOPBACK = "127.0.0.1"
#: The name the server greets with and the certificate is issued for (with 127.0.0.1).
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted mail, as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    #: The session was encrypted (STARTTLS or implicit TLS) when DATA arrived.
    tls: bool
    #: The login name the client authenticated as, if it did.
    login: str | None


class _Recorder:
    """aiosmtpd handler: applies programmed faults, records accepted mail."""

    def __init__(self, server: SMTPServer) -> None:
        self._server = server

    async def handle_MAIL(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._server.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        fault = self._server._take_fault("MAIL")
        if fault is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self._server._take_fault("RCPT")
        if fault is not None:
            return fault
        rejected = self._server._rejected.get(address.lower())
        if rejected is not None:
            return rejected
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
    ) -> str:
        fault = self._server._take_fault("DATA")
        if fault is not None:
            return fault
        data = envelope.original_content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        received = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message=message,
            tls=self._server.implicit_tls or session.ssl is not None,
            login=login,
        )
        with self._server._lock:
            self._server.messages.append(received)
        return "250 2.0.0 Message accepted"

    async def handle_NOOP(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        arg: str,
    ) -> str:
        with self._server._lock:
            self._server.noops += 1
        return "250 OK"


class SMTPServer:
    """An SMTP server on ``127.0.0.1`` and an ephemeral port.

    :param starttls: offer STARTTLS with a certificate from a fresh ``trustme`` CA.
    :param require_starttls: refuse every command but EHLO/STARTTLS/QUIT before STARTTLS.
    :param implicit_tls: TLS from the first byte (port-465 style) instead of STARTTLS.
    :param auth: ``(username, password)`` to require AUTH (PLAIN/LOGIN) before MAIL.
    :param auth_require_tls: offer AUTH only on an encrypted session (aiosmtpd's default).
    """

    def __init__(
        self,
        *,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        auth_require_tls: bool = True,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        if require_starttls and not starttls:
            raise ValueError("require_starttls needs starttls=True")
        self.starttls = starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.auth_require_tls = auth_require_tls
        self.host = LOOPBACK
        self.port = 0
        self.messages: list[ReceivedMessage] = []
        self.noops = 0
        self.failed_logins = 0
        self.ca_file: str | None = None
        self._lock = threading.Lock()
        self._faults: dict[Stage, deque[str]] = {stage: deque() for stage in STAGES}
        self._rejected: dict[str, str] = {}
        self._controller: Controller | None = None
        self._tmpdir: Path | None = None

    # ------------------------------------------------------------------ control

    def fail_next(
        self, code: int = 451, text: str = "try later", stage: Stage = "DATA", *, times: int = 1
    ) -> None:
        """Answer the next ``times`` ``stage`` commands with ``code text`` (any session)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if not 400 <= code < 600:
            raise ValueError(f"a failure is a 4xx or 5xx code, got {code}")
        with self._lock:
            self._faults[stage].extend([f"{code} {text}"] * times)

    def reject_recipient(
        self, address: str, code: int = 550, text: str = "5.1.1 no such mailbox"
    ) -> None:
        """Refuse RCPT TO ``address`` (case-insensitive) until :meth:`clear`."""
        with self._lock:
            self._rejected[address.lower()] = f"{code} {text}"

    def clear(self) -> None:
        """Forget recorded mail, counters, pending faults and rejected recipients."""
        with self._lock:
            self.messages.clear()
            self.noops = 0
            self.failed_logins = 0
            for queue in self._faults.values():
                queue.clear()
            self._rejected.clear()

    def _take_fault(self, stage: Stage) -> str | None:
        with self._lock:
            queue = self._faults[stage]
            return queue.popleft() if queue else None

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SMTPServer:
        if self._controller is not None:
            raise RuntimeError("the SMTP server is already running")
        tls_context = self._make_tls() if (self.starttls or self.implicit_tls) else None
        kwargs: dict[str, Any] = {"server_hostname": SERVER_NAME, "ready_timeout": 5.0}
        if self.starttls:
            kwargs["tls_context"] = tls_context
            kwargs["require_starttls"] = self.require_starttls
        if self.implicit_tls:
            kwargs["ssl_context"] = tls_context
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
            if self.implicit_tls:
                # aiosmtpd counts only STARTTLS as encryption and would refuse AUTH on an
                # implicit-TLS session; with auth_required it also warns on every
                # connection. So AUTH is merely offered here and handle_MAIL enforces it.
                kwargs["auth_require_tls"] = False
            else:
                kwargs["auth_required"] = True
                kwargs["auth_require_tls"] = self.auth_require_tls
        # Controller needs a concrete port. Binding port 0 and handing the number over
        # leaves a tiny window for another process to take it; retry if that happens.
        for attempt in range(5):
            port = _free_port()
            controller = Controller(_Recorder(self), hostname=LOOPBACK, port=port, **kwargs)
            try:
                controller.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    self._remove_tmpdir()
                    raise
                continue
            self._controller = controller
            self.port = port
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop listening (a stopped server refuses connections). Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        self._remove_tmpdir()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        mode = "implicit-tls" if self.implicit_tls else "starttls" if self.starttls else "plain"
        return f"SMTPServer({self.host}:{self.port}, {mode}, auth={self.auth is not None})"

    # ------------------------------------------------------------------ internals

    def _make_tls(self) -> ssl.SSLContext:
        import trustme  # only the TLS modes need it

        ca = trustme.CA()
        cert = ca.issue_cert(SERVER_NAME, LOOPBACK)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="siem-smtp-"))
        ca_path = self._tmpdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        self.ca_file = str(ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.ca_file = None

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.auth is not None
        user, password = self.auth
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        ):
            return AuthResult(success=True, auth_data=auth_data)
        with self._lock:
            self.failed_logins += 1
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    return _free_port()
