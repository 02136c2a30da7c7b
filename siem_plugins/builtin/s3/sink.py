"""The built-in ``s3`` sink: :class:`S3Sink` opens one :class:`S3ObjectWriter` per object,
probes the bucket, and cleans up unfinished multipart uploads.

All or nothing: a committed object is complete; an aborted or failed one leaves no
object and no open multipart upload behind (an open upload is invisible but billed).
A request S3 carried out but whose reply was lost can still start an upload the sink
never hears of (botocore's retry of CreateMultipartUpload starts another), so after every
object the sink also aborts whatever is still open for its key, and now and then it
sweeps old unfinished uploads of its own key shape (``abandoned_upload_age``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from siem_plugins.keys import parse_object_key
from siem_plugins.kinds import ObjectMeta, ObjectWriter, SinkBase
from siem_plugins.options import Options

from .client import make_client
from .errors import UNREACHABLE_CODES, AssumeRoleError, SinkError, to_sink_error
from .notifications import BucketNotifications
from .settings import CONTROL, S3Settings
from .writer import S3ObjectWriter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

# One logger for the whole sink: its name is in every log line and in users' filters.
log = logging.getLogger("siem_plugins.builtin.s3")


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
        """The sink ``options`` describe (see :meth:`S3Settings.from_options`). No request
        is made: credentials resolve on first use."""
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
        """Start the object at ``key``: nothing is sent for it before its first full part
        or its commit (see :class:`S3ObjectWriter`); an upload still open for the key, left
        by a killed run, is aborted first."""
        if not key or key.startswith("/") or CONTROL.search(key):
            raise ValueError(f"invalid object key {key!r}")
        shape = parse_object_key(key)
        if shape is not None:
            with self._sweep_lock:
                self._extensions.setdefault(shape[0], set()).add(shape[1])
        self.abort_stale_uploads(key)
        return S3ObjectWriter(self.client, self.settings, key, meta, when_done=self.object_done)

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

    def object_done(self, key: str, error: SinkError | None = None) -> None:
        """After an object was committed or has failed (its writer's ``when_done``): abort
        what is left open for its key and, at most once per ``abandoned_upload_age``,
        sweep its account folder. Nothing is looked at when S3 could not be reached."""
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
        except AssumeRoleError as exc:
            # Not about listing: no request can be made without the role, so the object
            # fails now, with the role's error (and listing is tried again next time).
            raise to_sink_error(exc, location) from exc
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
                **self.settings.probe_args(),
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

    def notifications(self) -> BucketNotifications:
        """The bucket's event notifications (SQS, SNS, Lambda, EventBridge): what an
        SQS-based SIEM reader depends on. Read only; raises :class:`SinkError` (code
        ``AccessDenied`` without ``s3:GetBucketNotification``)."""
        location = f"s3://{self.bucket}"
        try:
            reply = self.client.get_bucket_notification_configuration(Bucket=self.bucket)
        except Exception as exc:
            raise to_sink_error(
                exc, location, secret=self._secret(), doing="could not read its notifications"
            ) from exc
        return BucketNotifications.from_response(reply)

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
