"""Provider secrets at rest (paywatch/tenants/crypto.py): the bound token format, legacy
Fernet tokens, the previous master key, tampering, and nothing secret in reprs or errors."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr, ValidationError

from paywatch.errors import ConfigError
from paywatch.ops.secrets_cli import parse_secret_lines
from paywatch.settings import DEV_SECRET_KEY, Settings
from paywatch.tenants.crypto import SecretBox, token_key_id

OLD_KEY = "old-master-key-" + "o" * 32
NEW_KEY = "new-master-key-" + "n" * 32
OTHER_KEY = "third-master-key-" + "t" * 32
VALUE = "whsec_the_value_that_must_never_show"
ROW = {"tenant": "acme", "provider": "stripe", "name": "signing_secret"}


def legacy_token(master_key: str, value: str) -> bytes:
    """A token as paywatch stored it before format 2: Fernet under HKDF(v1), derived here
    independently of crypto.py so a changed derivation there fails this test."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"paywatch provider secrets v1"
    ).derive(master_key.encode())
    return Fernet(base64.urlsafe_b64encode(key)).encrypt(value.encode())


def test_a_sealed_value_opens_for_its_own_row() -> None:
    box = SecretBox(NEW_KEY)
    assert box.open(box.seal(VALUE, **ROW), **ROW) == VALUE
    assert box.open(box.seal("", **ROW), **ROW) == ""
    assert box.open(box.seal("ünï=cødé", **ROW), **ROW) == "ünï=cødé"


def test_token_format_2_header_nonce_and_tag() -> None:
    box = SecretBox(NEW_KEY)
    first, second = box.seal(VALUE, **ROW), box.seal(VALUE, **ROW)
    assert first[:3] == b"PW2"
    assert first[3:7].hex() == box.key_id == token_key_id(first)
    assert len(first) == 7 + 12 + len(VALUE.encode()) + 16  # header, nonce, ciphertext, tag
    assert first[7:19] != second[7:19] and first != second  # a fresh random nonce each time
    assert VALUE.encode() not in first


def test_key_ids_differ_per_master_key_and_are_stable() -> None:
    assert SecretBox(NEW_KEY).key_id == SecretBox(NEW_KEY).key_id
    assert len({SecretBox(k).key_id for k in (OLD_KEY, NEW_KEY, OTHER_KEY)}) == 3
    assert len(SecretBox(NEW_KEY).key_id) == 8  # 4 bytes, hex


@pytest.mark.parametrize(
    "other",
    [
        {**ROW, "tenant": "globex"},
        {**ROW, "provider": "generic"},
        {**ROW, "name": "client_secret"},
    ],
    ids=["tenant", "provider", "name"],
)
def test_a_value_copied_to_another_row_does_not_open(other: dict[str, str]) -> None:
    box = SecretBox(NEW_KEY)
    token = box.seal(VALUE, **ROW)
    with pytest.raises(ConfigError) as refused:
        box.open(token, **other)
    message = str(refused.value)
    assert f"{other['tenant']}/{other['provider']}/{other['name']}" in message
    assert "sealed for another tenant, provider or name" in message
    assert VALUE not in message and NEW_KEY not in message


def test_the_binding_encoding_is_unambiguous() -> None:
    """Joined naively, ("ab", "c") and ("a", "bc") would be the same associated data."""
    box = SecretBox(NEW_KEY)
    token = box.seal(VALUE, tenant="ab", provider="c", name="x")
    with pytest.raises(ConfigError):
        box.open(token, tenant="a", provider="bc", name="x")
    with pytest.raises(ConfigError):
        box.open(token, tenant="ab", provider="", name="cx")


def test_legacy_fernet_tokens_still_open_under_either_key() -> None:
    legacy = legacy_token(OLD_KEY, VALUE)
    assert token_key_id(legacy) is None
    assert SecretBox(OLD_KEY).open(legacy, **ROW) == VALUE
    assert SecretBox(NEW_KEY, OLD_KEY).open(legacy, **ROW) == VALUE  # old key as previous
    with pytest.raises(ConfigError, match="legacy format") as refused:
        SecretBox(NEW_KEY).open(legacy, **ROW)
    assert VALUE not in str(refused.value) and "acme/stripe/signing_secret" in str(refused.value)


def test_the_previous_key_opens_and_seal_uses_the_current_one() -> None:
    old_token = SecretBox(OLD_KEY).seal(VALUE, **ROW)
    rotating = SecretBox(NEW_KEY, OLD_KEY)
    assert rotating.open(old_token, **ROW) == VALUE
    assert token_key_id(old_token) == rotating.previous_key_id != rotating.key_id
    new_token = rotating.seal(VALUE, **ROW)
    assert token_key_id(new_token) == rotating.key_id == SecretBox(NEW_KEY).key_id
    assert SecretBox(NEW_KEY).open(new_token, **ROW) == VALUE  # the previous key can go
    assert rotating.previous_key_id == SecretBox(OLD_KEY).key_id


