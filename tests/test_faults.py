"""Delivery under S3 and SMTP faults, against real servers: moto over HTTP with a
fault-injecting middleware, and aiosmtpd. Every assertion counts events by id."""

from __future__ import annotations

import contextlib
import gzip
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from siem_plugins.pipeline import Pipeline
from siem_plugins.runtime import Runtime
from siem_plugins.storage import NOTIFIER, SINK, SQLiteStore
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer
from tests.helpers import ingest, numbered, runtime


def s3_integration(
    name: str, s3: S3Server, bucket: str, smtp: SMTPServer | None = None, **extra: Any
) -> dict[str, Any]:
    sink = s3.sink_options(bucket, prefix=f"{name}/", max_attempts=6)
    notify: dict[str, Any] = {
        "events": ["exempt_all", "config"],
        "to": ["soc@example.com"],
        "from": "siem@example.com",
        "security": "none",
        "host": smtp.host if smtp else "127.0.0.1",
        "port": smtp.port if smtp else 9,
        "timeout": 5,
    }
    return {
        "name": name,
        "account": "acme",
        "format": "json",
        "sink": sink,
        "notify": notify,
        **extra,
    }


#: Events per object for objects of more than one 5 MiB part: a multipart upload (the
#: test events are about 320 bytes of JSON each, stored uncompressed).
LARGE_OBJECT_EVENTS = 18_000


def large_integration(
    name: str, s3: S3Server, bucket: str, smtp: SMTPServer | None = None
) -> dict[str, Any]:
    """An integration whose objects are multipart uploads of two 5 MiB parts or so."""
    integ = s3_integration(
        name, s3, bucket, smtp, compression="none", max_events=LARGE_OBJECT_EVENTS
    )
    integ["sink"]["part_size"] = 5 * 1024 * 1024
    return integ


def first_id_in_key(first: int) -> str:
    """What an object's key holds of its first id, for faults aimed at that object."""
    return f"_{first:020d}-"


def shipped(s3: S3Server, bucket: str, prefix: str) -> Counter[int]:
    client = s3.client()
    seen: Counter[int] = Counter()
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        if obj["Key"].endswith(".gz"):
            body = gzip.decompress(body)
        for line in body.splitlines():
            seen[orjson.loads(line)["seq"]] += 1
    return seen


def multipart_objects(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    """Keys under ``prefix`` of objects that were uploaded in parts."""
    listing = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [obj["Key"] for obj in listing if "-" in obj["ETag"]]


def no_open_uploads(s3: S3Server, bucket: str) -> bool:
    return s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_transient_s3_faults_are_retried_and_data_lands_once(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(6000)))
    faults = s3_server.faults
    assert faults is not None
    # Objects of 1,000 gzipped events are one PutObject each; faults for five of them.
    put = "PutObject"
    faults.fail_next(2, status=503, code="SlowDown", op=put, path_contains=first_id_in_key(1))
    faults.fail_next(
        2, status=500, code="InternalError", op=put, path_contains=first_id_in_key(1001)
    )
    faults.fail_next(1, status=503, code="SlowDown", op=put, path_contains=first_id_in_key(2001))
    faults.reset_connection_next(1, when="before", op=put, path_contains=first_id_in_key(3001))
    faults.reset_connection_next(1, when="after", op=put, path_contains=first_id_in_key(4001))
    rt = runtime(
        siem_store.path,
        [s3_integration("acme", s3_server, s3_bucket, smtp_server, max_events=1000)],
    )
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok, result.errors
    assert faults.pending() == 0 and faults.injected() == 7
    # Then a steady 10% of all requests fail, at random.
    ingest(siem_store, "acme", numbered(siem_events(4000, seed=2), start=6001))
    faults.random_failure_rate(0.10, seed=5)
    result = Pipeline(rt).sync(rt.integrations[0])
    faults.random_failure_rate(0)
    assert result.ok, result.errors
    assert faults.injected() > 7
    seen = shipped(s3_server, s3_bucket, "acme/")
    assert sorted(seen) == list(range(1, 10001)) and set(seen.values()) == {1}
    assert no_open_uploads(s3_server, s3_bucket)
    assert rt.state.cursor("acme", SINK) == 10000
    assert len(smtp_server.messages) == 2  # one digest per sync
    rt.close()


