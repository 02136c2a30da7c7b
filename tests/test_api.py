"""docs/api.md is the public API: every exported name is on the page, and nothing on the
page is missing from the modules (datasette's test of its hook docs, for the API)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def documented() -> dict[str, list[str]]:
    """Names in the first column of each module's table, by module."""
    out: dict[str, list[str]] = {}
    module = None
    for line in PAGE.read_text().splitlines():
        heading = re.match(r"## `([\w.]+)`$", line)
        if heading:
            module = heading.group(1)
            out[module] = []
        elif module and (row := re.match(r"\| `(\w+)` \|", line)):
            out[module].append(row.group(1))
    return out


@pytest.mark.parametrize(
    "module", ["siem_plugins", "siem_plugins.hookspecs", "siem_plugins.testing"]
)
def test_the_api_page_lists_exactly_what_each_module_exports(module: str) -> None:
    names = documented()[module]
    assert len(names) == len(set(names)), "a name is listed twice"
    exported = importlib.import_module(module).__all__
    assert sorted(names) == sorted(exported)


def test_every_exported_name_exists() -> None:
    for module, names in documented().items():
        mod = importlib.import_module(module)
        for name in names:
            assert getattr(mod, name, None) is not None, f"{module}.{name}"
