"""Encryption of provider secrets at rest: Fernet with a key derived from PAYWATCH_SECRET_KEY."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from paywatch.errors import ConfigError

_INFO = b"paywatch provider secrets v1"


class SecretBox:
    """Encrypts and decrypts secret values; the master key never leaves this object."""

    def __init__(self, master_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            master_key.encode("utf-8")
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, value: str) -> bytes:
        """Encrypt one secret value."""
        return self._fernet.encrypt(value.encode("utf-8"))

    def open(self, token: bytes) -> str:
        """Decrypt one secret value; a wrong PAYWATCH_SECRET_KEY is a configuration error."""
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken as exc:
            raise ConfigError(
                "cannot decrypt a stored provider secret: PAYWATCH_SECRET_KEY differs from the "
                "key the secret was stored with"
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"
