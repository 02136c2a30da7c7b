"""Where a point in time, or "now", falls among an account's event ids.

Ids follow arrival, not event time: these helpers answer with the ids of the first and
last event of a time window (``siem-plugins replay --since``) and the cursor a new
integration with ``start_at`` begins with. On the built-in stores each is one query; any
other source is read through.
"""

from __future__ import annotations

import sys

from siem_plugins.kinds import Range, Source
from siem_plugins.storage.eventstore import SQLEventStore


def time_span(source: Source, account: str, since: str | None, until: str | None) -> Range | None:
    """First id, last id and count of the account's events whose own time is in
    ``[since, until)`` (canonical timestamps; None: unbounded). One query on the
    built-in stores; any other source is read through."""
    if isinstance(source, SQLEventStore):
        found = source.time_span(account, since, until)
        return Range(*found) if found else None
    first = last = None
    count = 0
    for batch in source.read(account, 1, sys.maxsize, batch_size=10_000):
        for event in batch:
            if (since is None or event.timestamp >= since) and (
                until is None or event.timestamp < until
            ):
                first = event.id if first is None else first
                last = event.id
                count += 1
    return Range(first, last, count) if first is not None and last is not None else None


def last_id(source: Source, account: str) -> int:
    """The account's highest stored id (0: none yet)."""
    if isinstance(source, SQLEventStore):
        return source.last_id(account)
    rng = source.plan(account, 0, max_events=sys.maxsize, max_bytes=sys.maxsize)
    return rng.last_id if rng else 0


def start_cursor(source: Source, account: str, start_at: str) -> int:
    """The cursor a never-synced integration with ``start_at`` begins with: ``"now"``,
    the account's last id; a time, just before the first event whose own time is at or
    after it (the last id when none is yet: everything stored from now on ships)."""
    if start_at == "now":
        return last_id(source, account)
    span = time_span(source, account, start_at, None)
    return span.first_id - 1 if span is not None else last_id(source, account)
