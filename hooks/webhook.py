"""Example drop-in plugin: the ``webhook`` notifier, a JSON digest POSTed to a URL.

Copy this file into your ``hooks/`` folder (it needs only the standard library), then::

    [integration.notify]
    type = "webhook"
    events = ["exempt_all", "config"]
    url = "https://alerts.example.com/siem"
    secret = "${SIEM_WEBHOOK_SECRET}"          # optional: HMAC-SHA256 signature
    headers = { "X-Team" = "secops" }          # optional: extra request headers
    timeout = 10                                # seconds (default 10)
    max_listed = 50                             # events listed per digest (default 50)

One POST per digest, body ``application/json``::

    {"integration": ..., "account": ..., "first_id": ..., "last_id": ..., "total": ...,
     "counts": {"config": 2, ...}, "message_id": ..., "listed": 2,
     "events": [{"id": ..., "type": ..., "log_type": ..., "timestamp": ...,
                 "fields": {...the event's fields...}}]}

With ``secret``, ``X-SIEM-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body
bytes: the receiver recomputes it and compares in constant time. ``message_id`` (also
sent as ``X-SIEM-Message-ID``) is the same when a digest is replayed after a failure,
so a receiver can drop duplicates. There are no retries here: a failed POST raises,
the cursor stays put and the next sync cycle sends the same digest again.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from siem_plugins import Digest, NotifierBase, NotifierSpec, Options, __version__, hookimpl

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_LISTED = 50
# RFC 9110 field-name token; values may not contain CR, LF or NUL (header injection).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_RESERVED = {"content-type", "content-length", "host", "x-siem-signature"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        # urllib would follow a redirected POST as a GET without the body (the digest lost
        # while the receiver answers 200), resending the configured headers to wherever
        # the redirect points. A 3xx is an error here instead.
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookError(RuntimeError):
    """A digest could not be delivered. The message names the endpoint's origin only:
    webhook URLs often carry a token in their path (Slack, Teams), so never the path."""


class WebhookNotifier(NotifierBase):
    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_listed: int = DEFAULT_MAX_LISTED,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        self.url = url
        self.origin = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        self._secret = secret
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_listed = max_listed  # read by the pipeline: how many events to list

    @classmethod
    def from_options(cls, options: Options) -> WebhookNotifier:
        url = options.string("url", required=True)
        secret = options.secret("secret")
        headers: dict[str, str] = {}
        for name, value in options.table("headers").items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
                raise options.error("headers", f"invalid or reserved header name {name!r}")
            if not isinstance(value, str) or _BAD_VALUE.search(value):
                raise options.error("headers", f"{name}: expected a one-line string")
            headers[name] = value
        timeout = options.number("timeout", DEFAULT_TIMEOUT, min=0.1, max=600)
        max_listed = options.integer("max_listed", DEFAULT_MAX_LISTED, min=0, max=10_000)
        try:
            return cls(
                url,
                secret=secret.reveal() if secret else None,
                headers=headers,
                timeout=timeout,
                max_listed=max_listed,
            )
        except ValueError as exc:
            raise options.error("url", str(exc)) from None

    def body(self, digest: Digest) -> bytes:
        """The JSON payload. ASCII-only, so no byte of event text is ambiguous anywhere."""
        events = list(digest.events[: self.max_listed])
        payload: dict[str, Any] = {
            "integration": digest.integration,
            "account": digest.account,
            "first_id": digest.first_id,
            "last_id": digest.last_id,
            "total": digest.total,
            "counts": digest.counts,
            "message_id": digest.message_id,
            "listed": len(events),
            "events": [
                {
                    "id": e.id,
                    "type": e.type,
                    "log_type": e.log_type,
                    "timestamp": e.timestamp,
                    "fields": e.fields(),
                }
                for e in events
            ],
        }
        return json.dumps(payload, separators=(",", ":")).encode("ascii")

    def notify(self, digest: Digest) -> None:
        body = self.body(digest)
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "User-Agent": f"siem-plugins/{__version__}",
            "X-SIEM-Message-ID": digest.message_id,
        }
        if self._secret:
            mac = hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-SIEM-Signature"] = f"sha256={mac}"
        # S310: the scheme was checked to be http(s) in __init__.
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip() if exc.fp else ""
            message = f"{self.origin}: HTTP {exc.code} {exc.reason}"
            raise WebhookError(
                self._redact(f"{message}: {detail}" if detail else message)
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookError(self._redact(f"{self.origin}: {reason}")) from None

    def probe(self) -> None:
        """Connect (and complete the TLS handshake) without sending anything: a test POST
        would reach whoever watches the webhook."""
        parts = urlsplit(self.url)
        conn_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_type(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.connect()
        except OSError as exc:
            raise WebhookError(f"{self.origin}: cannot connect: {exc}") from None
        finally:
            conn.close()

    def describe(self) -> str:
        # The origin only: a webhook URL's path often holds a token.
        return self.origin

    def close(self) -> None:
        pass

    def _redact(self, text: str) -> str:
        # Receivers sometimes echo the request; keep the secret and header values out.
        for value in (self._secret, *self.headers.values()):
            if value and len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.origin})"


@hookimpl
def siem_register_notifiers() -> list[NotifierSpec]:
    return [
        NotifierSpec(
            name="webhook",
            factory=WebhookNotifier.from_options,
            description="POST a JSON digest to a URL (url = ...), HMAC-signed with secret",
        )
    ]
