"""A test plugin: the S3 sink, except that the process SIGKILLs itself right after an
object is complete in S3 and before the pipeline can advance the cursor — the narrowest
window of the delivery protocol. ``crash_rate`` is the chance per object; the random
stream is seeded from ``SIEM_CRASH_SEED`` so a failing trial can be replayed."""

from __future__ import annotations

import os
import random
import signal

from siem_plugins import SinkSpec, hookimpl
from siem_plugins.builtin.s3 import S3Sink
from siem_plugins.kinds import ObjectMeta, ObjectReceipt, ObjectWriter
from siem_plugins.options import Options

_rng = random.Random(os.environ.get("SIEM_CRASH_SEED", "0"))


class _Writer(ObjectWriter):
    def __init__(self, inner: ObjectWriter, rate: float) -> None:
        self.inner = inner
        self.rate = rate

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def commit(self) -> ObjectReceipt:
        receipt = self.inner.commit()
        if _rng.random() < self.rate:
            os.kill(os.getpid(), signal.SIGKILL)
        return receipt

    def abort(self) -> None:
        self.inner.abort()


class CrashySink(S3Sink):
    rate = 0.0

    @classmethod
    def build(cls, options: Options) -> CrashySink:
        rate = options.number("crash_rate", 0.0)
        sink = S3Sink.from_options(options)
        crashy = cls(sink.settings, sink.client)
        crashy.rate = rate
        return crashy

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        return _Writer(super().open(key, meta), self.rate)


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    return [SinkSpec(name="crashy-s3", factory=CrashySink.build, section="s3")]
