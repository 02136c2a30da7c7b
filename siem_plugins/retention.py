"""Retention: deleting the events that every integration of their account has shipped.

An event of account A may go once *every* integration that ships A, enabled or not, is
done with it on both destinations: its id is at or below the lowest sink and notifier
cursor of those integrations (a disabled integration keeps its backlog: it may be
enabled again, or synced by name). Even then it stays while

- a dead letter refers to it (of any integration): it must stay replayable;
- it lies in the range of a pending intent of one of those integrations (a sink or
  notifier intent starts after its cursor anyway; a ``replay`` intent does not);
- an unfinished ``siem-plugins replay`` job has still to ship it.

The events of an account that no integration ships are kept, unless asked for
(``orphans``): an integration for it may be on its way. ``older_than`` spares the events
whose own time (``ts``) is younger. Deleting is :meth:`EventStore.prune
<siem_plugins.storage.EventStore.prune>`: bounded batches, each its own transaction.

Which integrations ship an account is an input (:func:`shippers_of` reads it from the
config's integrations), so integrations kept elsewhere can add theirs.

``siem-plugins prune`` runs it once; with ``[retention]`` in the config, ``run`` runs it
in a thread of its own every ``every`` (:class:`RetentionJob`). A state-store lock
(:data:`PRUNE_LOCK`) keeps two prunes of one database apart, across processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from siem_plugins.config import Config
from siem_plugins.events import MIN_TIMESTAMP
from siem_plugins.signals import SIGNAL_POLL
from siem_plugins.storage import (
    DEFAULT_URL,
    DESTINATIONS,
    NOTIFIER,
    REPLAY,
    SINK,
    EventStore,
    Pruned,
    StateStore,
    open_state,
    open_store,
)

log = logging.getLogger(__name__)

#: The (name, destination) of the state-store lock every prune holds: no integration
#: has a destination of that name, so it never meets a sync lock.
PRUNE_LOCK = ("retention", "prune")
DEFAULT_BATCH = 5000
#: Seconds between two delete transactions: longer than the ~100 ms between the retries
#: of a SQLite writer waiting for the lock, so a waiting ingest always gets in.
DEFAULT_PAUSE = 0.11


class Shipper(Protocol):
    """An integration as retention sees it: a name and the account it ships (an
    :class:`~siem_plugins.config.IntegrationConfig`, or one kept as data)."""

    @property
    def name(self) -> str: ...
    @property
    def account(self) -> str: ...


def shippers_of(integrations: Iterable[Shipper]) -> dict[str, tuple[str, ...]]:
    """Account -> the names of the integrations that ship it, enabled or not."""
    out: dict[str, list[str]] = {}
    for integ in integrations:
        out.setdefault(integ.account, []).append(integ.name)
    return {account: tuple(names) for account, names in out.items()}


def shippers_in(config: Config) -> dict[str, tuple[str, ...]]:
    """Account -> the integrations that ship it: the config's and those kept as data
    (the settings API's), enabled or not."""
    from siem_plugins.control.store import stored_integrations

    return shippers_of([*config.integrations, *stored_integrations(config)])


def cutoff(older_than: float, now: datetime | None = None) -> str:
    """The canonical UTC timestamp ``older_than`` seconds before ``now``: events whose
    ``ts`` sorts before it are older (``ts`` is stored in that form by ingest)."""
    now = now or datetime.now(UTC)
    try:
        then = now - timedelta(seconds=older_than)
    except OverflowError:
        return MIN_TIMESTAMP
    return then.strftime("%Y-%m-%dT%H:%M:%S.") + f"{then.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AccountPlan:
    """What may go of one account's events.

    :ivar shippers: the integrations that ship the account (none: an orphan).
    :ivar up_to: the highest id that may go (0: none).
    :ivar lowest: ``integration/destination`` whose cursor is ``up_to`` (None for an
        orphan).
    :ivar keep: id ranges that stay whatever ``up_to`` says (dead letters, intents).
    :ivar kept: why none of the account's events may go, if so.
    """

    account: str
    shippers: tuple[str, ...]
    up_to: int
    lowest: str | None = None
    keep: tuple[tuple[int, int], ...] = ()
    kept: str | None = None


@dataclass
class AccountOutcome:
    """One account's part of a prune: its plan, and what went (or would go)."""

    plan: AccountPlan
    pruned: Pruned = field(default_factory=Pruned)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class PruneReport:
    """What a prune did (or, with ``dry_run``, would do), account by account.

    :ivar older_than: the cutoff timestamp, when only older events were considered.
    :ivar skipped: why nothing was done at all (another prune holds the lock).
    :ivar stopped: a stop was asked for before every account was done.
    """

    dry_run: bool
    older_than: str | None = None
    accounts: list[AccountOutcome] = field(default_factory=list)
    skipped: str | None = None
    stopped: bool = False
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(o.pruned.count for o in self.accounts)

    @property
    def failed(self) -> bool:
        return self.skipped is not None or any(o.error for o in self.accounts)

    def lines(self) -> list[str]:
        """One line per account, then the total (what ``siem-plugins prune`` prints)."""
        out = [describe(o, dry_run=self.dry_run) for o in self.accounts]
        if self.skipped:
            out.append(f"skipped: {self.skipped}; nothing was deleted")
            return out
        touched = sum(1 for o in self.accounts if o.pruned.count)
        verb = "would delete" if self.dry_run else "deleted"
        total = f"total: {verb} {self.count} events of {touched} account(s)"
        if self.older_than:
            total += f" (only events older than {self.older_than})"
        if not self.dry_run:
            total += f" in {self.seconds:.1f}s"
        if self.stopped:
            total += "; stopped before the end, the rest goes next time"
        out.append(total)
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "older_than": self.older_than,
            "skipped": self.skipped,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "accounts": [
                {
                    "account": o.plan.account,
                    "integrations": list(o.plan.shippers),
                    "up_to": o.plan.up_to,
                    "lowest_cursor": o.plan.lowest,
                    "kept": o.plan.kept,
                    "count": o.pruned.count,
                    "first_id": o.pruned.first_id,
                    "last_id": o.pruned.last_id,
                    "error": o.error,
                }
                for o in self.accounts
            ],
            "total": {
                "count": self.count,
                "accounts": sum(1 for o in self.accounts if o.pruned.count),
            },
        }