def test_transient_faults_of_multipart_uploads_are_retried_and_data_lands_once(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(2 * LARGE_OBJECT_EVENTS)))
    faults = s3_server.faults
    assert faults is not None
    faults.fail_next(2, status=503, code="SlowDown", op="CreateMultipartUpload")
    faults.fail_next(2, status=500, code="InternalError", op="UploadPart")
    faults.fail_next(1, status=503, code="SlowDown", op="CompleteMultipartUpload")
    faults.reset_connection_next(1, when="before", op="UploadPart")
    faults.reset_connection_next(1, when="after", op="CompleteMultipartUpload")
    rt = runtime(siem_store.path, [large_integration("acme", s3_server, s3_bucket, smtp_server)])
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok, result.errors
    assert faults.pending() == 0 and faults.injected() == 7
    # Then a third of all requests fail, at random (one object makes only a few).
    ingest(
        siem_store,
        "acme",
        numbered(siem_events(LARGE_OBJECT_EVENTS, seed=2), start=2 * LARGE_OBJECT_EVENTS + 1),
    )
    faults.random_failure_rate(0.3, seed=1)
    result = Pipeline(rt).sync(rt.integrations[0])
    faults.random_failure_rate(0)
    assert result.ok, result.errors
    assert faults.injected() > 7
    total = 3 * LARGE_OBJECT_EVENTS
    seen = shipped(s3_server, s3_bucket, "acme/")
    assert sorted(seen) == list(range(1, total + 1)) and set(seen.values()) == {1}
    assert len(multipart_objects(s3_server, s3_bucket, "acme/")) == 3
    assert no_open_uploads(s3_server, s3_bucket)
    assert rt.state.cursor("acme", SINK) == total
    rt.close()


def test_permanent_s3_errors_are_named_and_do_not_hold_back_others(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(500)))
    integrations = [
        s3_integration("missing", s3_server, "no-such-bucket-here", smtp_server),
        s3_integration("denied", s3_server, s3_bucket, smtp_server),
        s3_integration("fine", s3_server, s3_bucket, smtp_server),
    ]
    integrations[1]["sink"]["prefix"] = "denied/"
    faults = s3_server.faults
    assert faults is not None
    faults.fail_next(100, status=403, code="AccessDenied", path_contains="/denied/")
    rt = runtime(siem_store.path, integrations)
    pipe = Pipeline(rt)
    results = {i.name: pipe.sync(i) for i in rt.integrations}
    assert (
        "integration 'missing': sink s3://no-such-bucket-here/missing/"
        in (results["missing"].errors[SINK])
    )
    assert "NoSuchBucket" in results["missing"].errors[SINK]
    assert "integration 'denied': sink s3://" in results["denied"].errors[SINK]
    assert "AccessDenied" in results["denied"].errors[SINK]
    assert results["fine"].ok and results["fine"].events == 500
    for name in ("missing", "denied"):
        assert rt.state.cursor(name, SINK) == 0  # not advanced
        assert rt.state.cursor(name, NOTIFIER) == 500  # alerts are not held hostage
    assert len(smtp_server.messages) == 3
    assert no_open_uploads(s3_server, s3_bucket)
    # The next cycle tries again: fix the causes and everything lands, once.
    s3_server.create_bucket("no-such-bucket-here")
    faults.reset()
    results = {i.name: pipe.sync(i) for i in rt.integrations}
    assert all(r.ok for r in results.values()), results
    for name, bucket in (("missing", "no-such-bucket-here"), ("denied", s3_bucket)):
        seen = shipped(s3_server, bucket, f"{name}/")
        assert sorted(seen) == list(range(1, 501)) and set(seen.values()) == {1}
    assert len(smtp_server.messages) == 3  # no new events: no new digests
    rt.close()


