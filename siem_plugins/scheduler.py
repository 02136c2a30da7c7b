"""The scheduler: every integration synced every interval, one pass per destination at a time.

Each tick starts, for every enabled integration, a *sink pass* (objects to the bucket) and
a *notifier pass* (the digest), each on a thread pool of its own (``max_workers`` threads
each). They are scheduled apart: a pass whose previous run is still going when its next
tick comes is skipped for that tick (never queued behind itself), while the other
destination's pass starts as usual. So a mail relay that hangs cannot delay the next
objects, and a black-holed S3 endpoint cannot delay the next alerts. Each pass also takes
its sync lock from the state store, which keeps other processes out (see pipeline.py).

With ``[retention]`` in the config, a prune of the shipped events runs beside the loop in
a thread of its own (:class:`~siem_plugins.retention.RetentionJob`), never inside a pass.

SIGTERM / SIGINT stop the loop: in-flight objects are finished (each is all-or-nothing
anyway), no new object is started, and the process exits 0. A second signal abandons the
in-flight objects: their intents stay recorded and the next start replays them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from siem_plugins.endpoint import Readiness
from siem_plugins.logs import log_stopped
from siem_plugins.pipeline import Pipeline, SyncResult
from siem_plugins.retention import RetentionJob
from siem_plugins.runtime import Integration, Runtime
from siem_plugins.signals import SIGNAL_POLL, stop_on_signals, wait_for_stop
from siem_plugins.storage import DESTINATIONS, SINK

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, runtime: Runtime, *, interval: float | None = None, max_workers: int | None = None
    ) -> None:
        self.rt = runtime
        self.interval = interval if interval is not None else runtime.config.interval
        self.stop = threading.Event()
        #: Ready once the loop runs, not ready from the moment it stops (``/readyz``).
        self.readiness = Readiness()
        self.pipeline = Pipeline(runtime, stop=self.stop)
        self._running: dict[tuple[str, str], Future[SyncResult]] = {}
        #: The integration object each running pass uses (a reload may replace it).
        self._using: dict[tuple[str, str], Integration] = {}
        self._lock = threading.Lock()
        workers = max_workers or runtime.config.max_workers
        # A pool per destination: passes stuck on one kind of server (a tarpitting relay)
        # can only ever occupy that destination's threads.
        self._pools = {
            d: ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"siem-{d}")
            for d in DESTINATIONS
        }
        self.cycles = 0
        #: Passes run, failed and skipped since start, for the stop line.
        self.passes = self.failures = self.skipped = 0

    def tick(self) -> list[Future[SyncResult]]:
        """Pick up the integrations saved, changed or removed through the settings API
        since the last tick, then start each enabled integration's passes that are not
        still running."""
        self.rt.refresh()
        with self._lock:
            busy = [self._using[key] for key, fut in self._running.items() if not fut.done()]
        self.rt.close_retired(busy)
        started = []
        for integ in self.rt.enabled():
            for destination in DESTINATIONS:
                with self._lock:
                    running = self._running.get((integ.name, destination))
                    if running is not None and not running.done():
                        log.warning(
                            "%s: previous %s pass still running; skipping it this cycle",
                            integ.name,
                            destination,
                            extra={"integration": integ.name, "destination": destination},
                        )
                        self.skipped += 1
                        continue
                    fut = self._pools[destination].submit(self._pass, integ, destination)
                    self._running[(integ.name, destination)] = fut
                    self._using[(integ.name, destination)] = integ
                    started.append(fut)
        self.cycles += 1
        return started

    def _pass(self, integ: Integration, destination: str) -> SyncResult:
        result = self._run_pass(integ, destination)
        with self._lock:
            if destination in result.skipped:
                self.skipped += 1
            else:
                self.passes += 1
                self.failures += destination in result.errors
        return result

    def _run_pass(self, integ: Integration, destination: str) -> SyncResult:
        started = time.monotonic()
        where = {"integration": integ.name, "destination": destination}
        try:
            result = self.pipeline.sync_pass(integ, destination)
        except Exception as exc:  # a bug: say it, in one line, and keep the loop alive
            log.error(
                "%s: %s pass failed unexpectedly: %s: %s",
                integ.name,
                destination,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
                extra=where,
            )
            return SyncResult(integ.name, errors={destination: str(exc)})
        if destination in result.skipped:
            return result
        if destination == SINK:
            done = f"{len(result.objects)} objects, {result.events} events"
            if result.set_aside:
                done += f", {len(result.set_aside)} events set aside"
        else:
            done = f"{len(result.digests)} digests"
        seconds = time.monotonic() - started
        failed = destination in result.errors
        counts = (
            {"objects": len(result.objects), "events": result.events}
            if destination == SINK
            else {"digests": len(result.digests)}
        )
        log.info(
            "%s: %s pass done in %.1fs: %s%s",
            integ.name,
            destination,
            seconds,
            done,
            ", failed" if failed else "",
            extra={**where, **counts, "seconds": seconds, "failed": failed},
        )
        return result

    def run(self, *, max_cycles: int | None = None) -> None:
        """Tick every ``interval`` seconds until stopped (or ``max_cycles`` ticks); then
        log what was done (passes, failures, skipped passes, time)."""
        started = time.monotonic()
        try:
            self._loop(max_cycles)
        finally:
            # Also after a second signal abandoned the in-flight passes (SystemExit).
            log_stopped(
                log,
                passes=self.passes,
                failures=self.failures,
                skipped=self.skipped,
                seconds=time.monotonic() - started,
            )

    def _loop(self, max_cycles: int | None) -> None:
        log.info("scheduler: %d integrations, every %.0fs", len(self.rt.enabled()), self.interval)
        retention = RetentionJob.start_for(self.rt.config, self.stop)
        next_at = time.monotonic()
        self.readiness.ready()
        while not self.stop.is_set():
            self.tick()
            if max_cycles is not None and self.cycles >= max_cycles:
                break
            next_at += self.interval
            # Fixed-rate ticks: a slow cycle does not shift every later one.
            wait_for_stop(self.stop, next_at - time.monotonic())
        self.shutdown()
        if retention is not None:
            retention.join()

    def shutdown(self, *, wait: bool = True) -> None:
        self.readiness.not_ready("stopping")
        self.stop.set()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if wait:
            # In slices, not one join: a second signal must still be able to abandon
            # the in-flight syncs (see wait_for_stop).
            with self._lock:
                running = [f for f in self._running.values() if not f.done()]
            while running:
                running = list(futures_wait(running, timeout=SIGNAL_POLL).not_done)
            for pool in self._pools.values():
                pool.shutdown(wait=True)

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the loop; a second one abandons the in-flight syncs."""
        return stop_on_signals(
            self.stop,
            exit_status=0,
            first="{signal}: finishing in-flight objects, then stopping",
            second="second {signal}: abandoning in-flight syncs (their intents are replayed "
            "on the next start)",
        )
