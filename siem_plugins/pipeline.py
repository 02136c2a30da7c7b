"""One sync of one integration: source -> formatter -> sink, and source -> notifier.

The two destinations have their own cursors, their own sync locks and their own
*passes*, which run side by side: an S3 outage never holds back an alert, and an SMTP
outage never holds back the bucket. For each destination the delivery protocol is
(docs/delivery.md):

0. take the destination's sync lock from the state store (skip the pass if another
   thread or process holds it);
1. replay the pending intent if there is one, else plan the next range after the
   cursor and *record* it (first id, last id, count, key, created) before writing;
2. write the object (or send the digest) for exactly that range; an event the formatter
   cannot format is set aside as a *dead letter* and the rest is written, in order;
3. only when it is complete, advance the cursor and drop the intent, atomically.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from siem_plugins import metrics
from siem_plugins.compress import compressor
from siem_plugins.events import Event, canonicalize
from siem_plugins.health import measure_lag, problem_to_tell
from siem_plugins.keys import created_now, object_key
from siem_plugins.kinds import (
    DestinationError,
    Digest,
    Formatter,
    Intent,
    ObjectMeta,
    ObjectReceipt,
)
from siem_plugins.logs import log_context
from siem_plugins.runtime import Integration, Runtime
from siem_plugins.storage import (
    DESTINATIONS,
    NOTIFIER,
    REPLAY,
    SINK,
    worker_name,
)
from siem_plugins.streaming import gc_paused, read_ahead
from siem_plugins.timeline import start_cursor

log = logging.getLogger(__name__)

#: The notifier scans at most this many new events per digest (one mail per range).
NOTIFY_MAX_EVENTS = 1_000_000

ProgressFn = Callable[[str, int], None]


class DeliveryError(RuntimeError):
    """A sync step failed; the message names the integration and destination."""


@dataclass
class SyncResult:
    """What one sync did. ``errors`` and ``skipped`` are keyed by destination.

    :ivar skipped: destinations another thread or process was syncing (their locks
        were taken), with the reason; nothing was written for them.
    :ivar set_aside: events the formatter could not format in this sync (id -> why),
        kept as dead letters (``siem-plugins dead-letters``) while the rest shipped.
    """

    integration: str
    objects: list[ObjectReceipt] = field(default_factory=list)
    events: int = 0
    digests: list[Digest] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    set_aside: dict[int, str] = field(default_factory=dict)
    #: Destinations whose failure the destination called permanent (``DestinationError``).
    permanent: set[str] = field(default_factory=set)
    #: The error code of each failed destination, when it gave one (``AccessDenied``).
    codes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


class _Unformattable(Exception):
    """Raised inside an object's writer (which aborts it): events of the intent could not
    be formatted. ``errors`` maps their ids to why; empty when the raw fast path failed
    and the culprits are still to be found one by one."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__(f"{len(errors)} events could not be formatted")
        self.errors = errors


#: The seed's device example: a known-good event a working formatter must format. When a
#: formatter fails on it too, the formatter is broken, not the events it failed on.
_REFERENCE_EVENT = {
    "log_type": "exempt_all",
    "device_name": "DESKTOP-REFERENCE",
    "device_id": "reference-device",
    "last_seen": "2022-07-15T08:55:12.279Z",
    "device_group": "Default",
    "details": "All devices exempted",
    "type": "Device",
    "device_username": "reference",
    "timestamp": "2022-07-15T08:55:12.279Z",
}
#: The longest error text kept for one dead letter.
_MAX_ERROR_CHARS = 500


@dataclass
class ReplayResult:
    """What :meth:`Pipeline.replay_set_aside` did."""

    integration: str
    shipped: list[int] = field(default_factory=list)
    still_failing: dict[int, str] = field(default_factory=dict)
    receipt: ObjectReceipt | None = None
    skipped: str | None = None


def _one_line(exc: BaseException, default: str = "") -> str:
    """An exception's message on one line (for logs, summaries and the run log)."""
    return " ".join(str(exc).split()) or default or type(exc).__name__


