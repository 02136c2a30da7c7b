"""Realistic device and account events, shaped like the product documentation's examples.

Used by ``siem-plugins demo``, the test kit's event factory and the benchmarks.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

_FIRST = (
    "Cuong",
    "Phuong",
    "Wilfred",
    "Nicholas",
    "Christy",
    "Amélie",
    "Jürgen",
    "Søren",
    "Zoë",
    "Nguyễn",
    "Aiko",
    "Mateo",
    "Olga",
    "Priya",
    "Kwame",
    "Lucía",
)
_LAST = (
    "Ba",
    "Hoeger",
    "Roob",
    "Stokes",
    "Weekly",
    "Müller",
    "Tanaka",
    "García",
    "Kowalski",
    "Okafor",
    "Ivanova",
    "Sharma",
    "Trần",
    "O'Brien",
    "Lefèvre",
    "Andersson",
)
_GROUPS = ("Default", "Engineering", "Finance", "Sales", "Remote Workers", "Kiosks")
_SETTINGS = (
    "Settings - Integrations - SIEM Integration ",
    "Settings - Policies - Compliance",
    "Settings - Users - Roles",
    "Settings - Notifications",
    "Settings - API Keys",
)

DEVICE_TYPES = (
    "added",
    "removed",
    "exempt",
    "exempt_all",
    "unexempt",
    "compliant",
    "non_compliant",
    "threat_detected",
)
ACCOUNT_TYPES = ("config", "login", "logout", "admin_added", "policy_changed")


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def device_event(rng: random.Random, t: datetime) -> dict[str, Any]:
    log_type = rng.choice(DEVICE_TYPES)
    name = _name(rng)
    device = f"{name.split()[0].lower()}{rng.randrange(10**9, 10**10)}"
    admin = _name(rng)
    email = f"{admin.split()[0].lower()}@example.com"
    details = {
        "added": f"OPSWAT Client (Version 7.6.{rng.randrange(100, 999)}.1) {name} Installed",
        "removed": f"Device {name} was removed by {admin}({email})",
        "exempt": f"Device {name} was exempted by {admin}({email}){rng.randrange(1, 72)} hour(s)",
        "exempt_all": f"Device {name} was exempted by {admin}({email})24 hour(s)",
        "unexempt": f"Device {name} was unexempted by {admin}({email})",
        "compliant": f"Device {name} is compliant with policy {rng.choice(_GROUPS)}",
        "non_compliant": f"Device {name} failed checks: "
        + ", ".join(
            rng.sample(
                [
                    "Antivirus",
                    "Firewall",
                    "Disk Encryption",
                    "Patch Level",
                    "Screen Lock",
                    "Password Policy",
                ],
                rng.randrange(1, 4),
            )
        ),
        "threat_detected": f"Threat Trojan.GenericKD.{rng.randrange(10**7)} found on {name}",
    }[log_type]
    return {
        "log_type": log_type,
        "device_name": name,
        "device_id": device,
        "last_seen": _ts(t - timedelta(seconds=rng.randrange(0, 3600))),
        "device_group": rng.choice(_GROUPS),
        "details": details,
        "type": "Device",
        "device_username": _name(rng),
        "timestamp": _ts(t),
    }


def account_event(rng: random.Random, t: datetime) -> dict[str, Any]:
    log_type = rng.choice(ACCOUNT_TYPES)
    admin = _name(rng)
    email = f"{admin.split()[0].lower().replace(chr(39), '')}.{rng.randrange(100)}@example.com"
    event, details = {
        "config": (
            "Configuration Change",
            f"Administrator {admin} ({email}) changed {rng.choice(_SETTINGS)}",
        ),
        "login": (
            "Login",
            f"Administrator {admin} ({email}) signed in from 203.0.113.{rng.randrange(1, 255)}",
        ),
        "logout": ("Logout", f"Administrator {admin} ({email}) signed out"),
        "admin_added": (
            "Administrator Added",
            f"Administrator {admin} ({email}) invited {_name(rng)}",
        ),
        "policy_changed": (
            "Policy Change",
            f"Administrator {admin} ({email}) changed policy {rng.choice(_GROUPS)}",
        ),
    }[log_type]
    return {
        "log_type": log_type,
        "details": details,
        "admin_name": admin,
        "type": "Account",
        "event": event,
        "admin_email": email,
        "timestamp": _ts(t),
    }


def generate(
    count: int, *, seed: int = 1, start: datetime | None = None, account_share: float = 0.2
) -> Iterator[dict[str, Any]]:
    """``count`` events in time order, about ``account_share`` of them Account events."""
    rng = random.Random(seed)
    t = start or datetime(2022, 7, 15, 8, 55, 12, 279000, tzinfo=UTC)
    for _ in range(count):
        t += timedelta(milliseconds=rng.randrange(1, 5000))
        yield account_event(rng, t) if rng.random() < account_share else device_event(rng, t)