def describe(outcome: AccountOutcome, *, dry_run: bool) -> str:
    """One account's line: ``acme: deleted 9000 events (ids 1-9000); ...`` (or
    ``acme: FAILED: why; ...``)."""
    plan, pruned = outcome.plan, outcome.pruned
    if plan.kept:
        return f"{plan.account}: kept: {plan.kept}"
    if plan.lowest is None:
        why = "no integration ships this account (--orphans)"
    else:
        why = f"shipped up to id {plan.up_to} (lowest cursor: {plan.lowest})"
    verb = "would delete" if dry_run else "deleted"
    if outcome.error:
        # The batches before the failure are gone (each was its own transaction).
        done = f"FAILED: {outcome.error}"
    elif pruned.count:
        done = f"{verb} {pruned.count} events (ids {pruned.first_id}-{pruned.last_id})"
    else:
        done = "nothing to delete"
    return f"{plan.account}: {done}; {why}"


def plan(
    store: EventStore,
    state: StateStore,
    shippers: Mapping[str, Sequence[str]],
    *,
    orphans: bool = False,
) -> list[AccountPlan]:
    """What may go of each stored account's events, as of now.

    The order of the reads is what makes it safe while syncs run: cursors first, then
    intents and dead letters. Cursors only move forward, so ``up_to`` stays a lower
    bound of what is shipped; an intent recorded, or an event set aside, after the
    cursors were read lies above them (both happen beyond a cursor, and a dead letter is
    recorded before its cursor moves past it); a dead letter dropped since (replayed)
    only keeps an event one prune longer.
    """
    cursors = state.cursors()
    accounts = store.accounts()
    intents: dict[str, list[tuple[int, int]]] = {}
    for account in accounts:
        for name in shippers.get(account, ()):
            for destination in (*DESTINATIONS, REPLAY):
                intent = state.pending(name, destination)
                if intent is not None:
                    intents.setdefault(account, []).append((intent.first_id, intent.last_id))
    # What an unfinished replay job has still to ship stays (its cursor only grows).
    for job in state.replay_jobs():
        if job.finished is None:
            after = state.cursor(job.integration, job.destination)
            intents.setdefault(job.account, []).append((after + 1, job.last_id))
    # Every dead letter's event stays, whoever set it aside (ids are unique store-wide).
    dead = [(d.event_id, d.event_id) for d in state.dead_letters()]
    plans = []
    for account in accounts:
        names = tuple(shippers.get(account, ()))
        if not names:
            if not orphans:
                plans.append(
                    AccountPlan(
                        account,
                        names,
                        0,
                        kept="no integration ships this account (--orphans deletes its events)",
                    )
                )
                continue
            up_to, lowest = store.last_id(account), None
        else:
            up_to, lowest = min(
                (cursors.get((name, d), 0), f"{name}/{d}")
                for name in names
                for d in (SINK, NOTIFIER)
            )
        keep = tuple(sorted(r for r in [*dead, *intents.get(account, [])] if r[0] <= up_to))
        plans.append(AccountPlan(account, names, up_to, lowest, keep))
    return plans


