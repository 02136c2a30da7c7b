"""Whether a bucket announces new objects: what ``siem-plugins check`` reports.

The SIEMs that read a bucket through a queue (Splunk's SQS-based S3 input, Elastic's
``aws-s3`` input with SQS, Microsoft Sentinel's Amazon S3 connector) only learn of an
object from an S3 event notification; without one, objects land and nobody reads them.
The shipper never changes the bucket's configuration: it only reads it and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: What ``check`` says of a bucket that sends no notification.
NO_NOTIFICATIONS_HINT = (
    "SQS-based readers such as Splunk's, Elastic's and Sentinel's need them: docs/siem/"
)


@dataclass(frozen=True)
class Target:
    """One destination of the bucket's notifications."""

    kind: str  # "SQS", "SNS" or "Lambda"
    arn: str
    events: tuple[str, ...] = ()
    prefix: str = ""  # the configuration's key-name prefix filter, if any
    suffix: str = ""

    def describe(self, key_prefix: str = "") -> str:
        """``SQS arn:...``, with its filters, and a warning when the sink's objects
        (under ``key_prefix``) cannot match them."""
        notes = []
        if self.prefix:
            covered = key_prefix.startswith(self.prefix) or self.prefix.startswith(key_prefix)
            notes.append(f"prefix {self.prefix!r}" + ("" if covered else ": not this sink's"))
        if self.suffix:
            notes.append(f"suffix {self.suffix!r}")
        if self.events and not any(e.startswith("s3:ObjectCreated:") for e in self.events):
            notes.append("not for new objects: " + ", ".join(self.events))
        return f"{self.kind} {self.arn}" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class BucketNotifications:
    """A bucket's event notification configuration, as GetBucketNotificationConfiguration
    returns it."""

    targets: tuple[Target, ...] = ()
    event_bridge: bool = False

    @classmethod
    def from_response(cls, reply: Any) -> BucketNotifications:
        targets = []
        for section, kind, arn_key in (
            ("QueueConfigurations", "SQS", "QueueArn"),
            ("TopicConfigurations", "SNS", "TopicArn"),
            ("LambdaFunctionConfigurations", "Lambda", "LambdaFunctionArn"),
        ):
            for config in reply.get(section) or ():
                rules = {
                    str(r.get("Name", "")).lower(): str(r.get("Value", ""))
                    for r in (config.get("Filter") or {}).get("Key", {}).get("FilterRules", ())
                }
                targets.append(
                    Target(
                        kind,
                        str(config.get(arn_key, "")),
                        tuple(config.get("Events") or ()),
                        rules.get("prefix", ""),
                        rules.get("suffix", ""),
                    )
                )
        return cls(tuple(targets), "EventBridgeConfiguration" in reply)

    def __bool__(self) -> bool:
        return bool(self.targets) or self.event_bridge

    def describe(self, key_prefix: str = "") -> str:
        """``SQS arn:aws:sqs:...; EventBridge on``, or ``none (...hint...)``; filters
        that leave out objects under ``key_prefix`` are pointed out."""
        parts = [t.describe(key_prefix) for t in self.targets]
        if self.event_bridge:
            parts.append("EventBridge on")
        return "; ".join(parts) if parts else f"none ({NO_NOTIFICATIONS_HINT})"
