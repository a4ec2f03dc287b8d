"""Authorize.Net ``X-ANET-Signature: sha512=<HEX>``: HMAC-SHA512 over the raw body.

reference/webhooks.md §2.4 (stymiee/authnetjson ``AuthnetWebhook::isValid`` [S]): the key is
the tenant's Signature Key (128 hex characters). Which bytes key the HMAC is uncertain [U]:
most implementations use the key *string* ("ascii"), at least one also tries the
hex-decoded bytes ("hex"). ``KeyForm`` picks one or "both". Authorize.Net sends upper-case
hex; the hex and the ``sha512=`` prefix are compared case-insensitively.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal

from paywatch.errors import VerificationError
from paywatch.providers.base import Secrets

KeyForm = Literal["ascii", "hex", "both"]
KEY_FORMS: tuple[KeyForm, ...] = ("ascii", "hex", "both")
SIGNATURE_HEADER = "x-anet-signature"
_DIGEST = re.compile(r"[0-9A-Fa-f]{128}")
_MALFORMED = "malformed X-ANET-Signature header: expected sha512=<128 hex characters>"


def signature_header(headers: Mapping[str, str]) -> str | None:
    """The header value (keys are expected lowercased; other cases are a fallback)."""
    value = headers.get(SIGNATURE_HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    return value


def parse_header(value: str) -> bytes:
    """The upper-case hex digest of ``sha512=<hex>`` as ASCII bytes."""
    scheme, sep, digest = value.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha512":
        raise VerificationError(_MALFORMED)
    digest = digest.strip()
    if not _DIGEST.fullmatch(digest):
        raise VerificationError(_MALFORMED)
    return digest.upper().encode("ascii")


def hmac_keys(signature_key: str, key_form: KeyForm) -> list[bytes]:
    """The HMAC keys a Signature Key stands for under ``key_form``."""
    keys: list[bytes] = []
    if key_form in ("ascii", "both"):
        keys.append(signature_key.encode("utf-8"))
    if key_form in ("hex", "both"):
        try:
            keys.append(bytes.fromhex(signature_key))
        except ValueError:
            pass  # not hex: this form cannot apply to this key
    return keys


def sign(body: bytes, key: bytes) -> bytes:
    """Upper-case hex HMAC-SHA512 of the raw body, as ASCII bytes."""
    return hmac.new(key, body, hashlib.sha512).hexdigest().upper().encode("ascii")


def verify_body(
    body: bytes, headers: Mapping[str, str], secrets: Secrets, key_form: KeyForm
) -> None:
    """Raise VerificationError unless the header signs ``body`` with a configured key."""
    value = signature_header(headers)
    if value is None:
        raise VerificationError("missing X-ANET-Signature header")
    claimed = parse_header(value)
    keys = [
        key
        for s in secrets
        if s.get("signature_key")
        for key in hmac_keys(s["signature_key"], key_form)
    ]
    if not keys:
        raise VerificationError("no usable Authorize.Net signature_key configured for this tenant")
    if not any(hmac.compare_digest(sign(body, key), claimed) for key in keys):
        raise VerificationError("X-ANET-Signature does not match the body for any signature key")