def test_smtp_outage_does_not_delay_s3_and_alerts_go_out_once_when_back(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any, s3_server: S3Server, s3_bucket: str
) -> None:
    events = siem_events(800)
    selected = sum(e["log_type"] in ("exempt_all", "config") for e in events)
    ingest(siem_store, "acme", numbered(events))
    smtp = SMTPServer().start()
    smtp.stop()  # down: connection refused

    def build(server: SMTPServer) -> Runtime:
        return runtime(
            siem_store.path, [s3_integration("acme", s3_server, s3_bucket, server, max_events=300)]
        )

    rt = build(smtp)
    result = Pipeline(rt).sync(rt.integrations[0])
    assert "notifier smtp://127.0.0.1:" in result.errors[NOTIFIER]
    assert SINK not in result.errors and result.events == 800  # the bucket is not delayed
    assert rt.state.cursor("acme", NOTIFIER) == 0
    rt.close()

    with SMTPServer() as smtp:
        smtp.fail_next(451, "4.3.0 try again later", stage="DATA")
        rt = build(smtp)
        assert NOTIFIER in Pipeline(rt).sync(rt.integrations[0]).errors  # 4xx: kept for later
        assert smtp.messages == [] and rt.state.cursor("acme", NOTIFIER) == 0
        smtp.fail_next(554, "5.7.1 rejected", stage="MAIL")
        assert NOTIFIER in Pipeline(rt).sync(rt.integrations[0]).errors  # 5xx: the same
        result = Pipeline(rt).sync(rt.integrations[0])
        assert result.ok and len(result.digests) == 1
        assert result.digests[0].total == selected
        assert len(smtp.messages) == 1
        assert rt.state.cursor("acme", NOTIFIER) == 800
        # A clean retry later sends nothing again.
        assert Pipeline(rt).sync(rt.integrations[0]).digests == []
        assert len(smtp.messages) == 1
        rt.close()


def test_smtp_auth_failure_keeps_the_cursor_and_never_leaks_the_password(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_tls_server: SMTPServer,
    caplog: Any,
) -> None:
    ingest(siem_store, "acme", numbered(siem_events(100)))
    integ = s3_integration("acme", s3_server, s3_bucket, smtp_tls_server)
    integ["notify"].update(
        security="starttls",
        ca_file=smtp_tls_server.ca_file,
        username="siem",
        password="wrong-Pa55word-xyz",
    )
    caplog.set_level("DEBUG")
    rt = runtime(siem_store.path, [integ])
    result = Pipeline(rt).sync(rt.integrations[0])
    assert "535" in result.errors[NOTIFIER]
    assert rt.state.cursor("acme", NOTIFIER) == 0 and rt.state.cursor("acme", SINK) == 100
    assert "wrong-Pa55word-xyz" not in caplog.text + result.errors[NOTIFIER]
    rt.close()


