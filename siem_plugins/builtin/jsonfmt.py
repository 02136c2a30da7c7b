"""The built-in ``json`` formatter: NDJSON, one compact object per line, seed field order.

The store already holds each event's canonical JSON, so formatting is a join: nothing
is parsed or re-serialised. JSON escapes every control character, so a newline inside
a field can never split a record.

With ``event_id``, ``account`` or ``product`` on (:mod:`.added_fields`), each record gets
those fields before its closing brace. They depend on the event's account and store id,
which the raw fast path does not have, so such an instance has no ``format_raw``.
"""

from __future__ import annotations

from collections.abc import Sequence

from siem_plugins import hookimpl
from siem_plugins.events import Event
from siem_plugins.kinds import FormatterBase, FormatterSpec, RawFormat
from siem_plugins.options import Options

from .added_fields import AddedFields


def _lines(raws: Sequence[bytes]) -> bytes:
    return b"\n".join(raws) + b"\n" if raws else b""


class JSONFormatter(FormatterBase):
    extension = "json"
    content_type = "application/x-ndjson"
    #: The fast path (:attr:`~siem_plugins.Formatter.format_raw`): no Event objects.
    format_raw: RawFormat | None = staticmethod(_lines)

    def __init__(self, added: AddedFields | None = None) -> None:
        self.added = added if added is not None else AddedFields()
        if self.added:
            # The added fields need the account and the store id; raw bytes have neither.
            self.format_raw = None

    @classmethod
    def from_options(cls, options: Options) -> JSONFormatter:
        return cls(AddedFields.from_options(options))

    def format(self, events: Sequence[Event]) -> bytes:
        if not self.added:
            return _lines([e.raw for e in events])
        tail = self.added.tail
        return _lines([b"".join((e.raw[:-1], tail(e), b"}")) for e in events])


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="json",
            factory=JSONFormatter.from_options,
            description="NDJSON: one compact JSON object per line, the documentation's field order",
        )
    ]
