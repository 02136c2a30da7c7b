"""siem-plugins: ship device and account events to S3 and email the admins.

The public API for plugin authors lives here: the :data:`hookimpl` marker, the
:class:`Event` record, the four plugin kinds' descriptors and the package version.
"""

from __future__ import annotations

import pluggy

from siem_plugins.events import Event

__version__ = "0.1.0"

PROJECT_NAME = "siem_plugins"

#: Marker for hook implementations: ``@hookimpl def siem_register_sinks(): ...``
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

from siem_plugins.kinds import (  # noqa: E402  (needs hookimpl defined first? no: kept last for readability)
    Digest,
    FormatterSpec,
    NotifierSpec,
    ObjectMeta,
    ObjectReceipt,
    ObjectWriter,
    SinkSpec,
    SourceSpec,
)
from siem_plugins.options import ConfigError, Options  # noqa: E402

__all__ = [
    "PROJECT_NAME",
    "ConfigError",
    "Digest",
    "Event",
    "FormatterSpec",
    "NotifierSpec",
    "ObjectMeta",
    "ObjectReceipt",
    "ObjectWriter",
    "Options",
    "SinkSpec",
    "SourceSpec",
    "__version__",
    "hookimpl",
]
