"""The built-in ``local`` sink: the same objects as S3, as files under a folder.

An object is written to a hidden temporary file beside its final name, fsynced, then
renamed into place, so a reader never sees a partial object and a crash leaves at most
a temporary file (removed on abort, ignored by readers: it starts with ``.``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from siem_plugins import hookimpl
from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter, SinkBase, SinkSpec
from siem_plugins.options import Options


class LocalSink(SinkBase):
    def __init__(self, root: Path, prefix: str = "") -> None:
        self.root = root
        self.prefix = prefix

    @classmethod
    def from_options(cls, options: Options) -> LocalSink:
        path = options.string("path", required=True)
        prefix = options.string("prefix", "")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise options.error(
                "prefix", f"must be a relative path inside the folder, got {prefix!r}"
            )
        return cls(Path(path), prefix)

    def identity(self) -> str:
        # Absolute: "out" and "./out" started from one folder are the same place.
        return str((self.root / self.prefix).resolve()) + "/"

    def describe(self) -> str:
        return str(self.root / self.prefix) if self.prefix else str(self.root)

    def _target(self, key: str) -> Path:
        target = (self.root / (self.prefix + key)).resolve()
        root = self.root.resolve()
        if root not in target.parents:
            raise ValueError(f"object key {key!r} escapes {root}")
        return target

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        return _FileWriter(self._target(key), key, meta)

    def probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".siem-plugins-probe-{secrets.token_hex(6)}"
        probe.write_bytes(b"probe\n")
        probe.unlink()


class _FileWriter(ObjectWriter):
    def __init__(self, target: Path, key: str, meta: ObjectMeta) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.key = key
        self.meta = meta
        self.tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed in commit/abort)
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def commit(self) -> ObjectReceipt:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.target)
        dir_fd = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return ObjectReceipt(self.key, str(self.target), self.size, self.meta)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    return [
        SinkSpec(
            name="local",
            factory=LocalSink.from_options,
            description="files under a local folder (path = ...), same keys and bytes as S3",
        )
    ]
