"""The ``email`` notifier itself: renders a digest (:mod:`siem_plugins.builtin.mail`) and
sends it through the relay (:mod:`.session`), one mail per sync."""

from __future__ import annotations

import logging

from siem_plugins.builtin.email.session import SMTPRelay, reply
from siem_plugins.builtin.email.settings import SMTPSettings
from siem_plugins.builtin.mail import MailTemplate
from siem_plugins.kinds import Digest, NotifierBase, Problem
from siem_plugins.options import Options

# The plugin's logger, the same for all its modules (and as named before they were split).
log = logging.getLogger("siem_plugins.builtin.email")


class EmailNotifier(NotifierBase):
    """Sends one digest mail per sync. Implements :class:`~siem_plugins.kinds.Notifier`."""

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        #: Renders the digests; ``template.render(digest)`` previews a mail.
        self.template = MailTemplate(
            settings.sender,
            settings.recipients,
            subject_prefix=settings.subject_prefix,
            max_listed=settings.max_listed,
        )
        self._relay = SMTPRelay(settings)
        #: How many events the body lists (the pipeline puts no more in a digest).
        self.max_listed = settings.max_listed

    @classmethod
    def from_options(cls, options: Options) -> EmailNotifier:
        """The notifier for an integration's ``notify`` table (over ``[smtp]``)."""
        settings = SMTPSettings.from_options(options)
        try:
            return cls(settings)
        except OSError as exc:
            # Only the CA bundle is read here: missing, unreadable or not PEM (SSLError).
            raise options.error(
                "ca_file", f"cannot load CA bundle {settings.ca_file!r}: {exc}"
            ) from None

    def describe(self) -> str:
        """Where mail goes: ``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        return self.settings.url

    @property
    def url(self) -> str:
        """Where mail goes, for messages: ``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        return self.settings.url

    @property
    def recipients(self) -> list[str]:
        """The recipients' addresses."""
        return self.settings.recipient_addrs

    @property
    def sender(self) -> str:
        """The sender's address."""
        return self.settings.sender.addr

    def notify(self, digest: Digest) -> None:
        refused = self._relay.send(self.template.render(digest))
        if refused:
            log.warning(
                "%s: digest %s: recipients refused: %s",
                self.url,
                digest.message_id,
                ", ".join(
                    f"{addr} ({reply(code, text)})" for addr, (code, text) in refused.items()
                ),
            )
        log.info(
            "%s: sent digest %s (%d events) to %d recipient(s)",
            self.url,
            digest.message_id,
            digest.total,
            len(self.settings.recipients) - len(refused),
        )

    def probe(self) -> None:
        self._relay.probe()

    def notify_problem(self, problem: Problem) -> None:
        """Mail the admins that the bucket fails, or works again (to the digests' ``to``)."""
        refused = self._relay.send(self.template.render_problem(problem))
        log.info(
            "%s: told %d recipient(s) that %s %s",
            self.url,
            len(self.settings.recipients) - len(refused),
            problem.where,
            "works again" if problem.recovered else "is failing",
        )

    def __repr__(self) -> str:
        return f"EmailNotifier({self.url}, to={self.recipients!r})"
