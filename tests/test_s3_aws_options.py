"""The ``s3`` sink's AWS options against moto's server over HTTP (nothing mocked): a role
assumed through moto's STS (which the same server answers) and refreshed, the storage
class, tags, ACL and checksum on both the PutObject and the multipart path, and the
configuration errors that name the option."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from siem_plugins.builtin.s3 import S3Sink, SinkError
from siem_plugins.builtin.s3.client import make_client, refresh_windows
from siem_plugins.builtin.s3.settings import S3Settings
from siem_plugins.kinds import ObjectMeta
from siem_plugins.options import ConfigError, Options
from siem_plugins.testing.s3server import Faults, Request, S3Server

MiB = 1024 * 1024
PATH = "integration[0].sink"
ROLE = "arn:aws:iam::111122223333:role/siem-writer"
META = ObjectMeta(
    integration="acme-json",
    account="acme",
    first_id=1,
    last_id=2,
    count=2,
    format="json",
    content_type="application/x-ndjson",
    content_encoding="gzip",
)
SMALL = b'{"a":1}\n{"b":2}\n'
LARGE = bytes(range(256)) * (6 * MiB // 256)
SHAPES = pytest.mark.parametrize(
    ("body", "create"),
    [(SMALL, "PutObject"), (LARGE, "CreateMultipartUpload")],
    ids=["put", "multipart"],
)


@pytest.fixture(autouse=True)
def _moto_only(s3_server: S3Server) -> None:
    if s3_server.faults is None:
        pytest.skip("needs the test kit's moto server (STS, recorded requests)")


def options(server: S3Server, bucket: str, **extra: Any) -> Options:
    return Options(
        server.sink_options(bucket, part_size=5 * MiB, **extra),
        path=PATH,
        file="siem.toml",
        integration="acme-json",
    )


def make_sink(server: S3Server, bucket: str, **extra: Any) -> S3Sink:
    opts = options(server, bucket, **extra)
    sink = S3Sink.from_options(opts)
    opts.finish()  # every key passed must be one the sink reads
    return sink


def ship(sink: S3Sink, key: str, body: bytes) -> None:
    with sink.open(key, META) as writer:
        writer.write(body)
        writer.commit()


def access_key(request: Request) -> str:
    """The access key a request was signed with."""
    found = re.search(r"Credential=([^/]+)/", request.headers.get("authorization", ""))
    assert found, request
    return found.group(1)


def ops(faults: Faults, *names: str) -> list[Request]:
    return [r for r in faults.requests if r.op in names]


# --------------------------------------------------------------------------- object options


@SHAPES
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_storage_class_tags_acl_and_checksum_reach_the_object(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str, body: bytes, create: str, algorithm: str
) -> None:
    tags = {"team": "sec ops", "source": "siem/plugins", "cost+center": "a=b+c @x:y"}
    sink = make_sink(
        s3_server,
        s3_bucket,
        storage_class="STANDARD_IA",
        tags=tags,
        acl="bucket-owner-full-control",
        checksum_algorithm=algorithm,
    )
    ship(sink, "o.json.gz", body)

    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key="o.json.gz", ChecksumMode="ENABLED")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head.get(f"Checksum{algorithm}")  # stored: S3 checked what botocore sent
    got = client.get_object_tagging(Bucket=s3_bucket, Key="o.json.gz")["TagSet"]
    assert {t["Key"]: t["Value"] for t in got} == tags  # URL-encoding round-tripped
    grants = client.get_object_acl(Bucket=s3_bucket, Key="o.json.gz")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert client.get_object(Bucket=s3_bucket, Key="o.json.gz")["Body"].read() == body

    (first,) = ops(s3_faults, create)
    assert first.headers["x-amz-acl"] == "bucket-owner-full-control"
    assert first.headers["x-amz-storage-class"] == "STANDARD_IA"
    assert "sec%20ops" in first.headers["x-amz-tagging"]
    if create == "PutObject":
        assert f"x-amz-checksum-{algorithm.lower()}" in first.headers
    else:
        assert first.headers["x-amz-checksum-algorithm"] == algorithm
        parts = ops(s3_faults, "UploadPart")
        assert len(parts) == 2
        assert all(f"x-amz-checksum-{algorithm.lower()}" in p.headers for p in parts)


@SHAPES
def test_without_the_options_nothing_new_is_sent(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str, body: bytes, create: str
) -> None:
    ship(make_sink(s3_server, s3_bucket), "o.json.gz", body)
    for request in ops(s3_faults, create, "UploadPart", "CompleteMultipartUpload"):
        sent = {k for k in request.headers if k.startswith("x-amz-")}
        assert not sent & {"x-amz-acl", "x-amz-storage-class", "x-amz-tagging"}
        assert not any(k.startswith("x-amz-checksum") for k in sent), sent
    assert not ops(s3_faults, "AssumeRole")


def test_the_probe_sends_the_acl_and_tags(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str
) -> None:
    sink = make_sink(
        s3_server, s3_bucket, storage_class="GLACIER_IR", tags={"a": "b"}, acl="private"
    )
    sink.probe()
    (put,) = ops(s3_faults, "PutObject")
    assert put.headers["x-amz-acl"] == "private"
    assert put.headers["x-amz-tagging"] == "a=b"
    # Not the storage class: a deleted probe would still be billed GLACIER_IR's 90 days.
    assert "x-amz-storage-class" not in put.headers


BAD = [
    ({"storage_class": "COLD"}, "storage_class", "unknown value 'COLD'; choose one of: "),
    ({"acl": "public-read"}, "acl", "choose one of: private, bucket-owner-full-control"),
    ({"checksum_algorithm": "MD5"}, "checksum_algorithm", "choose one of: CRC32, CRC32C"),
    ({"tags": {f"k{i}": "v" for i in range(11)}}, "tags", "at most 10 tags, got 11"),
    ({"tags": {"k" * 129: "v"}}, "tags", "a key is 1-128 characters"),
    ({"tags": {"k": "v" * 257}}, "tags", "a value is at most 256 characters"),
    ({"tags": {"k": 1}}, "tags", "tag 'k': expected a string, got a number"),
    ({"tags": {"aws:x": "v"}}, "tags", "the aws: prefix is reserved"),
    ({"tags": {"k": "a;b"}}, "tags", "S3 allows only letters"),
    ({"tags": "team=sec"}, "tags", "expected a table"),
    ({"role_arn": "arn:aws:iam::1:user/x"}, "role_arn", "expected a role ARN"),
    ({"external_id": "x1"}, "external_id", "only valid with role_arn"),
    ({"role_duration": 900}, "role_duration", "only valid with role_arn"),
    ({"role_arn": ROLE, "role_duration": 899}, "role_duration", "from 900 (15m) to 43200"),
    ({"role_arn": ROLE, "role_duration": "13h"}, "role_duration", "from 900 (15m) to 43200"),
    ({"role_arn": ROLE, "external_id": "no spaces"}, "external_id", "must be 2-1224"),
    ({"role_arn": ROLE, "role_session_name": "a b"}, "role_session_name", "must be 2-64"),
    ({"role_arn": ROLE, "sts_endpoint_url": "sts.local"}, "sts_endpoint_url", "http(s)://"),
]


@pytest.mark.parametrize(("extra", "key", "message"), BAD, ids=[b[1] for b in BAD])
def test_bad_values_are_located_config_errors(
    s3_server: S3Server, extra: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_sink(s3_server, "bkt", **extra)
    assert caught.value.located().startswith(f"siem.toml: {PATH}.{key}: ")
    assert message in str(caught.value)


def test_the_external_id_is_never_in_an_error(s3_server: S3Server) -> None:
    with pytest.raises(ConfigError) as caught:
        make_sink(s3_server, "bkt", role_arn=ROLE, external_id="secret id!")
    assert "secret id" not in caught.value.located()


def test_storage_classes_come_from_botocore(s3_server: S3Server) -> None:
    for name in ("STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "DEEP_ARCHIVE"):
        assert make_sink(s3_server, "bkt", storage_class=name).settings.storage_class == name


def test_crc32c_without_the_crt_is_refused_when_the_config_is_read(
    s3_server: S3Server,
) -> None:
    # botocore reads BOTO_DISABLE_CRT at import: a fresh interpreter is a host without it.
    code = (
        "from siem_plugins.options import Options, ConfigError\n"
        "from siem_plugins.builtin.s3.settings import S3Settings\n"
        "try:\n"
        "    S3Settings.from_options(Options({'bucket': 'bkt', 'checksum_algorithm': 'CRC32C'},"
        " path='integration[0].sink'))\n"
        "except ConfigError as exc:\n"
        "    print(exc.located())\n"
    )
    env = {**os.environ, "BOTO_DISABLE_CRT": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.startswith("integration[0].sink.checksum_algorithm: CRC32C needs the AWS CRT")
    assert "pip install 'siem-plugins[crc32c]'" in out.stdout


# --------------------------------------------------------------------------- role


class Clock:
    """The time the role's credentials are judged by: the real one, plus ``ahead``."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.ahead)


