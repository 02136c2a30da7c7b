"""What the structured JSON formatters (``ocsf``, ``ecs``) share: reading a stored
event back into fields, its time in milliseconds, and writing one record as one line.

Unlike ``json``, these formats re-shape each event, so they parse its canonical bytes and
serialise a new object: orjson does both (the fastest JSON library for CPython, already a
dependency). Two things the canonical form guarantees must survive that round trip, and
this module is where they are kept:

* integers of any size in unknown fields stay exact (orjson alone would read one beyond
  64 bits as a float): such an event is read again with :func:`~siem_plugins.events.loads_exact`;
* U+2028, U+2029 and U+0085 stay escaped (orjson writes them as raw UTF-8, and many
  readers take them for line breaks), as they are in the canonical JSON.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from siem_plugins.events import FIELD_ORDER, loads_exact

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_KNOWN = {etype: frozenset(names) for etype, names in FIELD_ORDER.items()}
# A run of 19 digits: the shortest integer orjson cannot hold exactly. Looked for only in
# an event whose unknown fields hold a float, an array or an object.
_LONG_DIGITS = re.compile(rb"\d{19}")
_INEXACT = (float, list, dict)
_LOG_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")  # as ingest validates it
# U+2028, U+2029 or U+0085 in stored bytes, which the canonical form always escapes.
_SEPARATOR_ESCAPE = re.compile(rb"\\u(?:202[89]|0085)")
_LINE_SEPARATORS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def fields_of(raw: bytes, etype: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event's fields, and those of them the product documentation does not know
    for its type (``extras``, in stored order), each value exactly as stored.

    Each extra value is returned as an :class:`orjson.Fragment` of its own JSON, so it is
    written back byte for byte however deeply it nests (a record wraps it one or two
    levels deeper, which could pass orjson's nesting limit otherwise).
    """
    fields: dict[str, Any] = orjson.loads(raw)
    known = _KNOWN.get(etype, frozenset())
    if known.issuperset(fields):  # the usual case, checked in C
        return fields, {}
    extras = {k: v for k, v in fields.items() if k not in known}
    if any(type(v) in _INEXACT for v in extras.values()) and _LONG_DIGITS.search(raw):
        fields = loads_exact(raw)
        extras = {k: v for k, v in fields.items() if k not in known}
    return fields, {k: orjson.Fragment(orjson.dumps(v)) for k, v in extras.items()}


def epoch_ms(timestamp: str, what: str = "timestamp") -> int:
    """Milliseconds since 1970-01-01T00:00:00Z (negative before it) of an ISO 8601
    timestamp with a zone; the store's canonical ``2022-07-15T08:55:12.279Z`` is the
    fast path (``datetime.fromisoformat`` is C code: 0.6 µs).

    :raises ValueError: not an ISO 8601 date-time with a zone, naming ``what``.
    """
    try:
        return (datetime.fromisoformat(timestamp) - _EPOCH) // _MS
    except (TypeError, ValueError):  # TypeError: a naive date-time (no zone)
        raise ValueError(f"{what} {timestamp!r} is not an ISO 8601 date-time with a zone") from None


def check_log_type(log_type: str) -> str:
    """``log_type`` if it is the lowercase word ingest accepts, else a ValueError: a
    record's constant parts (written once per log type) hold it unescaped."""
    if not _LOG_TYPE.match(log_type):
        raise ValueError(f"invalid log type {log_type!r} (lowercase word expected)")
    return log_type


def dumps_line(record: dict[str, Any], raw: bytes) -> bytes:
    """One record made from the stored event ``raw``, as compact JSON: keys in the order
    given (deterministic), control characters escaped by JSON, and U+2028, U+2029 and
    U+0085 as ``\\u`` escapes, so no reader can split the line. No newline.

    orjson writes those three characters as they are. The record's text comes from
    ``raw`` (and from ASCII constants, accounts and log types), which the store keeps in
    canonical form, where they are always escaped (``\\u2028``): only an event whose
    bytes hold such an escape can give one, and only then is the line searched. One
    regular expression over the ~400 stored bytes costs a tenth of searching the ~1,200
    written ones, and searching for the raw characters would cost as much again (80 % of
    real events hold non-ASCII text).
    """
    line = orjson.dumps(record)
    if _SEPARATOR_ESCAPE.search(raw) is not None:
        for char, escape in _LINE_SEPARATORS:
            if char in line:
                line = line.replace(char, escape)
    return line
