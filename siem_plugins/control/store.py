"""Integrations kept as data: the customers' own, saved through the settings API.

An integration saved here is the same table an operator writes as ``[[integration]]`` in
``siem.toml`` (its *document*), validated by the same code (:mod:`.validate`), with every
secret value sealed (:mod:`.secrets`) before it is stored. Each save gives the
integration a new ``version``, and every change (a save, an enable or disable, a delete)
bumps one store-wide *generation* in the same transaction: ``run``, the Celery beat and
the workers read the generation at each tick (one row) and reload the integrations only
when it moved.

The tables live beside the delivery state (SQLite: the store's file; PostgreSQL: schema
version 7, ``siem-plugins store migrate``).
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from siem_plugins.control.secrets import PREFIX as SEALED
from siem_plugins.control.secrets import SecretBox, SecretKeyError
from siem_plugins.options import is_secret_key
from siem_plugins.storage.dialect import C, Dialect

if TYPE_CHECKING:
    from siem_plugins.config import Config


class ControlError(RuntimeError):
    """A change the control store refused (a stale version, an unknown name)."""


class VersionConflict(ControlError):
    """The integration changed since the version the caller read (someone else saved)."""


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never the token itself, only its SHA-256 digest.

    :ivar account: the account it may touch; None for an operator token (every account).
    :ivar admin_name: the administrator it was made for (named in ``config`` events).
    """

    id: str
    digest: str
    account: str | None
    label: str
    admin_name: str
    admin_email: str
    created: str
    last_used: str | None
    revoked: str | None


def integration_name(account: str) -> str:
    """The name of an account's integration of the settings API: the account itself
    when it is a valid integration name, else a stable name derived from it."""
    import hashlib

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", account):
        return account
    digest = hashlib.sha256(account.encode()).hexdigest()[:16]
    head = re.sub(r"[^A-Za-z0-9._-]", "-", account)[:40].strip("-._") or "account"
    return f"{head}-{digest}"


@dataclass(frozen=True)
class StoredIntegration:
    """One integration kept as data.

    :ivar document: the ``[[integration]]`` table, secrets sealed (``fernet:...``).
    :ivar version: 1 on creation, one more on every save or enable/disable.
    :ivar updated_by: who saved it last (``account admin via token abc...``, ``cli``).
    """

    name: str
    account: str
    version: int
    enabled: bool
    document: Mapping[str, Any]
    created: str
    updated: str
    updated_by: str


