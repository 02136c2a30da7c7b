"""NDJSON ingest: validate line by line, keep every good record, locate every bad one.

A rejected line is reported as ``file:line: field: reason`` and, with ``--rejects``,
copied verbatim to a rejects file so it can be fixed and fed again. Empty lines are
skipped. Lines longer than :data:`~siem_plugins.events.MAX_RECORD_BYTES` are rejected
without being held in memory whole. A UTF-8 byte-order mark at the start of the input is
skipped.

An input is read once, in blocks, and hashed as it is read: the store records each file
it stored (account, SHA-256 of the bytes, ids) in the same transaction as its events, so
storing the same file twice is noticed (:class:`~siem_plugins.storage.IngestRecord`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from siem_plugins.events import MAX_RECORD_BYTES, Canonical, EventError, parse_line

#: Bytes read (and hashed) at a time.
BLOCK_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
# The longest line kept whole: the record, a CR before its LF, one spare byte so that a
# line of MAX_RECORD_BYTES + 1 is still handed to the parser (which names its size).
_LINE_LIMIT = MAX_RECORD_BYTES + 2


@dataclass(frozen=True)
class Rejection:
    """One line that was not stored: where, which field, why, and its bytes."""

    file: str
    line: int
    field: str | None
    reason: str
    raw: bytes

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class InputError(Exception):
    """The input could not be read (after it was opened)."""


class NdjsonInput:
    """One NDJSON stream, read once: iterating yields its valid records and reports the
    others to ``on_reject``; afterwards :attr:`lines` and :attr:`sha256` describe it.
    Implements :class:`~siem_plugins.storage.Origin`.

    Unexpected errors while parsing a line (a bug, a parser's limit) reject that line,
    naming the error; they never end the file.
    """

    def __init__(self, stream: BinaryIO, name: str, on_reject: Callable[[Rejection], None]) -> None:
        self.stream = stream
        self.name = name
        self.on_reject = on_reject
        self.lines = 0
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes read so far (all of them, once iterated)."""
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[Canonical]:
        name, on_reject = self.name, self.on_reject
        lineno = 0
        for lineno, (body, complete) in enumerate(self._bodies(), 1):
            if not complete:
                on_reject(
                    Rejection(
                        name,
                        lineno,
                        None,
                        f"record is over the {MAX_RECORD_BYTES} byte limit",
                        body,
                    )
                )
                continue
            record = body.rstrip(b"\r")
            if not record.strip():
                continue
            try:
                canon = parse_line(record)
            except EventError as exc:
                on_reject(Rejection(name, lineno, exc.field, exc.reason, body + b"\n"))
                continue
            except Exception as exc:  # one line's surprise must not cost the file
                reason = f"cannot parse: {type(exc).__name__}: {exc}"
                on_reject(Rejection(name, lineno, None, reason, body + b"\n"))
                continue
            yield canon
        self.lines = lineno

    def _bodies(self) -> Iterator[tuple[bytes, bool]]:
        """Each line without its LF, and whether it is whole: a line longer than the
        limit comes as its first bytes only (``False``), the rest is read and dropped."""
        read, update = self.stream.read, self._hash.update
        partial: list[bytes] = []  # pieces of a line that spans blocks
        partial_len = 0
        overflow = False  # the current line is over the limit: drop until its LF
        first = True
        while True:
            try:
                block = read(BLOCK_BYTES)
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror or exc}") from None
            if not block:
                break
            update(block)
            if first:
                first = False
                if block.startswith(_BOM):
                    block = block[len(_BOM) :]
            parts = block.split(b"\n")
            tail = parts.pop()  # after the block's last LF: the start of a later line
            if parts:
                head = parts[0]
                if overflow:
                    overflow = False
                    yield b"".join(partial), False
                    partial, partial_len = [], 0
                elif partial:
                    partial.append(head)
                    whole = b"".join(partial)
                    partial, partial_len = [], 0
                    yield (
                        (whole, True) if len(whole) < _LINE_LIMIT else (whole[:_LINE_LIMIT], False)
                    )
                else:
                    yield (head, True) if len(head) < _LINE_LIMIT else (head[:_LINE_LIMIT], False)
                for body in parts[1:]:
                    yield (body, True) if len(body) < _LINE_LIMIT else (body[:_LINE_LIMIT], False)
            if tail and not overflow:
                partial.append(tail)
                partial_len += len(tail)
                if partial_len >= _LINE_LIMIT:
                    # Keep the first bytes for the rejects file; drop the rest as it comes.
                    partial = [b"".join(partial)[:_LINE_LIMIT]]
                    overflow = True
        if overflow:
            yield b"".join(partial), False
        elif partial:
            whole = b"".join(partial)
            yield (whole, True) if len(whole) < _LINE_LIMIT else (whole[:_LINE_LIMIT], False)


def read_records(
    stream: BinaryIO, name: str, on_reject: Callable[[Rejection], None]
) -> Iterator[Canonical]:
    """Yield every valid record of an NDJSON stream; report the others to ``on_reject``."""
    return iter(NdjsonInput(stream, name, on_reject))
