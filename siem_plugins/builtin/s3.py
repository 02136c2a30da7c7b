"""The built-in ``s3`` sink: objects streamed to S3 (or an S3-compatible store).

Objects are streamed with smart_open's multipart writer, so memory stays bounded by
``part_size`` however large an object gets. Every object, even an empty one, carries the
same content type, encoding, user metadata and server-side encryption.

All or nothing: a committed object is complete; an aborted or failed one leaves no
object and no open multipart upload behind (an open upload is invisible but billed).
A request S3 carried out but whose reply was lost can still start an upload the sink
never hears of (botocore's retry of CreateMultipartUpload starts another), so after every
object the sink also aborts whatever is still open for its key, and now and then it
sweeps old unfinished uploads of its own key shape (``abandoned_upload_age``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from siem_plugins import __version__, hookimpl
from siem_plugins.config import parse_duration
from siem_plugins.keys import parse_object_key
from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter, SinkBase, SinkSpec
from siem_plugins.options import MAX_TIMEOUT_S, Options, Secret

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_ATTEMPTS = 8
SSE_CHOICES = ("AES256", "aws:kms")
RETRY_MODES = ("standard", "adaptive")
DEFAULT_ABANDONED_UPLOAD_AGE = 3600.0

#: Failures that mean S3 could not be reached at all: looking for leftovers would only
#: fail the same way, after another round of retries (the sweep looks later).
UNREACHABLE_CODES = frozenset({"EndpointConnection", "ConnectTimeout"})

#: S3 error codes retrying cannot fix: the configuration or the account must change.
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
        "NoCredentials",
        "PartialCredentials",
        "ProfileNotFound",
        "KMS.NotFoundException",
        "KMS.DisabledException",
    }
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


class SinkError(RuntimeError):
    """An S3 request failed. The message names the object and the S3 error code.

    ``permanent`` is true when retrying cannot help (bad credentials, missing bucket,
    access denied), so callers can stop instead of backing off.
    """

    def __init__(
        self,
        message: str,
        *,
        location: str,
        code: str,
        permanent: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.location = location
        self.code = code
        self.permanent = permanent
        self.status = status


def _error_code(exc: BaseException) -> tuple[str, str, int | None]:
    """``(code, message, http status)`` of a botocore/smart_open failure."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or status or "Unknown")
        # HEAD responses have no body, so S3 reports only the status as the code.
        code = {"403": "AccessDenied", "404": "NotFound"}.get(code, code)
        return code, str(error.get("Message") or exc), status
    name = type(exc).__name__
    if name.endswith("Error") and name not in ("OSError", "ValueError"):
        name = name[: -len("Error")]
    return name, str(exc), None


def to_sink_error(
    exc: BaseException, location: str, *, secret: str | None = None, doing: str = ""
) -> SinkError:
    """``exc`` as a :class:`SinkError` about ``location`` (a ``SinkError`` is kept)."""
    if isinstance(exc, SinkError):
        return exc
    # smart_open reports a failed CreateMultipartUpload as a ValueError around the
    # ClientError; the S3 error code is what the caller needs.
    cause = exc.__cause__
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ValueError) and isinstance(cause, ClientError | BotoCoreError):
        exc = cause
    code, message, status = _error_code(exc)
    text = f"{location}: {doing + ': ' if doing else ''}{code}: {message}"
    if secret and len(secret) >= 8:
        # Defence in depth: no S3 error is known to echo the secret, but a proxy might.
        # (A very short "secret" would mangle ordinary words; real ones are 40 chars.)
        text = text.replace(secret, "***")
    return SinkError(
        text, location=location, code=code, permanent=code in PERMANENT_CODES, status=status
    )


class _TranslatingClient:
    """Hands smart_open a client whose failures are already :class:`SinkError`.

    smart_open retries ``EndpointConnectionError`` and ``NoSuchUpload`` itself, six times
    with ten-second sleeps, on top of botocore's own retries; and it hides the S3 error
    code of a failed CreateMultipartUpload in a ValueError. Raising SinkError (which
    smart_open does not catch) leaves retrying to botocore's configured policy alone.
    """

    def __init__(self, client: S3Client, location: str, secret: str | None) -> None:
        self._client = client
        self._location = location
        self._secret = secret

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if not callable(method):
            return method  # type: ignore[no-any-return]

        def call(*args: Any, **kwargs: Any) -> Any:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                return method(*args, **kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise to_sink_error(exc, self._location, secret=self._secret) from exc

        return call

    def __repr__(self) -> str:
        return f"<S3 client for {self._location}>"


# --------------------------------------------------------------------------- settings


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
        bucket = options.string("bucket", required=True)
        if bucket.startswith("s3://") or "/" in bucket:
            raise options.error(
                "bucket", f"expected a bucket name, got {bucket!r}; put the folder in 'prefix'"
            )
        if not _BUCKET.match(bucket):
            raise options.error("bucket", f"not a valid bucket name: {bucket!r}")

        prefix = options.string("prefix", "")
        if prefix.startswith("/") or ".." in prefix or _CONTROL.search(prefix):
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
        args: dict[str, Any] = {}
        if self.sse is not None:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id is not None:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


_loader_lock = threading.Lock()
_loader: Any = None


def _shared_loader() -> Any:
    """One botocore data loader for every sink: parsing the S3 model costs ~0.2 s per
    fresh session, and a config may build many sinks."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


def make_client(settings: S3Settings) -> S3Client:
    """An S3 client for ``settings``. Local only: credentials resolve on first use."""
    import botocore.session
    from botocore.config import Config

    # botocore directly rather than boto3.session.Session: boto3 appends its data path
    # to the (shared) loader on every session, and resources are not needed here.
    session = botocore.session.Session(profile=settings.profile)
    session.register_component("data_loader", _shared_loader())
    config: dict[str, Any] = {
        # total_max_attempts counts the first try, as max_attempts does in ~/.aws/config;
        # botocore's own "max_attempts" key would add one more.
        "retries": {"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "user_agent_extra": f"siem-plugins/{__version__}",
    }
    if settings.endpoint_url is not None:
        # S3-compatible stores rarely do virtual-host buckets, and many reject the
        # CRC checksums boto3 >= 1.36 sends by default.
        config["s3"] = {"addressing_style": "path"}
        config["request_checksum_calculation"] = "when_required"
        config["response_checksum_validation"] = "when_required"
    secret = settings.secret_access_key
    token = settings.session_token
    client = session.create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=secret.reveal() if secret is not None else None,
        aws_session_token=token.reveal() if token is not None else None,
        config=Config(**config),
    )
    return cast("S3Client", client)


# --------------------------------------------------------------------------- sink


class S3Sink(SinkBase):
    """Writes objects to ``s3://bucket/prefix<key>``."""

    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        self.settings = settings
        self.client: S3Client = client if client is not None else make_client(settings)
        self._list_uploads = True  # until the policy turns out not to allow it
        self._sweep_lock = threading.Lock()
        # Per account folder: the extensions this sink has written there, and when
        # (time.monotonic) it last swept the folder.
        self._extensions: dict[str, set[str]] = {}
        self._swept: dict[str, float] = {}

    @classmethod
    def from_options(cls, options: Options) -> S3Sink:
        settings = S3Settings.from_options(options)
        from botocore.exceptions import BotoCoreError

        try:
            return cls(settings)
        except BotoCoreError as exc:  # e.g. ProfileNotFound, a bad region name
            key = (
                "profile"
                if type(exc).__name__ == "ProfileNotFound"
                else ("region" if "region" in str(exc).lower() else None)
            )
            raise options.error(key, str(exc)) from exc
        except ValueError as exc:  # botocore's "Invalid endpoint"
            raise options.error("endpoint_url", str(exc)) from exc

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    def identity(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        # The same bucket name on another S3-compatible service is another place.
        return f"{where} at {self.settings.endpoint_url}" if self.settings.endpoint_url else where

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        if not key or key.startswith("/") or _CONTROL.search(key):
            raise ValueError(f"invalid object key {key!r}")
        shape = parse_object_key(key)
        if shape is not None:
            with self._sweep_lock:
                self._extensions.setdefault(shape[0], set()).add(shape[1])
        self.abort_stale_uploads(key)
        try:
            return S3ObjectWriter(self, key, meta)
        except SinkError as exc:
            # Attempts whose replies were lost may each have started an upload.
            self._object_done(key, exc)
            raise

    def abort_stale_uploads(self, key: str, *, why: str = "left by an earlier run") -> int:
        """Abort every unfinished multipart upload of exactly ``key``; returns how many.

        One writer per key is the contract, so whenever this sink is not writing ``key``,
        any upload still open for it is abandoned: at :meth:`open`, one a killed process
        could not abort; after an object is committed or has failed, one a retried
        ``CreateMultipartUpload`` started when the reply to an earlier attempt was lost.
        ``why`` goes into the log line. Best effort: without
        ``s3:ListBucketMultipartUploads`` it logs once and stops trying.
        """
        object_key = self.prefix + key
        location = self.location(key)
        uploads = self._open_uploads(object_key, location)
        aborted = sum(
            self._abort(upload["Key"], upload["UploadId"], location)
            for upload in uploads
            if upload.get("Key") == object_key  # not a longer key that merely starts with it
        )
        if aborted:
            log.info("%s: aborted %d unfinished multipart upload(s) %s", location, aborted, why)
        return aborted

    def sweep_abandoned_uploads(self, account: str) -> int:
        """Abort this sink's old unfinished uploads in ``account``'s folder; returns how many.

        Only uploads whose key has the shipper's shape (:func:`siem_plugins.keys.object_key`)
        with an extension this sink has written there, and that were initiated more than
        ``abandoned_upload_age`` ago: another integration's format under the same prefix,
        foreign keys and uploads that may still be in progress are left alone. This finds
        what the clean-up after each object could not: uploads of killed runs whose key is
        never written again, and leftovers of a look that failed.
        """
        with self._sweep_lock:
            extensions = set(self._extensions.get(account, ()))
        folder = f"{self.prefix}{account}/"
        age = self.settings.abandoned_upload_age
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        aborted = 0
        for upload in self._open_uploads(folder, f"s3://{self.bucket}/{folder}"):
            full_key = upload.get("Key", "")
            initiated = upload.get("Initiated")
            # Listed by the folder's prefix, so a key of the shape is in this account.
            shape = parse_object_key(full_key[len(self.prefix) :])
            if shape is None or shape[1] not in extensions:
                continue
            if initiated is None or initiated > cutoff:
                continue  # may still be in progress (another host of a fleet, a slow upload)
            location = f"s3://{self.bucket}/{full_key}"
            if self._abort(full_key, upload["UploadId"], location):
                aborted += 1
                log.warning(
                    "%s: aborted an unfinished multipart upload initiated %s, more than "
                    "abandoned_upload_age = %s ago: left by a failed or killed run",
                    location,
                    initiated.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                    _duration(age),
                )
        return aborted

    def _object_done(self, key: str, error: SinkError | None = None) -> None:
        """After an object was committed or has failed: abort what is left open for its
        key and, at most once per ``abandoned_upload_age``, sweep its account folder."""
        if error is not None and error.code in UNREACHABLE_CODES:
            return
        self.abort_stale_uploads(key, why="left by failed requests")
        shape = parse_object_key(key)
        if shape is None:
            return
        account = shape[0]
        now = time.monotonic()
        with self._sweep_lock:
            last = self._swept.get(account)
            if last is not None and now - last < self.settings.abandoned_upload_age:
                return
            # Marked before the sweep: a failing one is not retried for every object.
            self._swept[account] = now
        self.sweep_abandoned_uploads(account)

    def _open_uploads(self, prefix: str, location: str) -> list[MultipartUploadTypeDef]:
        """Every unfinished upload whose key starts with ``prefix`` (all pages); empty if
        they cannot be listed (see :meth:`abort_stale_uploads`)."""
        if not self._list_uploads:
            return []
        uploads: list[MultipartUploadTypeDef] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                uploads.extend(page.get("Uploads", []))
        except Exception as exc:  # best effort: see abort_stale_uploads
            error = to_sink_error(
                exc, location, secret=self._secret(), doing="could not look for unfinished uploads"
            )
            if error.code == "AccessDenied":
                self._list_uploads = False
                log.warning(
                    "%s; unfinished uploads of killed runs and failed requests will be left "
                    "to a bucket lifecycle rule",
                    error,
                )
            else:
                log.debug("%s", error)
            return []
        return uploads

    def _abort(self, full_key: str, upload_id: str, location: str) -> bool:
        """Abort one upload; a failure is logged, not raised."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except Exception as exc:  # best effort: see abort_stale_uploads
            log.warning(
                "%s",
                to_sink_error(
                    exc,
                    location,
                    secret=self._secret(),
                    doing="could not abort an unfinished upload",
                ),
            )
            return False
        return True

    def probe(self) -> None:
        """Put a tiny object and delete it again.

        Failing to delete it only logs a warning: the sink itself never deletes, so a
        least-privilege policy without ``s3:DeleteObject`` is fine for shipping.
        """
        key = f"{self.prefix}.siem-plugins-probe-{secrets.token_hex(8)}"
        location = f"s3://{self.bucket}/{key}"
        secret = self._secret()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=b"siem-plugins probe\n",
                ContentType="text/plain",
                **self.settings.sse_args(),
            )
        except Exception as exc:
            raise to_sink_error(exc, location, secret=secret, doing="probe write failed") from exc
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # reported, not fatal: see the docstring
            log.warning(
                "%s",
                to_sink_error(
                    exc, location, secret=secret, doing="could not delete the probe object"
                ),
            )

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def _secret(self) -> str | None:
        s = self.settings.secret_access_key
        return s.reveal() if s is not None else None

    def __repr__(self) -> str:
        return f"S3Sink({self.describe()!r})"


def _duration(seconds: float) -> str:
    """``3600`` as ``1h``, ``90`` as ``90s``: as a config file would say it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class S3ObjectWriter(ObjectWriter):
    """One object being streamed to S3 through smart_open's multipart writer."""

    def __init__(self, sink: S3Sink, key: str, meta: ObjectMeta) -> None:
        import smart_open.s3

        self.key = key
        self.meta = meta
        self.bucket = sink.bucket
        self.object_key = sink.prefix + key
        self.location = sink.location(key)
        self.size = 0
        self._sink = sink
        self._done = False  # the clean-up after the object ran (see _finish)
        self._client = sink.client
        self._secret = sink._secret()
        self._lock = threading.Lock()
        self._state = "open"  # -> committed | aborted | failed
        # Double buffering: bytes gather in _pending while the previous part_size of them
        # is uploaded by one background thread (smart_open uploads a part inside write()),
        # so reading, formatting and compressing overlap with the network. At most two
        # parts are held: memory stays bounded by the part size.
        self._part_size = sink.settings.part_size
        self._pending = bytearray()
        self._handed = 0  # bytes given to smart_open
        self._uploader: ThreadPoolExecutor | None = None
        self._in_flight: Future[int] | None = None
        args = sink.settings.object_args(meta)
        try:
            self._writer = smart_open.s3.open(
                self.bucket,
                self.object_key,
                "wb",
                client=cast(
                    "S3Client", _TranslatingClient(self._client, self.location, self._secret)
                ),
                min_part_size=sink.settings.part_size,
                # put_object too: for an empty body smart_open aborts the multipart
                # upload and PUTs an empty object, which would otherwise lose all of these.
                client_kwargs={
                    "S3.Client.create_multipart_upload": args,
                    "S3.Client.put_object": args,
                },
            )
        except Exception as exc:
            raise to_sink_error(
                exc, self.location, secret=self._secret, doing="could not start the upload"
            ) from exc
        # Kept now: if close() fails halfway, this id is the only handle on the upload.
        self.upload_id: str | None = getattr(self._writer, "_upload_id", None)
        if self.upload_id is None:
            log.warning(
                "%s: smart_open exposes no upload id; a failed commit may leave an "
                "incomplete multipart upload behind",
                self.location,
            )
        log.debug("%s: started multipart upload", self.location)

    def write(self, data: bytes) -> None:
        if self._state != "open":
            raise SinkError(
                f"{self.location}: write after the object was {self._state}",
                location=self.location,
                code="WriterClosed",
            )
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= self._part_size:
            self._wait_for_upload()
            self._hand_over()

    def _hand_over(self) -> None:
        """Give smart_open the bytes gathered (>= a part); a part upload starts in the
        background.

        smart_open copies what it is given into its part buffer and uploads when that
        buffer reaches the part size. Here the copy is made in this thread, up to one byte
        short of a part, and ``_pending`` is freed; the upload thread gets only the small
        rest, which completes the part and sends it. So while a part is on the wire only
        smart_open's copy of it is held, beside the next part filling up in ``_pending``:
        two part buffers, both allocated by this thread (buffers allocated by a second
        thread would live in another malloc arena and keep its pages resident). If
        smart_open buffered differently, only the memory saving would be lost.
        """
        chunk, self._pending = self._pending, bytearray()
        short = self._part_size - self._handed % self._part_size - 1
        self._handed += len(chunk)
        view = memoryview(chunk)
        try:
            self._writer.write(view[:short])
        except Exception as exc:
            self._state = "failed"
            raise to_sink_error(
                exc, self.location, secret=self._secret, doing="upload failed"
            ) from exc
        rest = bytes(view[short:])
        del view, chunk
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(1, thread_name_prefix="siem-s3-upload")
        self._in_flight = self._uploader.submit(self._writer.write, rest)

    def _wait_for_upload(self) -> None:
        """Wait for the part upload in flight; if it failed, the object is failed."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        try:
            future.result()
        except Exception as exc:
            # A part upload failed halfway through a chunk: the bytes smart_open holds no
            # longer match what was written, so the object can only be abandoned.
            self._state = "failed"
            raise to_sink_error(
                exc, self.location, secret=self._secret, doing="upload failed"
            ) from exc

    def _stop_uploader(self) -> None:
        """Let an upload in flight finish (a request cannot be recalled) and stop the
        thread; its outcome no longer matters."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            with contextlib.suppress(BaseException):
                future.result()
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
        self._pending = bytearray()

    def commit(self) -> ObjectReceipt:
        with self._lock:
            if self._state != "open":
                if self._state == "failed":
                    self._stop_uploader()
                    self._abort_upload()
                    self._finish()
                raise SinkError(
                    f"{self.location}: cannot commit: the object was {self._state}",
                    location=self.location,
                    code="WriterClosed",
                )
            self._state = "committing"
            try:
                self._wait_for_upload()
                if self._pending:
                    self._writer.write(self._pending)
                    self._pending = bytearray()
                self._writer.close()
            except BaseException as exc:
                self._stop_uploader()
                self._state = "failed"
                # smart_open leaves the multipart upload open when the last part or
                # CompleteMultipartUpload fails inside close().
                self._abort_upload()
                if isinstance(exc, Exception):
                    error = to_sink_error(
                        exc, self.location, secret=self._secret, doing="commit failed"
                    )
                    self._finish(error)
                    raise error from exc
                raise
            self._state = "committed"
            self._stop_uploader()
            self._finish()
        log.debug("%s: committed %d bytes", self.location, self.size)
        return ObjectReceipt(key=self.key, location=self.location, size=self.size, meta=self.meta)

    def abort(self) -> None:
        """Abandon the object. Idempotent, and never raises: it runs while handling
        another error, which must not be masked."""
        with self._lock:
            if self._state in ("committed", "aborted"):
                return
            self._state = "aborted"
            self._stop_uploader()
            self._abort_upload()
            self._finish()
        log.debug("%s: aborted", self.location)

    def _finish(self, error: SinkError | None = None) -> None:
        """Once per object, when it is committed or given up: the sink aborts what is
        left open for the key (uploads started by attempts whose replies were lost).
        Never raises: it may run while another error is being handled."""
        if self._done:
            return
        self._done = True
        try:
            self._sink._object_done(self.key, error)
        except Exception:  # best effort: the object's own outcome must not be masked
            log.debug("%s: clean-up after the object failed", self.location, exc_info=True)

    def _abort_upload(self) -> None:
        """Abort the multipart upload by the id kept at open, logging any failure."""
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.object_key, UploadId=upload_id
                )
            except Exception as exc:  # best effort: see abort()
                log.warning(
                    "%s; an incomplete multipart upload may remain until a bucket "
                    "lifecycle rule removes it",
                    to_sink_error(
                        exc,
                        self.location,
                        secret=self._secret,
                        doing="could not abort the multipart upload",
                    ),
                )
        # Disarm smart_open's writer: io.IOBase.__del__ calls close(), which would try to
        # complete the upload (publishing a partial object) when it is garbage collected.
        writer = getattr(self, "_writer", None)
        if writer is not None and hasattr(writer, "_upload_id"):
            writer._upload_id = None

    def __del__(self) -> None:
        # A writer dropped without commit() or abort() must not publish on collection.
        # No listing from a finalizer (the interpreter may be shutting down): the sweep
        # finds what is left.
        if getattr(self, "_state", None) in ("open", "failed"):
            self._done = True
            # The interpreter may be shutting down: nothing useful to do with an error.
            with contextlib.suppress(Exception):
                self.abort()

    def __repr__(self) -> str:
        return f"S3ObjectWriter({self.location!r}, {self._state})"


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    return [
        SinkSpec(
            name="s3",
            factory=S3Sink.from_options,
            description="objects in an S3 bucket (bucket = ..., prefix = ...), streamed in "
            "multipart uploads; any S3-compatible store via endpoint_url",
            section="s3",
        )
    ]
