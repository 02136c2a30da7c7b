"""The event model: Device and Account records, the seed's field order, validation.

An event is validated once, at ingest, and stored as its *canonical* JSON bytes: compact,
known fields in the order of the product documentation's examples, unknown fields kept
after them in input order, timestamps normalised to ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
Formatters work from those bytes, so shipping never re-parses or re-serialises an event.

Event text is never refused for its content: control characters are kept and escaped
by JSON, and U+2028, U+2029 and U+0085 (which many readers take for line breaks) are
escaped too. Integers of any size in unknown fields are kept exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
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

#: What each known log type means, for people choosing the events that trigger an email
#: (the settings page and ``GET /api/v1/event-types``).
LOG_TYPE_DESCRIPTIONS: dict[str, str] = {
    "added": "A device was added (the OPSWAT Client was installed on it)",
    "removed": "A device was removed",
    "exempt": "A device was exempted from compliance checks",
    "exempt_all": "All devices were exempted, or a device for a period",
    "unexempt": "A device's exemption was lifted",
    "compliant": "A device became compliant",
    "non_compliant": "A device became non-compliant",
    "blocked": "A device was blocked from access",
    "unblocked": "A device was unblocked",
    "threat_detected": "A threat was detected on a device",
    "vulnerability_detected": "A vulnerability was detected on a device",
    "patch_installed": "A patch was installed on a device",
    "config": "An administrator changed the settings (this page included)",
    "login": "An administrator signed in",
    "login_failed": "A sign-in failed",
    "logout": "An administrator signed out",
    "admin_added": "An administrator was added",
    "admin_removed": "An administrator was removed",
    "role_changed": "An administrator's role changed",
    "policy_changed": "A policy changed",
    "api_key_created": "An API key was created",
    "api_key_revoked": "An API key was revoked",
}

#: Largest accepted input line (bytes, without the newline). Larger lines are rejected.
MAX_RECORD_BYTES = 64 * 1024

#: The accepted timestamp range, after conversion to UTC: what four-digit years (RFC 3339,
#: RFC 5424) can carry.
MIN_TIMESTAMP = "0001-01-01T00:00:00.000Z"
MAX_TIMESTAMP = "9999-12-31T23:59:59.999Z"

_LOG_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_CANONICAL_TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z", re.ASCII)
# Year 0, a signed (ISO 8601 expanded) year or a five-digit one: a date, but not one
# that fits the accepted range. Only looked at once parsing failed.
_YEAR_BEYOND_RE = re.compile(r"(?:0000|[+-]\d{4,}|\d{5,})-\d\d")
# orjson reads integers beyond 64 bits as floats (losing digits). Such an integer can
# only be in an unknown field, so it turned into a float there or inside an array or
# object there; and it has at least 19 digits. Only a line with both takes the exact
# (slower) path; a run of digits in a string or a float is a false positive that costs
# only speed. The run is found by mapping digits to "0" and everything else to " ": a
# tenth of the cost of a regular expression.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_INEXACT_TYPES = (float, list, dict)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson reads and writes as integers
_INF = float("inf")
# U+2028, U+2029 and U+0085 in UTF-8. Valid JSON holds non-ASCII bytes only inside
# strings, and UTF-8 never finds a sequence inside another character's, so replacing
# these bytes with JSON escapes after serialisation is exact.
_LINE_SEPARATORS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


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


class TimestampRangeError(ValueError):
    """A timestamp that is valid ISO 8601 but outside :data:`MIN_TIMESTAMP` ..
    :data:`MAX_TIMESTAMP` once converted to UTC."""


def canonical_timestamp(value: str) -> str:
    """Normalise an ISO 8601 timestamp with a zone to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC).

    The year is always four digits; the result lies in :data:`MIN_TIMESTAMP` ..
    :data:`MAX_TIMESTAMP`.

    :raises TimestampRangeError: outside that range after conversion to UTC.
    :raises ValueError: not an ISO 8601 date-time with a zone.
    """
    if _CANONICAL_TS_RE.match(value):
        # Fast path; still check the calendar (e.g. month 13). fromisoformat is C code,
        # ~20x cheaper than strptime, which dominated ingest.
        try:
            datetime.fromisoformat(value)
        except ValueError:
            if _YEAR_BEYOND_RE.match(value):
                raise _out_of_range(value) from None
            raise
        if value[11:13] == "24":  # newer Pythons read T24:00 as the next day's midnight
            raise ValueError("hour must be in 0..23")
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        if _YEAR_BEYOND_RE.match(value):
            raise _out_of_range(value) from None
        raise
    if parsed.tzinfo is None:
        raise ValueError("has no time zone (expected e.g. 2022-07-15T08:55:12.279Z)")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise _out_of_range(value) from None
    # Not strftime: its %Y does not pad years below 1000 to four digits.
    return (
        f"{parsed.year:04d}-{parsed.month:02d}-{parsed.day:02d}T{parsed.hour:02d}:"
        f"{parsed.minute:02d}:{parsed.second:02d}.{parsed.microsecond // 1000:03d}Z"
    )


def point_in_time(value: Any) -> str:
    """A point in time given by a person (``start_at``, ``--since``) as a canonical
    timestamp, comparable with the events' own: an ISO 8601 date-time with a zone
    (``2026-11-01T08:00:00+01:00``, ``...Z``), a TOML date-time with one, or a date alone
    (``2026-11-01``: its midnight, UTC).

    :raises ValueError: anything else, a date-time without a zone included (whose zone
        would be a guess).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone: add Z or an offset")
        value = value.isoformat()
    elif isinstance(value, date):
        value = f"{value.isoformat()}T00:00:00Z"
    if not isinstance(value, str):
        raise ValueError(f"expected a date or a date-time, got {type(value).__name__}")
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text += "T00:00:00Z"
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (2026-11-01) or a date-time with a zone "
            "(2026-11-01T08:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: add Z or an offset (+01:00)")
    return canonical_timestamp(parsed.astimezone(UTC).isoformat(timespec="milliseconds"))


