"""A test plugin: the S3 sink, slowed down (``delay`` seconds per write), so a test can
kill a worker in the middle of a sync."""

from __future__ import annotations

import time

from siem_plugins import SinkSpec, hookimpl
from siem_plugins.builtin.s3 import S3Sink
from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter
from siem_plugins.options import Options


class _Writer(ObjectWriter):
    def __init__(self, inner: ObjectWriter, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    def write(self, data: bytes) -> None:
        time.sleep(self.delay)
        self.inner.write(data)

    def commit(self) -> ObjectReceipt:
        return self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()


class SlowSink(S3Sink):
    delay = 0.0

    @classmethod
    def build(cls, options: Options) -> SlowSink:
        delay = options.number("delay", 0.1)
        sink = S3Sink.from_options(options)
        slow = cls(sink.settings, sink.client)
        slow.delay = delay
        return slow

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        return _Writer(super().open(key, meta), self.delay)


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    return [SinkSpec(name="slow-s3", factory=SlowSink.build, section="s3")]
