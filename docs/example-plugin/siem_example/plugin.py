"""The ``csv`` formatter: one CSV record per event, fixed columns, RFC 4180 quoting.

Registered through the ``siem_plugins`` entry point group (see ``pyproject.toml``), so
installing the package is all it takes::

    [[integration]]
    name = "acme"
    format = "csv"                      # or { type = "csv", columns = ["id", ...] }

Records have no header line (each object and each batch must be a plain run of
records) and end in ``\\n``, not RFC 4180's CRLF: the formatter contract is one
``\\n``-terminated line per event. Fields containing ``,`` or ``"`` are quoted, with
``"`` doubled, as RFC 4180 says. A line break inside a field would split the record
(RFC 4180 allows that inside quotes; line-oriented SIEM collectors do not), so
backslash, CR, LF and every other control or line-separator character are written as
backslash escapes (``\\\\``, ``\\r``, ``\\n``, ``\\x1f``, ``\\u2028``); :func:`parse_line`
undoes them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from siem_plugins import Event, FormatterBase, FormatterSpec, Options, hookimpl

#: The default columns: the store's id, then the fields both event types carry, then
#: the Device fields, then the Account fields. A field an event lacks is left empty.
COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "type",
    "log_type",
    "device_name",
    "device_id",
    "device_group",
    "device_username",
    "last_seen",
    "admin_name",
    "admin_email",
    "event",
    "details",
)

# Backslash (the escape character itself), C0 controls except TAB, DEL, C1 controls
# (NEL among them) and U+2028/2029: everything some reader treats as a line break.
_UNSAFE = re.compile(r"[\\\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_ESCAPE = re.compile(r"\\(\\|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _unescape(match: re.Match[str]) -> str:
    seq = match.group(1)
    return {"\\": "\\", "n": "\n", "r": "\r"}.get(seq) or chr(int(seq[1:], 16))


def parse_line(line: bytes | str) -> list[str]:
    """One record back as its column values, escapes undone."""
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    (row,) = csv.reader([text.rstrip("\n")])
    return [_ESCAPE.sub(_unescape, value) for value in row]


class CSVFormatter(FormatterBase):
    extension = "csv"
    # RFC 4180's optional "header" parameter tells readers there is no header line.
    content_type = "text/csv; charset=utf-8; header=absent"

    def __init__(self, columns: Sequence[str] = COLUMNS) -> None:
        self.columns = tuple(columns)

    @classmethod
    def from_options(cls, options: Options) -> CSVFormatter:
        columns = options.strings("columns", COLUMNS) or []
        if not columns or len(set(columns)) != len(columns) or "" in columns:
            raise options.error("columns", "expected distinct, non-empty column names")
        return cls(columns)

    def _value(self, event: Event, fields: dict[str, Any], column: str) -> str:
        value = event.id if column == "id" else fields.get(column)
        if value is None:
            return ""
        if not isinstance(value, str):  # an unknown field may hold any JSON value
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return _UNSAFE.sub(_escape, value)

    def format(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")  # QUOTE_MINIMAL, "" for "
        for event in events:
            fields = event.fields()
            writer.writerow([self._value(event, fields, c) for c in self.columns])
        return out.getvalue().encode("utf-8")


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="csv",
            factory=CSVFormatter.from_options,
            description="CSV, one record per event, fixed columns (columns = [...]), no header",
        )
    ]
