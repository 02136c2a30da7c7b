"""An object's content as a stream: decompressed as its ``Content-Encoding`` says, and
compared from its front without holding more than a chunk beyond what is compared."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from isal import isal_zlib

#: Bytes asked of the bucket, and given out by the decompressor, at a time.
CHUNK = 1 << 20
_GZIP_WBITS = 16 + 15
#: Compressed bytes given to the zstd decompressor at a time (see _zstd).
_ZSTD_SLICE = 16 * 1024


class Unreadable(Exception):
    """An object's bytes are not what its encoding says (not gzip or zstd, truncated)."""


def decoded(chunks: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    """An object's content from its stored bytes, at most :data:`CHUNK` at a time."""
    if not encoding:
        yield from chunks
        return
    if encoding == "zstd":
        yield from _zstd(chunks)
        return
    if encoding != "gzip":
        raise Unreadable(f"unknown Content-Encoding {encoding!r}")
    d = isal_zlib.decompressobj(wbits=_GZIP_WBITS)
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = d.decompress(data, CHUNK)
            except Exception as exc:  # isal's IsalError: not gzip, or corrupt
                raise Unreadable(f"not valid gzip: {exc}") from None
            if out:
                yield out
            if d.eof:
                if d.unused_data:
                    raise Unreadable("bytes after the end of the gzip stream")
                data = b""
            else:
                data = d.unconsumed_tail
    if not d.eof:
        raise Unreadable("the gzip stream is truncated")


def _zstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """One zstd frame's content (the sink writes one per object), its checksum checked
    by libzstd at the frame's end.

    zstandard's decompressor object is the reader that tells a truncated frame (``eof``
    stays false) and bytes after it (``unused_data``) apart; its stream reader passes
    both silently. It cannot bound its output, so it gets :data:`_ZSTD_SLICE` bytes at a
    time: what that expands to (for the shipper's events, well under :data:`CHUNK`) is
    the most held beyond the chunk being compared."""
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _ZSTD_SLICE):
            if d.eof:
                raise Unreadable("bytes after the end of the zstd frame")
            try:
                out = d.decompress(view[start : start + _ZSTD_SLICE])
            except zstandard.ZstdError as exc:
                raise Unreadable(f"not valid zstd: {exc}") from None
            for at in range(0, len(out), CHUNK):
                yield out[at : at + CHUNK]
            if d.eof and d.unused_data:
                raise Unreadable("bytes after the end of the zstd frame")
    if not d.eof:
        raise Unreadable("the zstd stream is truncated")


@contextlib.contextmanager
def closing(batches: Iterator[Any]) -> Iterator[Iterator[Any]]:
    """``batches``, closed when the block ends (a source's generator holds a database
    cursor until then, and a comparison stops at the first difference)."""
    try:
        yield batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class Reader:
    """The front of a stream of bytes: compare and consume, never holding much more
    than what is being compared (a chunk at most beyond it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._end = False
        self.offset = 0  # bytes consumed
        self.lines = 0  # lines consumed

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self._end:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._end = True
            else:
                self._buf += chunk

    def startswith(self, data: bytes) -> bool:
        self._fill(len(data))
        return self._buf.startswith(data)

    def common(self, data: bytes) -> tuple[int, bool]:
        """How many bytes of ``data`` the stream starts with, and whether the stream
        ends there."""
        self._fill(len(data))
        n = min(len(data), len(self._buf))
        lo = 0
        while lo < n and self._buf[lo] == data[lo]:
            lo += 1
        return lo, lo == len(self._buf) and self._end

    def consume(self, n: int) -> None:
        self._fill(n)
        self.lines += self._buf.count(b"\n", 0, n)
        del self._buf[:n]
        self.offset += n

    def at_end(self) -> bool:
        self._fill(1)
        return not self._buf

    def rest(self) -> int:
        """Consume everything left; how many bytes that was."""
        n = len(self._buf)
        self._buf.clear()
        for chunk in self._chunks:
            n += len(chunk)
        self._end = True
        return n
