"""The benchmark suite's smoke mode runs in the test suite, so it cannot rot.

``python -m benchmarks --smoke``: a few thousand events through every case (rsyslog and
PostgreSQL only where present), each in its own process, outputs verified. Nothing here
asserts a timing: only that every case ran or was skipped for a stated reason, that every
output was checked, and that the ratios came out as numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Cases that depend on something outside the Python install (benchmarks/setup.sh).
OPTIONAL = {
    "rsyslog-1": "rsyslogd",
    "rsyslog-mt": "rsyslogd",
    "json-pg-s3": "PostgreSQL",
}


@pytest.mark.slow
def test_smoke_benchmark_runs_every_case(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks.bench import CASE_KEYS, LABELS
    finally:
        sys.path.remove(str(REPO))
    out = tmp_path / "smoke.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--smoke",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())

    results = {r["case"]: r for r in report["results"]}
    assert set(results) == set(CASE_KEYS)
    for key, r in results.items():
        if r["status"] == "skipped":
            assert key in OPTIONAL, f"{key} skipped: {r['note']}"
            assert r["note"]
            continue
        assert r["status"] == "ok", f"{key}: {r['note']}"
        assert r["verified"], key
        assert r["runs"] == 1
        assert r["seconds"] > 0
        assert r["maxrss_mb"] > 0, key
        if key != "noop":
            assert r["events"] == report["settings"]["sizes"][0]
            assert r["eps"] > 0
            assert r["bytes_out"] > 0

    metrics = {m["name"]: m for m in report["metrics"]}
    assert len(metrics) >= 10
    for m in metrics.values():
        assert m["status"] in ("PASS", "MISS", "info", "n/a")
        for value in m["values"].values():
            assert value is None or (isinstance(value, float | int) and math.isfinite(value))
    # The ratios the issue asks for are numbers whenever their cases ran.
    for name, cases in (
        ("JSON+gzip sync / stdlib ceiling, events/s", ("json-s3", "stdlib")),
        ("JSON+gzip object size / zlib-6 size", ("json-s3", "stdlib")),
        ("JSON+gzip sync / floor, events/s", ("json-s3", "floor")),
        ("JSON+gzip sync / naive, events/s", ("json-s3", "naive")),
        ("SYSLOG -> file / rsyslog 1 worker, events/s", ("syslog-local", "rsyslog-1")),
    ):
        if all(results[c]["status"] == "ok" for c in cases):
            (value,) = metrics[name]["values"].values()
            assert isinstance(value, float) and value > 0, name

    # The printed table names every case and the ratios table.
    for key in CASE_KEYS:
        assert LABELS[key] in proc.stdout, key
    assert "Ratios and targets" in proc.stdout
