"""The ``ocsf`` formatter: the contract (conformance suite), golden files of the product's
examples and of every log type, and every record checked by two parsers that are not
ours: the OCSF 1.1.0 schema itself (the schema export packaged by ``ocsf-json-schema``,
turned into JSON Schema and applied by ``jsonschema``) and, for the finding classes it
models, Prowler's ``py-ocsf-models``."""

from __future__ import annotations

import calendar
import functools
import json
import re
from typing import Any

import jsonschema
import orjson
import pytest
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from pydantic import ValidationError

from siem_plugins.builtin.eventid import event_id
from siem_plugins.builtin.ocsf import MAPPINGS, OCSF_VERSION, OCSFFormatter
from siem_plugins.events import KNOWN_LOG_TYPES, Event
from siem_plugins.options import ConfigError
from siem_plugins.testing import (
    FormatterConformance,
    build,
    events_from_dicts,
    sample_events,
)
from siem_plugins.testing.conformance import (
    CONTROL_TEXTS,
    INJECTION_TEXTS,
    UNICODE_TEXTS,
    hostile_event_dicts,
)
from tests.structured import GOLDEN, check_golden, every_log_type, seed_events, strings


def records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# --------------------------------------------------------------------------- contract


class TestOCSFConformance(FormatterConformance):
    escapes_unicode_line_breaks = True  # U+2028/2029/0085 are written as \u escapes

    @pytest.fixture
    def formatter(self) -> Any:
        return build("formatter", "ocsf", {})  # as a config builds it

    def decode_line(self, line: bytes) -> str:
        # Text is inside JSON strings: read them back rather than search escaped bytes.
        return "\n".join(strings(json.loads(line)))


class TestOCSFWithoutRawDataConformance(TestOCSFConformance):
    @pytest.fixture
    def formatter(self) -> Any:
        return build("formatter", "ocsf", {"raw_data": False})


def test_declares_a_dotted_extension_of_its_own() -> None:
    fmt = OCSFFormatter()
    assert (fmt.extension, fmt.content_type) == ("ocsf.json", "application/x-ndjson")
    assert fmt.format_raw is None  # the output depends on the account and the id


# --------------------------------------------------------------------------- golden


def test_the_products_examples_match_the_golden_file() -> None:
    check_golden(GOLDEN / "ocsf" / "seed.ocsf.json", OCSFFormatter().format(seed_events()))


def test_every_log_type_matches_the_golden_file() -> None:
    check_golden(GOLDEN / "ocsf" / "log_types.ocsf.json", OCSFFormatter().format(every_log_type()))


def test_without_raw_data_matches_the_golden_file() -> None:
    out = OCSFFormatter(raw_data=False).format(every_log_type())
    check_golden(GOLDEN / "ocsf" / "log_types.no-raw-data.ocsf.json", out)


# --------------------------------------------------------------------------- the schema


@functools.cache
def ocsf_schema() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(OCSF_VERSION))


@functools.cache
def validator(class_uid: int, profiles: tuple[str, ...]) -> jsonschema.Draft202012Validator:
    schema = ocsf_schema()
    class_schema = schema.get_class_schema(
        schema.lookup_class_name_from_uid(class_uid), list(profiles)
    )
    jsonschema.Draft202012Validator.check_schema(class_schema)
    return jsonschema.Draft202012Validator(class_schema)


def schema_errors(record: dict[str, Any]) -> list[str]:
    """What OCSF 1.1.0 says is wrong with ``record``: the class's JSON Schema (with the
    profiles the record declares) plus what JSON Schema cannot say (``type_uid`` is
    ``class_uid * 100 + activity_id``; the names are the schema's captions)."""
    profiles = tuple(record.get("metadata", {}).get("profiles", ()))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(record["class_uid"], profiles).iter_errors(record)
    ]
    cls = ocsf_schema().schema.schema["classes"][
        ocsf_schema().lookup_class_name_from_uid(record["class_uid"])
    ]
    attrs = cls["attributes"]
    if record["type_uid"] != record["class_uid"] * 100 + record["activity_id"]:
        errors.append(f"type_uid {record['type_uid']} is not class_uid * 100 + activity_id")

    def caption(attr: str, value: int) -> Any:
        return attrs[attr]["enum"].get(str(value), {}).get("caption")

    captions = {
        "class_name": cls["caption"],
        "category_name": caption("category_uid", record["category_uid"]),
        "type_name": caption("type_uid", record["type_uid"]),
        "severity": caption("severity_id", record["severity_id"]),
    }
    if record["activity_id"] != 99:  # "Other": the name is the source's own
        captions["activity_name"] = caption("activity_id", record["activity_id"])
    for key, caption in captions.items():
        if record.get(key) != caption:
            errors.append(f"{key} is {record.get(key)!r}, the schema's caption is {caption!r}")
    return errors


