"""A test plugin: with ``SIEM_TEST_PACE=<seconds>``, every object written is followed by
that pause, so a test can signal a sync while it still has objects to write however
fast the machine is."""

from __future__ import annotations

import os
import time

from siem_plugins import hookimpl
from siem_plugins.kinds import ObjectReceipt

_pace = float(os.environ.get("SIEM_TEST_PACE", "0"))


@hookimpl
def siem_object_written(integration: str, receipt: ObjectReceipt) -> None:
    if _pace:
        time.sleep(_pace)
