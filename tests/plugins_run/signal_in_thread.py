"""A test plugin: with ``SIEM_TEST_SIGNAL_IN_THREAD=1``, when a sync writes its first
object, SIGTERM is sent to the thread running that sync (not to the main thread), the
way the kernel may deliver a ``kill <pid>`` to any thread of a busy process."""

from __future__ import annotations

import os
import signal
import threading

from siem_plugins import hookimpl
from siem_plugins.kinds import ObjectReceipt

_armed = os.environ.get("SIEM_TEST_SIGNAL_IN_THREAD") == "1"


@hookimpl
def siem_object_written(integration: str, receipt: ObjectReceipt) -> None:
    global _armed
    if _armed and threading.current_thread() is not threading.main_thread():
        _armed = False
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