def hostile_events() -> list[Event]:
    return events_from_dicts(
        hostile_event_dicts([*CONTROL_TEXTS, *INJECTION_TEXTS, *UNICODE_TEXTS]), account="acme"
    )


@pytest.mark.parametrize(
    "events",
    [seed_events, every_log_type, lambda: sample_events(400, seed=5), hostile_events],
    ids=["seed", "every-log-type", "generated", "hostile"],
)
@pytest.mark.parametrize("raw_data", [True, False], ids=["raw_data", "no-raw_data"])
def test_every_record_is_valid_ocsf_1_1_0(events: Any, raw_data: bool) -> None:
    evs = events()
    for e, record in zip(evs, records(OCSFFormatter(raw_data=raw_data).format(evs)), strict=True):
        assert schema_errors(record) == [], f"{e} as {record}"


def test_the_schema_check_finds_broken_records() -> None:
    """The check above can fail: each kind of damage is named."""
    (good,) = records(OCSFFormatter().format(every_log_type()[14:15]))  # config
    assert schema_errors(good) == []
    damage = {
        "metadata.product": lambda r: r["metadata"].pop("product"),
        "Additional properties": lambda r: r["actor"]["user"].update(mail="x@example.com"),
        "is not of type 'integer'": lambda r: r.update(time="2022-07-15T10:01:00.000Z"),
        "does not match": lambda r: r["actor"]["user"].update(email_addr="not an address"),
        "is not one of": lambda r: r.update(type_uid=300405, activity_id=5),
        "not class_uid * 100": lambda r: r.update(type_uid=300401),
        "the schema's caption": lambda r: r.update(class_name="Entity Change"),
        "entity": lambda r: r.pop("entity"),
    }
    for needle, hurt in damage.items():
        record = json.loads(json.dumps(good))
        hurt(record)
        found = schema_errors(record)
        assert any(needle in e or needle.split(".")[-1] in e for e in found), (needle, found)


def test_every_known_log_type_has_its_class_and_activity() -> None:
    known = {t for types in KNOWN_LOG_TYPES.values() for t in types}
    assert set(MAPPINGS) == known
    by_type = {
        r["metadata"]["event_code"]: r for r in records(OCSFFormatter().format(every_log_type()))
    }
    assert {t: (by_type[t]["class_uid"], by_type[t]["activity_id"]) for t in sorted(known)} == {
        "added": (3004, 1),
        "admin_added": (3001, 1),
        "admin_removed": (3001, 6),
        "api_key_created": (3004, 1),
        "api_key_revoked": (3004, 4),
        "blocked": (3004, 3),
        "compliant": (2003, 1),
        "config": (3004, 3),
        "exempt": (3004, 3),
        "exempt_all": (3004, 3),
        "login": (3002, 1),
        "login_failed": (3002, 1),
        "logout": (3002, 2),
        "non_compliant": (2003, 1),
        "patch_installed": (5019, 1),
        "policy_changed": (3004, 3),
        "removed": (3004, 4),
        "role_changed": (3001, 99),
        "threat_detected": (2004, 1),
        "unblocked": (3004, 3),
        "unexempt": (3004, 3),
        "vulnerability_detected": (2004, 1),
    }
    # The two log types this version does not know: Entity Management, activity Other.
    for unknown in ("device_scanned", "report_exported"):
        r = by_type[unknown]
        assert (r["class_uid"], r["activity_id"], r["activity_name"]) == (3004, 99, unknown)


# --------------------------------------------------------------------------- py-ocsf-models


