"""Stopping on SIGTERM / SIGINT, the same way for every long-running command.

The first signal asks for a clean stop: an event is set, and the work in flight finishes
(objects are all-or-nothing, so nothing is left half-written). A second signal gives up
at once with :class:`SystemExit`; whatever was being written is replayed from its
recorded intent at the next start (docs/delivery.md).

CPython runs signal handlers in the main thread only, between bytecodes. A main thread
blocked in a long lock wait does not get to run a handler whose signal the kernel
delivered to another thread (any busy one: a sync, a read-ahead, an upload), so every
wait of the main thread is made in slices of :data:`SIGNAL_POLL` (:func:`wait_for_stop`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

#: How often a waiting main thread wakes up to run pending signal handlers.
SIGNAL_POLL = 0.2

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def wait_for_stop(stop: threading.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``, in slices; True if it was set."""
    deadline = time.monotonic() + max(0.0, seconds)
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        stop.wait(min(left, SIGNAL_POLL))
    return True


def stop_on_signals(
    stop: threading.Event,
    *,
    exit_status: int,
    first: str | None = None,
    second: str | None = None,
) -> Callable[[], None]:
    """Set ``stop`` on the first SIGTERM/SIGINT; exit with ``exit_status`` on the second.

    :param first: logged (INFO) on the first signal, ``{signal}`` replaced by its name.
    :param second: logged (WARNING) on the second.
    :return: a function that restores the handlers that were there before.
    """
    old = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if second:
                log.warning(second.format(signal=name))
            raise SystemExit(exit_status)
        if first:
            log.info(first.format(signal=name))
        stop.set()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore
