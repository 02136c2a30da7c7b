"""The S3 sink's settings: :class:`S3Settings`, read and checked from an integration's
``sink`` table, and the request arguments every object gets from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from siem_plugins.config import parse_duration
from siem_plugins.kinds import ObjectMeta
from siem_plugins.options import MAX_TIMEOUT_S, Options, Secret

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum for a part, and for a single PutObject
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_ATTEMPTS = 8
SSE_CHOICES = ("AES256", "aws:kms")
RETRY_MODES = ("standard", "adaptive")
DEFAULT_ABANDONED_UPLOAD_AGE = 3600.0

#: Control characters, refused in prefixes and keys.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True)
class S3Settings:
    """Everything the sink needs, validated."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    sse: str | None = None
    kms_key_id: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_mode: str = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    abandoned_upload_age: float = DEFAULT_ABANDONED_UPLOAD_AGE

    @classmethod
    def from_options(cls, options: Options) -> S3Settings:
        """The settings in ``options`` (an integration's ``sink`` table over the shared
        ``[s3]`` section); a bad value is a :class:`ConfigError` naming its key."""
        bucket = options.string("bucket", required=True)
        if bucket.startswith("s3://") or "/" in bucket:
            raise options.error(
                "bucket", f"expected a bucket name, got {bucket!r}; put the folder in 'prefix'"
            )
        if not _BUCKET.match(bucket):
            raise options.error("bucket", f"not a valid bucket name: {bucket!r}")

        prefix = options.string("prefix", "")
        if prefix.startswith("/") or ".." in prefix or CONTROL.search(prefix):
            raise options.error(
                "prefix",
                f"must be a relative key prefix without '..' or control characters, got {prefix!r}",
            )
        if prefix and not prefix.endswith("/"):
            prefix += "/"

        region = options.string("region")
        endpoint_url = options.string("endpoint_url")
        if endpoint_url is not None:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise options.error(
                    "endpoint_url", f"expected an http(s):// URL, got {endpoint_url!r}"
                )

        access_key_id = options.string("access_key_id")
        secret_access_key = options.secret("secret_access_key")
        session_token = options.secret("session_token")
        if access_key_id is not None and secret_access_key is None:
            raise options.error("secret_access_key", "required when access_key_id is set")
        if secret_access_key is not None and access_key_id is None:
            raise options.error("access_key_id", "required when secret_access_key is set")
        if session_token is not None and access_key_id is None:
            raise options.error(
                "session_token", "only valid with access_key_id and secret_access_key"
            )
        profile = options.string("profile")
        if profile is not None and access_key_id is not None:
            raise options.error(
                "profile", "set either profile or access_key_id/secret_access_key, not both"
            )

        sse = options.string("sse", choices=SSE_CHOICES)
        kms_key_id = options.string("kms_key_id")
        if kms_key_id is not None and sse != "aws:kms":
            raise options.error("kms_key_id", 'only valid with sse = "aws:kms"')

        part_size = options.integer(
            "part_size", DEFAULT_PART_SIZE, min=MIN_PART_SIZE, max=MAX_PART_SIZE
        )
        max_attempts = options.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, min=1, max=50)
        retry_mode = options.string("retry_mode", "standard", choices=RETRY_MODES)
        timeouts = {}
        for key, default in (("connect_timeout", 10.0), ("read_timeout", 60.0)):
            value = options.number(key, default, max=MAX_TIMEOUT_S)
            if value <= 0:
                raise options.error(key, f"must be more than 0 seconds, got {value}")
            timeouts[key] = value
        abandoned_upload_age = DEFAULT_ABANDONED_UPLOAD_AGE
        if "abandoned_upload_age" in options:
            abandoned_upload_age = parse_duration(
                options.raw("abandoned_upload_age"), options, "abandoned_upload_age"
            )

        return cls(
            bucket=bucket,
            prefix=prefix,
            region=region,
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            profile=profile,
            sse=sse,
            kms_key_id=kms_key_id,
            part_size=part_size,
            max_attempts=max_attempts,
            retry_mode=retry_mode,
            abandoned_upload_age=abandoned_upload_age,
            **timeouts,
        )

    def object_args(self, meta: ObjectMeta) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload arguments every object gets."""
        args: dict[str, Any] = {"ContentType": meta.content_type, "Metadata": meta.as_metadata()}
        if meta.content_encoding is not None:
            args["ContentEncoding"] = meta.content_encoding
        args.update(self.sse_args())
        return args

    def sse_args(self) -> dict[str, Any]:
        """The server-side encryption arguments of PutObject and CreateMultipartUpload
        (parts inherit the upload's encryption)."""
        args: dict[str, Any] = {}
        if self.sse is not None:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id is not None:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args
