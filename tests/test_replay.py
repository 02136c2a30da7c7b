"""``siem-plugins replay`` re-ships a range (by id or by event time) to another bucket or
prefix exactly once, through lost replies, without moving the integration's cursors; and
``start_at`` starts a new integration from now or from a date instead of the whole
history. Real S3 (moto over HTTP), the command run as users run it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from siem_plugins.keys import parse_key
from siem_plugins.pipeline import Pipeline
from siem_plugins.replay import ReplayRunner, new_job
from siem_plugins.retention import prune, shippers_of
from siem_plugins.storage import NOTIFIER, SINK, open_state
from siem_plugins.testing.s3server import S3Server
from tests.helpers import ingest, integration, local_objects, numbered, runtime, seqs_in
from tests.test_verify import PREFIX, S3Setup, info


@pytest.fixture
def s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any) -> S3Setup:
    return S3Setup(tmp_path, s3_server, s3_bucket, siem_events)


def objects(s3: S3Setup, prefix: str) -> dict[str, tuple[dict[str, str], bytes]]:
    """Every object under ``prefix``: its metadata and its decompressed body, by key."""
    out = {}
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    for obj in listing.get("Contents", []):
        got = s3.client.get_object(Bucket=s3.bucket, Key=obj["Key"])
        out[obj["Key"]] = (got["Metadata"], gzip.decompress(got["Body"].read()))
    return out


def cursors(s3: S3Setup) -> dict[tuple[str, str], int]:
    state = open_state(s3.store_url)
    try:
        return {k: v for k, v in state.cursors().items() if k[0] == "acme"}
    finally:
        state.close()


def test_replay_by_id_ships_the_range_once_to_another_prefix_and_moves_no_cursor(
    s3: S3Setup,
) -> None:
    before = cursors(s3)
    assert before == {("acme", SINK): 500, ("acme", NOTIFIER): 500}
    # Ids 150-300 of acme: 150-200 and 251-300 (globex holds 201-250): 101 events.
    proc = s3.run(
        "replay", "start", "-i", "acme", "--from-id", "150", "--to-id", "300",
        "--set", "prefix=restore/", "--job", "lost-bucket",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job lost-bucket: done: ids 150-300, 2 objects, 101 events" in proc.stdout
    got = objects(s3, "restore/")
    assert len(got) == 2
    seqs = []
    for key, (meta, body) in sorted(got.items()):
        assert key.startswith("restore/acme/")
        assert meta["siem-replay-job"] == "lost-bucket"
        assert meta["siem-integration"] == "acme"
        seqs += seqs_in(body)
    assert seqs == list(range(150, 251))  # seq n is id n below 201, id n+50 above
    assert cursors(s3) == before
    # The originals are untouched and still verify clean.
    assert s3.verify("--deep", status=0)["acme"]["objects"] == 5
    listed = json.loads(s3.run("replay", "list", "--json").stdout)
    assert [(j["job"], j["first_id"], j["last_id"], j["objects"], j["events"]) for j in listed] == [
        ("lost-bucket", 150, 300, 2, 101)
    ]
    assert listed[0]["finished"] is not None
    # The same command again is a new replay, not a resumption: the name is taken.
    again = s3.run("replay", "start", "-i", "acme", "--from-id", "1", "--job", "lost-bucket")
    assert again.returncode == 2 and "already has a replay job named 'lost-bucket'" in again.stderr
    assert s3.run("replay", "resume").stdout.strip() == "no unfinished replay jobs"


def test_replay_by_event_time_into_the_same_prefix_is_told_apart_by_verify(s3: S3Setup) -> None:
    stamps = [e["timestamp"] for e in s3.events]
    since, until = stamps[99], stamps[349]  # seqs 100..349 (events are time-ordered)
    window = [e["seq"] for e in s3.events if since <= e["timestamp"] < until]
    proc = s3.run("replay", "start", "-i", "acme", "--since", since, "--until", until)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    replayed = {
        k: v for k, v in objects(s3, PREFIX).items() if v[0].get("siem-replay-job") is not None
    }
    lines = [seq for _, body in replayed.values() for seq in seqs_in(body)]
    assert lines == window and len(window) >= 250
    # Same prefix as the originals: verify notes the copies and checks the rest.
    report = s3.verify("--deep", status=0)["acme"]
    assert report["findings"] == []
    noted = info(report, "replay")
    assert sorted(n["keys"][0] for n in noted) == sorted(s3.url(k) for k in replayed)
    assert all("written by replay job" in n["message"] for n in noted)


def test_a_replay_whose_reply_was_lost_resumes_and_writes_each_object_once(
    s3: S3Setup,
) -> None:
    # S3 stores the first object of the job, but its reply is lost (AccessDenied is not
    # retried): the job stops with its intent pending and its object in the bucket.
    s3.server.faults.fail_next(
        status=403, code="AccessDenied", op="PutObject", path_contains="/again/", after=True
    )
    proc = s3.run("replay", "start", "-i", "acme", "--from-id", "1", "--set", "prefix=again/")
    assert proc.returncode == 1
    assert "NOT FINISHED" in proc.stdout and "AccessDenied" in proc.stdout
    assert "replay resume --job" in proc.stdout
    first = objects(s3, "again/")
    assert len(first) == 1  # committed by S3 all the same
    (job,) = json.loads(s3.run("replay", "list", "--json").stdout)
    assert job["finished"] is None and job["objects"] == 0
    proc = s3.run("replay", "resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = objects(s3, "again/")
    assert set(first) <= set(got)  # the pending intent wrote the same key again
    parts = [parse_key(k[len("again/") :]) for k in got]
    assert sorted((p.first_id, p.last_id) for p in parts if p) == [
        (1, 100), (101, 200), (251, 350), (351, 450), (451, 500)
    ]  # fmt: skip
    seqs = [s for _, (_, body) in sorted(got.items()) for s in seqs_in(body)]
    assert sorted(seqs) == list(range(1, 451)) and len(seqs) == 450
    (job,) = json.loads(s3.run("replay", "list", "--json").stdout)
    assert job["finished"] is not None and (job["objects"], job["events"]) == (5, 450)
    assert cursors(s3) == {("acme", SINK): 500, ("acme", NOTIFIER): 500}


def test_replay_refuses_what_it_cannot_do_with_a_clear_error(s3: S3Setup) -> None:
    def fails(*args: str) -> str:
        proc = s3.run("replay", *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        return proc.stderr

    assert "ids after 500 have not been shipped yet" in fails(
        "start", "-i", "acme", "--from-id", "1", "--to-id", "600"
    )
    err = fails("start", "-i", "acme", "--from-id", "1", "--set", "secret_access_key=abc123")
    assert "secrets cannot be given on the command line" in err and "abc123" not in err
    err = fails("start", "-i", "acme", "--from-id", "1", "--set", "bukket=x")
    assert "bukket" in err and "bucket" in err  # located, with the likely key
    assert "choose ids" in fails("start", "-i", "acme", "--from-id", "1", "--since", "2020-01-01")
    assert "no time zone" in fails("start", "-i", "acme", "--since", "2026-01-01T10:00:00")
    assert "no integration named 'nope'" in fails("start", "-i", "nope", "--from-id", "1")
    assert "no shipped event" in fails("start", "-i", "acme", "--since", "2999-01-01")
    # Nothing was recorded by the refusals, nothing written.
    assert s3.run("replay", "list").stdout.strip() == "no replay jobs"
    dry = s3.run("replay", "start", "-i", "acme", "--from-id", "7", "--dry-run", "--to", "acme")
    assert dry.returncode == 0 and "would replay ids 7-500 of account acme" in dry.stdout
    assert s3.run("replay", "list").stdout.strip() == "no replay jobs"


def test_an_unfinished_replay_keeps_its_events_from_prune(tmp_path: Path, siem_events: Any) -> None:
    rt = runtime(
        tmp_path / "s.db", [integration("a", {"type": "local", "path": str(tmp_path / "o")})]
    )
    try:
        ingest(rt.source, "a", numbered(siem_events(300)))  # type: ignore[arg-type]
        pipeline = Pipeline(rt)
        (integ,) = rt.integrations
        assert pipeline.sync(integ).ok
        job = new_job(integ, source=rt.source, sink_cursor=300, from_id=101, to_id=250, name="j")
        rt.state.create_replay(job)
        report = prune(rt.source, rt.state, shippers_of(rt.config.integrations), pause=0)  # type: ignore[arg-type]
        assert report.count == 150  # ids 1-100 and 251-300 go; the job's 101-250 stay
        (job,) = rt.state.replay_jobs("a")
        outcome = ReplayRunner(pipeline).run(job)
        assert outcome.finished and outcome.events == 150
        report = prune(rt.source, rt.state, shippers_of(rt.config.integrations), pause=0)  # type: ignore[arg-type]
        assert report.count == 150  # the job is done: its ids go too
    finally:
        rt.close()


# --------------------------------------------------------------------------- start_at


def stored(root: Path) -> list[int]:
    return [s for body in local_objects(root).values() for s in seqs_in(body)]


@pytest.mark.parametrize("start_at", ["now", "date"])
def test_start_at_ships_only_what_comes_after(
    tmp_path: Path, siem_events: Any, start_at: str
) -> None:
    events = numbered(siem_events(300))
    out = tmp_path / "o"
    path = tmp_path / "s.db"
    # 200 events of history before the integration exists.
    first = runtime(path, [integration("old", {"type": "local", "path": str(tmp_path / "x")})])
    ingest(first.source, "a", events[:200])  # type: ignore[arg-type]
    first.close()
    at = "now" if start_at == "now" else events[150]["timestamp"]
    integ = integration("a", {"type": "local", "path": str(out)}, start_at=at)
    rt = runtime(path, [integ])
    try:
        pipeline = Pipeline(rt)
        (i,) = rt.integrations
        assert pipeline.sync(i).ok
        expected = [] if start_at == "now" else list(range(151, 201))
        assert stored(out) == expected
        ingest(rt.source, "a", events[200:])  # type: ignore[arg-type]
        result = pipeline.sync(i)
        assert result.ok
        assert stored(out) == [*expected, *range(201, 301)]
        # The notifier started at the same point: its digests tell only of the new events.
        digests = [d for d in result.digests]
        assert all(d.first_id > (200 if start_at == "now" else 150) for d in digests)
        assert rt.state.cursor("a", NOTIFIER) == rt.state.cursor("a", SINK) == 300
    finally:
        rt.close()


def test_start_at_never_moves_a_cursor_that_exists(tmp_path: Path, siem_events: Any) -> None:
    out = tmp_path / "o"
    path = tmp_path / "s.db"
    rt = runtime(path, [integration("a", {"type": "local", "path": str(out)})])
    ingest(rt.source, "a", numbered(siem_events(100)))  # type: ignore[arg-type]
    assert Pipeline(rt).sync(rt.integrations[0]).ok
    rt.close()
    # start_at added to an integration that has shipped: it changes nothing.
    rt = runtime(path, [integration("a", {"type": "local", "path": str(out)}, start_at="now")])
    try:
        ingest(rt.source, "a", numbered(siem_events(10), start=101))  # type: ignore[arg-type]
        assert Pipeline(rt).sync(rt.integrations[0]).ok
        assert stored(out) == list(range(1, 111))
    finally:
        rt.close()


def test_an_event_stored_late_with_an_old_time_still_ships_after_start_at(
    tmp_path: Path, siem_events: Any
) -> None:
    """ids follow arrival: start_at by time starts at the first event of that time, and
    everything stored after it ships, whatever its own time."""
    events = numbered(siem_events(20))
    late = {**events[0], "seq": 99}
    out = tmp_path / "o"
    rt = runtime(
        tmp_path / "s.db",
        [integration("a", {"type": "local", "path": str(out)}, start_at=events[10]["timestamp"])],
    )
    try:
        ingest(rt.source, "a", [*events, late])  # type: ignore[arg-type]
        assert Pipeline(rt).sync(rt.integrations[0]).ok
        lines = [orjson.loads(x) for b in local_objects(out).values() for x in b.splitlines()]
        assert [x["seq"] for x in lines] == [*range(11, 21), 99]
    finally:
        rt.close()


class PlainSource:
    """A source that is not one of the built-in stores (a plugin's): the helpers read it
    through instead of asking SQL."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.plan = inner.plan
        self.read = inner.read
        self.read_raw = None

    def close(self) -> None:
        pass


def test_time_windows_and_start_points_agree_on_any_source(
    tmp_path: Path, siem_events: Any
) -> None:
    from siem_plugins.storage import SQLiteStore
    from siem_plugins.timeline import last_id, start_cursor, time_span

    store = SQLiteStore(tmp_path / "s.db")
    try:
        events = siem_events(60)
        ingest(store, "a", events[:30])
        ingest(store, "b", siem_events(5, seed=3))
        ingest(store, "a", [*events[30:], {**events[0], "details": "late"}])
        plain = PlainSource(store)
        ts = sorted(e["timestamp"] for e in events)
        for since, until in [(None, None), (ts[10], ts[40]), (ts[40], None), ("2999", None)]:
            fast = time_span(store, "a", since, until)
            slow = time_span(plain, "a", since, until)  # type: ignore[arg-type]
            assert fast == slow
        assert time_span(store, "a", ts[10], ts[40]).count == 30  # type: ignore[union-attr]
        assert last_id(store, "a") == last_id(plain, "a") == 66  # type: ignore[arg-type]
        for at in ("now", ts[20], "2999-01-01T00:00:00.000Z"):
            assert start_cursor(store, "a", at) == start_cursor(plain, "a", at)  # type: ignore[arg-type]
        assert start_cursor(store, "a", ts[20]) == 20
    finally:
        store.close()
