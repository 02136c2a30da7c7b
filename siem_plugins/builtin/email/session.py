"""The SMTP side of the ``email`` notifier: one session per delivery or probe, bounded
by a deadline, with every failure translated into a :class:`NotifierError`.

Two clocks bound a session: ``timeout`` for each network read or write, and
``deadline`` for the whole session, connect to QUIT. The per-read timeout alone never
fires against a tarpit, a server that keeps sending a byte or a ``220-`` continuation
line every few seconds; the deadline ends such a session by shutting its socket down.

STARTTLS is never optional once configured: a server that does not offer it is an
error, not a reason to go on in clear text. Errors name ``smtp://host:port``, the stage
and the server's code and reply, never the password.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

from siem_plugins.builtin.email.settings import SMTPSettings
from siem_plugins.builtin.mail import header_text

# The contract's error: permanent for 5xx replies, bad credentials and a rejected
# certificate; not for 4xx replies, refused or dropped connections and timeouts.
from siem_plugins.kinds import NotifierError

# The plugin's logger, the same for all its modules (and as named before they were split).
log = logging.getLogger("siem_plugins.builtin.email")

#: Recipients the server refused while accepting the mail for others: address -> reply.
Refused = dict[str, tuple[int, bytes]]


class SMTPRelay:
    """The configured relay: :meth:`send` delivers a mail and :meth:`probe` checks the
    relay, each in a session of its own."""

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        # Built once: loading a CA bundle is not free, and a bad ca_file should fail at
        # start-up rather than at the first alert (raises OSError).
        self._tls = (
            _tls_context(settings.verify, settings.ca_file) if settings.security != "none" else None
        )

    @property
    def url(self) -> str:
        return self.settings.url

    def send(self, msg: EmailMessage) -> Refused:
        """Send ``msg`` to every recipient; return those the server refused (the rest got
        it). Raises :class:`NotifierError` when nobody got it."""
        with self._session() as smtp:
            try:
                return smtp.send_message(
                    msg,
                    from_addr=self.settings.sender.addr,
                    to_addrs=self.settings.recipient_addrs,
                )
            except (smtplib.SMTPException, OSError) as exc:
                raise self._error("send", exc) from exc

    def probe(self) -> None:
        """Connect, log in as configured and send NOOP; raise :class:`NotifierError` if
        any of it fails."""
        with self._session() as smtp:
            try:
                code, text = smtp.noop()
            except (smtplib.SMTPException, OSError) as exc:
                raise self._error("NOOP", exc) from exc
            if code != 250:
                raise NotifierError(
                    f"{self.url}: NOOP failed: {reply(code, text)}",
                    permanent=500 <= code < 600,
                    code=code,
                )

    # ------------------------------------------------------------------ session

    @contextlib.contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """An open session (after EHLO, STARTTLS and login as configured) that must be
        over within ``deadline`` seconds; QUIT at the end."""
        deadline = self.settings.deadline
        watchdog = _Deadline(deadline)
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
                    f"{self.url}: gave up after the {deadline:g}s deadline for the whole "
                    "delivery (the server answers too slowly or not at all)",
                    permanent=False,
                ) from exc
            raise
        finally:
            watchdog.stop()

    def _open(self, watchdog: _Deadline) -> smtplib.SMTP:
        """Connect, EHLO, STARTTLS and log in as configured, watched by ``watchdog``."""
        s = self.settings
        log.debug("%s: connecting (security %s)", self.url, s.security)
        stage = "connect"
        smtp: smtplib.SMTP | None = None
        try:
            if s.security == "tls":
                smtp = _WatchedSMTP_SSL(
                    watchdog,
                    s.host,
                    s.port,
                    local_hostname=s.client_hostname,
                    timeout=s.timeout,
                    context=self._tls,
                )
            else:
                smtp = _WatchedSMTP(
                    watchdog,
                    s.host,
                    s.port,
                    local_hostname=s.client_hostname,
                    timeout=s.timeout,
                )
            stage = "EHLO"
            smtp.ehlo_or_helo_if_needed()
            if s.security == "starttls":
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
            if s.username is not None and s.password is not None:
                stage = "login"
                smtp.login(s.username, s.password.reveal())
        except NotifierError:
            _abandon(smtp or watchdog.smtp)
            raise
        except (smtplib.SMTPException, OSError) as exc:
            _abandon(smtp or watchdog.smtp)
            raise self._error(stage, exc) from exc
        return smtp

    # ------------------------------------------------------------------ errors

    def _error(self, stage: str, exc: BaseException) -> NotifierError:
        """Translate a smtplib/socket/ssl failure into a NotifierError (password-free)."""
        timeout = self.settings.timeout
        code: int | None = None
        permanent = False
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [c for c, _ in exc.recipients.values()]
            permanent = bool(codes) and all(500 <= c < 600 for c in codes)
            what = "all recipients refused: " + ", ".join(
                f"{addr} ({reply(c, t)})" for addr, (c, t) in exc.recipients.items()
            )
            code = codes[0] if codes else None
        elif isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            permanent = 500 <= code < 600
            what = reply(code, exc.smtp_error)
            if isinstance(exc, smtplib.SMTPSenderRefused):
                what = f"sender {exc.sender} refused: {what}"
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            permanent = True  # e.g. no AUTH offered: a config mismatch, not a hiccup
            what = str(exc)
        elif isinstance(exc, smtplib.SMTPServerDisconnected):
            # smtplib reports a read timeout as a disconnect; say what really happened.
            if isinstance(exc.__context__, TimeoutError):
                what = f"timed out after {timeout:g}s waiting for the server"
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
            what = f"timed out after {timeout:g}s"
        elif isinstance(exc, socket.gaierror):
            what = f"cannot resolve host: {exc.strerror or exc}"
        elif isinstance(exc, OSError):
            what = exc.strerror or str(exc) or type(exc).__name__
        else:  # pragma: no cover - _open/send only pass the types above
            what = str(exc)
        return NotifierError(
            self._redact(f"{self.url}: {stage} failed: {what}"), permanent=permanent, code=code
        )

    def _redact(self, text: str) -> str:
        # Servers do not echo credentials, but a message that might be logged is no place
        # to find out that one does.
        password = self.settings.password
        if password:
            text = text.replace(password.reveal(), "***")
        return text


def reply(code: int, text: bytes | str) -> str:
    """A server reply on one line, for messages: ``550 5.1.1 no such mailbox``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {header_text(text)}".strip()


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # Explicitly asked for (self-signed relays on a private network); still encrypted.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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
