"""The event model: Device and Account records, the seed's field order, validation.

An event is validated once, at ingest, and stored as its *canonical* JSON bytes: compact,
known fields in the order of the product documentation's examples, unknown fields kept
after them in input order, timestamps normalised to ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
Formatters work from those bytes, so shipping never re-parses or re-serialises an event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

DEVICE = "Device"
ACCOUNT = "Account"
EVENT_TYPES = (DEVICE, ACCOUNT)

#: Field order of the seed's examples ("Receiving Logs": JSON and SYSLOG).
FIELD_ORDER: dict[str, tuple[str, ...]] = {
    DEVICE: (
        "log_type",
        "device_name",
        "device_id",
        "last_seen",
        "device_group",
        "details",
        "type",
        "device_username",
        "timestamp",
    ),
    ACCOUNT: (
        "log_type",
        "details",
        "admin_name",
        "type",
        "event",
        "admin_email",
        "timestamp",
    ),
}

#: Fields every event of a type must carry (the seed's "Understanding Logs" tables).
#: ``last_seen`` appears in the examples but not in the Device table, so it is optional.
REQUIRED: dict[str, frozenset[str]] = {
    DEVICE: frozenset(FIELD_ORDER[DEVICE]) - {"last_seen"},
    ACCOUNT: frozenset(FIELD_ORDER[ACCOUNT]),
}

#: Fields that must not be empty (they identify the event).
NON_EMPTY = frozenset({"type", "log_type", "timestamp", "device_id"})

#: Fields holding timestamps; normalised to the canonical form.
TIMESTAMP_FIELDS = frozenset({"timestamp", "last_seen"})

#: Log types known to the product. The seed shows ``exempt_all``, ``unexempt``, ``added``
#: and ``config``; the rest are the device lifecycle and account audit types of
#: MetaDefender IT Access. A config may add more (``log_types`` in ``[store]``).
KNOWN_LOG_TYPES: dict[str, tuple[str, ...]] = {
    DEVICE: (
        "added",
        "removed",
        "exempt",
        "exempt_all",
        "unexempt",
        "compliant",
        "non_compliant",
        "blocked",
        "unblocked",
        "threat_detected",
        "vulnerability_detected",
        "patch_installed",
    ),
    ACCOUNT: (
        "config",
        "login",
        "login_failed",
        "logout",
        "admin_added",
        "admin_removed",
        "role_changed",
        "policy_changed",
        "api_key_created",
        "api_key_revoked",
    ),
}

#: Largest accepted input line (bytes, without the newline). Larger lines are rejected.
MAX_RECORD_BYTES = 64 * 1024

_LOG_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_CANONICAL_TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
# C0 controls other than TAB, LF and CR, plus DEL. LF/CR are legal in text (they are
# escaped by every formatter); NUL and friends are never legitimate event text.
_BAD_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Event(NamedTuple):
    """One stored event, as sources yield it (immutable).

    A ``NamedTuple`` rather than a dataclass because sources make one per stored row,
    millions per catch-up: building one costs a third of a frozen dataclass's
    ``__init__`` (docs/performance.md).

    :ivar id: the store's monotonically increasing id.
    :ivar account: the tenant the event belongs to.
    :ivar type: ``Device`` or ``Account``.
    :ivar log_type: e.g. ``exempt_all`` or ``config``.
    :ivar timestamp: canonical ``2022-07-15T08:55:12.279Z``.
    :ivar raw: canonical compact JSON bytes (seed field order).
    """

    id: int
    account: str
    type: str
    log_type: str
    timestamp: str
    raw: bytes

    def __repr__(self) -> str:
        # Event text stays out of reprs (tracebacks, logs); the ids say which event.
        return (
            f"Event(id={self.id!r}, account={self.account!r}, type={self.type!r}, "
            f"log_type={self.log_type!r}, timestamp={self.timestamp!r})"
        )

    def fields(self) -> dict[str, Any]:
        """The event's fields, in canonical order."""
        parsed: dict[str, Any] = orjson.loads(self.raw)
        return parsed


@dataclass(frozen=True, slots=True)
class Canonical:
    """A validated event ready to store."""

    type: str
    log_type: str
    timestamp: str
    raw: bytes


class EventError(ValueError):
    """A record that cannot be accepted; ``field`` names the culprit (or ``None``)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def canonical_timestamp(value: str) -> str:
    """Normalise an ISO 8601 timestamp with a zone to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC)."""
    if _CANONICAL_TS_RE.match(value):
        # Fast path; still check the calendar (e.g. month 13).
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
        return value
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("has no time zone (expected e.g. 2022-07-15T08:55:12.279Z)")
    parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def canonicalize(obj: Any) -> Canonical:
    """Validate one decoded record and return its canonical form.

    :raises EventError: naming the field at fault.
    """
    if not isinstance(obj, Mapping):
        raise EventError(None, f"expected a JSON object, got {_json_type(obj)}")
    etype = obj.get("type")
    if etype is None:
        raise EventError("type", "missing (expected 'Device' or 'Account')")
    if not isinstance(etype, str) or etype not in FIELD_ORDER:
        raise EventError("type", f"unknown event type {etype!r} (expected 'Device' or 'Account')")
    order = FIELD_ORDER[etype]
    out: dict[str, Any] = {}
    for name in order:
        if name not in obj:
            if name in REQUIRED[etype]:
                raise EventError(name, "missing required field")
            continue
        value = obj[name]
        if not isinstance(value, str):
            raise EventError(name, f"expected a string, got {_json_type(value)}")
        if not value and name in NON_EMPTY:
            raise EventError(name, "must not be empty")
        if _BAD_CONTROL_RE.search(value):
            raise EventError(name, "contains a control character (NUL or other C0)")
        if name in TIMESTAMP_FIELDS:
            try:
                value = canonical_timestamp(value)
            except ValueError as exc:
                raise EventError(name, f"unparsable timestamp {value!r}: {exc}") from None
        out[name] = value
    log_type = out["log_type"]
    if not _LOG_TYPE_RE.match(log_type):
        raise EventError("log_type", f"invalid log type {log_type!r} (lowercase word expected)")
    for name, value in obj.items():
        if name not in out and name not in order:
            if not isinstance(name, str) or not name:
                raise EventError(None, "empty field name")
            out[name] = value
    raw = orjson.dumps(out)
    return Canonical(etype, log_type, out["timestamp"], raw)


def parse_line(line: bytes) -> Canonical:
    """Decode and validate one NDJSON line (without its newline).

    :raises EventError: for invalid JSON, invalid UTF-8, oversize lines or bad fields.
    """
    if len(line) > MAX_RECORD_BYTES:
        raise EventError(None, f"record is {len(line)} bytes, over the {MAX_RECORD_BYTES} limit")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventError(None, f"invalid JSON: {exc}") from None
    return canonicalize(obj)


def all_log_types() -> frozenset[str]:
    """Every log type known to the product (both event types)."""
    return frozenset(t for types in KNOWN_LOG_TYPES.values() for t in types)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
