"""API tokens for the control plane, stored only as a digest.

A token reads ``siemp_<id>_<secret>``:

- ``siemp_`` marks it as ours, so a token pasted into a ticket or committed to a
  repository is recognisable (secret scanners match on such prefixes);
- ``<id>`` is 12 lowercase hex characters: public, the key of the token's row and what
  listings show, so a request finds its one row without comparing against every digest;
- ``<secret>`` is :func:`secrets.token_urlsafe` of 32 random bytes (43 characters of
  ``A-Z a-z 0-9 _ -``). It may itself contain ``_``: split a token with :func:`parse`,
  never with ``text.split("_")``.

Only :func:`digest` of the secret is stored; the full text is shown once, when the token
is made (:func:`new_token`), and cannot be recovered afterwards. This module does no
storage and no output: the caller owns the table and what the user sees.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

#: What every token starts with.
PREFIX = "siemp_"
#: Characters of the public id (hex of 6 random bytes).
ID_LENGTH = 12
#: Characters of the secret: ``token_urlsafe(32)`` is 32 bytes in unpadded base64.
SECRET_LENGTH = 43
#: The length of every token; :func:`parse` rejects any other before looking further.
TOKEN_LENGTH = len(PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH

_TOKEN_RE = re.compile(
    rf"{PREFIX}(?P<id>[0-9a-f]{{{ID_LENGTH}}})_(?P<secret>[A-Za-z0-9_-]{{{SECRET_LENGTH}}})"
)


@dataclass(frozen=True)
class NewToken:
    """A token just made: store ``id`` and ``digest``, show ``text`` once.

    ``text`` is left out of the ``repr`` so that logging the object does not log the
    token.
    """

    id: str
    text: str = field(repr=False)
    digest: str


def new_token() -> NewToken:
    """A new random token, its public id and the digest to store."""
    token_id = secrets.token_hex(ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    return NewToken(id=token_id, text=f"{PREFIX}{token_id}_{secret}", digest=digest(secret))


def digest(secret_part: str) -> str:
    """The hex SHA-256 of a token's secret part: what is stored instead of the token.

    A fast hash is the right tool here, and a slow password KDF (bcrypt, scrypt, Argon2)
    would only cost CPU on every API request: those exist to slow down guessing of
    low-entropy, human-chosen passwords. The secret is 256 random bits; no number of
    guesses per second makes finding it from its digest feasible. A stolen table of
    digests therefore yields no usable token. Store only this, never the secret.
    """
    return hashlib.sha256(secret_part.encode("utf-8", "surrogatepass")).hexdigest()


def parse(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else ``None``.

    Any input is safe: the length is checked first (a 10 MB header costs one ``len``),
    then the exact shape, ASCII only, no surrounding whitespace (strip the header value
    first). Never raises.
    """
    if not isinstance(text, str) or len(text) != TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(text)
    if match is None:
        return None
    return match["id"], match["secret"]


def verify(stored_digest: str, secret_part: str) -> bool:
    """Whether ``secret_part`` is the secret whose :func:`digest` is ``stored_digest``.

    Compared in constant time (:func:`hmac.compare_digest`), as bytes, so that no input
    (non-ASCII text included) raises: a request with a bad token is refused, not an error.
    """
    if not isinstance(stored_digest, str) or not isinstance(secret_part, str):
        return False
    expected = stored_digest.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected, digest(secret_part).encode("ascii"))
