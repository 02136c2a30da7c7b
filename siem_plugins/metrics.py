"""Prometheus metrics: which there are, and counting them where the work is done.

Off by default: ``[metrics] port`` (or ``--metrics-port``) turns it on, and
:mod:`siem_plugins.endpoint` serves them. The list of metrics and their labels is in
docs/operations.md#metrics; a test keeps that page and :data:`COUNTERS`/:data:`GAUGES`
in step.

* The *counters* (objects, events, bytes, passes, retries, ...) are counted where the
  work is done: in the pipeline (per object, per digest, per pass; never per event) and
  in the S3 sink's client (retries). While no endpoint runs they cost one ``None`` check
  each, and prometheus-client is not even imported.
* The *gauges* (lag, last success, failures) are not counted at all: the endpoint reads
  them from the health record at each scrape (:class:`siem_plugins.endpoint.HealthCollector`).
* A Celery worker's passes run in forked pool processes: the counters are kept in
  prometheus-client's multiprocess files (a private temporary folder per worker), which
  the parent process, serving the endpoint, adds up at each scrape.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siem_plugins.logs import current_context

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: Pass durations (seconds): from a quiet integration's few milliseconds to a long catch-up.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Every counter and histogram: name (as exposed), type, labels, help. The source of truth
#: for the code below and for the table in docs/operations.md.
COUNTERS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "siem_passes_total",
        "counter",
        ("integration", "destination", "outcome"),
        "Passes by outcome: ok, failed, or skipped (another thread or process held the "
        "destination's sync lock).",
    ),
    (
        "siem_pass_duration_seconds",
        "histogram",
        ("destination",),
        "How long a pass took, skipped ones aside (by destination only: one histogram per "
        "integration would cost thousands of series on a large fleet).",
    ),
    (
        "siem_objects_written_total",
        "counter",
        ("integration",),
        "Objects committed by the sink whose cursor then moved past them.",
    ),
    (
        "siem_events_shipped_total",
        "counter",
        ("integration",),
        "Events in the objects committed by the sink.",
    ),
    (
        "siem_bytes_shipped_total",
        "counter",
        ("integration",),
        "Bytes of the objects committed by the sink, as stored (compressed).",
    ),
    (
        "siem_digests_sent_total",
        "counter",
        ("integration",),
        "Digests the notifier sent.",
    ),
    (
        "siem_digest_events_total",
        "counter",
        ("integration",),
        "Selected events the sent digests were about.",
    ),
    (
        "siem_events_set_aside_total",
        "counter",
        ("integration",),
        "Events the formatter could not format, set aside as dead letters.",
    ),
    (
        "siem_intents_replayed_total",
        "counter",
        ("integration", "destination"),
        "Passes that began by finishing a pending intent (after a failure or a crash): "
        "an object written again, or a digest sent again.",
    ),
    (
        "siem_request_retries_total",
        "counter",
        ("integration", "destination", "service", "operation"),
        "Requests a destination's client sent again within one call (botocore's retries "
        "of S3 requests; plugins count theirs with siem_plugins.count_retry).",
    ),
    (
        "siem_alerts_sent_total",
        "counter",
        ("integration", "kind"),
        "Mails to an integration's admins about its bucket: kind problem or recovered.",
    ),
)

#: The gauges ``run`` serves from the health record (at scrape time).
GAUGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "siem_destination_lag_events",
        ("integration", "destination"),
        "Events after the destination's cursor when its last pass ended (counted up to 1,000,000).",
    ),
    (
        "siem_destination_lag_seconds",
        ("integration", "destination"),
        "Age, by its own time, of the oldest event the last pass left unshipped (0: none).",
    ),
    (
        "siem_destination_last_success_timestamp_seconds",
        ("integration", "destination"),
        "When the last pass that failed nothing ended (Unix time; absent: never).",
    ),
    (
        "siem_destination_last_attempt_timestamp_seconds",
        ("integration", "destination"),
        "When the last pass ended (Unix time).",
    ),
    (
        "siem_destination_consecutive_failures",
        ("integration", "destination"),
        "Failed passes in a row (0 after a success).",
    ),
    (
        "siem_destinations",
        ("state",),
        "Destinations of the configured integrations by state, as `siem-plugins status` "
        "names them (failing, stale, behind, never run, ok, disabled), from the recorded lag.",
    ),
    (
        "siem_store_up",
        (),
        "1 if the state store answered this scrape within 2 seconds, else 0.",
    ),
)

#: Served by every process with metrics on.
INFO = ("siem_build_info", ("version", "role"), "Always 1; the version and the process's role.")


class _Metrics:
    """The counters of one process (created when a server starts, see :func:`enable`)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram

        made: dict[str, Any] = {}
        for name, kind, labels, doc in COUNTERS:
            if kind == "histogram":
                made[name] = Histogram(
                    name, doc, labels, registry=registry, buckets=DURATION_BUCKETS
                )
            else:
                # prometheus-client adds the _total suffix itself.
                made[name] = Counter(name.removesuffix("_total"), doc, labels, registry=registry)
        self.passes = made["siem_passes_total"]
        self.duration = made["siem_pass_duration_seconds"]
        self.objects = made["siem_objects_written_total"]
        self.events = made["siem_events_shipped_total"]
        self.bytes = made["siem_bytes_shipped_total"]
        self.digests = made["siem_digests_sent_total"]
        self.digest_events = made["siem_digest_events_total"]
        self.set_aside = made["siem_events_set_aside_total"]
        self.replayed = made["siem_intents_replayed_total"]
        self.retries = made["siem_request_retries_total"]
        self.alerts = made["siem_alerts_sent_total"]


