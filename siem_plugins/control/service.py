"""Saving an integration kept as data: the one path the CLI, the API and the page share.

A save is validated by the code that validates ``siem.toml`` (the same rules and
messages, located by field: ``sink.bucket``), checked against the integrations in use
(names, two integrations writing the same keys), probed as ``check`` probes (a probe
object written and deleted; the SMTP server reached), sealed and stored in one
transaction, and recorded as an Account event of log type ``config`` in the account's
own events, shaped as the product documentation's example. Anything refused is refused
whole: nothing is half-saved.

Secrets are write-only: a save that leaves a secret out (or empty) keeps the stored one,
so a form never has to show it to send it back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from siem_plugins.control.secrets import PREFIX as SEALED_PREFIX
from siem_plugins.control.secrets import SecretKeyError
from siem_plugins.control.store import StoredIntegration, seal, unseal
from siem_plugins.options import ConfigError, is_secret_key
from siem_plugins.runtime import Integration, Runtime, close_parts

log = logging.getLogger(__name__)

_FIELD_RE = re.compile(r"^integration\[\d+\]\.?")


@dataclass(frozen=True)
class FieldError:
    """One reason a save was refused: the field it is about (``sink.bucket``; empty for
    the whole integration) and what is wrong, in words a form can show next to it."""

    field: str
    message: str


class SaveRefused(Exception):
    """A save was refused; ``errors`` say why, field by field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field or 'integration'}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Actor:
    """Who saves: an account's administrator (by token) or the operator."""

    name: str
    email: str
    via: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>" + (f" via {self.via}" if self.via else "")


def field_of(error: ConfigError) -> str:
    """A config error's key path as a field of the integration (``sink.bucket``); a
    component's ``type`` is the component's own field (``format = "xml"``: ``format``)."""
    field = _FIELD_RE.sub("", error.path or "")
    component, _, key = field.partition(".")
    return component if key == "type" else field


#: What a read shows instead of a secret (``GET`` then ``PUT`` sends it back unchanged).
SHOWN_SECRET = "set"  # noqa: S105 (a placeholder shown instead of a secret, not one)


def keep_secrets(document: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``document`` with each secret it leaves out, leaves empty or sends back as it was
    shown (``"set"``) taken from ``stored`` (still sealed): secrets are written, never
    read back. An access key id sent back as it was shown (``AKIA…WXYZ``) is kept too."""
    from siem_plugins.control.secrets import last4

    out = dict(document)
    if stored is None:
        return out
    for key, old in stored.items():
        new = out.get(key)
        if isinstance(old, Mapping):
            if isinstance(new, Mapping):
                out[key] = keep_secrets(new, old)
            continue
        sealed = is_secret_key(key) and isinstance(old, str) and old.startswith(SEALED_PREFIX)
        kept_secret = sealed and new in (None, "", SHOWN_SECRET)
        shown_id = key == "access_key_id" and isinstance(old, str) and new == last4(old)
        if kept_secret or shown_id:
            out[key] = old
    return out


def validate(rt: Runtime, document: Mapping[str, Any]) -> Integration:
    """The document (secrets in clear) built as the config's integrations are, and
    checked against the others in use; the caller closes it. Raises :class:`SaveRefused`."""
    name = document.get("name")
    label = f"integration {name!r}" if isinstance(name, str) else "integration"
    try:
        integ = rt.build_document(document, label=label)
    except ConfigError as exc:
        raise SaveRefused([FieldError(field_of(exc), exc.message)]) from None
    try:
        rt.check_new(integ)
    except ConfigError as exc:
        close_parts(integ)
        raise SaveRefused([FieldError(exc.path or "", exc.message)]) from None
    return integ


def probe(integ: Integration) -> list[FieldError]:
    """What ``check`` does for one integration: write and delete a probe object, reach
    the notifier's server. One error per destination that failed."""
    errors = []
    for field, part, where in (
        ("sink", integ.sink, integ.sink.describe()),
        ("notify", integ.notifier, integ.notifier_label),
    ):
        try:
            part.probe()
        except Exception as exc:
            errors.append(FieldError(field, f"{where}: {' '.join(str(exc).split())}"))
    return errors


def save(
    rt: Runtime,
    document: Mapping[str, Any],
    *,
    actor: Actor,
    expected_version: int | None = None,
    probe_first: bool = True,
    record_event: bool = True,
) -> StoredIntegration:
    """Validate, probe, seal and store an integration; record the change as a ``config``
    event of its account. Raises :class:`SaveRefused` (nothing stored) or
    :class:`~siem_plugins.control.store.VersionConflict`."""
    assert rt.control is not None
    name = document.get("name")
    stored = rt.control.get(name) if isinstance(name, str) else None
    if stored is not None and document.get("account", name) != stored.account:
        raise SaveRefused([FieldError("account", "an integration's account cannot change")])
    merged = keep_secrets(document, stored.document if stored else None)
    try:
        plain = unseal(merged, rt.secret_box)
    except SecretKeyError as exc:
        raise SaveRefused([FieldError("", str(exc))]) from None
    integ = validate(rt, plain)
    try:
        if probe_first and integ.config.enabled:
            errors = probe(integ)
            if errors:
                raise SaveRefused(errors)
        try:
            sealed = seal(merged, rt.secret_box)
        except SecretKeyError as exc:
            raise SaveRefused([FieldError("", str(exc))]) from None
        saved = rt.control.put(sealed, updated_by=actor.label, expected_version=expected_version)
    finally:
        close_parts(integ)
    if record_event:
        try:
            record_config_event(rt, saved.account, actor)
        except Exception as exc:  # the save stands; say so rather than report a failure
            log.error(
                "%s: saved as version %d, but its config event could not be recorded: %s",
                saved.name,
                saved.version,
                " ".join(str(exc).split()),
            )
    return saved


def record_config_event(rt: Runtime, account: str, actor: Actor) -> None:
    """The change as the account's own event, shaped as the product documentation's
    example, so it ships to the customer's bucket like any other."""
    from siem_plugins.control.store import store_url
    from siem_plugins.events import canonicalize
    from siem_plugins.storage import open_store

    event = config_event(actor)
    store = open_store(store_url(rt.config))
    try:
        store.append(account, [canonicalize(event)])
    finally:
        store.close()


def config_event(actor: Actor, now: datetime | None = None) -> dict[str, Any]:
    """``Administrator NAME (EMAIL) changed Settings - Integrations - SIEM Integration``."""
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "log_type": "config",
        "details": f"Administrator {actor.name} ({actor.email}) changed Settings - "
        "Integrations - SIEM Integration ",
        "admin_name": actor.name,
        "type": "Account",
        "event": "Configuration Change",
        "admin_email": actor.email,
        "timestamp": when,
    }
