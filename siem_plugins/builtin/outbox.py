"""The built-in ``outbox`` notifier: the email digest written as ``.eml`` files to a folder.

For previews, air-gapped hosts (a relay picks the files up) and the demo: the message is
rendered by the same :class:`~siem_plugins.builtin.mail.MailTemplate` the ``email``
notifier sends. One file per digest, named after the id range, so a replayed digest
overwrites itself instead of duplicating.
"""

from __future__ import annotations

import os
from pathlib import Path

from siem_plugins import hookimpl
from siem_plugins.builtin.mail import MailTemplate, read_max_listed, read_recipients, read_sender
from siem_plugins.kinds import Digest, NotifierBase, NotifierSpec, Problem
from siem_plugins.options import Options


class OutboxNotifier(NotifierBase):
    """Writes one ``.eml`` file per digest. Implements :class:`~siem_plugins.kinds.Notifier`."""

    def __init__(self, folder: Path, template: MailTemplate) -> None:
        self.folder = folder
        self.template = template
        self.max_listed = template.max_listed

    @classmethod
    def from_options(cls, options: Options) -> OutboxNotifier:
        """The notifier for a ``notify`` table with ``path``, ``from``, ``to``, ``max_listed``."""
        folder = Path(options.string("path", required=True))
        sender = read_sender(options)
        recipients = [mailbox for _, mailbox in read_recipients(options)]
        max_listed = read_max_listed(options)
        if not recipients:
            raise options.error("to", "at least one recipient is needed")
        return cls(folder, MailTemplate(sender, recipients, max_listed=max_listed))

    def notify(self, digest: Digest) -> None:
        target = (
            self.folder / digest.integration / (f"{digest.first_id:020d}-{digest.last_id:020d}.eml")
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        self._write(target, self.template.render(digest).as_bytes())

    def notify_problem(self, problem: Problem) -> None:
        """The mail about a failing (or recovered) bucket, as
        ``INTEGRATION/problem-failing-SINCE.eml`` (or ``problem-recovered-...``)."""
        state = "recovered" if problem.recovered else "failing"
        since = problem.since.replace(":", "")
        target = self.folder / problem.integration / f"problem-{state}-{since}.eml"
        self._write(target, self.template.render_problem(problem).as_bytes())

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # whole or not at all; a message sent again replaces itself

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
