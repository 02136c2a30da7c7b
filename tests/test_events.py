"""The event model: the seed's field order, validation with located errors."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from siem_plugins.events import (
    FIELD_ORDER,
    MAX_RECORD_BYTES,
    EventError,
    canonical_timestamp,
    canonicalize,
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
        (lambda e: e.update(details="a\x00b"), "details", "control character"),
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
