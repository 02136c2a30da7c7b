"""JSON and SYSLOG formatters: the seed's bytes, framing, determinism, line safety."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.builtin.syslog import SyslogFormatter
from siem_plugins.events import Event, canonicalize
from siem_plugins.options import ConfigError, Options

DATA = Path(__file__).parent / "data"
RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-) (?P<body>.*)\Z"
)


def to_events(dicts: list[dict[str, Any]], start: int = 1) -> list[Event]:
    out = []
    for i, d in enumerate(dicts, start):
        c = canonicalize(d)
        out.append(Event(i, "acme", c.type, c.log_type, c.timestamp, c.raw))
    return out


def seed() -> list[Event]:
    lines = (DATA / "seed_events.ndjson").read_text().splitlines()
    return to_events([json.loads(line) for line in lines])


def test_json_is_ndjson_in_seed_order() -> None:
    out = JSONFormatter().format(seed())
    lines = out.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    expected = json.loads((DATA / "seed_json_examples.json").read_text())
    assert [orjson.loads(x) for x in lines[:2]] == expected
    assert [list(orjson.loads(x)) for x in lines[:2]] == [list(e) for e in expected]


def test_syslog_bare_is_exactly_the_seed_lines() -> None:
    out = SyslogFormatter("bare").format(seed()[2:])
    assert out.decode() == (DATA / "seed_syslog_examples.txt").read_text()


def test_rfc5424_framing() -> None:
    events = seed()
    out = SyslogFormatter().format(events).decode().splitlines()
    seed_lines = (DATA / "seed_syslog_examples.txt").read_text().splitlines()
    for event, line in zip(events, out, strict=True):
        m = RFC5424.match(line)
        assert m, line
        assert m["pri"] == "134"  # local0.info
        assert m["ts"] == event.timestamp
        assert (m["host"], m["app"], m["procid"], m["msgid"]) == (
            "-",
            "metadefender-it-access",
            "-",
            event.log_type,
        )
        assert m["body"] == event.raw[1:-1].decode()
    assert [RFC5424.match(x)["body"] for x in out[2:]] == seed_lines  # type: ignore[index]


def test_rfc3164_framing_and_options() -> None:
    fmt = SyslogFormatter.from_options(
        Options(
            {
                "framing": "rfc3164",
                "facility": "audit",
                "severity": "notice",
                "hostname": "mdita.example.com",
                "app_name": "mdita",
            },
            path="integration[0].format",
        )
    )
    line = fmt.format(seed()[:1]).decode()
    assert line.startswith('<109>Jul 15 08:55:12 mdita.example.com mdita: "log_type":"exempt_all"')
    assert line.endswith('"timestamp":"2022-07-15T08:55:12.279Z"\n')


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"framing": "rfc9999"}, "framing", "choose one of: rfc5424, rfc3164, bare"),
        ({"facility": "local9"}, "facility", "choose one of"),
        ({"hostname": "two words"}, "hostname", "printable ASCII"),
        ({"app_name": "x" * 49}, "app_name", "1-48"),
    ],
)
def test_bad_syslog_options_are_located(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SyslogFormatter.from_options(Options(table, path="integration[2].format", file="siem.toml"))
    assert str(info.value).startswith(f"siem.toml: integration[2].format.{key}: ")
    assert message in str(info.value)


FORMATTERS: list[Callable[[], Any]] = [
    JSONFormatter,
    SyslogFormatter,
    lambda: SyslogFormatter("rfc3164"),
    lambda: SyslogFormatter("bare"),
]


@pytest.mark.parametrize("make", FORMATTERS)
def test_one_line_per_event_whatever_the_text(make: Callable[[], Any]) -> None:
    nasty = {
        "log_type": "added",
        "device_name": "evil\r\nBcc: x@example.com\u2028",
        "device_id": "d-1\n<13>1 fake",
        "device_group": "Ünïcødé 漢字 🚀",
        "details": "tab\there\u0085next",
        "type": "Device",
        "device_username": '"quoted"',
        "timestamp": "2022-07-15T08:55:12.279Z",
    }
    events = to_events([nasty] * 3)
    out = make().format(events)
    assert out.count(b"\n") == 3 and out.endswith(b"\n")
    assert b"\r" not in out
    for line in out.split(b"\n")[:-1]:
        obj = line if line.startswith(b"{") else b"{" + line[line.index(b'"log_type"') :] + b"}"
        assert orjson.loads(obj)["device_name"] == nasty["device_name"]


@pytest.mark.parametrize("make", FORMATTERS)
def test_deterministic_and_batch_independent(
    make: Callable[[], Any], siem_events: Callable[..., list[dict[str, Any]]]
) -> None:
    events = to_events(siem_events(500, seed=7))
    whole = make().format(events)
    assert make().format(events) == whole
    assert b"".join(make().format(events[i : i + 37]) for i in range(0, 500, 37)) == whole
    assert make().format([]) == b""
