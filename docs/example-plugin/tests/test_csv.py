"""The csv formatter: the conformance suite siem-plugins ships, plus its own format."""

from __future__ import annotations

import pytest
from siem_example.plugin import COLUMNS, CSVFormatter, parse_line

from siem_plugins import ConfigError, Options
from siem_plugins.testing import (
    CONTROL_TEXTS,
    UNICODE_TEXTS,
    FormatterConformance,
    events_from_dicts,
    hostile_event_dicts,
    sample_events,
)


class TestCSVConformance(FormatterConformance):
    # Stricter than NDJSON: U+2028/2029 and NEL are escaped too, so even readers that
    # split on Unicode line breaks see one record per line.
    escapes_unicode_line_breaks = True

    @pytest.fixture
    def formatter(self) -> CSVFormatter:
        return CSVFormatter.from_options(Options({}))

    def decode_line(self, line: bytes) -> str:
        # The suite looks for each event's text in its line: give it the unescaped values.
        return " | ".join(parse_line(line))


def test_default_columns_and_values() -> None:
    (event,) = sample_events(1)
    fields = event.fields()
    line = CSVFormatter().format([event])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    row = parse_line(line)
    assert len(row) == len(COLUMNS)
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["id"] == "1"
    for column in COLUMNS[1:]:
        assert values[column] == fields.get(column, "")


def test_rfc4180_quoting_and_escapes_round_trip() -> None:
    texts = ['say "hi", then leave', "back\\slash \\n literal", *CONTROL_TEXTS, *UNICODE_TEXTS]
    events = events_from_dicts(hostile_event_dicts(texts))
    out = CSVFormatter(["id", "details"]).format(events)
    lines = out.decode().split("\n")[:-1]
    assert len(lines) == len(events)
    assert lines[0] == '1,"say ""hi"", then leave"'
    assert lines[2] == "3,back\\\\slash \\\\n literal"
    assert lines[4] == "5,before\\nafter"
    for line, event in zip(lines, events, strict=True):
        assert parse_line(line) == [str(event.id), event.fields()["details"]]


def test_unknown_fields_and_non_strings_as_compact_json() -> None:
    (event,) = events_from_dicts(hostile_event_dicts(["x"])[1:])  # has a nested field
    row = parse_line(CSVFormatter(["id", "nested", "missing"]).format([event]))
    assert row == ["1", '["x",{"k":"x"}]', ""]


def test_columns_option() -> None:
    assert CSVFormatter.from_options(Options({"columns": ["id", "details"]})).columns == (
        "id",
        "details",
    )
    with pytest.raises(ConfigError, match=r"f\.toml: integration\[0\]\.format\.columns"):
        CSVFormatter.from_options(
            Options({"columns": ["id", "id"]}, path="integration[0].format", file="f.toml")
        )
