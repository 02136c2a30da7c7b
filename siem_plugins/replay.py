"""Replay jobs (``siem-plugins replay``) and where a new integration starts (``start_at``).

A replay job re-ships a range of an integration's account, chosen by id or by event time,
to the integration's own sink, another integration's sink, or its sink with options
changed (another bucket or prefix), after a customer lost their bucket for example. It
follows the delivery protocol (docs/delivery.md) with a cursor and intents of its own
(pseudo-destination ``replay:{job}``): every event of the range lands in exactly one
object of the job, through crashes, and the integration's cursors never move. Its objects
carry ``siem-replay-job`` metadata, so ``verify`` tells them from the originals.

Event time is not the store's order: ids follow arrival. A window ``--since/--until``
becomes the ids from the first to the last event of the window, so a job ships every
event of the window, and the events that arrived between them out of order too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from siem_plugins.keys import created_now, object_key
from siem_plugins.kinds import Intent, ObjectReceipt, Range, Source
from siem_plugins.logs import log_context
from siem_plugins.options import ConfigError, is_secret_key
from siem_plugins.pipeline import Pipeline, SyncResult
from siem_plugins.runtime import Integration
from siem_plugins.storage import ReplayJob
from siem_plugins.timeline import time_span

log = logging.getLogger(__name__)

_JOB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class ReplayError(ValueError):
    """A replay job cannot be made as asked (the message says why and what to do)."""


# --------------------------------------------------------------------------- targets


def parse_settings(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as sink options. A value is read as TOML when it
    is one (``part_size=8388608``, ``sse="aws:kms"``), else as plain text
    (``prefix=restore/``). Secrets are refused: they would be stored with the job and
    stay in the shell's history; put them in the config (``${ENV}``) and use ``--to``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise ReplayError(f"--set {item!r}: expected KEY=VALUE, e.g. --set prefix=restore/")
        if is_secret_key(key):
            raise ReplayError(
                f"--set {key}=...: secrets cannot be given on the command line (they would "
                "be stored with the replay job and stay in the shell's history); configure "
                "an integration with it (${ENV} in the config) and replay --to it"
            )
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key] = value
    return out


def describe_target(target: Mapping[str, Any]) -> str:
    """A job's target for people: ``its own sink``, ``integration X's sink``, plus the
    changed options."""
    to = target.get("to")
    where = f"integration {to!r}'s sink" if to else "its own sink"
    options = target.get("options") or {}
    if options:
        where += " with " + ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
    return where


# --------------------------------------------------------------------------- jobs


def new_job(
    integ: Integration,
    *,
    source: Source,
    sink_cursor: int,
    from_id: int | None = None,
    to_id: int | None = None,
    since: str | None = None,
    until: str | None = None,
    target: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ReplayJob:
    """A job for the ids ``from_id..to_id`` or the event times ``[since, until)``,
    checked: only what the sink has shipped (at or below ``sink_cursor``) is replayed;
    the rest ships with the next sync anyway."""
    account = integ.config.account
    name = name or created_now().replace("-", "").replace(":", "")
    if not _JOB_RE.match(name):
        raise ReplayError(f"invalid job name {name!r}: use 1-64 letters, digits, '.', '_', '-'")
    if sink_cursor == 0:
        raise ReplayError(f"{integ.name}: nothing has been shipped yet: there is nothing to replay")
    by_time = since is not None or until is not None
    if by_time and (from_id is not None or to_id is not None):
        raise ReplayError("choose ids (--from-id/--to-id) or event times (--since/--until)")
    if not by_time and from_id is None:
        raise ReplayError("say what to replay: --from-id N [--to-id M], or --since T [--until T]")
    if by_time:
        if since is not None and until is not None and since >= until:
            raise ReplayError(f"--since {since} is not before --until {until}")
        span = time_span(source, account, since, until)
        if span is None or span.first_id > sink_cursor:
            raise ReplayError(
                f"{integ.name}: no shipped event of account {account!r} has an event time "
                f"in that window (shipped so far: ids up to {sink_cursor})"
            )
        first, last = span.first_id, min(span.last_id, sink_cursor)
    else:
        assert from_id is not None
        first, last = from_id, sink_cursor if to_id is None else to_id
        if first < 1 or last < first:
            raise ReplayError(f"--from-id {first} --to-id {last}: not a range of ids")
        if last > sink_cursor:
            raise ReplayError(
                f"{integ.name}: ids after {sink_cursor} have not been shipped yet (the next "
                f"sync ships them); replay at most --to-id {sink_cursor}"
            )
    return ReplayJob(
        integration=integ.name,
        job=name,
        account=account,
        first_id=first,
        last_id=last,
        target=json.dumps(dict(target or {}), sort_keys=True),
        since=since,
        until=until,
        created="",
        finished=None,
        objects=0,
        events=0,
    )


@dataclass
class JobResult:
    """What one run of a replay job did."""

    job: ReplayJob
    objects: list[ObjectReceipt] = field(default_factory=list)
    events: int = 0
    finished: bool = False
    skipped: str | None = None
    error: str | None = None


class ReplayRunner:
    """Runs replay jobs through a :class:`Pipeline`'s runtime, one object at a time."""

    def __init__(self, pipeline: Pipeline, stop: threading.Event | None = None) -> None:
        self.pipeline = pipeline
        self.rt = pipeline.rt
        self.stop = stop or pipeline.stop

    def run(self, job: ReplayJob) -> JobResult:
        """Ship what is left of ``job``, under its own sync lock; resumable at any point
        (a crash replays the pending object's intent: same key, same bytes)."""
        out = JobResult(job)
        if job.finished is not None:
            out.finished = True
            return out
        integ = next((i for i in self.rt.integrations if i.name == job.integration), None)
        if integ is None:
            out.error = f"integration {job.integration!r} is no longer configured"
            return out
        try:
            target = json.loads(job.target)
            replayed, built = self.rt.retarget(
                integ, to=target.get("to"), options=target.get("options") or {}
            )
        except (ConfigError, ValueError) as exc:
            out.error = f"the job's target cannot be built: {exc}"
            return out
        try:
            lock = self.rt.state.try_lock(job.integration, job.destination)
            if lock is None:
                out.skipped = f"another process is running replay job {job.job!r}"
                return out
            with lock, log_context(integration=job.integration, destination=job.destination):
                self._ship(job, replayed, out)
        except Exception as exc:
            out.error = f"{replayed.sink.describe()}: {' '.join(str(exc).split())}"
            log.error("%s: replay job %s: %s", job.integration, job.job, out.error)
        finally:
            if built is not None:
                built.close()
        return out

    def _ship(self, job: ReplayJob, integ: Integration, out: JobResult) -> None:
        state = self.rt.state
        while not self.stop.is_set():
            intent = self._next(job, integ)
            if intent is None:
                state.finish_replay(job)
                out.finished = True
                return
            receipt = self.pipeline.write_intent(
                integ, intent, SyncResult(integ.name), replay_job=job.job
            )
            state.replay_progress(job, intent, receipt.meta.count)
            log.info(
                "%s: replay job %s wrote %s (%d events, ids %d-%d)",
                job.integration,
                job.job,
                receipt.location,
                receipt.meta.count,
                intent.first_id,
                intent.last_id,
                extra={"key": intent.key, "first_id": intent.first_id, "last_id": intent.last_id},
            )
            out.objects.append(receipt)
            out.events += receipt.meta.count

    def _next(self, job: ReplayJob, integ: Integration) -> Intent | None:
        """The pending intent of the job (replayed unchanged while its target is the
        same), else the next range after the job's cursor, recorded; None when done."""
        state, dest = self.rt.state, job.destination
        fingerprint = integ.fingerprint()
        intent = state.pending(job.integration, dest)
        if intent is not None:
            if intent.fingerprint == fingerprint:
                log.info(
                    "%s: replay job %s: writing %s again (ids %d-%d)",
                    job.integration,
                    job.job,
                    intent.key,
                    intent.first_id,
                    intent.last_id,
                )
                return intent
            log.warning(
                "%s: replay job %s: the target changed since intent %d-%d was recorded "
                "(%s -> %s); planning it again",
                job.integration,
                job.job,
                intent.first_id,
                intent.last_id,
                intent.fingerprint,
                fingerprint,
            )
            state.discard(intent)
        after = state.cursor(job.integration, dest)
        if after >= job.last_id:
            return None
        rng = self._plan(job, integ, after)
        if rng is None:
            return None
        created = created_now()
        key = object_key(job.account, created, rng.first_id, rng.last_id, integ.extension)
        intent = Intent(
            job.integration, dest, rng.first_id, rng.last_id, rng.count, key, created, fingerprint
        )
        state.record(intent)
        return intent

    def _plan(self, job: ReplayJob, integ: Integration, after: int) -> Range | None:
        """The next object's range after ``after``, capped like the sink's and cut at the
        job's last id (by reading that last object's ids: at most one object's worth)."""
        c = integ.config
        source = self.rt.source
        rng = source.plan(job.account, after, max_events=c.max_events, max_bytes=c.max_bytes)
        if rng is None or rng.first_id > job.last_id:
            return None
        if rng.last_id <= job.last_id:
            return rng
        first = last = None
        count = 0
        for batch in source.read(job.account, rng.first_id, job.last_id, batch_size=c.batch_size):
            first = batch[0].id if first is None else first
            last = batch[-1].id
            count += len(batch)
        return Range(first, last, count) if first is not None and last is not None else None
