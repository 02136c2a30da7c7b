"""The fields the ``json`` and ``syslog`` formatters add on request (all off by default).

The product documentation's JSON and SYSLOG records carry no id, no account and no
product name, and the default output stays exactly theirs. SQS-based S3 readers (Splunk,
Elastic, Sentinel) deliver an object at least once, and a replay writes the same events
again, so a SIEM needs a stable id to drop the copies: ``event_id = true`` appends one
(:func:`~siem_plugins.builtin.eventid.event_id`), after everything the event carries.

The fields are appended to the event's canonical JSON as bytes, never by parsing and
re-serialising it, so the event's own fields keep their bytes and order. An event that
already carries a top-level field of one of these names (an unknown field a producer
sent) cannot take a second one without making a JSON object with a duplicate key, which
readers resolve differently; it is refused with an error naming the field, and is set
aside as a dead letter while the rest of the batch ships.
"""

from __future__ import annotations

import json
import re

import orjson

from siem_plugins.events import Event
from siem_plugins.options import Options

from .eventid import event_id

#: What ``product = true`` writes: the documentation's product and its vendor.
VENDOR = "OPSWAT"
PRODUCT = "MetaDefender IT Access"


class AddedFields:
    """Which fields to append to each record; :meth:`tail` makes their bytes."""

    def __init__(
        self, *, event_id: bool = False, account: bool = False, product: bool = False
    ) -> None:
        self.event_id = event_id
        self.account = account
        self.product = product
        self.names: tuple[str, ...] = (
            *(("account",) if account else ()),
            *(("vendor", "product") if product else ()),
            *(("event_id",) if event_id else ()),
        )
        # A key is '"name":' in canonical JSON; inside a string a quote is escaped
        # ('\":'), so these bytes appear only as a key (at any depth: a hit is parsed).
        pattern = b"|".join(re.escape(n.encode()) for n in self.names)
        self._clash = re.compile(b'"(?:' + pattern + b')":') if self.names else None
        self._constant = (
            b',"vendor":' + _json(VENDOR) + b',"product":' + _json(PRODUCT) if product else b""
        )
        self._accounts: dict[str, bytes] = {}

    @classmethod
    def from_options(cls, options: Options) -> AddedFields:
        """``event_id``, ``account`` and ``product``: each ``true`` or ``false``."""
        return cls(
            event_id=options.boolean("event_id", False),
            account=options.boolean("account", False),
            product=options.boolean("product", False),
        )

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"AddedFields({', '.join(self.names) or 'none'})"

    def tail(self, event: Event) -> bytes:
        """``,"account":...,"event_id":"..."`` for ``event``: what goes before its
        closing brace. Raises ``ValueError`` if the event has one of these fields."""
        clash, raw = self._clash, event.raw
        # Canonical JSON has the known fields first, ``timestamp`` last of them, then the
        # event's unknown fields: a record that ends with its timestamp has no unknown
        # field, so no clash, and is not searched (most events; the search costs about
        # as much as the id's hash).
        if (
            clash is not None
            and not (raw.endswith(b'"}') and raw[-40:-26] == b',"timestamp":"')
            and clash.search(raw) is not None
        ):
            self._refuse_clash(event)
        out = self._account(event.account) if self.account else b""
        out += self._constant
        if self.event_id:
            out += b',"event_id":"' + event_id(event.account, event.id).encode() + b'"'
        return out

    def _account(self, account: str) -> bytes:
        cached = self._accounts.get(account)
        if cached is None:
            cached = self._accounts[account] = b',"account":' + _json(account)
        return cached

    def _refuse_clash(self, event: Event) -> None:
        """Raise if ``event`` has one of the names at its top level (the search found a
        key of that name somewhere; nested ones are fine)."""
        top = orjson.loads(event.raw)
        taken = [n for n in self.names if n in top]
        if taken:
            raise ValueError(
                f"event {event.id} already has a top-level field {taken[0]!r}, which this "
                "integration's format options add: the record would have the key twice "
                "(turn the option off, or rename the field where the events come from)"
            )


def _json(text: str) -> bytes:
    """``text`` as a JSON string, every non-ASCII character escaped (so no U+2028)."""
    return json.dumps(text).encode("ascii")
