"""Who may do what: API tokens (per account, or the operator's), and the page's session.

Every request is authenticated. The API takes ``Authorization: Bearer <token>``; the page
takes a token once, at ``/login``, and then a session cookie (signed, ``HttpOnly``,
``SameSite=Strict``) that names the token, so revoking the token ends the session at
the next request. Every form post carries the session's CSRF token.

A token of an account touches only that account: any other account's resources answer
exactly as a missing one does (404, the same body), so a token never learns whether
another account exists. The operator's token (no account) touches every account.

Tokens are made by ``siem-plugins tokens create`` and kept only as a SHA-256 digest
(:mod:`siem_plugins.control.tokens`); the token itself is printed once.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from siem_plugins.control import tokens
from siem_plugins.control.store import ControlStore

#: The session cookie's name (signed; holds a session id, the token id and the CSRF token).
SESSION_COOKIE = "siem_session"
#: How long a page session lasts without a new login.
SESSION_MAX_AGE_S = 8 * 3600

#: How often a token's ``last_used`` is written at most (not on every request).
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token, the account it may touch (None: every account,
    the operator), and the administrator it was made for (for the ``config`` event)."""

    token_id: str
    account: str | None
    admin_name: str
    admin_email: str

    @property
    def operator(self) -> bool:
        return self.account is None

    def may(self, account: str) -> bool:
        return self.account is None or hmac.compare_digest(self.account.encode(), account.encode())


class Authenticator:
    """Checks tokens against the store (revocation included, at every request)."""

    def __init__(self, control: ControlStore[Any]) -> None:
        self.control = control
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def token(self, text: str | None) -> Principal | None:
        """The principal of a token's text; None for anything that is not a live token
        (malformed, unknown, revoked, wrong secret), all alike."""
        if not text:
            return None
        parsed = tokens.parse(text.strip())
        if parsed is None:
            return None
        token_id, secret = parsed
        return self.by_id(token_id, secret=secret)

    def by_id(self, token_id: str, *, secret: str | None = None) -> Principal | None:
        """The principal of a token id (a session's), if the token is still live; with
        ``secret``, only if it also matches."""
        record = self.control.token(token_id)
        if record is None or record.revoked is not None:
            return None
        if secret is not None and not tokens.verify(record.digest, secret):
            return None
        self._touch(token_id)
        return Principal(record.id, record.account, record.admin_name, record.admin_email)

    def _touch(self, token_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(token_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        # When a token was last used is not worth failing a request for.
        with contextlib.suppress(Exception):
            self.control.touch_token(token_id)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: object, given: object) -> bool:
    """Constant-time comparison of the session's CSRF token with the form's."""
    if not isinstance(expected, str) or not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def session_secret(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """The key session cookies are signed with, and where it came from:
    ``SIEM_SESSION_SECRET``; else one derived from the newest key of
    ``SIEM_SECRET_KEYS`` (every server process of a fleet then agrees); else a random
    one (sessions then end when the process does, and each process has its own)."""
    env = os.environ if environ is None else environ
    given = env.get("SIEM_SESSION_SECRET", "")
    if given:
        return given, "SIEM_SESSION_SECRET"
    from siem_plugins.control.secrets import SecretBox

    box = SecretBox.from_environment(env)
    if box is not None:
        return box.derive("siem-plugins session cookies"), "SIEM_SECRET_KEYS"
    return secrets.token_urlsafe(32), "random (set SIEM_SESSION_SECRET for a fleet)"
