"""The S3 sink's settings: :class:`S3Settings`, read and checked from an integration's
``sink`` table, and the request arguments every object gets from them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from siem_plugins.config import parse_duration
from siem_plugins.kinds import ObjectMeta
from siem_plugins.options import MAX_TIMEOUT_S, Options, Secret, kind_of

from .loader import storage_classes

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum for a part, and for a single PutObject
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_ATTEMPTS = 8
SSE_CHOICES = ("AES256", "aws:kms")
RETRY_MODES = ("standard", "adaptive")
DEFAULT_ABANDONED_UPLOAD_AGE = 3600.0
#: Canned ACLs the sink may send: both leave the bucket owner in control of the objects
#: (the ones that grant public or cross-account read are refused on purpose).
ACL_CHOICES = ("private", "bucket-owner-full-control")
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256")
#: STS's limits on AssumeRole's DurationSeconds (a role's own maximum may be lower).
MIN_ROLE_DURATION = 900
MAX_ROLE_DURATION = 43200
DEFAULT_ROLE_DURATION = 3600
#: S3's limits on object tags.
MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
#: AssumeRole's patterns for RoleSessionName (2-64) and ExternalId (2-1224).
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
_SESSION_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
#: What S3 allows in a tag key or value (letters, digits, spaces and + - = . _ : / @).
_TAG_TEXT = re.compile(r"^[\w +\-=.:/@]*$")

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
    #: Cross-account access: the role assumed through STS with the credentials above.
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str | None = None
    role_duration: int = DEFAULT_ROLE_DURATION
    sts_endpoint_url: str | None = None
    storage_class: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    acl: str | None = None
    checksum_algorithm: str | None = None

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
        endpoint_url = _url(options, "endpoint_url")

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

        role = _role(options, endpoint_url)
        storage_class = options.string("storage_class")
        if storage_class is not None:
            known = storage_classes()
            if storage_class not in known:
                raise options.error(
                    "storage_class",
                    f"unknown value {storage_class!r}; choose one of: {', '.join(known)}",
                )
        acl = options.string("acl", choices=ACL_CHOICES)
        checksum_algorithm = options.string("checksum_algorithm", choices=CHECKSUM_ALGORITHMS)
        if checksum_algorithm == "CRC32C":
            from botocore.compat import HAS_CRT

            if not HAS_CRT:
                # Refused here rather than at the first upload, hours later.
                raise options.error(
                    "checksum_algorithm",
                    "CRC32C needs the AWS CRT, which is not installed: "
                    "pip install 'siem-plugins[crc32c]' (botocore[crt]), "
                    "or choose CRC32, SHA1 or SHA256",
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
            storage_class=storage_class,
            tags=_tags(options),
            acl=acl,
            checksum_algorithm=checksum_algorithm,
            connect_timeout=timeouts["connect_timeout"],
            read_timeout=timeouts["read_timeout"],
            **role,
        )

    def object_args(self, meta: ObjectMeta) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload arguments every object gets."""
        args: dict[str, Any] = {"ContentType": meta.content_type, "Metadata": meta.as_metadata()}
        if meta.content_encoding is not None:
            args["ContentEncoding"] = meta.content_encoding
        args.update(self.sse_args())
        if self.storage_class is not None:
            args["StorageClass"] = self.storage_class
        if self.tags:
            args["Tagging"] = self.tagging()
        if self.acl is not None:
            args["ACL"] = self.acl
        if self.checksum_algorithm is not None:
            # On CreateMultipartUpload it makes S3 expect each part's checksum too (see
            # the writer), so the whole object is checked end to end either way.
            args["ChecksumAlgorithm"] = self.checksum_algorithm
        return args

    def tagging(self) -> str:
        """The tags as S3's ``x-amz-tagging`` header wants them: a URL-encoded query
        string (``quote`` rather than ``urlencode``: S3 takes ``%20``, not ``+``)."""
        return "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(self.tags.items())
        )

    def probe_args(self) -> dict[str, Any]:
        """The probe's PutObject arguments: what a bucket policy may insist on (the
        encryption, the ACL) or needs a permission of its own (``s3:PutObjectTagging``),
        so the probe fails where the objects would. Not the storage class: a probe
        deleted at once would still be billed a class's minimum duration."""
        args = self.sse_args()
        for name, value in (
            ("ACL", self.acl),
            ("Tagging", self.tagging() if self.tags else None),
            ("ChecksumAlgorithm", self.checksum_algorithm),
        ):
            if value is not None:
                args[name] = value
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


