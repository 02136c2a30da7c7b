"""The built-in ``outbox`` notifier: the email digest written as ``.eml`` files to a folder.

For previews, air-gapped hosts (a relay picks the files up) and the demo: the message is
exactly the one the ``email`` notifier would send. One file per digest, named after the
id range, so a replayed digest overwrites itself instead of duplicating.
"""

from __future__ import annotations

import os
from pathlib import Path

from siem_plugins import hookimpl
from siem_plugins.builtin.email import (
    DEFAULT_MAX_LISTED,
    MAX_MAX_LISTED,
    EmailNotifier,
    _mailbox,
)
from siem_plugins.kinds import Digest, NotifierBase, NotifierSpec
from siem_plugins.options import Options


class OutboxNotifier(NotifierBase):
    def __init__(self, folder: Path, builder: EmailNotifier) -> None:
        self.folder = folder
        self._builder = builder
        self.max_listed = builder.max_listed

    @classmethod
    def from_options(cls, options: Options) -> OutboxNotifier:
        folder = Path(options.string("path", required=True))
        sender = options.string("from", required=True)
        try:
            _mailbox(sender)
        except ValueError as exc:
            raise options.error("from", str(exc)) from None
        recipients = options.strings("to", required=True) or []
        for i, rcpt in enumerate(recipients):
            try:
                _mailbox(rcpt)
            except ValueError as exc:
                raise options.error("to", f"item {i}: {exc}") from None
        max_listed = options.integer("max_listed", DEFAULT_MAX_LISTED, min=0, max=MAX_MAX_LISTED)
        try:
            # Only its message builder is used: no connection is ever made.
            builder = EmailNotifier(
                "localhost",
                sender=sender,
                recipients=recipients,
                security="none",
                max_listed=max_listed,
            )
        except ValueError as exc:
            raise options.error("to", str(exc)) from None
        return cls(folder, builder)

    def notify(self, digest: Digest) -> None:
        target = (
            self.folder / digest.integration / (f"{digest.first_id:020d}-{digest.last_id:020d}.eml")
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(self._builder.build_message(digest).as_bytes())
        os.replace(tmp, target)

    def probe(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not os.access(self.folder, os.W_OK):
            raise PermissionError(f"{self.folder} is not writable")

    def describe(self) -> str:
        return f"outbox {self.folder}"


@hookimpl
def siem_register_notifiers() -> list[NotifierSpec]:
    return [
        NotifierSpec(
            name="outbox",
            factory=OutboxNotifier.from_options,
            description="email digests written as .eml files to a folder (path = ...)",
        )
    ]
