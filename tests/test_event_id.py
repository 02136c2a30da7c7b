"""The opt-in fields of the ``json`` and ``syslog`` formatters (``event_id``, ``account``,
``product``): the default output is untouched, the id is the one every format shares and
is the same in every copy of an event (a replay job, a dead letter shipped later),
hostile text stays one line, and the raw fast path steps aside."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from siem_plugins.builtin.added_fields import PRODUCT, VENDOR, AddedFields
from siem_plugins.builtin.eventid import event_id
from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.builtin.syslog import FRAMINGS, SyslogFormatter
from siem_plugins.events import Event
from siem_plugins.kinds import Formatter
from siem_plugins.options import ConfigError, Options
from siem_plugins.testing import FormatterConformance
from siem_plugins.testing.conformance import sample_events
from siem_plugins.testing.s3server import S3Server
from tests.helpers import ingest, numbered
from tests.test_formatters import seed, to_events
from tests.test_verify import PREFIX, Setup

ALL = {"event_id": True, "account": True, "product": True}


def body_of(line: bytes) -> dict[str, Any]:
    """A syslog line's BODY (or a JSON line) as an object, keys in order."""
    if line.startswith(b"{"):
        obj: dict[str, Any] = orjson.loads(line)
    else:
        obj = orjson.loads(b"{" + line[line.index(b'"log_type"') :] + b"}")
    return obj


# --------------------------------------------------------------------------- the id


def test_the_id_is_the_shared_definition() -> None:
    """The first 32 hex digits of SHA-256 over account, NUL, decimal id: the value the
    cef/leef/ocsf/ecs formats carry too, written out here independently."""
    assert event_id("acme", 1) == hashlib.sha256(b"acme\x001").hexdigest()[:32]
    assert (
        event_id("acme", 1) == "71e54c5547d3bdd4feb69e4898ed054e"
    )  # printf 'acme\0001' | sha256sum
    assert event_id("acme", 1) != event_id("globex", 1)
    assert event_id("acme", 1) != event_id("acme", 2)
    assert event_id("a1", 2) != event_id("a", 12)  # the NUL keeps them apart


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("framing", FRAMINGS)
def test_options_off_give_the_specs_bytes_and_keep_the_fast_path(framing: str) -> None:
    events = seed()
    off = {"event_id": False, "account": False, "product": False}
    for table in ({}, off):
        fmt = JSONFormatter.from_options(Options(dict(table)))
        assert fmt.format(events) == JSONFormatter().format(events)
        assert fmt.format_raw is not None
        assert fmt.format_raw([e.raw for e in events]) == fmt.format(events)
        log = SyslogFormatter.from_options(Options({"framing": framing, **table}))
        assert log.format(events) == SyslogFormatter(framing).format(events)
    # The spec's records carry none of the added names.
    assert b"event_id" not in JSONFormatter().format(events)


# --------------------------------------------------------------------------- added fields


def test_json_appends_the_fields_after_everything_the_event_carries() -> None:
    events = to_events([{**e.fields(), "extra": [1, {"x": None}]} for e in seed()], start=41)
    plain = JSONFormatter().format(events).splitlines()
    fmt = JSONFormatter.from_options(Options(dict(ALL)))
    assert fmt.format_raw is None  # the raw bytes carry no account and no id
    lines = fmt.format(events).splitlines()
    for event, line, before in zip(events, lines, plain, strict=True):
        tail = (
            f',"account":"acme","vendor":"OPSWAT","product":"MetaDefender IT Access",'
            f'"event_id":"{event_id("acme", event.id)}"}}'
        )
        assert line == before[:-1] + tail.encode()  # the event's own bytes are kept
        obj = orjson.loads(line)
        assert list(obj)[-4:] == ["account", "vendor", "product", "event_id"]
        assert (obj["vendor"], obj["product"]) == (VENDOR, PRODUCT)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_syslog_bodies_end_with_the_same_fields_as_json(framing: str) -> None:
    events = seed()
    for table in ({"event_id": True}, {"account": True}, {"product": True}, ALL):
        js = JSONFormatter.from_options(Options(dict(table))).format(events).splitlines()
        log = SyslogFormatter.from_options(Options({"framing": framing, **table}))
        lines = log.format(events).splitlines()
        plain = SyslogFormatter(framing).format(events).splitlines()
        for json_line, line, before in zip(js, lines, plain, strict=True):
            assert line.startswith(before)  # header and the spec's body unchanged
            assert body_of(line) == orjson.loads(json_line)
            assert list(body_of(line)) == list(orjson.loads(json_line))


def test_only_the_chosen_fields_are_added() -> None:
    (event,) = seed()[:1]
    for table, names in (
        ({"event_id": True}, ["event_id"]),
        ({"account": True}, ["account"]),
        ({"product": True}, ["vendor", "product"]),
        ({"account": True, "event_id": True}, ["account", "event_id"]),
    ):
        obj = orjson.loads(JSONFormatter.from_options(Options(dict(table))).format([event]))
        assert list(obj)[len(event.fields()) :] == names, table


