"""``siem-plugins check`` says whether each s3 sink's bucket sends event notifications
(what SQS-based SIEM readers depend on): configured with boto3 on moto's S3 over HTTP,
read back by the real command. Information only: the exit status does not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from siem_plugins.builtin.s3.notifications import NO_NOTIFICATIONS_HINT, BucketNotifications
from siem_plugins.testing.s3server import Faults, S3Server
from tests.test_verify import PREFIX, Setup


def aws(server: S3Server, service: str) -> Any:
    """A client of another service of the same moto server (it serves all of them)."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    )


def queue_arn(server: S3Server, name: str) -> str:
    sqs = aws(server, "sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return arn


def prefix_filter(prefix: str) -> dict[str, Any]:
    return {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}


@pytest.fixture
def setup(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> Setup:
    if s3_server.faults is None:
        pytest.skip("moto's SQS and SNS are needed (an external endpoint is in use)")
    s = Setup(tmp_path)
    s.add("acme", s3_server.sink_options(s3_bucket, prefix=PREFIX))
    return s


def check_lines(setup: Setup, *args: str) -> list[str]:
    proc = setup.run("check", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def notifications_line(setup: Setup) -> str:
    lines = check_lines(setup)
    sink = lines.index(f"  sink s3://{setup.integrations[0]['sink']['bucket']}/{PREFIX}: ok")
    assert lines[sink + 1].startswith("  notifications: "), lines
    return lines[sink + 1]


def test_a_bucket_without_notifications_gets_the_hint(setup: Setup) -> None:
    line = notifications_line(setup)
    assert line == f"  notifications: none ({NO_NOTIFICATIONS_HINT})"
    assert "docs/siem/" in line and (Path(__file__).parents[1] / "docs" / "siem").is_dir()


def test_an_sqs_queue_and_eventbridge_are_reported(
    setup: Setup, s3_server: S3Server, s3_bucket: str
) -> None:
    arn = queue_arn(s3_server, "siem-acme-objects")
    s3_server.client().put_bucket_notification_configuration(
        Bucket=s3_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": prefix_filter(PREFIX)}
            ],
            "EventBridgeConfiguration": {},
        },
    )
    assert notifications_line(setup) == (
        f"  notifications: SQS {arn} (prefix '{PREFIX}'); EventBridge on"
    )
    # EventBridge alone; then nothing again once the configuration is emptied.
    client = s3_server.client()
    client.put_bucket_notification_configuration(
        Bucket=s3_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    assert notifications_line(setup) == "  notifications: EventBridge on"
    client.put_bucket_notification_configuration(Bucket=s3_bucket, NotificationConfiguration={})
    assert notifications_line(setup).startswith("  notifications: none (")


def test_a_filter_that_leaves_the_sinks_objects_out_is_pointed_out(
    setup: Setup, s3_server: S3Server, s3_bucket: str
) -> None:
    sns = aws(s3_server, "sns")
    topic = sns.create_topic(Name="siem-other")["TopicArn"]
    arn = queue_arn(s3_server, "siem-removed-only")
    s3_server.client().put_bucket_notification_configuration(
        Bucket=s3_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {
                    "TopicArn": topic,
                    "Events": ["s3:ObjectCreated:Put"],
                    "Filter": prefix_filter("other/"),
                }
            ],
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectRemoved:*"]}],
        },
    )
    assert notifications_line(setup) == (
        f"  notifications: SQS {arn} (not for new objects: s3:ObjectRemoved:*); "
        f"SNS {topic} (prefix 'other/': not this sink's)"
    )


def test_access_denied_is_unknown_not_a_failure(setup: Setup, s3_faults: Faults) -> None:
    s3_faults.fail_next(
        status=403, code="AccessDenied", message="Access Denied", op="GetBucketNotification"
    )
    line = notifications_line(setup)
    assert line == "  notifications: unknown (s3:GetBucketNotification denied)"
    assert s3_faults.injected("GetBucketNotification") == 1
    # Another error is shown as it is (the request id and no secret), still not a failure.
    setup.integrations[0]["sink"]["max_attempts"] = 1  # no retries: one fault is enough
    setup.write()
    s3_faults.fail_next(status=500, code="InternalError", op="GetBucketNotification")
    line = notifications_line(setup)
    assert line.startswith("  notifications: unknown (s3://") and "InternalError" in line
    assert setup.integrations[0]["sink"]["secret_access_key"] not in line


def test_no_probe_asks_nothing(setup: Setup, s3_faults: Faults) -> None:
    lines = check_lines(setup, "--no-probe")
    assert not any("notifications" in line for line in lines)
    assert s3_faults.count("GetBucketNotification") == 0


def test_the_reply_is_read_as_s3_writes_it() -> None:
    """Filter rule names are case-insensitive in S3's replies (``Prefix`` or ``prefix``)."""
    got = BucketNotifications.from_response(
        {
            "LambdaFunctionConfigurations": [
                {
                    "LambdaFunctionArn": "arn:aws:lambda:eu-central-1:1:function:f",
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "Suffix", "Value": ".gz"}]}},
                }
            ]
        }
    )
    assert got and not got.event_bridge
    assert got.describe("siem/") == "Lambda arn:aws:lambda:eu-central-1:1:function:f (suffix '.gz')"
    assert not BucketNotifications.from_response({})
