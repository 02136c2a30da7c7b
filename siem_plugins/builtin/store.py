"""The built-in source ``store``: the device/account event store of
:mod:`siem_plugins.storage`, SQLite (the default) or PostgreSQL by URL."""

from __future__ import annotations

from siem_plugins import hookimpl
from siem_plugins.kinds import Source, SourceSpec
from siem_plugins.options import Options
from siem_plugins.storage import DEFAULT_URL, open_store


def _from_options(options: Options) -> Source:
    url = options.string("url", DEFAULT_URL)
    try:
        store: Source = open_store(url)
    except ValueError as exc:
        raise options.error("url", str(exc)) from None
    except Exception as exc:  # cannot connect, schema too old, driver missing
        raise options.error("url", f"cannot open the store: {exc}") from None
    return store


@hookimpl
def siem_register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="store",
            factory=_from_options,
            description="device/account event store: SQLite (url = sqlite:///path.db, the "
            "default) or PostgreSQL (url = postgresql://...)",
        )
    ]
