"""Typed, located access to a plugin's options.

Every component (source, formatter, sink, notifier) is built from an :class:`Options`:
a view of one TOML table, optionally layered over a shared section (``[smtp]`` under an
integration's ``notify`` table, for example). Reading a value checks its type and
records that it was used; :meth:`Options.finish` rejects keys nobody read, so a typo
is an error that names the file and key path, never a silently ignored setting.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

T = TypeVar("T")

#: Key names whose values are secrets wherever they appear. Matched as parts of the key,
#: in any case, with ``-`` and ``_`` ignored (``apiKey``, ``api-key``, ``x_api_key``).
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "sessionkey",
    "privatekey",
    "credential",
    "authorization",
)

#: Upper bound of every network timeout of the built-in plugins, in seconds: a larger one
#: would hold a sync (and its integration's lock) for longer than anyone waits for it.
MAX_TIMEOUT_S = 600.0

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INT_RE = re.compile(r"\s*[+-]?\d+\s*\Z")
_FLOAT_RE = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*\Z")


def is_secret_key(key: str) -> bool:
    """Whether values under ``key`` are secrets (``password``, ``api_token``, ...)."""
    low = key.lower().replace("_", "").replace("-", "")
    return any(part in low for part in SECRET_KEY_PARTS)


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` is most likely a misspelling of, if one is close enough."""
    found = difflib.get_close_matches(word, sorted(set(candidates) - {word}), n=1, cutoff=0.7)
    return found[0] if found else None


def kind_of(value: Any) -> str:
    """What a TOML value is, for messages that must not show the value itself."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return f"a {type(value).__name__}"


class Secret(str):
    """A string that never shows itself in ``repr``, logs or printed config."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


class FromEnv(str):
    """A string that ``${NAME}`` interpolation produced; ``template`` is the text as written.

    Containers set everything by environment, so the readers of numbers and booleans
    convert such a string (``port = "${SMTP_PORT}"``); a plain TOML string under a numeric
    key stays an error (``port = "587"``: the quotes are a mistake).
    """

    template: str

    def __new__(cls, value: str, template: str = "") -> FromEnv:
        self = super().__new__(cls, value)
        self.template = template
        return self


class EnvSecret(Secret, FromEnv):
    """A secret that came from the environment: still a :class:`Secret` everywhere."""