def _out_of_range(value: str) -> TimestampRangeError:
    return TimestampRangeError(
        f"out of range: {value!r} (after conversion to UTC; accepted "
        f"{MIN_TIMESTAMP[:10]} to {MAX_TIMESTAMP[:10]})"
    )


def canonicalize(obj: Any) -> Canonical:
    """Validate one decoded record and return its canonical form.

    :raises EventError: naming the field at fault.
    """
    return _canonicalize(obj, None)


def _canonicalize(obj: Any, line: bytes | None) -> Canonical:
    """:func:`canonicalize`; ``line`` is the JSON ``obj`` was read from by orjson, read
    again exactly if it may have held an integer orjson turned into a float."""
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
        if name in TIMESTAMP_FIELDS:
            try:
                value = canonical_timestamp(value)
            except TimestampRangeError as exc:
                raise EventError(name, str(exc)) from None
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
            # Only unknown fields can hold numbers, and an integer orjson could not hold
            # became a float, in them or nested in them: only then look for one.
            if (
                line is not None
                and type(value) in _INEXACT_TYPES
                and _LONG_DIGIT_RUN in line.translate(_DIGITS_AS_ZERO)
            ):
                return _canonicalize(loads_exact(line), None)
            out[name] = value
    return Canonical(etype, log_type, out["timestamp"], _dumps(out))


def _dumps(out: dict[str, Any]) -> bytes:
    """The canonical bytes of a validated record."""
    try:
        raw = orjson.dumps(out)
    except orjson.JSONEncodeError:
        # A Python int beyond 64 bits (a caller's dict), nesting deeper than orjson
        # writes, or a lone surrogate (only the exact path can produce one).
        try:
            raw = orjson.dumps(_exact_ints(out, 0))
        except orjson.JSONEncodeError as exc:
            raise EventError(None, f"cannot be stored as JSON: {exc}") from None
    # Both lead bytes are rare in event text; find() of one byte is a memchr.
    if not raw.isascii() and (raw.find(b"\xe2") >= 0 or raw.find(b"\xc2") >= 0):
        for char, escape in _LINE_SEPARATORS:
            if char in raw:
                raw = raw.replace(char, escape)
    return raw


def _exact_ints(value: Any, depth: int) -> Any:
    """``value`` with integers orjson cannot write as pre-serialised fragments."""
    if depth > 256:  # orjson's own limit is lower: it will report the nesting
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: _exact_ints(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact_ints(v, depth + 1) for v in value]
    return value


def parse_line(line: bytes) -> Canonical:
    """Decode and validate one NDJSON line (without its newline).

    :raises EventError: for invalid JSON, invalid UTF-8, oversize lines or bad fields.
    """
    if len(line) > MAX_RECORD_BYTES:
        raise EventError(None, f"record is {len(line)} bytes, over the {MAX_RECORD_BYTES} limit")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc):  # 1e400: let the exact path say which number
            return _canonicalize(loads_exact(line), None)
        raise EventError(None, f"invalid JSON: {exc}") from None
    return _canonicalize(obj, line)


def loads_exact(line: bytes) -> Any:
    """Decode one JSON line with integers of any size kept exact (as
    :class:`orjson.Fragment` when orjson could not hold them), for :func:`canonicalize`.

    Refuses what :func:`orjson.loads` refuses (invalid UTF-8, ``NaN``, bad syntax),
    except that integers of any size are kept, a number beyond a 64-bit float (``1e400``)
    is named, and a lone surrogate escape (``"\\ud800"``) is let through for
    :func:`canonicalize` to refuse.

    :raises EventError: invalid UTF-8 or JSON, or a number out of range.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        raise EventError(None, reason) from None
    try:
        return json.loads(
            text, parse_int=_exact_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except json.JSONDecodeError as exc:
        raise EventError(None, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise EventError(None, "invalid JSON: nested too deeply") from None


def _exact_int(text: str) -> int | orjson.Fragment:
    # Twenty characters hold every 64-bit integer (with its sign); longer ones are
    # beyond it, and int() would refuse past 4,300 digits anyway.
    if len(text) <= 20:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return orjson.Fragment(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise EventError(None, f"number out of range: {text} (beyond a 64-bit float)")
    return value


def _no_constant(text: str) -> float:
    # The stdlib reads NaN and Infinity; JSON (and orjson) do not.
    raise EventError(None, f"invalid JSON: {text} is not a JSON value")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | orjson.Fragment):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
