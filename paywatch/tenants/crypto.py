"""Provider secrets at rest, sealed to the row they belong to.

Token format 2 (every new value)::

    b"PW2" | key id (4 bytes) | nonce (12 random bytes) | AES-256-GCM ciphertext + tag

The associated data is the 7-byte header followed by (tenant, provider, name), each as a
4-byte big-endian length and its UTF-8 bytes, so the encoding is unambiguous
(``("ab", "c")`` never equals ``("a", "bc")``): a token copied to another tenant, provider
or name does not open, and neither does one whose key id was edited. The key id (the first
4 bytes of an HKDF of the master key) says which master key sealed a value, so
``paywatch secrets rotate-key`` knows what is left to re-seal and an open tries the one
right key. Both keys come from HKDF-SHA256 over the master key with their own labels, so the
id reveals nothing usable about the encryption key.

Legacy tokens (format 1) are Fernet under a key derived from the master key, unbound and
without key id; they still open, under either key, until rotate-key re-seals them.

During a master-key rotation ``PAYWATCH_SECRET_KEY_PREVIOUS`` holds the old key: values are
sealed under the current key only, and opened under whichever of the two sealed them.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from paywatch.errors import ConfigError

if TYPE_CHECKING:
    from paywatch.settings import Settings

MAGIC = b"PW2"
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES
_TAG_BYTES = 16

_FERNET_INFO = b"paywatch provider secrets v1"  # unchanged: legacy tokens must keep opening
_AEAD_INFO = b"paywatch provider secrets v2 aes-256-gcm"
_KEY_ID_INFO = b"paywatch provider secrets v2 key id"


def _derive(master: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


def _binding(header: bytes, tenant: str, provider: str, name: str) -> bytes:
    """The associated data: the header, then each field length-prefixed (unambiguous)."""
    parts = [header]
    for field in (tenant, provider, name):
        raw = field.encode("utf-8")
        parts += [len(raw).to_bytes(4, "big"), raw]
    return b"".join(parts)


def token_key_id(token: bytes) -> str | None:
    """The key id (hex) of a format-2 token; None for a legacy Fernet token."""
    if token[: len(MAGIC)] != MAGIC:
        return None
    return token[len(MAGIC) : HEADER_BYTES].hex()


class _MasterKey:
    """The keys one master key yields: AES-GCM, legacy Fernet, and its public id."""

    def __init__(self, master: str) -> None:
        raw = master.encode("utf-8")
        self.id = _derive(raw, _KEY_ID_INFO, KEY_ID_BYTES)
        self.aead = AESGCM(_derive(raw, _AEAD_INFO, 32))
        self.fernet = Fernet(base64.urlsafe_b64encode(_derive(raw, _FERNET_INFO, 32)))


class SecretBox:
    """Seals and opens secret values; the master keys never leave this object."""

    def __init__(self, master_key: str, previous_key: str | None = None) -> None:
        self._current = _MasterKey(master_key)
        self._previous = (
            _MasterKey(previous_key) if previous_key and previous_key != master_key else None
        )
        self._by_id = {key.id: key for key in self._keys()}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of PAYWATCH_SECRET_KEY (and PAYWATCH_SECRET_KEY_PREVIOUS when set)."""
        previous = settings.secret_key_previous
        return cls(
            settings.secret_key.get_secret_value(),
            previous.get_secret_value() if previous is not None else None,
        )

    @property
    def key_id(self) -> str:
        """The id (hex) of PAYWATCH_SECRET_KEY, the key every new value is sealed under."""
        return self._current.id.hex()

    @property
    def previous_key_id(self) -> str | None:
        """The id (hex) of PAYWATCH_SECRET_KEY_PREVIOUS; None when unset."""
        return self._previous.id.hex() if self._previous is not None else None

    def _keys(self) -> list[_MasterKey]:
        return [self._current] if self._previous is None else [self._current, self._previous]

    def seal(self, value: str, *, tenant: str, provider: str, name: str) -> bytes:
        """Encrypt one value under the current key, bound to its (tenant, provider, name)."""
        header = MAGIC + self._current.id
        nonce = os.urandom(NONCE_BYTES)
        aad = _binding(header, tenant, provider, name)
        return header + nonce + self._current.aead.encrypt(nonce, value.encode("utf-8"), aad)

    def open(self, token: bytes, *, tenant: str, provider: str, name: str) -> str:
        """Decrypt the value of row (tenant, provider, name); ConfigError naming the row
        (never the value) when it was sealed for another row, altered, or under neither key."""
        row = f"{tenant}/{provider}/{name}"
        if token[: len(MAGIC)] != MAGIC:
            return self._open_legacy(token, row)
        if len(token) < HEADER_BYTES + NONCE_BYTES + _TAG_BYTES:
            raise ConfigError(f"provider secret {row} is not a complete sealed value")
        header, nonce = token[:HEADER_BYTES], token[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
        key = self._by_id.get(header[len(MAGIC) :])
        if key is None:
            raise ConfigError(
                f"provider secret {row} {self.unknown_key(header[len(MAGIC) :].hex())}"
            )
        aad = _binding(header, tenant, provider, name)
        try:
            plain = key.aead.decrypt(nonce, token[HEADER_BYTES + NONCE_BYTES :], aad)
        except InvalidTag as exc:
            raise ConfigError(
                f"provider secret {row} does not open under key id {key.id.hex()}: it was sealed "
                "for another tenant, provider or name, or altered"
            ) from exc
        return plain.decode("utf-8")

    def _open_legacy(self, token: bytes, row: str) -> str:
        for key in self._keys():
            try:
                return key.fernet.decrypt(token).decode("utf-8")
            except InvalidToken:
                continue
        previous = self.previous_key_id
        raise ConfigError(
            f"cannot decrypt provider secret {row} (legacy format, no key id): it opens under "
            f"neither PAYWATCH_SECRET_KEY (key id {self.key_id}) nor PAYWATCH_SECRET_KEY_PREVIOUS "
            f"({'unset' if previous is None else f'key id {previous}'}), so it was stored under "
            "another master key"
        )

    def unknown_key(self, key_id: str) -> str:
        """Why a key id (hex) cannot be opened here, naming the ids that can."""
        previous = self.previous_key_id
        return (
            f"is sealed under key id {key_id}, which is neither PAYWATCH_SECRET_KEY "
            f"(key id {self.key_id}) nor PAYWATCH_SECRET_KEY_PREVIOUS "
            f"({'unset' if previous is None else f'key id {previous}'})"
        )

    def __repr__(self) -> str:
        return f"SecretBox(<hidden>, key_id={self.key_id!r}, previous={self.previous_key_id!r})"
