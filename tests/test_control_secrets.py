"""The control plane's secrets at rest (Fernet, key rotation, key loading) and API tokens
(shape, hostile input, hashed storage). Real cryptography, no mocks.

Every error about keys or stored secrets is checked for what it must not contain: a key,
a plaintext, or a chained exception that holds one.
"""

from __future__ import annotations

import base64
import os
import re
import traceback
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from siem_plugins.control import tokens
from siem_plugins.control.secrets import (
    ENV_KEYS,
    ENV_KEYS_FILE,
    PREFIX,
    SecretBox,
    SecretKeyError,
    generate_key,
    last4,
)

PLAINTEXT = "aWsSeCrEt/do-not-show+0123456789abcdefXYZ"


def shown(exc: BaseException) -> str:
    """Everything a traceback or an error reporter would show of ``exc``: its message,
    repr, and every exception chained to it, with their attributes."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(repr(vars(seen)) if hasattr(seen, "__dict__") else "")
        parts.append(repr(getattr(seen, "object", "")))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def assert_hides(exc: BaseException, *secrets: str) -> None:
    text = shown(exc)
    for secret in secrets:
        assert secret not in text
    assert "\n" not in str(exc), "messages are one line"


def token_of(stored: str) -> str:
    assert stored.startswith(PREFIX)
    return stored[len(PREFIX) :]


# --- SecretBox: encryption, rotation --------------------------------------------------


@pytest.mark.parametrize(
    "plaintext", [PLAINTEXT, "", "Zoë Stokes 🔑", "\ufeffbom first", "x" * 5000]
)
def test_round_trip(plaintext: str) -> None:
    box = SecretBox([generate_key()])
    stored = box.encrypt(plaintext)
    assert stored.startswith("fernet:")
    assert stored.isascii()
    if plaintext:
        assert plaintext not in stored
    assert box.decrypt(stored) == plaintext
    assert box.encrypt(plaintext) != stored, "a fresh IV every time"


def test_a_box_with_another_key_cannot_decrypt() -> None:
    stored = SecretBox([generate_key()]).encrypt(PLAINTEXT)
    with pytest.raises(SecretKeyError):
        SecretBox([generate_key()]).decrypt(stored)


def test_old_key_decrypts_and_rotate_moves_to_the_newest() -> None:
    old, new = generate_key(), generate_key()
    stored_old = SecretBox([old]).encrypt(PLAINTEXT)
    box = SecretBox([new, old])

    assert box.decrypt(stored_old) == PLAINTEXT
    assert not box.is_current(stored_old)

    rotated = box.rotate(stored_old)
    assert rotated.startswith(PREFIX) and rotated != stored_old
    assert box.is_current(rotated)
    assert SecretBox([new]).decrypt(rotated) == PLAINTEXT
    with pytest.raises(SecretKeyError):
        SecretBox([old]).decrypt(rotated)
    # MultiFernet.rotate keeps the time the secret was first stored
    assert Fernet(new).extract_timestamp(token_of(rotated)) == Fernet(old).extract_timestamp(
        token_of(stored_old)
    )


def test_the_first_key_encrypts() -> None:
    first, second = generate_key(), generate_key()
    stored = SecretBox([first, second]).encrypt(PLAINTEXT)
    assert SecretBox([first]).decrypt(stored) == PLAINTEXT
    assert SecretBox([first, second]).is_current(stored)
    with pytest.raises(SecretKeyError):
        SecretBox([second]).decrypt(stored)


def test_removed_key_error_shows_no_key_and_no_plaintext() -> None:
    old, new, other = generate_key(), generate_key(), generate_key()
    stored = SecretBox([old]).encrypt(PLAINTEXT)
    box = SecretBox([new, other])
    assert not box.is_current(stored)
    for attempt in (box.decrypt, box.rotate):
        with pytest.raises(SecretKeyError) as caught:
            attempt(stored)
        message = str(caught.value)
        assert "any of the 2 configured keys" in message
        assert ENV_KEYS in message
        assert_hides(caught.value, old, new, other, PLAINTEXT)


def test_tampered_ciphertext_is_refused() -> None:
    box = SecretBox([generate_key()])
    stored = box.encrypt(PLAINTEXT)
    raw = bytearray(base64.urlsafe_b64decode(token_of(stored)))
    raw[40] ^= 0x01  # one bit of the ciphertext
    tampered = PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode()
    assert tampered != stored
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        box.decrypt(tampered)
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        box.rotate(tampered)
    assert not box.is_current(tampered)


@pytest.mark.parametrize(
    "stored",
    [
        PLAINTEXT,  # a plaintext value that slipped into the table: never echoed
        "Fernet:" + PLAINTEXT,
        PREFIX + "not-a-token",
        PREFIX,
        PREFIX + "gAAAAé" + PLAINTEXT,
        PREFIX + "\0" * 100,
    ],
)
def test_malformed_stored_values_are_refused_without_showing_them(stored: str) -> None:
    box = SecretBox([generate_key()])
    for attempt in (box.decrypt, box.rotate, box.is_current):
        try:
            result = attempt(stored)
        except SecretKeyError as exc:
            assert_hides(exc, PLAINTEXT)
        else:  # is_current may say "not current" for a well-prefixed, undecryptable value
            assert attempt == box.is_current and result is False
            with pytest.raises(SecretKeyError):
                box.decrypt(stored)


def test_non_utf8_plaintext_error_chains_nothing() -> None:
    key = generate_key()
    secret = b"\xff" + PLAINTEXT.encode()
    stored = PREFIX + Fernet(key).encrypt(secret).decode()
    with pytest.raises(SecretKeyError, match="not UTF-8") as caught:
        SecretBox([key]).decrypt(stored)
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert_hides(caught.value, PLAINTEXT)


def test_unencodable_plaintext_error_chains_nothing() -> None:
    box = SecretBox([generate_key()])
    with pytest.raises(SecretKeyError, match="surrogate at 41") as caught:
        box.encrypt(PLAINTEXT + "\ud800")
    assert caught.value.__context__ is None
    assert_hides(caught.value, PLAINTEXT)


def test_repr_hides_keys() -> None:
    keys = [generate_key(), generate_key()]
    box = SecretBox(keys)
    assert repr(box) == "SecretBox(2 keys)" == str(box)
    assert repr(SecretBox(keys[:1])) == "SecretBox(1 key)"
    assert box.key_count == 2
    for key in keys:
        assert key not in repr(box)
        assert key[:20] not in f"{box!r} {box} {[box]}"


# --- SecretBox: which keys it accepts -------------------------------------------------


def test_generate_key_makes_distinct_fernet_keys() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", key)
        assert len(base64.urlsafe_b64decode(key)) == 32


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-key",
        "",
        Fernet.generate_key().decode()[:-1],  # padding dropped
        Fernet.generate_key().decode() + "A",
        base64.urlsafe_b64encode(b"k" * 31).decode(),  # 31 bytes
        base64.urlsafe_b64encode(b"k" * 33).decode(),
        "!" + Fernet.generate_key().decode()[1:],  # urlsafe_b64decode would skip the "!"
        base64.b64encode(b"\xfb" * 32).decode(),  # standard alphabet: + and /
    ],
)
def test_malformed_key_is_named_by_position_not_shown(bad: str) -> None:
    good = generate_key()
    with pytest.raises(SecretKeyError) as caught:
        SecretBox([good, bad])
    message = str(caught.value)
    assert message.startswith("key 2 of the key list is not a Fernet key")
    assert "siem-plugins secrets new-key" in message
    assert_hides(caught.value, good, *([bad] if bad else []))


def test_a_box_needs_keys_as_a_sequence() -> None:
    with pytest.raises(SecretKeyError, match="holds no key"):
        SecretBox([])
    with pytest.raises(TypeError, match="not a single string"):
        SecretBox(generate_key())


def test_duplicate_keys_are_refused() -> None:
    a, b = generate_key(), generate_key()
    with pytest.raises(SecretKeyError, match="key 3 of the key list is the same key as key 1"):
        SecretBox([a, b, a])


# --- SecretBox.from_environment ---------------------------------------------------------


def test_no_variable_no_box() -> None:
    assert SecretBox.from_environment({}) is None
    assert SecretBox.from_environment({"SIEM_SECRET": generate_key()}) is None


@pytest.mark.parametrize("separator", [",", ", ", " ", "\n", "\t", " ,\n ", ",,"], ids=repr)
def test_env_keys_split_on_commas_and_whitespace(separator: str) -> None:
    keys = [generate_key(), generate_key(), generate_key()]
    box = SecretBox.from_environment({ENV_KEYS: "\n " + separator.join(keys) + " \n"})
    assert box is not None and box.key_count == 3
    stored = box.encrypt(PLAINTEXT)
    assert SecretBox(keys[:1]).decrypt(stored) == PLAINTEXT, "the first key is the newest"
    for key in keys:
        assert box.decrypt(SecretBox([key]).encrypt(PLAINTEXT)) == PLAINTEXT


def test_env_malformed_key_names_position_two_and_hides_it() -> None:
    good, bad = generate_key(), "zz" + generate_key()[2:-1] + "!"
    with pytest.raises(SecretKeyError) as caught:
        SecretBox.from_environment({ENV_KEYS: f"{good},{bad}, {generate_key()}"})
    assert str(caught.value) == (
        "key 2 of SIEM_SECRET_KEYS is not a Fernet key (32 url-safe base64-encoded bytes); "
        "make one with `siem-plugins secrets new-key`"
    )
    assert_hides(caught.value, good, bad, bad[2:20])


def test_env_duplicate_keys_are_refused() -> None:
    key = generate_key()
    with pytest.raises(SecretKeyError, match="key 2 of SIEM_SECRET_KEYS is the same key as key 1"):
        SecretBox.from_environment({ENV_KEYS: f"{key}\n{key}"})


@pytest.mark.parametrize("value", ["", "  ", " , \n"])
def test_env_set_but_empty_is_an_error(value: str) -> None:
    with pytest.raises(SecretKeyError, match="SIEM_SECRET_KEYS holds no key"):
        SecretBox.from_environment({ENV_KEYS: value})


def test_both_variables_set_is_an_error(tmp_path: Path) -> None:
    key = generate_key()
    path = write_key_file(tmp_path, f"{key}\n", 0o600)
    with pytest.raises(SecretKeyError, match="not both") as caught:
        SecretBox.from_environment({ENV_KEYS: key, ENV_KEYS_FILE: str(path)})
    assert_hides(caught.value, key)


def write_key_file(tmp_path: Path, text: str, mode: int, name: str = "keys") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    text = f"# rotated 2026-11-29\n\n  {new}  # current\n\n# the previous one\n{old}\n   \n"
    path = write_key_file(tmp_path, text, 0o600)
    box = SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert box is not None and box.key_count == 2
    assert SecretBox([new]).decrypt(box.encrypt(PLAINTEXT)) == PLAINTEXT
    assert box.decrypt(SecretBox([old]).encrypt(PLAINTEXT)) == PLAINTEXT


def test_key_file_with_crlf_and_byte_order_mark(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbf" + key.encode() + b"\r\n")
    path.chmod(0o600)
    box = SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert box is not None
    assert SecretBox([key]).decrypt(box.encrypt(PLAINTEXT)) == PLAINTEXT


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = generate_key()
    path = write_key_file(tmp_path, key + "\n", mode)
    with pytest.raises(SecretKeyError) as caught:
        SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    message = str(caught.value)
    assert str(path) in message
    assert f"mode {mode:04o}" in message
    assert "chmod 600" in message
    assert_hides(caught.value, key)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_for_the_owner_only_is_accepted(tmp_path: Path, mode: int) -> None:
    key = generate_key()
    path = write_key_file(tmp_path, key + "\n", mode)
    box = SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert box is not None and box.key_count == 1


def test_key_file_malformed_key_names_position_and_line(tmp_path: Path) -> None:
    good, bad = generate_key(), "this-is-not-a-key-but-a-secret-value-1234567"
    path = write_key_file(tmp_path, f"# keys\n{good}\n\n{bad}\n", 0o600)
    with pytest.raises(SecretKeyError) as caught:
        SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert str(caught.value).startswith(
        f"key 2 of SIEM_SECRET_KEYS_FILE {path} (line 4) is not a Fernet key"
    )
    assert_hides(caught.value, good, bad)


def test_key_file_duplicate_keys_are_refused(tmp_path: Path) -> None:
    key = generate_key()
    path = write_key_file(tmp_path, f"{key}\n{generate_key()}\n{key}\n", 0o600)
    with pytest.raises(SecretKeyError, match="is the same key as key 1") as caught:
        SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert "key 3 of" in str(caught.value)
    assert_hides(caught.value, key)


def test_key_file_missing_or_unusable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SecretKeyError, match=f"{ENV_KEYS_FILE} {missing} cannot be read"):
        SecretBox.from_environment({ENV_KEYS_FILE: str(missing)})
    with pytest.raises(SecretKeyError, match="not a regular file"):
        SecretBox.from_environment({ENV_KEYS_FILE: str(tmp_path)})
    with pytest.raises(SecretKeyError, match="is set but empty"):
        SecretBox.from_environment({ENV_KEYS_FILE: " "})
    only_comments = write_key_file(tmp_path, "# no key yet\n\n", 0o600, "empty")
    with pytest.raises(SecretKeyError, match="holds no key"):
        SecretBox.from_environment({ENV_KEYS_FILE: str(only_comments)})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_key_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretKeyError, match="not a regular file"):
        SecretBox.from_environment({ENV_KEYS_FILE: str(fifo)})


def test_key_file_that_is_not_text_chains_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xff\xfe" + PLAINTEXT.encode())
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match="is not UTF-8 text") as caught:
        SecretBox.from_environment({ENV_KEYS_FILE: str(path)})
    assert caught.value.__context__ is None
    assert_hides(caught.value, PLAINTEXT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "AKIA…MPLE"),
        ("123456789012", "1234…9012"),
        ("12345678901", "set"),
        ("", "not set"),
    ],
)
def test_last4(value: str, expected: str) -> None:
    assert last4(value) == expected


# --- API tokens ---------------------------------------------------------------------------

TOKEN_RE = re.compile(r"siemp_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def test_new_token_shape() -> None:
    new = tokens.new_token()
    assert TOKEN_RE.fullmatch(new.text)
    assert len(new.text) == tokens.TOKEN_LENGTH == 62
    assert re.fullmatch(r"[0-9a-f]{12}", new.id)
    assert new.text.startswith(f"siemp_{new.id}_")
    assert tokens.parse(new.text) == (new.id, new.text[len("siemp_") + 13 :])
    assert new.digest == tokens.digest(new.text[len("siemp_") + 13 :])


def parsed_secret(new: tokens.NewToken) -> str:
    parsed = tokens.parse(new.text)
    assert parsed is not None
    return parsed[1]


def test_new_token_repr_hides_the_token() -> None:
    new = tokens.new_token()
    assert new.id in repr(new)
    assert new.text not in repr(new) and parsed_secret(new) not in repr(new)


def test_two_new_tokens_differ() -> None:
    made = [tokens.new_token() for _ in range(50)]
    assert len({t.id for t in made}) == 50
    assert len({parsed_secret(t) for t in made}) == 50
    assert len({t.digest for t in made}) == 50


def test_digest_of_the_secret_is_not_the_secret() -> None:
    new = tokens.new_token()
    secret = parsed_secret(new)
    assert re.fullmatch(r"[0-9a-f]{64}", new.digest)
    assert secret not in new.digest and new.digest != secret
    assert tokens.digest(secret) == new.digest, "deterministic: the stored form"
    assert tokens.digest(secret + "x") != new.digest


def test_verify() -> None:
    new = tokens.new_token()
    secret = parsed_secret(new)
    other = tokens.new_token()
    assert tokens.verify(new.digest, secret)
    assert not tokens.verify(new.digest, parsed_secret(other))
    assert not tokens.verify(other.digest, secret)
    assert not tokens.verify(new.digest, secret[:-1])
    assert not tokens.verify(new.digest, "")
    assert not tokens.verify(new.digest.upper(), secret)
    assert not tokens.verify(new.digest, new.text), "the whole token is not the secret"


@pytest.mark.parametrize(
    ("digest", "secret"),
    [("", ""), ("é" * 64, "ü"), ("\ud800", "\udfff"), ("0" * 64, "x" * 1_000_000), ("\0", "\0")],
)
def test_verify_never_raises(digest: str, secret: str) -> None:
    assert tokens.verify(digest, secret) is False


def test_parse_a_secret_with_underscores_and_dashes() -> None:
    secret = "_" * 10 + "-" * 10 + "a_b-" * 5 + "Z09"
    assert len(secret) == 43
    text = f"siemp_0123456789ab_{secret}"
    assert tokens.parse(text) == ("0123456789ab", secret)
    # a secret may start with "_": the id is a fixed 12 characters, not "up to a _"
    assert tokens.parse("siemp_0123456789ab__" + "A" * 42) == ("0123456789ab", "_" + "A" * 42)
    assert tokens.parse("siemp_0123456789ab___" + "A" * 41) == ("0123456789ab", "__" + "A" * 41)


GOOD = "siemp_0123456789ab_" + "A" * 43
FULLWIDTH_DIGITS = "".join(chr(0xFF10 + i) for i in range(10))
ARABIC_INDIC_DIGITS = "".join(chr(0x0660 + i) for i in range(10))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "siemp_",
        GOOD + "A",
        GOOD[:-1],
        "x" * 10_000_000,
        GOOD[:30] + "\0" + GOOD[31:],
        GOOD + "\0",
        "\0" * 62,
        "siemx" + GOOD[5:],
        "SIEMP" + GOOD[5:],
        "ghp_" + GOOD[4:] + "AA",
        "siemp__123456789ab_" + "A" * 43,  # extra underscore in place of the id
        "siemp_01234_6789ab_" + "A" * 43,
        "siemp_0123456789abc" + "A" * 43,  # no separator
        "siemp_0123456789AB_" + "A" * 43,  # upper-case id
        "siemp_" + FULLWIDTH_DIGITS + "ab_" + "A" * 43,  # \d would match these
        "siemp_" + ARABIC_INDIC_DIGITS + "ab_" + "A" * 43,
        "siemp_0123456789ab_" + "é" * 43,
        "siemp_0123456789ab_" + "A" * 42 + "=",
        "siemp_0123456789ab_" + "A" * 42 + "+",
        " " + GOOD[1:],
        GOOD[:-1] + "\n",
        GOOD[:-1] + "\ud800",
    ],
)
def test_parse_refuses_malformed_and_hostile_input(text: str) -> None:
    assert tokens.parse(text) is None


@pytest.mark.parametrize("value", [None, b"siemp_0123456789ab_" + b"A" * 43, 62, ["x"] * 62])
def test_parse_refuses_non_strings(value: object) -> None:
    assert tokens.parse(value) is None  # type: ignore[arg-type]


def test_parse_accepts_good_tokens() -> None:
    assert tokens.parse(GOOD) == ("0123456789ab", "A" * 43)
    for _ in range(200):  # about half of all secrets contain "_"
        new = tokens.new_token()
        parsed = tokens.parse(new.text)
        assert parsed is not None and parsed[0] == new.id
        assert tokens.verify(new.digest, parsed[1])
