"""The built-in S3 sink against a real HTTP S3 endpoint (moto, or SIEM_TEST_S3_ENDPOINT).

Nothing here mocks boto3: every request crosses a socket, and faults are injected by
the server's middleware, so botocore's retries and the sink's upload logic run for real.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import secrets
import socket
import threading
import time
import tracemalloc
from typing import Any
from urllib.parse import parse_qs

import pytest

from siem_plugins.builtin.s3 import (
    DEFAULT_PART_SIZE,
    S3ObjectWriter,
    S3Sink,
    SinkError,
    siem_register_sinks,
    to_sink_error,
)
from siem_plugins.builtin.s3 import writer as writer_module
from siem_plugins.keys import object_key, parse_object_key
from siem_plugins.kinds import ObjectMeta, Sink
from siem_plugins.options import ConfigError, Options
from siem_plugins.testing.s3server import Faults, S3Server

MiB = 1024 * 1024
PATH = "integration[0].sink"
FILE = "siem.toml"

META = ObjectMeta(
    integration="acme-json",
    account="acme",
    first_id=101,
    last_id=250,
    count=150,
    format="json",
    content_type="application/x-ndjson",
    content_encoding="gzip",
)


def make_sink(server: S3Server, bucket: str, **extra: Any) -> S3Sink:
    options = Options(server.sink_options(bucket, **extra), path=PATH, file=FILE)
    sink = S3Sink.from_options(options)
    options.finish()  # as the host does: every key the test passes must be understood
    return sink


def keys(server: S3Server, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return [obj["Key"] for obj in listing.get("Contents", [])]


def open_uploads(server: S3Server, bucket: str) -> list[str]:
    listing = server.client().list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


def ship(sink: S3Sink, key: str, body: bytes) -> None:
    with sink.open(key, META) as writer:
        writer.write(body)
        writer.commit()


#: Bodies of the two shapes an object can take with ``part_size = 5 MiB``: at most one
#: part is one PutObject; more is a multipart upload.
SMALL = b"payload"
LARGE = bytes(range(256)) * (6 * MiB // 256)


# --------------------------------------------------------------------------- happy paths


def test_small_object_round_trips_with_metadata(s3_server: S3Server, s3_bucket: str) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="acme")
    with sink.open("2024/01/02/acme-101-250.json.gz", META) as writer:
        writer.write(b'{"id":101}\n')
        writer.write(b'{"id":102}\n')
        receipt = writer.commit()

    full_key = "acme/2024/01/02/acme-101-250.json.gz"
    assert receipt.key == "2024/01/02/acme-101-250.json.gz"
    assert receipt.location == f"s3://{s3_bucket}/{full_key}"
    assert receipt.size == 22
    assert receipt.meta == META
    got = s3_server.client().get_object(Bucket=s3_bucket, Key=full_key)
    assert got["Body"].read() == b'{"id":101}\n{"id":102}\n'
    assert got["ContentType"] == "application/x-ndjson"
    assert got["ContentEncoding"] == "gzip"
    assert got["Metadata"] == {
        "siem-integration": "acme-json",
        "siem-account": "acme",
        "siem-first-id": "101",
        "siem-last-id": "250",
        "siem-count": "150",
        "siem-format": "json",
    }
    assert keys(s3_server, s3_bucket) == [full_key]
    assert open_uploads(s3_server, s3_bucket) == []


def test_empty_object_keeps_content_type_and_metadata(s3_server: S3Server, s3_bucket: str) -> None:
    # One PutObject with every argument a multipart upload would have had.
    sink = make_sink(s3_server, s3_bucket, sse="AES256")
    plain = ObjectMeta(**{**_fields(META), "content_encoding": None})
    receipt = sink.open("empty.json", plain).commit()

    assert receipt.size == 0
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="empty.json")
    assert head["ContentLength"] == 0
    assert head["ContentType"] == "application/x-ndjson"
    assert "ContentEncoding" not in head
    assert head["Metadata"]["siem-first-id"] == "101"
    assert head["ServerSideEncryption"] == "AES256"
    assert open_uploads(s3_server, s3_bucket) == []


def test_large_object_is_uploaded_in_parts(s3_server: S3Server, s3_bucket: str) -> None:
    data = os.urandom(12 * MiB)
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    with sink.open("big.bin", META) as writer:
        for start in range(0, len(data), 1 * MiB + 7):  # chunks that straddle part edges
            writer.write(data[start : start + 1 * MiB + 7])
        receipt = writer.commit()

    assert receipt.size == len(data)
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="big.bin")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB: three parts
    assert got["Metadata"]["siem-count"] == "150"
    if s3_server.faults is not None:
        assert s3_server.faults.count("UploadPart") == 3
        assert s3_server.faults.count("CompleteMultipartUpload") == 1


def test_abort_with_a_part_upload_in_flight_leaves_nothing(
    s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    writer = sink.open("inflight.bin", META)
    writer.write(os.urandom(6 * MiB))  # handed to the background uploader
    writer.write(b"tail")
    writer.abort()
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("siem-s3-upload")]


# --------------------------------------------------------------------------- requests and memory


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(0, ["PutObject"], id="empty"),
        pytest.param(100, ["PutObject"], id="small"),
        pytest.param(5 * MiB, ["PutObject"], id="one-part"),
        pytest.param(
            5 * MiB + 1,
            ["CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload"],
            id="one-part-and-a-byte",
        ),
        pytest.param(
            12 * MiB,
            ["CreateMultipartUpload", *["UploadPart"] * 3, "CompleteMultipartUpload"],
            id="three-parts",
        ),
    ],
)
def test_requests_per_object(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, size: int, expected: list[str]
) -> None:
    # An object of at most one part is one PutObject: no multipart upload to create,
    # fill and complete, and none that could be left behind.
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    data = os.urandom(size)
    before = len(s3_faults.requests)
    with sink.open("n.json", META) as writer:
        for start in range(0, size, 300_000):
            writer.write(data[start : start + 300_000])
        writer.commit()

    requests = s3_faults.requests[before:]
    # Around the object, the looks for leftovers of its key (see the clean-up tests).
    assert [r.op for r in requests] == ["ListMultipartUploads", *expected, "ListMultipartUploads"]
    parts = [int(r.headers["content-length"]) for r in requests if r.op == "UploadPart"]
    assert parts[:-1] == [5 * MiB] * (len(parts) - 1)  # every part but the last: part_size
    assert sum(parts) == (size if parts else 0)
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="n.json")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/x-ndjson"
    assert got["ContentEncoding"] == "gzip"
    assert got["Metadata"]["siem-count"] == "150"


@pytest.mark.usefixtures("s3_fast_retries")
def test_a_failed_part_stops_the_object_at_the_next_write(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    writer = sink.open("p.bin", META)
    assert isinstance(writer, S3ObjectWriter)
    s3_faults.fail_next(1, status=403, code="AccessDenied", op="UploadPart")
    writer.write(LARGE)  # the first part goes to the upload thread, and fails there
    upload_id = writer.upload_id
    assert upload_id is not None

    def trickle(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            writer.write(b"x" * 1024)
            time.sleep(0.01)

    with pytest.raises(SinkError, match="AccessDenied"):
        trickle(10)
    assert writer.size < 7 * MiB  # long before the next part was full
    # Aborted by its id at once, whether or not the caller ever aborts the object.
    aborts = [r for r in s3_faults.requests if r.op == "AbortMultipartUpload"]
    assert [parse_qs(r.query)["uploadId"] for r in aborts] == [[upload_id]]
    assert open_uploads(s3_server, s3_bucket) == []
    seen = len(s3_faults.requests)
    writer.abort()
    assert len(s3_faults.requests) == seen
    assert keys(s3_server, s3_bucket) == []


def test_a_dropped_writer_aborts_its_upload_and_publishes_nothing(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    before = len(s3_faults.requests)
    writer = sink.open("d.bin", META)
    assert isinstance(writer, S3ObjectWriter)
    writer.write(LARGE)  # a part on its way, the rest buffered
    upload_id = writer.upload_id
    del writer
    gc.collect()
    requests = s3_faults.requests[before:]

    ops = [r.op for r in requests]
    assert ops[:2] == ["ListMultipartUploads", "CreateMultipartUpload"]  # a look at open only
    assert ops[-1] == "AbortMultipartUpload"
    assert "CompleteMultipartUpload" not in ops
    assert parse_qs(requests[-1].query)["uploadId"] == [upload_id]
    assert keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("siem-s3-upload")]


def test_the_writer_holds_at_most_two_parts(s3_server: S3Server, s3_bucket: str) -> None:
    part = 5 * MiB
    sink = make_sink(s3_server, s3_bucket, part_size=part)
    # Part 3 is held back on its way to the server (botocore's own event hook; the
    # request then goes out as usual), so the writer has to wait for it.
    gate, held = threading.Event(), threading.Event()

    def hold_part_3(request: Any, **_: Any) -> None:
        if "partNumber=3" in request.url:
            held.set()
            gate.wait(30)

    sink.client.meta.events.register("before-send.s3.UploadPart", hold_part_3)
    chunk = os.urandom(256 * 1024)
    tracemalloc.start()
    try:
        writer = sink.open("m.bin", META)
        for _ in range(4 * part // len(chunk)):  # parts 1 and 2 sent, 3 held, 4 full
            writer.write(chunk)
        assert held.wait(10)
        blocked = threading.Thread(target=writer.write, args=(chunk,))
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()  # part 4 may not go while part 3 is in flight
        snapshot = tracemalloc.take_snapshot()
        gate.set()
        blocked.join(10)
        assert not blocked.is_alive()
        writer.commit()
    finally:
        gate.set()
        tracemalloc.stop()

    # The part buffers, allocated where the writer fills them and filled again once their
    # part is uploaded: two, however many parts the object has (the first one grew with
    # the object, so it may be up to 1/8 larger).
    mine = snapshot.filter_traces([tracemalloc.Filter(True, writer_module.__file__)])
    held_bytes = sum(stat.size for stat in mine.statistics("filename"))
    assert 2 * part <= held_bytes <= 2.2 * part
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="m.bin")
    assert got["ContentLength"] == 4 * part + len(chunk)
    assert got["ETag"].strip('"').endswith("-5")


SHAPES = pytest.mark.parametrize(
    ("body", "op"),
    [(SMALL, "PutObject"), (b"", "PutObject"), (LARGE, "CreateMultipartUpload")],
    ids=["small", "empty", "parts"],
)


@SHAPES
def test_sse_aes256_is_requested_and_reported(
    s3_server: S3Server, s3_bucket: str, body: bytes, op: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, sse="AES256", part_size=5 * MiB)
    with sink.open("enc.json.gz", META) as writer:
        writer.write(body)
        writer.commit()

    head = s3_server.client().head_object(Bucket=s3_bucket, Key="enc.json.gz")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentEncoding"] == "gzip"
    assert head["Metadata"]["siem-count"] == "150"
    if s3_server.faults is not None:
        (create,) = [r for r in s3_server.faults.requests if r.op == op]
        assert create.headers["x-amz-server-side-encryption"] == "AES256"
        assert create.headers["content-type"] == "application/x-ndjson"
        assert create.headers["content-encoding"] == "gzip"
        assert create.headers["x-amz-meta-siem-first-id"] == "101"


@SHAPES
def test_sse_kms_sends_the_key_id(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, body: bytes, op: str
) -> None:
    key_id = "arn:aws:kms:us-east-1:111122223333:key/1234abcd"
    sink = make_sink(s3_server, s3_bucket, sse="aws:kms", kms_key_id=key_id, part_size=5 * MiB)
    with sink.open("kms.json", META) as writer:
        writer.write(body)
        writer.commit()

    (create,) = [r for r in s3_faults.requests if r.op == op]
    assert create.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert create.headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id


def test_describe_and_registration(s3_server: S3Server, s3_bucket: str) -> None:
    (spec,) = siem_register_sinks()
    assert (spec.name, spec.section) == ("s3", "s3")
    options = Options(s3_server.sink_options(s3_bucket, prefix="acme/logs"), path=PATH)
    sink = spec.factory(options)
    assert isinstance(sink, Sink)
    assert sink.describe() == f"s3://{s3_bucket}/acme/logs/"
    sink.close()


def test_factory_makes_no_network_calls(s3_faults: Faults, s3_server: S3Server) -> None:
    make_sink(s3_server, "never-created-bucket", prefix="x")
    unreachable = Options({"bucket": "bkt", "endpoint_url": "http://127.0.0.1:9"}, path=PATH)
    S3Sink.from_options(unreachable)  # would fail if it connected
    assert s3_faults.requests == []


# --------------------------------------------------------------------------- abort paths


def test_exception_inside_with_aborts(s3_server: S3Server, s3_bucket: str) -> None:
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)

    def ship() -> None:
        with sink.open("x.json", META) as writer:
            writer.write(os.urandom(6 * MiB))  # one part is already on the server
            raise RuntimeError("formatter broke")

    with pytest.raises(RuntimeError, match="formatter broke") as caught:
        ship()
    seen = len(s3_server.faults.requests) if s3_server.faults else 0
    del caught  # its traceback holds the writer
    gc.collect()  # the aborted writer, once collected, must not try to finish the upload
    if s3_server.faults is not None:
        assert len(s3_server.faults.requests) == seen

    assert keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []


def test_abort_is_idempotent_and_harmless_after_commit(s3_server: S3Server, s3_bucket: str) -> None:
    sink = make_sink(s3_server, s3_bucket)
    writer = sink.open("a.json", META)
    writer.write(b"data")
    writer.abort()
    writer.abort()
    with pytest.raises(SinkError, match="aborted"):
        writer.commit()
    with pytest.raises(SinkError, match="aborted"):
        writer.write(b"more")

    done = sink.open("b.json", META)
    done.write(b"kept")
    done.commit()
    done.abort()  # too late to matter: the object stays

    assert keys(s3_server, s3_bucket) == ["b.json"]
    assert open_uploads(s3_server, s3_bucket) == []


def test_writer_dropped_without_commit_publishes_nothing(
    s3_server: S3Server, s3_bucket: str
) -> None:
    # Only commit() publishes: a small object was never sent at all.
    writer = make_sink(s3_server, s3_bucket).open("dropped.json", META)
    writer.write(b"half an object")
    del writer
    gc.collect()

    assert keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []


def test_open_aborts_uploads_left_by_a_killed_run(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    # What a SIGKILLed run leaves behind: an upload of the same key, never completed.
    client.create_multipart_upload(Bucket=s3_bucket, Key="acme/k.json")
    client.create_multipart_upload(Bucket=s3_bucket, Key="acme/k.json.other")
    sink = make_sink(s3_server, s3_bucket, prefix="acme", part_size=5 * MiB)
    with sink.open("k.json", META) as writer:
        # the stale one is gone, and nothing is started before the first full part
        assert open_uploads(s3_server, s3_bucket) == ["acme/k.json.other"]
        writer.write(LARGE)
        assert sorted(open_uploads(s3_server, s3_bucket)) == ["acme/k.json", "acme/k.json.other"]
        writer.commit()

    assert open_uploads(s3_server, s3_bucket) == ["acme/k.json.other"]  # not ours to abort
    assert keys(s3_server, s3_bucket) == ["acme/k.json"]


@pytest.mark.parametrize(
    "names",
    [
        ("a.json", "b.json"),
        # The shipper's own key shape: the sweep of old uploads must not ask either.
        (
            object_key("acme", "2024-01-02T030405Z", 1, 9, "json.gz"),
            object_key("acme", "2024-01-02T030406Z", 10, 19, "json.gz"),
        ),
    ],
)
def test_no_permission_to_list_uploads_is_not_fatal(
    s3_faults: Faults,
    s3_server: S3Server,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
    names: tuple[str, str],
) -> None:
    sink = make_sink(s3_server, s3_bucket)
    s3_faults.fail_next(5, status=403, code="AccessDenied", op="ListMultipartUploads")
    with caplog.at_level(logging.WARNING, logger="siem_plugins.builtin.s3"):
        for name in names:
            with sink.open(name, META) as writer:
                writer.write(b"x")
                writer.commit()

    assert keys(s3_server, s3_bucket) == list(names)
    assert s3_faults.count("ListMultipartUploads") == 1  # asked once, then left alone
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "AccessDenied" in warning
    assert "lifecycle" in warning


# --------------------------------------------------------------------------- orphans
#
# A CreateMultipartUpload that the server carried out but whose reply was lost (a proxy
# answering 500, a connection reset after forwarding) is retried by botocore, which
# creates a second upload: the first one's id never reached the client.

ORPHAN_FAULTS = [
    pytest.param({"after": True, "status": 500, "code": "InternalError"}, id="500-after"),
    pytest.param({"when": "after"}, id="reset-after"),
]


def inject_on_create(faults: Faults, n: int, fault: dict[str, Any]) -> None:
    if "when" in fault:
        faults.reset_connection_next(n, op="CreateMultipartUpload", **fault)
    else:
        faults.fail_next(n, op="CreateMultipartUpload", **fault)


def aborted_messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    """The sink's log lines about aborted uploads, each checked to be at ``level``."""
    records = [
        r
        for r in caplog.records
        if r.name == "siem_plugins.builtin.s3" and "aborted" in r.getMessage()
    ]
    assert {r.levelno for r in records} <= {level}
    return [r.getMessage() for r in records]


@pytest.mark.parametrize("fault", ORPHAN_FAULTS)
@pytest.mark.parametrize("body", [LARGE, LARGE + LARGE], ids=["2-parts", "3-parts"])
@pytest.mark.usefixtures("s3_fast_retries")
def test_uploads_of_a_retried_create_are_aborted_after_commit(
    s3_faults: Faults,
    s3_server: S3Server,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    body: bytes,
) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="acme", max_attempts=4, part_size=5 * MiB)
    inject_on_create(s3_faults, 2, fault)
    caplog.set_level(logging.INFO, logger="siem_plugins.builtin.s3")
    with sink.open("o.json.gz", META) as writer:
        writer.write(body)
        writer.commit()

    assert s3_faults.count("CreateMultipartUpload") == 3  # two orphans, one used
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == ["acme/o.json.gz"]
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="acme/o.json.gz")
    assert got["Body"].read() == body
    assert got["Metadata"]["siem-first-id"] == "101"
    assert aborted_messages(caplog) == [
        f"s3://{s3_bucket}/acme/o.json.gz: aborted 2 unfinished multipart upload(s) "
        "left by failed requests"
    ]


@pytest.mark.parametrize("fault", ORPHAN_FAULTS)
@pytest.mark.usefixtures("s3_fast_retries")
def test_uploads_of_a_create_that_never_succeeded_are_aborted(
    s3_faults: Faults,
    s3_server: S3Server,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
) -> None:
    # Every attempt was carried out and every reply lost: no replay of this key may ever
    # come (the config may change), so the failed object cleans up at once, whether or
    # not the caller ever aborts it.
    sink = make_sink(s3_server, s3_bucket, prefix="acme", max_attempts=3, part_size=5 * MiB)
    inject_on_create(s3_faults, 3, fault)
    caplog.set_level(logging.INFO, logger="siem_plugins.builtin.s3")
    writer = sink.open("o.json.gz", META)
    with pytest.raises(SinkError, match=re.escape("/acme/o.json.gz: ")):
        writer.write(LARGE)  # the first full part starts the upload

    assert s3_faults.count("CreateMultipartUpload") == 3
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []
    assert aborted_messages(caplog) == [
        f"s3://{s3_bucket}/acme/o.json.gz: aborted 3 unfinished multipart upload(s) "
        "left by failed requests"
    ]
    seen = len(s3_faults.requests)
    writer.abort()  # as the with-block does: nothing more to do
    assert len(s3_faults.requests) == seen


@pytest.mark.parametrize("how", ["commit fails", "aborted"])
@pytest.mark.usefixtures("s3_fast_retries")
def test_uploads_of_a_retried_create_are_aborted_when_the_object_fails(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, how: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, max_attempts=2, part_size=5 * MiB)
    s3_faults.fail_next(1, status=500, code="InternalError", op="CreateMultipartUpload", after=True)
    writer = sink.open("f.json", META)
    writer.write(LARGE)
    if how == "aborted":
        writer.abort()
    else:
        s3_faults.fail_next(5, status=403, code="AccessDenied", op="CompleteMultipartUpload")
        with pytest.raises(SinkError, match="AccessDenied"):
            writer.commit()
        writer.abort()  # as the with-block does on the way out: no second clean-up

    assert s3_faults.count("ListMultipartUploads") == 2  # at open, and once after the failure
    assert s3_faults.count("AbortMultipartUpload") == 2  # the writer's upload, the orphan
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []


def test_every_page_of_unfinished_uploads_is_looked_at(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    for _ in range(5):
        client.create_multipart_upload(Bucket=s3_bucket, Key="acme/p.json")
    client.create_multipart_upload(Bucket=s3_bucket, Key="acme/p.json.other")
    s3_faults.upload_listing_page_size(2)
    sink = make_sink(s3_server, s3_bucket, prefix="acme")
    with sink.open("p.json", META) as writer:
        writer.write(b"x")
        writer.commit()

    assert open_uploads(s3_server, s3_bucket) == ["acme/p.json.other"]
    assert s3_faults.count("AbortMultipartUpload") == 5


# --------------------------------------------------------------------------- the sweep

OURS = object_key("acme", "2024-01-02T030405Z", 1, 100, "json.gz")
HOUR = 3600.0


def test_the_key_shape_is_recognised() -> None:
    assert parse_object_key(OURS) == ("acme", "json.gz")
    assert parse_object_key(object_key("a.b@c+d", "2030-12-31T235959Z", 7, 8, "log")) == (
        "a.b@c+d",
        "log",
    )
    for other in (
        "acme/2024/01/02/notes.json.gz",  # not a range
        "acme/2024/01/03/2024-01-02T030405Z_00000000000000000001-00000000000000000100.json.gz",
        "acme/2024/01/02/2024-01-02T030405Z_1-100.json.gz",  # ids not zero-padded
        "x/acme/2024/01/02/2024-01-02T030405Z_00000000000000000001-00000000000000000100.json",
        "../2024/01/02/2024-01-02T030405Z_00000000000000000001-00000000000000000100.json",
        "k.json",
    ):
        assert parse_object_key(other) is None, other


def test_old_uploads_of_the_shippers_own_keys_are_swept(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = s3_server.client()

    def upload(key: str, age: float) -> str:
        upload_id = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        s3_faults.backdate_upload(upload_id, age)
        return key

    def shaped(account: str, ext: str, first: int) -> str:
        return "logs/" + object_key(account, "2024-01-02T030405Z", first, first + 9, ext)

    abandoned = [
        upload(shaped("acme", "json.gz", 1), 2 * HOUR),
        upload(shaped("acme", "json.gz", 11), 30 * 24 * HOUR),
    ]
    kept = [
        upload(shaped("acme", "json.gz", 21), 59 * 60),  # younger than the hour: in progress
        upload(shaped("acme", "log.gz", 1), 2 * HOUR),  # another integration's format
        upload(shaped("other", "json.gz", 1), 2 * HOUR),  # an account this sink never wrote
        upload("logs/acme/2024/01/02/notes.json.gz", 2 * HOUR),  # not the shipper's shape
        upload(shaped("acme", "json.gz", 31)[len("logs/") :], 2 * HOUR),  # outside the prefix
    ]
    sink = make_sink(s3_server, s3_bucket, prefix="logs")
    new_key = object_key("acme", "2024-01-03T000000Z", 41, 50, "json.gz")
    caplog.set_level(logging.INFO, logger="siem_plugins.builtin.s3")
    with sink.open(new_key, META) as writer:
        writer.write(b"new")
        writer.commit()

    assert sorted(open_uploads(s3_server, s3_bucket)) == sorted(kept)
    assert keys(s3_server, s3_bucket) == ["logs/" + new_key]
    messages = aborted_messages(caplog, logging.WARNING)
    assert len(messages) == 2
    for key, message in zip(abandoned, sorted(messages), strict=True):
        assert message.startswith(
            f"s3://{s3_bucket}/{key}: aborted an unfinished multipart upload initiated "
        )
        assert message.endswith(
            "more than abandoned_upload_age = 1h ago: left by a failed or killed run"
        )

    # At most one sweep of a folder per abandoned_upload_age: the next objects cost only
    # the look at their own key.
    swept = s3_faults.count("ListMultipartUploads")
    for first in (51, 61):
        with sink.open(
            object_key("acme", "2024-01-03T000001Z", first, first + 9, "json.gz"), META
        ) as writer:
            writer.write(b"more")
            writer.commit()
    assert s3_faults.count("ListMultipartUploads") == swept + 4  # open and commit, twice
    assert sorted(open_uploads(s3_server, s3_bucket)) == sorted(kept)


def test_the_sweep_age_is_configurable(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, abandoned_upload_age="10m")
    assert sink.settings.abandoned_upload_age == 600
    client = s3_server.client()
    old = object_key("acme", "2024-01-02T030405Z", 1, 10, "json.gz")
    young = object_key("acme", "2024-01-02T030405Z", 11, 20, "json.gz")
    s3_faults.backdate_upload(
        client.create_multipart_upload(Bucket=s3_bucket, Key=old)["UploadId"], 11 * 60
    )
    s3_faults.backdate_upload(
        client.create_multipart_upload(Bucket=s3_bucket, Key=young)["UploadId"], 9 * 60
    )
    with sink.open(object_key("acme", "2024-01-02T030405Z", 21, 30, "json.gz"), META) as writer:
        writer.commit()
    assert open_uploads(s3_server, s3_bucket) == [young]


def test_the_sweep_runs_again_once_the_age_has_passed(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="p", abandoned_upload_age=1)

    def sweeps() -> int:
        return sum(
            1
            for r in s3_faults.requests
            if r.op == "ListMultipartUploads" and "prefix=p%2Facme%2F&" in r.query + "&"
        )

    def write(first: int) -> None:
        with sink.open(object_key("acme", "2024-01-02T030405Z", first, first, "log"), META) as w:
            w.commit()

    write(1)
    write(2)
    assert sweeps() == 1
    time.sleep(1.1)
    write(3)
    assert sweeps() == 2


def test_no_second_look_when_s3_cannot_be_reached(caplog: pytest.LogCaptureFixture) -> None:
    # The look after a failed object would only fail the same way, after its own retries.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    table = {
        "bucket": "bkt",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "max_attempts": 1,
        "access_key_id": "AKIA",
        "secret_access_key": "secret-key",
    }
    sink = S3Sink.from_options(Options(table, path=PATH))
    caplog.set_level(logging.DEBUG, logger="siem_plugins.builtin.s3")
    writer = sink.open(object_key("acme", "2024-01-02T030405Z", 1, 2, "json"), META)
    writer.write(b"x")
    with pytest.raises(SinkError, match="EndpointConnection"):
        writer.commit()
    looks = [r for r in caplog.records if "could not look for unfinished" in r.getMessage()]
    assert len(looks) == 1  # at open only


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("op", "status", "code", "attempts", "permanent"),
    [
        ("CompleteMultipartUpload", 500, "InternalError", 2, False),
        ("CompleteMultipartUpload", 403, "AccessDenied", 1, True),
        ("UploadPart", 503, "SlowDown", 2, False),  # the last part is sent by commit()
        ("PutObject", 500, "InternalError", 2, False),  # an object of at most one part
        ("PutObject", 403, "AccessDenied", 1, True),
    ],
)
@pytest.mark.usefixtures("s3_fast_retries")
def test_failed_commit_leaves_no_upload_and_no_object(
    s3_faults: Faults,
    s3_server: S3Server,
    s3_bucket: str,
    op: str,
    status: int,
    code: str,
    attempts: int,
    permanent: bool,
) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="acme", max_attempts=2, part_size=5 * MiB)
    writer = sink.open("r.json.gz", META)
    assert isinstance(writer, S3ObjectWriter)
    writer.write(SMALL if op == "PutObject" else LARGE)
    upload_id = writer.upload_id
    assert (upload_id is None) == (op == "PutObject")
    # Only the last part of an upload: the first one is on its way already.
    where = "partNumber=2" if op == "UploadPart" else None
    s3_faults.fail_next(10, status=status, code=code, op=op, query_contains=where)

    with pytest.raises(SinkError) as caught:
        writer.commit()

    err = caught.value
    assert err.code == code
    assert err.permanent is permanent
    assert str(err).startswith(f"s3://{s3_bucket}/acme/r.json.gz: {code}: injected {code}")
    assert s3_faults.injected(op) == attempts
    aborts = [r for r in s3_faults.requests if r.op == "AbortMultipartUpload"]
    assert [parse_qs(r.query)["uploadId"] for r in aborts] == ([[upload_id]] if upload_id else [])
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []
    writer.abort()  # already cleaned up: must neither raise nor send another abort
    seen = len(s3_faults.requests)
    del writer
    gc.collect()  # the writer, once collected, sends nothing more
    assert len(s3_faults.requests) == seen


@pytest.mark.usefixtures("s3_fast_retries")
def test_failed_write_poisons_the_object(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    writer = sink.open("w.bin", META)
    s3_faults.fail_next(1, status=403, code="AccessDenied", op="UploadPart")
    # The part is uploaded in the background while the caller goes on; its failure
    # surfaces at the next write (or at commit).
    writer.write(os.urandom(6 * MiB))
    with pytest.raises(SinkError, match="AccessDenied") as caught:
        writer.write(os.urandom(6 * MiB))
    assert caught.value.permanent
    # A part is missing: the upload is aborted and the object can only be abandoned.
    with pytest.raises(SinkError, match="failed"):
        writer.write(b"more")
    with pytest.raises(SinkError, match="failed"):
        writer.commit()
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("PutObject", SMALL),
        ("PutObject", b""),
        ("CreateMultipartUpload", LARGE),
        ("UploadPart", LARGE),
        ("CompleteMultipartUpload", LARGE),
    ],
)
@pytest.mark.usefixtures("s3_fast_retries")
def test_slowdown_is_retried_and_the_object_lands_once(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, op: str, body: bytes
) -> None:
    sink = make_sink(s3_server, s3_bucket, max_attempts=4, part_size=5 * MiB)
    s3_faults.fail_next(2, status=503, code="SlowDown", op=op)
    with sink.open("slow.json", META) as writer:
        writer.write(body)
        receipt = writer.commit()

    assert receipt.size == len(body)
    assert s3_faults.injected(op) == 2
    assert s3_faults.count(op) == 2 + (2 if op == "UploadPart" else 1)  # LARGE: two parts
    assert keys(s3_server, s3_bucket) == ["slow.json"]
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="slow.json")
    assert got["Body"].read() == body
    assert got["Metadata"]["siem-last-id"] == "250"


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.usefixtures("s3_fast_retries")
def test_dropped_connection_on_complete_is_retried(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, when: str
) -> None:
    # "after": the server completed the upload but the reply was lost; the retried
    # CompleteMultipartUpload must still succeed (it does on S3, and on moto).
    sink = make_sink(s3_server, s3_bucket, part_size=5 * MiB)
    s3_faults.reset_connection_next(1, when=when, op="CompleteMultipartUpload")  # type: ignore[arg-type]
    with sink.open("drop.json", META) as writer:
        writer.write(LARGE)
        writer.commit()

    assert s3_faults.count("CompleteMultipartUpload") == 2
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="drop.json")
    assert got["Body"].read() == LARGE
    assert open_uploads(s3_server, s3_bucket) == []


@pytest.mark.parametrize("when", ["error-after", "reset-after"])
@pytest.mark.usefixtures("s3_fast_retries")
def test_a_lost_put_object_reply_is_retried_and_the_object_lands_once(
    s3_faults: Faults,
    s3_server: S3Server,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
    when: str,
) -> None:
    # The server stored the object and the reply was lost: the retry stores the same
    # bytes under the same key again, and no upload is left behind to clean up.
    sink = make_sink(s3_server, s3_bucket, prefix="acme", max_attempts=4)
    if when == "reset-after":
        s3_faults.reset_connection_next(2, when="after", op="PutObject")
    else:
        s3_faults.fail_next(2, status=500, code="InternalError", op="PutObject", after=True)
    caplog.set_level(logging.INFO, logger="siem_plugins.builtin.s3")
    with sink.open("o.json.gz", META) as writer:
        writer.write(SMALL)
        writer.commit()

    assert s3_faults.count("PutObject") == 3
    assert keys(s3_server, s3_bucket) == ["acme/o.json.gz"]
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="acme/o.json.gz")
    assert got["Body"].read() == SMALL
    assert got["Metadata"]["siem-first-id"] == "101"
    assert open_uploads(s3_server, s3_bucket) == []
    assert aborted_messages(caplog) == []


@pytest.mark.usefixtures("s3_fast_retries")
def test_random_failures_are_absorbed_by_retries(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str
) -> None:
    sink = make_sink(s3_server, s3_bucket, max_attempts=10)
    s3_faults.random_failure_rate(0.3, seed=7, status=500, code="InternalError")
    for i in range(6):
        with sink.open(f"r{i}.json", META) as writer:
            writer.write(f"object {i}\n".encode())
            writer.commit()
    s3_faults.random_failure_rate(0)

    assert s3_faults.injected() >= 3
    assert keys(s3_server, s3_bucket) == [f"r{i}.json" for i in range(6)]
    assert open_uploads(s3_server, s3_bucket) == []


@pytest.mark.parametrize(("op", "body"), [("PutObject", SMALL), ("CreateMultipartUpload", LARGE)])
def test_access_denied_is_permanent_and_not_retried(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, op: str, body: bytes
) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="acme", part_size=5 * MiB)
    s3_faults.fail_next(5, status=403, code="AccessDenied", message="Access Denied", op=op)
    with pytest.raises(SinkError) as caught:
        ship(sink, "k.json", body)  # at the first full part, or at commit

    err = caught.value
    assert err.permanent is True
    assert str(err) == (f"s3://{s3_bucket}/acme/k.json: AccessDenied: Access Denied")
    assert s3_faults.count(op) == 1
    assert s3_faults.count("UploadPart") == 0


def test_unreachable_endpoint_fails_fast() -> None:
    # botocore's policy is the only retrying (smart_open retried EndpointConnectionError
    # itself, 6 times 10 s apart).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    table = {
        "bucket": "bkt",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "max_attempts": 1,
        "access_key_id": "AKIA",
        "secret_access_key": "s",  # short on purpose: must not be redacted out of words
    }
    sink = S3Sink.from_options(Options(table, path=PATH))
    started = time.monotonic()
    writer = sink.open("k.json", META)  # the look for leftovers fails: logged, not raised
    writer.write(b"x")
    with pytest.raises(
        SinkError, match=re.escape("s3://bkt/k.json: EndpointConnection: ")
    ) as caught:
        writer.commit()
    assert time.monotonic() - started < 5
    assert caught.value.permanent is False


def test_secret_is_redacted_from_error_text() -> None:
    from botocore.exceptions import ClientError

    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    echoed = {"Error": {"Code": "InvalidRequest", "Message": f"bad header {secret}"}}
    err = to_sink_error(ClientError(echoed, "PutObject"), "s3://bkt/k", secret=secret)
    assert str(err) == "s3://bkt/k: InvalidRequest: bad header ***"
    assert err.permanent is False


def test_missing_credentials_are_permanent(
    s3_server: S3Server, s3_bucket: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    table = {"bucket": s3_bucket, "endpoint_url": s3_server.endpoint_url, "region": "us-east-1"}
    sink = S3Sink.from_options(Options(table, path=PATH))  # the chain is consulted lazily
    with pytest.raises(SinkError, match="probe write failed: NoCredentials: ") as caught:
        sink.probe()
    assert caught.value.permanent is True


def test_missing_bucket_is_permanent(s3_server: S3Server) -> None:
    bucket = f"siem-missing-{secrets.token_hex(4)}"
    sink = make_sink(s3_server, bucket)
    with pytest.raises(SinkError) as caught:
        sink.open("k.json", META).commit()
    assert caught.value.permanent is True
    assert caught.value.code == "NoSuchBucket"
    assert f"s3://{bucket}/k.json" in str(caught.value)

    with pytest.raises(SinkError, match="probe write failed: NoSuchBucket") as probed:
        sink.probe()
    assert probed.value.permanent is True
    assert bucket in str(probed.value)


# --------------------------------------------------------------------------- probe


def test_probe_writes_and_deletes(s3_server: S3Server, s3_bucket: str) -> None:
    sink = make_sink(s3_server, s3_bucket, prefix="acme", sse="AES256")
    sink.probe()

    assert keys(s3_server, s3_bucket) == []
    if s3_server.faults is not None:
        (put,) = [r for r in s3_server.faults.requests if r.op == "PutObject"]
        (delete,) = [r for r in s3_server.faults.requests if r.op == "DeleteObject"]
        assert put.path.startswith(f"/{s3_bucket}/acme/.siem-plugins-probe-")
        assert delete.path == put.path
        assert put.headers["x-amz-server-side-encryption"] == "AES256"


def test_probe_failures(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(s3_server, s3_bucket)
    s3_faults.fail_next(1, status=403, code="AccessDenied", op="PutObject")
    with pytest.raises(SinkError, match=rf"s3://{s3_bucket}/\.siem-plugins-probe-\w+: probe"):
        sink.probe()

    # Shipping never deletes, so a policy without s3:DeleteObject only earns a warning.
    s3_faults.fail_next(1, status=403, code="AccessDenied", op="DeleteObject")
    with caplog.at_level(logging.WARNING, logger="siem_plugins.builtin.s3"):
        sink.probe()
    (left,) = keys(s3_server, s3_bucket)
    assert left.startswith(".siem-plugins-probe-")
    assert any(left in r.getMessage() and "AccessDenied" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- secrets


@pytest.mark.usefixtures("s3_fast_retries")
def test_secret_key_never_reaches_errors_or_logs(
    s3_faults: Faults, s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"SiemSecret{secrets.token_hex(12)}"
    caplog.set_level(logging.DEBUG)
    for name in ("botocore", "boto3", "urllib3", "siem_plugins"):
        caplog.set_level(logging.DEBUG, logger=name)

    sink = make_sink(
        s3_server, s3_bucket, access_key_id="AKIASIEMTEST", secret_access_key=secret, max_attempts=2
    )
    with sink.open("ok.json", META) as writer:
        writer.write(b"fine")
        writer.commit()
    writer = sink.open("bad.json", META)
    writer.write(b"doomed")
    s3_faults.fail_next(
        5,
        status=403,
        code="SignatureDoesNotMatch",
        message="The request signature we calculated does not match",
    )
    with pytest.raises(SinkError) as caught:
        writer.commit()

    assert caught.value.permanent is True
    texts = [str(caught.value), repr(caught.value), repr(sink), repr(sink.settings)]
    texts += [record.getMessage() for record in caplog.records]
    # The capture must really include botocore's request-level debug output.
    assert any(r.name.startswith("botocore") and r.levelno == logging.DEBUG for r in caplog.records)
    assert any("AKIASIEMTEST" in text for text in texts)  # the key id is not secret
    assert not [text for text in texts if secret in text]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({}, "bucket", "missing required setting"),
        ({"bucket": "s3://logs/acme"}, "bucket", "expected a bucket name"),
        ({"bucket": "a"}, "bucket", "not a valid bucket name"),
        ({"bucket": "bkt", "prefix": "../up"}, "prefix", "without '..'"),
        ({"bucket": "bkt", "prefix": "/abs"}, "prefix", "relative"),
        ({"bucket": "bkt", "prefix": "a\nb"}, "prefix", "control characters"),
        ({"bucket": "bkt", "prefix": 7}, "prefix", "expected a string"),
        ({"bucket": "bkt", "access_key_id": "AKIA"}, "secret_access_key", "required when"),
        ({"bucket": "bkt", "secret_access_key": "s3cr3t"}, "access_key_id", "required when"),
        ({"bucket": "bkt", "session_token": "tok"}, "session_token", "only valid with"),
        (
            {"bucket": "bkt", "profile": "p", "access_key_id": "A", "secret_access_key": "S"},
            "profile",
            "not both",
        ),
        ({"bucket": "bkt", "sse": "DES"}, "sse", "choose one of: AES256, aws:kms"),
        ({"bucket": "bkt", "sse": "AES256", "kms_key_id": "k"}, "kms_key_id", "aws:kms"),
        ({"bucket": "bkt", "part_size": 1024}, "part_size", f"at least {5 * MiB}"),
        ({"bucket": "bkt", "max_attempts": 0}, "max_attempts", "at least 1"),
        ({"bucket": "bkt", "retry_mode": "legacy"}, "retry_mode", "choose one of"),
        ({"bucket": "bkt", "connect_timeout": 0}, "connect_timeout", "more than 0"),
        ({"bucket": "bkt", "read_timeout": "60"}, "read_timeout", "expected a number"),
        ({"bucket": "bkt", "endpoint_url": "ftp://x"}, "endpoint_url", "http(s)://"),
        ({"bucket": "bkt", "abandoned_upload_age": "0.5s"}, "abandoned_upload_age", "at least 1"),
        ({"bucket": "bkt", "abandoned_upload_age": "soon"}, "abandoned_upload_age", "duration"),
        ({"bucket": "bkt", "abandoned_upload_age": True}, "abandoned_upload_age", "duration"),
    ],
)
def test_bad_options_are_located(table: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        S3Sink.from_options(Options(table, path=PATH, file=FILE))
    assert caught.value.path == f"{PATH}.{where}"
    assert str(caught.value).startswith(f"{FILE}: {PATH}.{where}: ")
    assert message in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_unknown_profile_is_a_config_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=re.escape(f"{FILE}: {PATH}.profile: ") + ".*siem-nope"):
        S3Sink.from_options(
            Options({"bucket": "bkt", "profile": "siem-nope"}, path=PATH, file=FILE)
        )


def test_defaults_and_shared_section() -> None:
    options = Options(
        {"bucket": "logs", "prefix": "acme"},
        path=PATH,
        file=FILE,
        defaults=[
            (
                "s3",
                {
                    "region": "eu-west-1",
                    "part_size": 16 * MiB,
                    "sse": "AES256",
                    "abandoned_upload_age": "2h",
                },
            )
        ],
    )
    sink = S3Sink.from_options(options)
    settings = sink.settings
    assert (settings.bucket, settings.prefix, settings.region) == ("logs", "acme/", "eu-west-1")
    assert (settings.part_size, settings.sse, settings.kms_key_id) == (16 * MiB, "AES256", None)
    assert (settings.max_attempts, settings.retry_mode) == (8, "standard")
    assert (settings.connect_timeout, settings.read_timeout) == (10.0, 60.0)
    assert settings.abandoned_upload_age == 7200.0
    assert settings.part_size != DEFAULT_PART_SIZE == 8 * MiB
    config = sink.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 8}
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)

    bad = Options({"bucket": "logs"}, path=PATH, file=FILE, defaults=[("s3", {"sse": "x"})])
    with pytest.raises(ConfigError, match=r"^siem\.toml: s3\.sse: unknown value"):
        S3Sink.from_options(bad)


def _fields(meta: ObjectMeta) -> dict[str, Any]:
    return {name: getattr(meta, name) for name in ObjectMeta.__dataclass_fields__}