_active: _Metrics | None = None


# --------------------------------------------------------------------------- counting


def pass_ended(integration: str, destination: str, outcome: str, seconds: float | None) -> None:
    """A pass ended (``outcome``: ok, failed or skipped; skipped ones have no duration)."""
    m = _active
    if m is None:
        return
    m.passes.labels(integration, destination, outcome).inc()
    if seconds is not None:
        m.duration.labels(destination).observe(seconds)


def object_written(integration: str, events: int, size: int) -> None:
    """The sink committed an object of ``events`` events and ``size`` bytes."""
    m = _active
    if m is None:
        return
    m.objects.labels(integration).inc()
    m.events.labels(integration).inc(events)
    m.bytes.labels(integration).inc(size)


def digest_sent(integration: str, events: int) -> None:
    """The notifier sent a digest about ``events`` selected events."""
    m = _active
    if m is None:
        return
    m.digests.labels(integration).inc()
    m.digest_events.labels(integration).inc(events)


def events_set_aside(integration: str, count: int) -> None:
    """``count`` events became dead letters."""
    m = _active
    if m is not None and count:
        m.set_aside.labels(integration).inc(count)


def intent_replayed(integration: str, destination: str) -> None:
    """A pass began by finishing a pending intent."""
    m = _active
    if m is not None:
        m.replayed.labels(integration, destination).inc()


def alert_sent(integration: str, *, recovered: bool) -> None:
    """The admins were told that the bucket fails (or works again)."""
    m = _active
    if m is not None:
        m.alerts.labels(integration, "recovered" if recovered else "problem").inc()


def count_retry(service: str, operation: str) -> None:
    """Count one request a destination's client sends again (``siem_request_retries``).

    For plugins whose client retries by itself: call it once per retried request, from
    the thread of the pass (the integration and the destination come from the pass). It
    costs next to nothing while metrics are off.
    """
    m = _active
    if m is None:
        return
    where = current_context()
    m.retries.labels(
        str(where.get("integration", "")), str(where.get("destination", "")), service, operation
    ).inc()


# --------------------------------------------------------------------------- set-up


def enable(*, multiprocess_dir: Path | None = None) -> CollectorRegistry:
    """Start counting in this process; the registry to serve.

    :param multiprocess_dir: for a Celery worker: an empty private folder where every
        pool process keeps its counters (prometheus-client's multiprocess mode, which must
        be chosen before prometheus-client is first imported).
    """
    global _active
    if multiprocess_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_dir)
    elif "prometheus_client" not in sys.modules:
        # Set for some other program: counters would go to its files, not to our endpoint.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ.pop("prometheus_multiproc_dir", None)
    import prometheus_client
    from prometheus_client import CollectorRegistry, ProcessCollector, values

    # No *_created series: they would double the number of series, for nothing a rate()
    # needs.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    if multiprocess_dir is not None:
        if values.ValueClass.__name__ != "MmapedValue":
            raise RuntimeError(
                "prometheus-client was imported before the metrics folder was set; "
                "worker metrics would not add up across pool processes"
            )
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        _active = _Metrics(None)
    else:
        _active = _Metrics(registry)
        ProcessCollector(registry=registry)
    return registry


def disable() -> None:
    """Stop counting (when the server stops)."""
    global _active
    _active = None
