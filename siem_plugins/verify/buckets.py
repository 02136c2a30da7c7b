"""How ``verify`` reads a sink's objects: :class:`S3Bucket` (listing, one HEAD per
object, GET for ``--deep``, open multipart uploads) and :class:`LocalFolder` (files)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from siem_plugins.builtin.local import LocalSink
from siem_plugins.builtin.s3 import S3Sink, to_sink_error
from siem_plugins.compress import encoding_of

from .content import CHUNK
from .report import VerifyError

if TYPE_CHECKING:
    from siem_plugins.runtime import Integration


@dataclass(frozen=True)
class Stored:
    """One object as the bucket shows it. ``metadata`` is ``None`` when the sink keeps
    none (``local``); ``encoding`` is its ``Content-Encoding``."""

    key: str
    location: str
    metadata: Mapping[str, str] | None
    encoding: str | None


@dataclass(frozen=True)
class Leftover:
    """Something unfinished in the account's folder: an open multipart upload, or a
    ``local`` sink's temporary file."""

    key: str
    location: str
    what: str


class Bucket(Protocol):
    """What ``verify`` reads a sink's objects through. Keys are relative to the sink's
    own prefix, as the pipeline names them."""

    keeps_metadata: bool

    def location(self, key: str) -> str: ...
    def keys(self, folder: str) -> list[str]: ...
    def head(self, key: str) -> Stored | None: ...
    def read(self, key: str) -> Iterator[bytes]: ...
    def leftovers(self, folder: str) -> list[Leftover]: ...


class S3Bucket:
    """An ``s3`` sink's objects: ``ListObjectsV2``, one ``HEAD`` per object, ``GET``
    for ``--deep``, and ``ListMultipartUploads``, through the sink's own client."""

    keeps_metadata = True

    def __init__(self, sink: S3Sink) -> None:
        self.client = sink.client
        self.bucket = sink.bucket
        self.prefix = sink.prefix
        secret = sink.settings.secret_access_key
        self._secret = secret.reveal() if secret is not None else None

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _error(self, exc: Exception, key: str, doing: str) -> VerifyError:
        error = to_sink_error(exc, self.location(key), secret=self._secret, doing=doing)
        return VerifyError(str(error))

    def keys(self, folder: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + folder):
                keys.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", []))
        except Exception as exc:
            raise self._error(exc, folder, "could not list the objects") from exc
        return keys

    def head(self, key: str) -> Stored | None:
        from botocore.exceptions import ClientError

        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None  # deleted since it was listed: it is not there
            raise self._error(exc, key, "could not read the object's metadata") from exc
        except Exception as exc:
            raise self._error(exc, key, "could not read the object's metadata") from exc
        return Stored(
            key, self.location(key), reply.get("Metadata", {}), reply.get("ContentEncoding")
        )

    def read(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        except Exception as exc:
            raise self._error(exc, key, "could not read the object") from exc
        try:
            yield from body.iter_chunks(CHUNK)
        except Exception as exc:
            raise self._error(exc, key, "could not read the object") from exc
        finally:
            body.close()

    def leftovers(self, folder: str) -> list[Leftover]:
        out: list[Leftover] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + folder):
                for upload in page.get("Uploads", []):
                    key = upload.get("Key", "")[len(self.prefix) :]
                    initiated = upload.get("Initiated")
                    when = f" initiated {initiated:%Y-%m-%d %H:%M:%S %Z}" if initiated else ""
                    out.append(Leftover(key, self.location(key), f"open multipart upload{when}"))
        except Exception as exc:
            raise self._error(exc, folder, "could not list the multipart uploads") from exc
        return out


class LocalFolder:
    """A ``local`` sink's objects: files under its folder. They carry no metadata, so
    ranges come from the keys and counts only from ``--deep``."""

    keeps_metadata = False

    def __init__(self, sink: LocalSink) -> None:
        self.base = sink.root / sink.prefix

    def location(self, key: str) -> str:
        return str(self.base / key)

    def _files(self, folder: str) -> Iterator[Path]:
        top = self.base / folder
        if top.is_dir():
            yield from (p for p in sorted(top.rglob("*")) if p.is_file())

    def keys(self, folder: str) -> list[str]:
        return [
            p.relative_to(self.base).as_posix()
            for p in self._files(folder)
            if not p.name.startswith(".")
        ]

    def head(self, key: str) -> Stored | None:
        path = self.base / key
        if not path.is_file():
            return None
        return Stored(key, str(path), None, encoding_of(key))

    def read(self, key: str) -> Iterator[bytes]:
        try:
            with open(self.base / key, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except OSError as exc:
            raise VerifyError(f"{self.location(key)}: could not read the object: {exc}") from exc

    def leftovers(self, folder: str) -> list[Leftover]:
        out = []
        for path in self._files(folder):
            # The sink's temporary files are ".NAME.RANDOM.tmp" beside NAME.
            name, dot, _ = path.name.removeprefix(".").removesuffix(".tmp").rpartition(".")
            if path.name.startswith(".") and path.name.endswith(".tmp") and dot:
                key = path.with_name(name).relative_to(self.base).as_posix()
                out.append(Leftover(key, str(path), "temporary file of an unfinished object"))
        return out


def bucket_of(integ: Integration) -> Bucket | None:
    """How ``verify`` reads the integration's sink, or ``None`` for a sink it cannot
    read (a plugin's, a stream)."""
    if isinstance(integ.sink, S3Sink):
        return S3Bucket(integ.sink)
    if isinstance(integ.sink, LocalSink):
        return LocalFolder(integ.sink)
    return None