def test_py_ocsf_models_reads_the_finding_classes() -> None:
    """Prowler's models cover the finding classes only (2003, 2004, 2007). Their
    ``Device`` requires ``hostname``, ``ip`` and ``region``, which OCSF does not (its device
    requires ``type_id`` and one of uid/name/...: checked above) and the product does not
    report: that is all they find in a Compliance Finding, and they read the rest.
    (Their ``DetectionFinding`` has no ``device``.)"""
    findings = {
        r["metadata"]["event_code"]: r
        for r in records(OCSFFormatter().format(every_log_type()))
        if r["class_uid"] in (2003, 2004)
    }
    assert sorted(findings) == [
        "compliant",
        "non_compliant",
        "threat_detected",
        "vulnerability_detected",
    ]
    for record in findings.values():
        parsed: ComplianceFinding | DetectionFinding
        if record["class_uid"] == 2003:
            with pytest.raises(ValidationError) as info:
                ComplianceFinding.model_validate(record)
            found = sorted((".".join(map(str, e["loc"])), e["type"]) for e in info.value.errors())
            assert found == [(f"device.{k}", "missing") for k in ("hostname", "ip", "region")]
            parsed = ComplianceFinding.model_validate(
                {k: v for k, v in record.items() if k != "device"}
            )
        else:  # DetectionFinding models no device: it reads the whole record
            parsed = DetectionFinding.model_validate(record)
        assert (parsed.class_uid, parsed.type_uid, parsed.activity_id, parsed.severity_id) == (
            record["class_uid"],
            record["type_uid"],
            record["activity_id"],
            record["severity_id"],
        )
        assert parsed.finding_info.uid == record["metadata"]["uid"]
        assert parsed.metadata.product.vendor_name == "OPSWAT"
        assert parsed.time == record["time"]
        if isinstance(parsed, ComplianceFinding):
            assert parsed.compliance.status_id == record["compliance"]["status_id"]
    with pytest.raises(ValidationError):  # and they do refuse a broken finding
        DetectionFinding.model_validate({**findings["threat_detected"], "type_uid": 300401})


# --------------------------------------------------------------------------- the mapping


def by_log_type(*, raw_data: bool = True) -> dict[str, dict[str, Any]]:
    out = {}
    for r in records(OCSFFormatter(raw_data=raw_data).format(every_log_type())):
        out.setdefault(r["metadata"]["event_code"], r)
    return out


def test_common_fields() -> None:
    events = every_log_type()
    for e, r in zip(events, records(OCSFFormatter().format(events)), strict=True):
        fields = e.fields()
        assert r["metadata"]["uid"] == event_id("acme", e.id)
        assert r["metadata"]["product"] == {
            "name": "MetaDefender IT Access",
            "vendor_name": "OPSWAT",
        }
        assert r["metadata"]["version"] == "1.1.0"
        assert (r["metadata"]["tenant_uid"], r["metadata"]["log_name"]) == ("acme", e.type)
        assert r["message"] == fields["details"]
        assert r["raw_data"] == e.raw.decode()  # the stored event, exactly
        assert json.loads(r["raw_data"]) == fields


def test_time_is_milliseconds_since_the_epoch() -> None:
    (first, *_) = records(OCSFFormatter().format(seed_events()))
    assert first["time"] == 1657875312279  # 2022-07-15T08:55:12.279Z
    assert first["device"]["last_seen_time"] == 1657875312279
    old = events_from_dicts([{**seed_events()[0].fields(), "timestamp": "0999-06-01T00:00:00Z"}])
    (r,) = records(OCSFFormatter().format(old))
    assert r["time"] == calendar.timegm((999, 6, 1, 0, 0, 0)) * 1000  # negative, exact


def test_device_events() -> None:
    r = by_log_type()["exempt_all"]
    assert r["entity"] == {
        "uid": "cuongbavuacakhia1657786592",
        "name": "Cuong Ba",
        "type": "Device",
    }
    assert r["device"] == {
        "uid": "cuongbavuacakhia1657786592",
        "name": "Cuong Ba",
        "type_id": 0,
        "groups": [{"name": "Default"}],
        "last_seen_time": 1657875312279,
    }
    assert r["unmapped"] == {"device_username": "Wilfred Hoeger"}
    assert r["metadata"]["profiles"] == ["host"]
    compliance = {t: by_log_type()[t]["compliance"] for t in ("compliant", "non_compliant")}
    assert (
        compliance["compliant"]["status_id"] == 1 and compliance["non_compliant"]["status_id"] == 3
    )
    threat = by_log_type()["threat_detected"]
    assert threat["finding_info"] == {
        "uid": threat["metadata"]["uid"],
        "title": "A threat was detected on a device",
        "desc": "Threat detected on Cuong Ba: EICAR-Test-File",
        "types": ["Threat"],
    }
    assert threat["severity_id"] == 4


def test_account_events() -> None:
    r = by_log_type()
    assert r["login"]["user"] == {
        "name": "Phuong Weekly 1",
        "type_id": 2,
        "email_addr": "phuongphweekly@gmail.com",
    }
    assert (r["login"]["status_id"], r["login_failed"]["status_id"]) == (1, 2)
    assert r["login_failed"]["status"] == "Failure"
    assert r["login"]["service"] == {"name": "MetaDefender IT Access"}
    assert r["config"]["actor"]["user"]["name"] == "Phuong Weekly 1"
    assert r["config"]["entity"] == {"name": "Settings", "type": "Configuration"}
    assert r["report_exported"]["entity"] == {"uid": "acme", "type": "Account"}
    assert r["config"]["unmapped"] == {"event": "Configuration Change"}


