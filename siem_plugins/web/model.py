"""What the API and the page do with an account's integration, once, for both: access
checks, reading it for people (secrets hidden), saving through the one save path,
its health, and the two tests (an object to the bucket, a digest to the recipients).

Each function takes the caller (:class:`~siem_plugins.web.auth.Principal`) and refuses
another account's integration exactly as a missing one (404), so an answer never tells
whether another account exists.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from siem_plugins.control.service import SHOWN_SECRET, Actor, SaveRefused, save
from siem_plugins.control.store import StoredIntegration, VersionConflict, integration_name
from siem_plugins.runtime import Runtime
from siem_plugins.web.auth import Principal

#: One lock per integration: two saves of one integration must not interleave their
#: checks, while a save that waits on one customer's slow bucket (a probe can take
#: seconds) never holds up another customer's.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _saving(name: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(name, threading.Lock())


class SettingsError(Exception):
    """A refusal with its HTTP status and the reasons, field by field."""

    def __init__(self, status: int, message: str = "", errors: list[tuple[str, str]] | None = None):
        super().__init__(message or "; ".join(m for _, m in errors or []))
        self.status = status
        self.errors = errors if errors is not None else [("", message)]

    def body(self) -> dict[str, Any]:
        return {"errors": [{"field": f, "message": m} for f, m in self.errors]}


def _missing() -> SettingsError:
    return SettingsError(404, "no such integration")


def _allowed(who: Principal, account: str) -> None:
    if not who.may(account):
        raise _missing()  # the same answer as for an account that does not exist


def shown(document: Any, key: str = "") -> Any:
    """A stored document for people: every secret as ``"set"``, an access key id as its
    first and last four characters."""
    from siem_plugins.control.secrets import last4
    from siem_plugins.options import is_secret_key

    if isinstance(document, Mapping):
        return {k: shown(v, k) for k, v in document.items()}
    if isinstance(document, list):
        return [shown(v, key) for v in document]
    if key and is_secret_key(key):
        return SHOWN_SECRET if document else ""
    if key == "access_key_id" and isinstance(document, str):
        return last4(document)
    return document


def as_dict(stored: StoredIntegration) -> dict[str, Any]:
    return {
        "name": stored.name,
        "account": stored.account,
        "version": stored.version,
        "enabled": stored.enabled,
        "document": shown(
            {k: v for k, v in stored.document.items() if k not in ("name", "account")}
        ),
        "created": stored.created,
        "updated": stored.updated,
        "updated_by": stored.updated_by,
    }


def stored_of(rt: Runtime, who: Principal, account: str) -> StoredIntegration | None:
    _allowed(who, account)
    assert rt.control is not None
    return rt.control.get(integration_name(account))


def read_integration(rt: Runtime, who: Principal, account: str) -> dict[str, Any] | None:
    found = stored_of(rt, who, account)
    return as_dict(found) if found is not None else None


def actor(who: Principal, via: str) -> Actor:
    return Actor(who.admin_name, who.admin_email, via=f"{via} (token {who.token_id})")


#: What an account's administrator may set (an operator's token may set anything the
#: config may). The rest is the operator's: where the shipper connects (``endpoint_url``,
#: a ``local`` folder, an SMTP server) would otherwise let a customer point the server's
#: own requests at internal addresses or write to its disk.
ACCOUNT_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"enabled", "format", "compression", "start_at", "sink", "notify"}),
    "sink": frozenset(
        {
            "type",
            "bucket",
            "region",
            "prefix",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "sse",
            "kms_key_id",
        }
    ),
    "notify": frozenset({"type", "to", "events"}),
}
ACCOUNT_TYPES = {"format": ("json", "syslog"), "sink": ("s3",), "notify": ("email",)}


def check_account_document(
    document: Mapping[str, Any], stored: Mapping[str, Any] | None = None
) -> None:
    """Refuse what an account's administrator may not set, by field. What the operator
    set in the stored document may stay as it is (a save from the page carries it over);
    only a new or changed value of such a setting is refused."""
    old: Mapping[str, Any] = stored or {}
    errors = []
    for key in document:
        if key in ACCOUNT_KEYS[""] or key in ("name", "account"):
            continue
        if key not in old or old[key] != document[key]:
            errors.append((key, f"{key!r} is not a setting an account can change"))
    for part, allowed in ACCOUNT_TYPES.items():
        value = document.get(part)
        before = old.get(part)
        if value is None or value == before:
            continue  # absent, or as the operator left it
        kind = value.get("type") if isinstance(value, Mapping) else value
        old_kind = before.get("type") if isinstance(before, Mapping) else before
        if kind not in allowed and kind != old_kind:
            errors.append(
                (part, f"{part} must be {' or '.join(repr(a) for a in allowed)} for an account")
            )
        kept = before if isinstance(before, Mapping) else {}
        if isinstance(value, Mapping) and part in ACCOUNT_KEYS:
            errors += [
                (f"{part}.{k}", f"{k!r} is set by the operator, not by an account")
                for k in value
                if k not in ACCOUNT_KEYS[part] and (k not in kept or kept[k] != value[k])
            ]
        elif isinstance(value, Mapping) and {
            k for k in value if k != "type" and (k not in kept or kept[k] != value[k])
        }:
            errors.append((part, f"{part} takes no options from an account"))
    if errors:
        raise SettingsError(422, errors=errors)


def own_credentials(rt: Runtime, document: Mapping[str, Any]) -> None:
    """An account's integration writes with its own AWS key, given now or stored before:
    without one, the sink would fall back to the server's own credentials (its role, its
    environment) and write with them into whatever bucket the account names."""
    assert rt.control is not None
    stored = rt.control.get(str(document["name"]))
    old = (stored.document.get("sink") if stored is not None else None) or {}
    new = document.get("sink") or {}
    missing = [
        (f"sink.{key}", "required: the server's own AWS credentials are never lent to an account")
        for key in ("access_key_id", "secret_access_key")
        if not (isinstance(new, Mapping) and new.get(key)) and not old.get(key)
    ]
    if missing:
        raise SettingsError(422, errors=missing)


def save_integration(
    rt: Runtime,
    who: Principal,
    account: str,
    document: Mapping[str, Any],
    *,
    expected_version: int | None = None,
    probe: bool = True,
    via: str = "the settings API",
) -> dict[str, Any]:
    _allowed(who, account)
    if not who.operator:
        assert rt.control is not None
        before = rt.control.get(integration_name(account))
        check_account_document(document, before.document if before is not None else None)
    for key in ("name", "account"):
        if key in document and document[key] != (
            integration_name(account) if key == "name" else account
        ):
            raise SettingsError(422, errors=[(key, f"{key} comes from the path; leave it out")])
    full = {"name": integration_name(account), "account": account, **document}
    if not who.operator:
        own_credentials(rt, full)
    with _saving(full["name"]):
        rt.refresh()
        try:
            saved = save(
                rt,
                full,
                actor=actor(who, via),
                expected_version=expected_version,
                probe_first=probe,
            )
        except SaveRefused as exc:
            raise SettingsError(422, errors=[(e.field, e.message) for e in exc.errors]) from None
        except VersionConflict as exc:
            raise SettingsError(409, str(exc)) from None
        rt.refresh()
    return as_dict(saved)


def set_enabled(rt: Runtime, who: Principal, account: str, enabled: bool) -> dict[str, Any]:
    found = stored_of(rt, who, account)
    if found is None:
        raise _missing()
    document = {k: v for k, v in found.document.items() if k not in ("name", "account")}
    return save_integration(
        rt,
        who,
        account,
        {**document, "enabled": enabled},
        expected_version=found.version,
        probe=enabled,
    )


def delete_integration(rt: Runtime, who: Principal, account: str) -> None:
    _allowed(who, account)
    assert rt.control is not None
    with _saving(integration_name(account)):
        if not rt.control.delete(integration_name(account)):
            raise _missing()
        from siem_plugins.control.service import record_config_event

        record_config_event(rt, account, actor(who, "the settings API"))
        rt.refresh()


def event_types() -> list[dict[str, str]]:
    from siem_plugins.events import KNOWN_LOG_TYPES, LOG_TYPE_DESCRIPTIONS

    return [
        {"log_type": t, "type": kind, "description": LOG_TYPE_DESCRIPTIONS.get(t, "")}
        for kind, types in KNOWN_LOG_TYPES.items()
        for t in types
    ]


def health_of(rt: Runtime, who: Principal, account: str) -> dict[str, Any]:
    found = stored_of(rt, who, account)
    if found is None:
        raise _missing()
    from siem_plugins.health import Thresholds, collect

    rt.refresh()
    thresholds = Thresholds.for_interval(rt.config.interval)
    report = collect(rt, thresholds=thresholds, names=[found.name], live=True)
    runs = rt.state.recent_runs(found.name, 10)
    destinations = []
    for integ in report:
        for d in integ.destinations:
            r = d.record
            destinations.append(
                {
                    "destination": d.destination,
                    "where": d.where,
                    "state": d.state,
                    "last_success": r.last_success if r else None,
                    "last_attempt": r.last_attempt if r else None,
                    "last_error": r.last_error if r else None,
                    "failures": r.failures if r else 0,
                    "lag_events": d.lag.events if d.lag else None,
                    "lag_seconds": d.lag_seconds,
                }
            )
    return {
        "name": found.name,
        "enabled": found.enabled,
        "destinations": destinations,
        "recent_syncs": [
            {
                "destination": r.destination,
                "started": r.started,
                "finished": r.finished,
                "objects": r.objects,
                "events": r.events,
                "error": r.error,
            }
            for r in runs
        ],
    }


def _built(rt: Runtime, found: StoredIntegration) -> Any:
    try:
        return rt.build_stored(found)
    except Exception as exc:
        raise SettingsError(422, f"the stored settings cannot be used: {exc}") from None


def send_test_object(rt: Runtime, who: Principal, account: str) -> dict[str, Any]:
    """One object holding one test event, at ``{account}/test/...`` (outside the keys of
    the shipped objects, so ``verify`` ignores it); it stays in the bucket."""
    found = stored_of(rt, who, account)
    if found is None:
        raise _missing()
    from siem_plugins.compress import compressor
    from siem_plugins.events import Event, canonicalize
    from siem_plugins.kinds import ObjectMeta
    from siem_plugins.runtime import close_parts

    integ = _built(rt, found)
    try:
        c = canonicalize(test_event(who))
        event = Event(0, account, c.type, c.log_type, c.timestamp, c.raw)
        comp = compressor(integ.config.compression, integ.config.compression_level)
        data = comp.compress(integ.formatter.format([event])) + comp.flush()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
        key = f"{account}/test/{stamp}_siem-plugins-test.{integ.extension}"
        meta = ObjectMeta(
            integration=found.name,
            account=account,
            first_id=0,
            last_id=0,
            count=1,
            format=integ.config.format_name,
            content_type=integ.formatter.content_type,
            content_encoding=comp.content_encoding,
        )
        try:
            with integ.sink.open(key, meta) as writer:
                writer.write(data)
                receipt = writer.commit()
        except Exception as exc:
            reason = f"{integ.sink.describe()}: {' '.join(str(exc).split())}"
            raise SettingsError(422, reason, [("sink", reason)]) from None
        return {"ok": True, "location": receipt.location}
    finally:
        close_parts(integ)


def send_test_email(rt: Runtime, who: Principal, account: str) -> dict[str, Any]:
    found = stored_of(rt, who, account)
    if found is None:
        raise _missing()
    from siem_plugins.events import Event, canonicalize
    from siem_plugins.kinds import Digest
    from siem_plugins.runtime import close_parts

    integ = _built(rt, found)
    try:
        c = canonicalize(test_event(who))
        event = Event(0, account, c.type, c.log_type, c.timestamp, c.raw)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        digest = Digest(
            integration=found.name,
            account=account,
            first_id=0,
            last_id=0,
            total=1,
            counts={c.log_type: 1},
            events=(event,),
            message_id=f"siem.{found.name}.test-{stamp}@siem-plugins",
        )
        try:
            integ.notifier.notify(digest)
        except Exception as exc:
            reason = f"{integ.notifier_label}: {' '.join(str(exc).split())}"
            raise SettingsError(422, reason, [("notify", reason)]) from None
        return {"ok": True, "location": integ.notifier_label}
    finally:
        close_parts(integ)


def test_event(who: Principal) -> dict[str, Any]:
    """The test event: an Account ``config`` event saying it is a test."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "log_type": "config",
        "details": f"Test from Settings - Integrations - SIEM Integration, sent by "
        f"{who.admin_name} ({who.admin_email})",
        "admin_name": who.admin_name,
        "type": "Account",
        "event": "Configuration Test",
        "admin_email": who.admin_email,
        "timestamp": now,
    }
