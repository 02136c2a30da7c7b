"""The built-in ``ecs`` formatter: one Elastic Common Schema document per line (NDJSON).

What Elastic's ``aws-s3`` input (and any ECS reader: Elastic Security's rules and
dashboards, OpenSearch's security analytics) indexes without an ingest pipeline of its
own. Each log type gets the ECS categorisation fields that say what happened
(:data:`CATEGORIES`, documented in docs/formats.md), with values from ECS's allowed lists
and, for each category, its expected event types; a log type the product adds later
(``[store] log_types``) gets none, as ECS asks for events it cannot categorise.

``event.id`` is the stable event id (:func:`~siem_plugins.builtin.eventid.event_id`),
``event.original`` (unless ``original = false``) the stored event. The event's fields ECS
has no field for (device group, last seen, the Account event's description, fields the
product documentation does not know) are under ``metadefender``, under their own names:
ECS asks custom fields to live in a namespace of their own.

Output depends on the event's account and id, not only on its bytes, so there is no raw
fast path. Key order is fixed, so the same events always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from siem_plugins import hookimpl
from siem_plugins.builtin.eventid import event_id
from siem_plugins.builtin.jsonrecords import check_log_type, dumps_line, fields_of
from siem_plugins.events import ACCOUNT, DEVICE, Event, canonical_timestamp
from siem_plugins.kinds import FormatterBase, FormatterSpec
from siem_plugins.options import Options

ECS_VERSION = "8.17.0"
OBSERVER = {"vendor": "OPSWAT", "product": "MetaDefender IT Access"}
#: The namespace of the fields ECS has no place for.
NAMESPACE = "metadefender"
_CANONICAL_TS_LEN = len("2022-07-15T08:55:12.279Z")
# Constant objects, serialised once (orjson copies a Fragment's bytes as they are).
_ECS = orjson.Fragment(orjson.dumps({"version": ECS_VERSION}))
_OBSERVER = orjson.Fragment(orjson.dumps(OBSERVER))


@dataclass(frozen=True, slots=True)
class Category:
    """``event.category``, ``event.type`` and, when the log type says it, ``event.outcome``."""

    category: tuple[str, ...]
    type: tuple[str, ...]
    outcome: str | None = None


#: Every known log type's ECS categorisation (docs/formats.md has this table). Device
#: actions taken in the console are ``configuration`` (creating, changing or deleting a
#: system's settings); a device's compliance state is ``host`` (host inventory).
CATEGORIES: dict[str, Category] = {
    # Device events
    "added": Category(("configuration",), ("creation",)),
    "removed": Category(("configuration",), ("deletion",)),
    "exempt": Category(("configuration",), ("change",)),
    "exempt_all": Category(("configuration",), ("change",)),
    "unexempt": Category(("configuration",), ("change",)),
    "blocked": Category(("configuration",), ("change",)),
    "unblocked": Category(("configuration",), ("change",)),
    "compliant": Category(("host",), ("change",)),
    "non_compliant": Category(("host",), ("change",)),
    "threat_detected": Category(("malware",), ("info",)),
    "vulnerability_detected": Category(("vulnerability",), ("info",)),
    "patch_installed": Category(("package",), ("installation",)),
    # Account events
    "config": Category(("configuration",), ("change",)),
    "policy_changed": Category(("configuration",), ("change",)),
    "login": Category(("authentication",), ("start",), "success"),
    "login_failed": Category(("authentication",), ("start",), "failure"),
    "logout": Category(("authentication",), ("end",), "success"),
    "admin_added": Category(("iam",), ("user", "creation")),
    "admin_removed": Category(("iam",), ("user", "deletion")),
    "role_changed": Category(("iam",), ("user", "change")),
    # API keys are neither users nor groups: ECS's "admin" objects.
    "api_key_created": Category(("iam",), ("admin", "creation")),
    "api_key_revoked": Category(("iam",), ("admin", "deletion")),
}


class ECSFormatter(FormatterBase):
    """ECS JSON, one document per line. ``original``: also carry the stored event."""

    extension = "ecs.json"
    content_type = "application/x-ndjson"

    def __init__(self, *, original: bool = True) -> None:
        self.original = original
        self._events: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_options(cls, options: Options) -> ECSFormatter:
        return cls(original=bool(options.boolean("original", True)))

    def format(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        lines = []
        for e in events:
            try:
                lines.append(dumps_line(self.record(e), e.raw))
            except (KeyError, TypeError, ValueError) as exc:
                reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(
                    f"event {e.id} ({e.log_type}): cannot write it as ECS: {reason}"
                ) from exc
        return b"\n".join(lines) + b"\n"

    def _event_head(self, log_type: str) -> dict[str, Any]:
        """The constant part of ``event`` for a log type, in output order."""
        head = self._events.get(log_type)
        if head is None:
            head = {"kind": "event"}
            check_log_type(log_type)
            cat = CATEGORIES.get(log_type)
            if cat is not None:
                head["category"] = list(cat.category)
                head["type"] = list(cat.type)
            head["action"] = log_type
            self._events[log_type] = head
        return head

    def record(self, e: Event) -> dict[str, Any]:
        """The ECS document of ``e`` (a dict in output order)."""
        if e.type not in (DEVICE, ACCOUNT):
            raise ValueError(f"unknown event type {e.type!r}")
        f, extras = fields_of(e.raw, e.type)
        timestamp = e.timestamp
        if len(timestamp) != _CANONICAL_TS_LEN:  # stored by an older version or another writer
            timestamp = canonical_timestamp(timestamp)
        event = dict(self._event_head(e.log_type))
        event["id"] = event_id(e.account, e.id)
        cat = CATEGORIES.get(e.log_type)
        if cat is not None and cat.outcome is not None:
            event["outcome"] = cat.outcome
        if self.original:
            event["original"] = e.raw.decode()
        out: dict[str, Any] = {
            "@timestamp": timestamp,
            "ecs": _ECS,
            "event": event,
            "message": f["details"],
        }
        custom: dict[str, Any] = {"type": e.type}
        if e.type == DEVICE:
            out["host"] = {"name": f["device_name"], "id": f["device_id"]}
            out["user"] = {"name": f["device_username"]}
            custom["device_group"] = f["device_group"]
            if "last_seen" in f:
                custom["last_seen"] = f["last_seen"]
        else:
            out["user"] = {"name": f["admin_name"], "email": f["admin_email"]}
            custom["event"] = f["event"]
        out["organization"] = {"id": e.account}
        out["observer"] = _OBSERVER
        custom.update(extras)
        out[NAMESPACE] = custom
        return out


@hookimpl
def siem_register_formatters() -> list[FormatterSpec]:
    return [
        FormatterSpec(
            name="ecs",
            factory=ECSFormatter.from_options,
            description="Elastic Common Schema JSON, one document per line: event.category "
            "and event.type per log type, host.*, user.*, organization.id",
        )
    ]
