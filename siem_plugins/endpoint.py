"""The metrics endpoint of ``run`` and ``worker``: ``/metrics``, ``/healthz``, ``/readyz``.

:func:`endpoint` turns counting on (:mod:`siem_plugins.metrics`) and serves, for the
duration of a block, on a thread of its own:

* the counters of this process (or, for a Celery worker, of all its pool processes);
* with ``watched`` integrations (``run``, and the beat of ``run --executor celery``), the
  gauges, read from the health record (:mod:`siem_plugins.health`) at each scrape: every
  process that serves them tells the same, durable story, and a worker that died cannot
  leave a stale value behind;
* ``/healthz`` and ``/readyz``.

The store is only ever touched from one thread of its own (:class:`StoreProbe`), with a
time limit: a store that hangs makes ``/healthz`` say so within seconds, never makes a
scrape hang, and never costs more than one database connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from siem_plugins import __version__
from siem_plugins.logs import REDACTOR
from siem_plugins.metrics import GAUGES, INFO, disable, enable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from siem_plugins.storage import HealthRecord, StateStore

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How long ``/healthz``, ``/readyz`` and a scrape wait for the store.
STORE_TIMEOUT = 2.0


# --------------------------------------------------------------------------- the store


class StoreProbe:
    """Runs store reads for the endpoint on one daemon thread of its own, each with a
    time limit.

    One thread means one database connection however many scrapes and probes come; a
    daemon thread, so that a read stuck on a store that stopped answering never holds
    up the process's exit. While such a read is stuck, the next ones fail at once
    instead of queueing behind it.
    """

    def __init__(
        self, open_state: Callable[[], StateStore], timeout: float = STORE_TIMEOUT
    ) -> None:
        self._open = open_state
        self._state: StateStore | None = None
        self.timeout = timeout
        self._jobs: queue.SimpleQueue[tuple[Callable[[StateStore], Any], Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._busy: Future[Any] | None = None
        self._lock = threading.Lock()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            read, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self._state is None:
                    self._state = self._open()
                future.set_result(read(self._state))
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, read: Callable[[StateStore], _T]) -> _T:
        """``read(state)`` on the probe's thread; raises TimeoutError after ``timeout``."""
        with self._lock:
            if self._busy is not None and not self._busy.done():
                raise TimeoutError(
                    f"the store has not answered an earlier check for more than {self.timeout:g} s"
                )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="siem-metrics-store", daemon=True
                )
                self._thread.start()
            future: Future[_T] = Future()
            self._busy = future
            self._jobs.put((read, future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            raise TimeoutError(f"the store did not answer within {self.timeout:g} s") from None

    def close(self, *, close_state: bool) -> None:
        """Stop the thread (without waiting for a stuck read); close the store it
        opened when ``close_state``."""
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)
            if self._thread.is_alive():
                return  # stuck in the store: closing under it would not help either
        if close_state and self._state is not None:
            self._state.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return REDACTOR.redact(text)


# --------------------------------------------------------------------------- gauges


@dataclass(frozen=True)
class Watched:
    """An integration as the gauges need it: its name and whether it is enabled."""

    name: str
    enabled: bool


def _unix(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class HealthCollector:
    """The gauges, read from the health record at each scrape (one query)."""

    def __init__(
        self,
        probe: StoreProbe,
        integrations: Sequence[Watched] | Callable[[], Sequence[Watched]],
        interval: float,
    ):
        self.probe = probe
        #: The integrations, read at each scrape (they change with the settings API).
        self.integrations = integrations if callable(integrations) else lambda: integrations
        self.interval = interval

    def describe(self) -> list[Any]:
        return []  # collected only when scraped: registering must not query the store

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from siem_plugins.health import Lag, Thresholds, destination_state
        from siem_plugins.storage import DESTINATIONS

        families = {
            name: GaugeMetricFamily(name, doc, labels=list(labels)) for name, labels, doc in GAUGES
        }
        try:
            records: list[HealthRecord] = self.probe.call(lambda state: state.health())
        except Exception as exc:
            log.warning("metrics: the store did not answer: %s", _one_line(exc))
            families["siem_store_up"].add_metric([], 0)
            yield families["siem_store_up"]
            return
        families["siem_store_up"].add_metric([], 1)
        now = datetime.now(UTC)
        by_key = {(r.integration, r.destination): r for r in records}
        thresholds = Thresholds.for_interval(self.interval)
        states = dict.fromkeys(("failing", "stale", "behind", "never run", "ok", "disabled"), 0)
        try:
            watched = list(self.integrations())
        except Exception as exc:  # the stored integrations could not be read
            log.warning("metrics: the integrations could not be listed: %s", _one_line(exc))
            watched = []
        for integ in watched:
            for destination in DESTINATIONS:
                record = by_key.get((integ.name, destination))
                lag = None
                if record is not None and record.behind is not None:
                    lag = Lag(record.behind, record.oldest)
                state = destination_state(
                    record, lag, enabled=integ.enabled, now=now, thresholds=thresholds
                )
                states[state] += 1
                if record is None:
                    continue
                labels = [integ.name, destination]
                if lag is not None:
                    families["siem_destination_lag_events"].add_metric(labels, lag.events)
                    families["siem_destination_lag_seconds"].add_metric(labels, lag.seconds(now))
                success = _unix(record.last_success)
                if success is not None:
                    families["siem_destination_last_success_timestamp_seconds"].add_metric(
                        labels, success
                    )
                attempt = _unix(record.last_attempt)
                if attempt is not None:
                    families["siem_destination_last_attempt_timestamp_seconds"].add_metric(
                        labels, attempt
                    )
                families["siem_destination_consecutive_failures"].add_metric(
                    labels, record.failures
                )
        for state, count in states.items():
            families["siem_destinations"].add_metric([state], count)
        yield from families.values()


class InfoCollector:
    """``siem_build_info``: served by every process (multiprocess mode has no Info)."""

    def __init__(self, role: str) -> None:
        self.role = role

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        name, labels, doc = INFO
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        family.add_metric([__version__, self.role], 1)
        yield family


# --------------------------------------------------------------------------- HTTP


class Readiness:
    """Whether the process takes work: set once it has started, cleared when it stops."""

    def __init__(self) -> None:
        self._why = "starting"
        self._lock = threading.Lock()

    def ready(self) -> None:
        with self._lock:
            self._why = ""

    def not_ready(self, why: str) -> None:
        with self._lock:
            self._why = why

    def reason(self) -> str:
        """Empty when ready, else why not."""
        with self._lock:
            return self._why


class ListenError(OSError):
    """The endpoint cannot listen where it was told to (the port is taken, say)."""


def _listen(address: str, port: int) -> Any:
    """A threading WSGI server bound to (address, port) (the HTTP modules are imported
    only when one is made: most commands never serve)."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a slow client never holds up the process's exit
        allow_reuse_address = True
        if ":" in address:
            address_family = socket.AF_INET6

    class Handler(WSGIRequestHandler):
        timeout = 10  # a client that stops sending cannot keep a thread for ever

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: %s %s", self.address_string(), format % args)

    return Server((address, port), Handler)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, on a thread of its own.

    * ``/metrics``: Prometheus text format (OpenMetrics and gzip when asked for);
    * ``/healthz``: 200 while the process runs and the store answers within
      :data:`STORE_TIMEOUT`, else 503;
    * ``/readyz``: 200 once the process has started its work and until it stops, while
      the store answers; else 503.

    Both health answers are a small JSON object saying what was checked.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        probe: StoreProbe,
        readiness: Readiness,
        *,
        address: str,
        port: int,
        role: str,
    ) -> None:
        from prometheus_client import make_wsgi_app

        self.probe = probe
        self.readiness = readiness
        self.role = role
        self._metrics_app = make_wsgi_app(registry)
        try:
            self._server = _listen(address, port)
        except OSError as exc:
            raise ListenError(
                f"metrics: cannot listen on {_hostport(address, port)}: {exc.strerror or exc}"
            ) from None
        self._server.set_app(self._app)
        self.address, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="siem-metrics-http",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{_hostport(str(self.address), int(self.port))}"

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info(
            "metrics: serving %s/metrics, /healthz and /readyz",
            self.url,
            extra={"url": self.url},
        )
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- WSGI

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", {"error": "use GET"})
        if path == "/healthz":
            ok, body = self._health()
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", body)
        if path == "/readyz":
            ok, body = self._health()
            why = self.readiness.reason()
            if why:
                ok, body = False, {**body, "status": "not ready", "reason": why}
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", body)
        if path == "/":
            text = b"siem-plugins: /metrics, /healthz, /readyz\n"
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [text]
        return _reply(start_response, "404 Not Found", {"error": f"no such page: {path[:100]}"})

    def _health(self) -> tuple[bool, dict[str, Any]]:
        started = time.monotonic()
        try:
            self.probe.call(lambda state: state.ping())
        except Exception as exc:
            return False, {
                "status": "unhealthy",
                "role": self.role,
                "store": "unreachable",
                "error": _one_line(exc)[:300],
            }
        ms = round((time.monotonic() - started) * 1000, 1)
        return True, {"status": "ok", "role": self.role, "store": "ok", "store_ms": ms}


def _reply(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode() + b"\n"
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@contextlib.contextmanager
def endpoint(
    *,
    address: str,
    port: int,
    role: str,
    open_state: Callable[[], StateStore],
    close_state: bool,
    readiness: Readiness,
    watched: Sequence[Watched] | Callable[[], Sequence[Watched]] | None = None,
    interval: float = 300.0,
    multiprocess_dir: Path | None = None,
) -> Iterator[MetricsServer]:
    """Count and serve for the duration of the block (see :func:`enable`).

    :param role: ``run``, ``beat`` or ``worker`` (``siem_build_info``, health answers).
    :param open_state: opens the state store on the probe's thread when first needed
        (``close_state``: close it afterwards; False when it belongs to the caller).
    :param watched: the integrations to serve gauges for (None: no gauges).
    :raises ListenError: the address or port cannot be listened on.
    """
    registry = enable(multiprocess_dir=multiprocess_dir)
    probe = StoreProbe(open_state)
    server = None
    try:
        if watched is not None:
            registry.register(HealthCollector(probe, watched, interval))
        registry.register(InfoCollector(role))
        server = MetricsServer(
            registry, probe, readiness, address=address, port=port, role=role
        ).start()
        yield server
    finally:
        if server is not None:
            server.close()
        disable()
        probe.close(close_state=close_state)
