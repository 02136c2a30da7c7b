"""The built-in ``email`` notifier: one plain-text digest mail per sync, over SMTP.

Settings come from the integration's ``notify`` table layered over the top-level
``[smtp]`` table, so a deployment names its relay once and an integration overrides only
what differs (usually ``to``).

One module per job:

- :mod:`.settings`: the options, checked, as one :class:`~.settings.SMTPSettings`;
- :mod:`.session`: the SMTP session (connect, STARTTLS, login, send, QUIT) under its
  deadline, and the translation of failures into :class:`NotifierError`;
- :mod:`.notifier`: :class:`EmailNotifier`, which wires them to the renderer;
- the mail itself is rendered by :mod:`siem_plugins.builtin.mail`, shared with ``outbox``.
"""

from __future__ import annotations

from siem_plugins import hookimpl
from siem_plugins.builtin.email.notifier import EmailNotifier
from siem_plugins.builtin.email.settings import (
    DEFAULT_DEADLINE,
    DEFAULT_PORTS,
    DEFAULT_TIMEOUT,
    MAX_DEADLINE_S,
    SECURITIES,
    SMTPSettings,
)
from siem_plugins.builtin.mail import DEFAULT_SUBJECT_PREFIX, MAX_MAX_LISTED
from siem_plugins.kinds import DEFAULT_MAX_LISTED, NotifierError, NotifierSpec

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_LISTED",
    "DEFAULT_PORTS",
    "DEFAULT_SUBJECT_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_DEADLINE_S",
    "MAX_MAX_LISTED",
    "SECURITIES",
    "EmailNotifier",
    "NotifierError",
    "SMTPSettings",
    "siem_register_notifiers",
]


@hookimpl
def siem_register_notifiers() -> list[NotifierSpec]:
    return [
        NotifierSpec(
            name="email",
            factory=EmailNotifier.from_options,
            description="one plain-text digest mail per sync over SMTP (STARTTLS/TLS, AUTH)",
            section="smtp",
        )
    ]
