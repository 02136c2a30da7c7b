"""Logging set-up: text or JSON lines on stderr, one record per line, secrets redacted.

Every secret the config holds is registered here; a filter on the handler replaces any
occurrence of one in any record — ours, botocore's, smtplib's — in its message, its
traceback and its fields, before it is written, whatever the format.

Event text reaches log messages (a device name in a plugin's warning, in an exception),
so no record may break a line: the JSON format escapes everything JSON escapes, and the
text format escapes line breaks and other control characters in the message; a traceback
(``-v``) follows its record on lines indented by four spaces, so no line of it can pass
for a record of its own.

The formatters are ``logging.Formatter`` subclasses of the standard library, not
python-json-logger or structlog: the line is a fixed set of keys (docs/configuration.md),
the redaction has to see the fields before they are serialised anyway, and the text
format needs its own escaping, so a library would add a dependency for the ~20 lines of
``json.dumps`` it would replace; structlog would also change every log call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

REDACTED = "***"

#: The values of ``--log-format``, ``SIEM_LOG_FORMAT`` and ``log_format``.
LOG_FORMATS = ("text", "json")

#: The record fields a JSON line carries when a log call (``extra=``) or the pass being
#: run (:func:`log_context`) gives them; documented in docs/configuration.md. Only these:
#: a stray ``extra`` of a library never lands in the line, nor overrides a key.
FIELDS = (
    "integration",
    "destination",
    "key",
    "location",
    "first_id",
    "last_id",
    "event_id",
    "events",
    "bytes",
    "objects",
    "digests",
    "set_aside",
    "failed",
    "seconds",
    "passes",
    "failures",
    "skipped",
    "ticks",
    "tasks",
    "url",
)

_CONTEXT: ContextVar[dict[str, object] | None] = ContextVar("siem_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Give every record logged in this thread (or task) inside the block these fields
    (``integration``, ``destination``), unless the log call gives them itself: a sink's
    or botocore's lines inside a pass then say whose pass it is."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> dict[str, object]:
    """The fields :func:`log_context` gave this thread (or task): whose pass it is."""
    return dict(_CONTEXT.get() or {})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_CONTEXT.get() or {}).items():
            if name not in record.__dict__:
                setattr(record, name, value)
        return True


class RedactingFilter(logging.Filter):
    """Replaces every registered secret in a record's message, traceback, stack and
    :data:`FIELDS` (one instance, :data:`REDACTOR`, sits on the handler)."""

    #: Up to this many secrets, each is looked for in turn; beyond it (a server holding
    #: thousands of customers' secrets), the text is scanned once through an index of
    #: their first four characters, so the cost follows the text, not the secrets.
    SCAN_ABOVE = 32

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._index: dict[str, tuple[str, ...]] = {}
        #: Longest first: a secret that contains another is replaced whole, never leaving
        #: its tail in the text.
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[object]) -> None:
        """Redact these values from now on; a number is redacted as its text
        (``password = 73914528861``)."""
        texts = (_text(s) for s in secrets)
        # Very short values would redact innocent text; config secrets are never that short.
        new = {t for t in texts if len(t) >= 4} - self._secrets
        if not new:
            return
        with self._lock:
            secrets_now = self._secrets | new
            index: dict[str, list[str]] = {}
            for secret in secrets_now:
                index.setdefault(secret[:4], []).append(secret)
            # Swapped whole: a thread redacting meanwhile sees the old set or the new one.
            self._index = {k: tuple(sorted(v, key=len, reverse=True)) for k, v in index.items()}
            self._ordered = tuple(sorted(secrets_now, key=len, reverse=True))
            self._secrets = secrets_now

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        ordered, index = self._ordered, self._index
        if len(ordered) <= self.SCAN_ABOVE:
            for secret in ordered:
                if secret in text:
                    text = text.replace(secret, REDACTED)
            return text
        found: set[str] = set()
        for i in range(len(text) - 3):
            candidates = index.get(text[i : i + 4])
            if candidates:
                found.update(c for c in candidates if text.startswith(c, i))
        for secret in sorted(found, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        text = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None and not isinstance(value, (bool, int, float)):
                setattr(record, name, self.redact(str(value)))
        if text != message:
            record.msg, record.args = text, None
        return True


def _text(value: object) -> str:
    # A Secret's str() is itself (its repr is the masked one); plain str() for the rest.
    return str.__str__(value) if isinstance(value, str) else str(value)


REDACTOR = RedactingFilter()


def utc_time(record: logging.LogRecord) -> str:
    """The record's time as RFC 3339 in UTC with milliseconds: ``2026-11-29T15:12:57.323Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each can end
# a line for some reader (str.splitlines() splits on \x1c and \u2028 too).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """``text`` on one line: line breaks and other control characters as ``\\n``,
    ``\\x1b``, ``\\u2028``... (everything else, backslashes included, as it is)."""
    return _CONTROL.sub(_escape_char, text)


def _exc(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, as ``logging.Formatter.format`` would add them."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text or "", formatter.formatStack(record.stack_info or "")]
    return "\n".join(p.rstrip("\n") for p in parts if p)


class TextFormatter(logging.Formatter):
    """``2026-11-29T15:12:57.323Z ERROR   siem_plugins.pipeline: message``: the message on
    one line; a traceback on the lines after it, each indented by four spaces."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{utc_time(record)} {record.levelname:<7} {record.name}: "
        line += escape(record.getMessage())
        exc = _exc(self, record)
        if exc:
            line += "".join(f"\n    {escape(part)}" for part in exc.splitlines())
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the
    :data:`FIELDS` the record has, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = _json_value(value)
        exc = _exc(self, record)
        if exc:
            out["exc"] = exc
        # ensure_ascii: no raw U+2028 or C1 control can end the line for a lax reader.
        return json.dumps(out, ensure_ascii=True)


def _json_value(value: object) -> object:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 3)
    return str(value)


_FORMATTERS: dict[str, type[logging.Formatter]] = {
    "text": TextFormatter,
    "json": JSONFormatter,
}
_active = "text"


def setup_logging(verbosity: int = 0, log_format: str = "text") -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``). ``verbosity`` ``0``:
    warnings and our info; ``1`` (``-v``): our debug; ``2`` (``-vv``): everything."""
    level = logging.INFO if verbosity < 1 else logging.DEBUG
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_siem", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._siem = True  # type: ignore[attr-defined]
    # The context first: the redactor must see the fields it adds.
    handler.addFilter(_ContextFilter())
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("siem_plugins").setLevel(level)
    set_log_format(log_format)


def set_log_format(log_format: str) -> None:
    """Switch the lines :func:`setup_logging` writes to ``text`` or ``json``."""
    global _active
    if log_format not in _FORMATTERS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    _active = log_format
    for h in logging.getLogger().handlers:
        if getattr(h, "_siem", False):
            h.setFormatter(_FORMATTERS[log_format]())
    # In JSON, a warning printed by the warnings module would be a line no reader can
    # parse: it goes through the logger (``py.warnings``) instead.
    logging.captureWarnings(log_format == "json")


def active_log_format() -> str:
    """The format :func:`set_log_format` chose last (``text`` before any)."""
    return _active


def log_stopped(
    logger: logging.Logger, *, passes: int, failures: int, skipped: int, seconds: float
) -> None:
    """The last line of ``run`` and ``worker``: what the process did before it stopped."""
    logger.info(
        "stopped: %d passes, %d failures, %d skipped in %.0fs",
        passes,
        failures,
        skipped,
        seconds,
        extra={"passes": passes, "failures": failures, "skipped": skipped, "seconds": seconds},
    )
