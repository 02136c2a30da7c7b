"""The built-in ``json`` formatter: NDJSON, one compact object per line, seed field order.

The store already holds each event's canonical JSON, so formatting is a join: nothing
is parsed or re-serialised. JSON escapes every control character, so a newline inside
a field can never split a record.
"""

from __future__ import annotations

from collections.abc import Sequence

from siem_plugins import hookimpl
from siem_plugins.events import Event
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options


class JSONFormatter(FormatterBase):
    extension = "json"
    content_type = "application/x-ndjson"

    @classmethod
    def from_options(cls, options: Options) -> JSONFormatter:
        return cls()

    def format(self, events: Sequence[Event]) -> bytes:
        return _lines([e.raw for e in events])

    def format_raw(self, raws: Sequence[bytes]) -> bytes:
        """The fast path (:attr:`~siem_plugins.Formatter.format_raw`): no Event objects."""
        return _lines(raws)


def _lines(raws: Sequence[bytes]) -> bytes:
    return b"\n".join(raws) + b"\n" if raws else b""


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="json",
            factory=JSONFormatter.from_options,
            description="NDJSON: one compact JSON object per line, the documentation's field order",
        )
    ]