def _url(options: Options, key: str) -> str | None:
    value = options.string(key)
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise options.error(key, f"expected an http(s):// URL, got {value!r}")
    return value


def _role(options: Options, endpoint_url: str | None) -> dict[str, Any]:
    """``role_arn`` and the keys that only go with it, as :class:`S3Settings` fields."""
    role_arn = options.string("role_arn")
    if role_arn is None:
        for key in ("external_id", "role_session_name", "role_duration", "sts_endpoint_url"):
            if key in options:
                raise options.error(key, "only valid with role_arn")
        return {}
    if not _ROLE_ARN.match(role_arn):
        raise options.error(
            "role_arn",
            f"expected a role ARN such as arn:aws:iam::111122223333:role/siem-writer, "
            f"got {role_arn!r}",
        )
    # Not secret (AWS says so), but only what it is, never its value, goes into a message:
    # it is still the one thing that tells this customer's trust from another's.
    external_id = options.string("external_id")
    if external_id is not None and not _EXTERNAL_ID.match(external_id):
        raise options.error(
            "external_id",
            "must be 2-1224 letters, digits or any of + = , . @ : / - _",
        )
    session_name = options.string("role_session_name")
    if session_name is None:
        # Seen by the customer in CloudTrail: which of the provider's integrations it was.
        session_name = _SESSION_CHARS.sub("-", f"siem-plugins-{options.integration or 'sink'}")
        session_name = session_name[:64]
    elif not _SESSION_NAME.match(session_name):
        raise options.error(
            "role_session_name",
            f"must be 2-64 letters, digits or any of + = , . @ - _, got {session_name!r}",
        )
    duration = options.raw("role_duration", DEFAULT_ROLE_DURATION)
    seconds = parse_duration(duration, options, "role_duration", maximum=None)
    if not MIN_ROLE_DURATION <= seconds <= MAX_ROLE_DURATION or seconds != int(seconds):
        raise options.error(
            "role_duration",
            f"must be whole seconds from {MIN_ROLE_DURATION} (15m) to {MAX_ROLE_DURATION} "
            f"(12h), got {options.got('role_duration', duration)}",
        )
    # moto's server, MinIO and the like answer STS at their S3 address.
    sts_endpoint_url = _url(options, "sts_endpoint_url") or endpoint_url
    return {
        "role_arn": role_arn,
        "external_id": external_id,
        "role_session_name": session_name,
        "role_duration": int(seconds),
        "sts_endpoint_url": sts_endpoint_url,
    }


def _tags(options: Options) -> dict[str, str]:
    """``tags``, checked against S3's limits here: S3 would refuse the first upload."""
    if "tags" not in options:
        return {}
    table = options.table("tags")
    if len(table) > MAX_TAGS:
        raise options.error("tags", f"at most {MAX_TAGS} tags, got {len(table)}")
    tags: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str):
            raise options.error("tags", f"tag {key!r}: expected a string, got {kind_of(value)}")
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise options.error("tags", f"tag {key[:40]!r}: a key is 1-{MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise options.error(
                "tags", f"tag {key!r}: a value is at most {MAX_TAG_VALUE} characters"
            )
        if key.lower().startswith("aws:"):
            raise options.error("tags", f"tag {key!r}: the aws: prefix is reserved by AWS")
        for text in (key, value):
            if not _TAG_TEXT.match(text):
                raise options.error(
                    "tags",
                    f"tag {key!r}: S3 allows only letters, digits, spaces and + - = . _ : / @",
                )
        tags[key] = value
    return tags
