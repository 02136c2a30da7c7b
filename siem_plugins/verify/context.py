"""What every check of ``verify`` works from: the integration, its bucket, the store,
the report being written, and the objects as their keys and metadata describe them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siem_plugins.events import Event

from .buckets import Bucket
from .content import closing
from .report import Finding, Report

if TYPE_CHECKING:
    from siem_plugins.runtime import Integration, Runtime


@dataclass
class StoredObject:
    """An object of the integration, as its key and metadata describe it."""

    key: str
    location: str
    first_id: int
    last_id: int
    encoding: str | None
    count: int | None = None  # None: no metadata
    set_aside: int = 0
    replay: bool = False
    pending: bool = False


class Context:
    """The integration being verified, and the helpers every check uses."""

    def __init__(self, rt: Runtime, integ: Integration, bucket: Bucket, deep: bool) -> None:
        self.rt = rt
        self.integ = integ
        self.bucket = bucket
        self.deep = deep
        self.account = integ.config.account
        self.source = rt.source
        self.report = Report(integ.name, self.account, bucket.location(f"{self.account}/"), deep)

    # ------------------------------------------------------------------ helpers

    def find(self, kind: str, message: str, keys: Iterable[str] = (), **ids: int | None) -> None:
        """Report a finding (``ids``: ``first_id``, ``last_id``, ``events``)."""
        self.report.findings.append(Finding(kind, message, tuple(keys), **ids))

    def note(self, kind: str, message: str, keys: Iterable[str] = (), **ids: int | None) -> None:
        """Report information (not a finding)."""
        self.report.info.append(Finding(kind, message, tuple(keys), **ids))

    def events(self, first: int, last: int) -> Iterator[Event]:
        """The account's events with ``first <= id <= last``, in id order."""
        with closing(
            self.source.read(self.account, first, last, batch_size=self.integ.config.batch_size)
        ) as batches:
            for batch in batches:
                yield from batch

    def ids(self, first: int, last: int) -> list[int]:
        """Their ids."""
        return [e.id for e in self.events(first, last)]

    def count(self, first: int, last: int, expected: int) -> int:
        """The account's events with ``first <= id <= last``. One aggregate of the
        source when there are ``expected`` of them (the usual case), else a count."""
        if expected > 0:
            rng = self.source.plan(
                self.account, first - 1, max_events=expected, max_bytes=sys.maxsize
            )
            if rng is not None and rng.count == expected and rng.last_id == last:
                return expected
        return len(self.ids(first, last))


def short(ids: list[int], limit: int = 10) -> str:
    """The first ``limit`` ids, for a message."""
    return ", ".join(map(str, ids[:limit])) + (", ..." if len(ids) > limit else "") or "none"