def role_sink(server: S3Server, bucket: str, clock: Clock | None = None, **extra: Any) -> S3Sink:
    opts = options(server, bucket, role_arn=ROLE, external_id="acme-7f3a", **extra)
    settings = S3Settings.from_options(opts)
    opts.finish()
    return S3Sink(settings, make_client(settings, clock=clock))


def test_objects_are_written_with_the_roles_credentials(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str
) -> None:
    before = len(s3_faults.requests)
    sink = role_sink(s3_server, s3_bucket)
    assert len(s3_faults.requests) == before  # building the sink asks nobody
    ship(sink, "a.json.gz", SMALL)
    ship(sink, "b.json.gz", LARGE)

    (assume,) = ops(s3_faults, "AssumeRole")
    assert assume.params["RoleArn"] == ROLE
    assert assume.params["ExternalId"] == "acme-7f3a"
    assert assume.params["RoleSessionName"] == "siem-plugins-acme-json"
    assert assume.params["DurationSeconds"] == "3600"
    assert access_key(assume) == s3_server.access_key_id  # asked with the base keys
    writes = ops(s3_faults, "PutObject", "CreateMultipartUpload", "UploadPart")
    assert len(writes) == 4
    temporary = {access_key(r) for r in writes}
    assert len(temporary) == 1 and temporary.pop().startswith("ASIA")  # STS's, not ours
    assert all("x-amz-security-token" in r.headers for r in writes)
    assert sorted(
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    ) == [
        "a.json.gz",
        "b.json.gz",
    ]


def test_the_credentials_are_refreshed_before_they_expire(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str
) -> None:
    clock = Clock()
    sink = role_sink(s3_server, s3_bucket, clock, role_duration="15m")
    advisory, mandatory = refresh_windows(900)
    assert (advisory, mandatory) == (300, 150)

    ship(sink, "1.json.gz", SMALL)
    ship(sink, "2.json.gz", SMALL)
    assert len(ops(s3_faults, "AssumeRole")) == 1  # fresh: used for every request
    # 700 s on, 200 s are left: inside the advisory window, outside the mandatory one.
    # (Under the moved clock the new credentials look 700 s old too, so each request of
    # this object assumes the role again; the real clock never jumps.)
    clock.ahead = 900 - advisory + 100
    ship(sink, "3.json.gz", SMALL)
    refreshed = len(ops(s3_faults, "AssumeRole"))
    assert refreshed >= 2
    clock.ahead = 0  # the newest credentials are fresh: no further AssumeRole
    ship(sink, "4.json.gz", SMALL)
    ship(sink, "5.json.gz", LARGE)

    assumes = ops(s3_faults, "AssumeRole")
    assert len(assumes) == refreshed
    assert {a.params["DurationSeconds"] for a in assumes} == {"900"}
    puts = [access_key(r) for r in ops(s3_faults, "PutObject")]
    assert puts[0] == puts[1] != puts[2]  # new credentials from the refresh on
    assert puts[3] == access_key(ops(s3_faults, "UploadPart")[-1])
    assert len(s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]) == 5


def test_a_failed_early_refresh_keeps_the_valid_credentials(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str
) -> None:
    clock = Clock()
    sink = role_sink(s3_server, s3_bucket, clock, role_duration=900)
    ship(sink, "1.json.gz", SMALL)
    clock.ahead = 700
    s3_faults.fail_next(status=503, code="ServiceUnavailable", op="AssumeRole", n=10)
    ship(sink, "2.json.gz", SMALL)  # botocore goes on with the old ones, still valid
    assert len(ops(s3_faults, "PutObject")) == 2
    assert s3_faults.injected("AssumeRole") >= 1


def test_expired_credentials_are_replaced_before_the_request(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str
) -> None:
    clock = Clock()
    sink = role_sink(s3_server, s3_bucket, clock, role_duration=3600)
    ship(sink, "1.json.gz", SMALL)
    # Beyond the mandatory window (600 s before expiry): every request waits for new ones.
    clock.ahead = 3600 - 500
    s3_faults.fail_next(status=403, code="AccessDenied", op="AssumeRole")
    with pytest.raises(SinkError) as caught:
        ship(sink, "2.json.gz", SMALL)
    assert caught.value.permanent and caught.value.code == "AccessDenied"
    assert ROLE in str(caught.value)
    assert len(ops(s3_faults, "PutObject")) == 1  # the request was never sent


@pytest.mark.parametrize("path", ["write", "probe"])
def test_a_role_that_cannot_be_assumed_is_a_permanent_error_naming_it(
    s3_server: S3Server, s3_faults: Faults, s3_bucket: str, path: str
) -> None:
    message = f"User: arn:aws:iam::999:user/shipper is not authorized to perform: sts:AssumeRole on resource: {ROLE}"
    s3_faults.fail_next(status=403, code="AccessDenied", message=message, op="AssumeRole")
    sink = role_sink(s3_server, s3_bucket)
    act = sink.probe if path == "probe" else lambda: ship(sink, "a.json.gz", SMALL)
    with pytest.raises(SinkError) as caught:
        act()
    error = caught.value
    assert error.permanent and error.code == "AccessDenied"
    assert f"could not assume role {ROLE}: AccessDenied" in str(error)
    assert s3_server.secret_access_key not in str(error) or s3_server.secret_access_key == "testing"
    assert "acme-7f3a" not in str(error)  # the external id is not repeated
    assert not ops(s3_faults, "PutObject", "CreateMultipartUpload")
    assert len(ops(s3_faults, "AssumeRole")) == 1  # refused: not retried


def test_the_sts_endpoint_can_be_set_apart(s3_server: S3Server, s3_bucket: str) -> None:
    sink = role_sink(s3_server, s3_bucket, sts_endpoint_url="http://127.0.0.1:9")
    assert sink.settings.sts_endpoint_url == "http://127.0.0.1:9"
    with pytest.raises(SinkError) as caught:
        ship(sink, "a.json.gz", SMALL)
    # Nothing listens there: a transient failure, tried again at the next run.
    assert not caught.value.permanent
    assert ROLE in str(caught.value)


def test_the_session_name_defaults_to_the_integration(s3_server: S3Server) -> None:
    opts = Options({"bucket": "bkt", "role_arn": ROLE}, path=PATH, integration="globex syslog")
    assert S3Settings.from_options(opts).role_session_name == "siem-plugins-globex-syslog"
    opts = Options({"bucket": "bkt", "role_arn": ROLE}, path=PATH)
    assert S3Settings.from_options(opts).role_session_name == "siem-plugins-sink"
    settings = S3Settings.from_options(
        Options({"bucket": "bkt", "role_arn": ROLE, "endpoint_url": "http://s3.local"}, path=PATH)
    )
    assert settings.sts_endpoint_url == "http://s3.local"
