"""One object streamed to S3: :class:`S3ObjectWriter`, which owns its upload.

The sink makes botocore's requests itself (``PutObject``, ``CreateMultipartUpload``,
``UploadPart``, ``CompleteMultipartUpload``, ``AbortMultipartUpload``) rather than go
through smart_open's multipart writer: that writer retries connection errors and
``NoSuchUpload`` on its own (six times, ten seconds apart) on top of botocore's
configured policy, hides the S3 error code of a failed ``CreateMultipartUpload`` in a
``ValueError``, keeps the upload id private (so an upload whose completion failed could
not be aborted by id), completes the upload when it is garbage collected, and starts a
multipart upload even for an object of a few bytes. None of this can be changed through
its public interface.

An object of at most ``part_size`` bytes is one ``PutObject`` at commit; nothing is sent
before. A larger one is a multipart upload: ``CreateMultipartUpload`` once the first part
is full and more bytes follow, then each part of exactly ``part_size`` bytes is uploaded
by one background thread while the next part fills, and the last (shorter) part and
``CompleteMultipartUpload`` are sent at commit. Either way every object gets the same
content type, encoding, user metadata and server-side encryption, and only ``commit``
publishes it. botocore's retry policy is the only retrying.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, cast

from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter

from .errors import SinkError, to_sink_error
from .settings import S3Settings

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# One logger for the whole sink: its name is in every log line and in users' filters.
log = logging.getLogger("siem_plugins.builtin.s3")

#: ``when_done(key, error)``: run once per object when it is committed or given up.
WhenDone = Callable[[str, SinkError | None], None]


class _PartBody(io.RawIOBase):
    """Bytes of a buffer as the seekable file botocore sends a request body from.

    botocore takes bytes or a seekable file. Bytes would mean copying every part out of
    the buffer it was gathered in, and ``io.BytesIO`` copies anything but bytes; read
    through a memoryview, botocore gets only the chunks it asks for (it hashes and sends
    a body in chunks) and can rewind for a retry. :meth:`close` lets go of the buffer.
    """

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence})")
        base = bases[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos : end])
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        with memoryview(buffer) as target:
            chunk = self._data[self._pos : self._pos + len(target)]
            target[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def as_body(self) -> IO[bytes]:
        """This file as the stubs type a request body (botocore itself asks only for
        ``read``, ``seek`` and ``tell``)."""
        return cast("IO[bytes]", self)

    def close(self) -> None:
        # The buffer may be filled again once the request is over; a view botocore might
        # still hold must not keep it from being resized or freed.
        self._data.release()
        super().close()


def _upload_part(
    client: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    number: int,
    data: memoryview,
    checksum_algorithm: str | None = None,
) -> CompletedPartTypeDef:
    """One ``UploadPart`` (in the upload thread): the writer's state is not touched here.

    With ``checksum_algorithm`` botocore sends the part's checksum and S3 checks it; the
    completed part must then carry it too, or ``CompleteMultipartUpload`` is refused."""
    body = _PartBody(data)
    extra: dict[str, Any] = {}
    if checksum_algorithm is not None:
        extra["ChecksumAlgorithm"] = checksum_algorithm
    try:
        reply = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body.as_body(),
            **extra,
        )
    finally:
        body.close()
    part: dict[str, Any] = {"ETag": reply["ETag"], "PartNumber": number}
    if checksum_algorithm is not None:
        name = f"Checksum{checksum_algorithm}"
        part[name] = reply.get(name)
    return cast("CompletedPartTypeDef", part)


class S3ObjectWriter(ObjectWriter):
    """One object being streamed to ``s3://bucket/prefix<key>`` (see the module's text).

    Memory: at most two part buffers, both allocated by the writing thread (a buffer
    allocated by another thread would live in that thread's malloc arena and keep its
    pages resident): the part being uploaded, and the next one filling. A buffer is
    handed to the upload thread, not copied, and once its part is uploaded it is filled
    again. A failure of the upload thread surfaces at the next ``write`` or at
    ``commit``; the upload is then aborted by its id.

    ``upload_id`` is set, by the writing thread, once the multipart upload is started;
    the upload thread is only ever given it. ``when_done(key, error)`` runs once, when
    the object is committed or given up (the sink's clean-up of leftovers of its key).
    """

    def __init__(
        self,
        client: S3Client,
        settings: S3Settings,
        key: str,
        meta: ObjectMeta,
        *,
        when_done: WhenDone | None = None,
    ) -> None:
        self.key = key
        self.meta = meta
        self.bucket = settings.bucket
        self.object_key = settings.prefix + key
        self.location = f"s3://{self.bucket}/{self.object_key}"
        self.size = 0
        self.upload_id: str | None = None
        self._client = client
        self._args = settings.object_args(meta)
        secret = settings.secret_access_key
        self._secret = secret.reveal() if secret is not None else None
        self._when_done = when_done
        self._part_size = settings.part_size
        self._checksum = settings.checksum_algorithm
        self._lock = threading.Lock()
        self._state = "open"  # -> committing -> committed | aborted | failed
        self._error: SinkError | None = None  # why the object failed
        self._done = False  # when_done has run (see _finish)
        # The part filling up: _buf[:_filled]. The first buffer grows as bytes come (a
        # small object never takes a whole part); later ones are part_size long.
        self._buf = bytearray()
        self._filled = 0
        self._spare: bytearray | None = None  # the last uploaded part's buffer, to refill
        self._parts: list[CompletedPartTypeDef] = []
        self._uploader: ThreadPoolExecutor | None = None
        self._in_flight: Future[CompletedPartTypeDef] | None = None
        self._in_flight_buf: bytearray | None = None

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self._state != "open":
            raise SinkError(
                f"{self.location}: write after the object was {self._state}",
                location=self.location,
                code="WriterClosed",
            )
        try:
            if self._in_flight is not None and self._in_flight.done():
                self._collect_part()  # a failed part stops the object at once
            view = memoryview(data)
            start, room = 0, self._part_size - self._filled
            # A full part goes only once more bytes follow: an object of exactly one
            # part is still a single PutObject.
            while len(view) - start > room:
                self._fill(view[start : start + room])
                start += room
                self._hand_over()
                room = self._part_size
            self._fill(view[start:])
            self.size += len(view)
        except BaseException as exc:
            error = self._give_up(exc)
            if error is exc:
                raise
            raise error from exc

    def _fill(self, chunk: memoryview) -> None:
        end = self._filled + len(chunk)
        self._buf[self._filled : end] = chunk  # appended to the first buffer, else in place
        self._filled = end

    def _hand_over(self) -> None:
        """Send the full part ``_buf`` from the upload thread and go on with an empty
        one; start the multipart upload first if this is the first part."""
        if self.upload_id is None:
            reply = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self.object_key, **self._args
            )
            self.upload_id = reply["UploadId"]
            log.debug("%s: started multipart upload", self.location)
        self._collect_part()  # at most one part in flight: memory stays at two parts
        # The object is large: the next buffer is made a whole part at once (no growing).
        spare = self._spare if self._spare is not None else bytearray(self._part_size)
        part, self._buf, self._filled, self._spare = self._buf, spare, 0, None
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(1, thread_name_prefix="siem-s3-upload")
        number = len(self._parts) + 1
        # In the pass's context: the upload thread's log lines and retries are the pass's.
        self._in_flight = self._uploader.submit(
            contextvars.copy_context().run,
            _upload_part,
            self._client,
            self.bucket,
            self.object_key,
            self.upload_id,
            number,
            memoryview(part),
            self._checksum,
        )
        self._in_flight_buf = part

    def _collect_part(self) -> None:
        """Wait for the part in flight; its buffer is then free to fill again."""
        future, self._in_flight = self._in_flight, None
        buf, self._in_flight_buf = self._in_flight_buf, None
        if future is not None:
            self._parts.append(future.result())
            self._spare = buf

    # ------------------------------------------------------------------ ending

    def commit(self) -> ObjectReceipt:
        with self._lock:
            if self._state != "open":
                if self._state == "failed":
                    self._finish()
                raise SinkError(
                    f"{self.location}: cannot commit: the object was {self._state}",
                    location=self.location,
                    code="WriterClosed",
                )
            self._state = "committing"
            try:
                if self.upload_id is None:
                    self._put_object()
                else:
                    self._complete()
            except BaseException as exc:
                error = self._give_up(exc)
                if error is exc:
                    raise
                raise error from exc
            self._state = "committed"
            self._stop_uploader()
            self._finish()
        log.debug("%s: committed %d bytes", self.location, self.size)
        return ObjectReceipt(key=self.key, location=self.location, size=self.size, meta=self.meta)

    def _put_object(self) -> None:
        """The whole object (at most one part) in one request."""
        body = _PartBody(memoryview(self._buf)[: self._filled])
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.object_key, Body=body.as_body(), **self._args
            )
        finally:
            body.close()

    def _complete(self) -> None:
        """The last part, then ``CompleteMultipartUpload``."""
        assert self.upload_id is not None
        self._collect_part()
        self._spare = None  # no part follows: the memory can go now
        self._parts.append(
            _upload_part(
                self._client,
                self.bucket,
                self.object_key,
                self.upload_id,
                len(self._parts) + 1,
                memoryview(self._buf)[: self._filled],
                self._checksum,
            )
        )
        self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.object_key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
        )

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

    def _give_up(self, exc: BaseException) -> BaseException:
        """The object failed with ``exc``: abort the upload by its id, run the clean-up,
        and return what to raise (``exc`` itself unless it must become a SinkError)."""
        self._state = "failed"
        self._stop_uploader()
        self._abort_upload()
        if not isinstance(exc, Exception):
            return exc  # KeyboardInterrupt and the like: no clean-up requests now
        error = to_sink_error(exc, self.location, secret=self._secret)
        self._error = error
        self._finish()
        return error

    def _stop_uploader(self) -> None:
        """Let a part upload in flight finish (a request cannot be recalled), stop the
        thread and let go of the buffers; the part's outcome no longer matters."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            with contextlib.suppress(BaseException):
                future.result()
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
        self._buf, self._filled, self._spare, self._in_flight_buf = bytearray(), 0, None, None

    def _abort_upload(self) -> None:
        """Abort the multipart upload by its id, if one was started; a failure is logged."""
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
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

    def _finish(self) -> None:
        """Once per object, when it is committed or given up: ``when_done`` (the sink
        aborts what is left open for the key by requests whose replies were lost).
        Never raises: it may run while another error is being handled."""
        if self._done:
            return
        self._done = True
        if self._when_done is None:
            return
        try:
            self._when_done(self.key, self._error)
        except Exception:  # best effort: the object's own outcome must not be masked
            log.debug("%s: clean-up after the object failed", self.location, exc_info=True)

    def __del__(self) -> None:
        # Dropped without commit() or abort(): nothing was published (only commit() does
        # that), but an upload this writer started is still open, and billed. No listing
        # from a finalizer (the interpreter may be shutting down): the sweep finds the rest.
        if getattr(self, "_state", None) in ("open", "failed"):
            self._done = True
            # The interpreter may be shutting down: nothing useful to do with an error.
            with contextlib.suppress(Exception):
                self.abort()

    def __repr__(self) -> str:
        return f"S3ObjectWriter({self.location!r}, {self._state})"
