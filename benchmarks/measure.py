"""Running one measured process: wall time, peak RSS, output, CPU of a helper process.

Peak RSS needs care. ``ru_maxrss`` (from ``wait4`` or ``getrusage``) is not the peak of
the program alone: at ``execve`` Linux folds the high-water mark of the *old* memory
image into it, and a child spawned by ``subprocess`` (fork or vfork) starts from a copy
of, or the very image of, this benchmark's own process, tens of MB with boto3 and rich
loaded. So the peak is taken from ``VmHWM`` in ``/proc/<pid>/status``, which belongs to
the memory image the program itself runs in, read every 10 ms by a watcher thread while
the parent waits; and ``ru_maxrss`` from ``wait4`` is used when it is above that
inherited floor (then it can only be the program's own peak). Python children report
their own ``VmHWM`` at the end of the job, exactly.

Output goes to files, not pipes: nothing has to be read while the child runs, so the
parent stays idle and off the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One finished child process."""

    seconds: float  # spawn -> exit, or -> the moment the child says the job was done
    maxrss_kb: int  # peak RSS of the program's own memory image (see the module doc)
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None  # the last JSON line on stdout, if any

    def check(self, what: str) -> None:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout)[-3000:]
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n{tail}")


def vm_hwm_kb(pid: int | str = "self") -> int:
    """``VmHWM`` of a process in KiB: the peak RSS of its current memory image (0: gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _PeakWatcher(threading.Thread):
    """Polls a child's ``VmHWM`` until told to stop (it only ever grows)."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.peak_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak_kb = max(self.peak_kb, vm_hwm_kb(self.pid))
            self.stopped.wait(self.interval_s)


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    done: Callable[[], bool] | None = None,
    poll_s: float = 0.005,
    timeout_s: float = 3600.0,
) -> Run:
    """Run ``argv`` to completion and measure it.

    With ``done``, the child is a server (rsyslogd): the clock stops the first time
    ``done()`` is true, then the child gets SIGTERM. The poll is a ``stat`` every few
    milliseconds: cheap next to what is measured.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        floor_kb = vm_hwm_kb()  # what exec folds into the child's ru_maxrss (see above)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=None if env is None else dict(env), stdout=out, stderr=err
        )
        watcher = _PeakWatcher(proc.pid)
        watcher.start()
        finished: float | None = None
        status = 0
        rusage: Any = None
        deadline = t0 + timeout_s
        try:
            if done is not None:
                while True:
                    if done():
                        finished = time.monotonic()
                        proc.send_signal(signal.SIGTERM)
                        break
                    pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:  # died before it was done: reported as a failure below
                        status, rusage = wstatus, usage
                        break
                    if time.monotonic() > deadline:
                        proc.kill()
                        break
                    time.sleep(poll_s)
            if rusage is None:
                _, status, rusage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        finally:
            watcher.stopped.set()
        ended = time.monotonic()
        watcher.join()
        maxrss_kb = watcher.peak_kb
        if rusage.ru_maxrss > floor_kb:
            maxrss_kb = max(maxrss_kb, int(rusage.ru_maxrss))
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # reaped here: keep Popen from waiting on it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    report = _last_json(stdout)
    if done is not None:
        if finished is None:
            code = code or 1
            stderr += "\n(the process ended or timed out before its output was complete)"
        elif code == -signal.SIGTERM:
            code = 0  # stopped by us, as intended
        seconds = (finished or ended) - t0
    elif report is not None and "t_end" in report:
        seconds = float(report["t_end"]) - t0
    else:
        seconds = ended - t0
    return Run(seconds, maxrss_kb, code, stdout, stderr, report)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (for the S3 server's share)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
