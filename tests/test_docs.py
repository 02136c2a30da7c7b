"""The plugin guide's code runs as printed: the drop-in sink of docs/plugins.md and its
tests are copied out of the page into a fresh folder and run there with pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import drop_in_folder

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def python_blocks(section: str) -> list[str]:
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_guides_sink_is_under_50_lines_and_passes_its_tests(tmp_path: Path) -> None:
    (sink,) = python_blocks("A complete drop-in sink")
    (tests,) = python_blocks("Testing a plugin")
    assert len(sink.splitlines()) < 50
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
