"""The built-in ``s3`` sink: objects in an S3 bucket, or any S3-compatible store.

``settings`` reads and checks the options, ``client`` makes the botocore client,
``errors`` turns its failures into :class:`SinkError`, ``writer`` streams one object
(:class:`S3ObjectWriter`), and ``sink`` opens objects, probes the bucket and cleans up
unfinished uploads (:class:`S3Sink`). Here: the registration, and the names other code
imports from ``siem_plugins.builtin.s3``.
"""

from __future__ import annotations

from siem_plugins import hookimpl
from siem_plugins.kinds import SinkSpec

from .client import make_client
from .errors import PERMANENT_CODES, UNREACHABLE_CODES, SinkError, to_sink_error
from .settings import (
    DEFAULT_ABANDONED_UPLOAD_AGE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    RETRY_MODES,
    SSE_CHOICES,
    S3Settings,
)
from .sink import S3Sink
from .writer import S3ObjectWriter

__all__ = [
    "DEFAULT_ABANDONED_UPLOAD_AGE",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PART_SIZE",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PERMANENT_CODES",
    "RETRY_MODES",
    "SSE_CHOICES",
    "UNREACHABLE_CODES",
    "S3ObjectWriter",
    "S3Settings",
    "S3Sink",
    "SinkError",
    "make_client",
    "siem_register_sinks",
    "to_sink_error",
]


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    """The ``s3`` sink."""
    return [
        SinkSpec(
            name="s3",
            factory=S3Sink.from_options,
            description="objects in an S3 bucket (bucket = ..., prefix = ...): one PutObject "
            "up to part_size, streamed in multipart uploads beyond; any S3-compatible store "
            "via endpoint_url",
            section="s3",
        )
    ]
