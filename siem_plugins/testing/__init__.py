"""The kit for plugin authors (and our own tests), registered as a pytest plugin.

Installing siem-plugins makes these fixtures available to any pytest run
(entry point ``pytest11``); they import their servers lazily, so a project that does not
use them pays nothing:

* ``s3_server`` — moto's S3 over real HTTP on loopback, with a fault-injecting WSGI
  middleware (``s3_server.faults``); reset before each test. Set
  ``SIEM_TEST_S3_ENDPOINT`` to run the same tests against another endpoint.
* ``s3_bucket`` — a fresh bucket on it; ``s3_faults`` — its fault injector (skips the test
  on an external endpoint); ``s3_fast_retries`` — botocore retries without backoff sleeps.
* ``smtp_server`` / ``smtp_tls_server`` — aiosmtpd on loopback, plain or STARTTLS + AUTH,
  recording every message (``.messages``) and able to fail on demand (``.fail_next``).
* ``siem_events`` — a factory of realistic, seed-shaped event dicts.
* ``siem_store`` — an empty SQLite event store in a temporary folder.
* ``pg_url`` — a PostgreSQL URL whose ``search_path`` is a fresh, migrated schema (dropped
  afterwards). The server comes from ``SIEM_TEST_PG_URL`` (default: the local one on
  127.0.0.1:5432, database ``test``); if it is unreachable the test fails, it is not skipped.

It also re-exports the conformance suites of :mod:`siem_plugins.testing.conformance`
(``SinkConformance``, ``StreamSinkConformance``, ``FormatterConformance``,
``NotifierConformance``, ``SourceConformance``): subclass one in a test module and
provide its fixtures; their event helpers (``sample_events``, ``events_from_dicts``,
``digest_of``); and a harness that runs a plugin as siem-plugins would:
``store_events(store, account, dicts)``, ``build(kind, name, options, plugins_dir=...)``
and ``sync_once(config, plugins_dir=...)`` (a ``SyncResult`` per integration).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The S3 fixtures live beside their server; importing them costs only the stdlib.
from siem_plugins.testing.fixtures_s3 import (  # noqa: F401 (re-exported fixtures)
    s3_bucket,
    s3_fast_retries,
    s3_faults,
    s3_server,
    s3_server_session,
)

# The suites' asserts are the plugin author's test failures: have pytest rewrite them
# for readable messages. This must happen before the module is first imported.
pytest.register_assert_rewrite("siem_plugins.testing.conformance")

from siem_plugins.testing.conformance import (  # noqa: E402 (re-exported, after the rewrite hook)
    CONTROL_TEXTS,
    INJECTION_TEXTS,
    UNICODE_TEXTS,
    FormatterConformance,
    NotifierConformance,
    SinkConformance,
    SourceConformance,
    StreamSinkConformance,
    digest_of,
    events_from_dicts,
    hostile_event_dicts,
    sample_events,
)

# The harness imports the whole shipper: loaded on first use only, so that a pytest run
# that merely has siem-plugins installed pays nothing for this plugin.
_HARNESS = {"build", "store_events", "sync_once"}


def __getattr__(name: str) -> Any:
    if name in _HARNESS:
        from siem_plugins.testing import harness

        return getattr(harness, name)
    if name == "SyncResult":
        from siem_plugins.pipeline import SyncResult

        return SyncResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from siem_plugins.pipeline import SyncResult
    from siem_plugins.storage import SQLiteStore
    from siem_plugins.testing.harness import build, store_events, sync_once
    from siem_plugins.testing.smtpserver import SMTPServer

__all__ = [
    "CONTROL_TEXTS",
    "DEFAULT_PG_URL",
    "INJECTION_TEXTS",
    "SMTP_PASSWORD",
    "SMTP_USER",
    "UNICODE_TEXTS",
    "FormatterConformance",
    "NotifierConformance",
    "SinkConformance",
    "SourceConformance",
    "StreamSinkConformance",
    "SyncResult",
    "build",
    "digest_of",
    "events_from_dicts",
    "hostile_event_dicts",
    "pg_url",
    "s3_bucket",
    "s3_fast_retries",
    "s3_faults",
    "s3_server",
    "sample_events",
    "siem_events",
    "siem_store",
    "smtp_server",
    "smtp_tls_server",
    "store_events",
    "sync_once",
]

#: The account ``smtp_tls_server`` accepts.
SMTP_USER = "siem"
SMTP_PASSWORD = "s3cret-pass"  # noqa: S105 (a throwaway test credential)


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A plain SMTP server (no TLS, no AUTH) that records every mail."""
    from siem_plugins.testing.smtpserver import SMTPServer

    with SMTPServer() as server:
        yield server


@pytest.fixture
def smtp_tls_server() -> Iterator[SMTPServer]:
    """STARTTLS required, then AUTH as ``siem`` / ``s3cret-pass``. Trust ``.ca_file``."""
    from siem_plugins.testing.smtpserver import SMTPServer

    with SMTPServer(
        starttls=True, require_starttls=True, auth=(SMTP_USER, SMTP_PASSWORD)
    ) as server:
        yield server


@pytest.fixture
def siem_events() -> Callable[..., list[dict[str, Any]]]:
    """``siem_events(n, seed=1)``: ``n`` realistic Device/Account event dicts, time-ordered."""
    from siem_plugins.demo import generate

    def make(n: int, *, seed: int = 1, **kwargs: Any) -> list[dict[str, Any]]:
        return list(generate(n, seed=seed, **kwargs))

    return make


@pytest.fixture
def siem_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """An empty SQLite event store (``siem_store.path`` is its file)."""
    from siem_plugins.storage import SQLiteStore

    store = SQLiteStore(tmp_path / "siem.db")
    yield store
    store.close()


DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A migrated, empty schema of its own on the test PostgreSQL server."""
    import psycopg

    from siem_plugins.storage import migrate

    base = os.environ.get("SIEM_TEST_PG_URL", DEFAULT_PG_URL)
    schema = f"siem_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {base} is not reachable ({exc}); start it (see .ci/run) "
            "or point SIEM_TEST_PG_URL at one"
        )
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in base else "?"
        url = f"{base}{sep}options=-csearch_path%3D{schema}"
        migrate(url)
        try:
            yield url
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
