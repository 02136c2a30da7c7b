"""NDJSON ingest: validate line by line, keep every good record, locate every bad one.

A rejected line is reported as ``file:line: field: reason`` and, with ``--rejects``,
copied verbatim to a rejects file so it can be fixed and fed again. Empty lines are
skipped. Lines longer than :data:`~siem_plugins.events.MAX_RECORD_BYTES` are rejected
without being held in memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from siem_plugins.events import MAX_RECORD_BYTES, Canonical, EventError, parse_line


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int
    field: str | None
    reason: str
    raw: bytes

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


def _lines(stream: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """``(line, oversize)`` pairs; an oversize line is truncated to its first bytes."""
    limit = MAX_RECORD_BYTES + 2  # room for CRLF
    while True:
        line = stream.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            head = line
            while line and not line.endswith(b"\n"):  # drain the rest of this line
                line = stream.readline(1 << 20)
            yield head, True
            continue
        yield line, False


def read_records(
    stream: BinaryIO, name: str, on_reject: Callable[[Rejection], None]
) -> Iterator[Canonical]:
    """Yield every valid record of an NDJSON stream; report the others to ``on_reject``."""
    for lineno, (line, oversize) in enumerate(_lines(stream), 1):
        if oversize:
            on_reject(
                Rejection(
                    name, lineno, None, f"record is over the {MAX_RECORD_BYTES} byte limit", line
                )
            )
            continue
        body = line.rstrip(b"\r\n")
        if not body.strip():
            continue
        try:
            yield parse_line(body)
        except EventError as exc:
            on_reject(Rejection(name, lineno, exc.field, exc.reason, line))
