"""Every hook of siem-plugins, documented: the contract for third-party plugins.

Two families:

* **Registration hooks** (``siem_register_*``) return a list of descriptors. The host
  calls each once at start-up, flattens the lists of all plugins and rejects duplicate
  names. Every result is used (no ``firstresult``).
* **Lifecycle hooks** observe a sync without owning it. They are called once per sync
  or per object, never per event. Their return values are ignored; an exception raised
  by an observer is logged and does not fail the sync.

Call hooks with keyword arguments only (the host's :class:`~siem_plugins.host.Hooks`
facade does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from siem_plugins.kinds import (
        Digest,
        FormatterSpec,
        Intent,
        NotifierSpec,
        ObjectReceipt,
        SinkSpec,
        SourceSpec,
    )

hookspec = pluggy.HookspecMarker("siem_plugins")


# --------------------------------------------------------------------------- registration


@hookspec
def siem_register_sources() -> list[SourceSpec]:
    """Register event sources (where events are read from).

    :return: a list of :class:`~siem_plugins.SourceSpec`; names must be unique across
        all plugins.
    """
    raise NotImplementedError


@hookspec
def siem_register_formatters() -> list[FormatterSpec]:
    """Register formatters (events -> bytes, one record per line).

    :return: a list of :class:`~siem_plugins.FormatterSpec`; names must be unique.
    """
    raise NotImplementedError


@hookspec
def siem_register_sinks() -> list[SinkSpec]:
    """Register sinks (where objects are written).

    :return: a list of :class:`~siem_plugins.SinkSpec`; names must be unique.
    """
    raise NotImplementedError


@hookspec
def siem_register_notifiers() -> list[NotifierSpec]:
    """Register notifiers (who is told about selected events).

    :return: a list of :class:`~siem_plugins.NotifierSpec`; names must be unique.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------- lifecycle


@hookspec
def siem_sync_started(integration: str, destination: str, intent: Intent) -> None:
    """A sync has fixed its range and is about to write or notify.

    Called once per object (destination ``sink``) or digest (``notifier``), after the
    intent is recorded and before anything is sent. A replayed intent is announced again.

    :param integration: the integration's name.
    :param destination: ``"sink"`` or ``"notifier"``.
    :param intent: the recorded range: ids, count, object key, creation time.
    """


@hookspec
def siem_object_written(integration: str, receipt: ObjectReceipt) -> None:
    """An object is complete in its sink and the sink's cursor has advanced past it.

    :param integration: the integration's name.
    :param receipt: key, location, size and the object's metadata.
    """


@hookspec
def siem_notified(integration: str, digest: Digest) -> None:
    """A digest was delivered and the notifier's cursor has advanced past its range.

    :param integration: the integration's name.
    :param digest: what was sent.
    """


@hookspec
def siem_sync_failed(integration: str, destination: str, error: BaseException) -> None:
    """A sync of one destination failed; its cursor did not move and the next cycle
    retries the same intent.

    :param integration: the integration's name.
    :param destination: ``"sink"`` or ``"notifier"``.
    :param error: the exception (its message never contains secrets).
    """
