"""The ``cef`` formatter (ArcSight CEF:0): the conformance suite, golden files of the
product's examples, and every record read back by parsers that are not ours: a
reference parser written from the CEF grammar (tests/cefleef.py) and two third-party
ones from PyPI, ``cefp`` (a full tokenizer with the spec's escapes) and ``pycef`` (the
most used one, naive: it cannot read a ``\\`` or ``=`` in a header field, nor unescape
values, so it gets the product's own events only)."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cefp
import pycef
import pytest

from siem_plugins.builtin.cef import CEFFormatter
from siem_plugins.builtin.cef import epoch_ms as shipped_epoch_ms
from siem_plugins.builtin.eventid import event_id as shipped_event_id
from siem_plugins.events import Event
from siem_plugins.kinds import Formatter
from siem_plugins.options import ConfigError, Options
from siem_plugins.pipeline import Pipeline
from siem_plugins.storage import SQLiteStore
from siem_plugins.testing import (
    CONTROL_TEXTS,
    INJECTION_TEXTS,
    UNICODE_TEXTS,
    FormatterConformance,
    build,
    events_from_dicts,
    sample_events,
)
from tests.cefleef import (
    DATA,
    GOLDEN,
    SEVERITY,
    check_golden,
    edge_events,
    epoch_ms,
    event_id,
    expected_cef,
    hostile_dicts,
    parse_cef,
    read_back,
    seed_events,
    with_json,
)
from tests.helpers import ingest, integration, local_objects, numbered, runtime

# --------------------------------------------------------------------------- contract


class TestCEFConformance(FormatterConformance):
    @pytest.fixture(params=[{}, {"version": "7.6 | build\\42"}], ids=["default", "version"])
    def formatter(self, request: pytest.FixtureRequest) -> Formatter:
        return build("formatter", "cef", request.param)  # as a config builds it


def test_listed_as_a_builtin_with_its_extension() -> None:
    fmt = build("formatter", "cef", {})
    assert (fmt.extension, fmt.content_type) == ("cef", "text/plain; charset=utf-8")
    assert fmt.format_raw is None  # the output depends on the account and the store id


# --------------------------------------------------------------------------- golden


def test_golden_seed_events() -> None:
    check_golden("cef/seed.cef", CEFFormatter().format(seed_events()))


def test_golden_edge_events() -> None:
    fmt = build("formatter", "cef", {"version": "7.6.586.1"})
    check_golden("cef/edge.cef", fmt.format(edge_events()))


def test_the_golden_bytes_of_an_escaped_record() -> None:
    """The escapes, spelled out, for the first edge event (the golden file holds them
    all): \\\\, \\= and \\r \\n in values; header fields untouched but for | and \\."""
    line = read_back(CEFFormatter(), edge_events()[:1])[0]
    assert line.startswith("CEF:0|OPSWAT|MetaDefender IT Access|1.0|usb_blocked|usb_blocked|3|")
    assert " msg=line1\\r\\nline2\\nline3\\rend \\\\n literal x\\=y cs1\\=forged dhost=" in line
    assert " dhost=pipe | back\\\\slash \\= equals deviceExternalId=dev\\=1|x\\\\y " in line
    assert " duser=CORP\\\\jdoe " in line
    assert line.endswith(
        ' cs2Label=Extra Fields cs2={"seq":18446744073709551616,'
        '"nested":{"k":["a\\=b","\\\\u2028","t\\\\tab"]},"flag":true}'
    )
    name = read_back(CEFFormatter(), edge_events()[1:2])[0].split("|")[5:8]
    assert name == ["Sign-in \\", " failed \\\\ twice  again", "5"]


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "events",
    [seed_events(), edge_events(), sample_events(300, seed=5), events_from_dicts(hostile_dicts())],
    ids=["seed", "edge", "demo", "hostile"],
)
def test_the_reference_parser_reads_every_field_back(events: list[Event]) -> None:
    for event, line in zip(events, read_back(CEFFormatter(), events), strict=True):
        header, ext = parse_cef(line)
        want_header, want_ext = expected_cef(event)
        assert header == want_header
        assert with_json(ext, "cs2") == want_ext


@pytest.mark.parametrize(
    "events",
    [seed_events(), edge_events(), sample_events(300, seed=5), events_from_dicts(hostile_dicts())],
    ids=["seed", "edge", "demo", "hostile"],
)
def test_cefp_reads_every_field_back(events: list[Event]) -> None:
    for event, line in zip(events, read_back(CEFFormatter(), events), strict=True):
        parsed = cefp.parse(line)
        header, ext = expected_cef(event)
        got_header = [
            "CEF:" + parsed["version"],
            parsed["device"]["vendor"],
            parsed["device"]["product"],
            parsed["device"]["version"],
            parsed["device"]["event_class_id"],
            parsed["name"],
            parsed["severity"],
        ]
        assert got_header == header
        assert with_json(parsed["extension"], "cs2") == ext


def test_hostile_text_stays_in_its_field() -> None:
    """Texts that try to end a line, a field or the header, or to forge a key: one line
    per event, and every line has exactly the keys the mapping writes (the reference
    parser tests above compare every value)."""
    events = events_from_dicts(hostile_dicts())
    lines = read_back(CEFFormatter(), events)
    for event, line in zip(events, lines, strict=True):
        header, ext = parse_cef(line)
        want_header, want_ext = expected_cef(event)
        assert (header[:5], header[6]) == (want_header[:5], want_header[6])
        assert sorted(ext) == sorted(want_ext)
        assert ext["externalId"] == event_id("acme", event.id)
    # The Account events' `event` text is the header's Name: CR and LF read as spaces.
    names = {parse_cef(line)[0][5] for line in lines}
    assert "x CEF:0|Evil|Forged|1|sig|name|10|msg=forged" in names
    assert "crlf  x" in names and "pipe | in the middle" in names


def test_the_conformance_suites_texts_round_trip() -> None:
    texts = (*CONTROL_TEXTS, *INJECTION_TEXTS, *UNICODE_TEXTS)
    events = events_from_dicts(
        [{**d, "details": t} for t in texts for d in map(json.loads, seed_lines())]
    )
    for event, line in zip(events, read_back(CEFFormatter(), events), strict=True):
        assert parse_cef(line)[1]["msg"] == json.loads(event.raw)["details"]


def seed_lines() -> list[str]:
    return (DATA / "seed_events.ndjson").read_text().splitlines()


def test_pycef_reads_the_products_events() -> None:
    """pycef, the CEF parser most used from Python, on events whose text needs no
    escaping (it splits on ``=`` and ``|`` without reading escapes)."""
    events = seed_events() + sample_events(300, seed=5)
    checked = 0
    for event, line in zip(events, read_back(CEFFormatter(), events), strict=True):
        header, ext = expected_cef(event)
        if any(c in str(v) for v in ext.values() for c in "\\=\r\n") or "=" in header[5]:
            continue
        parsed = pycef.parse(line)
        assert parsed is not None, line
        assert [
            parsed["DeviceVendor"],
            parsed["DeviceProduct"],
            parsed["DeviceVersion"],
            parsed["DeviceEventClassID"],
            parsed["Name"],
            parsed["Severity"],
        ] == header[1:]
        # pycef renames a custom field to its label (cs1 -> "Device Group").
        if "cs1" in ext:
            ext["Device Group"] = ext.pop("cs1")
            del ext["cs1Label"]
        if "deviceCustomDate1" in ext:
            ext["Last Seen"] = ext.pop("deviceCustomDate1")
            del ext["deviceCustomDate1Label"]
        got = {k: v for k, v in parsed.items() if k not in PYCEF_HEADER}
        assert got == ext
        checked += 1
    assert checked >= 250  # the demo's text needs no escaping: nearly all are checked


PYCEF_HEADER = {
    "CEFVersion",
    "DeviceVendor",
    "DeviceProduct",
    "DeviceVersion",
    "DeviceEventClassID",
    "Name",
    "DeviceName",
    "Severity",
    "DeviceSeverity",
}


# --------------------------------------------------------------------------- mapping


def test_severity_follows_the_log_type() -> None:
    dicts = [json.loads(line) for line in seed_lines()]
    device = dicts[0]
    by_type = {
        t: read_back(CEFFormatter(), events_from_dicts([{**device, "log_type": t}]))[0]
        for t in ("threat_detected", "blocked", "compliant", "usb_plugged")
    }
    assert {t: parse_cef(line)[0][6] for t, line in by_type.items()} == {
        "threat_detected": "8",
        "blocked": "6",
        "compliant": "2",
        "usb_plugged": "3",  # a log type the table does not know: the default
    }
    account = events_from_dicts([{**dicts[2], "log_type": "login_failed", "event": ""}])
    header = parse_cef(read_back(CEFFormatter(), account)[0])[0]
    assert header[5:] == ["A sign-in failed", "5"]  # no `event` text: the description


def test_rt_is_exact_to_the_millisecond_over_the_whole_range() -> None:
    """rt goes through a float: the extremes and 20,000 random instants of years
    1-9999 against integer arithmetic (calendar.timegm, in tests/cefleef.py)."""
    rng = random.Random(14)
    low, high = epoch_ms("0001-01-01T00:00:00.000Z"), epoch_ms("9999-12-31T23:59:59.999Z")
    instants = [low, high, 0, -1, *(rng.randrange(low, high + 1) for _ in range(20_000))]
    event = seed_events()[0]
    for ms in instants:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        stamp = (
            f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}.{t.microsecond // 1000:03d}Z"
        )
        assert shipped_epoch_ms(stamp, event) == epoch_ms(stamp) == ms, stamp


def test_the_event_id_is_the_documented_hash_and_stable() -> None:
    assert shipped_event_id("acme", 1) == event_id("acme", 1) == "71e54c5547d3bdd4feb69e4898ed054e"
    assert shipped_event_id("a1", 2) != shipped_event_id("a", 12)
    e = seed_events()[0]
    line = read_back(CEFFormatter(), [e])[0]
    # The same account and store id: the same id, whatever the batch or the formatter.
    again = read_back(CEFFormatter(), [*sample_events(3), e])[3]
    assert again == line and parse_cef(line)[1]["externalId"] == event_id("acme", e.id)
    other = Event(e.id, "globex", e.type, e.log_type, e.timestamp, e.raw)
    assert parse_cef(read_back(CEFFormatter(), [other])[0])[1]["externalId"] == event_id(
        "globex", e.id
    )


@pytest.mark.parametrize("version", ["", "x" * 32, "1.0\n", "1.0\u2028"])
def test_a_bad_version_is_located(version: str) -> None:
    with pytest.raises(ConfigError) as info:
        CEFFormatter.from_options(
            Options({"version": version}, path="integration[1].format", file="siem.toml")
        )
    assert str(info.value).startswith("siem.toml: integration[1].format.version: must be 1-31")


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'vendor'"):
        build("formatter", "cef", {"vendor": "Acme"})
    with pytest.raises(ConfigError, match="expected a string"):
        build("formatter", "cef", {"version": 2})


# --------------------------------------------------------------------------- bad input


def test_an_event_it_cannot_format_is_set_aside_and_the_rest_ships(
    tmp_path: Path, siem_store: SQLiteStore, siem_events: Any
) -> None:
    """A stored timestamp that is not canonical (another writer, an older version) fails
    that event alone, with its id; the pipeline sets it aside and ships the others."""
    ids = ingest(siem_store, "acme", numbered(siem_events(30)))
    with sqlite3.connect(siem_store.path) as db:
        db.execute("UPDATE siem_event SET ts = '2022-07-15 08:55' WHERE id = ?", (ids[9],))
    bucket = tmp_path / "bucket"
    integ = integration(
        "acme-cef", {"type": "local", "path": str(bucket)}, fmt="cef", compression="none"
    )
    rt = runtime(siem_store.path, [{**integ, "account": "acme"}])
    try:
        result = Pipeline(rt).sync(rt.integrations[0])
        assert result.ok, result.errors
        assert list(result.set_aside) == [ids[9]]
        assert f"event {ids[9]}: timestamp '2022-07-15 08:55' is not" in result.set_aside[ids[9]]
        (data,) = local_objects(bucket).values()
        lines = data.decode().splitlines()
        assert len(lines) == 29
        shipped = [json.loads(parse_cef(line)[1]["cs2"])["seq"] for line in lines]
        assert shipped == [s for s in range(1, 31) if s != 10]
    finally:
        rt.close()


# --------------------------------------------------------------------------- docs


def docs_block_after(heading: str) -> str:
    """The first code block after ``heading``'s example sentence in docs/formats.md."""
    page = (DATA.parent.parent / "docs" / "formats.md").read_text()
    start = page.index(f"\n{heading}\n")
    found = re.search(r"four events.*?\n```\n(.*?)```", page[start:], re.S)
    assert found is not None, heading
    return found.group(1)


def test_the_formats_page_shows_the_golden_records() -> None:
    assert docs_block_after("## CEF output") == (GOLDEN / "cef" / "seed.cef").read_text()
    leef = (GOLDEN / "leef" / "seed-caret.leef").read_text()
    assert docs_block_after("## LEEF output") == leef


def test_the_formats_page_has_the_severity_table() -> None:
    page = (DATA.parent.parent / "docs" / "formats.md").read_text()
    table = page[page.index("\n### Severity\n") : page.index("\n### The event id\n")]
    rows = re.findall(r"\| `([a-z_]+)` \| (\d+) ", table)
    assert {k: int(v) for k, v in rows} == SEVERITY and len(rows) == len(SEVERITY)
    assert "| any other | 3 |" in table
