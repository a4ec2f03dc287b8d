"""API key hashing: keys are stored only as SHA-256 digests (api_keys.key_hash)."""

from __future__ import annotations

import hashlib


def hash_api_key(key: str) -> bytes:
    """SHA-256 digest (32 raw bytes) of the full API key, as stored in api_keys.key_hash."""
    return hashlib.sha256(key.encode("utf-8")).digest()
