"""The scheduler: every integration synced every interval, one pass per destination at a time.

Each tick starts, for every enabled integration, a *sink pass* (objects to the bucket) and
a *notifier pass* (the digest), each on a thread pool of its own (``max_workers`` threads
each). They are scheduled apart: a pass whose previous run is still going when its next
tick comes is skipped for that tick (never queued behind itself), while the other
destination's pass starts as usual. So a mail relay that hangs cannot delay the next
objects, and a black-holed S3 endpoint cannot delay the next alerts. Each pass also takes
its sync lock from the state store, which keeps other processes out (see pipeline.py).

SIGTERM / SIGINT stop the loop: in-flight objects are finished (each is all-or-nothing
anyway), no new object is started, and the process exits 0. A second signal abandons the
in-flight objects: their intents stay recorded and the next start replays them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from types import FrameType

from siem_plugins.pipeline import Integration, Pipeline, Runtime, SyncResult
from siem_plugins.storage import DESTINATIONS, SINK

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, runtime: Runtime, *, interval: float | None = None, max_workers: int | None = None
    ) -> None:
        self.rt = runtime
        self.interval = interval if interval is not None else runtime.config.interval
        self.stop = threading.Event()
        self.pipeline = Pipeline(runtime, stop=self.stop)
        self._running: dict[tuple[str, str], Future[SyncResult]] = {}
        self._lock = threading.Lock()
        workers = max_workers or runtime.config.max_workers
        # A pool per destination: passes stuck on one kind of server (a tarpitting relay)
        # can only ever occupy that destination's threads.
        self._pools = {
            d: ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"siem-{d}")
            for d in DESTINATIONS
        }
        self.cycles = 0

    def tick(self) -> list[Future[SyncResult]]:
        """Start each enabled integration's passes that are not still running."""
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
                        )
                        continue
                    fut = self._pools[destination].submit(self._pass, integ, destination)
                    self._running[(integ.name, destination)] = fut
                    started.append(fut)
        self.cycles += 1
        return started

    def _pass(self, integ: Integration, destination: str) -> SyncResult:
        started = time.monotonic()
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
        log.info(
            "%s: %s pass done in %.1fs: %s%s",
            integ.name,
            destination,
            time.monotonic() - started,
            done,
            ", failed" if destination in result.errors else "",
        )
        return result

    def run(self, *, max_cycles: int | None = None) -> None:
        """Tick every ``interval`` seconds until stopped (or ``max_cycles`` ticks)."""
        log.info("scheduler: %d integrations, every %.0fs", len(self.rt.enabled()), self.interval)
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.tick()
            if max_cycles is not None and self.cycles >= max_cycles:
                break
            next_at += self.interval
            # Fixed-rate ticks: a slow cycle does not shift every later one.
            wait_for_stop(self.stop, next_at - time.monotonic())
        self.shutdown()

    def shutdown(self, *, wait: bool = True) -> None:
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

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop.is_set():
                log.warning(
                    "second %s: abandoning in-flight syncs (their intents are "
                    "replayed on the next start)",
                    signal.Signals(signum).name,
                )
                raise SystemExit(0)
            log.info("%s: finishing in-flight objects, then stopping", signal.Signals(signum).name)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)


# How often a waiting main thread wakes up to run pending signal handlers.
SIGNAL_POLL = 0.2


def wait_for_stop(stop: threading.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; True if it was set.

    In slices of SIGNAL_POLL rather than one wait: CPython runs signal handlers in the
    main thread only, and a signal the kernel delivers to another thread (any busy one:
    a sync, a read-ahead, an upload) does not interrupt a main thread blocked in a lock
    wait. One long wait would sit out the whole interval with the SIGTERM pending;
    between slices the interpreter runs the pending handler, which sets ``stop``.
    """
    deadline = time.monotonic() + max(0.0, seconds)
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        stop.wait(min(left, SIGNAL_POLL))
    return True


def on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM/SIGINT; returns a function restoring the old handlers."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(130)
        stop.set()

    for sig in old:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore
