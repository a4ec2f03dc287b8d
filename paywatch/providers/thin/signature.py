"""base64 HMAC-SHA256 over the raw body, as Xero and QuickBooks sign (webhooks.md §2.5, §2.6)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from paywatch.errors import VerificationError
from paywatch.providers.base import Secrets


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value by lowercase name (other cases are a fallback)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def sign_b64(body: bytes, key: str) -> str:
    """base64(HMAC-SHA256(key as UTF-8, raw body))."""
    digest = hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_b64_hmac(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Secrets,
    *,
    header_name: str,
    secret_name: str,
    what: str,
) -> None:
    """Raise VerificationError unless ``header_name`` is the body's HMAC under a secret set."""
    value = header(headers, header_name)
    if value is None:
        raise VerificationError(f"missing {header_name} header")
    claimed = _b64_digest(value, header_name)
    keys = [s[secret_name] for s in secrets if s.get(secret_name)]
    if not keys:
        raise VerificationError(f"no {what} {secret_name} configured for this tenant")
    if not any(hmac.compare_digest(_mac(body, key), claimed) for key in keys):
        raise VerificationError(f"{header_name} does not match the body for any {secret_name}")


def _mac(body: bytes, key: str) -> bytes:
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest()


def _b64_digest(value: str, header_name: str) -> bytes:
    try:
        digest = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise VerificationError(f"malformed {header_name} header: not base64") from exc
    if len(digest) != hashlib.sha256().digest_size:
        raise VerificationError(f"malformed {header_name} header: not an HMAC-SHA256")
    return digest
