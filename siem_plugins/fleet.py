"""Scale-out on Celery: workers share the integrations; PostgreSQL keeps them honest.

* ``siem-plugins worker`` runs a Celery worker that executes ``siem_plugins.sync`` tasks.
* ``siem-plugins run --executor celery`` enqueues one such task per enabled integration
  every interval (it does no syncing itself).

At most one pass of an integration's destination runs at a time across the fleet: each
pass first takes that (integration, destination)'s advisory lock in PostgreSQL (held on
a connection of its own for the whole pass, released when the pass ends *or the process
dies*); a pass that finds the lock taken returns at once — it is skipped, never queued
behind the running one. The two destinations have separate locks, so a digest stuck on
a slow mail relay never holds the next tick's objects back. Tasks expire after one
interval, so a backlog of ticks never piles up behind a slow broker.

Every pass is recorded in ``siem_sync_run`` (integration, destination, worker, start,
end, counts, error), which is both an operations log and what the tests read to prove
no overlap.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siem_plugins.config import Config, load_config
from siem_plugins.endpoint import Readiness
from siem_plugins.logs import log_stopped
from siem_plugins.options import ConfigError
from siem_plugins.signals import wait_for_stop

log = logging.getLogger(__name__)

TASK_NAME = "siem_plugins.sync"


def broker_url(cfg: Config) -> str:
    url = cfg.celery.broker_url
    if not url:
        raise ConfigError(
            "the celery executor needs [celery] broker_url (e.g. "
            '"redis://127.0.0.1:6379/0" or "amqp://guest:guest@127.0.0.1//")',
            file=cfg.file,
            path="celery.broker_url",
        )
    return url


def check_fleet_config(cfg: Config) -> None:
    from siem_plugins.storage import is_postgres

    url = cfg.store_options.raw("url", "")
    if not (isinstance(url, str) and is_postgres(url)):
        raise ConfigError(
            "the celery executor needs the PostgreSQL store (its sync locks and "
            "cursors are shared by every worker): set [store] url = "
            '"postgresql://..."',
            file=cfg.file,
            path="store.url",
        )
    broker_url(cfg)


class PassCounts:
    """Passes run, failed and skipped by a worker's task processes, for its stop line.

    In shared memory made before Celery forks its pool, so that the prefork children's
    counts reach the parent (Celery's own success signals fire in the child).
    """

    def __init__(self) -> None:
        self._counts = multiprocessing.Array("q", 3)

    def add(self, passes: int, failures: int, skipped: int) -> None:
        with self._counts.get_lock():
            self._counts[0] += passes
            self._counts[1] += failures
            self._counts[2] += skipped

    def get(self) -> tuple[int, int, int]:
        """``(passes, failures, skipped)``."""
        with self._counts.get_lock():
            passes, failures, skipped = self._counts[:]
        return passes, failures, skipped


def make_app(
    config_path: Path, *, plugins_dir: Path | None = None, counts: PassCounts | None = None
) -> Any:
    """The Celery app for a config file (workers build their runtime lazily, per process).

    :param plugins_dir: the drop-in folder (default: the config's, see
        :meth:`Config.drop_in_folder`), as for every other command.
    :param counts: where the tasks count their passes (a worker's stop line).
    """
    from celery import Celery

    cfg = load_config(config_path)
    check_fleet_config(cfg)
    app = Celery("siem_plugins", broker=broker_url(cfg), set_as_current=False)
    app.conf.update(
        task_default_queue=cfg.celery.queue,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,  # a worker takes one sync at a time per process
        task_acks_late=False,  # a lost task is re-sent by the next tick anyway
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    runtime_holder: dict[str, Any] = {}
    lock = threading.Lock()
    #: Integrations a task of this process is syncing (a reload must not close them).
    in_use: list[Any] = []

    def runtime() -> Any:
        # Built in the process that runs tasks (after a prefork fork), once.
        with lock:
            rt = runtime_holder.get("rt")
            if rt is None or runtime_holder.get("pid") != os.getpid():
                from siem_plugins.host import create_host
                from siem_plugins.logs import REDACTOR
                from siem_plugins.runtime import Runtime

                fresh = load_config(config_path)
                REDACTOR.add(fresh.secrets)
                rt = Runtime(fresh, create_host(plugins_dir or fresh.drop_in_folder()))
                runtime_holder.update(rt=rt, pid=os.getpid())
            return rt

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def sync(integration: str) -> dict[str, Any]:
        from siem_plugins.pipeline import Pipeline
        from siem_plugins.storage import DESTINATIONS

        rt = runtime()
        # Saved, changed or deleted through the settings API since the last task. One
        # lock for the reload, the closing of what it replaced and taking the integration
        # into use: a reload in another thread can then never close the one taken here.
        with lock:
            rt.refresh()
            rt.close_retired(list(in_use))
            integ = next((i for i in rt.integrations if i.name == integration), None)
            if integ is not None and integ.config.enabled:
                in_use.append(integ)
        if integ is None:
            log.warning(
                "no integration named %r in this worker's config or store (task ignored; "
                "deleted since it was enqueued, or the worker's config is out of date)",
                integration,
            )
            return {"integration": integration, "status": "unknown"}
        if not integ.config.enabled:
            log.info("%s: disabled since it was enqueued; task ignored", integration)
            return {"integration": integration, "status": "disabled"}
        try:
            result = Pipeline(rt).sync(integ)
        finally:
            with lock:
                in_use.remove(integ)
        if counts is not None:
            skipped = len(result.skipped)
            counts.add(len(DESTINATIONS) - skipped, len(result.errors), skipped)
        status = "ok" if result.ok else "failed"
        if result.ok and result.skipped and len(result.skipped) == 2:
            status = "skipped"
        return {
            "integration": integration,
            "status": status,
            "skipped": sorted(result.skipped),
            "objects": len(result.objects),
            "events": result.events,
        }

    return app


def run_beat(
    config_path: Path,
    *,
    interval: float | None,
    cycles: int | None,
    stop: threading.Event,
    readiness: Readiness | None = None,
) -> int:
    """Enqueue one sync task per enabled integration every interval, until stopped
    (``readiness``: ready while it does)."""
    app = make_app(config_path)
    cfg = load_config(config_path)
    every = interval if interval is not None else cfg.interval
    stored = _StoredNames(cfg)
    names = stored.enabled()
    log.info(
        "celery beat: %d integrations every %.0fs via %s",
        len(names),
        every,
        app.conf.broker_url.split("@")[-1],
    )
    ticks = tasks = 0
    started = next_at = time.monotonic()
    with app.connection_for_write() as conn:
        if readiness is not None:
            readiness.ready()
        while not stop.is_set():
            names = stored.enabled()
            for name in names:
                app.send_task(TASK_NAME, args=[name], expires=every, connection=conn)
            tasks += len(names)
            ticks += 1
            if cycles is not None and ticks >= cycles:
                break
            next_at += every
            wait_for_stop(stop, next_at - time.monotonic())
    if readiness is not None:
        readiness.not_ready("stopping")
    stored.close()
    log.info(
        "stopped: %d ticks, %d tasks enqueued in %.0fs",
        ticks,
        tasks,
        time.monotonic() - started,
        extra={"ticks": ticks, "tasks": tasks, "seconds": time.monotonic() - started},
    )
    return 0


class _StoredNames:
    """The names the beat enqueues: the config's enabled integrations and those kept as
    data, re-read when the control store's generation moved (one query a tick). The beat
    needs no secret: it never builds a component."""

    def __init__(self, cfg: Config) -> None:
        from siem_plugins.control.store import open_control, store_url

        self.from_config = [i.name for i in cfg.integrations if i.enabled]
        self.control = open_control(store_url(cfg))
        self.generation: int | None = None
        self.names = list(self.from_config)

    def enabled(self) -> list[str]:
        try:
            generation = self.control.generation()
            if generation != self.generation:
                taken = set(self.from_config)
                kept = [s.name for s in self.control.list() if s.enabled and s.name not in taken]
                self.names = [*self.from_config, *kept]
                self.generation = generation
        except Exception as exc:  # the store is down: enqueue what was known
            log.warning("celery beat: could not read the stored integrations: %s", exc)
        return self.names

    def close(self) -> None:
        self.control.close()


def run_worker(
    config_path: Path,
    *,
    concurrency: int,
    pool: str,
    loglevel: str,
    plugins_dir: Path | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> int:
    """Run a Celery worker until it is stopped; with ``metrics_at`` (address, port) its
    parent process serves the counters of all its pool processes, and ``/healthz`` and
    ``/readyz`` (ready once Celery says the worker is, until it begins to shut down)."""
    counts = PassCounts()
    app = make_app(config_path, plugins_dir=plugins_dir, counts=counts)
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"siem@{socket.gethostname()}-{os.getpid()}",
    ]
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if metrics_at is not None:
                stack.enter_context(_worker_metrics(config_path, *metrics_at))
            app.worker_main(argv)
    finally:
        passes, failures, skipped = counts.get()
        seconds = time.monotonic() - started
        log_stopped(log, passes=passes, failures=failures, skipped=skipped, seconds=seconds)
    return 0


@contextlib.contextmanager
def _worker_metrics(config_path: Path, address: str, port: int) -> Iterator[None]:
    """The worker's endpoint: its pool processes count into files of a private folder
    (made before Celery forks them), which the parent sums up at each scrape."""
    from celery import signals

    from siem_plugins.endpoint import endpoint
    from siem_plugins.runtime import open_state_of

    cfg = load_config(config_path)
    readiness = Readiness()

    def ready(**_: Any) -> None:
        readiness.ready()

    def stopping(**_: Any) -> None:
        readiness.not_ready("stopping")

    folder = Path(tempfile.mkdtemp(prefix="siem-metrics-"))
    try:
        with endpoint(
            address=address,
            port=port,
            role="worker",
            open_state=lambda: open_state_of(cfg),
            close_state=True,
            readiness=readiness,
            multiprocess_dir=folder,
        ):
            signals.worker_ready.connect(ready, weak=False)
            signals.worker_shutting_down.connect(stopping, weak=False)
            try:
                yield
            finally:
                signals.worker_ready.disconnect(ready)
                signals.worker_shutting_down.disconnect(stopping)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
