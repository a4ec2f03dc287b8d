"""Standard Webhooks v1 signatures (reference/reliability.md §2, webhooks spec v1.0.0).

Followed from the spec's reference library (``standard-webhooks`` ``libraries/python``
``standardwebhooks/webhooks.py``):

* headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds), ``webhook-signature``: a
  space-separated list of ``<version>,<base64>`` entries (several during key rotation);
  only ``v1`` (HMAC-SHA256) is read, others (``v1a``, asymmetric) are ignored;
* signed content ``f"{webhook_id}.{webhook_timestamp}.{body}"``, the body as raw bytes;
* the secret is ``whsec_<base64>``: the prefix is optional and removed, the rest is
  base64-decoded with missing padding tolerated, exactly as the reference does;
* timestamps more than ``tolerance`` (default 5 min) old **or** in the future are refused.

Stricter than the reference in two places: the timestamp must be an integer (the
reference also reads floats and signs their floor), and a malformed entry in the signature
list is skipped instead of raising an unrelated error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime

from paywatch.errors import VerificationError
from paywatch.providers.base import Secrets

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
DEFAULT_TOLERANCE = 300
"""Seconds a signed timestamp may differ from ``now``, both ways (the spec's 5 minutes)."""
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_NAMES = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value (keys are expected lowercased; other cases are a fallback)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def secret_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_<base64>`` secret (prefix optional), None if unusable."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        # Like the reference: add padding in case the secret is unpadded base64.
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        return None
    return key or None


def digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """HMAC-SHA256 of ``f"{msg_id}.{timestamp}.{body}"`` (the body as raw bytes)."""
    content = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    return hmac.new(key, content, hashlib.sha256).digest()


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a message."""
    return "v1," + base64.b64encode(digest(key, msg_id, timestamp, body)).decode("ascii")


def v1_signatures(value: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a ``webhook-signature`` header."""
    found: list[bytes] = []
    for entry in value.split(" "):
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue  # not base64: cannot match
    return found


def _required(headers: Mapping[str, str]) -> tuple[str, str, str]:
    msg_id, timestamp, signature = (header(headers, name) or "" for name in _NAMES)
    values = (msg_id, timestamp, signature)
    missing = [name for name, value in zip(_NAMES, values, strict=True) if not value]
    if missing:
        raise VerificationError(f"missing {', '.join(missing)} header")
    return values


def _check_time(timestamp: str, now: datetime, tolerance: int) -> None:
    if not _TIMESTAMP.fullmatch(timestamp):
        raise VerificationError("malformed webhook-timestamp: expected integer Unix seconds")
    age = now.timestamp() - int(timestamp)
    if age > tolerance:
        raise VerificationError(f"webhook-timestamp is more than {tolerance} s old")
    if -age > tolerance:
        raise VerificationError(f"webhook-timestamp is more than {tolerance} s in the future")


def verify_message(
    body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime, tolerance: int
) -> None:
    """Raise VerificationError unless a v1 signature of the message matches a secret."""
    msg_id, timestamp, signature = _required(headers)
    _check_time(timestamp, now, tolerance)
    claimed = v1_signatures(signature)
    if not claimed:
        raise VerificationError("webhook-signature has no v1,<base64> entry")
    keys = [key for s in secrets if (key := secret_key(s.get("signing_secret") or ""))]
    if not keys:
        raise VerificationError("no usable generic signing_secret configured for this tenant")
    for key in keys:
        expected = digest(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, c) for c in claimed):
            return
    raise VerificationError("no v1 signature matches the message for any signing secret")