def test_what_ocsf_has_no_place_for_is_unmapped_exactly() -> None:
    records_ = records(OCSFFormatter(raw_data=False).format(every_log_type()))
    with_extras = records_[13]  # the added event with an unknown nested field
    assert with_extras["unmapped"] == {
        "device_username": "Wilfred Hoeger",
        "agent": {"version": "7.6.586.1", "serial": 18446744073709551616},
    }
    assert b'"serial":18446744073709551616' in OCSFFormatter(raw_data=False).format(
        every_log_type()[13:14]
    )
    assert "last_seen_time" not in with_extras["device"]
    bad_email = records_[-1]
    assert "email_addr" not in bad_email["user"]
    assert bad_email["unmapped"] == {
        "event": "Login Failed",
        "admin_email": "not an address",
        "source_ip": "198.51.100.7",
    }
    assert "raw_data" not in bad_email


def test_unicode_and_line_separators() -> None:
    out = OCSFFormatter().format(every_log_type()[13:14])
    assert out.count(b"\n") == 1 and b"\xe2\x80\xa8" not in out and b"\\u2028" in out
    assert "Zoë's Müller-Laptop 漢字 🚀".encode() in out  # UTF-8 as it is, not \u escapes
    assert json.loads(out)["message"].endswith("line\u2028separator")


def test_deeply_nested_unknown_fields_are_written_back() -> None:
    deep: Any = "bottom"
    for _ in range(250):
        deep = [deep]
    (e,) = events_from_dicts([{**seed_events()[0].fields(), "deep": deep}])
    (r,) = records(OCSFFormatter().format([e]))
    assert r["unmapped"]["deep"] == deep


def test_the_same_event_gets_the_same_id_and_another_account_another() -> None:
    e = seed_events()[0]
    a = OCSFFormatter().format([e])
    assert OCSFFormatter().format([e]) == a
    other = Event(e.id, "globex", e.type, e.log_type, e.timestamp, e.raw)
    assert json.loads(OCSFFormatter().format([other]))["metadata"]["uid"] == event_id(
        "globex", e.id
    )
    assert event_id("globex", e.id) != event_id("acme", e.id)


def test_an_event_it_cannot_read_is_named() -> None:
    good = seed_events()[0]
    broken = Event(7, "acme", "Device", "added", "2022-07-15T08:55:12", good.raw)
    with pytest.raises(ValueError, match=r"event 7 \(added\): cannot write it as OCSF: timestamp"):
        OCSFFormatter().format([good, broken])
    fields = good.fields()
    del fields["device_id"]
    missing = Event(8, "acme", "Device", "added", good.timestamp, orjson.dumps(fields))
    with pytest.raises(ValueError, match=r"event 8 \(added\): .*missing field 'device_id'"):
        OCSFFormatter().format([missing])
    assert OCSFFormatter().format([good]).count(b"\n") == 1  # the others still format


def test_options() -> None:
    assert build("formatter", "ocsf", {"raw_data": False}).raw_data is False
    with pytest.raises(ConfigError, match=r"raw_data: expected true or false"):
        build("formatter", "ocsf", {"raw_data": "no way"})
    with pytest.raises(ConfigError, match=r"unknown setting 'raw'"):
        build("formatter", "ocsf", {"raw": False})


# --------------------------------------------------------------------------- the docs


def formats_page_section(title: str) -> str:
    page = (GOLDEN.parents[2] / "docs" / "formats.md").read_text()
    start = page.index(f"\n## {title}\n")
    return page[start : page.index("\n## ", start + 1)]


def test_the_formats_page_shows_the_real_mapping_and_output() -> None:
    section = formats_page_section("OCSF output")
    documented = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`") or "(" not in cells[1]:
            continue
        numbers = [int(re.search(r"\((\d+)\)", c).group(1)) for c in cells[1:3]]  # type: ignore[union-attr]
        for log_type in re.findall(r"`([a-z_]+)`", cells[0]):
            documented[log_type] = (*numbers, int(cells[3].split()[0]))
    assert documented == {t: (m.cls.uid, m.activity_id, m.severity_id) for t, m in MAPPINGS.items()}
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    assert json.loads(example) == records(OCSFFormatter().format(seed_events()[2:3]))[0]


def test_a_log_type_that_is_not_a_word_is_refused() -> None:
    e = seed_events()[0]._replace(log_type="exempt\u2028all")
    with pytest.raises(ValueError, match=r"invalid log type 'exempt\\u2028all'"):
        OCSFFormatter().format([e])
