"""Object compression: streaming gzip or zstd with reproducible bytes.

gzip is produced by ISA-L (``isal``): several times faster than the stdlib's zlib, whose
level-6 deflate is the first wall of the whole pipeline (~50 MB/s on a small box). The
header carries mtime 0 and no file name, so the same input always gives the same bytes
and a replayed upload writes an identical object.

zstd (``zstandard``, libzstd) makes one frame per object, single-threaded (libzstd's
multi-threaded mode makes other bytes), with the content checksum (XXH64, checked by every
reader) and without the content size, which a stream does not know up front. libzstd
gathers the input of a frame into whole blocks before compressing, so how the pipeline
cuts the bytes into calls does not change the output: the same input, in batches of any
size, gives the same bytes (tests/test_zstd.py checks it), as the delivery protocol needs.
"""

from __future__ import annotations

from typing import Protocol

from isal import isal_zlib

COMPRESSIONS = ("gzip", "zstd", "none")
#: ISA-L levels are 0-3; 1 is fast with ratios close to zlib's default.
DEFAULT_GZIP_LEVEL = 1
GZIP_LEVELS = (0, 3)
#: zstd's own default; 20-22 ("ultra") need up to 128 MiB of window per object and are
#: refused.
DEFAULT_ZSTD_LEVEL = 3
ZSTD_LEVELS = (1, 19)
#: ``compression_level``'s range for each compression.
LEVELS = {"gzip": GZIP_LEVELS, "zstd": ZSTD_LEVELS}
_GZIP_WBITS = 16 + 15
#: Each compression's file name suffix and ``Content-Encoding``.
SUFFIXES = {"gzip": ".gz", "zstd": ".zst", "none": ""}
ENCODINGS = {".gz": "gzip", ".zst": "zstd"}


class Compressor(Protocol):
    suffix: str
    content_encoding: str | None

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Gzip:
    suffix = ".gz"
    content_encoding: str | None = "gzip"

    def __init__(self, level: int = DEFAULT_GZIP_LEVEL) -> None:
        self._obj = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._obj.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._obj.flush()
        return out


class Zstd:
    suffix = ".zst"
    content_encoding: str | None = "zstd"

    def __init__(self, level: int = DEFAULT_ZSTD_LEVEL) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=False, threads=0
        ).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class Identity:
    suffix = ""
    content_encoding: str | None = None

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def compressor(kind: str, level: int | None = None) -> Compressor:
    if kind == "gzip":
        return Gzip(DEFAULT_GZIP_LEVEL if level is None else level)
    if kind == "zstd":
        return Zstd(DEFAULT_ZSTD_LEVEL if level is None else level)
    if kind == "none":
        return Identity()
    raise ValueError(f"unknown compression {kind!r}; choose one of: {', '.join(COMPRESSIONS)}")


def suffix(kind: str) -> str:
    return SUFFIXES.get(kind, "")


def encoding_of(key: str) -> str | None:
    """The ``Content-Encoding`` an object's key says it has (``.gz``: gzip, ``.zst``:
    zstd), for stores that keep no metadata (the ``local`` sink's files)."""
    for ext, encoding in ENCODINGS.items():
        if key.endswith(ext):
            return encoding
    return None
