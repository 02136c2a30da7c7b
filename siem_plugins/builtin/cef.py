"""The built-in ``cef`` formatter: ArcSight Common Event Format (CEF:0), one line per event.

Every SIEM reads CEF (ArcSight, Sentinel's CommonSecurityLog, QRadar, Splunk, Elastic),
so it is the format a SOC asks for when it does not want the product's own JSON. A line
is::

    CEF:0|OPSWAT|MetaDefender IT Access|1.0|exempt_all|<name>|5|rt=... externalId=... ...

Escaping follows the CEF specification (Implementation Standard, "Character encoding"):

* header fields: ``\\`` -> ``\\\\`` and ``|`` -> ``\\|``; CR and LF, which the header
  cannot hold, become a space;
* extension values: ``\\`` -> ``\\\\``, ``=`` -> ``\\=``, CR -> ``\\r``, LF -> ``\\n``.

Nothing else is changed: CEF defines no other escape, so every other character
(non-ASCII text, a tab, U+2028) is written as it is, and a CEF parser gives back the
event's text exactly. No event text can end a line or start a field of its own: the
only line break of the output is the ``\\n`` after each record, and every ``=`` of a
value is escaped. Empty values are left out (CEF has no empty value a parser agrees on).

The mapping from the product's fields is in docs/formats.md ("CEF output"). Output
depends on the event's account and store id (``externalId``, :mod:`.eventid`), so there
is no raw fast path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from siem_plugins import hookimpl
from siem_plugins.builtin.eventid import event_id
from siem_plugins.events import DEVICE, FIELD_ORDER, LOG_TYPE_DESCRIPTIONS, Event
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options

VENDOR = "OPSWAT"
PRODUCT = "MetaDefender IT Access"

#: Severity of each known log type, on CEF's 0-10 scale (LEEF's ``sev`` uses the same
#: numbers). Threats and blocks rank highest; changes to who may administer the product
#: (admins, roles, API keys) and exemptions from its checks rank above routine changes;
#: sign-ins and compliant devices lowest. Unknown log types get :data:`DEFAULT_SEVERITY`.
SEVERITY: dict[str, int] = {
    "added": 3,
    "removed": 4,
    "exempt": 4,
    "exempt_all": 5,
    "unexempt": 3,
    "compliant": 2,
    "non_compliant": 5,
    "blocked": 6,
    "unblocked": 4,
    "threat_detected": 8,
    "vulnerability_detected": 6,
    "patch_installed": 2,
    "config": 3,
    "login": 2,
    "login_failed": 5,
    "logout": 1,
    "admin_added": 5,
    "admin_removed": 5,
    "role_changed": 5,
    "policy_changed": 4,
    "api_key_created": 5,
    "api_key_revoked": 4,
}
DEFAULT_SEVERITY = 3

_CANONICAL_TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z", re.ASCII)
#: Header prefixes kept per (log type, name); bounded, as ``event`` is free text.
_MAX_CACHED_HEADS = 4096

# The fields the documentation does not know follow the known ones in the canonical
# JSON (events.py), and the last known field of both types is ``timestamp``: see
# :func:`unknown_fields`.
if any(order[-1] != "timestamp" for order in FIELD_ORDER.values()):  # pragma: no cover
    raise RuntimeError("unknown_fields() expects timestamp to be the last known field")


def severity(log_type: str) -> int:
    """The CEF/LEEF severity of a log type (:data:`SEVERITY`)."""
    return SEVERITY.get(log_type, DEFAULT_SEVERITY)


def readable_name(log_type: str, event: str | None = None) -> str:
    """What the event is, for a person: an Account event's own ``event`` text
    (``Configuration Change``), else the log type's description, else the log type."""
    return event or LOG_TYPE_DESCRIPTIONS.get(log_type) or log_type


def canonical(timestamp: str, event: Event) -> str:
    """``timestamp`` if it has the canonical shape (``2022-07-15T08:55:12.279Z``), which
    the formats' time fields promise; one stored by an older version or another writer
    is refused with the event's id (it is then set aside, the others shipped)."""
    if not _CANONICAL_TS_RE.match(timestamp):
        raise ValueError(
            f"event {event.id}: timestamp {timestamp!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
        )
    return timestamp


def epoch_ms(timestamp: str, event: Event) -> int:
    """A canonical timestamp as milliseconds since the Unix epoch (negative before 1970),
    for CEF's ``rt``.

    ``datetime`` does the reading and checks the digits (measured cheaper than caching
    days or minutes and adding the rest in Python); the shape is checked first, so only
    a UTC time with milliseconds gets there. A float holds every millisecond of years
    1-9999 to within 0.04 ms, so rounding gives the exact integer (tests/test_cef.py
    checks the extremes and a sample against integer arithmetic)."""
    t = timestamp
    if len(t) == 24 and t[10] == "T" and t[19] == "." and t[23] == "Z":
        try:
            return round(datetime.fromisoformat(t).timestamp() * 1000)
        except ValueError:
            pass
    canonical(t, event)  # raises, naming the event
    raise ValueError(f"event {event.id}: timestamp {t!r} is not a valid time")