def test_the_account_is_escaped_whatever_it_is() -> None:
    """Config accounts are plain names, but the formatter takes whatever an Event says."""
    (event,) = seed()[:1]
    odd = event._replace(account='a"c\nme\u2028')
    line = JSONFormatter(AddedFields(account=True, event_id=True)).format([odd])
    assert line.count(b"\n") == 1 and b"\xe2\x80\xa8" not in line
    obj = orjson.loads(line)
    assert obj["account"] == odd.account
    assert obj["event_id"] == event_id(odd.account, odd.id)


def test_an_event_with_a_field_of_the_same_name_is_refused_by_name() -> None:
    """A duplicate key would mean different things to different readers."""
    base = seed()[0].fields()
    clash = to_events([{**base, "account": "from-the-producer"}], start=7)
    fmt = JSONFormatter(AddedFields(account=True))
    with pytest.raises(ValueError, match="event 7 already has a top-level field 'account'"):
        fmt.format(clash)
    with pytest.raises(ValueError, match="'vendor'"):
        JSONFormatter(AddedFields(product=True)).format(to_events([{**base, "vendor": "x"}]))
    with pytest.raises(ValueError, match="'event_id'"):
        SyslogFormatter("bare", added=AddedFields(event_id=True)).format(
            to_events([{**base, "event_id": 1}])
        )
    # A clash is found whatever follows it, even a nested field that ends like a
    # record without unknown fields (which the formatter does not search).
    tricky = {**base, "event_id": "x", "z": {"timestamp": "2022-07-15T08:55:12.279Z"}}
    with pytest.raises(ValueError, match="'event_id'"):
        JSONFormatter(AddedFields(event_id=True)).format(to_events([tricky]))
    # The same names nested, inside text or unused by the options are no clash.
    fine = to_events(
        [
            {**base, "meta": {"account": 1, "event_id": 2}},
            {**base, "details": '"account":"x","event_id":"y"'},
            {**base, "vendor": "someone"},
        ]
    )
    lines = JSONFormatter(AddedFields(account=True, event_id=True)).format(fine).splitlines()
    assert [orjson.loads(x)["account"] for x in lines] == ["acme"] * 3
    assert orjson.loads(lines[0])["meta"] == {"account": 1, "event_id": 2}


@pytest.mark.parametrize("key", ["event_id", "account", "product"])
def test_a_non_boolean_option_is_a_located_error(key: str) -> None:
    for factory in (JSONFormatter.from_options, SyslogFormatter.from_options):
        with pytest.raises(ConfigError) as info:
            factory(Options({key: "yes"}, path="integration[0].format", file="siem.toml"))
        assert str(info.value).startswith(f"siem.toml: integration[0].format.{key}: ")
        assert "true or false" in str(info.value)


def test_batching_does_not_change_the_output() -> None:
    events = sample_events(300)
    for fmt in (
        JSONFormatter(AddedFields(event_id=True, account=True)),
        SyslogFormatter(added=AddedFields(event_id=True, product=True)),
    ):
        whole = fmt.format(events)
        assert b"".join(fmt.format(events[i : i + 37]) for i in range(0, 300, 37)) == whole
        ids = [body_of(line)["event_id"] for line in whole.splitlines()]
        assert ids == [event_id(e.account, e.id) for e in events]
        assert len(set(ids)) == 300


# --------------------------------------------------------------------------- conformance


class TestJSONWithAddedFields(FormatterConformance):
    escapes_unicode_line_breaks = True

    @pytest.fixture
    def formatter(self) -> Formatter:
        return JSONFormatter.from_options(Options(dict(ALL)))


class TestSyslogWithAddedFields(FormatterConformance):
    escapes_unicode_line_breaks = True

    @pytest.fixture(params=FRAMINGS)
    def formatter(self, request: pytest.FixtureRequest) -> Formatter:
        return SyslogFormatter.from_options(Options({"framing": request.param, **ALL}))


# --------------------------------------------------------------------------- end to end


