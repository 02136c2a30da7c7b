"""siem-plugins: ship device and account events to S3 and email the admins.

This namespace is the public API for plugin authors (docs/api.md lists every name, and
a test keeps that page and ``__all__`` in step): the :data:`hookimpl` marker, the event
record, the four kinds' contracts (protocols, base classes with defaults, descriptors),
the values components see, the options reader and the errors to raise. The hooks
themselves are specified in :mod:`siem_plugins.hookspecs`; the test kit for plugin
authors is :mod:`siem_plugins.testing`. Everything else is internal and may change.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "siem_plugins"

#: Marker for hook implementations: ``@hookimpl def siem_register_sinks(): ...``
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# The contract imports nothing of this module but the marker above.
from siem_plugins.events import Event  # noqa: E402
from siem_plugins.kinds import (  # noqa: E402
    DEFAULT_MAX_LISTED,
    Digest,
    Formatter,
    FormatterBase,
    FormatterSpec,
    Intent,
    Notifier,
    NotifierBase,
    NotifierError,
    NotifierSpec,
    ObjectMeta,
    ObjectReceipt,
    ObjectWriter,
    Problem,
    Range,
    RawFormat,
    RawReader,
    Sink,
    SinkBase,
    SinkError,
    SinkSpec,
    Source,
    SourceBase,
    SourceSpec,
)
from siem_plugins.metrics import count_retry  # noqa: E402
from siem_plugins.options import ConfigError, Options, Secret  # noqa: E402

__all__ = [
    "DEFAULT_MAX_LISTED",
    "PROJECT_NAME",
    "ConfigError",
    "Digest",
    "Event",
    "Formatter",
    "FormatterBase",
    "FormatterSpec",
    "Intent",
    "Notifier",
    "NotifierBase",
    "NotifierError",
    "NotifierSpec",
    "ObjectMeta",
    "ObjectReceipt",
    "ObjectWriter",
    "Options",
    "Problem",
    "Range",
    "RawFormat",
    "RawReader",
    "Secret",
    "Sink",
    "SinkBase",
    "SinkError",
    "SinkSpec",
    "Source",
    "SourceBase",
    "SourceSpec",
    "__version__",
    "count_retry",
    "hookimpl",
]
