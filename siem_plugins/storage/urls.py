"""Store URLs: which database a ``[store] url`` names.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path name a
SQLite file; ``postgresql://...`` (or ``postgres://...``) a PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_URL = "sqlite:///siem.db"


def is_postgres(url: str) -> bool:
    """Whether the URL names a PostgreSQL database."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite://`` URL (or a plain path)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("sqlite://"):
        raise ValueError(
            f"unsupported SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported store URL scheme {scheme!r} (supported: sqlite, postgresql)")
    return Path(url)
