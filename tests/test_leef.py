"""The ``leef`` formatter (IBM QRadar LEEF 2.0): the conformance suite, golden files of the
product's examples, every record read back by a reference parser written from IBM's
description of LEEF (tests/cefleef.py; no LEEF parser is published on PyPI), and
``devTime`` read by Java's SimpleDateFormat with the record's own ``devTimeFormat``,
which is what QRadar (a Java program) does with it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.builtin.leef import LEEFFormatter
from siem_plugins.events import Event
from siem_plugins.kinds import Formatter
from siem_plugins.options import ConfigError, Options
from siem_plugins.testing import FormatterConformance, build, events_from_dicts, sample_events
from tests.cefleef import (
    DATA,
    LEEF_TIME_FORMAT,
    check_golden,
    edge_events,
    epoch_ms,
    expected_leef,
    hostile_dicts,
    parse_leef,
    read_back,
    seed_events,
    with_json,
)

DELIMITERS = {"tab": "\t", "caret": "^", "hex-tilde": "x7E", "0x-hash": "0x23"}


class TestLEEFConformance(FormatterConformance):
    @pytest.fixture(params=list(DELIMITERS.values()), ids=list(DELIMITERS))
    def formatter(self, request: pytest.FixtureRequest) -> Formatter:
        return build("formatter", "leef", {"delimiter": request.param})


def test_listed_as_a_builtin_with_its_extension() -> None:
    fmt = build("formatter", "leef", {})
    assert (fmt.extension, fmt.content_type) == ("leef", "text/plain; charset=utf-8")
    assert fmt.format_raw is None


# --------------------------------------------------------------------------- golden


def test_golden_seed_events_tab_and_caret() -> None:
    check_golden("leef/seed.leef", LEEFFormatter().format(seed_events()))
    check_golden("leef/seed-caret.leef", LEEFFormatter(delimiter="^").format(seed_events()))


def test_golden_edge_events() -> None:
    fmt = build("formatter", "leef", {"version": "7.6.586.1"})
    check_golden("leef/edge.leef", fmt.format(edge_events()))
    check_golden("leef/edge-caret.leef", LEEFFormatter(delimiter="^").format(edge_events()))


def test_the_header_declares_the_delimiter() -> None:
    tab = read_back(LEEFFormatter(), seed_events()[:1])[0]
    assert tab.startswith("LEEF:2.0|OPSWAT|MetaDefender IT Access|1.0|exempt_all|x09|devTime=")
    caret = read_back(build("formatter", "leef", {"delimiter": "x5e"}), seed_events()[:1])[0]
    assert caret.startswith("LEEF:2.0|OPSWAT|MetaDefender IT Access|1.0|exempt_all|^|devTime=")
    assert "^devTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSX^cat=Device^sev=5^externalId=" in caret


def test_a_delimiter_in_a_value_becomes_a_space_and_forges_nothing() -> None:
    """IBM: values must not contain the delimiter; QRadar would cut the value there and
    read what follows as an attribute. So the delimiter, CR and LF become spaces, and a
    backslash stays (``CORP\\jdoe`` is the user QRadar must see)."""
    device = json.loads((DATA / "seed_events.ndjson").read_text().split("\n")[0])
    event = events_from_dicts(
        [{**device, "details": "x\tsev=1\r\nusrName=forged^y", "device_username": "CORP\\jdoe"}]
    )
    tab = read_back(LEEFFormatter(), event)[0]
    _, _, attrs = parse_leef(tab)
    assert attrs["msg"] == "x sev=1  usrName=forged^y"
    assert (attrs["sev"], attrs["usrName"]) == ("5", "CORP\\jdoe")
    _, _, attrs = parse_leef(read_back(LEEFFormatter(delimiter="^"), event)[0])
    assert attrs["msg"] == "x\tsev=1  usrName=forged y"
    assert (attrs["sev"], attrs["usrName"]) == ("5", "CORP\\jdoe")


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize("delimiter", list(DELIMITERS.values()), ids=list(DELIMITERS))
@pytest.mark.parametrize(
    "events",
    [seed_events(), edge_events(), sample_events(300, seed=5), events_from_dicts(hostile_dicts())],
    ids=["seed", "edge", "demo", "hostile"],
)
def test_the_reference_parser_reads_every_field_back(events: list[Event], delimiter: str) -> None:
    fmt = build("formatter", "leef", {"delimiter": delimiter, "version": "2.5"})
    char = {"x7E": "~", "0x23": "#"}.get(delimiter, delimiter)
    for event, line in zip(events, read_back(fmt, events), strict=True):
        header, got_delimiter, attrs = parse_leef(line)
        assert header == ["OPSWAT", "MetaDefender IT Access", "2.5", event.log_type]
        assert got_delimiter == char
        assert with_json(attrs, "extraFields") == expected_leef(event, char)


def test_every_other_character_is_kept() -> None:
    """Only the delimiter, CR and LF are replaced: ``|``, ``\\``, ``=``, U+2028, NEL,
    controls, non-ASCII and 50,000-character values come back exactly."""
    events = events_from_dicts(hostile_dicts())
    for event, line in zip(events, read_back(LEEFFormatter(), events), strict=True):
        msg = parse_leef(line)[2].get("msg", "")
        details = json.loads(event.raw)["details"]
        assert msg == details.replace("\t", " ").replace("\r", " ").replace("\n", " ")
        if not any(c in details for c in "\t\r\n"):
            assert msg == details
    assert len(LEEFFormatter().format(events)) > 500_000  # the long texts are all there


@pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (java)")
def test_java_reads_dev_time_with_the_records_own_format(tmp_path: Path) -> None:
    """QRadar parses ``devTime`` with Java's SimpleDateFormat and ``devTimeFormat``: the
    same call, on every record's devTime and lastSeen, gives the instant we meant."""
    events = seed_events() + edge_events() + sample_events(200, seed=8)
    pairs: list[tuple[str, str]] = []
    for line in read_back(LEEFFormatter(), events):
        attrs = parse_leef(line)[2]
        pairs += [(attrs["devTimeFormat"], attrs["devTime"])]
        if "lastSeen" in attrs:
            pairs.append((attrs["devTimeFormat"], attrs["lastSeen"]))
    (tmp_path / "times.txt").write_text("".join(f"{f}\t{t}\n" for f, t in pairs))
    (tmp_path / "DevTime.java").write_text(JAVA)
    proc = subprocess.run(
        ["java", "DevTime.java", "times.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(epoch_ms(t)) for _, t in pairs]
    assert {f for f, _ in pairs} == {LEEF_TIME_FORMAT}


JAVA = """
import java.nio.file.*;
import java.text.SimpleDateFormat;
public class DevTime {
  public static void main(String[] args) throws Exception {
    for (String line : Files.readAllLines(Path.of(args[0]))) {
      String[] f = line.split("\\t");
      SimpleDateFormat format = new SimpleDateFormat(f[0]);
      format.setLenient(false);
      System.out.println(format.parse(f[1]).getTime());
    }
  }
}
"""


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"delimiter": ","}, "delimiter", "unsupported delimiter ','"),
        ({"delimiter": "|"}, "delimiter", "unsupported delimiter '|'"),
        ({"delimiter": "="}, "delimiter", "unsupported delimiter '='"),
        ({"delimiter": " "}, "delimiter", "unsupported delimiter ' '"),
        ({"delimiter": "^^"}, "delimiter", "unsupported delimiter '^^'"),
        ({"delimiter": "x2C"}, "delimiter", "unsupported delimiter 'x2C'"),
        ({"delimiter": ""}, "delimiter", "unsupported delimiter ''"),
        ({"version": "1|2"}, "version", "without | or \\"),
        ({"version": "1\\2"}, "version", "without | or \\"),
        ({"version": ""}, "version", "must be 1-31"),
        ({"version": "1.0\t"}, "version", "must be 1-31"),
    ],
)
def test_bad_options_are_located(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LEEFFormatter.from_options(Options(table, path="integration[0].format", file="siem.toml"))
    assert str(info.value).startswith(f"siem.toml: integration[0].format.{key}: ")
    assert message in str(info.value)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'delimeter'"):
        build("formatter", "leef", {"delimeter": "^"})
