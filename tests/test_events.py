"""The event model: the seed's field order, validation with located errors."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.builtin.syslog import SyslogFormatter
from siem_plugins.demo import generate
from siem_plugins.events import (
    FIELD_ORDER,
    MAX_RECORD_BYTES,
    Event,
    EventError,
    canonical_timestamp,
    canonicalize,
    loads_exact,
    parse_line,
)

DATA = Path(__file__).parent / "data"


def seed_events() -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / "seed_events.ndjson").read_text().splitlines()]


def test_seed_events_keep_the_documented_order_even_when_shuffled() -> None:
    for event in seed_events():
        shuffled = dict(reversed(list(event.items())))
        canon = canonicalize(shuffled)
        assert list(orjson.loads(canon.raw)) == [
            k for k in FIELD_ORDER[str(event["type"])] if k in event
        ]
        assert orjson.loads(canon.raw) == event


def test_seed_json_examples_are_reproduced_compactly() -> None:
    expected = json.loads((DATA / "seed_json_examples.json").read_text())
    got = [orjson.loads(canonicalize(e).raw) for e in expected]
    assert got == expected
    assert [list(g) for g in got] == [list(e) for e in expected]


def test_unknown_fields_are_kept_after_known_ones_in_input_order() -> None:
    event = seed_events()[2] | {"zeta": 1, "alpha": {"nested": [1, 2]}}
    keys = list(orjson.loads(canonicalize({"zeta": 1, **event}).raw))
    assert keys[: len(FIELD_ORDER["Account"])] == list(FIELD_ORDER["Account"])
    assert keys[len(FIELD_ORDER["Account"]) :] == ["zeta", "alpha"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-07-15T08:55:12.279Z", "2022-07-15T08:55:12.279Z"),
        ("2022-07-15T08:55:12Z", "2022-07-15T08:55:12.000Z"),
        ("2022-07-15T10:55:12.279123+02:00", "2022-07-15T08:55:12.279Z"),
    ],
)
def test_timestamps_are_normalised_to_the_seed_form(value: str, expected: str) -> None:
    assert canonical_timestamp(value) == expected


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda e: e.pop("device_id"), "device_id", "missing required field"),
        (lambda e: e.update(device_name=42), "device_name", "expected a string, got a number"),
        (lambda e: e.update(type="Printer"), "type", "unknown event type"),
        (lambda e: e.update(timestamp="yesterday"), "timestamp", "unparsable timestamp"),
        (lambda e: e.update(timestamp="2022-07-15T08:55:12"), "timestamp", "no time zone"),
        (lambda e: e.update(timestamp="2022-13-15T08:55:12.279Z"), "timestamp", "unparsable"),
        (lambda e: e.update(log_type="Exempt All"), "log_type", "invalid log type"),
        (lambda e: e.update(device_id=""), "device_id", "must not be empty"),
    ],
)
def test_bad_fields_are_named(mutate, field: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    event = seed_events()[0]
    mutate(event)
    with pytest.raises(EventError) as info:
        canonicalize(event)
    assert info.value.field == field
    assert reason in info.value.reason


def test_crlf_in_text_is_kept_and_escaped_in_the_canonical_bytes() -> None:
    event = seed_events()[0] | {"device_name": "evil\r\nBcc: x@example.com"}
    raw = canonicalize(event).raw
    assert b"\n" not in raw and b"\r" not in raw
    assert orjson.loads(raw)["device_name"] == "evil\r\nBcc: x@example.com"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b'"text"', "expected a JSON object, got a string"),
        (b'{"type": "Device", "details": "\xff\xfe"}', "invalid JSON"),
        (b"x" * (MAX_RECORD_BYTES + 1), "over the"),
    ],
)
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_line(line)
    assert reason in str(info.value)
    assert info.value.field is None


def deeply_nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_any_json_value_in_any_field_is_accepted_or_rejected_with_event_error() -> None:
    """A seeded fuzz: whatever JSON a line holds, ingest either accepts it or names the
    problem; it never raises anything else (which would abort a whole ingest)."""
    import random

    rng = random.Random(7)
    values: list[object] = [
        None,
        True,
        0,
        -1.5,
        10**30,
        "",
        "x",
        "\u0000",
        "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        [],
        [1, "a"],
        {},
        {"a": {"b": []}},
        "2022-07-15T08:55:12.279Z",
        "Device",
        "Account",
        "9999-99-99T99:99:99.999Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "0000-01-01T00:00:00.000Z",
        2**64,
        -(2**63) - 1,
        10**40,
        1e308,
        "\u2028\x85\x1b",
        deeply_nested(64),
    ]
    template = seed_events()[0]
    for _ in range(3000):
        event = dict(template)
        for key in rng.sample(list(event), rng.randrange(1, 4)):
            if rng.random() < 0.2:
                del event[key]
            else:
                event[key] = rng.choice(values)
        if rng.random() < 0.3:
            event["extra"] = rng.choice(values)
        line = json.dumps(event).encode()
        try:
            canon = parse_line(line)
        except EventError:
            continue
        assert orjson.loads(canon.raw)["type"] in ("Device", "Account")


# --------------------------------------------------------------------------- timestamps

RANGE_NOTE = "(after conversion to UTC; accepted 0001-01-01 to 9999-12-31)"


@pytest.mark.parametrize("field", ["timestamp", "last_seen"])
@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "0000-01-01T00:00:00.000Z",
        "+10000-01-01T00:00:00Z",
    ],
)
def test_timestamps_outside_the_range_are_located_rejections(field: str, value: str) -> None:
    line = json.dumps(seed_events()[0] | {field: value}).encode()
    with pytest.raises(EventError) as info:
        parse_line(line)
    assert info.value.field == field
    assert info.value.reason == f"out of range: {value!r} {RANGE_NOTE}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00.000Z"),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00.000Z"),
        ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999+00:00", "9999-12-31T23:59:59.999Z"),
        ("9999-12-31T22:59:59.999-01:00", "9999-12-31T23:59:59.999Z"),
        ("0999-06-01T00:00:00Z", "0999-06-01T00:00:00.000Z"),
        ("0099-06-01T02:00:00+02:00", "0099-06-01T00:00:00.000Z"),
    ],
)
def test_the_edges_of_the_range_are_kept_with_four_digit_years(value: str, expected: str) -> None:
    assert canonical_timestamp(value) == expected
    canon = parse_line(
        json.dumps(seed_events()[0] | {"timestamp": value, "last_seen": value}).encode()
    )
    assert canon.timestamp == expected
    assert orjson.loads(canon.raw)["last_seen"] == expected


def test_an_early_year_makes_valid_syslog_in_every_framing() -> None:
    canon = parse_line(
        json.dumps(seed_events()[0] | {"timestamp": "0999-06-01T00:00:00+00:00"}).encode()
    )
    event = Event(1, "acme", canon.type, canon.log_type, canon.timestamp, canon.raw)
    assert SyslogFormatter("rfc3164").format([event]).startswith(b"<134>Jun  1 00:00:00 ")
    assert (
        SyslogFormatter("rfc5424").format([event]).startswith(b"<134>1 0999-06-01T00:00:00.000Z ")
    )


# --------------------------------------------------------------------------- text

C0_AND_DEL = "".join(chr(c) for c in range(0x20)) + "\x7f"


def test_control_characters_are_kept_and_escaped_not_rejected() -> None:
    event = seed_events()[0] | {"details": f"a{C0_AND_DEL}b", "device_group": "nul\u0000"}
    canon = canonicalize(event)
    assert not any(b < 0x20 for b in canon.raw)
    assert b"\\u0000" in canon.raw and b"\\u001b" in canon.raw
    assert orjson.loads(canon.raw)["details"] == f"a{C0_AND_DEL}b"
    # The same through the NDJSON reader, and out again as one line per event.
    again = parse_line(json.dumps(event).encode())
    assert again.raw == canon.raw
    ev = Event(1, "acme", canon.type, canon.log_type, canon.timestamp, canon.raw)
    assert JSONFormatter().format([ev, ev]).count(b"\n") == 2
    assert SyslogFormatter().format([ev, ev]).count(b"\n") == 2


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_line_separators_are_escaped_in_the_canonical_bytes(char: str) -> None:
    event = seed_events()[0] | {"details": f"one{char}two", f"key{char}": f"v{char}"}
    for canon in (canonicalize(event), parse_line(orjson.dumps(event))):
        assert char.encode() not in canon.raw
        assert f"\\u{ord(char):04x}".encode() in canon.raw
        back = orjson.loads(canon.raw)
        assert back["details"] == f"one{char}two" and back[f"key{char}"] == f"v{char}"
        ev = Event(1, "acme", canon.type, canon.log_type, canon.timestamp, canon.raw)
        for out in (JSONFormatter().format([ev]), SyslogFormatter().format([ev])):
            assert char.encode() not in out
            assert len(out.decode().splitlines()) == 1


def test_other_non_ascii_text_is_not_escaped() -> None:
    text = "Nguyễn — “quoted” © ½ 設備 🔒"
    canon = canonicalize(seed_events()[0] | {"details": text})
    assert text.encode() in canon.raw


# --------------------------------------------------------------------------- numbers

BIG_NUMBERS = (
    b'"u64max":18446744073709551615,"big":18446744073709551616,'
    b'"i64min":-9223372036854775808,"neg":-9223372036854775809,'
    b'"nested":[1,{"x":123456789012345678901234567890}],"float":1.5e-7'
)


def test_integers_beyond_64_bits_in_unknown_fields_are_kept_exact() -> None:
    line = orjson.dumps(seed_events()[2])[:-1] + b"," + BIG_NUMBERS + b"}"
    raw = parse_line(line).raw
    assert raw.endswith(BIG_NUMBERS + b"}")
    extra = json.loads(raw)
    assert extra["big"] == 2**64 and extra["neg"] == -(2**63) - 1
    assert extra["nested"][1]["x"] == 123456789012345678901234567890
    # A caller's dict with Python ints of any size too.
    assert canonicalize(seed_events()[2] | {"big": 10**30}).raw.endswith(
        b',"big":' + b"1" + b"0" * 30 + b"}"
    )


def test_a_very_long_integer_is_kept_whole() -> None:
    digits = b"9" * 5000  # beyond what int() converts by default
    raw = parse_line(orjson.dumps(seed_events()[2])[:-1] + b',"n":' + digits + b"}").raw
    assert raw.endswith(b',"n":' + digits + b"}")


def exact_path_lines() -> list[bytes]:
    """Ordinary records of every shape the exact path must reproduce byte for byte."""
    records: list[dict[str, object]] = [*seed_events(), *generate(500, seed=11)]
    texts = ["a\u2028b\x85c", C0_AND_DEL, "Cường 設備 🔒", 'q"uote\\back/slash', "tab\there"]
    extras: list[object] = [
        1.5e-7,
        1e20,
        0.1,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        123456789.123,
        2**63,
        -(2**63),
        2**64 - 1,
        None,
        True,
        False,
        [],
        {},
        {"a": [1, 2.5, {"b": None}]},
        "",
        "ü\u2029",
    ]
    for i, value in enumerate(extras):
        base = dict(records[i % len(records)])
        base["details"] = texts[i % len(texts)]
        records.append(base | {"extra": value, "zzz": i})
    return [json.dumps(r, ensure_ascii=i % 2 == 0).encode() for i, r in enumerate(records)]


def test_the_exact_path_writes_the_same_bytes_as_the_fast_path() -> None:
    for line in exact_path_lines():
        assert canonicalize(loads_exact(line)).raw == parse_line(line).raw, line


@pytest.mark.parametrize("extra", [b"1e400", b"-1e400", b"[1e999]"])
def test_numbers_beyond_a_double_are_rejected(extra: bytes) -> None:
    head = orjson.dumps(seed_events()[2])[:-1]
    for line in (
        head + b',"x":' + extra + b"}",
        head + b',"x":' + extra + b',"n":2' + b"0" * 20 + b"}",
    ):
        with pytest.raises(EventError) as info:
            parse_line(line)
        assert info.value.reason.startswith("number out of range: ")
        assert info.value.reason.endswith("(beyond a 64-bit float)")


@pytest.mark.parametrize("big", [False, True], ids=["fast", "exact"])
def test_nesting_too_deep_to_store_is_a_rejection(big: bool) -> None:
    head = orjson.dumps(seed_events()[2])[:-1]
    depth = 300  # orjson reads 1024 levels but writes 254
    tail = b"18446744073709551616" if big else b"1"
    line = head + b',"deep":' + b"[" * depth + tail + b"]" * depth + b"}"
    with pytest.raises(EventError) as info:
        parse_line(line)
    assert info.value.reason == "cannot be stored as JSON: Recursion limit reached"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"x":NaN,"n":18446744073709551616}', "invalid JSON: NaN is not a JSON value"),
        (b'{"x":-Infinity}', "invalid JSON: -Infinity is not a JSON value"),
        (b'{"n":18446744073709551616,"s":"\xff"}', "invalid JSON: not UTF-8"),
        (b'{"n":18446744073709551616,', "invalid JSON"),
        (b"[" * 5000 + b"]" * 5000, "invalid JSON: nested too deeply"),
    ],
)
def test_the_exact_reader_rejects_what_orjson_rejects(line: bytes, reason: str) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    with pytest.raises(EventError) as info:
        loads_exact(line)
    assert info.value.reason.startswith(reason)


def test_a_lone_surrogate_is_refused_on_either_path() -> None:
    head = orjson.dumps(seed_events()[2])[:-1]
    with pytest.raises(EventError, match="invalid JSON"):
        parse_line(head + b',"s":"\\ud800"}')
    with pytest.raises(EventError, match="cannot be stored as JSON: str is not valid UTF-8"):
        canonicalize(loads_exact(head + b',"s":["\\ud800"],"n":18446744073709551616}'))
