"""The runtime: everything a sync needs, assembled once from a config and a plugin host.

Building a :class:`Runtime` checks the config against the loaded plugins (shared
sections, component options, two integrations writing the same keys), builds every
integration's formatter, sink and notifier, and opens the event source and the delivery
state. The delivery protocol itself is :mod:`siem_plugins.pipeline`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from siem_plugins.compress import suffix
from siem_plugins.config import Config, IntegrationConfig
from siem_plugins.host import PluginHost
from siem_plugins.kinds import Formatter, Notifier, Sink, Source
from siem_plugins.options import ConfigError, Options, ParentTable
from siem_plugins.storage import SINK, StateStore, open_state

log = logging.getLogger(__name__)


@dataclass
class Integration:
    """An integration with its components built."""

    config: IntegrationConfig
    formatter: Formatter
    sink: Sink
    notifier: Notifier

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def extension(self) -> str:
        return self.formatter.extension + suffix(self.config.compression)

    @property
    def notifier_label(self) -> str:
        """The notifier for messages (``smtp://host:port``)."""
        return self.notifier.describe()

    def fingerprint(self) -> str:
        """What an object's key and bytes depend on (docs/delivery.md#config-changes)."""
        c = self.config
        return f"{c.account}|{c.format_name}|{self.extension}|{self.sink.identity()}"


class Runtime:
    """Everything a sync needs, built once from a config and a plugin host."""

    def __init__(self, config: Config, host: PluginHost) -> None:
        self.config = config
        self.host = host
        # Threads that run notifier passes beside the sink passes (see Pipeline.sync);
        # long-lived, so their per-thread store connections are bounded by their number.
        self._notify_pool: ThreadPoolExecutor | None = None
        self._notify_lock = threading.Lock()
        sections = {
            s
            for kind in ("sink", "notifier")
            for n in host.names(kind)
            if (s := host.section_of(kind, n))
        }
        config.check_sections(sections)
        self.source: Source = host.source(config.store_name, config.store_options)
        self.state: StateStore = open_state_of(config)
        self.integrations: list[Integration] = []
        # The options of every component built over a shared section ([s3], [smtp]).
        self._section_options: list[tuple[str, Options]] = []
        try:
            for ic in config.integrations:
                self.integrations.append(self._build(ic))
            self._check_shared_sections()
            self._check_destinations()
        except BaseException:
            self.close()
            raise

    def _check_destinations(self) -> None:
        """Two enabled integrations must never write the same keys: same destination,
        account and extension would overwrite each other's objects (JSON and SYSLOG of
        one account differ by extension; two SYSLOG framings do not)."""
        seen: dict[tuple[str, str, str], Integration] = {}
        for integ in self.integrations:
            if not integ.config.enabled:
                continue  # checked when it is enabled: renaming one is a normal change
            where = (integ.sink.identity(), integ.config.account, integ.extension)
            other = seen.setdefault(where, integ)
            if other is not integ:
                raise ConfigError(
                    f"integrations {other.name!r} ({other.config.path}) and {integ.name!r} "
                    f"would write the same objects: both ship account {where[1]!r} as "
                    f".{where[2]} to {where[0]}, so each would overwrite the other's; give "
                    "one of them its own prefix or folder",
                    file=self.config.file,
                    path=f"{integ.config.path}.sink",
                )

    def _check_shared_sections(self) -> None:
        """A key of a shared section that no component read is a typo (``regoin``) that
        would otherwise fall back to a default without a word. Sections no component
        used are not judged: nothing is known about what they should hold."""
        reads: dict[str, set[str]] = {}
        for section, options in self._section_options:
            reads.setdefault(section, set()).update(options.used)
        for section, read in sorted(reads.items()):
            table = self.config.data.get(section, {})
            extra = sorted(k for k in table if k not in read)
            if extra:
                raise ConfigError(
                    f"unknown setting {extra[0]!r} (the components using [{section}] read: "
                    f"{', '.join(sorted(k for k in read if k != 'type')) or 'nothing'})",
                    file=self.config.file,
                    path=f"{section}.{extra[0]}",
                )

    def _options(
        self,
        kind: str,
        name: str,
        table: Mapping[str, Any],
        path: str,
        ignore: tuple[str, ...] = ("type",),
        parent: ParentTable | None = None,
    ) -> Options:
        section = self.host.section_of(kind, name)
        defaults = [(section, self.config.data.get(section, {}))] if section else []
        options = Options(
            table, path=path, file=self.config.file, defaults=defaults, ignore=ignore, parent=parent
        )
        if section:
            # Read after the component is built (the set grows as it reads).
            self._section_options.append((section, options))
        return options

    def _build(self, ic: IntegrationConfig) -> Integration:
        host = self.host
        fmt = host.formatter(
            ic.format_name,
            self._options(
                "formatter",
                ic.format_name,
                ic.format_table,
                f"{ic.path}.format",
                parent=ic.parent("format"),
            ),
        )
        sink = host.sink(
            ic.sink_name,
            self._options(
                "sink", ic.sink_name, ic.sink_table, f"{ic.path}.sink", parent=ic.parent("sink")
            ),
        )
        notifier = host.notifier(
            ic.notifier_name,
            self._options(
                "notifier",
                ic.notifier_name,
                ic.notify_table,
                f"{ic.path}.notify",
                ignore=("type", "events"),
                parent=ic.parent("notify"),
            ),
        )
        return Integration(ic, fmt, sink, notifier)

    def retarget(
        self,
        integ: Integration,
        *,
        to: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[Integration, Sink | None]:
        """``integ`` writing elsewhere (``siem-plugins replay``): through integration
        ``to``'s sink, and/or through a sink built from the sink table with ``options``
        changed (validated like the config). Its account, formatter and notifier stay.
        Also returns the sink built here (None if none was), which the caller closes."""
        base = integ
        if to is not None:
            self.config.integration(to)  # raises for an unknown name, listing the known
            base = next(i for i in self.integrations if i.name == to)
        if not options:
            return dataclasses.replace(integ, sink=base.sink), None
        ic = base.config
        table = {**ic.sink_table, **options}
        sink = self.host.sink(
            ic.sink_name,
            self._options("sink", ic.sink_name, table, f"{ic.path}.sink", parent=ic.parent("sink")),
        )
        return dataclasses.replace(integ, sink=sink), sink

    def source_backlog(self, integ: Integration) -> int:
        """How many events the integration's sink has not shipped yet."""
        after = self.state.cursor(integ.name, SINK)
        rng = self.source.plan(
            integ.config.account, after, max_events=sys.maxsize, max_bytes=sys.maxsize
        )
        return rng.count if rng else 0

    def enabled(self, names: list[str] | None = None) -> list[Integration]:
        if names:
            for n in names:
                self.config.integration(n)  # raises for an unknown name
            return [i for i in self.integrations if i.name in names]
        return [i for i in self.integrations if i.config.enabled]

    def notify_pool(self) -> ThreadPoolExecutor:
        """The threads notifier passes run in (``max_workers`` of them, made on first use)."""
        with self._notify_lock:
            if self._notify_pool is None:
                self._notify_pool = ThreadPoolExecutor(
                    self.config.max_workers, thread_name_prefix="siem-notify"
                )
            return self._notify_pool

    def close(self) -> None:
        with self._notify_lock:
            pool, self._notify_pool = self._notify_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for integ in self.integrations:
            for part in (integ.sink, integ.notifier):
                try:
                    part.close()
                except Exception:
                    log.debug("closing %s failed", part, exc_info=True)
        self.source.close()
        if hasattr(self, "state"):
            self.state.close()


def open_state_of(config: Config) -> StateStore:
    """The delivery state beside the event store the config names."""
    from siem_plugins.storage import DEFAULT_URL

    url = config.store_options.raw("url", DEFAULT_URL)
    try:
        return open_state(url if isinstance(url, str) else DEFAULT_URL)
    except ValueError as exc:
        raise config.store_options.error("url", str(exc)) from None
