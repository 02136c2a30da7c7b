"""Typed, located access to a plugin's options.

Every component (source, formatter, sink, notifier) is built from an :class:`Options`:
a view of one TOML table, optionally layered over a shared section (``[smtp]`` under an
integration's ``notify`` table, for example). Reading a value checks its type and
records that it was used; :meth:`Options.finish` rejects keys nobody read, so a typo
is an error that names the file and key path, never a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Key names whose values are secrets wherever they appear.
SECRET_KEY_PARTS = ("password", "secret", "token", "api_key", "session_key")


def is_secret_key(key: str) -> bool:
    low = key.lower()
    return any(part in low for part in SECRET_KEY_PARTS)


class Secret(str):
    """A string that never shows itself in ``repr``, logs or printed config."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


class ConfigError(Exception):
    """A configuration problem, located as ``file: key.path: message``."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(self.located())

    def located(self) -> str:
        where = ": ".join(p for p in (self.file, self.path) if p)
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class _Layer:
    path: str
    table: Mapping[str, Any]


class Options:
    """A typed view of one config table, optionally layered over shared defaults.

    :param table: the table itself.
    :param path: its key path, e.g. ``integration[0].sink`` (for error messages).
    :param file: the config file it came from.
    :param defaults: further ``(path, table)`` layers consulted when a key is absent.
    :param ignore: keys the caller handles itself (e.g. ``type``).
    """

    def __init__(
        self,
        table: Mapping[str, Any] | None = None,
        *,
        path: str = "",
        file: str | None = None,
        defaults: Sequence[tuple[str, Mapping[str, Any]]] = (),
        ignore: Sequence[str] = ("type",),
    ) -> None:
        self._layers = [_Layer(path, table or {})] + [_Layer(p, t) for p, t in defaults]
        self._file = file
        self._used: set[str] = set(ignore)

    @property
    def path(self) -> str:
        return self._layers[0].path

    @property
    def file(self) -> str | None:
        return self._file

    def error(self, key: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` located at ``key`` (in whichever layer holds it)."""
        return ConfigError(message, file=self._file, path=self._where(key))

    def _where(self, key: str | None) -> str:
        if key is None:
            return self.path
        for layer in self._layers:
            if key in layer.table:
                return _join(layer.path, key)
        return _join(self.path, key)

    def _lookup(self, key: str) -> tuple[bool, Any]:
        self._used.add(key)
        for layer in self._layers:
            if key in layer.table:
                return True, layer.table[key]
        return False, None

    def __contains__(self, key: str) -> bool:
        return any(key in layer.table for layer in self._layers)

    def _get(
        self, key: str, kind: type | tuple[type, ...], what: str, default: Any, required: bool
    ) -> Any:
        found, value = self._lookup(key)
        if not found:
            if required:
                raise self.error(key, f"missing required setting ({what})")
            return default
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: Sequence[str] | None = None,
    ) -> Any:
        """A string setting; ``choices`` restricts it (the error lists them)."""
        value = self._get(key, str, "a string", default, required)
        if choices is not None and value is not None and value not in choices:
            raise self.error(key, f"unknown value {value!r}; choose one of: {', '.join(choices)}")
        if value is not None and is_secret_key(key):
            return Secret(value)
        return value

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret string (redacted in logs and printed config)."""
        value = self._get(key, str, "a string", None, required)
        return Secret(value) if value is not None else None

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        min: int | None = None,
        max: int | None = None,
    ) -> Any:
        value = self._get(key, int, "an integer", default, required)
        if value is not None:
            if min is not None and value < min:
                raise self.error(key, f"must be at least {min}, got {value}")
            if max is not None and value > max:
                raise self.error(key, f"must be at most {max}, got {value}")
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        min: float | None = None,
    ) -> Any:
        value = self._get(key, (int, float), "a number", default, required)
        if value is not None and min is not None and value < min:
            raise self.error(key, f"must be at least {min}, got {value}")
        return None if value is None else float(value)

    def boolean(self, key: str, default: bool | None = None, *, required: bool = False) -> Any:
        return self._get(key, bool, "true or false", default, required)

    def strings(
        self, key: str, default: Sequence[str] | None = None, *, required: bool = False
    ) -> list[str] | None:
        value = self._get(key, (list, str), "a list of strings", default, required)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(key, f"item {i}: expected a string, got {item!r}")
        return list(value)

    def table(self, key: str) -> Mapping[str, Any]:
        value = self._get(key, dict, "a table", {}, False)
        return value  # type: ignore[no-any-return]

    def raw(self, key: str, default: Any = None) -> Any:
        found, value = self._lookup(key)
        return value if found else default

    @property
    def used(self) -> frozenset[str]:
        """The keys some reader asked for (in any layer)."""
        return frozenset(self._used)

    def unused(self) -> Iterator[str]:
        yield from (k for k in self._layers[0].table if k not in self._used)

    def finish(self) -> None:
        """Reject keys of this table that no reader asked for (typos, stale settings).

        Shared layers are not checked here: other components read them too.
        """
        extra = sorted(self.unused())
        if extra:
            raise self.error(
                extra[0],
                f"unknown setting {extra[0]!r}"
                + (f" (also unknown: {', '.join(extra[1:])})" if len(extra) > 1 else ""),
            )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
