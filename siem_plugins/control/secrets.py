"""Customers' secrets at rest: encrypted with Fernet, keys rotated with MultiFernet.

The control plane stores each integration's S3 credentials in its database, so a copy of
that database (a backup, a replica, a leaked dump) must not be a copy of every customer's
bucket keys. Secrets are encrypted before they are stored, with a key the database never
sees.

Why Fernet (``cryptography.fernet``): it is authenticated encryption in one well-kept,
widely reviewed library call, not crypto assembled here. A token is AES-128-CBC with a
random IV, then HMAC-SHA256 over the version, timestamp, IV and ciphertext, so a value
altered in the database fails to decrypt instead of decrypting to something else. The
token carries its creation time (in clear: it tells when a secret was set, nothing more),
and :class:`~cryptography.fernet.MultiFernet` gives key rotation: the first key encrypts,
every key decrypts, and ``rotate`` re-encrypts an old value with the newest key.

A stored value is ``fernet:<token>``: the prefix says how it was sealed, so a plaintext
value that slipped in (or a later scheme) is recognised rather than fed to Fernet.

The keys come from the environment (:meth:`SecretBox.from_environment`), exactly one of:

``SIEM_SECRET_KEYS``
    the keys, newest first, separated by commas and/or whitespace (newlines included).
``SIEM_SECRET_KEYS_FILE``
    a file with one key per line, newest first; ``#`` starts a comment, blank lines are
    ignored. It must not be readable or writable by group or others (``chmod 600``):
    a key that others can read is no key, and one they can write lets them choose the
    key new secrets are sealed with. (Docker secrets are mounted 0444 and Kubernetes
    secret volumes 0644 unless the mount sets a mode: set 0400.) Prefer the file in
    production: a process's environment shows up in ``/proc``, ``docker inspect`` and
    crash reports.

To rotate: put a new key first (``siem-plugins secrets new-key``), keep the old ones
after it, re-encrypt the stored values (:meth:`SecretBox.rotate`, counting what
:meth:`SecretBox.is_current` says was already current), then drop the old keys.

Nothing here prints or logs; no message, ``repr`` or exception of this module contains
key material or plaintext. Where a library exception could hold either (a
``UnicodeError`` keeps the whole text it failed on), the error is raised after its
handler, so that nothing is chained to it for a traceback or error reporter to show.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import stat
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: The variable holding the keys themselves (newest first).
ENV_KEYS = "SIEM_SECRET_KEYS"
#: The variable naming a file of keys (one a line, newest first).
ENV_KEYS_FILE = "SIEM_SECRET_KEYS_FILE"
#: What every stored value starts with.
PREFIX = "fernet:"

#: A Fernet key as :meth:`Fernet.generate_key` writes it: 32 bytes, url-safe base64, padded.
#: Checked before Fernet sees the key, because ``base64.urlsafe_b64decode`` skips characters
#: outside its alphabet and would accept a key with stray characters in it.
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")
_SEPARATORS = re.compile(r"[,\s]+")
#: A key file holds a few keys; anything much larger is the wrong file.
_MAX_KEY_FILE = 64 * 1024
_NEW_KEY_HINT = "make one with `siem-plugins secrets new-key`"


class SecretKeyError(Exception):
    """A problem with the secret keys or a stored secret, in one line.

    The message names the variable, file or key position; it never contains a key or a
    secret.
    """


def generate_key() -> str:
    """A new random Fernet key (32 bytes from the OS, url-safe base64), as text."""
    return Fernet.generate_key().decode("ascii")


def last4(value: str) -> str:
    """A recognisable, harmless form of an identifier for listings: ``AKIA…WXYZ``.

    For an access key id (20 characters), which identifies the credentials without
    granting anything. A value shorter than 12 characters would be mostly shown, so it is
    only ``set``; an empty one is ``not set``. Not for secrets themselves.
    """
    if not value:
        return "not set"
    if len(value) < 12:
        return "set"
    return f"{value[:4]}…{value[-4:]}"


class SecretBox:
    """Encrypts and decrypts stored secrets with a list of Fernet keys, newest first.

    The first key encrypts; every key decrypts, so values sealed with an older key stay
    readable until :meth:`rotate` has re-encrypted them and the old key is removed.

    :param keys: the keys as text (:func:`generate_key`), newest first.
    :param source: where they came from, for error messages (``key 2 of <source> ...``).
    :raises SecretKeyError: no key, a malformed key (named by position, never shown) or
        the same key twice.
    """

    __slots__ = ("_fernets", "_multi", "_newest")

    def __init__(self, keys: Sequence[str], *, source: str = "the key list") -> None:
        if isinstance(keys, str):  # a str is a Sequence[str]: one character per "key"
            raise TypeError("SecretBox takes a sequence of keys, not a single string")
        self._init([(f"key {n} of {source}", key) for n, key in enumerate(keys, 1)], source)

    def _init(self, keys: Sequence[tuple[str, str]], source: str) -> None:
        """Check and load ``(label, key)`` pairs, in order; the label (``key N of ...``)
        names the key in errors."""
        if not keys:
            raise SecretKeyError(f"{source} holds no key; {_NEW_KEY_HINT}")
        fernets: list[Fernet] = []
        seen: dict[bytes, str] = {}
        for n, (label, key) in enumerate(keys, 1):
            raw = _key_bytes(key)
            if raw is None:
                raise SecretKeyError(
                    f"{label} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    f"{_NEW_KEY_HINT}"
                )
            # A repeated key is a slip in a rotation (the old key pasted as the new one):
            # nothing would be re-encrypted and the key count would mislead.
            if raw in seen:
                raise SecretKeyError(f"{label} is the same key as {seen[raw]}; remove one")
            seen[raw] = f"key {n}"
            fernets.append(Fernet(key))
        self._fernets = fernets
        self._multi = MultiFernet(fernets)
        #: The newest key's bytes, only for :meth:`derive` (never shown).
        self._newest = _key_bytes(keys[0][1]) or b""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SecretBox | None:
        """The box the environment configures: ``SIEM_SECRET_KEYS`` or
        ``SIEM_SECRET_KEYS_FILE`` (see the module docstring); ``None`` if neither is set.

        A variable that is set but empty is an error rather than "not set": an unset
        ``${VAR}`` in a deployment file should not quietly turn encryption off.

        :raises SecretKeyError: both set, an empty value, an unreadable or too open key
            file, a malformed or repeated key.
        """
        text = environ.get(ENV_KEYS)
        path = environ.get(ENV_KEYS_FILE)
        if text is not None and path is not None:
            raise SecretKeyError(f"set {ENV_KEYS} or {ENV_KEYS_FILE}, not both")
        box = cls.__new__(cls)
        if text is not None:
            keys = [k for k in _SEPARATORS.split(text) if k]
            box._init([(f"key {n} of {ENV_KEYS}", k) for n, k in enumerate(keys, 1)], ENV_KEYS)
            return box
        if path is not None:
            if not path.strip():
                raise SecretKeyError(f"{ENV_KEYS_FILE} is set but empty; set it to a file path")
            box._init(_read_key_file(path), f"{ENV_KEYS_FILE} {path}")
            return box
        return None

    def __repr__(self) -> str:
        count = len(self._fernets)
        return f"SecretBox({count} key{'' if count == 1 else 's'})"

    @property
    def key_count(self) -> int:
        """How many keys it holds (the newest encrypts, all decrypt)."""
        return len(self._fernets)

    def derive(self, purpose: str) -> str:
        """A key for another purpose (signing session cookies), derived from the newest
        key with HMAC-SHA256: every process with the same keys derives the same one, and
        it reveals nothing about the key."""
        import hashlib
        import hmac

        return hmac.new(self._newest, purpose.encode(), hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str) -> str:
        """``plaintext`` sealed with the newest key, as ``fernet:<token>``."""
        try:
            data = plaintext.encode("utf-8")
        except UnicodeEncodeError as exc:  # it holds the plaintext: raise outside
            position: int | None = exc.start
        else:
            position = None
        if position is not None:
            raise SecretKeyError(
                f"a secret to encrypt is not valid text (a lone surrogate at {position})"
            )
        return PREFIX + self._multi.encrypt(data).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plaintext of a ``fernet:<token>`` value, with whichever key sealed it.

        :raises SecretKeyError: not such a value, or no configured key opens it (the key
            that sealed it was removed, or the value was altered).
        """
        data = self._open(stored, self._multi)
        if data is None:
            raise self._undecryptable()
        text = _utf8(data)
        if text is None:
            raise SecretKeyError("a stored secret decrypted to bytes that are not UTF-8 text")
        return text

    def rotate(self, stored: str) -> str:
        """``stored`` re-encrypted with the newest key, keeping its original timestamp.

        Always produces a new token (a fresh IV), also for a value that was current:
        check :meth:`is_current` first to count and skip those.

        :raises SecretKeyError: as :meth:`decrypt`.
        """
        token = self._token(stored)
        try:
            return PREFIX + self._multi.rotate(token).decode("ascii")
        except InvalidToken:
            raise self._undecryptable() from None

    def is_current(self, stored: str) -> bool:
        """Whether the newest key opens ``stored`` (so :meth:`rotate` has nothing to do).

        ``False`` also for a value no key opens; :meth:`rotate` or :meth:`decrypt` then
        says so.

        :raises SecretKeyError: ``stored`` is not a ``fernet:<token>`` value.
        """
        return self._open(stored, self._fernets[0]) is not None

    def _open(self, stored: str, fernet: Fernet | MultiFernet) -> bytes | None:
        token = self._token(stored)
        try:
            return fernet.decrypt(token)
        except InvalidToken:
            return None

    @staticmethod
    def _token(stored: str) -> bytes:
        """The Fernet token of a stored value. Never shows the value: without the prefix
        it may well be a plaintext secret."""
        if not isinstance(stored, str) or not stored.startswith(PREFIX):
            raise SecretKeyError(f"a stored secret does not start with {PREFIX!r}")
        token = stored[len(PREFIX) :]
        if not token.isascii():
            raise SecretKeyError(f"a stored secret is not a {PREFIX} value (non-ASCII text)")
        return token.encode("ascii")

    def _undecryptable(self) -> SecretKeyError:
        count = len(self._fernets)
        keys = "the configured key" if count == 1 else f"any of the {count} configured keys"
        return SecretKeyError(
            f"a stored secret cannot be decrypted with {keys} "
            f"(was the key that encrypted it removed from {ENV_KEYS}?)"
        )


