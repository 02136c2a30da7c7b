"""Health: how each integration's destinations are doing, from one record each.

Every pass ends by writing its destination's health record beside the cursor (the last
attempt, the last success, the last error, consecutive failures, how far behind it is:
:class:`~siem_plugins.storage.HealthRecord`). Everything that reports on an integration
reads that record through :func:`collect`: ``siem-plugins status``, and whatever comes
to read it next (metrics, failure mails, the settings page); none keeps its own.

A destination is in one of these states, the worst first:

* ``failing``: its last pass failed;
* ``stale``: no pass ended for three intervals (the shipper is not running it);
* ``behind``: its oldest unshipped event is older than the allowed lag, or more events
  wait than allowed;
* ``never run``: no pass has ended yet;
* ``ok``;
* ``disabled``: the integration is disabled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from siem_plugins.kinds import Intent, Problem, Source
from siem_plugins.runtime import Integration, Runtime
from siem_plugins.storage import DESTINATIONS, SINK, HealthRecord, StateStore

#: A destination's backlog is counted up to this many events ("at least" beyond it), so
#: that measuring it stays cheap however far behind a broken destination is.
LAG_CAP = 1_000_000

#: The states, worst first (an integration shows its worst destination's).
STATES = ("failing", "stale", "behind", "never run", "ok", "disabled")
#: States that make ``siem-plugins status`` exit 1.
ALARMING = frozenset({"failing", "stale", "behind", "never run"})


@dataclass(frozen=True)
class Lag:
    """How far a destination is behind: the account's events after its cursor (at least
    this many, beyond :data:`LAG_CAP`) and the event time of the oldest of them."""

    events: int
    oldest: str | None

    def seconds(self, now: datetime) -> float:
        """The age of the oldest unshipped event, by its own time (0 if none)."""
        if self.oldest is None:
            return 0.0
        return max(0.0, (now - _time(self.oldest)).total_seconds())


def measure_lag(
    source: Source, state: StateStore, integration: str, account: str, destination: str
) -> Lag:
    """The destination's lag now: two small index queries (raises if the store cannot
    answer)."""
    cursor = state.cursor(integration, destination)
    rng = source.plan(account, cursor, max_events=LAG_CAP, max_bytes=sys.maxsize)
    if rng is None:
        return Lag(0, None)
    first = next(iter(source.read(account, rng.first_id, rng.first_id)), [])
    return Lag(rng.count, first[0].timestamp if first else None)


@dataclass(frozen=True)
class Thresholds:
    """When a destination counts as ``behind`` or ``stale``.

    :ivar max_lag: seconds the oldest unshipped event may be old.
    :ivar max_lag_events: how many events may wait (None: any number).
    :ivar stale_after: seconds without an ended pass before the destination is ``stale``.
    """

    max_lag: float
    max_lag_events: int | None = None
    stale_after: float | None = None

    @classmethod
    def for_interval(cls, interval: float, **overrides: float | int | None) -> Thresholds:
        """Defaults from the sync interval: three missed intervals (at least 5 minutes)."""
        default = max(3 * interval, 300.0)
        values: dict[str, float | int | None] = {"max_lag": default, "stale_after": default}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DestinationHealth:
    """One destination of an integration, as :func:`collect` found it."""

    integration: str
    destination: str
    where: str
    cursor: int
    pending: Intent | None
    record: HealthRecord | None
    lag: Lag | None
    lag_seconds: float | None
    state: str


@dataclass(frozen=True)
class IntegrationHealth:
    """An integration and its two destinations."""

    name: str
    account: str
    format: str
    enabled: bool
    destinations: tuple[DestinationHealth, ...] = field(default=())

    @property
    def state(self) -> str:
        """The worst of its destinations' states."""
        return min((d.state for d in self.destinations), key=STATES.index, default="ok")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def destination_state(
    record: HealthRecord | None,
    lag: Lag | None,
    *,
    enabled: bool,
    now: datetime,
    thresholds: Thresholds,
) -> str:
    """The state of one destination (see the module docstring)."""
    if not enabled:
        return "disabled"
    if record is not None and record.failures > 0:
        return "failing"
    if record is None:
        return "never run"
    if thresholds.stale_after is not None and (
        (now - _time(record.last_attempt)).total_seconds() > thresholds.stale_after
    ):
        return "stale"
    if lag is not None and (
        lag.seconds(now) > thresholds.max_lag
        or (thresholds.max_lag_events is not None and lag.events > thresholds.max_lag_events)
    ):
        return "behind"
    return "ok"