def test_a_token_under_neither_key_names_the_key_ids_not_the_value() -> None:
    token = SecretBox(OTHER_KEY).seal(VALUE, **ROW)
    box = SecretBox(NEW_KEY, OLD_KEY)
    with pytest.raises(ConfigError) as refused:
        box.open(token, **ROW)
    message = str(refused.value)
    assert SecretBox(OTHER_KEY).key_id in message
    assert box.key_id in message and str(box.previous_key_id) in message
    assert "acme/stripe/signing_secret" in message
    for secret in (VALUE, NEW_KEY, OLD_KEY, OTHER_KEY):
        assert secret not in message
    with pytest.raises(ConfigError, match=r"PAYWATCH_SECRET_KEY_PREVIOUS \(unset\)"):
        SecretBox(NEW_KEY).open(token, **ROW)


@pytest.mark.parametrize(
    ("position", "refusal"),
    [
        (0, "legacy format"),  # the magic: read as a (bad) Fernet token
        (4, "neither PAYWATCH_SECRET_KEY"),  # the key id
        (10, "or altered"),  # the nonce
        (-20, "or altered"),  # the ciphertext
        (-1, "or altered"),  # the tag
    ],
)
def test_a_tampered_token_is_refused(position: int, refusal: str) -> None:
    box = SecretBox(NEW_KEY)
    token = bytearray(box.seal(VALUE, **ROW))
    token[position] ^= 0x01
    with pytest.raises(ConfigError, match=refusal) as refused:
        box.open(bytes(token), **ROW)
    assert VALUE not in str(refused.value)


def test_a_truncated_token_is_refused() -> None:
    box = SecretBox(NEW_KEY)
    token = box.seal(VALUE, **ROW)
    with pytest.raises(ConfigError, match="not a complete sealed value"):
        box.open(token[:30], **ROW)


def test_nothing_secret_in_the_repr() -> None:
    box = SecretBox(NEW_KEY, OLD_KEY)
    text = repr(box) + str(box)
    assert NEW_KEY not in text and OLD_KEY not in text and "<hidden>" in text
    assert box.key_id in text  # the id is public: it only says which key sealed a value


def test_the_box_from_settings_opens_under_the_previous_key() -> None:
    old_token = SecretBox(OLD_KEY).seal(VALUE, **ROW)
    settings = Settings(secret_key=SecretStr(NEW_KEY), secret_key_previous=SecretStr(OLD_KEY))
    assert SecretBox.from_settings(settings).open(old_token, **ROW) == VALUE
    with pytest.raises(ConfigError):
        SecretBox.from_settings(Settings(secret_key=SecretStr(NEW_KEY))).open(old_token, **ROW)


def test_an_empty_previous_key_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWATCH_SECRET_KEY_PREVIOUS", "")  # compose's ${VAR:-}
    assert Settings().secret_key_previous is None


@pytest.mark.parametrize(
    ("previous", "problem"),
    [
        (DEV_SECRET_KEY, "PAYWATCH_SECRET_KEY_PREVIOUS must be set to a real secret"),
        ("short", "PAYWATCH_SECRET_KEY_PREVIOUS must be at least 32 characters"),
    ],
)
def test_prod_refuses_a_public_or_short_previous_key(previous: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(env="prod", secret_key=SecretStr(NEW_KEY), secret_key_previous=previous)  # type: ignore[arg-type]
    settings = Settings(env="prod", secret_key=SecretStr(NEW_KEY), secret_key_previous=OLD_KEY)  # type: ignore[arg-type]
    assert settings.secret_key_previous is not None


# NAME=VALUE lines (paywatch tenant secret's stdin and --file).


def test_secret_lines_skip_blanks_and_comments_and_keep_equals_in_values() -> None:
    text = "# stripe, rotated today\n\nsigning_secret=whsec_a=b==\r\n  # indented comment\n"
    assert parse_secret_lines(text) == {"signing_secret": "whsec_a=b=="}
    assert parse_secret_lines("a=1\nb=two words \n") == {"a": "1", "b": "two words "}
    assert parse_secret_lines("") == {}
    assert parse_secret_lines("k=a\x0cb\u2028c\r\r\n") == {"k": "a\x0cb\u2028c"}  # one line


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("signing_secret=x\nwhsec_pasted_alone\n", "line 2: expected NAME=VALUE"),
        ("=whsec_no_name\n", "line 1: expected NAME=VALUE"),
        ("a=whsec_one\na=whsec_two\n", "line 2: a given twice"),
    ],
)
def test_a_bad_secret_line_is_named_by_number_not_content(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as refused:
        parse_secret_lines(text)
    assert "whsec" not in str(refused.value)
