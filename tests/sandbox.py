"""systemd unit files for the tests: read them, and run a command under the seccomp
filters their directives make systemd install.

Reading: :func:`read_unit` keeps every assignment of a key in order (``SystemCallFilter=``
may be given several times, and an empty assignment resets the list), which
``configparser`` cannot.

Running: a service's ``SystemCallFilter=``, ``SystemCallErrorNumber=``,
``MemoryDenyWriteExecute=`` and ``RestrictAddressFamilies=`` are seccomp filters that
systemd (version 252, as Debian 12 ships it) builds with libseccomp and loads in the
service's process just before it executes ``ExecStart=``. This module does the same from
the unit's own directives, so a test can run the shipper exactly as confined as the unit
would confine it, on a machine where systemd is not PID 1::

    python tests/sandbox.py SPEC_JSON COMMAND [ARG...]

:func:`seccomp_spec` turns a unit into ``SPEC_JSON``; it expands syscall groups
(``@system-service``) with ``systemd-analyze syscall-filter``, so that the groups are the
installed systemd's. The mount-namespace directives (``ProtectSystem=``, ``PrivateTmp=``,
...), ``User=`` and the other seccomp-based ones (``LockPersonality=``,
``RestrictNamespaces=``, ``RestrictRealtime=``, ``RestrictSUIDSGID=``) are not applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Unit = dict[str, dict[str, list[str]]]


def read_unit(path: Path) -> Unit:
    """Sections to keys to every value assigned, in order (continuation lines joined,
    comments dropped)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep:
            raise ValueError(f"{path}:{number}: not an assignment in a section: {raw!r}")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def value(unit: Unit, section: str, key: str) -> str | None:
    """The value a key ends up with (the last assignment), or None if never assigned."""
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


_SPAN_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def timespan(text: str) -> float:
    """A systemd time span (``180``, ``3min``, ``2min 30s``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    if not parts or re.sub(r"[\d.\sa-z]", "", text):
        raise ValueError(f"not a time span: {text!r}")
    return sum(float(n) * _SPAN_UNITS[u or "s"] for n, u in parts)


def syscall_group(group: str) -> set[str]:
    """The system calls of a group (``@system-service``), nested groups expanded, as the
    installed systemd defines them."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= syscall_group(item) if item.startswith("@") else {item}
    return names


def seccomp_spec(unit: Unit, expand: Callable[[str], set[str]] = syscall_group) -> dict[str, Any]:
    """The seccomp filters the unit's ``[Service]`` directives make systemd load."""
    service = unit.get("Service", {})
    allow: set[str] | None = None
    deny: set[str] = set()
    for line in service.get("SystemCallFilter", []):
        if not line:  # an empty assignment resets the list
            allow, deny = None, set()
            continue
        negate = line.startswith("~")
        names: set[str] = set()
        for item in line.lstrip("~").split():
            names |= expand(item) if item.startswith("@") else {item}
        if allow is None and not deny and not negate:
            allow = expand("@default")  # systemd adds it to every allow-list
        if allow is not None:
            allow = allow - names if negate else allow | names
        else:
            deny = deny | names if negate else deny - names
    error = value(unit, "Service", "SystemCallErrorNumber")
    families: dict[str, Any] | None = None
    restrict = value(unit, "Service", "RestrictAddressFamilies")
    if restrict:
        negate = restrict.startswith("~")
        numbers = sorted(int(getattr(socket, n)) for n in restrict.lstrip("~").split())
        families = {"deny" if negate else "allow": numbers}
    return {
        "syscalls": {"allow": sorted(allow)} if allow is not None else {"deny": sorted(deny)},
        "errno": getattr(errno, error) if error else None,
        "mdwe": value(unit, "Service", "MemoryDenyWriteExecute") == "yes",
        "families": families,
    }


# --------------------------------------------------------------------------- loading

_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_EQ, _GE, _MASKED_EQ = 4, 5, 7
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000
#: One past the highest address family Linux 6.x knows (AF_MCTP is 45).
_AF_MAX = 46


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Filter:
    """One libseccomp filter context."""

    def __init__(self, lib: ctypes.CDLL, default: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a system call of this architecture: systemd skips it too
            return
        array = (_ArgCmp * len(cmps))(*(_ArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add_array({name})")

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)  # sets no_new_privs first, as systemd does
        if rc < 0:
            raise OSError(-rc, "seccomp_load")


def libseccomp() -> ctypes.CDLL | None:
    """libseccomp, which systemd itself links against; None if it is not installed."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def install(spec: dict[str, Any], lib: ctypes.CDLL) -> None:
    """Load the filters of :func:`seccomp_spec` into this process (and what it executes)."""
    # Each of these is a filter of its own in systemd too, and the kernel applies the
    # strictest verdict of all loaded filters. The system call filter goes last, as in
    # systemd: it may deny seccomp() itself.
    rest = _Filter(lib, _ALLOW)
    if spec["mdwe"]:
        eperm = _errno_action(errno.EPERM)
        rest.rule(
            eperm, "mmap", (2, _MASKED_EQ, _PROT_WRITE | _PROT_EXEC, _PROT_WRITE | _PROT_EXEC)
        )
        for name in ("mprotect", "pkey_mprotect"):
            rest.rule(eperm, name, (2, _MASKED_EQ, _PROT_EXEC, _PROT_EXEC))
        rest.rule(eperm, "shmat", (2, _MASKED_EQ, _SHM_EXEC, _SHM_EXEC))
    families = spec["families"]
    if families:
        no_family = _errno_action(errno.EAFNOSUPPORT)
        if "allow" in families:
            for family in range(_AF_MAX):
                if family not in families["allow"]:
                    rest.rule(no_family, "socket", (0, _EQ, family, 0))
            rest.rule(no_family, "socket", (0, _GE, _AF_MAX, 0))
        else:
            for family in families["deny"]:
                rest.rule(no_family, "socket", (0, _EQ, family, 0))
    rest.load()
    denied = _errno_action(spec["errno"]) if spec["errno"] else _KILL_PROCESS
    syscalls = spec["syscalls"]
    if "allow" in syscalls:
        calls = _Filter(lib, denied)
        for name in syscalls["allow"]:
            calls.rule(_ALLOW, name)
    else:
        calls = _Filter(lib, _ALLOW)
        for name in syscalls["deny"]:
            calls.rule(denied, name)
    calls.load()


def main(argv: list[str]) -> None:
    spec, command = json.loads(argv[0]), argv[1:]
    lib = libseccomp()
    if lib is None:
        sys.exit("libseccomp is not installed")
    install(spec, lib)
    os.execvp(command[0], command)  # noqa: S606 (the command under test, as ExecStart=)


if __name__ == "__main__":
    main(sys.argv[1:])