@dataclass(frozen=True)
class ParentTable:
    """The table that encloses a sub-table: its keys get a "move it above" hint when
    they turn up in the sub-table (TOML puts every key after a header into that table).

    :param what: how to name the parent in a message, e.g. ``"a key of [[integration]]"``.
    :param header: the sub-table's header, e.g. ``"[integration.sink]"``.
    :param keys: the parent's own keys.
    """

    what: str
    header: str
    keys: frozenset[str]

    def hint(self, key: str) -> str | None:
        if key not in self.keys:
            return None
        return (
            f"it is {self.what}, so move it above {self.header}: "
            "in TOML every key after a table header belongs to that table"
        )


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
    :param parent: the enclosing table, for the hint when one of its keys is found here.
    :param integration: the integration the table belongs to, when there is one: a
        component may name itself after it where the name is seen outside (e.g. the S3
        sink's STS session name, which the customer sees in CloudTrail).
    """

    def __init__(
        self,
        table: Mapping[str, Any] | None = None,
        *,
        path: str = "",
        file: str | None = None,
        defaults: Sequence[tuple[str, Mapping[str, Any]]] = (),
        ignore: Sequence[str] = ("type",),
        parent: ParentTable | None = None,
        integration: str | None = None,
    ) -> None:
        self._layers = [_Layer(path, table or {})] + [_Layer(p, t) for p, t in defaults]
        self.integration = integration
        self._file = file
        self._used: set[str] = set(ignore)
        self._parent = parent

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

    def got(self, key: str, value: Any) -> str:
        """``value`` for a "got ..." message: what it is, the value itself unless ``key``
        is a secret, and the ``${NAME}`` it came from."""
        text = kind_of(value)
        if not is_secret_key(key) and not isinstance(value, Secret):
            text += f" {value!r}" if isinstance(value, str) else f" ({value!r})"
        if isinstance(value, FromEnv):
            text += f" from {value.template}"
        return text

    def _get(
        self, key: str, kind: type | tuple[type, ...], what: str, default: Any, required: bool
    ) -> Any:
        found, value = self._lookup(key)
        if not found:
            if required:
                message = f"missing required setting ({what})"
                typo = self._typo(key)
                if typo is not None:
                    message += f"; found {typo!r}: did you mean {key!r}?"
                raise self.error(key, message)
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, FromEnv) and str not in kinds:
            value = self._convert(key, value, kinds, what)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            message = f"expected {what}, got {self.got(key, value)}"
            if isinstance(value, str) and not isinstance(value, FromEnv):
                with contextlib.suppress(ConfigError):
                    self._convert(key, FromEnv(value), kinds, what)
                    message += " (write it without quotes)"
            raise self.error(key, message)
        return value

    def _typo(self, key: str) -> str | None:
        """A key of these tables that nobody asked for and that looks like ``key``."""
        return closest(
            key, (k for layer in self._layers for k in layer.table if k not in self._used)
        )

    def _convert(self, key: str, value: FromEnv, kinds: tuple[type, ...], what: str) -> Any:
        """The number or boolean an environment variable spells; a located error if none."""
        text = str.__str__(value).strip()
        if bool in kinds and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        if int in kinds and _INT_RE.match(text):
            return int(text)
        if float in kinds and _FLOAT_RE.match(text):
            return float(text)
        if bool in kinds or int in kinds or float in kinds:
            hint = " (from the environment: true/false, yes/no or 1/0)" if bool in kinds else ""
            raise self.error(key, f"expected {what}, got {self.got(key, value)}{hint}")
        return value

    # Each reader is overloaded so that a plugin's factory sees the type it asked for: a
    # value with a default or ``required=True`` is never ``None``.

    @overload
    def string(
        self,
        key: str,
        default: str,
        *,
        required: bool = ...,
        choices: Sequence[str] | None = ...,
    ) -> str: ...
    @overload
    def string(
        self,
        key: str,
        default: None = ...,
        *,
        required: Literal[True],
        choices: Sequence[str] | None = ...,
    ) -> str: ...
    @overload
    def string(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        choices: Sequence[str] | None = ...,
    ) -> str | None: ...
    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: Sequence[str] | None = None,
    ) -> str | None:
        """A string setting; ``choices`` restricts it (the error lists them). Under a
        secret key (``password``, ``token``, ...) it is a :class:`Secret`."""
        value: str | None = self._get(key, str, "a string", default, required)
        if choices is not None and value is not None and value not in choices:
            shown = "" if is_secret_key(key) else f" {value!r}"
            raise self.error(key, f"unknown value{shown}; choose one of: {', '.join(choices)}")
        if value is not None and is_secret_key(key):
            return Secret(value)
        return value

    @overload
    def secret(self, key: str, *, required: Literal[True]) -> Secret: ...
    @overload
    def secret(self, key: str, *, required: bool = ...) -> Secret | None: ...
    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret string (redacted in logs and printed config)."""
        value: str | None = self._get(key, str, "a string", None, required)
        return Secret(value) if value is not None else None

    @overload
    def integer(
        self,
        key: str,
        default: int,
        *,
        required: bool = ...,
        min: int | None = ...,
        max: int | None = ...,
    ) -> int: ...
    @overload
    def integer(
        self,
        key: str,
        default: None = ...,
        *,
        required: Literal[True],
        min: int | None = ...,
        max: int | None = ...,
    ) -> int: ...
    @overload
    def integer(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        min: int | None = ...,
        max: int | None = ...,
    ) -> int | None: ...
    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        min: int | None = None,
        max: int | None = None,
    ) -> int | None:
        """An integer setting within ``min``..``max``."""
        value: int | None = self._get(key, int, "an integer", default, required)
        if value is not None:
            self._in_range(key, value, min, max)
        return value

    @overload
    def number(
        self,
        key: str,
        default: float,
        *,
        required: bool = ...,
        min: float | None = ...,
        max: float | None = ...,
    ) -> float: ...
    @overload
    def number(
        self,
        key: str,
        default: None = ...,
        *,
        required: Literal[True],
        min: float | None = ...,
        max: float | None = ...,
    ) -> float: ...
    @overload
    def number(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        min: float | None = ...,
        max: float | None = ...,
    ) -> float | None: ...
    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        min: float | None = None,
        max: float | None = None,
    ) -> float | None:
        """A finite number (an integer or a float) within ``min``..``max``, as a float.

        TOML has ``nan`` and ``inf`` literals; neither is ever a valid setting (a ``nan``
        interval or timeout compares false with every bound)."""
        value: int | float | None = self._get(key, (int, float), "a number", default, required)
        if value is None:
            return None
        try:
            number = float(value)
        except OverflowError:  # an integer literal beyond any float
            if max is not None and value > 0:
                raise self.error(key, f"must be at most {max}") from None
            if min is not None and value < 0:
                raise self.error(key, f"must be at least {min}") from None
            raise self.error(key, "is too large a number") from None
        if not math.isfinite(number):
            raise self.error(key, f"must be a finite number, got {self.got(key, value)}")
        self._in_range(key, number, min, max)
        return number

    def _in_range(self, key: str, value: float, low: float | None, high: float | None) -> None:
        shown = "" if is_secret_key(key) else f", got {value}"
        if low is not None and value < low:
            raise self.error(key, f"must be at least {low}{shown}")
        if high is not None and value > high:
            raise self.error(key, f"must be at most {high}{shown}")

    @overload
    def boolean(self, key: str, default: bool, *, required: bool = ...) -> bool: ...
    @overload
    def boolean(self, key: str, default: None = ..., *, required: Literal[True]) -> bool: ...
    @overload
    def boolean(self, key: str, default: None = ..., *, required: bool = ...) -> bool | None: ...
    def boolean(
        self, key: str, default: bool | None = None, *, required: bool = False
    ) -> bool | None:
        """``true`` or ``false`` (from the environment also yes/no, 1/0, any case)."""
        value: bool | None = self._get(key, bool, "true or false", default, required)
        return value

    @overload
    def strings(self, key: str, default: Sequence[str], *, required: bool = ...) -> list[str]: ...
    @overload
    def strings(self, key: str, default: None = ..., *, required: Literal[True]) -> list[str]: ...
    @overload
    def strings(
        self, key: str, default: None = ..., *, required: bool = ...
    ) -> list[str] | None: ...
    def strings(
        self, key: str, default: Sequence[str] | None = None, *, required: bool = False
    ) -> list[str] | None:
        """A list of strings (a single string is a list of one)."""
        value = self._get(key, (list, str), "a list of strings", default, required)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(key, f"item {i}: expected a string, got {self.got(key, item)}")
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

        The message suggests the known key a typo is close to, or, for a key of the
        enclosing table written below this table's header, moving it up. Shared layers
        are not checked here: other components read them too.
        """
        extra = sorted(self.unused())
        if not extra:
            return
        key = extra[0]
        message = f"unknown setting {key!r}"
        parent = self._parent
        if parent is not None and (hint := parent.hint(key)) is not None:
            message += f": {hint}"
        elif (near := closest(key, self._used | (parent.keys if parent else set()))) is not None:
            moved = parent.hint(near) if parent is not None and near not in self._used else None
            message += f" (did you mean {near!r}?{f' {moved}' if moved else ''})"
        if len(extra) > 1:
            message += f" (also unknown: {', '.join(extra[1:])})"
        raise self.error(key, message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
