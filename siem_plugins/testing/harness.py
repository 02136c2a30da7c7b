"""Run a plugin the way siem-plugins runs it, from a test: the public entry points of the
test kit for everything the internals would otherwise be needed for.

* :func:`store_events` validates event dicts exactly as ``siem-plugins ingest`` does and
  stores them (in the ``siem_store`` fixture, say), returning their ids.
* :func:`build` builds one component by kind and name from an options mapping, as a
  config would (the factory, the contract check, the unknown-key check).
* :func:`sync_once` runs one sync of every enabled integration of a config given as a
  dict, as ``siem-plugins sync`` does, and returns what each did.

Plugins come from the built-ins, a drop-in folder (``plugins_dir``) and objects passed in
``plugins`` (``(name, plugin)`` pairs); installed packages are not loaded, so a test sees
exactly the plugins it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, overload

from siem_plugins.events import canonicalize
from siem_plugins.kinds import FORMATTER, NOTIFIER, SINK, SOURCE, Formatter, Notifier, Sink, Source
from siem_plugins.options import Options

Plugins = Iterable[tuple[str, object]]


def _host(plugins_dir: Path | None, plugins: Plugins) -> Any:
    from siem_plugins.host import create_host

    return create_host(plugins_dir, entry_points=False, disabled=(), extra=plugins)


def store_events(store: Any, account: str, events: Iterable[Mapping[str, Any]]) -> list[int]:
    """Validate ``events`` as ingest does and append them to ``store`` for ``account``
    (one transaction); their ids, in order. A bad event raises the ingest's error."""
    result = store.append(account, (canonicalize(e) for e in events))
    if not result.accepted:
        return []
    return list(range(result.first_id, result.last_id + 1))


@overload
def build(
    kind: Literal["source"],
    name: str,
    options: Mapping[str, Any],
    *,
    plugins_dir: Path | None = ...,
    plugins: Plugins = ...,
) -> Source: ...
@overload
def build(
    kind: Literal["formatter"],
    name: str,
    options: Mapping[str, Any],
    *,
    plugins_dir: Path | None = ...,
    plugins: Plugins = ...,
) -> Formatter: ...
@overload
def build(
    kind: Literal["sink"],
    name: str,
    options: Mapping[str, Any],
    *,
    plugins_dir: Path | None = ...,
    plugins: Plugins = ...,
) -> Sink: ...
@overload
def build(
    kind: Literal["notifier"],
    name: str,
    options: Mapping[str, Any],
    *,
    plugins_dir: Path | None = ...,
    plugins: Plugins = ...,
) -> Notifier: ...
def build(
    kind: str,
    name: str,
    options: Mapping[str, Any],
    *,
    plugins_dir: Path | None = None,
    plugins: Plugins = (),
) -> Source | Formatter | Sink | Notifier:
    """The component ``name`` of ``kind`` (``"sink"``, ...) built from ``options`` as a
    config table, exactly as the config would build it; a bad option raises the
    :class:`~siem_plugins.ConfigError` a user would see."""
    host = _host(plugins_dir, plugins)
    table = Options(dict(options), path=kind)
    built: Source | Formatter | Sink | Notifier
    if kind == SOURCE.name:
        built = host.build(SOURCE, name, table)
    elif kind == FORMATTER.name:
        built = host.build(FORMATTER, name, table)
    elif kind == SINK.name:
        built = host.build(SINK, name, table)
    elif kind == NOTIFIER.name:
        built = host.build(NOTIFIER, name, table)
    else:
        raise ValueError(f"unknown kind {kind!r}: source, formatter, sink or notifier")
    return built


def sync_once(
    config: Mapping[str, Any], *, plugins_dir: Path | None = None, plugins: Plugins = ()
) -> dict[str, Any]:
    """One sync of every enabled integration of ``config`` (a ``siem.toml`` as a dict),
    as ``siem-plugins sync`` runs it; each integration's :class:`SyncResult` by name."""
    from siem_plugins.config import config_from_dict
    from siem_plugins.pipeline import Pipeline
    from siem_plugins.runtime import Runtime

    runtime = Runtime(config_from_dict(config, file="<test>"), _host(plugins_dir, plugins))
    try:
        pipeline = Pipeline(runtime)
        return {integ.name: pipeline.sync(integ) for integ in runtime.enabled()}
    finally:
        runtime.close()
