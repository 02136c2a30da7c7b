"""Shared helpers for the test suite (not fixtures: plain functions)."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from siem_plugins.config import config_from_dict
from siem_plugins.events import canonicalize
from siem_plugins.host import create_host
from siem_plugins.runtime import Runtime
from siem_plugins.storage import SQLiteStore


def ingest(store: SQLiteStore, account: str, events: Iterable[dict[str, Any]]) -> list[int]:
    result = store.append(account, (canonicalize(e) for e in events))
    assert result.first_id is not None and result.last_id is not None
    return list(range(result.first_id, result.last_id + 1))


def integration(
    name: str,
    sink: dict[str, Any],
    *,
    fmt: Any = "json",
    notify: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "format": fmt,
        "sink": sink,
        "notify": notify
        or {
            "type": "outbox",
            "path": str(Path(sink["path"]).parent / "outbox"),
            "from": "siem@example.com",
            "to": ["admin@example.com"],
            "events": ["exempt_all", "config"],
        },
        **extra,
    }


def runtime(
    store_path: Path,
    integrations: list[dict[str, Any]],
    plugins: Iterable[tuple[str, object]] = (),
    **top: Any,
) -> Runtime:
    raw = {"store": {"url": f"sqlite:///{store_path}"}, "integration": integrations, **top}
    cfg = config_from_dict(raw, file="test.toml")
    host = create_host(None, entry_points=False, disabled=(), extra=plugins)
    return Runtime(cfg, host)


def numbered(events: Iterable[dict[str, Any]], start: int = 1) -> list[dict[str, Any]]:
    """The events with an extra ``seq`` field (kept by the store, after the known fields),
    so a test can tell exactly which events an object holds."""
    return [{**e, "seq": i} for i, e in enumerate(events, start)]


def seqs_in(data: bytes) -> list[int]:
    """The ``seq`` of each NDJSON line."""
    return [orjson.loads(line)["seq"] for line in data.splitlines()]


def local_objects(root: Path) -> dict[str, bytes]:
    """Every object under a local sink folder, decompressed, by key."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            data = path.read_bytes()
            out[str(path.relative_to(root))] = (
                gzip.decompress(data) if path.suffix == ".gz" else data
            )
    return out


def drop_in_folder(dest: Path, *sources: Path, files: dict[str, str] | None = None) -> Path:
    """``dest`` as a drop-in folder the plugin host accepts whatever the umask (a CI
    clone made with umask 002 has group-writable files, which the host refuses): mode
    0755, holding copies of ``sources`` (``*.py`` files, or folders of them) and
    ``files`` (name -> text), each mode 0644. Missing parent folders are made 0755."""
    # Every folder made here too: a group-writable parent is refused as well.
    for folder in reversed([dest, *dest.parents]):
        if not folder.exists():
            folder.mkdir()
            folder.chmod(0o755)
    dest.chmod(0o755)
    for source in sources:
        for path in sorted(source.glob("*.py")) if source.is_dir() else [source]:
            (dest / path.name).write_bytes(path.read_bytes())
    for name, text in (files or {}).items():
        (dest / name).write_text(text)
    for path in dest.glob("*.py"):
        path.chmod(0o644)
    return dest
