"""The ``ecs`` formatter: the contract (conformance suite), golden files of the product's
examples and of every log type, and every document checked against the Elastic Common
Schema by something that is not the formatter: ECS's allowed values for the
categorisation fields (copied below from the ECS reference, with its address; there is no
package carrying the ECS schema on PyPI) and a JSON Schema of the ECS fields the format
writes, with their ECS types, applied by ``jsonschema``."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import orjson
import pytest

from siem_plugins.builtin.ecs import CATEGORIES, ECS_VERSION, ECSFormatter
from siem_plugins.builtin.eventid import event_id
from siem_plugins.events import KNOWN_LOG_TYPES, Event
from siem_plugins.options import ConfigError
from siem_plugins.testing import FormatterConformance, build, events_from_dicts, sample_events
from siem_plugins.testing.conformance import (
    CONTROL_TEXTS,
    INJECTION_TEXTS,
    UNICODE_TEXTS,
    hostile_event_dicts,
)
from tests.structured import GOLDEN, check_golden, every_log_type, seed_events, strings

# ECS categorisation fields, from the ECS reference (ECS 8.x/9.x; the values below are
# the same in both):
# https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-kind.html
ECS_KINDS = {"alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error", "signal"}
# https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-category.html:
# each category with its "expected event types".
ECS_EXPECTED_TYPES = {
    "api": {
        "access",
        "admin",
        "allowed",
        "change",
        "creation",
        "deletion",
        "denied",
        "end",
        "info",
        "start",
        "user",
    },
    "authentication": {"start", "end", "info"},
    "configuration": {"access", "change", "creation", "deletion", "info"},
    "database": {"access", "change", "info", "error"},
    "driver": {"change", "end", "info", "start"},
    "email": {"info"},
    "file": {"access", "change", "creation", "deletion", "info"},
    "host": {"access", "change", "end", "info", "start"},
    "iam": {"admin", "change", "creation", "deletion", "group", "info", "user"},
    "intrusion_detection": {"allowed", "denied", "info"},
    "library": {"start"},
    "malware": {"info"},
    "network": {"access", "allowed", "connection", "denied", "end", "info", "protocol", "start"},
    "package": {"access", "change", "deletion", "info", "installation", "start"},
    "process": {"access", "change", "end", "info", "start"},
    "registry": {"access", "change", "creation", "deletion"},
    "session": {"start", "end", "info"},
    "threat": {"indicator"},
    "vulnerability": {"info"},
    "web": {"access", "error", "info"},
}
# https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-type.html
ECS_TYPES = {
    "access", "admin", "allowed", "change", "connection", "creation", "deletion", "denied",
    "end", "error", "group", "indicator", "info", "installation", "protocol", "start", "user",
}  # fmt: skip
# https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-outcome.html
ECS_OUTCOMES = {"failure", "success", "unknown"}
# https://www.elastic.co/guide/en/ecs/current/ecs-field-reference.html: the field sets.
# The custom namespace must not be one of them.
ECS_FIELD_SETS = {
    "agent", "as", "client", "cloud", "code_signature", "container", "data_stream",
    "destination", "device", "dll", "dns", "ecs", "elf", "email", "entity", "error", "event",
    "faas", "file", "geo", "group", "hash", "host", "http", "interface", "log", "macho",
    "network", "observer", "orchestrator", "organization", "os", "package", "pe", "process",
    "registry", "related", "risk", "rule", "server", "service", "source", "threat", "tls",
    "span", "trace", "transaction", "url", "user", "user_agent", "vlan", "volume",
    "vulnerability", "x509", "labels", "tags", "message",
}  # fmt: skip

_KEYWORD = {"type": "string"}
# The fields the format writes, with their ECS types (keyword: a string; date: ISO 8601,
# here always the canonical UTC form; arrays of keywords for category and type), from
# the field reference above. Every ECS object is closed: a misspelt field is an error.
ECS_DOCUMENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["@timestamp", "ecs", "event", "message", "user", "organization", "observer"],
    "additionalProperties": False,
    "properties": {
        "@timestamp": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        },
        "ecs": {
            "type": "object",
            "required": ["version"],
            "additionalProperties": False,
            "properties": {"version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"}},
        },
        "event": {
            "type": "object",
            "required": ["kind", "action", "id"],
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": sorted(ECS_KINDS)},
                "category": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": sorted(ECS_EXPECTED_TYPES)},
                },
                "type": {"type": "array", "minItems": 1, "items": {"enum": sorted(ECS_TYPES)}},
                "action": _KEYWORD,
                "id": _KEYWORD,
                "outcome": {"enum": sorted(ECS_OUTCOMES)},
                "original": _KEYWORD,
            },
            "dependentRequired": {"category": ["type"], "type": ["category"]},
        },
        "message": {"type": "string"},
        "host": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"name": _KEYWORD, "id": _KEYWORD},
        },
        "user": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"name": _KEYWORD, "email": _KEYWORD},
        },
        "organization": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"id": _KEYWORD},
        },
        "observer": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"vendor": _KEYWORD, "product": _KEYWORD},
        },
        "metadefender": {"type": "object"},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(ECS_DOCUMENT)


def ecs_errors(doc: dict[str, Any]) -> list[str]:
    """What is wrong with ``doc`` as an ECS document: its shape and types, and the
    categorisation rules a JSON Schema cannot say (each type expected for a category;
    no outcome on an ``info`` event)."""
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _VALIDATOR.iter_errors(doc)
    ]
    event = doc.get("event", {})
    for category in event.get("category", []):
        for t in event.get("type", []):
            if t not in ECS_EXPECTED_TYPES.get(category, set()):
                errors.append(f"event.type {t!r} is not expected for event.category {category!r}")
    if "outcome" in event and "info" in event.get("type", []):
        errors.append("event.outcome on an info event")
    return errors


def docs(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# --------------------------------------------------------------------------- contract


class TestECSConformance(FormatterConformance):
    escapes_unicode_line_breaks = True

    @pytest.fixture
    def formatter(self) -> Any:
        return build("formatter", "ecs", {})

    def decode_line(self, line: bytes) -> str:
        return "\n".join(strings(json.loads(line)))


class TestECSWithoutOriginalConformance(TestECSConformance):
    @pytest.fixture
    def formatter(self) -> Any:
        return build("formatter", "ecs", {"original": False})


def test_declares_a_dotted_extension_of_its_own() -> None:
    fmt = ECSFormatter()
    assert (fmt.extension, fmt.content_type) == ("ecs.json", "application/x-ndjson")
    assert fmt.format_raw is None


# --------------------------------------------------------------------------- golden


def test_the_products_examples_match_the_golden_file() -> None:
    check_golden(GOLDEN / "ecs" / "seed.ecs.json", ECSFormatter().format(seed_events()))


def test_every_log_type_matches_the_golden_file() -> None:
    check_golden(GOLDEN / "ecs" / "log_types.ecs.json", ECSFormatter().format(every_log_type()))


def test_without_original_matches_the_golden_file() -> None:
    out = ECSFormatter(original=False).format(every_log_type())
    check_golden(GOLDEN / "ecs" / "log_types.no-original.ecs.json", out)


# --------------------------------------------------------------------------- the schema


def hostile_events() -> list[Event]:
    return events_from_dicts(
        hostile_event_dicts([*CONTROL_TEXTS, *INJECTION_TEXTS, *UNICODE_TEXTS]), account="acme"
    )


@pytest.mark.parametrize(
    "events",
    [seed_events, every_log_type, lambda: sample_events(400, seed=5), hostile_events],
    ids=["seed", "every-log-type", "generated", "hostile"],
)
@pytest.mark.parametrize("original", [True, False], ids=["original", "no-original"])
def test_every_document_is_valid_ecs(events: Any, original: bool) -> None:
    evs = events()
    for e, doc in zip(evs, docs(ECSFormatter(original=original).format(evs)), strict=True):
        assert ecs_errors(doc) == [], f"{e} as {doc}"
        assert doc["ecs"]["version"] == ECS_VERSION


def test_the_ecs_check_finds_broken_documents() -> None:
    (good,) = docs(ECSFormatter().format(every_log_type()[15:16]))  # login
    assert ecs_errors(good) == []
    damage = {
        "is not one of": lambda d: d["event"].update(kind="notice"),
        "'@timestamp' is a required property": lambda d: d.pop("@timestamp"),
        "'hostname' was unexpected": lambda d: d.update(host={"hostname": "x"}),
        "is not expected for event.category": lambda d: d["event"].update(type=["creation"]),
        "outcome on an info event": lambda d: d["event"].update(
            category=["malware"], type=["info"]
        ),
        "'category' is a dependency of 'type'": lambda d: d["event"].pop("category"),
        "does not match": lambda d: d.update({"@timestamp": "2022-07-15 10:02"}),
    }
    for needle, hurt in damage.items():
        doc = json.loads(json.dumps(good))
        hurt(doc)
        found = ecs_errors(doc)
        assert any(needle in e for e in found), (needle, found)


def test_the_custom_namespace_is_not_an_ecs_field_set() -> None:
    for doc in docs(ECSFormatter().format(every_log_type())):
        # Every top-level key is ECS's, but the one namespace of the product's own fields.
        assert set(doc) - ECS_FIELD_SETS - {"@timestamp"} == {"metadefender"}


def test_every_known_log_type_is_categorised() -> None:
    known = {t for types in KNOWN_LOG_TYPES.values() for t in types}
    assert set(CATEGORIES) == known
    by_type = {
        d["event"]["action"]: d["event"] for d in docs(ECSFormatter().format(every_log_type()))
    }
    table = {
        t: (by_type[t]["category"], by_type[t]["type"], by_type[t].get("outcome"))
        for t in sorted(known)
    }
    assert table == {
        "added": (["configuration"], ["creation"], None),
        "admin_added": (["iam"], ["user", "creation"], None),
        "admin_removed": (["iam"], ["user", "deletion"], None),
        "api_key_created": (["iam"], ["admin", "creation"], None),
        "api_key_revoked": (["iam"], ["admin", "deletion"], None),
        "blocked": (["configuration"], ["change"], None),
        "compliant": (["host"], ["change"], None),
        "config": (["configuration"], ["change"], None),
        "exempt": (["configuration"], ["change"], None),
        "exempt_all": (["configuration"], ["change"], None),
        "login": (["authentication"], ["start"], "success"),
        "login_failed": (["authentication"], ["start"], "failure"),
        "logout": (["authentication"], ["end"], "success"),
        "non_compliant": (["host"], ["change"], None),
        "patch_installed": (["package"], ["installation"], None),
        "policy_changed": (["configuration"], ["change"], None),
        "removed": (["configuration"], ["deletion"], None),
        "role_changed": (["iam"], ["user", "change"], None),
        "threat_detected": (["malware"], ["info"], None),
        "unblocked": (["configuration"], ["change"], None),
        "unexempt": (["configuration"], ["change"], None),
        "vulnerability_detected": (["vulnerability"], ["info"], None),
    }
    # A log type this version does not know is not categorised (ECS: leave them empty).
    for unknown in ("device_scanned", "report_exported"):
        assert set(by_type[unknown]) == {"kind", "action", "id", "original"}


# --------------------------------------------------------------------------- the mapping


def test_device_and_account_documents() -> None:
    device, _, account, _ = docs(ECSFormatter().format(seed_events()))
    e = seed_events()
    assert device == {
        "@timestamp": "2022-07-15T08:55:12.279Z",
        "ecs": {"version": "8.17.0"},
        "event": {
            "kind": "event",
            "category": ["configuration"],
            "type": ["change"],
            "action": "exempt_all",
            "id": event_id("acme", 1),
            "original": e[0].raw.decode(),
        },
        "message": "Device Cuong Ba was exempted by Phuong Phuong Phuong Phuong Phuong(phuongphweekly@gmail.com)24 hour(s)",
        "host": {"name": "Cuong Ba", "id": "cuongbavuacakhia1657786592"},
        "user": {"name": "Wilfred Hoeger"},
        "organization": {"id": "acme"},
        "observer": {"vendor": "OPSWAT", "product": "MetaDefender IT Access"},
        "metadefender": {
            "type": "Device",
            "device_group": "Default",
            "last_seen": "2022-07-15T08:55:12.279Z",
        },
    }
    assert account["user"] == {"name": "Phuong Weekly 1", "email": "phuongphweekly@gmail.com"}
    assert account["metadefender"] == {"type": "Account", "event": "Configuration Change"}
    assert "host" not in account
    assert account["event"]["id"] == event_id("acme", 3)


def test_unknown_fields_are_kept_exactly_in_the_namespace() -> None:
    out = ECSFormatter(original=False).format(every_log_type()[13:14])
    assert b'"serial":18446744073709551616' in out
    (doc,) = docs(out)
    assert doc["metadefender"] == {
        "type": "Device",
        "device_group": "Default",
        "agent": {"version": "7.6.586.1", "serial": 18446744073709551616},
    }
    assert "original" not in doc["event"]
    assert out.count(b"\n") == 1 and b"\xe2\x80\xa8" not in out and b"\\u2028" in out


def test_an_event_it_cannot_read_is_named() -> None:
    good = seed_events()[2]
    fields = good.fields()
    del fields["admin_name"]
    missing = Event(9, "acme", "Account", "config", good.timestamp, orjson.dumps(fields))
    with pytest.raises(
        ValueError, match=r"event 9 \(config\): cannot write it as ECS: missing field 'admin_name'"
    ):
        ECSFormatter().format([good, missing])
    broken = Event(10, "acme", "Account", "config", "yesterday", good.raw)
    with pytest.raises(ValueError, match=r"event 10 \(config\)"):
        ECSFormatter().format([broken])
    offset = Event(11, "acme", "Account", "config", "2022-07-15T13:19:41.629+02:00", good.raw)
    (doc,) = docs(ECSFormatter().format([offset]))  # not canonical, still a date: normalised
    assert doc["@timestamp"] == "2022-07-15T11:19:41.629Z"


def test_options() -> None:
    assert build("formatter", "ecs", {"original": False}).original is False
    with pytest.raises(ConfigError, match=r"original: expected true or false"):
        build("formatter", "ecs", {"original": "sometimes"})
    with pytest.raises(ConfigError, match=r"unknown setting 'orignal'"):
        build("formatter", "ecs", {"orignal": False})


# --------------------------------------------------------------------------- the docs


def test_the_formats_page_shows_the_real_categories_and_output() -> None:
    page = (GOLDEN.parents[2] / "docs" / "formats.md").read_text()
    start = page.index("\n## ECS output\n")
    section = page[start : page.index("\n## ", start + 1)]
    documented = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`") or cells[1] == "(none)":
            continue
        values = [re.findall(r"`([a-z_]+)`", c) for c in cells]
        for log_type in values[0]:
            documented[log_type] = (values[1], values[2], values[3][0] if values[3] else None)
    assert documented == {
        t: (list(c.category), list(c.type), c.outcome) for t, c in CATEGORIES.items()
    }
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    assert json.loads(example) == docs(ECSFormatter().format(seed_events()[2:3]))[0]


def test_a_log_type_that_is_not_a_word_is_refused() -> None:
    good = seed_events()[0]
    with pytest.raises(ValueError, match=r"invalid log type"):
        ECSFormatter().format([good._replace(log_type="Added")])