def unknown_fields(event: Event) -> bytes:
    """The fields the documentation does not know, as the canonical JSON object they are
    stored in (``b""`` when there are none): the stored bytes themselves, so integers of
    any size and the escapes of U+2028/U+2029/NEL stay exactly as stored.

    They are what follows the ``timestamp`` member in the canonical JSON. Its first
    occurrence is the member itself: inside a JSON string a quote is always escaped, so
    ``"timestamp":"`` cannot occur in a value before it.
    """
    raw = event.raw
    # The usual case, cheaply: the record ends with the timestamp member. (In compact
    # JSON a quote after a comma starts a key, never a string's text, where quotes are
    # escaped; the string value closed by the final ``"}`` is the top-level object's.)
    if raw[-40:-26] == b',"timestamp":"' and raw[-2:] == b'"}':
        return b""
    member = b'"timestamp":"' + event.timestamp.encode() + b'"'
    at = raw.find(member)
    end = at + len(member)
    if at < 0 or raw[end : end + 1] != b",":
        raise ValueError(f"event {event.id}: its JSON does not hold its timestamp as stored")
    return b"{" + raw[end + 1 :]


def fields_of(event: Event) -> dict[str, Any]:
    """The event's fields (the canonical JSON parsed), with a clear error for a record
    that is not a JSON object of a known type."""
    try:
        fields = orjson.loads(event.raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"event {event.id}: stored JSON is invalid ({exc})") from None
    if not isinstance(fields, dict) or event.type not in FIELD_ORDER:
        raise ValueError(f"event {event.id}: not a Device or Account event")
    return fields


def escape_header(value: str) -> str:
    """A CEF header field: ``\\`` and ``|`` backslash-escaped, CR and LF as a space."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "|" in value:
        value = value.replace("|", "\\|")
    if "\r" in value:
        value = value.replace("\r", " ")
    if "\n" in value:
        value = value.replace("\n", " ")
    return value


def escape_value(value: str) -> str:
    """A CEF extension value: ``\\``, ``=``, CR and LF escaped, nothing else changed.
    The ``in`` tests first: most values need nothing, and a test costs a tenth of a
    ``replace``."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "=" in value:
        value = value.replace("=", "\\=")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    return value


# What precedes each field's value: the CEF key, and the label of a custom key
# (cs1 = "Device Group"). Empty values are left out, their label with them.
_DEVICE_KEYS: tuple[tuple[str, str], ...] = (
    (" msg=", "details"),
    (" dhost=", "device_name"),
    (" deviceExternalId=", "device_id"),
    (" duser=", "device_username"),
    (" cs1Label=Device Group cs1=", "device_group"),
)
_ACCOUNT_KEYS: tuple[tuple[str, str], ...] = (
    (" msg=", "details"),
    (" suser=", "admin_name"),
    (" suid=", "admin_email"),
)
_LAST_SEEN_KEY = " deviceCustomDate1Label=Last Seen deviceCustomDate1="
_EXTRA_KEY = " cs2Label=Extra Fields cs2="


class CEFFormatter(FormatterBase):
    extension = "cef"
    content_type = "text/plain; charset=utf-8"

    def __init__(self, version: str = "1.0") -> None:
        self.version = version
        self._prefix = f"CEF:0|{escape_header(VENDOR)}|{escape_header(PRODUCT)}|" + (
            f"{escape_header(version)}|"
        )
        self._heads: dict[tuple[str, str], str] = {}

    @classmethod
    def from_options(cls, options: Options) -> CEFFormatter:
        version = options.string("version", "1.0")
        if not version or len(version) > 31 or not version.isprintable():
            raise options.error(
                "version",
                f"must be 1-31 printable characters (CEF Device Version), got {version!r}",
            )
        return cls(version)

    def _head(self, log_type: str, name: str) -> str:
        """``CEF:0|vendor|product|version|signature|name|severity|``, cached."""
        head = self._heads.get((log_type, name))
        if head is None:
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            head = (
                f"{self._prefix}{escape_header(log_type)}|{escape_header(name)}|"
                f"{severity(log_type)}|"
            )
            self._heads[(log_type, name)] = head
        return head

    def line(self, event: Event) -> str:
        """One event's CEF record, without its newline. Written for speed (it runs once
        per event): one comprehension over the mapped fields, one f-string, and no
        escaping at all for the many events that need none: in the stored JSON, a
        backslash, CR or LF of any value is written with a backslash, so a record
        without ``\\`` and ``=`` has nothing to escape."""
        raw = event.raw
        rt = epoch_ms(event.timestamp, event)  # first: the clearest error for a bad record
        fields = fields_of(event)
        get = fields.get
        device = event.type == DEVICE
        keys = _DEVICE_KEYS if device else _ACCOUNT_KEYS
        try:
            if b"\\" in raw or b"=" in raw:
                ext = "".join([p + escape_value(v) for p, name in keys if (v := get(name))])
            else:
                ext = "".join([p + v for p, name in keys if (v := get(name))])
            if device:
                head = self._head(event.log_type, readable_name(event.log_type))
                last_seen = get("last_seen")
                if last_seen:
                    ext += _LAST_SEEN_KEY + str(epoch_ms(last_seen, event))
            else:  # ACCOUNT (fields_of checked the type)
                head = self._head(event.log_type, readable_name(event.log_type, get("event")))
        except (TypeError, AttributeError):  # ingest makes every known field a string
            raise ValueError(f"event {event.id}: a known field is not a string") from None
        extra = unknown_fields(event)
        if extra:
            ext += _EXTRA_KEY + escape_value(extra.decode())
        return f"{head}rt={rt} externalId={event_id(event.account, event.id)} cat={event.type}{ext}"

    def format(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        line = self.line
        # Each line encoded alone: most are ASCII, and a batch's one joined string would
        # take the widest character of any line (measured 40 % slower).
        return b"\n".join([line(e).encode() for e in events]) + b"\n"


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="cef",
            factory=CEFFormatter.from_options,
            description="ArcSight CEF:0, one line per event (rt, externalId, msg, dhost, suser)",
        )
    ]
