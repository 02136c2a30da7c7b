"""CEF and LEEF end to end: ``siem-plugins sync`` into moto's S3 over HTTP beside the spec's
JSON, in the same bucket and prefix; ``verify --deep`` clean for all three; every
record read back from the bucket by the reference parsers; a ``replay`` to another
prefix writes the same bytes (the event ids do not change). The commands run as users
run them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.testing.s3server import S3Server
from tests.cefleef import event_id, parse_cef, parse_leef
from tests.test_verify import PREFIX, S3Setup

REPO = Path(__file__).resolve().parent.parent
RANGES = [(1, 100), (101, 200), (251, 350), (351, 450), (451, 500)]


@pytest.fixture
def s3(tmp_path: Any, s3_server: S3Server, s3_bucket: str, siem_events: Any) -> S3Setup:
    """Account acme, ids 1-200 and 251-500 (``seq`` 1-450), shipped as JSON under siem/,
    then as CEF and as LEEF (caret-delimited) by two more integrations, same prefix."""
    setup = S3Setup(tmp_path, s3_server, s3_bucket, siem_events)
    sink = s3_server.sink_options(s3_bucket, prefix=PREFIX)
    setup.add("acme-cef", sink, fmt="cef")
    setup.add("acme-leef", sink, fmt={"type": "leef", "delimiter": "^"})
    setup.sync()
    return setup


def store_id(seq: int) -> int:
    """The store id of the event numbered ``seq`` (globex holds ids 201-250)."""
    return seq if seq <= 200 else seq + 50


def records(s3: S3Setup, ext: str, prefix: str = PREFIX) -> list[tuple[tuple[int, int], str]]:
    """Every line of the objects ending in ``ext``, in id order, with its object's range."""
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    keys = sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(ext))
    out = []
    for key in keys:
        head = s3.client.head_object(Bucket=s3.bucket, Key=key)
        assert head["ContentType"] == "text/plain; charset=utf-8"
        assert head["ContentEncoding"] == "gzip"
        first, last = (int(x) for x in key.rsplit("_", 1)[1].split(".")[0].split("-"))
        out += [((first, last), line) for line in s3.body(key).decode().split("\n")[:-1]]
    return out


def test_cef_and_leef_ship_beside_json_and_verify_clean(s3: S3Setup) -> None:
    assert sorted(s3.keys(".cef.gz")) == sorted(s3.keys(".leef.gz")) == RANGES
    for deep in ((), ("--deep",)):
        reports = s3.verify(*deep, status=0)
        for name in ("acme", "acme-cef", "acme-leef"):
            r = reports[name]
            assert r["ok"] and r["findings"] == [] and r["error"] is None, r
            assert (r["objects"], r["events"], r["cursor"]) == (5, 450, 500)

    cef = records(s3, ".cef.gz")
    seqs = []
    for (first, last), line in cef:
        header, ext = parse_cef(line)
        seq = json.loads(ext["cs2"])["seq"]
        assert first <= store_id(seq) <= last
        assert ext["externalId"] == event_id("acme", store_id(seq))
        assert header[:4] == ["CEF:0", "OPSWAT", "MetaDefender IT Access", "1.0"]
        seqs.append(seq)
    assert seqs == list(range(1, 451))

    leef = records(s3, ".leef.gz")
    assert [line.split("|")[5] for _, line in leef] == ["^"] * 450
    for (_, cef_line), (_, leef_line), seq in zip(cef, leef, seqs, strict=True):
        attrs = parse_leef(leef_line)[2]
        assert json.loads(attrs["extraFields"])["seq"] == seq
        assert attrs["externalId"] == parse_cef(cef_line)[1]["externalId"]


def test_a_replay_writes_the_same_records(s3: S3Setup) -> None:
    """Replaying (to recover a lost bucket) ships byte-identical records: same ids, so a
    SIEM that already has them drops them as duplicates."""
    for name, ext in (("acme-cef", ".cef.gz"), ("acme-leef", ".leef.gz")):
        proc = s3.run(
            "replay", "start", "-i", name, "--from-id", "1", "--to-id", "500",
            "--set", "prefix=restore/", "--job", f"again-{name}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        originals = [line for _, line in records(s3, ext)]
        assert [line for _, line in records(s3, ext, "restore/")] == originals
        assert len(originals) == 450


def test_plugins_lists_both_with_a_description() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in listing["plugins"]}
    for name, words in (("cef", "ArcSight CEF:0"), ("leef", "IBM QRadar LEEF 2.0")):
        assert plugins[name]["origin"] == "built-in"
        (provided,) = plugins[name]["provides"]
        assert (provided["kind"], provided["name"]) == ("formatter", name)
        assert provided["description"].startswith(words)


@pytest.mark.slow
def test_the_formats_benchmark_runs_and_checks_its_output(tmp_path: Path) -> None:
    """``python -m benchmarks.cefleef`` in small (docs/performance.md has the 1 M run):
    every case ran and its output was read back and checked."""
    out = tmp_path / "formats.json"
    path = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.cefleef", "--events", "2000", "--repeat", "1",
            "--data-dir", str(tmp_path / "data"), "--json", str(out), "--quiet",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert {(r["format"], r["sink"]) for r in results} == {
        (f, s) for f in ("json", "cef", "leef") for s in ("s3", "local")
    }
    assert all(r["status"] == "ok" and r["eps"] > 0 and r["maxrss_mb"] > 0 for r in results)
    assert "| 2,000 | cef | s3 |" in proc.stdout
