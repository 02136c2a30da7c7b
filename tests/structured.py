"""Inputs and helpers the ``ocsf`` and ``ecs`` formatter tests share: the product's example
events, one event of every log type, golden files, and reading a record's text back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from siem_plugins.events import Event
from siem_plugins.testing import events_from_dicts

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
ACCOUNT = "acme"

_DEVICE = {
    "device_name": "Cuong Ba",
    "device_id": "cuongbavuacakhia1657786592",
    "last_seen": "2022-07-15T08:55:12.279Z",
    "device_group": "Default",
    "type": "Device",
    "device_username": "Wilfred Hoeger",
}
_ADMIN = {
    "admin_name": "Phuong Weekly 1",
    "type": "Account",
    "admin_email": "phuongphweekly@gmail.com",
}
_BY = "Phuong Phuong Phuong Phuong Phuong(phuongphweekly@gmail.com)"


def _device(log_type: str, details: str, minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "log_type": log_type,
        **_DEVICE,
        "details": details,
        "timestamp": f"2022-07-15T09:{minute:02d}:00.000Z",
        **extra,
    }


def _account(log_type: str, event: str, details: str, minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "log_type": log_type,
        **_ADMIN,
        "event": event,
        "details": details,
        "timestamp": f"2022-07-15T10:{minute:02d}:00.000Z",
        **extra,
    }


def seed_events() -> list[Event]:
    """The product documentation's four example events (tests/data/seed_events.ndjson)."""
    lines = (DATA / "seed_events.ndjson").read_text().splitlines()
    return events_from_dicts([json.loads(line) for line in lines], account=ACCOUNT)


def every_log_type() -> list[Event]:
    """One event of every known log type, one of a log type this version does not know
    for each event type, and the edge cases a mapping must carry: no ``last_seen``, an
    admin email that is not an address, unknown fields (an integer beyond 64 bits
    included), non-ASCII text and a U+2028 in ``details``."""
    dicts = [
        _device("added", "OPSWAT Client (Version 7.6.586.1) Cuong Ba Installed$0", 1),
        _device("removed", f"Device Cuong Ba was removed by {_BY}", 2),
        _device("exempt", f"Device Cuong Ba was exempted by {_BY}", 3),
        _device("exempt_all", f"Device Cuong Ba was exempted by {_BY}24 hour(s)", 4),
        _device("unexempt", f"Device Cuong Ba was unexempted by {_BY}", 5),
        _device("compliant", "Device Cuong Ba is compliant", 6),
        _device("non_compliant", "Device Cuong Ba is non-compliant: Antimalware not running", 7),
        _device("blocked", f"Device Cuong Ba was blocked by {_BY}", 8),
        _device("unblocked", f"Device Cuong Ba was unblocked by {_BY}", 9),
        _device("threat_detected", "Threat detected on Cuong Ba: EICAR-Test-File", 10),
        _device("vulnerability_detected", "Vulnerability CVE-2022-30190 on Cuong Ba", 11),
        _device("patch_installed", "Patch KB5015807 installed on Cuong Ba", 12),
        _device("device_scanned", "A log type this version does not know", 13),
        {
            **_device("added", "Zoë's Müller-Laptop 漢字 🚀 line\u2028separator", 14),
            "last_seen": None,
            "agent": {"version": "7.6.586.1", "serial": 18446744073709551616},
        },
        _account(
            "config",
            "Configuration Change",
            "Administrator Phuong Phuong Phuong Phuong Phuong (phuongphweekly@gmail.com) "
            "changed Settings - Integrations - SIEM Integration ",
            1,
        ),
        _account("login", "Login", "Administrator Phuong Weekly 1 logged in", 2),
        _account("login_failed", "Login Failed", "Login failed for phuongphweekly@gmail.com", 3),
        _account("logout", "Logout", "Administrator Phuong Weekly 1 logged out", 4),
        _account("admin_added", "Admin Added", "Administrator Olga Tanaka was added", 5),
        _account("admin_removed", "Admin Removed", "Administrator Olga Tanaka was removed", 6),
        _account("role_changed", "Role Change", "Olga Tanaka is now a Read-only admin", 7),
        _account("policy_changed", "Policy Change", "Policy Default - Antimalware changed", 8),
        _account("api_key_created", "API Key Created", "API key 'ci' was created", 9),
        _account("api_key_revoked", "API Key Revoked", "API key 'ci' was revoked", 10),
        _account("report_exported", "Report Export", "A log type this version does not know", 11),
        _account(
            "login_failed",
            "Login Failed",
            "Login failed for an unknown user",
            12,
            admin_email="not an address",
            source_ip="198.51.100.7",
        ),
    ]
    for d in dicts:
        if d.get("last_seen", "") is None:
            del d["last_seen"]
    return events_from_dicts(dicts, account=ACCOUNT)


def check_golden(path: Path, data: bytes) -> None:
    """``data`` must be the checked-in ``path`` byte for byte. ``SIEM_UPDATE_GOLDEN=1``
    writes it instead (then review the diff before committing)."""
    if os.environ.get("SIEM_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.is_file(), f"{path} is missing: run with SIEM_UPDATE_GOLDEN=1 and review it"
    expected = path.read_bytes()
    if data != expected:
        got, want = data.splitlines(), expected.splitlines()
        for i, (a, b) in enumerate(zip(got, want, strict=False)):
            assert a == b, f"{path.name} line {i + 1} differs:\n got {a!r}\nwant {b!r}"
        assert len(got) == len(want), f"{path.name}: {len(got)} lines, expected {len(want)}"


def strings(value: Any) -> list[str]:
    """Every string in a decoded JSON value (keys included), depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []
