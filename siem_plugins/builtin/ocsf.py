"""The built-in ``ocsf`` formatter: one OCSF 1.1.0 event per line (NDJSON).

The Open Cybersecurity Schema Framework is what Amazon Security Lake stores and what
Splunk, Sentinel and the other OCSF readers normalise to. Each log type becomes the OCSF
class that says what happened (:data:`MAPPINGS`, documented in docs/formats.md):
sign-ins are *Authentication*, administrators added or removed *Account Change*,
console actions on devices, settings, policies and API keys *Entity Management*,
compliance results *Compliance Finding*, threats and vulnerabilities *Detection
Finding*, an installed patch *Device Config State Change*. Log types the product adds
later (``[store] log_types``) are *Entity Management* with activity *Other*.

Version 1.1.0 because it is the version Amazon Security Lake's custom sources take, and
every class above exists in it. Every record carries the stable event id
(:func:`~siem_plugins.builtin.eventid.event_id`) as ``metadata.uid``, and, unless
``raw_data = false``, the stored event itself as ``raw_data``. What OCSF 1.1.0 has no
attribute for (the device's user, the Account event's description, an admin email that
is not an address, fields the product documentation does not know) is under
``unmapped``, so nothing is lost either way.

Output depends on the event's account and id, not only on its bytes, so there is no raw
fast path. Key order is fixed, so the same events always give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from siem_plugins import hookimpl
from siem_plugins.builtin.eventid import event_id
from siem_plugins.builtin.jsonrecords import check_log_type, dumps_line, epoch_ms, fields_of
from siem_plugins.events import ACCOUNT, DEVICE, LOG_TYPE_DESCRIPTIONS, Event
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "MetaDefender IT Access", "vendor_name": "OPSWAT"}
#: The standard a Compliance Finding evaluates against: the product's compliance policy.
COMPLIANCE_STANDARD = "MetaDefender IT Access compliance policy"
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
# OCSF 1.1.0's email_t pattern. An admin email that does not match stays in `unmapped`:
# put in user.email_addr, it would make the whole record invalid.
_EMAIL = re.compile(r"[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class OcsfClass:
    uid: int
    name: str
    category_uid: int
    category_name: str


ENTITY_MANAGEMENT = OcsfClass(3004, "Entity Management", 3, "Identity & Access Management")
AUTHENTICATION = OcsfClass(3002, "Authentication", 3, "Identity & Access Management")
ACCOUNT_CHANGE = OcsfClass(3001, "Account Change", 3, "Identity & Access Management")
COMPLIANCE_FINDING = OcsfClass(2003, "Compliance Finding", 2, "Findings")
DETECTION_FINDING = OcsfClass(2004, "Detection Finding", 2, "Findings")
DEVICE_CONFIG_STATE_CHANGE = OcsfClass(5019, "Device Config State Change", 5, "Discovery")


class Shape(StrEnum):
    """How the class-specific part of a record is built (see ``OCSFFormatter._specific``)."""

    DEVICE_ENTITY = "device entity"  # entity = the device; device
    ADMIN_ENTITY = "admin entity"  # entity = what the admin acted on; actor.user = the admin
    COMPLIANCE = "compliance"  # finding_info, compliance, device
    DETECTION = "detection"  # finding_info, device
    DEVICE_STATE = "device state"  # device
    SIGN_IN = "sign-in"  # status, service, user = the admin
    USER = "user"  # user = the admin


@dataclass(frozen=True, slots=True)
class ClassMapping:
    """How events of one log type become OCSF events: class, activity, severity, and the
    shape of the class-specific part with its constants (``detail``)."""

    cls: OcsfClass
    activity_id: int
    activity_name: str
    severity_id: int
    shape: Shape
    detail: dict[str, Any] = field(default_factory=dict)
    #: Profiles whose attributes the record uses (``metadata.profiles``).
    profiles: tuple[str, ...] = ()

    @property
    def type_uid(self) -> int:
        return self.cls.uid * 100 + self.activity_id


def _entity(activity_id: int, name: str, severity: int = 1) -> ClassMapping:
    return ClassMapping(
        ENTITY_MANAGEMENT, activity_id, name, severity, Shape.DEVICE_ENTITY, {}, ("host",)
    )


def _admin_entity(
    activity_id: int, name: str, entity: dict[str, str], severity: int
) -> ClassMapping:
    return ClassMapping(
        ENTITY_MANAGEMENT, activity_id, name, severity, Shape.ADMIN_ENTITY, entity, ("host",)
    )


_SETTINGS = {"name": "Settings", "type": "Configuration"}
_POLICY = {"name": "Policy", "type": "Policy"}
_API_KEY = {"name": "API key", "type": "API Key"}

#: Every known log type's OCSF class and activity (docs/formats.md has this table).
MAPPINGS: dict[str, ClassMapping] = {
    # Device events
    "added": _entity(1, "Create"),
    "removed": _entity(4, "Delete"),
    "exempt": _entity(3, "Update"),
    "exempt_all": _entity(3, "Update", 2),
    "unexempt": _entity(3, "Update"),
    "blocked": _entity(3, "Update", 2),
    "unblocked": _entity(3, "Update"),
    "compliant": ClassMapping(
        COMPLIANCE_FINDING,
        1,
        "Create",
        1,
        Shape.COMPLIANCE,
        {"status_id": 1, "status": "Pass"},
        ("host",),
    ),
    "non_compliant": ClassMapping(
        COMPLIANCE_FINDING,
        1,
        "Create",
        3,
        Shape.COMPLIANCE,
        {"status_id": 3, "status": "Fail"},
        ("host",),
    ),
    "threat_detected": ClassMapping(
        DETECTION_FINDING, 1, "Create", 4, Shape.DETECTION, {"types": ["Threat"]}, ("host",)
    ),
    "vulnerability_detected": ClassMapping(
        DETECTION_FINDING, 1, "Create", 3, Shape.DETECTION, {"types": ["Vulnerability"]}, ("host",)
    ),
    "patch_installed": ClassMapping(DEVICE_CONFIG_STATE_CHANGE, 1, "Log", 1, Shape.DEVICE_STATE),
    # Account events
    "config": _admin_entity(3, "Update", _SETTINGS, 1),
    "policy_changed": _admin_entity(3, "Update", _POLICY, 2),
    "api_key_created": _admin_entity(1, "Create", _API_KEY, 2),
    "api_key_revoked": _admin_entity(4, "Delete", _API_KEY, 1),
    "login": ClassMapping(
        AUTHENTICATION, 1, "Logon", 1, Shape.SIGN_IN, {"status_id": 1, "status": "Success"}
    ),
    "login_failed": ClassMapping(
        AUTHENTICATION, 1, "Logon", 2, Shape.SIGN_IN, {"status_id": 2, "status": "Failure"}
    ),
    "logout": ClassMapping(
        AUTHENTICATION, 2, "Logoff", 1, Shape.SIGN_IN, {"status_id": 1, "status": "Success"}
    ),
    "admin_added": ClassMapping(ACCOUNT_CHANGE, 1, "Create", 2, Shape.USER),
    "admin_removed": ClassMapping(ACCOUNT_CHANGE, 6, "Delete", 2, Shape.USER),
    # Account Change has no activity for a role; "Other" with the log type as its name.
    "role_changed": ClassMapping(ACCOUNT_CHANGE, 99, "role_changed", 2, Shape.USER),
}


def fallback(etype: str, log_type: str) -> ClassMapping:
    """A log type this version does not know (``[store] log_types``): Entity Management,
    activity Other named by the log type; the device (Device events) or the account
    (Account events) is the entity."""
    if etype == DEVICE:
        return ClassMapping(ENTITY_MANAGEMENT, 99, log_type, 1, Shape.DEVICE_ENTITY, {}, ("host",))
    return ClassMapping(
        ENTITY_MANAGEMENT, 99, log_type, 1, Shape.ADMIN_ENTITY, {"type": "Account"}, ("host",)
    )


def _head(m: ClassMapping) -> bytes:
    """The constant start of every record of ``m``'s log type, serialised once: the
    opening brace and the members from ``class_uid`` to ``severity``, in output order,
    and the comma after them."""
    head = {
        "class_uid": m.cls.uid,
        "class_name": m.cls.name,
        "category_uid": m.cls.category_uid,
        "category_name": m.cls.category_name,
        "activity_id": m.activity_id,
        "activity_name": m.activity_name,
        "type_uid": m.type_uid,
        "type_name": f"{m.cls.name}: {'Other' if m.activity_id == 99 else m.activity_name}",
        "severity_id": m.severity_id,
        "severity": SEVERITIES[m.severity_id],
    }
    return b"{" + orjson.dumps(head)[1:-1] + b","  # ASCII: check_log_type


# Constant objects, serialised once (orjson copies a Fragment's bytes as they are).
_PRODUCT = orjson.Fragment(orjson.dumps(PRODUCT))
_SERVICE = orjson.Fragment(orjson.dumps({"name": PRODUCT["name"]}))


class OCSFFormatter(FormatterBase):
    """OCSF 1.1.0 JSON, one event per line. ``raw_data``: also carry the stored event."""

    extension = "ocsf.json"
    content_type = "application/x-ndjson"

    def __init__(self, *, raw_data: bool = True) -> None:
        self.raw_data = raw_data
        self._heads: dict[tuple[str, str], tuple[ClassMapping, bytes]] = {}

    @classmethod
    def from_options(cls, options: Options) -> OCSFFormatter:
        return cls(raw_data=bool(options.boolean("raw_data", True)))

    def format(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        parts: list[bytes | memoryview] = []
        for e in events:
            try:
                m, head = self._mapping(e.type, e.log_type)
                rest = dumps_line(self._rest(m, e), e.raw)
                # "{" + the constant head + "," then the rest without its "{": joined once.
                parts += (head, memoryview(rest)[1:], b"\n")
            except (KeyError, TypeError, ValueError) as exc:
                reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(
                    f"event {e.id} ({e.log_type}): cannot write it as OCSF: {reason}"
                ) from exc
        return b"".join(parts)

    def _mapping(self, etype: str, log_type: str) -> tuple[ClassMapping, bytes]:
        found = self._heads.get((etype, log_type))
        if found is None:
            if etype not in (DEVICE, ACCOUNT):
                raise ValueError(f"unknown event type {etype!r}")
            check_log_type(log_type)
            m = MAPPINGS.get(log_type) or fallback(etype, log_type)
            found = self._heads[(etype, log_type)] = (m, _head(m))
        return found

    def _rest(self, m: ClassMapping, e: Event) -> dict[str, Any]:
        """The record of ``e`` after its constant head (a dict in output order)."""
        f, extras = fields_of(e.raw, e.type)
        eid = event_id(e.account, e.id)
        out: dict[str, Any] = {"time": epoch_ms(e.timestamp), "message": f["details"]}
        unmapped: dict[str, Any] = {}
        if e.type == DEVICE:
            unmapped["device_username"] = f["device_username"]
        else:
            unmapped["event"] = f["event"]
        self._specific(m, e, f, eid, out, unmapped)
        metadata: dict[str, Any] = {
            "version": OCSF_VERSION,
            "product": _PRODUCT,
            "uid": eid,
            "event_code": e.log_type,
            "log_name": e.type,
            "tenant_uid": e.account,
        }
        if m.profiles:
            metadata["profiles"] = m.profiles
        out["metadata"] = metadata
        unmapped.update(extras)
        out["unmapped"] = unmapped
        if self.raw_data:
            out["raw_data"] = e.raw.decode()
        return out

    @staticmethod
    def _specific(
        m: ClassMapping,
        e: Event,
        f: dict[str, Any],
        eid: str,
        out: dict[str, Any],
        unmapped: dict[str, Any],
    ) -> None:
        shape = m.shape
        if shape == Shape.DEVICE_ENTITY:
            out["entity"] = {"uid": f["device_id"], "name": f["device_name"], "type": "Device"}
            out["device"] = _device(f)
        elif shape == Shape.ADMIN_ENTITY:
            entity = dict(m.detail)
            if "name" not in entity:  # a log type this version does not know: the account
                entity = {"uid": e.account, **entity}
            out["entity"] = entity
            out["actor"] = {"user": _admin(f, unmapped)}
        elif shape in (Shape.COMPLIANCE, Shape.DETECTION):
            info: dict[str, Any] = {
                "uid": eid,
                "title": LOG_TYPE_DESCRIPTIONS.get(e.log_type, e.log_type),
                "desc": f["details"],
            }
            if shape == Shape.DETECTION:
                info["types"] = m.detail["types"]
            out["finding_info"] = info
            if shape == Shape.COMPLIANCE:
                out["compliance"] = {"standards": [COMPLIANCE_STANDARD], **m.detail}
            out["device"] = _device(f)
        elif shape == Shape.DEVICE_STATE:
            out["device"] = _device(f)
        elif shape == Shape.SIGN_IN:
            out["status_id"] = m.detail["status_id"]
            out["status"] = m.detail["status"]
            out["service"] = _SERVICE
            out["user"] = _admin(f, unmapped)
        else:  # Shape.USER
            out["user"] = _admin(f, unmapped)


def _device(f: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = {
        "uid": f["device_id"],
        "name": f["device_name"],
        "type_id": 0,  # Unknown: the product does not say laptop, desktop, ...
        "groups": [{"name": f["device_group"]}],
    }
    last_seen = f.get("last_seen")
    if last_seen:
        device["last_seen_time"] = epoch_ms(last_seen, "last_seen")
    return device


def _admin(f: dict[str, Any], unmapped: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {"name": f["admin_name"], "type_id": 2}  # 2: Admin
    email = f["admin_email"]
    if isinstance(email, str) and _EMAIL.match(email):
        user["email_addr"] = email
    else:
        unmapped["admin_email"] = email
    return user


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="ocsf",
            factory=OCSFFormatter.from_options,
            description="OCSF 1.1.0 JSON, one event per line: a class per log type "
            "(Authentication, Account Change, Entity Management, findings)",
        )
    ]
