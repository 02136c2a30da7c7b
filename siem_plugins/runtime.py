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
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from siem_plugins.compress import suffix
from siem_plugins.config import Config, IntegrationConfig, integration_from_table
from siem_plugins.control.secrets import SecretBox
from siem_plugins.control.store import (
    ControlStore,
    StoredIntegration,
    open_control,
    sealed_plaintexts,
    store_url,
    unseal,
)
from siem_plugins.host import PluginHost
from siem_plugins.kinds import Formatter, Notifier, Sink, Source
from siem_plugins.logs import REDACTOR
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
    #: The stored version of an integration kept as data (the settings API's); None for
    #: one of the config file.
    version: int | None = None

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
        # Integrations kept as data (control/): reloaded by refresh() when the store's
        # generation moved; replaced ones wait in _retired until no pass uses them.
        self.control: ControlStore[Any] | None = None
        self._box: SecretBox | None = None
        self._generation: int | None = None
        self._retired: list[Integration] = []
        self._refresh_lock = threading.Lock()
        try:
            for ic in config.integrations:
                self.integrations.append(self._build(ic))
            self._check_shared_sections()
            self._check_destinations()
            self._open_control()
            self.refresh()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ kept as data

    def _open_control(self) -> None:
        from siem_plugins.control.secrets import SecretKeyError

        try:
            self._box = SecretBox.from_environment()
        except SecretKeyError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.control = open_control(store_url(self.config))
        except ValueError as exc:
            raise self.config.store_options.error("url", str(exc)) from None

    @property
    def secret_box(self) -> SecretBox | None:
        """The keys stored secrets are sealed with (None: none configured)."""
        return self._box

    def refresh(self) -> bool:
        """Pick up the integrations saved, changed, enabled, disabled or deleted in the
        control store since the last call: one query when nothing changed. True when the
        set changed. A stored integration that cannot be built (an invalid document, a
        secret no key decrypts, a name the config uses) is logged and left out; the
        others are not held back. Never raises for the store: the next call tries again."""
        if self.control is None:
            return False
        with self._refresh_lock:
            try:
                generation = self.control.generation()
                if generation == self._generation:
                    return False
                stored = self.control.list()
            except Exception as exc:
                log.warning("could not read the stored integrations: %s", _one_line(exc))
                return False
            try:
                self._reload(stored, generation)
            except Exception as exc:  # a bug: say it; the integrations in use stay
                log.error("reloading the stored integrations failed: %s", _one_line(exc))
                return False
            return True

    def _reload(self, stored: list[StoredIntegration], generation: int) -> None:
        from_config = [i for i in self.integrations if i.version is None]
        names = {i.name: i for i in from_config}
        before = {i.name: i for i in self.integrations if i.version is not None}
        kept: list[Integration] = []
        added = changed = 0
        for s in stored:
            if s.name in names:
                log.error(
                    "integration %r is defined twice: in %s and in the store (saved by %s); "
                    "the config's is used, rename one",
                    s.name,
                    self.config.file,
                    s.updated_by,
                )
                continue
            old = before.get(s.name)
            if old is not None and old.version == s.version:
                kept.append(old)
                continue
            try:
                integ = self.build_stored(s)
                self._check_against(integ, [*from_config, *kept])
            except Exception as exc:
                log.error(
                    "stored integration %r (version %d) left out: %s",
                    s.name,
                    s.version,
                    _one_line(exc),
                    extra={"integration": s.name},
                )
                continue
            kept.append(integ)
            if old is None:
                added += 1
            else:
                changed += 1
        now = {i.name for i in kept}
        removed = [n for n in before if n not in now]
        still = {id(i) for i in kept}
        self._retired.extend(i for i in before.values() if id(i) not in still)
        self.integrations = [*from_config, *kept]
        if self._generation is not None:  # the first load is part of starting up
            log.info(
                "stored integrations: %d in use (%d added, %d changed, %d removed%s)",
                len(kept),
                added,
                changed,
                len(removed),
                f": {', '.join(sorted(removed))}" if removed else "",
            )
        self._generation = generation

    def build_stored(self, stored: StoredIntegration) -> Integration:
        """A stored integration with its components built (its secrets unsealed), checked
        exactly like the config's; the caller closes it unless it joins the runtime."""
        document = unseal(stored.document, self._box)
        REDACTOR.add(sealed_plaintexts(stored.document, document))
        integ = self.build_document(document, label=f"stored integration {stored.name!r}")
        return dataclasses.replace(integ, version=stored.version)

    def build_document(self, document: Mapping[str, Any], *, label: str) -> Integration:
        """An ``[[integration]]`` table (secrets in clear) validated by the config's code
        and built, located as ``label: integration[0].key``."""
        ic = integration_from_table(self.config, document, file=label)
        return self._build(ic)

    def _check_against(self, integ: Integration, others: list[Integration]) -> None:
        """Refuse ``integ`` when an enabled other one writes the same keys, or uses the
        name (the whole check of :meth:`_check_destinations`, for one newcomer)."""
        for other in others:
            if other.name == integ.name:
                raise ConfigError(f"the name {integ.name!r} is taken by another integration")
            if not (integ.config.enabled and other.config.enabled):
                continue
            if (other.sink.identity(), other.config.account, other.extension) == (
                integ.sink.identity(),
                integ.config.account,
                integ.extension,
            ):
                raise ConfigError(
                    f"integration {other.name!r} already ships account "
                    f"{integ.config.account!r} as .{integ.extension} to "
                    f"{integ.sink.identity()}: each would overwrite the other's objects; "
                    "choose another prefix",
                    path="sink",
                )

    def check_new(self, integ: Integration) -> None:
        """Refuse to save ``integ`` when it clashes with the integrations in use (other
        than an older version of itself)."""
        self._check_against(integ, [i for i in self.integrations if i.name != integ.name])
        if any(i.name == integ.name and i.version is None for i in self.integrations):
            raise ConfigError(
                f"the name {integ.name!r} is taken by an integration of {self.config.file}",
                path="name",
            )

    def close_retired(self, in_use: Collection[Integration] = ()) -> None:
        """Close the components of integrations replaced or removed by :meth:`refresh`
        that no pass uses any more."""
        with self._refresh_lock:
            busy = {id(i) for i in in_use}
            done = [i for i in self._retired if id(i) not in busy]
            self._retired = [i for i in self._retired if id(i) in busy]
        for integ in done:
            close_parts(integ)

    def integration(self, name: str) -> Integration:
        """The integration of that name (of the config, or kept as data)."""
        for integ in self.integrations:
            if integ.name == name:
                return integ
        known = ", ".join(i.name for i in self.integrations) or "none"
        raise ConfigError(f"no integration named {name!r} (known: {known})", file=self.config.file)

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
        integration: str | None = None,
    ) -> Options:
        section = self.host.section_of(kind, name)
        defaults = [(section, self.config.data.get(section, {}))] if section else []
        options = Options(
            table,
            path=path,
            file=self.config.file,
            defaults=defaults,
            ignore=ignore,
            parent=parent,
            integration=integration,
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
                "sink",
                ic.sink_name,
                ic.sink_table,
                f"{ic.path}.sink",
                parent=ic.parent("sink"),
                integration=ic.name,
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
            base = self.integration(to)  # raises for an unknown name, listing the known
        if not options:
            return dataclasses.replace(integ, sink=base.sink), None
        ic = base.config
        table = {**ic.sink_table, **options}
        sink = self.host.sink(
            ic.sink_name,
            self._options(
                "sink",
                ic.sink_name,
                table,
                f"{ic.path}.sink",
                parent=ic.parent("sink"),
                integration=ic.name,
            ),
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
            return [self.integration(n) for n in dict.fromkeys(names)]
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
        for integ in [*self.integrations, *self._retired]:
            close_parts(integ)
        if self.control is not None:
            self.control.close()
        self.source.close()
        if hasattr(self, "state"):
            self.state.close()


def close_parts(integ: Integration) -> None:
    """Close an integration's sink and notifier (failures logged at debug level)."""
    for part in (integ.sink, integ.notifier):
        try:
            part.close()
        except Exception:
            log.debug("closing %s failed", part, exc_info=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_state_of(config: Config) -> StateStore:
    """The delivery state beside the event store the config names."""
    from siem_plugins.storage import DEFAULT_URL

    url = config.store_options.raw("url", DEFAULT_URL)
    try:
        return open_state(url if isinstance(url, str) else DEFAULT_URL)
    except ValueError as exc:
        raise config.store_options.error("url", str(exc)) from None
