"""A stable id for each stored event, shared by the SIEM formats (CEF, LEEF, OCSF, ECS).

SQS-based S3 readers (Splunk, Elastic, Sentinel) deliver at least once, and a replayed
intent or a ``replay`` job ships the same events again: a SIEM needs an id to drop the
duplicates. The id is derived from what identifies an event for good, its account and
its store id, so it is the same on every replay, in every format and every bucket, and
no state has to be kept for it. Hashing (rather than ``f"{account}-{id}"``) keeps the
account's name out of the id and gives every id the same length and alphabet.
"""

from __future__ import annotations

import hashlib

__all__ = ["event_id"]


def event_id(account: str, store_id: int) -> str:
    """The first 32 hex characters (128 bits) of SHA-256 over ``account``, a NUL and
    the store id in decimal: ``event_id("acme", 1)``. The NUL keeps ``("a1", 2)`` and
    ``("a", 12)`` apart."""
    return hashlib.sha256(f"{account}\x00{store_id}".encode()).hexdigest()[:32]
