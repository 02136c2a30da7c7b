"""What the CEF and LEEF tests expect, written from the published formats and the mapping
tables of docs/formats.md, not from the formatters' code: reference parsers, the
expected fields of an event, the event id and the epoch milliseconds computed anew.

The parsers are strict on purpose: an unknown escape, a duplicated key, a raw line
break or a key that is not a word fails the test, so output a lenient SIEM would
silently misread cannot pass.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from siem_plugins.events import Event
from siem_plugins.kinds import Formatter
from siem_plugins.testing import events_from_dicts

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"

#: Every character the formats treat specially, and the texts that try to forge a field,
#: a record or a header; each goes into every free-text field of a Device and an
#: Account event (and the Account's ``event``, which becomes the CEF header's Name).
HOSTILE_TEXTS: tuple[str, ...] = (
    "pipe | in the middle",
    "|leading and trailing|",
    "back\\slash and \\\\ two",
    "ends in a backslash\\",
    "a=b",
    "=",
    "\\=",
    "already escaped \\| \\= \\n \\r",
    "cr\rx",
    "lf\nx",
    "crlf\r\nx",
    "\n\n\nx",
    "line\u2028separator\u2029paragraph\u0085nel",
    "tab\there",
    "caret^here~tilde`backtick!bang#hash*star;semi",
    "vt\x0bff\x0cfs\x1cgs\x1drs\x1e",
    "nul\x00esc\x1b[31mdel\x7f",
    "ünïcødé 漢字 🚀 👩\u200d💻 Cafe\u0301",
    "x msg=forged cs1=forged",
    "x\tsev=1\tusrName=forged",
    "x^sev=1^usrName=forged",
    "x\nCEF:0|Evil|Forged|1|sig|name|10|msg=forged",
    "x\nLEEF:2.0|Evil|Forged|1|sig|^|sev=10",
    " leading and trailing spaces  ",
    "dangling key= ",
    "CEF:0|not|a|header|",
)
#: Longer than any header or field limit, and than a pipe buffer.
LONG_TEXT = ("0123456789=|\\" * 4000)[:50_000]

CEF_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
CEF_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def hostile_dicts() -> list[dict[str, Any]]:
    """Device and Account events with each hostile text in every free-text field, and in
    unknown fields (a name too); plus one with a very long text everywhere."""
    out: list[dict[str, Any]] = []
    for text in (*HOSTILE_TEXTS, LONG_TEXT):
        out.append(
            {
                "log_type": "threat_detected",
                "device_name": text,
                "device_id": text or "id",
                "last_seen": "2022-07-15T08:55:12.279Z",
                "device_group": text,
                "details": text,
                "type": "Device",
                "device_username": text,
                "timestamp": "2022-07-15T08:55:12.279Z",
                "extra": text,
                text[:30] or "empty": [text, {"k": text}, 18446744073709551616],
            }
        )
        out.append(
            {
                "log_type": "config",
                "details": text,
                "admin_name": text,
                "type": "Account",
                "event": text,
                "admin_email": text,
                "timestamp": "2022-07-15T08:55:12.279Z",
            }
        )
    # Unknown fields that end like the timestamp member (which closes a record that has
    # none): they must still be found.
    ts = "2022-07-15T08:55:12.279Z"
    for extra in ({'a"timestamp': ts}, {"my_timestamp": ts}, {"x": {"timestamp": ts}}):
        out.append({**out[-1], "details": "tricky unknown field", **extra})
    return out


# --------------------------------------------------------------------------- events


def seed_events() -> list[Event]:
    lines = (DATA / "seed_events.ndjson").read_text().splitlines()
    return events_from_dicts([json.loads(line) for line in lines])


def edge_events() -> list[Event]:
    lines = (DATA / "edge_events.ndjson").read_text().splitlines()
    return events_from_dicts([json.loads(line) for line in lines], account="globex", first_id=41)


def check_golden(name: str, data: bytes) -> None:
    """``data`` against tests/data/golden/<name>; ``SIEM_UPDATE_GOLDEN=1`` rewrites the
    file first (then review the diff: the golden files are the format's contract)."""
    path = GOLDEN / name
    if os.environ.get("SIEM_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{name} changed; see tests/data/golden"


def read_back(formatter: Formatter, events: list[Event]) -> list[str]:
    """The formatter's output as lines, after checking there is one per event."""
    out = formatter.format(events)
    assert out.endswith(b"\n") and out.count(b"\n") == len(events)
    return out.decode("utf-8").split("\n")[:-1]


# --------------------------------------------------------------------------- mapping


def event_id(account: str, store_id: int) -> str:
    """docs/formats.md: the first 32 hex characters of SHA-256 over account, NUL, id."""
    return hashlib.sha256(f"{account}\x00{store_id}".encode()).hexdigest()[:32]


def epoch_ms(timestamp: str) -> int:
    """Milliseconds since 1970 of a canonical timestamp, by calendar.timegm (not the
    formatter's datetime arithmetic)."""
    parsed = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(parsed.timetuple()) * 1000 + parsed.microsecond // 1000


#: docs/formats.md, "Severity".
SEVERITY = {
    "added": 3, "removed": 4, "exempt": 4, "exempt_all": 5, "unexempt": 3, "compliant": 2,
    "non_compliant": 5, "blocked": 6, "unblocked": 4, "threat_detected": 8,
    "vulnerability_detected": 6, "patch_installed": 2, "config": 3, "login": 2,
    "login_failed": 5, "logout": 1, "admin_added": 5, "admin_removed": 5, "role_changed": 5,
    "policy_changed": 4, "api_key_created": 5, "api_key_revoked": 4,
}  # fmt: skip
KNOWN = {
    "Device": (
        "log_type", "device_name", "device_id", "last_seen", "device_group", "details",
        "type", "device_username", "timestamp",
    ),
    "Account": ("log_type", "details", "admin_name", "type", "event", "admin_email", "timestamp"),
}  # fmt: skip


def fields(event: Event) -> dict[str, Any]:
    """The event's fields by the stdlib's JSON reader (integers of any size exact)."""
    parsed: dict[str, Any] = json.loads(event.raw)
    return parsed


def extras(event: Event) -> dict[str, Any]:
    return {k: v for k, v in fields(event).items() if k not in KNOWN[event.type]}


def cef_name(event: Event) -> str:
    from siem_plugins.events import LOG_TYPE_DESCRIPTIONS

    name = fields(event).get("event", "") or LOG_TYPE_DESCRIPTIONS.get(event.log_type)
    return (name or event.log_type).replace("\r", " ").replace("\n", " ")


def expected_cef(event: Event, version: str = "1.0") -> tuple[list[str], dict[str, Any]]:
    """The header fields and the extension docs/formats.md promises for ``event``; the
    ``cs2`` (extra fields) value parsed as JSON."""
    f = fields(event)
    header = [
        "CEF:0",
        "OPSWAT",
        "MetaDefender IT Access",
        version,
        event.log_type,
        cef_name(event),
        str(SEVERITY.get(event.log_type, 3)),
    ]
    ext: dict[str, Any] = {
        "rt": str(epoch_ms(event.timestamp)),
        "externalId": event_id(event.account, event.id),
        "cat": event.type,
    }
    if event.type == "Device":
        mapping = {
            "msg": "details",
            "dhost": "device_name",
            "deviceExternalId": "device_id",
            "duser": "device_username",
            "cs1": "device_group",
        }
    else:
        mapping = {"msg": "details", "suser": "admin_name", "suid": "admin_email"}
    for key, name in mapping.items():
        if f.get(name):
            ext[key] = f[name]
    if ext.get("cs1"):
        ext["cs1Label"] = "Device Group"
    if f.get("last_seen"):
        ext["deviceCustomDate1"] = str(epoch_ms(f["last_seen"]))
        ext["deviceCustomDate1Label"] = "Last Seen"
    if extras(event):
        ext["cs2"] = extras(event)
        ext["cs2Label"] = "Extra Fields"
    return header, ext


LEEF_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX"


def expected_leef(event: Event, delimiter: str = "\t") -> dict[str, Any]:
    """The attributes docs/formats.md promises (the delimiter, CR and LF of a value read
    as a space); ``extraFields`` parsed as JSON."""
    f = fields(event)

    def clean(value: str) -> str:
        return value.replace(delimiter, " ").replace("\r", " ").replace("\n", " ")

    attrs: dict[str, Any] = {
        "devTime": event.timestamp,
        "devTimeFormat": LEEF_TIME_FORMAT,
        "cat": event.type,
        "sev": str(SEVERITY.get(event.log_type, 3)),
        "externalId": event_id(event.account, event.id),
    }
    if event.type == "Device":
        mapping = {
            "msg": "details",
            "identHostName": "device_name",
            "deviceId": "device_id",
            "deviceGroup": "device_group",
            "usrName": "device_username",
            "lastSeen": "last_seen",
        }
    else:
        mapping = {
            "msg": "details",
            "usrName": "admin_email",
            "adminName": "admin_name",
            "eventName": "event",
        }
    for key, name in mapping.items():
        if f.get(name):
            attrs[key] = clean(f[name])
    if extras(event):
        # The delimiter can only sit inside a JSON string there: a space in its place.
        # (JSON escapes a tab, so a tab delimiter never occurs there.)
        text = json.dumps(extras(event), ensure_ascii=False)
        attrs["extraFields"] = json.loads(text.replace(delimiter, " "))
    return attrs


# --------------------------------------------------------------------------- parsers


def _decode(text: str, escapes: dict[str, str], where: str) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 == len(text) or text[i + 1] not in escapes:
                raise AssertionError(f"invalid escape in {where}: {text[i : i + 2]!r}")
            out.append(escapes[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """One CEF:0 record by the grammar of the CEF Implementation Standard.

    Header: ``CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|``, seven
    fields ended by unescaped ``|``, with ``\\\\`` and ``\\|`` the only escapes.
    Extension: ``key=value`` pairs separated by spaces; a key is a word ending at an
    unescaped ``=``; a value runs to the space before the next key (so it may hold
    spaces, and an unescaped ``=`` cannot occur in it); ``\\\\``, ``\\=``, ``\\n`` and
    ``\\r`` are its only escapes.
    """
    assert "\n" not in line and "\r" not in line, "a raw line break in the record"
    header: list[str] = []
    i, start = 0, 0
    while len(header) < 7:
        j = line.index("|", i)
        backslashes = len(line[:j]) - len(line[:j].rstrip("\\"))
        if backslashes % 2:  # an escaped pipe
            i = j + 1
            continue
        header.append(_decode(line[start:j], {"\\": "\\", "|": "|"}, "the header"))
        i = start = j + 1
    assert header[0] == "CEF:0", header[0]
    extension = line[start:]
    # The positions of the unescaped '=': they end the keys.
    cuts = []
    k = 0
    while k < len(extension):
        if extension[k] == "\\":
            k += 2
            continue
        if extension[k] == "=":
            cuts.append(k)
        k += 1
    pairs: dict[str, str] = {}
    if not cuts:
        assert extension == "", f"an extension without a key: {extension!r}"
        return header, pairs
    key = extension[: cuts[0]]
    for n, cut in enumerate(cuts):
        end = cuts[n + 1] if n + 1 < len(cuts) else None
        segment = extension[cut + 1 : end]
        if end is None:
            value, next_key = segment, None
        else:
            space = segment.rfind(" ")
            assert space >= 0, f"no space before the key at {end}: {segment!r}"
            value, next_key = segment[:space], segment[space + 1 :]
        assert CEF_KEY.match(key), f"not a CEF key: {key!r}"
        assert key not in pairs, f"duplicate key {key!r}"
        pairs[key] = _decode(value, CEF_ESCAPES, f"the value of {key}")
        if next_key is not None:
            key = next_key
    return header, pairs


def parse_leef(line: str) -> tuple[list[str], str, dict[str, str]]:
    """One LEEF 2.0 record as IBM documents it (LEEF event components):
    ``LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attributes``, the delimiter one
    character or its hex code (``x09``, ``0x5E``), the attributes ``key=value``
    separated by the delimiter, a key ending at the first ``=``. No escapes."""
    assert "\n" not in line and "\r" not in line, "a raw line break in the record"
    parts = line.split("|", 6)
    assert len(parts) == 7 and parts[0] == "LEEF:2.0", parts[:6]
    declared = parts[5]
    hex_code = re.fullmatch(r"(?:0x|x)([0-9A-Fa-f]{2})", declared)
    delimiter = chr(int(hex_code.group(1), 16)) if hex_code else declared
    assert len(delimiter) == 1, f"not a delimiter: {declared!r}"
    attrs: dict[str, str] = {}
    for attribute in parts[6].split(delimiter):
        key, sep, value = attribute.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key), f"bad attribute {attribute!r}"
        assert key not in attrs, f"duplicate key {key!r}"
        attrs[key] = value
    return parts[1:5], delimiter, attrs


def with_json(parsed: dict[str, str], key: str) -> dict[str, Any]:
    """``parsed`` with the JSON value under ``key`` decoded (if present)."""
    out: dict[str, Any] = dict(parsed)
    if key in out:
        out[key] = json.loads(out[key])
    return out