def prune(
    store: EventStore,
    state: StateStore,
    shippers: Mapping[str, Sequence[str]],
    *,
    older_than: float | None = None,
    orphans: bool = False,
    dry_run: bool = False,
    batch: int = DEFAULT_BATCH,
    pause: float = DEFAULT_PAUSE,
    stop: threading.Event | None = None,
) -> PruneReport:
    """Delete (or, with ``dry_run``, count) the events every integration of their
    account has shipped (see the module's doc), account by account.

    Holds :data:`PRUNE_LOCK` while deleting: when another process holds it, nothing is
    done and the report says so. A failure of one account is recorded in its outcome
    and the next account is tried.
    """
    started = time.monotonic()
    limit = cutoff(older_than) if older_than is not None else None
    report = PruneReport(dry_run=dry_run, older_than=limit)
    lock = None
    if not dry_run:
        lock = state.try_lock(*PRUNE_LOCK)
        if lock is None:
            report.skipped = "another process is pruning this store"
            return report
    try:
        for account_plan in plan(store, state, shippers, orphans=orphans):
            if stop is not None and stop.is_set():
                report.stopped = True
                break
            outcome = AccountOutcome(account_plan)
            report.accounts.append(outcome)
            if account_plan.kept or account_plan.up_to <= 0:
                continue
            began = time.monotonic()
            args = (account_plan.account, account_plan.up_to)
            try:
                if dry_run:
                    outcome.pruned = store.prunable(*args, older_than=limit, keep=account_plan.keep)
                else:
                    outcome.pruned = store.prune(
                        *args,
                        older_than=limit,
                        keep=account_plan.keep,
                        batch=batch,
                        pause=pause,
                        stop=stop,
                    )
            except Exception as exc:  # the store failed: say it, and try the next account
                outcome.error = " ".join(str(exc).split()) or type(exc).__name__
                log.debug("pruning %s failed", account_plan.account, exc_info=True)
            outcome.seconds = time.monotonic() - began
        else:
            report.stopped = stop is not None and stop.is_set()
    finally:
        if lock is not None:
            lock.release()
    report.seconds = time.monotonic() - started
    return report


def open_stores(config: Config) -> tuple[EventStore, StateStore]:
    """The event store and the state store the config's ``[store] url`` names."""
    url = config.store_options.raw("url", DEFAULT_URL)
    url = url if isinstance(url, str) else DEFAULT_URL
    try:
        store = open_store(url)
    except ValueError as exc:
        raise config.store_options.error("url", str(exc)) from None
    try:
        state = open_state(url)
    except BaseException:
        store.close()
        raise
    return store, state


class RetentionJob:
    """``[retention]`` of ``siem-plugins run``: a prune at start-up and then every
    ``every``, in a thread of its own. Never inside a sync pass (it takes no sync lock
    and needs none: it deletes only below every cursor), never two at once (one thread,
    one prune after the other, and :data:`PRUNE_LOCK` across processes)."""

    def __init__(self, config: Config, stop: threading.Event) -> None:
        self.config = config
        self.settings = config.retention
        self.stop = stop
        self.runs = 0
        self._thread: threading.Thread | None = None

    @classmethod
    def start_for(cls, config: Config, stop: threading.Event) -> RetentionJob | None:
        """The running job, or None when ``[retention]`` is off."""
        if not config.retention.enabled:
            return None
        job = cls(config, stop)
        job.start()
        return job

    def start(self) -> None:
        s = self.settings
        log.info(
            "retention: pruning shipped events every %.0fs%s",
            s.every,
            f", only those older than {s.older_than:.0f}s" if s.older_than else "",
        )
        # A daemon: a second SIGTERM must be able to end the process mid-batch (the
        # batch's transaction is then rolled back, nothing half-deleted).
        self._thread = threading.Thread(target=self._loop, name="siem-retention", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread to end (after ``stop`` is set: at the next batch). In
        slices, so that the main thread still runs a second signal's handler."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(SIGNAL_POLL)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.run_once()
            next_at = max(next_at + self.settings.every, time.monotonic())
            self.stop.wait(next_at - time.monotonic())

    def run_once(self) -> PruneReport | None:
        """One prune, logged; None when the store could not even be opened."""
        s = self.settings
        try:
            store, state = open_stores(self.config)
        except Exception as exc:
            log.error("retention: cannot open the store: %s", " ".join(str(exc).split()))
            return None
        try:
            report = prune(
                store,
                state,
                shippers_in(self.config),
                older_than=s.older_than,
                orphans=s.orphans,
                batch=s.batch,
                stop=self.stop,
            )
        except Exception as exc:  # the store failed before any account: next time again
            log.error("retention: prune failed: %s", " ".join(str(exc).split()))
            return None
        finally:
            state.close()
            store.close()
            self.runs += 1
        for outcome, line in zip(report.accounts, report.lines(), strict=False):
            if outcome.error:
                log.error("retention: %s", line)
            elif outcome.pruned.count:
                log.info("retention: %s", line)
        level = logging.WARNING if report.skipped else logging.INFO
        log.log(level, "retention: %s", report.lines()[-1])
        return report
