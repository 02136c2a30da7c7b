"""The schemas: PostgreSQL's versioned migrations, and the SQLite scripts.

PostgreSQL's schema is versioned: ``siem-plugins store migrate`` (:func:`migrate`)
applies what is missing, idempotently, under an advisory lock so several processes can
run it at once, and a store opened on an older schema is refused (:func:`check_schema`).
SQLite's schema is created when a store is opened (``CREATE ... IF NOT EXISTS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siem_plugins.storage.connections import connect

if TYPE_CHECKING:
    from siem_plugins.storage.connections import PgConnection

#: Advisory lock key taken by every writer of siem_event (transaction scope).
INGEST_LOCK = 0x5E1E_0001
#: Namespace (first int) of the per-integration sync locks (session scope).
SYNC_LOCK_NS = 0x5E1E

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events, cursors, intents",
        """
CREATE SEQUENCE IF NOT EXISTS siem_event_id_seq AS bigint;
CREATE TABLE IF NOT EXISTS siem_event (
    id       bigint PRIMARY KEY DEFAULT nextval('siem_event_id_seq'),
    account  text NOT NULL,
    type     text NOT NULL,
    log_type text NOT NULL,
    ts       text NOT NULL,
    body     bytea NOT NULL
);
ALTER SEQUENCE siem_event_id_seq OWNED BY siem_event.id;
CREATE INDEX IF NOT EXISTS siem_event_account_id ON siem_event (account, id);
CREATE TABLE IF NOT EXISTS siem_cursor (
    integration text NOT NULL,
    destination text NOT NULL,
    last_id     bigint NOT NULL,
    updated     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_intent (
    integration text NOT NULL,
    destination text NOT NULL,
    first_id    bigint NOT NULL,
    last_id     bigint NOT NULL,
    count       bigint NOT NULL,
    key         text NOT NULL,
    created     text NOT NULL,
    fingerprint text NOT NULL,
    PRIMARY KEY (integration, destination)
);
CREATE OR REPLACE FUNCTION siem_append_lock() RETURNS void LANGUAGE sql AS
    'SELECT pg_advisory_xact_lock(1579024385)';
""",
    ),
    (
        2,
        "sync runs (who synced what, when)",
        """
CREATE TABLE IF NOT EXISTS siem_sync_run (
    id          bigserial PRIMARY KEY,
    integration text NOT NULL,
    worker      text NOT NULL,
    started     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished    timestamptz,
    objects     integer,
    events      bigint,
    error       text
);
CREATE INDEX IF NOT EXISTS siem_sync_run_integration ON siem_sync_run (integration, started);
""",
    ),
    (
        3,
        "stored input files (ingest is idempotent per file)",
        """
CREATE TABLE IF NOT EXISTS siem_ingest (
    account   text NOT NULL,
    sha256    text NOT NULL,
    source    text NOT NULL,
    lines     bigint NOT NULL,
    stored    bigint NOT NULL,
    first_id  bigint NOT NULL,
    last_id   bigint NOT NULL,
    stored_at timestamptz NOT NULL,
    PRIMARY KEY (account, sha256)
);
""",
    ),
    (
        4,
        "dead letters; sync runs per destination",
        """
ALTER TABLE siem_sync_run ADD COLUMN IF NOT EXISTS destination text;
CREATE TABLE IF NOT EXISTS siem_dead_letter (
    integration text NOT NULL,
    event_id    bigint NOT NULL,
    account     text NOT NULL,
    error       text NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, event_id)
);
""",
    ),
    (
        5,
        "the health record of each integration's destinations",
        """
CREATE TABLE IF NOT EXISTS siem_health (
    integration   text NOT NULL,
    destination   text NOT NULL,
    last_attempt  timestamptz NOT NULL,
    last_success  timestamptz,
    last_error    text,
    last_error_at timestamptz,
    last_error_code text,
    failing_since timestamptz,
    failures      integer NOT NULL DEFAULT 0,
    behind        bigint,
    oldest        text,
    alert_sent_at timestamptz,
    PRIMARY KEY (integration, destination)
);
""",
    ),
    (
        6,
        "replay jobs (siem-plugins replay)",
        """
CREATE TABLE IF NOT EXISTS siem_replay (
    integration text NOT NULL,
    job         text NOT NULL,
    account     text NOT NULL,
    first_id    bigint NOT NULL,
    last_id     bigint NOT NULL,
    target      text NOT NULL,
    since       text,
    until       text,
    created     timestamptz NOT NULL DEFAULT now(),
    finished    timestamptz,
    objects     integer NOT NULL DEFAULT 0,
    events      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (integration, job)
);
""",
    ),
    (
        7,
        "integrations as data, their generation, API tokens (the control plane)",
        """
