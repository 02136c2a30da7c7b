"""Account names and object keys.

The object key is a pure function of the intent, so a replayed intent writes the same
object. Keys sort in time order: the date path and an ISO basic timestamp come first,
then the zero-padded id range (QRadar's S3 rule: the full path increases alphabetically).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

#: Account names are identifiers: they become a path segment of every object key, so
#: nothing that could climb out of the prefix (``..``, ``/``, ``\``, controls) is allowed.
ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
ID_WIDTH = 20
CREATED_FORMAT = "%Y-%m-%dT%H%M%SZ"


class InvalidAccount(ValueError):
    pass


def check_account(account: str) -> str:
    """Return ``account`` if it is a safe identifier, else raise :class:`InvalidAccount`."""
    if not isinstance(account, str) or not ACCOUNT_RE.match(account) or ".." in account:
        raise InvalidAccount(
            f"invalid account name {account!r}: use 1-128 letters, digits and . _ @ + - "
            "(starting with a letter or digit, no '..')"
        )
    return account


def created_now(now: datetime | None = None) -> str:
    """The intent's creation time, UTC, in the key's form ``YYYY-MM-DDTHHMMSSZ``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(CREATED_FORMAT)


def object_key(account: str, created: str, first_id: int, last_id: int, extension: str) -> str:
    """``{account}/{YYYY}/{MM}/{DD}/{created}_{first:020d}-{last:020d}.{extension}``.

    The sink adds its own prefix; ``extension`` includes any compression suffix
    (``json.gz``).
    """
    check_account(account)
    day = datetime.strptime(created, CREATED_FORMAT)
    return (
        f"{account}/{day:%Y/%m/%d}/{created}_"
        f"{first_id:0{ID_WIDTH}d}-{last_id:0{ID_WIDTH}d}.{extension}"
    )


_KEY_SHAPE = re.compile(
    r"(?P<account>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    rf"(?P<created>(?P=y)-(?P=m)-(?P=d)T\d{{6}}Z)_(?P<first>\d{{{ID_WIDTH}}})-"
    rf"(?P<last>\d{{{ID_WIDTH}}})\.(?P<extension>[^/]+)\Z"
)


@dataclass(frozen=True, slots=True)
class KeyParts:
    """What a key :func:`object_key` made says: the intent it was made from."""

    account: str
    created: str
    first_id: int
    last_id: int
    extension: str


def parse_key(key: str) -> KeyParts | None:
    """The parts of a key :func:`object_key` could have made, else ``None``."""
    found = _KEY_SHAPE.match(key)
    if found is None or not ACCOUNT_RE.match(found["account"]) or ".." in found["account"]:
        return None
    return KeyParts(
        found["account"],
        found["created"],
        int(found["first"]),
        int(found["last"]),
        found["extension"],
    )


def parse_object_key(key: str) -> tuple[str, str] | None:
    """``(account, extension)`` of a key :func:`object_key` could have made, else ``None``.

    Lets a sink recognise its own objects among others under a shared prefix.
    """
    parts = parse_key(key)
    return None if parts is None else (parts.account, parts.extension)