def _utf8(data: bytes, encoding: str = "utf-8") -> str | None:
    """``data`` decoded (``utf-8-sig`` drops a byte order mark), else ``None``: the
    ``UnicodeDecodeError``, which holds all of ``data``, stays in here."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _key_bytes(key: object) -> bytes | None:
    """The 32 bytes of a well-formed key, else ``None`` (never an error quoting it)."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        return None
    try:
        raw = base64.urlsafe_b64decode(key)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _read_key_file(path: str) -> list[tuple[str, str]]:
    """The keys of a key file as ``(label, key)`` pairs, the label naming key and line.

    The mode is checked on the open file (``fstat``), so the file checked is the file read.
    """
    where = f"{ENV_KEYS_FILE} {path}"
    try:
        # O_NONBLOCK: a FIFO opens at once and is refused below instead of blocking.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SecretKeyError(f"{where} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if os.name == "posix" and mode & 0o077:
                raise SecretKeyError(
                    f"{where} is accessible to group or others (mode {mode:04o}); "
                    f"run chmod 600 {shlex.quote(path)}"
                )
            data = _read_at_most(fd, _MAX_KEY_FILE + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretKeyError(f"{where} cannot be read: {reason}") from None
    if len(data) > _MAX_KEY_FILE:
        raise SecretKeyError(
            f"{where} is larger than {_MAX_KEY_FILE // 1024} KiB; is it the key file?"
        )
    text = _utf8(data, "utf-8-sig")  # an editor's byte order mark is not part of a key
    if text is None:
        raise SecretKeyError(f"{where} is not UTF-8 text")
    keys: list[tuple[str, str]] = []
    for line_number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append((f"key {len(keys) + 1} of {where} (line {line_number})", key))
    return keys


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of an open file, to its end or the limit."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