class Pipeline:
    """Runs syncs against a :class:`Runtime`. ``stop`` ends a catch-up between objects."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.rt = runtime
        self.stop = stop or threading.Event()
        self.progress = progress

    # ------------------------------------------------------------------ public

    def sync(
        self,
        integ: Integration,
        *,
        catch_up: bool = True,
        destinations: tuple[str, ...] = DESTINATIONS,
    ) -> SyncResult:
        """Ship everything new for one integration (all of it, in capped objects, when
        ``catch_up``; else at most one object) and send its digest.

        Each destination's pass runs under that destination's sync lock and has a cursor
        of its own; the two run side by side (the notifier's in one of the runtime's
        notifier threads). A slow or failing SMTP server never delays the objects, and
        a long catch-up to S3 never holds the alerts back (nor the other way round);
        both are done when this returns. A pass whose lock another process holds is
        skipped (``result.skipped``).
        """
        result = SyncResult(integ.name)
        others = [
            self.rt.notify_pool().submit(self.sync_pass, integ, d, result, catch_up=catch_up)
            for d in destinations[1:]
        ]
        try:
            if destinations:
                self.sync_pass(integ, destinations[0], result, catch_up=catch_up)
        finally:
            for other in others:
                other.result()
        return result

    def sync_pass(
        self,
        integ: Integration,
        destination: str,
        result: SyncResult | None = None,
        *,
        catch_up: bool = True,
    ) -> SyncResult:
        """One destination's pass, under its sync lock, recorded in the run log. Never
        raises for a failure of the destination or the state store: the error is in
        ``result.errors[destination]`` (and logged, in one line)."""
        result = result if result is not None else SyncResult(integ.name)
        step = {SINK: self._sync_sink, NOTIFIER: self._sync_notifier}[destination]
        try:
            lock = self.rt.state.try_lock(integ.name, destination)
        except Exception as exc:
            self._failed(integ, destination, result, exc, "could not take the sync lock: ")
            metrics.pass_ended(integ.name, destination, "failed", None)
            return result
        if lock is None:
            why = f"another process is syncing {integ.name}"
            result.skipped[destination] = why
            where = {"integration": integ.name, "destination": destination}
            log.info("%s: %s pass skipped: %s", integ.name, destination, why, extra=where)
            metrics.pass_ended(integ.name, destination, "skipped", None)
            return result
        # Every line logged during the pass (ours, a plugin's, botocore's) says whose it is.
        with lock, log_context(integration=integ.name, destination=destination):
            started = time.monotonic()
            objects, events, digests = len(result.objects), result.events, len(result.digests)
            try:
                run_id = self.rt.state.run_started(integ.name, destination, worker_name())
            except Exception as exc:
                self._failed(integ, destination, result, exc, "could not record the run: ")
                metrics.pass_ended(integ.name, destination, "failed", time.monotonic() - started)
                return result
            try:
                step(integ, result, catch_up)
            except Exception as exc:
                self._failed(integ, destination, result, exc)
            if destination == NOTIFIER:
                self._tell_about_the_sink(integ)
            behind, oldest = self._lag(integ, destination)
            try:
                self.rt.state.run_finished(
                    run_id,
                    integration=integ.name,
                    destination=destination,
                    objects=len(result.objects) - objects,
                    events=result.events - events + len(result.digests) - digests,
                    error=result.errors.get(destination),
                    behind=behind,
                    oldest=oldest,
                    error_code=result.codes.get(destination),
                )
            except Exception as exc:
                log.warning(
                    "%s: %s pass: could not record its end in the run log: %s",
                    integ.name,
                    destination,
                    _one_line(exc),
                )
            outcome = "failed" if destination in result.errors else "ok"
            metrics.pass_ended(integ.name, destination, outcome, time.monotonic() - started)
        return result

    def _tell_about_the_sink(self, integ: Integration) -> None:
        """Tell the admins once that the bucket has been failing for ``alert_after``, and
        once that it works again (from the notifier pass: SMTP work stays on notifier
        threads). A message that could not go out is tried again next pass."""
        notify_problem = integ.notifier.notify_problem
        after = integ.config.alert_after
        if notify_problem is None or after is None:
            return
        try:
            record = next(
                (r for r in self.rt.state.health(integ.name) if r.destination == SINK), None
            )
            problem = problem_to_tell(
                record, integration=integ, alert_after=after, now=datetime.now(UTC)
            )
            if problem is None:
                return
            notify_problem(problem)
            metrics.alert_sent(integ.name, recovered=problem.recovered)
            self.rt.state.set_alert(integ.name, SINK, sent=not problem.recovered)
        except Exception as exc:  # the digests matter more: this is tried again next pass
            log.warning(
                "%s: could not tell the admins about the bucket: %s", integ.name, _one_line(exc)
            )
            return
        log.info(
            "%s: told the admins (%s) that %s %s",
            integ.name,
            integ.notifier_label,
            problem.where,
            "works again" if problem.recovered else f"has been failing since {problem.since}",
        )

    def _lag(self, integ: Integration, destination: str) -> tuple[int | None, str | None]:
        """How far the destination is behind as its pass ends (for its health record);
        ``(None, None)`` if the store cannot say."""
        try:
            lag = measure_lag(
                self.rt.source, self.rt.state, integ.name, integ.config.account, destination
            )
        except Exception as exc:  # the health record is worth a lot less than the pass
            log.debug("%s: %s: lag not measured: %s", integ.name, destination, _one_line(exc))
            return None, None
        return lag.events, lag.oldest

    def _failed(
        self,
        integ: Integration,
        destination: str,
        result: SyncResult,
        exc: Exception,
        doing: str = "",
    ) -> None:
        where = integ.sink.describe() if destination == SINK else integ.notifier_label
        message = f"integration {integ.name!r}: {destination} {where}: {doing}{_one_line(exc)}"
        if isinstance(exc, DestinationError) and exc.code is not None:
            result.codes[destination] = str(exc.code)
        if isinstance(exc, DestinationError) and exc.permanent:
            # Retried every cycle all the same: the fix is picked up as soon as it is made.
            message += (
                " (retrying will not help until the configuration or the destination changes)"
            )
            result.permanent.add(destination)
        result.errors[destination] = message
        log.error(
            "%s",
            message,
            exc_info=log.isEnabledFor(logging.DEBUG),
            extra={"integration": integ.name, "destination": destination},
        )
        self.rt.host.hooks.sync_failed(integration=integ.name, destination=destination, error=exc)

    # ------------------------------------------------------------------ sink

    def _next_intent(
        self, integ: Integration, destination: str, max_events: int, max_bytes: int
    ) -> Intent | None:
        state = self.rt.state
        fingerprint = integ.fingerprint()
        intent = state.pending(integ.name, destination)
        if intent is not None:
            if intent.fingerprint == fingerprint:
                log.info(
                    "%s: replaying %s intent %d-%d (%s)",
                    integ.name,
                    destination,
                    intent.first_id,
                    intent.last_id,
                    intent.key,
                    extra={
                        "first_id": intent.first_id,
                        "last_id": intent.last_id,
                        "key": intent.key,
                    },
                )
                metrics.intent_replayed(integ.name, destination)
                return intent
            log.warning(
                "%s: the config changed since %s intent %d-%d was recorded (%s -> %s); "
                "planning it again",
                integ.name,
                destination,
                intent.first_id,
                intent.last_id,
                intent.fingerprint,
                fingerprint,
            )
            state.discard(intent)
        after = state.cursor(integ.name, destination)
        if after == 0 and integ.config.start_at is not None:
            after = self._start(integ, destination)
        rng = self.rt.source.plan(
            integ.config.account, after, max_events=max_events, max_bytes=max_bytes
        )
        if rng is None:
            return None
        created = created_now()
        if destination == SINK:
            key = object_key(
                integ.config.account, created, rng.first_id, rng.last_id, integ.extension
            )
        else:
            key = f"siem.{integ.name}.{rng.first_id:020d}-{rng.last_id:020d}@siem-plugins"
        intent = Intent(
            integ.name, destination, rng.first_id, rng.last_id, rng.count, key, created, fingerprint
        )
        state.record(intent)
        return intent

    def _start(self, integ: Integration, destination: str) -> int:
        """The cursor of an integration with ``start_at`` that has never synced: both
        destinations start where ``start_at`` says, set once, in one transaction (a
        cursor that exists is never moved; ``after == 0`` may also be an empty account)."""
        state = self.rt.state
        if state.has_cursor(integ.name, destination):
            return 0
        at = integ.config.start_at
        assert at is not None
        cursor = start_cursor(self.rt.source, integ.config.account, at)
        started = state.start_cursors(integ.name, dict.fromkeys(DESTINATIONS, cursor))
        if started[destination] == cursor:
            log.info(
                "%s: first sync starts after event %d (start_at = %s)",
                integ.name,
                cursor,
                at,
                extra={"last_id": cursor},
            )
        return started[destination]

    def _sync_sink(self, integ: Integration, result: SyncResult, catch_up: bool) -> None:
        c = integ.config
        while not self.stop.is_set():
            intent = self._next_intent(integ, SINK, c.max_events, c.max_bytes)
            if intent is None:
                return
            self.rt.host.hooks.sync_started(integration=integ.name, destination=SINK, intent=intent)
            receipt = self._write(integ, intent, result)
            self.rt.state.complete(intent)
            log.info(
                "%s: wrote %s (%d events, ids %d-%d, %d bytes)",
                integ.name,
                receipt.location,
                receipt.meta.count,
                intent.first_id,
                intent.last_id,
                receipt.size,
                extra={
                    "key": intent.key,
                    "location": receipt.location,
                    "first_id": intent.first_id,
                    "last_id": intent.last_id,
                    "events": receipt.meta.count,
                    "bytes": receipt.size,
                },
            )
            result.objects.append(receipt)
            result.events += receipt.meta.count
            metrics.object_written(integ.name, receipt.meta.count, receipt.size)
            self.rt.host.hooks.object_written(integration=integ.name, receipt=receipt)
            if not catch_up:
                return

    def write_intent(
        self,
        integ: Integration,
        intent: Intent,
        result: SyncResult | None = None,
        *,
        replay_job: str = "",
    ) -> ObjectReceipt:
        """Write the intent's object (dead letters left out; see :meth:`_write`)."""
        return self._write(integ, intent, result, replay_job=replay_job)

    def _write(
        self,
        integ: Integration,
        intent: Intent,
        result: SyncResult | None = None,
        *,
        replay_job: str = "",
    ) -> ObjectReceipt:
        """Write the intent's object, leaving out its dead letters.

        An event the formatter cannot format must not block every event after it for
        ever. The object's metadata (its event count) is fixed when it is opened, so a
        newly found culprit aborts the object; the culprits are recorded as dead letters
        and the object is written again without them. A replay finds them recorded and
        writes the same object at once: the bytes stay a function of the intent.
        """
        state = self.rt.state
        result = result if result is not None else SyncResult(integ.name)
        aside = state.set_aside_ids(integ.name, intent.first_id, intent.last_id)
        raw = not aside  # the raw fast path has no ids: it cannot leave events out
        for _ in range(3):
            try:
                return self._write_object(integ, intent, aside, raw=raw, replay_job=replay_job)
            except _Unformattable as bad:
                raw = False
                if bad.errors:
                    self._check_formatter(integ, bad.errors)
                    state.set_aside(integ.name, integ.config.account, bad.errors)
                    result.set_aside.update(bad.errors)
                    metrics.events_set_aside(integ.name, len(bad.errors))
                    for event_id, error in sorted(bad.errors.items()):
                        log.error(
                            "%s: event %d set aside (see `siem-plugins dead-letters`): the "
                            "formatter %r cannot format it: %s",
                            integ.name,
                            event_id,
                            integ.config.format_name,
                            error,
                            extra={"event_id": event_id},
                        )
                    aside = aside | bad.errors.keys()
        raise DeliveryError(
            f"formatter {integ.config.format_name!r} fails on different events each time "
            f"for ids {intent.first_id}-{intent.last_id}; a formatter must be deterministic"
        )

    def _check_formatter(self, integ: Integration, errors: Mapping[int, str]) -> None:
        """Refuse to set events aside when the formatter fails on a known-good event too:
        then it is broken (a bug, a bad upgrade), and setting aside would empty the whole
        backlog into the dead letters. The sync fails instead and is retried."""
        c = canonicalize(_REFERENCE_EVENT)
        reference = Event(0, integ.config.account, c.type, c.log_type, c.timestamp, c.raw)
        try:
            integ.formatter.format([reference])
        except Exception as exc:
            raise DeliveryError(
                f"formatter {integ.config.format_name!r} fails on every event, even a "
                f"known-good one ({_one_line(exc)}); nothing was set aside"
            ) from exc

    def _write_object(
        self,
        integ: Integration,
        intent: Intent,
        aside: frozenset[int],
        *,
        raw: bool,
        replay_job: str = "",
    ) -> ObjectReceipt:
        c = integ.config
        comp = compressor(c.compression, c.compression_level)
        meta = ObjectMeta(
            integration=integ.name,
            account=c.account,
            first_id=intent.first_id,
            last_id=intent.last_id,
            count=intent.count - len(aside),
            format=c.format_name,
            content_type=integ.formatter.content_type,
            content_encoding=comp.content_encoding,
            set_aside=len(aside),
            replay_job=replay_job,
        )
        seen = 0
        bad: dict[int, str] = {}
        batches = self._batches(integ, intent, aside, raw=raw)
        # closing(): on any failure the read-ahead thread is stopped before the writer aborts.
        with gc_paused(), integ.sink.open(intent.key, meta) as writer, contextlib.closing(batches):
            for batch, count, format in batches:
                seen += count
                try:
                    data = format(batch)
                except Exception:
                    if raw:
                        raise _Unformattable({}) from None
                    data = self._isolate(integ.formatter, batch, bad)
                if bad:
                    continue  # this object is abandoned: only look for more culprits
                data = comp.compress(data)
                if data:
                    writer.write(data)
                if self.progress is not None:
                    self.progress(integ.name, count)
            if bad:
                raise _Unformattable(bad)
            if seen != intent.count:
                raise DeliveryError(
                    f"the store returned {seen} events for ids "
                    f"{intent.first_id}-{intent.last_id}, the intent recorded "
                    f"{intent.count}; refusing to write a different object"
                )
            tail = comp.flush()
            if tail:
                writer.write(tail)
            return writer.commit()

    @staticmethod
    def _isolate(formatter: Formatter, events: list[Event], bad: dict[int, str]) -> bytes:
        """Format a batch event by event (formatters are batch-size independent), noting
        every event that fails in ``bad``; the others' bytes, in order."""
        parts = []
        for event in events:
            try:
                parts.append(formatter.format([event]))
            except Exception as exc:
                bad[event.id] = f"{type(exc).__name__}: {_one_line(exc)}"[:_MAX_ERROR_CHARS]
        return b"".join(parts)

    def _batches(
        self, integ: Integration, intent: Intent, aside: frozenset[int], *, raw: bool
    ) -> Generator[tuple[Any, int, Any]]:
        """The intent's events in batches as ``(batch, events read, format function)``:
        the raw fast path (stored JSON bytes, no Event objects) when asked for and both
        the source and the formatter offer it (``Source.read_raw``,
        ``Formatter.format_raw``); else Event batches without the ``aside`` ids."""
        source, formatter = self.rt.source, integ.formatter
        args = (integ.config.account, intent.first_id, intent.last_id)
        size = integ.config.batch_size
        read_raw, format_raw = source.read_raw, formatter.format_raw
        if raw and read_raw is not None and format_raw is not None:
            for raws in read_ahead(lambda: read_raw(*args, batch_size=size)):
                yield raws, len(raws), format_raw
        else:
            for events in source.read(*args, batch_size=size):
                n = len(events)
                if aside:
                    events = [e for e in events if e.id not in aside]
                yield events, n, formatter.format

    # ------------------------------------------------------------------ dead letters

    def replay_set_aside(self, integ: Integration) -> ReplayResult:
        """Ship an integration's dead letters that its formatter can format now (after a
        fix or a config change) in one extra object, exactly once; the others stay.

        Runs under the integration's sink lock, and takes only dead letters at or below
        the sink cursor (their original objects are complete, so no sink pass can still
        be writing around them). The set is fixed by an intent of the ``replay``
        pseudo-destination before anything is written, so a crash replays the same key
        and bytes.
        """
        state = self.rt.state
        out = ReplayResult(integ.name)
        lock = state.try_lock(integ.name, SINK)
        if lock is None:
            out.skipped = f"another process is syncing {integ.name}"
            return out
        with lock:
            intent = state.pending(integ.name, REPLAY)
            if intent is not None and intent.fingerprint != integ.fingerprint():
                state.discard(intent)
                intent = None
            if intent is None:
                cursor = state.cursor(integ.name, SINK)
                ids = [d.event_id for d in state.dead_letters(integ.name) if d.event_id <= cursor]
                if not ids:
                    return out
                first, last = min(ids), max(ids)
                created = created_now()
                key = object_key(integ.config.account, created, first, last, integ.extension)
                intent = Intent(
                    integ.name, REPLAY, first, last, len(ids), key, created, integ.fingerprint()
                )
                state.record(intent)
            wanted = state.set_aside_ids(integ.name, intent.first_id, intent.last_id)
            events: list[Event] = []
            for batch in self.rt.source.read(integ.config.account, intent.first_id, intent.last_id):
                events.extend(e for e in batch if e.id in wanted)
            still: dict[int, str] = {}
            data = self._isolate(integ.formatter, events, still)
            good = [e for e in events if e.id not in still]
            out.still_failing = still
            if good:
                c = integ.config
                comp = compressor(c.compression, c.compression_level)
                meta = ObjectMeta(
                    integration=integ.name,
                    account=c.account,
                    first_id=intent.first_id,
                    last_id=intent.last_id,
                    count=len(good),
                    format=c.format_name,
                    content_type=integ.formatter.content_type,
                    content_encoding=comp.content_encoding,
                    set_aside=len(still),
                    replay=True,
                )
                with integ.sink.open(intent.key, meta) as writer:
                    writer.write(comp.compress(data) + comp.flush())
                    out.receipt = writer.commit()
            state.complete_replay(intent, [e.id for e in good], still)
            out.shipped = [e.id for e in good]
        return out

    # ------------------------------------------------------------------ notifier

    def _sync_notifier(self, integ: Integration, result: SyncResult, catch_up: bool) -> None:
        while not self.stop.is_set():
            intent = self._next_intent(integ, NOTIFIER, NOTIFY_MAX_EVENTS, sys.maxsize)
            if intent is None:
                return
            self.rt.host.hooks.sync_started(
                integration=integ.name, destination=NOTIFIER, intent=intent
            )
            digest = self._digest(integ, intent)
            if digest.total:
                integ.notifier.notify(digest)
                log.info(
                    "%s: notified about %d selected events (ids %d-%d)",
                    integ.name,
                    digest.total,
                    intent.first_id,
                    intent.last_id,
                    extra={
                        "first_id": intent.first_id,
                        "last_id": intent.last_id,
                        "events": digest.total,
                    },
                )
            self.rt.state.complete(intent)
            if digest.total:
                result.digests.append(digest)
                metrics.digest_sent(integ.name, digest.total)
                self.rt.host.hooks.notified(integration=integ.name, digest=digest)
            if not catch_up:
                return

    def _digest(self, integ: Integration, intent: Intent) -> Digest:
        limit = integ.notifier.max_listed
        listed: list[Event] = []
        counts: dict[str, int] = {}
        total = 0
        with gc_paused():
            for batch in self.rt.source.read(
                integ.config.account,
                intent.first_id,
                intent.last_id,
                log_types=integ.config.notify_events,
            ):
                total += len(batch)
                for event in batch:
                    counts[event.log_type] = counts.get(event.log_type, 0) + 1
                if len(listed) < limit:
                    listed.extend(batch[: limit - len(listed)])
        return Digest(
            integration=integ.name,
            account=integ.config.account,
            first_id=intent.first_id,
            last_id=intent.last_id,
            total=total,
            counts=dict(sorted(counts.items())),
            events=tuple(listed),
            message_id=intent.key,
        )