class IdSetup(Setup):
    """Account ``acme`` (ids 1-120 and 151-300, another account's between) shipped to
    moto's S3 over HTTP by integration ``acme`` with the given format."""

    def __init__(
        self, tmp_path: Path, server: S3Server, bucket: str, siem_events: Any, fmt: Any
    ) -> None:
        super().__init__(tmp_path)
        self.server, self.bucket, self.client = server, bucket, server.client()
        events = numbered(siem_events(270))
        self.ids = ingest(self.store, "acme", events[:120])
        ingest(self.store, "globex", siem_events(30, seed=2))
        self.ids += ingest(self.store, "acme", events[120:])
        self.add("acme", server.sink_options(bucket, prefix=PREFIX), fmt=fmt)

    def lines(self, prefix: str) -> dict[str, list[bytes]]:
        out = {}
        for obj in self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)["Contents"]:
            body = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = gzip.decompress(body).splitlines()
        return out

    def ids_by_seq(self, prefix: str) -> dict[int, str]:
        """``seq`` -> ``event_id`` of every line under ``prefix``; each seq once."""
        out: dict[int, str] = {}
        for lines in self.lines(prefix).values():
            for line in lines:
                obj = body_of(line)
                assert obj["seq"] not in out, f"seq {obj['seq']} twice under {prefix}"
                out[obj["seq"]] = obj["event_id"]
        return out

    def expected(self) -> dict[int, str]:
        return {seq: event_id("acme", i) for seq, i in enumerate(self.ids, 1)}


@pytest.mark.parametrize("fmt", ["json", "syslog"])
def test_a_replay_job_writes_the_same_ids_and_verify_is_clean(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any, fmt: str
) -> None:
    s3 = IdSetup(tmp_path, s3_server, s3_bucket, siem_events, {"type": fmt, **ALL})
    s3.sync()
    shipped = s3.ids_by_seq(PREFIX)
    assert shipped == s3.expected()
    for lines in s3.lines(PREFIX).values():
        assert all(body_of(x)["account"] == "acme" for x in lines)
    # verify --deep formats the store's events again and compares the bytes.
    assert s3.verify("--deep", status=0)["acme"]["objects"] == 3
    proc = s3.run(
        "replay", "start", "-i", "acme", "--from-id", "100", "--to-id", "200",
        "--set", "prefix=restore/", "--job", "again",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    replayed = s3.ids_by_seq("restore/")
    # Ids 100-120 and 151-200 of acme: seqs 100-170.
    assert sorted(replayed) == list(range(100, 171))
    assert replayed == {seq: shipped[seq] for seq in replayed}


def test_a_dead_letter_shipped_later_carries_the_id_it_would_have_had(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, siem_events: Any
) -> None:
    """An event stored with a three-digit year cannot be framed as RFC 5424; it is set
    aside, and once the integration writes bare lines it is shipped by ``dead-letters
    replay``, with the id derived from its store id like every other."""
    s3 = IdSetup(tmp_path, s3_server, s3_bucket, siem_events, {"type": "syslog", "event_id": True})
    legacy = {
        "log_type": "config",
        "details": "legacy",
        "admin_name": "A",
        "type": "Account",
        "event": "e",
        "admin_email": "a@example.com",
        "timestamp": "999-06-01T00:00:00.000Z",
        "seq": 271,
    }
    with sqlite3.connect(s3.db) as conn:
        cur = conn.execute(
            "INSERT INTO siem_event (account, type, log_type, ts, body) VALUES (?,?,?,?,?)",
            ("acme", "Account", "config", legacy["timestamp"], orjson.dumps(legacy)),
        )
        legacy_id = cur.lastrowid
    assert legacy_id is not None
    s3.sync()
    listing = json.loads(s3.run("dead-letters", "list", "--json").stdout)
    assert [d["event_id"] for d in listing] == [legacy_id]
    assert s3.ids_by_seq(PREFIX) == s3.expected()
    s3.integrations[0]["format"] = {"type": "syslog", "framing": "bare", "event_id": True}
    s3.write()
    proc = s3.run("dead-letters", "replay")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    every = s3.ids_by_seq(PREFIX)
    assert every == {**s3.expected(), 271: event_id("acme", legacy_id)}
    replays = [
        key
        for key in s3.lines(PREFIX)
        if s3.client.head_object(Bucket=s3.bucket, Key=key)["Metadata"].get("siem-replay")
    ]
    assert len(replays) == 1
    stored = Event(
        legacy_id, "acme", "Account", "config", legacy["timestamp"], orjson.dumps(legacy)
    )
    bare = SyslogFormatter("bare", added=AddedFields(event_id=True)).format([stored])
    assert s3.lines(PREFIX)[replays[0]] == bare.splitlines()


def test_the_formats_page_shows_what_the_formatters_write() -> None:
    """docs/formats.md's examples of the added fields, byte for byte (the config event
    of the documentation's examples, stored as id 3 of account acme)."""
    page = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    section = page[page.index("## Added fields") : page.index("## Reading the bucket")]
    json_line, syslog_line = re.findall(r"```\n(.*?)\n```", section, re.S)
    config = seed()[2]
    assert config.id == 3 and config.log_type == "config"
    assert json_line.encode() + b"\n" == JSONFormatter.from_options(Options(dict(ALL))).format(
        [config]
    )
    full = SyslogFormatter.from_options(Options(dict(ALL))).format([config]).decode()
    head, _, tail = syslog_line.partition(",...,")
    assert full.startswith(head) and full.endswith(tail + "\n")
