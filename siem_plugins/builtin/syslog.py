"""The built-in ``syslog`` formatter: one line per event.

The message body is exactly the product documentation's SYSLOG body — the event's
canonical JSON without its braces (``"log_type":"config","details":...``). Framing:

* ``rfc5424`` (default): ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - BODY``, the
  timestamp being the event's own and MSGID its log type;
* ``rfc3164``: ``<PRI>Mmm dd hh:mm:ss HOSTNAME APP-NAME: BODY``;
* ``bare``: the body alone, exactly the documentation's lines.

JSON escapes every control character, so no field can split a line.

With ``event_id``, ``account`` or ``product`` on (:mod:`.added_fields`), the body ends
with those fields, exactly as the ``json`` formatter's record does before its brace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from siem_plugins import hookimpl
from siem_plugins.events import Event
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options

from .added_fields import AddedFields

FRAMINGS = ("rfc5424", "rfc3164", "bare")
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
_CANONICAL_TS_LEN = len("2022-07-15T08:55:12.279Z")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 5424 HOSTNAME / APP-NAME / MSGID: PRINTUSASCII (33-126), bounded length.
_HEADER_FIELD_RE = re.compile(r"[!-~]+\Z")


class SyslogFormatter(FormatterBase):
    extension = "log"
    content_type = "text/plain; charset=utf-8"

    def __init__(
        self,
        framing: str = "rfc5424",
        *,
        facility: int = 16,
        severity: int = 6,
        hostname: str = "-",
        app_name: str = "metadefender-it-access",
        added: AddedFields | None = None,
    ) -> None:
        self.framing = framing
        self.added = added if added is not None else AddedFields()
        self.pri = facility * 8 + severity
        self.hostname = hostname
        self.app_name = app_name
        self._msgids: dict[str, bytes] = {}
        self._tail5424 = f" {hostname} {app_name} - ".encode()
        self._head = f"<{self.pri}>".encode()

    @classmethod
    def from_options(cls, options: Options) -> SyslogFormatter:
        framing = options.string("framing", "rfc5424", choices=FRAMINGS)
        facility = options.string("facility", "local0", choices=tuple(FACILITIES))
        severity = options.string("severity", "info", choices=tuple(SEVERITIES))
        hostname = options.string("hostname", "-")
        app_name = options.string("app_name", "metadefender-it-access")
        for key, value, limit in (("hostname", hostname, 255), ("app_name", app_name, 48)):
            if not _HEADER_FIELD_RE.match(value) or len(value) > limit:
                raise options.error(
                    key,
                    f"must be 1-{limit} printable ASCII characters "
                    f"without spaces (RFC 5424), got {value!r}",
                )
        return cls(
            framing,
            facility=FACILITIES[facility],
            severity=SEVERITIES[severity],
            hostname=hostname,
            app_name=app_name,
            added=AddedFields.from_options(options),
        )

    def _msgid(self, log_type: str) -> bytes:
        msgid = self._msgids.get(log_type)
        if msgid is None:
            # Log types are validated at ingest ([a-z0-9_.-]); RFC 5424 caps MSGID at 32.
            msgid = (log_type[:32] or "-").encode("ascii", "replace")
            self._msgids[log_type] = msgid
        return msgid

    def format(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        lines = self._framed(events)
        if self.added:
            # The body is the last part of the line in every framing.
            tail = self.added.tail
            lines = [line + tail(e) for line, e in zip(lines, events, strict=True)]
        return b"\n".join(lines) + b"\n"

    def _framed(self, events: Sequence[Event]) -> list[bytes]:
        """Each event's line, without its line break."""
        if self.framing == "bare":
            return [e.raw[1:-1] for e in events]
        # The header carries the event's own timestamp; one not in the canonical form
        # (stored by an older version, or by another writer) would make an invalid line.
        if any(len(e.timestamp) != _CANONICAL_TS_LEN for e in events):
            bad = next(e for e in events if len(e.timestamp) != _CANONICAL_TS_LEN)
            raise ValueError(
                f"event {bad.id}: timestamp {bad.timestamp!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
            )
        if self.framing == "rfc5424":
            head, tail, msgid = self._head, self._tail5424, self._msgid
            return [
                b"".join(
                    (
                        head,
                        b"1 ",
                        e.timestamp.encode(),
                        tail,
                        msgid(e.log_type),
                        b" - ",
                        e.raw[1:-1],
                    )
                )
                for e in events
            ]
        host_tag = f" {self.hostname} {self.app_name}: ".encode()
        return [
            b"".join((self._head, _rfc3164_time(e.timestamp), host_tag, e.raw[1:-1]))
            for e in events
        ]


def _rfc3164_time(ts: str) -> bytes:
    # "2022-07-15T08:55:12.279Z" -> "Jul 15 08:55:12" (day space-padded, per RFC 3164)
    month = _MONTHS[int(ts[5:7]) - 1]
    day = int(ts[8:10])
    return f"{month} {day:2d} {ts[11:19]}".encode()


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="syslog",
            factory=SyslogFormatter.from_options,
            description="one syslog line per event: RFC 5424 (default), RFC 3164 or bare",
        )
    ]