CREATE TABLE IF NOT EXISTS siem_integration (
    name       text PRIMARY KEY,
    account    text NOT NULL,
    version    bigint NOT NULL,
    enabled    boolean NOT NULL,
    document   text NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS siem_integration_account ON siem_integration (account);
CREATE TABLE IF NOT EXISTS siem_generation (
    id         integer PRIMARY KEY,
    generation bigint NOT NULL
);
INSERT INTO siem_generation VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS siem_api_token (
    id        text PRIMARY KEY,
    digest    text NOT NULL,
    account   text,
    label     text NOT NULL,
    admin_name  text NOT NULL,
    admin_email text NOT NULL,
    created   timestamptz NOT NULL DEFAULT now(),
    last_used timestamptz,
    revoked   timestamptz
);
""",
    ),
    (
        8,
        "page sessions signed out (the settings page)",
        """
CREATE TABLE IF NOT EXISTS siem_web_logout (
    sid   text PRIMARY KEY,
    ended timestamptz NOT NULL DEFAULT now()
);
""",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
assert INGEST_LOCK == 1579024385  # the literal inside siem_append_lock()

#: The SQLite event store's tables (events, stored input files).
SQLITE_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS siem_event (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    account  TEXT NOT NULL,
    type     TEXT NOT NULL,
    log_type TEXT NOT NULL,
    ts       TEXT NOT NULL,
    body     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS siem_event_account_id ON siem_event (account, id);
CREATE TABLE IF NOT EXISTS siem_ingest (
    account   TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    source    TEXT NOT NULL,
    lines     INTEGER NOT NULL,
    stored    INTEGER NOT NULL,
    first_id  INTEGER NOT NULL,
    last_id   INTEGER NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (account, sha256)
);
"""

#: The SQLite state store's tables (cursors, dead letters, sync runs, health, intents,
#: replay jobs).
SQLITE_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS siem_cursor (
    integration TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_id     INTEGER NOT NULL,
    updated     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_dead_letter (
    integration TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    account     TEXT NOT NULL,
    error       TEXT NOT NULL,
    created     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration, event_id)
);
CREATE TABLE IF NOT EXISTS siem_sync_run (
    id          INTEGER PRIMARY KEY,
    integration TEXT NOT NULL,
    destination TEXT,
    worker      TEXT NOT NULL,
    started     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished    TEXT,
    objects     INTEGER,
    events      INTEGER,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS siem_sync_run_integration ON siem_sync_run (integration, started);
CREATE TABLE IF NOT EXISTS siem_health (
    integration   TEXT NOT NULL,
    destination   TEXT NOT NULL,
    last_attempt  TEXT NOT NULL,
    last_success  TEXT,
    last_error    TEXT,
    last_error_at TEXT,
    last_error_code TEXT,
    failing_since TEXT,
    failures      INTEGER NOT NULL DEFAULT 0,
    behind        INTEGER,
    oldest        TEXT,
    alert_sent_at TEXT,
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_intent (
    integration TEXT NOT NULL,
    destination TEXT NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    key         TEXT NOT NULL,
    created     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (integration, destination)
);
CREATE TABLE IF NOT EXISTS siem_replay (
    integration TEXT NOT NULL,
    job         TEXT NOT NULL,
    account     TEXT NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    target      TEXT NOT NULL,
    since       TEXT,
    until       TEXT,
    created     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished    TEXT,
    objects     INTEGER NOT NULL DEFAULT 0,
    events      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (integration, job)
);
"""

#: The SQLite control plane's tables (integrations as data, their generation, API tokens).
SQLITE_CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS siem_integration (
    name       TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    version    INTEGER NOT NULL,
    enabled    INTEGER NOT NULL,
    document   TEXT NOT NULL,
    created    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS siem_integration_account ON siem_integration (account);
CREATE TABLE IF NOT EXISTS siem_generation (
    id         INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL
);
INSERT INTO siem_generation VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS siem_api_token (
    id        TEXT PRIMARY KEY,
    digest    TEXT NOT NULL,
    account   TEXT,
    label     TEXT NOT NULL,
    admin_name  TEXT NOT NULL,
    admin_email TEXT NOT NULL,
    created   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used TEXT,
    revoked   TEXT
);
CREATE TABLE IF NOT EXISTS siem_web_logout (
    sid   TEXT PRIMARY KEY,
    ended TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


class SchemaError(RuntimeError):
    """The PostgreSQL store's schema is older than this release needs."""


def schema_version(conn: PgConnection) -> int:
    """The PostgreSQL schema version a connection's database is at (0: none)."""
    row = conn.execute("SELECT to_regclass('siem_schema_version')").fetchone()
    if row is None or row[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM siem_schema_version").fetchone()
    assert row is not None
    return int(row[0])


def check_schema(conn: PgConnection) -> None:
    """Refuse a PostgreSQL database whose schema is older than :data:`SCHEMA_VERSION`."""
    version = schema_version(conn)
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"the PostgreSQL store is at schema version {version}, this "
            f"siem-plugins needs {SCHEMA_VERSION}: run `siem-plugins store migrate`"
        )


def migrate(url: str) -> list[int]:
    """Apply missing migrations; returns the versions applied (none: up to date)."""
    applied = []
    with connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SYNC_LOCK_NS,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS siem_schema_version ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        current = schema_version(conn)
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO siem_schema_version (version, description) VALUES (%s, %s)",
                (version, description),
            )
            applied.append(version)
    return applied
