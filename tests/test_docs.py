"""The plugin guide's code runs as printed: the drop-in sink of docs/plugins.md and its
tests are copied out of the page into a fresh folder and run there with pytest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import drop_in_folder

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "plugins.md"


def python_blocks(section: str) -> list[str]:
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_guides_sink_is_under_50_lines_and_passes_its_tests(tmp_path: Path) -> None:
    (sink,) = python_blocks("A complete drop-in sink")
    (tests,) = python_blocks("Testing a plugin")
    assert len(sink.splitlines()) < 50
    said = re.search(r"`hooks/http_put.py`, (\d+) lines", DOC.read_text())
    assert said and int(said.group(1)) == len(sink.splitlines()), "the guide miscounts"
    # Explicit modes: the host refuses group-writable drop-ins (a umask 002 machine).
    drop_in_folder(tmp_path / "hooks", files={"http_put.py": sink})
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_http_put.py").write_text(tests)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The sink conformance suite (minus its metadata test: this sink stores none) and
    # the end-to-end sync.
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10, summary
    assert "failed" not in summary and "error" not in summary, summary


def test_plugins_written_against_the_docs_type_check_strictly(tmp_path: Path) -> None:
    """siem_plugins ships py.typed: a plugin author's mypy --strict sees the contract's
    real types, and a plugin that follows the docs passes (the guide's sink, the hook
    reference's notifier, the examples in hooks/ and the example package)."""
    (sink,) = python_blocks("A complete drop-in sink")
    (tmp_path / "http_put.py").write_text(sink)
    hooks_md = (REPO / "docs" / "hooks.md").read_text()
    (digest_file,) = [
        b for b in re.findall(r"```python\n(.*?)```", hooks_md, re.S) if "class DigestFile" in b
    ]
    (tmp_path / "digest_file.py").write_text(digest_file)
    for example in (REPO / "hooks").glob("*.py"):
        (tmp_path / example.name).write_text(example.read_text())
    shutil.copytree(REPO / "docs" / "example-plugin" / "siem_example", tmp_path / "siem_example")
    assert (REPO / "siem_plugins" / "py.typed").exists()
    # As an installed package is found in site-packages; MYPYPATH because an editable
    # install's import hook is invisible to mypy.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
