"""The stable event id every structured format (CEF, LEEF, OCSF, ECS) carries.

SQS-based S3 readers (Splunk, Elastic, Sentinel) deliver objects at least once, and a
replayed intent or a ``replay`` job writes the same events again: a SIEM deduplicates on
an id that is the same every time the same stored event is shipped. The store's id alone
is not it (every account's events share one sequence, and two stores reuse ids), so the
id is derived from the account and the store id: stable across replays, re-syncs and
formats, distinct between accounts, and revealing neither.
"""

from __future__ import annotations

import hashlib


def event_id(account: str, store_id: int) -> str:
    """The first 32 hex characters (128 bits) of SHA-256 over ``account``, a NUL byte
    and the decimal store id: ``event_id("acme", 1)`` is the same on every shipper, for
    every format and every replay. The NUL keeps ``("a1", 2)`` and ``("a", 12)`` apart
    (account names cannot contain it)."""
    return hashlib.sha256(f"{account}\x00{store_id}".encode()).hexdigest()[:32]
