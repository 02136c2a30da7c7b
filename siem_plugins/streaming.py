"""Streaming helpers of a sync: events flow through in batches, never a whole sync in
memory, and the slow parts overlap (the store is read while earlier batches are
compressed and sent).
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar


class GCPause:
    """Pause Python's cyclic garbage collector while events stream through.

    Every batch allocates thousands of short-lived, GC-tracked objects (rows, events)
    that reference counting frees anyway; the collector would run every few hundred of
    them and, each tenth time, walk every tracked object of the process (botocore's
    client alone is ~65 k). Measured: 1.8-3.5 s per million events (docs/performance.md).
    Counted across threads: the collector is switched back on when the last streaming
    sync is done (if it was on before), so a long-lived ``run`` still collects.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._restore = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._restore:
                    gc.enable()


#: The process-wide pause, shared by every sync thread.
gc_paused = GCPause()


_T = TypeVar("_T")
_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(start: Callable[[], Iterable[_T]], depth: int = 3) -> Iterator[_T]:
    """``start()``'s items, produced by a background thread up to ``depth`` items ahead.

    SQLite and PostgreSQL reads release the GIL, as does ISA-L's deflate, so on two cores
    the store is read while the previous batches are compressed and sent (1M events:
    2.1-2.7 s -> 1.4-1.5 s for read + compress). Memory: ``depth`` batches. An error in
    the reader is raised here; when the consumer stops early the reader is told to stop
    and closes its iterator (in its own thread), and this waits for it.
    """
    slots: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            items = iter(start())
            try:
                for item in items:
                    if not put(item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            put(_Raised(exc))
        else:
            put(_END)

    reader = threading.Thread(target=produce, name="siem-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        reader.join()
