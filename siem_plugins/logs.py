"""Logging set-up with secret redaction.

Every secret the config holds is registered here; a filter on the handler replaces any
occurrence of one in any record — ours, botocore's, smtplib's — before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

REDACTED = "***"


class RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[object]) -> None:
        """Redact these values from now on; a number is redacted as its text
        (``password = 73914528861``)."""
        texts = (_text(s) for s in secrets)
        # Very short values would redact innocent text; config secrets are never that short.
        self._secrets.update(t for t in texts if len(t) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        text = message
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        if exc_text:
            for secret in self._secrets:
                exc_text = exc_text.replace(secret, REDACTED)
            record.exc_text = exc_text
        if text is not message:
            record.msg, record.args = text, None
        return True


def _text(value: object) -> str:
    # A Secret's str() is itself (its repr is the masked one); plain str() for the rest.
    return str.__str__(value) if isinstance(value, str) else str(value)


REDACTOR = RedactingFilter()


def setup_logging(verbosity: int = 0) -> None:
    """``0``: warnings and our info; ``1`` (``-v``): our debug; ``2`` (``-vv``): everything."""
    level = logging.INFO if verbosity < 1 else logging.DEBUG
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_siem", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._siem = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("siem_plugins").setLevel(level)
