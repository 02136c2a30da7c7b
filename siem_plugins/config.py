"""``siem.toml`` -> typed settings, with located errors and secret redaction.

Every string may use ``${NAME}`` (or ``${NAME:-default}``) to read an environment
variable; that is how secrets stay out of the file. A missing variable is an error that
names the key. Secrets (keys such as ``password``, ``secret_access_key``) are redacted
wherever the config is printed or logged.

Components are not built here: the runtime asks the plugin host for each one by name
(:meth:`siem_plugins.host.PluginHost.build`), so a plugin's own settings are validated by
the plugin, through the same :class:`~siem_plugins.options.Options` reader and with the
same located errors.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siem_plugins.compress import COMPRESSIONS, LEVELS
from siem_plugins.events import KNOWN_LOG_TYPES, point_in_time
from siem_plugins.keys import InvalidAccount, check_account
from siem_plugins.logs import LOG_FORMATS
from siem_plugins.options import (
    ConfigError,
    EnvSecret,
    FromEnv,
    Options,
    ParentTable,
    Secret,
    closest,
    is_secret_key,
)

DEFAULT_INTERVAL_S = 300.0
#: A sync at least once a day: a longer interval is a typo (``"5h"`` meant ``"5m"``?).
MAX_INTERVAL_S = 86_400.0
DEFAULT_MAX_EVENTS = 100_000
MAX_MAX_EVENTS = 100_000_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: 10,000 parts of the S3 sink's default 8 MiB part size hold ~78 GiB: an uncompressed
#: object of this size still fits in one multipart upload.
MAX_MAX_BYTES = 64 * 1024**3
DEFAULT_BATCH = 5000
#: A sink failing without a break for this long is worth a mail to the admins.
DEFAULT_ALERT_AFTER_S = 3600.0
REDACTED = "***"

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_SIZE_RE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_TOP_KEYS = {
    "interval",
    "plugins_dir",
    "max_workers",
    "log_format",
    "store",
    "integration",
    "celery",
    "retention",
    "metrics",
}


@dataclass
class IntegrationConfig:
    """One ``[[integration]]`` table, validated; components are built from the Options."""

    index: int
    name: str
    account: str
    enabled: bool
    format_name: str
    format_table: Mapping[str, Any]
    compression: str
    compression_level: int | None
    max_events: int
    max_bytes: int
    batch_size: int
    #: Seconds of uninterrupted sink failures before the admins are told (None: never).
    alert_after: float | None
    sink_name: str
    sink_table: Mapping[str, Any]
    notify_events: frozenset[str]
    notifier_name: str
    notify_table: Mapping[str, Any]
    #: The keys of the ``[[integration]]`` table itself (for the "move it above" hint).
    keys: frozenset[str] = frozenset()
    #: Where a new integration's first sync starts: None (the whole history), ``"now"``
    #: (events stored from then on), or a canonical event time (events from then on).
    start_at: str | None = None

    @property
    def path(self) -> str:
        return f"integration[{self.index}]"

    def parent(self, part: str) -> ParentTable:
        """The integration as the enclosing table of its ``part`` (``"sink"``, ...)."""
        return ParentTable("a key of [[integration]]", f"[integration.{part}]", self.keys)


#: The Celery queue the fleet's tasks go through unless ``[celery] queue`` names another.
DEFAULT_QUEUE = "siem"
_QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sqs", "sentinel")


@dataclass(frozen=True)
class CeleryConfig:
    """``[celery]``: how ``run --executor celery`` and ``worker`` reach each other.

    :ivar broker_url: the broker (Redis, RabbitMQ, ...); None when the table is absent.
    :ivar queue: the queue of the sync tasks.
    """

    broker_url: str | None = None
    queue: str = DEFAULT_QUEUE


@dataclass(frozen=True)
class RetentionConfig:
    """``[retention]``: the prune job of ``siem-plugins run`` (docs/deployment.md#retention).

    :ivar older_than: seconds; only events whose own time is older are deleted (None:
        every shipped event).
    :ivar every: seconds between two prunes.
    :ivar orphans: also delete the events of accounts that no integration ships.
    :ivar batch: events per delete transaction.
    """

    enabled: bool = False
    older_than: float | None = None
    every: float = 86_400.0
    orphans: bool = False
    batch: int = 5000


#: Where the metrics endpoint listens unless ``[metrics] address`` says otherwise: this
#: host only. Serving other hosts is a choice (``"0.0.0.0"``), never a default.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\Z")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint of ``run`` and ``worker``
    (docs/operations.md#metrics).

    :ivar port: the port of ``run`` (0: any free one, logged); None: ``run`` serves none.
    :ivar worker_port: the port of ``worker`` (its own, so both can run on one host);
        None: workers serve none.
    :ivar address: the address both listen on.
    """

    port: int | None = None
    worker_port: int | None = None
    address: str = DEFAULT_METRICS_ADDRESS


@dataclass
class Config:
    """A loaded config: the top-level settings, the integrations, the data as loaded."""

    file: str
    interval: float = DEFAULT_INTERVAL_S
    #: ``plugins_dir`` as configured (relative to the config file's folder), or None.
    plugins_dir: Path | None = None
    #: The folder of the config file; None for a config that is not a file (the demo's).
    base: Path | None = None
    max_workers: int = 4
    #: ``text`` or ``json``; ``--log-format`` and ``SIEM_LOG_FORMAT`` override it.
    log_format: str = "text"
    store_name: str = "store"
    store_options: Options = field(default_factory=Options)
    log_types: frozenset[str] = frozenset()
    integrations: list[IntegrationConfig] = field(default_factory=list)
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    data: Mapping[str, Any] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    def drop_in_folder(self) -> Path | None:
        """The drop-in plugin folder: ``plugins_dir``, else ``hooks/`` beside the config
        file; None when neither is known (never the working directory by itself)."""
        if self.plugins_dir is not None:
            return self.plugins_dir
        return self.base / "hooks" if self.base is not None else None

    def redacted(self) -> dict[str, Any]:
        """The config as loaded (after ``${ENV}``), with every secret replaced by ``***``."""
        out: dict[str, Any] = redact(self.data)
        return out

    def check_sections(self, known: set[str]) -> None:
        """Reject top-level tables that no loaded plugin declares (typos like ``[smpt]``)."""
        sections = known | {"store", "celery", "integration", "retention", "metrics"}
        for key in sorted(set(self.data) - _TOP_KEYS - known):
            near = closest(key, sections)
            raise ConfigError(
                f"unknown section [{key}]; known sections: {', '.join(sorted(sections))}"
                + (f" (did you mean [{near}]?)" if near else ""),
                file=self.file,
                path=key,
            )

    def integration(self, name: str) -> IntegrationConfig:
        for integ in self.integrations:
            if integ.name == name:
                return integ
        names = ", ".join(i.name for i in self.integrations) or "none"
        raise ConfigError(f"no integration named {name!r} (configured: {names})", file=self.file)


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every value under a secret key (and every :class:`Secret`) as
    ``***``, whatever its type: ``password = 73914528861`` is a secret too."""
    if isinstance(value, Mapping):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, Secret) or (key and is_secret_key(key)):
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    return value


#: ``scheme://[user]:password@``: group 1 is everything before the password, group 2 it.
_URL_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)([^@/\s]*)@")


def redact_url(text: str) -> str:
    """``text`` with the password of a ``scheme://user:password@host`` URL as ``***``."""
    return _URL_PASSWORD_RE.sub(lambda m: f"{m.group(1)}{REDACTED if m.group(2) else ''}@", text)


def interpolate(
    value: Any, path: str, file: str, environ: Mapping[str, str], secrets: list[str]
) -> Any:
    """Replace ``${NAME}`` in every string; values under secret keys become :class:`Secret`.

    A string that used ``${...}`` becomes a :class:`FromEnv` (an :class:`EnvSecret` under
    a secret key), so the readers of numbers and booleans convert it. The text of every
    secret value, whatever its type, is added to ``secrets`` (for the log redactor).
    """
    if isinstance(value, dict):
        return {
            k: interpolate(v, f"{path}.{k}" if path else k, file, environ, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", file, environ, secrets) for i, v in enumerate(value)]
    leaf = path.rsplit(".", 1)[-1]
    if not isinstance(value, str):
        if is_secret_key(leaf) and not isinstance(value, bool):
            secrets.append(str(value))
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set", file=file, path=path)

    out = _ENV_RE.sub(sub, value)
    from_env = _ENV_RE.search(value) is not None
    if is_secret_key(leaf):
        if out:
            secrets.append(out)
        return EnvSecret(out, value) if from_env else Secret(out)
    if (m := _URL_PASSWORD_RE.match(out)) and m.group(2):
        # postgresql://user:password@host/db, redis://:password@host: the password is a
        # secret wherever the URL is printed or logged.
        secrets.append(m.group(2))
    return FromEnv(out, value) if from_env else out


def parse_duration(
    value: Any, opts: Options, key: str, *, maximum: float | None = MAX_INTERVAL_S
) -> float:
    """Seconds from a number or a string such as ``"5m"``, ``"30s"``, ``"1h"``,
    ``"30d"``: finite, at least 1 second, at most ``maximum``."""
    expected = 'expected a duration such as 300, "30s", "5m", "1h" or "30d"'
    if isinstance(value, bool):
        raise opts.error(key, f"{expected}, got a boolean")
    if isinstance(value, int):
        # Clamped: an integer literal can be beyond any float, and is out of range anyway.
        seconds = float(max(-(10**18), min(value, 10**18)))
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, None: 1}[m.group(2)]
        seconds = float(m.group(1)) * unit
    else:
        raise opts.error(key, f"{expected}, got {opts.got(key, value)}")
    # nan compares false with every bound, and inf would never come round: both rejected.
    if not math.isfinite(seconds):
        raise opts.error(key, f"must be a finite duration, got {opts.got(key, value)}")
    if seconds < 1:
        raise opts.error(key, f"must be at least 1 second, got {opts.got(key, value)}")
    if maximum is not None and seconds > maximum:
        raise opts.error(key, f"must be at most {_seconds(maximum)}, got {opts.got(key, value)}")
    return seconds


def _seconds(limit: float) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if limit >= size and limit % size == 0:
            n = int(limit // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ({limit:.0f} seconds)"
    return f"{limit:g} seconds"


def parse_size(value: Any, opts: Options, key: str, *, maximum: int | None = None) -> int:
    """Bytes from an integer or a string such as ``"64 MiB"``: at least 1 KiB, at most
    ``maximum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    else:
        raise opts.error(
            key, f'expected a size such as 67108864 or "64 MiB", got {opts.got(key, value)}'
        )
    if size < 1024:
        raise opts.error(key, f"must be at least 1 KiB, got {opts.got(key, value)}")
    if maximum is not None and size > maximum:
        raise opts.error(key, f"must be at most {_bytes(maximum)}, got {opts.got(key, value)}")
    return size


def _bytes(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        scale = _SIZE_UNITS[unit.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def default_config_path() -> Path:
    return Path(os.environ.get("SIEM_CONFIG", "siem.toml"))


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path``. Raises :class:`ConfigError` (located) on any problem."""
    file = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", file=file) from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=file) from None
    return config_from_dict(raw, file=file, base=path.parent, environ=environ)


def _section(top: Options, name: str, file: str) -> Options:
    """A top-level table of ours (``[celery]``, ...), read and checked like a component's."""
    return Options(
        top.table(name),
        path=name,
        file=file,
        ignore=(),
        parent=ParentTable("a top-level key", f"[{name}]", frozenset(_TOP_KEYS)),
    )


def _celery(top: Options, file: str) -> CeleryConfig:
    """``[celery]``, validated (its keys are checked like every component's)."""
    if "celery" not in top:
        return CeleryConfig()
    opts = _section(top, "celery", file)
    url = opts.string("broker_url")
    if url is not None:
        scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
        if scheme not in _BROKER_SCHEMES:
            raise opts.error(
                "broker_url",
                f"expected a broker URL such as redis://host:6379/0 or amqp://user@host//, "
                f"got a URL with scheme {scheme or 'none'!r} (known: {', '.join(_BROKER_SCHEMES)})",
            )
    queue = opts.string("queue", DEFAULT_QUEUE)
    if not _QUEUE_RE.match(queue):
        raise opts.error("queue", f"invalid queue name {queue!r}")
    opts.finish()
    return CeleryConfig(url, queue)


#: The longest ``[retention] every``: a prune at least once a month.
MAX_RETENTION_EVERY_S = 30 * 86_400.0


def _retention(top: Options, file: str, store_name: str) -> RetentionConfig:
    """``[retention]``, validated; present means enabled unless ``enabled = false``."""
    if "retention" not in top:
        return RetentionConfig()
    opts = _section(top, "retention", file)
    enabled = opts.boolean("enabled", True)
    older_than = opts.raw("older_than")
    if older_than is not None:
        older_than = parse_duration(older_than, opts, "older_than", maximum=None)
    every = parse_duration(opts.raw("every", 86_400), opts, "every", maximum=MAX_RETENTION_EVERY_S)
    orphans = opts.boolean("orphans", False)
    batch = opts.integer("batch", 5000, min=100, max=100_000)
    opts.finish()
    if enabled and store_name != "store":
        raise opts.error(
            None,
            f"retention deletes from the built-in store; [store] type = {store_name!r} keeps "
            "its events elsewhere (set enabled = false, or remove [retention])",
        )
    return RetentionConfig(enabled, older_than, every, orphans, batch)


def _metrics(top: Options, file: str) -> MetricsConfig:
    """``[metrics]``, validated; present means on unless ``enabled = false``."""
    if "metrics" not in top:
        return MetricsConfig()
    opts = _section(top, "metrics", file)
    enabled = opts.boolean("enabled", True)
    port = opts.integer("port", None, min=0, max=65535)
    worker_port = opts.integer("worker_port", None, min=0, max=65535)
    address = opts.string("address", DEFAULT_METRICS_ADDRESS)
    opts.finish()
    check_listen_address(address, lambda why: opts.error("address", why))
    if port is None and worker_port is None and enabled:
        raise opts.error(
            None,
            "[metrics] needs port (for `run`) or worker_port (for `worker`), e.g. port = 9464",
        )
    if port is not None and port == worker_port and port != 0:
        raise opts.error(
            "worker_port",
            f"`run` and `worker` cannot both listen on port {port} of one host; choose "
            "another worker_port",
        )
    if not enabled:
        return MetricsConfig(address=address)
    return MetricsConfig(port, worker_port, address)


def check_listen_address(address: str, error: Callable[[str], Exception]) -> None:
    """An IP address (``127.0.0.1``, ``0.0.0.0``, ``::1``) or a host name, else ``error``."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not _HOSTNAME_RE.match(address) or len(address) > 253:
            raise error(
                f"expected an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name, got {address!r}"
            ) from None


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    file: str = "siem.toml",
    base: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    secrets: list[str] = []
    data = interpolate(dict(raw), "", file, os.environ if environ is None else environ, secrets)
    top = Options(data, file=file, ignore=())
    cfg = Config(file=file, data=data, secrets=secrets, base=base)

    if "interval" in top:
        cfg.interval = parse_duration(top.raw("interval"), top, "interval")
    plugins_dir = top.string("plugins_dir")
    if plugins_dir is not None:
        p = Path(plugins_dir)
        cfg.plugins_dir = p if p.is_absolute() or base is None else base / p
    cfg.max_workers = top.integer("max_workers", 4, min=1, max=256)
    cfg.log_format = top.string("log_format", "text", choices=LOG_FORMATS)

    store = top.table("store")
    store_opts = Options(store, path="store", file=file, ignore=("type", "log_types"))
    cfg.store_name = store_opts.string("type", "store")
    cfg.log_types = frozenset(store_opts.strings("log_types", []) or [])
    cfg.store_options = Options(
        store,
        path="store",
        file=file,
        ignore=("type", "log_types"),
        parent=ParentTable("a top-level key", "[store]", frozenset(_TOP_KEYS)),
    )

    cfg.celery = _celery(top, file)
    cfg.retention = _retention(top, file, cfg.store_name)
    cfg.metrics = _metrics(top, file)

    # Other top-level tables are shared sections of plugins (``[smtp]``, ``[s3]``, a
    # third party's); they are checked against the loaded plugins in Config.check_sections.
    for key in sorted(set(data) - _TOP_KEYS):
        if not isinstance(data[key], Mapping):
            near = closest(key, _TOP_KEYS)
            raise top.error(
                key,
                f"unknown setting {key!r} (top-level settings: "
                f"{', '.join(sorted(_TOP_KEYS))}, and plugin sections such as [smtp])"
                + (f"; did you mean {near!r}?" if near else ""),
            )

    tables = data.get("integration", [])
    if not isinstance(tables, list):
        raise top.error("integration", "expected [[integration]] tables")
    known_types = cfg.log_types | {t for ts in KNOWN_LOG_TYPES.values() for t in ts}
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        integ = _integration(i, table, data, file, known_types)
        if integ.name in seen:
            raise ConfigError(
                f"duplicate integration name {integ.name!r} (also integration[{seen[integ.name]}])",
                file=file,
                path=f"integration[{i}].name",
            )
        seen[integ.name] = i
        cfg.integrations.append(integ)
    return cfg


def integration_from_table(
    config: Config, table: Mapping[str, Any], *, file: str, index: int = 0
) -> IntegrationConfig:
    """One ``[[integration]]`` table validated exactly as ``siem.toml``'s are (the
    settings API's path): errors are located ``integration[index].key.path``. The table
    is taken as it is: no ``${ENV}`` interpolation (a customer's text must never read the
    operator's environment)."""
    known_types = config.log_types | {t for ts in KNOWN_LOG_TYPES.values() for t in ts}
    return _integration(index, table, config.data, file, known_types)


def _component(
    value: Any, path: str, file: str, what: str, default_type: str | None = None
) -> tuple[str, Mapping[str, Any]]:
    """A component setting: ``"name"`` or a table with ``type`` and options."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping):
        kind = value.get("type", default_type)
        if not isinstance(kind, str):
            raise ConfigError(
                f'missing {what} type (e.g. type = "...")', file=file, path=f"{path}.type"
            )
        return kind, value
    raise ConfigError(f"expected a {what} name or a table", file=file, path=path)


def _integration(
    i: int, table: Any, data: Mapping[str, Any], file: str, known_types: frozenset[str]
) -> IntegrationConfig:
    path = f"integration[{i}]"
    if not isinstance(table, Mapping):
        raise ConfigError("expected a table", file=file, path=path)
    opts = Options(
        table,
        path=path,
        file=file,
        ignore=("format", "sink", "notify"),
        parent=ParentTable("a top-level key", "[[integration]]", frozenset(_TOP_KEYS)),
    )
    name = opts.string("name", required=True)
    if not _NAME_RE.match(name):
        raise opts.error(
            "name", f"invalid integration name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    account = opts.string("account", name)
    try:
        check_account(account)
    except InvalidAccount as exc:
        raise opts.error("account", str(exc)) from None
    enabled = opts.boolean("enabled", True)
    compression = opts.string("compression", "gzip", choices=COMPRESSIONS)
    level = opts.integer("compression_level", None)
    if level is not None and compression in LEVELS:
        low, high = LEVELS[compression]
        if not low <= level <= high:
            raise opts.error(
                "compression_level",
                f"must be {low}-{high} for {compression}, got {level}",
            )
    max_events = opts.integer("max_events", DEFAULT_MAX_EVENTS, min=1, max=MAX_MAX_EVENTS)
    max_bytes = parse_size(
        opts.raw("max_bytes", DEFAULT_MAX_BYTES), opts, "max_bytes", maximum=MAX_MAX_BYTES
    )
    batch_size = opts.integer("batch_size", DEFAULT_BATCH, min=1, max=1_000_000)
    alert_after: float | None = DEFAULT_ALERT_AFTER_S
    if opts.raw("alert_after") == "never":
        opts.string("alert_after")  # read: "never" turns the failure mails off
        alert_after = None
    elif "alert_after" in opts:
        alert_after = parse_duration(opts.raw("alert_after"), opts, "alert_after")
    start_at = parse_start_at(opts)

    if "format" not in table:
        raise opts.error(
            "format", _missing(table, "format", 'setting ("json" or "syslog")', opts.used)
        )
    fmt_name, fmt_table = _component(table["format"], f"{path}.format", file, "format")
    if "sink" not in table:
        raise opts.error(
            "sink", _missing(table, "sink", 'table [integration.sink] (type = "s3" ...)', opts.used)
        )
    sink_name, sink_table = _component(table["sink"], f"{path}.sink", file, "sink")
    if "notify" not in table:
        raise opts.error(
            "notify",
            _missing(
                table,
                "notify",
                "table [integration.notify]",
                opts.used,
                ": select at least one event type that triggers an email",
            ),
        )
    notify_name, notify_table = _component(
        table["notify"], f"{path}.notify", file, "notifier", default_type="email"
    )
    notify_opts = Options(notify_table, path=f"{path}.notify", file=file, ignore=("type", "events"))
    events = notify_opts.strings("events", required=True) or []
    if not events:
        raise notify_opts.error(
            "events", "select at least one event type (log type) that triggers a notification"
        )
    for j, ev in enumerate(events):
        if ev not in known_types:
            raise ConfigError(
                f"unknown log type {ev!r}; known: {', '.join(sorted(known_types))} "
                "(add custom ones with [store] log_types)",
                file=file,
                path=f"{path}.notify.events[{j}]",
            )
    opts.finish()
    return IntegrationConfig(
        index=i,
        name=name,
        account=account,
        enabled=enabled,
        format_name=fmt_name,
        format_table=fmt_table,
        compression=compression,
        compression_level=level,
        max_events=max_events,
        max_bytes=max_bytes,
        batch_size=batch_size,
        alert_after=alert_after,
        sink_name=sink_name,
        sink_table=sink_table,
        notify_events=frozenset(events),
        notifier_name=notify_name,
        notify_table=notify_table,
        keys=opts.used,
        start_at=start_at,
    )


def parse_start_at(opts: Options) -> str | None:
    """``start_at``: ``"beginning"`` (the default: the whole stored history), ``"now"``,
    or a date / date-time with a zone (events whose own time is from then on)."""
    value = opts.raw("start_at", "beginning")
    if value in ("beginning", "now"):
        return None if value == "beginning" else "now"
    try:
        return point_in_time(value)
    except ValueError as exc:
        raise opts.error("start_at", f'{exc}; or "now", or "beginning" (the default)') from None


def _missing(
    table: Mapping[str, Any], key: str, what: str, known: Iterable[str], detail: str = ""
) -> str:
    """The "missing required ..." message for a component key of ``[[integration]]``,
    naming the key of the table that is probably a misspelling of it
    (``[integration.notfiy]``); ``known``: the keys already read, not misspellings;
    ``detail``: said when there is no such key."""
    message = f"missing required {what}"
    near = closest(key, set(table) - set(known))
    if near is None:
        return message + detail
    if isinstance(table[near], Mapping):
        return f"{message}; found [integration.{near}]: did you mean [integration.{key}]?"
    return f"{message}; found {near!r}: did you mean {key!r}?"
