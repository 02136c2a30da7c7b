"""What ``verify`` reports: :class:`Finding`, :class:`Report`, their kinds, and the text
form of a report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Kinds of finding: each makes ``verify`` exit 1.
GAP = "gap"
OVERLAP = "overlap"
DUPLICATE = "duplicate"
COUNT = "count"
METADATA = "metadata"
CONTENT = "content"
UNKNOWN = "unknown"
UPLOAD = "upload"
FINDING_KINDS = (GAP, OVERLAP, DUPLICATE, COUNT, METADATA, CONTENT, UNKNOWN, UPLOAD)
#: Kinds of information: reported, never a failure.
PENDING = "pending"
SET_ASIDE = "set-aside"
REPLAYED = "replay"
BACKLOG = "backlog"
LEFTOVER = "leftover"
IGNORED = "ignored"


@dataclass(frozen=True)
class Finding:
    """One thing ``verify`` found (or, in :attr:`Report.info`, noted).

    :ivar kind: one of :data:`FINDING_KINDS`, or an information kind (``pending``,
        ``set-aside``, ``replay``, ``backlog``, ``leftover``, ``ignored``).
    :ivar keys: the objects (or uploads) concerned, as locations (``s3://bucket/key``).
    :ivar first_id: the first event id concerned, when ids are.
    :ivar last_id: the last event id concerned.
    :ivar events: how many events are concerned, when that is known.
    """

    kind: str
    message: str
    keys: tuple[str, ...] = ()
    first_id: int | None = None
    last_id: int | None = None
    events: int | None = None


@dataclass
class Report:
    """What ``verify`` found for one integration.

    :ivar skipped: why the integration was not verified (a sink ``verify`` cannot read).
    :ivar error: why verifying failed (the bucket or the store could not be read).
    :ivar objects: objects of the integration found (replay objects included).
    :ivar events: events those objects hold, by their metadata (``None``: the sink
        keeps no metadata).
    """

    integration: str
    account: str
    sink: str
    deep: bool
    cursor: int = 0
    objects: int = 0
    events: int | None = None
    findings: list[Finding] = field(default_factory=list)
    info: list[Finding] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing found and nothing failed (a skipped integration is ok: nothing was
        looked at; the caller decides whether that is acceptable)."""
        return not self.findings and self.error is None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


class VerifyError(RuntimeError):
    """The bucket or the store could not be read: nothing can be proved."""


def render(report: Report) -> list[str]:
    """A report as text lines: a status line, the findings, then the information."""
    r = report
    where = f"{r.sink} (account {r.account})"
    if r.skipped:
        return [f"{r.integration}: NOT VERIFIED: {r.skipped} ({where})"]
    if r.error:
        return [f"{r.integration}: ERROR: {r.error}"]
    events = f"{r.events} events" if r.events is not None else "no metadata"
    shipped = f"{r.objects} object(s), {events}, sink cursor {r.cursor}"
    if r.ok:
        head = f"{r.integration}: clean{' (deep)' if r.deep else ''}: {shipped}; {where}"
    else:
        head = f"{r.integration}: {len(r.findings)} finding(s): {shipped}; {where}"
    lines = [head]
    lines += [f"  {f.kind.upper()}: {f.message}" for f in r.findings]
    lines += [f"  info ({f.kind}): {f.message}" for f in r.info]
    return lines
