"""The built-in ``leef`` formatter: IBM QRadar's Log Event Extended Format 2.0.

QRadar reads LEEF without a custom DSM: the header names the product and the event,
the attributes are ``key=value`` pairs separated by one delimiter character, which
LEEF 2.0 declares in the header (``x09``, a tab, by default)::

    LEEF:2.0|OPSWAT|MetaDefender IT Access|1.0|exempt_all|x09|devTime=...<tab>cat=Device...

LEEF has no escape for the delimiter: IBM's guidelines say values must not contain it,
and QRadar cuts an attribute at every delimiter, so a delimiter inside a value would end
the value there and could start a forged attribute (``details = "x<tab>sev=1"``). A
backslash escape would not help, as QRadar does not undo it (and doubling every
backslash would change ``DOMAIN\\user`` names). So, in values, the delimiter, CR and
LF each become a space; every other character is written as it is (``=`` included: a
key ends at the first ``=`` of an attribute). Header fields are the product's constants,
the validated ``version`` option and the log type (``[a-z0-9_.-]``), so they hold no
``|`` to escape. Empty values are left out.

The mapping is in docs/formats.md ("LEEF output"). Output depends on the event's
account and store id (``externalId``), so there is no raw fast path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from siem_plugins import hookimpl
from siem_plugins.builtin.cef import (
    PRODUCT,
    VENDOR,
    canonical,
    fields_of,
    severity,
    unknown_fields,
)
from siem_plugins.builtin.eventid import event_id
from siem_plugins.events import DEVICE, Event
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options

#: Delimiters allowed besides the tab: none of them is a character of the keys, the
#: timestamps, ``devTimeFormat``, an email address or JSON's syntax, so replacing it in
#: values never damages what QRadar parses (``-``, ``.``, ``:``, ``@``, ``,`` would).
DELIMITERS = "\t^~`!#*;"
#: Java SimpleDateFormat pattern of ``devTime`` (and ``lastSeen``): the canonical
#: timestamp as stored, ``X`` reading its ``Z``.
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX"
_LOG_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_HEX_RE = re.compile(r"(?:0x|x)([0-9a-fA-F]{2})\Z")
_VERSION_RE = re.compile(r"[^|\\]{1,31}\Z")

# (LEEF key, field). usrName is the identity QRadar normalises: the device's user, or
# the admin's email (the admin's sign-in name, what identity providers log too).
_DEVICE_KEYS: tuple[tuple[str, str], ...] = (
    ("msg", "details"),
    ("identHostName", "device_name"),
    ("deviceId", "device_id"),
    ("deviceGroup", "device_group"),
    ("usrName", "device_username"),
    ("lastSeen", "last_seen"),
)
_ACCOUNT_KEYS: tuple[tuple[str, str], ...] = (
    ("msg", "details"),
    ("usrName", "admin_email"),
    ("adminName", "admin_name"),
    ("eventName", "event"),
)


def parse_delimiter(value: str) -> str | None:
    """The delimiter an option names: the character itself, or its hex code as the LEEF
    header writes it (``x5E``, ``0x5E``); ``None`` if it is not one of :data:`DELIMITERS`."""
    found = _HEX_RE.match(value)
    if found:
        value = chr(int(found.group(1), 16))
    return value if len(value) == 1 and value in DELIMITERS else None


class LEEFFormatter(FormatterBase):
    extension = "leef"
    content_type = "text/plain; charset=utf-8"

    def __init__(self, version: str = "1.0", delimiter: str = "\t") -> None:
        if parse_delimiter(delimiter) != delimiter:
            raise ValueError(f"unsupported LEEF delimiter {delimiter!r}")
        self.version = version
        self.delimiter = delimiter
        #: How the header declares it: printable characters as they are, a tab as x09.
        self.declared = f"x{ord(delimiter):02x}" if delimiter == "\t" else delimiter
        # A tab is always escaped in the stored JSON; another delimiter may be there as is.
        self._raw_delimiter = None if delimiter == "\t" else delimiter.encode()
        self._prefix = f"LEEF:2.0|{VENDOR}|{PRODUCT}|{version}|"
        self._heads: dict[str, str] = {}
        self._time_format = f"{delimiter}devTimeFormat={DEV_TIME_FORMAT}{delimiter}cat="
        d = delimiter
        self._device_keys = tuple((f"{d}{key}=", name) for key, name in _DEVICE_KEYS)
        self._account_keys = tuple((f"{d}{key}=", name) for key, name in _ACCOUNT_KEYS)

    @classmethod
    def from_options(cls, options: Options) -> LEEFFormatter:
        version = options.string("version", "1.0")
        if not _VERSION_RE.match(version) or not version.isprintable():
            raise options.error(
                "version",
                f"must be 1-31 printable characters without | or \\, got {version!r}",
            )
        raw = options.string("delimiter", "\t")
        delimiter = parse_delimiter(raw)
        if delimiter is None:
            allowed = ", ".join(repr(c) for c in DELIMITERS)
            raise options.error(
                "delimiter",
                f'unsupported delimiter {raw!r}; choose a tab ("\\t" or "x09") or one '
                f'of {allowed} (or its hex code, e.g. "x5E")',
            )
        return cls(version, delimiter)

    def _head(self, event: Event) -> str:
        """``LEEF:2.0|vendor|product|version|log type|delimiter|devTime=``, cached."""
        head = self._heads.get(event.log_type)
        if head is None:
            if not _LOG_TYPE_RE.match(event.log_type):
                raise ValueError(f"event {event.id}: log type {event.log_type!r} is invalid")
            head = f"{self._prefix}{event.log_type}|{self.declared}|devTime="
            self._heads[event.log_type] = head
        return head

    def value(self, value: str) -> str:
        """An attribute value: the delimiter, CR and LF as a space (see the module)."""
        d = self.delimiter
        if d in value:
            value = value.replace(d, " ")
        if "\r" in value:
            value = value.replace("\r", " ")
        if "\n" in value:
            value = value.replace("\n", " ")
        return value

    def line(self, event: Event) -> str:
        """One event's LEEF record, without its newline. Written for speed (it runs once
        per event): one comprehension over the mapped fields, one f-string, and no
        cleaning for the many events that need none: in the stored JSON a tab, CR or LF
        of any value is written with a backslash, so a record without a backslash (and
        without a printable delimiter) has nothing to replace."""
        dev_time = canonical(event.timestamp, event)  # first: the clearest error
        fields = fields_of(event)
        get = fields.get
        device = event.type == DEVICE
        keys = self._device_keys if device else self._account_keys
        raw = event.raw
        try:
            if b"\\" in raw or (self._raw_delimiter is not None and self._raw_delimiter in raw):
                clean = self.value
                attrs = "".join([p + clean(v) for p, name in keys if (v := get(name))])
            else:
                attrs = "".join([p + v for p, name in keys if (v := get(name))])
            if device and (last_seen := get("last_seen")):
                canonical(last_seen, event)  # lastSeen shares devTimeFormat
        except (TypeError, AttributeError):  # ingest makes every known field a string
            raise ValueError(f"event {event.id}: a known field is not a string") from None
        extra = unknown_fields(event)
        if extra:
            attrs += f"{self.delimiter}extraFields={self.value(extra.decode())}"
        d = self.delimiter
        return (
            f"{self._head(event)}{dev_time}{self._time_format}"
            f"{event.type}{d}sev={severity(event.log_type)}{d}"
            f"externalId={event_id(event.account, event.id)}{attrs}"
        )

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
            name="leef",
            factory=LEEFFormatter.from_options,
            description="IBM QRadar LEEF 2.0, one line per event, tab-delimited by default",
        )
    ]