def _walk(value: Any, key: str, leaf: Callable[[str, str], str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _walk(v, k, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, key, leaf) for v in value]
    if isinstance(value, str) and key and is_secret_key(key):
        return leaf(key, value)
    return value


def seal(document: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """``document`` with every value under a secret key (``secret_access_key``,
    ``password``, any key a plugin names so) encrypted; values sealed already stay.

    :raises SecretKeyError: a secret to seal and no keys configured.
    """

    def leaf(key: str, value: str) -> str:
        if value.startswith(SEALED):
            return value
        if box is None:
            raise SecretKeyError(
                f"{key}: secrets are stored encrypted, and no key is configured: set "
                "SIEM_SECRET_KEYS or SIEM_SECRET_KEYS_FILE (make a key with "
                "`siem-plugins secrets new-key`)"
            )
        return box.encrypt(value)

    out: dict[str, Any] = _walk(document, "", leaf)
    return out


def unseal(document: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """``document`` with its sealed values decrypted (for building its components)."""

    def leaf(key: str, value: str) -> str:
        if not value.startswith(SEALED):
            return value
        if box is None:
            raise SecretKeyError(
                f"{key}: the stored secret is encrypted and no key is configured "
                "(SIEM_SECRET_KEYS or SIEM_SECRET_KEYS_FILE)"
            )
        return box.decrypt(value)

    out: dict[str, Any] = _walk(document, "", leaf)
    return out


def sealed_plaintexts(sealed: Mapping[str, Any], plain: Mapping[str, Any]) -> list[str]:
    """The clear text of every value ``sealed`` holds sealed, read from ``plain`` (the
    same document unsealed): for the log redactor."""
    out: list[str] = []

    def pairs(a: Any, b: Any) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in a:
                if k in b:
                    pairs(a[k], b[k])
        elif isinstance(a, list) and isinstance(b, list):
            for x, y in zip(a, b, strict=False):
                pairs(x, y)
        elif isinstance(a, str) and a.startswith(SEALED) and isinstance(b, str):
            out.append(b)

    pairs(sealed, plain)
    return out


def sealed_values(document: Mapping[str, Any]) -> Iterator[str]:
    """Every sealed value of a document (for rotation)."""
    found: list[str] = []

    def leaf(key: str, value: str) -> str:
        if value.startswith(SEALED):
            found.append(value)
        return value

    _walk(document, "", leaf)
    yield from found


def _text(document: Mapping[str, Any]) -> str:
    """A document as stored: compact JSON, keys sorted (equal documents, equal text)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class ControlStore(Generic[C]):
    """The integrations kept as data (and, later, API tokens), on a dialect."""

    def __init__(self, dialect: Dialect[C]) -> None:
        self._dialect = dialect

    def close(self) -> None:
        self._dialect.close()

    # ------------------------------------------------------------------ reading

    def generation(self) -> int:
        """A number that grows with every change to the stored integrations."""
        sql = "SELECT generation FROM siem_generation WHERE id=1"
        row = self._dialect.run(lambda conn, retry: conn.execute(sql).fetchone())
        return int(row[0]) if row else 0

    def list(self, account: str | None = None) -> list[StoredIntegration]:
        """Every stored integration (of one account), by name."""
        d = self._dialect
        sql = (
            "SELECT name, account, version, enabled, document,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('created', ms=True)}, {d.utc_text('updated', ms=True)}, updated_by"
            " FROM siem_integration"
        )
        params: tuple[str, ...] = ()
        if account is not None:
            sql += " WHERE account=?"
            params = (account,)
        sql = d.sql(sql + " ORDER BY name")
        rows = d.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [self._row(r) for r in rows]

    def get(self, name: str) -> StoredIntegration | None:
        d = self._dialect
        sql = d.sql(
            "SELECT name, account, version, enabled, document,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('created', ms=True)}, {d.utc_text('updated', ms=True)}, updated_by"
            " FROM siem_integration WHERE name=?"
        )
        row = d.run(lambda conn, retry: conn.execute(sql, (name,)).fetchone())
        return self._row(row) if row else None

    @staticmethod
    def _row(row: Any) -> StoredIntegration:
        name, account, version, enabled, document, created, updated, by = row
        return StoredIntegration(
            name, account, int(version), bool(enabled), json.loads(document), created, updated, by
        )

    # ------------------------------------------------------------------ changes

    def put(
        self,
        document: Mapping[str, Any],
        *,
        updated_by: str,
        expected_version: int | None = None,
    ) -> StoredIntegration:
        """Create or replace the integration ``document["name"]`` (the document sealed
        already and validated); its version grows by one. With ``expected_version``
        (0: it must not exist yet), a save based on an older read is refused."""
        d = self._dialect
        name = str(document["name"])
        account = str(document.get("account", name))
        enabled = bool(document.get("enabled", True))
        text = _text(document)
        clock = d.clock
        select = d.sql(
            "SELECT version, document FROM siem_integration WHERE name=?"  # noqa: S608 (dialect constants, no input)
            + d.for_update
        )

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                row = conn.execute(select, (name,)).fetchone()
                current = int(row[0]) if row else 0
                if retry and row and row[1] == text and expected_version == current - 1:
                    return  # the first try committed; only its answer was lost
                if expected_version is not None and expected_version != current:
                    raise VersionConflict(
                        f"integration {name!r} is at version {current}, not {expected_version}: "
                        "someone saved it meanwhile; reload and save again"
                    )
                if row is None:
                    conn.execute(
                        d.sql(
                            "INSERT INTO siem_integration (name, account, version, enabled,"
                            " document, updated_by) VALUES (?,?,1,?,?,?)"
                        ),
                        (name, account, enabled, text, updated_by),
                    )
                else:
                    conn.execute(
                        d.sql(
                            "UPDATE siem_integration SET account=?, version=version+1,"  # noqa: S608 (dialect constants, no input)
                            f" enabled=?, document=?, updated={clock}, updated_by=? WHERE name=?"
                        ),
                        (account, enabled, text, updated_by, name),
                    )
                self._bump(conn)

        d.run(op)
        stored = self.get(name)
        assert stored is not None
        return stored

    def set_enabled(self, name: str, enabled: bool, *, updated_by: str) -> StoredIntegration:
        stored = self.get(name)
        if stored is None:
            raise ControlError(f"no stored integration named {name!r}")
        document = {**stored.document, "enabled": enabled}
        return self.put(document, updated_by=updated_by, expected_version=stored.version)

    def delete(self, name: str) -> bool:
        """Delete a stored integration; False if there was none. Its cursors and health
        stay in the delivery state (a new integration of that name continues them)."""
        d = self._dialect

        def op(conn: C, retry: bool) -> bool:
            with d.transaction(conn):
                gone = conn.execute(
                    d.sql("DELETE FROM siem_integration WHERE name=?"), (name,)
                ).rowcount
                if gone:
                    self._bump(conn)
                return bool(gone)

        return d.run(op)

    def reseal(self, box: SecretBox) -> tuple[int, int]:
        """Re-encrypt every stored secret with the newest key (``secrets rotate``):
        ``(re-encrypted, already current)``. Each integration in its own transaction,
        only if it did not change meanwhile; its version stays (its settings did not)."""
        d = self._dialect
        update = d.sql("UPDATE siem_integration SET document=? WHERE name=? AND document=?")
        rotated = current = 0
        for stored in self.list():
            values = list(sealed_values(stored.document))
            stale = [v for v in values if not box.is_current(v)]
            current += len(values) - len(stale)
            if not stale:
                continue

            def leaf(key: str, value: str) -> str:
                return box.rotate(value) if value.startswith(SEALED) else value

            params = (_text(_walk(stored.document, "", leaf)), stored.name, _text(stored.document))

            def op(conn: C, retry: bool, params: tuple[str, str, str] = params) -> int:
                return int(conn.execute(update, params).rowcount)

            if d.run(op):
                rotated += len(stale)
        return rotated, current

    # ------------------------------------------------------------------ API tokens

    def add_token(
        self,
        token_id: str,
        digest: str,
        *,
        account: str | None,
        label: str,
        admin_name: str,
        admin_email: str,
    ) -> None:
        d = self._dialect
        sql = d.sql(
            "INSERT INTO siem_api_token (id, digest, account, label, admin_name, admin_email)"
            " VALUES (?,?,?,?,?,?)"
        )
        d.run(
            lambda conn, retry: conn.execute(
                sql, (token_id, digest, account, label, admin_name, admin_email)
            )
        )

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._tokens("WHERE id=?", (token_id,))
        return rows[0] if rows else None

    def tokens(self, account: str | None = None) -> builtins.list[TokenRecord]:
        if account is None:
            return self._tokens("", ())
        return self._tokens("WHERE account=?", (account,))

    def _tokens(self, where: str, params: tuple[str, ...]) -> builtins.list[TokenRecord]:
        d = self._dialect
        sql = d.sql(
            "SELECT id, digest, account, label, admin_name, admin_email,"  # noqa: S608 (dialect constants, no input)
            f" {d.utc_text('created', ms=True)}, {d.utc_text('last_used', ms=True)},"
            f" {d.utc_text('revoked', ms=True)} FROM siem_api_token {where} ORDER BY created, id"
        )
        rows = d.run(lambda conn, retry: conn.execute(sql, params).fetchall())
        return [TokenRecord(*r) for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token (for ever); False if there is no live token of that id."""
        d = self._dialect
        sql = d.sql(
            f"UPDATE siem_api_token SET revoked={d.clock} WHERE id=? AND revoked IS NULL"  # noqa: S608 (dialect constants, no input)
        )
        return bool(d.run(lambda conn, retry: conn.execute(sql, (token_id,)).rowcount))

    def touch_token(self, token_id: str) -> None:
        d = self._dialect
        sql = d.sql(f"UPDATE siem_api_token SET last_used={d.clock} WHERE id=?")  # noqa: S608 (dialect constants, no input)
        d.run(lambda conn, retry: conn.execute(sql, (token_id,)))

    # ------------------------------------------------------------------ page sessions

    def end_session(self, sid: str, *, keep_s: float) -> None:
        """Record that a page session signed out (its cookie, copied or not, is dead from
        now on); forget the records older than ``keep_s``, when such cookies expire."""
        d = self._dialect
        from datetime import UTC, datetime, timedelta

        insert = d.sql("INSERT INTO siem_web_logout (sid) VALUES (?) ON CONFLICT (sid) DO NOTHING")
        forget = d.sql("DELETE FROM siem_web_logout WHERE ended < ?")
        before = datetime.now(UTC) - timedelta(seconds=keep_s)
        cutoff = before.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        def op(conn: C, retry: bool) -> None:
            with d.transaction(conn):
                conn.execute(insert, (sid,))
                conn.execute(forget, (cutoff,))

        d.run(op)

    def session_ended(self, sid: str) -> bool:
        sql = self._dialect.sql("SELECT 1 FROM siem_web_logout WHERE sid=?")
        return bool(self._dialect.run(lambda conn, retry: conn.execute(sql, (sid,)).fetchone()))

    def _bump(self, conn: C) -> None:
        conn.execute("UPDATE siem_generation SET generation=generation+1 WHERE id=1")


def stored_integrations(config: Config) -> list[StoredIntegration]:
    """The integrations kept as data in the store a config names."""
    control = open_control(store_url(config))
    try:
        return control.list()
    finally:
        control.close()


def store_url(config: Config) -> str:
    """The ``[store] url`` of a config (the default SQLite file when unset)."""
    from siem_plugins.storage import DEFAULT_URL

    url = config.store_options.raw("url", DEFAULT_URL)
    return url if isinstance(url, str) else DEFAULT_URL


def open_control(url: str) -> ControlStore[Any]:
    """The control store beside the event store a URL names."""
    from siem_plugins.storage.migrations import SQLITE_CONTROL_SCHEMA
    from siem_plugins.storage.postgres import PgDialect
    from siem_plugins.storage.sqlite import SQLiteDialect
    from siem_plugins.storage.urls import is_postgres, sqlite_path

    if is_postgres(url):
        from siem_plugins.storage.migrations import check_schema

        pg = PgDialect(url)
        check_schema(pg.conns.get())
        return ControlStore(pg)
    lite = SQLiteDialect(sqlite_path(url))
    lite.conns.get().executescript(SQLITE_CONTROL_SCHEMA)
    return ControlStore(lite)