def open_upload_keys(s3: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_uploads_created_by_failed_requests_are_aborted_and_logged(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
    caplog: Any,
) -> None:
    # A proxy in front of S3 that fails *after* forwarding CreateMultipartUpload: the
    # server started an upload whose id the shipper never learned, and botocore's retry
    # started another. (Only objects of more than one part start a multipart upload.)
    n = LARGE_OBJECT_EVENTS
    ingest(siem_store, "acme", numbered(siem_events(3 * n)))
    faults = s3_server.faults
    assert faults is not None
    create = "CreateMultipartUpload"
    faults.fail_next(1, status=500, code="InternalError", op=create, after=True)
    faults.reset_connection_next(1, when="after", op=create)
    second = first_id_in_key(n + 1)
    faults.fail_next(
        2, status=500, code="InternalError", op=create, after=True, path_contains=second
    )
    caplog.set_level("INFO", logger="siem_plugins.builtin.s3")
    rt = runtime(siem_store.path, [large_integration("acme", s3_server, s3_bucket, smtp_server)])
    result = Pipeline(rt).sync(rt.integrations[0])
    assert result.ok, result.errors
    assert faults.pending() == 0 and faults.injected("CreateMultipartUpload") == 4
    assert open_upload_keys(s3_server, s3_bucket) == []
    seen = shipped(s3_server, s3_bucket, "acme/")
    assert sorted(seen) == list(range(1, 3 * n + 1)) and set(seen.values()) == {1}
    assert len(multipart_objects(s3_server, s3_bucket, "acme/")) == 3
    objects = [r.location for r in result.objects]
    records = [r for r in caplog.records if "aborted" in r.getMessage()]
    assert {r.levelname for r in records} == {"INFO"}
    aborted = [r.getMessage() for r in records]
    # The first object's Create was answered with a 500, then reset: two orphans; the
    # second object's with two 500s; the third object's had no fault.
    assert len(objects) == 3 and second in objects[1]
    assert aborted == [
        f"{objects[0]}: aborted 2 unfinished multipart upload(s) left by failed requests",
        f"{objects[1]}: aborted 2 unfinished multipart upload(s) left by failed requests",
    ]
    rt.close()


def test_soak_random_faults_after_forwarding_leave_no_open_uploads(
    tmp_path: Path,
    siem_store: SQLiteStore,
    siem_events: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    s3_fast_retries: None,
) -> None:
    faults = s3_server.faults
    assert faults is not None
    rt = runtime(
        siem_store.path,
        [s3_integration("acme", s3_server, s3_bucket, smtp_server, max_events=500)],
    )
    integ = rt.integrations[0]
    # 20 % of the requests that write an object (here a PutObject each, at most one
    # part) are carried out by the server and then answered with a 500 or a dropped
    # connection: the retry writes the same bytes again.
    faults.random_failure_rate(
        0.2,
        seed=11,
        status=500,
        code="InternalError",
        op=("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"),
        actions=("error-after", "reset-after"),
    )
    events = siem_events(20_000, seed=3)
    failed_syncs = 0
    for batch in range(4):
        start = batch * 5000
        ingest(siem_store, "acme", numbered(events[start : start + 5000], start=start + 1))
        result = Pipeline(rt).sync(integ)
        # Six attempts per request rarely all fail; when they do, the next sync replays.
        while not result.ok:
            failed_syncs += 1
            assert failed_syncs < 5, result.errors
            result = Pipeline(rt).sync(integ)
    faults.random_failure_rate(0)
    assert faults.injected("PutObject") >= 5  # each stored the object before failing
    assert open_upload_keys(s3_server, s3_bucket) == []
    seen = shipped(s3_server, s3_bucket, "acme/")
    assert sorted(seen) == list(range(1, 20_001)) and set(seen.values()) == {1}
    assert rt.state.cursor("acme", SINK) == 20_000
    rt.close()


# --------------------------------------------------------------------------- the test server


def test_the_test_server_fails_after_acting_and_lists_uploads_as_s3_does(
    s3_server: S3Server, s3_bucket: str
) -> None:
    from botocore.exceptions import ClientError

    faults = s3_server.faults
    assert faults is not None
    client = s3_server.client(retries={"mode": "standard", "total_max_attempts": 1})
    faults.fail_next(1, status=500, code="InternalError", op="CreateMultipartUpload", after=True)
    with pytest.raises(ClientError, match="InternalError"):
        client.create_multipart_upload(Bucket=s3_bucket, Key="k/lost")
    (lost,) = s3_server.client().list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
    assert lost["Key"] == "k/lost"  # the server carried the request out

    ids = {
        key: [client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]]
        for key in ("k/c", "k/a", "k/b")
    }
    ids["k/a"].append(client.create_multipart_upload(Bucket=s3_bucket, Key="k/a")["UploadId"])
    faults.backdate_upload(ids["k/b"][0], 7200)
    faults.upload_listing_page_size(2)
    pages = list(
        client.get_paginator("list_multipart_uploads").paginate(Bucket=s3_bucket, Prefix="k/")
    )
    listed = [u for page in pages for u in page.get("Uploads", [])]
    assert len(pages) == 3
    # Sorted by key, then by initiation; times are real (moto alone reports 2010).
    assert [(u["Key"], u["UploadId"]) for u in listed] == [
        ("k/a", ids["k/a"][0]),
        ("k/a", ids["k/a"][1]),
        ("k/b", ids["k/b"][0]),
        ("k/c", ids["k/c"][0]),
        ("k/lost", lost["UploadId"]),
    ]
    now = datetime.now(UTC)
    ages = {u["Key"]: (now - u["Initiated"]).total_seconds() for u in listed}
    assert 7195 < ages["k/b"] < 7260
    assert all(0 <= ages[k] < 60 for k in ("k/a", "k/c", "k/lost"))


def test_random_faults_after_forwarding_are_reproducible(
    s3_server: S3Server, s3_bucket: str
) -> None:
    faults = s3_server.faults
    assert faults is not None
    client = s3_server.client(retries={"mode": "standard", "total_max_attempts": 1})

    def run() -> list[str | None]:
        faults.reset()
        faults.random_failure_rate(
            0.5,
            seed=4,
            status=500,
            code="InternalError",
            op={"CreateMultipartUpload"},
            actions=("error-after", "reset-after"),
        )
        for i in range(30):
            with contextlib.suppress(Exception):
                client.create_multipart_upload(Bucket=s3_bucket, Key=f"r/{i}")
            client.head_bucket(Bucket=s3_bucket)  # another op: never faulted
        return [r.fault for r in faults.requests]

    first = run()
    assert first == run()
    assert {"error-after", "reset-after", None} == set(first)
    assert all(f is None for f in first[1::2])  # the HeadBucket calls
    # Every Create was carried out, whatever the client heard.
    listing = s3_server.client().list_multipart_uploads(Bucket=s3_bucket, Prefix="r/")
    assert len(listing["Uploads"]) == 60