def collect(
    rt: Runtime,
    *,
    thresholds: Thresholds,
    names: Iterable[str] | None = None,
    now: datetime | None = None,
    live: bool = True,
) -> list[IntegrationHealth]:
    """The health of every integration of ``rt`` (or of ``names``, disabled ones too).

    With ``live`` the lag is measured now (two index queries per destination); else, and
    when measuring fails, it is what the last pass recorded.
    """
    now = now or datetime.now(UTC)
    wanted = set(names) if names else None
    records = {(r.integration, r.destination): r for r in rt.state.health()}
    out = []
    for integ in rt.integrations:
        if wanted is not None and integ.name not in wanted:
            continue
        out.append(_integration(rt, integ, records, thresholds, now, live))
    return out


def _integration(
    rt: Runtime,
    integ: Integration,
    records: dict[tuple[str, str], HealthRecord],
    thresholds: Thresholds,
    now: datetime,
    live: bool,
) -> IntegrationHealth:
    c = integ.config
    destinations = []
    for destination in DESTINATIONS:
        record = records.get((integ.name, destination))
        lag: Lag | None = None
        if live:
            try:
                lag = measure_lag(rt.source, rt.state, integ.name, c.account, destination)
            except Exception:  # a report must come out even when the store half answers
                lag = None
        if lag is None and record is not None and record.behind is not None:
            lag = Lag(record.behind, record.oldest)
        destinations.append(
            DestinationHealth(
                integration=integ.name,
                destination=destination,
                where=integ.sink.describe() if destination == SINK else integ.notifier_label,
                cursor=rt.state.cursor(integ.name, destination),
                pending=rt.state.pending(integ.name, destination),
                record=record,
                lag=lag,
                lag_seconds=None if lag is None else lag.seconds(now),
                state=destination_state(
                    record, lag, enabled=c.enabled, now=now, thresholds=thresholds
                ),
            )
        )
    return IntegrationHealth(c.name, c.account, c.format_name, c.enabled, tuple(destinations))


# --------------------------------------------------------------------------- telling admins

#: What usually fixes a failing bucket, by S3 error code: said in the mail to the admins.
HINTS: dict[str, str] = {
    "AccessDenied": (
        "The credentials may not write to the bucket. Allow s3:PutObject, "
        "s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the bucket and prefix "
        "(and s3:PutObject with the KMS key, when objects are encrypted with one)."
    ),
    "NoSuchBucket": "The bucket does not exist: create it, or correct its name or region.",
    "InvalidAccessKeyId": "The access key id is unknown: correct it, or issue a new key.",
    "SignatureDoesNotMatch": "The secret access key does not match its key id: correct it.",
    "InvalidBucketName": "The bucket name is not valid: correct it.",
    "AllAccessDisabled": "All access to the bucket is disabled: re-enable it with AWS.",
    "KMS.NotFoundException": "The KMS key does not exist: correct kms_key_id.",
    "KMS.DisabledException": "The KMS key is disabled: enable it, or choose another.",
    "NoCredentials": "No credentials were found: configure an access key or a role.",
}
GENERIC_HINT = (
    "Check that the bucket exists and that the configured credentials may write to it "
    "(`siem-plugins check` writes and deletes a probe object and shows the error)."
)


def hint_for(code: str | None) -> str:
    """What usually fixes an error with this code, for people."""
    if code is not None and code.startswith("KMS.") and code not in HINTS:
        return "The KMS key cannot be used: check the key and its policy."
    return HINTS.get(code or "", GENERIC_HINT)


def problem_to_tell(
    record: HealthRecord | None,
    *,
    integration: Integration,
    alert_after: float,
    now: datetime,
) -> Problem | None:
    """The sink problem its admins should hear about now, if any: it has failed without
    a break for ``alert_after`` and they were not told; or it works again and they were
    told it did not. Once per change of state, whatever the number of passes."""
    if record is None:
        return None
    failing = record.failures > 0 and record.failing_since is not None
    if failing and record.alert_sent_at is None:
        assert record.failing_since is not None
        if (now - _time(record.failing_since)).total_seconds() < alert_after:
            return None
        recovered = False
    elif not failing and record.alert_sent_at is not None:
        recovered = True
    else:
        return None
    return Problem(
        integration=integration.name,
        account=integration.config.account,
        destination=record.destination,
        where=integration.sink.describe(),
        since=(record.last_success if recovered else record.failing_since) or record.last_attempt,
        failures=record.failures,
        error=record.last_error or "",
        code=record.last_error_code,
        hint=hint_for(record.last_error_code),
        waiting=record.behind,
        recovered=recovered,
    )
