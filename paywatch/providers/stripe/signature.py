"""Stripe ``Stripe-Signature: t=<unix>,v1=<hex>``: HMAC-SHA256 over ``<t>.<raw body>``.

reference/webhooks.md §2.1. Header keys are expected lowercased, as the ingest passes them
(a case-insensitive scan is the fallback).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime

from paywatch.errors import VerificationError
from paywatch.providers.base import Secrets

DEFAULT_TOLERANCE = 300
"""Seconds a signed timestamp may differ from ``now`` (the SDK's default)."""

SIGNATURE_HEADER = "stripe-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_MALFORMED = "malformed Stripe-Signature header: expected t=<unix>,v1=<hex>[,v1=<hex>]"


def verify_signature(
    body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime, tolerance: int
) -> None:
    """Raise VerificationError unless a v1 signature over the raw body matches a secret.

    Stricter than the SDK: timestamps more than ``tolerance`` seconds in the *future* are
    refused too (the SDK only refuses old ones). ``now`` must be timezone-aware.
    """
    header = signature_header(headers)
    if header is None:
        raise VerificationError("missing Stripe-Signature header")
    timestamp, candidates = parse_signature_header(header)
    # Plain loops, not any(<generator>): this runs for every Stripe webhook.
    configured = False
    for secret in secrets:
        key = secret.get("signing_secret")
        if key:
            configured = True
            if signed_by(key, timestamp, body, candidates):
                break
    else:
        if not configured:
            raise VerificationError("no Stripe signing_secret configured for this tenant")
        raise VerificationError("no v1 signature matches the body for any signing secret")
    age = now.timestamp() - timestamp
    if age > tolerance:
        raise VerificationError(f"signature timestamp is more than {tolerance} s old")
    if -age > tolerance:
        raise VerificationError(f"signature timestamp is more than {tolerance} s in the future")


def signature_header(headers: Mapping[str, str]) -> str | None:
    """The header value (keys are expected lowercased; other cases are a fallback)."""
    value = headers.get(SIGNATURE_HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    return value


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """The signed timestamp and the v1 signatures; raises VerificationError when malformed."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise VerificationError(_MALFORMED)
        if key == "t":
            if timestamp is not None:
                raise VerificationError("malformed Stripe-Signature header: more than one t=")
            timestamp = value
        elif key == "v1":
            signatures.append(value)
        # v0 (the test-mode scheme) and unknown schemes are ignored, as the SDK does.
    if timestamp is None:
        raise VerificationError("Stripe-Signature header has no t= timestamp")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise VerificationError("Stripe-Signature timestamp is not an integer")
    if not signatures:
        raise VerificationError("Stripe-Signature header has no v1 signature (v0 is ignored)")
    return int(timestamp), signatures


def signed_by(secret: str, timestamp: int, body: bytes, candidates: list[str]) -> bool:
    """Whether any candidate is the hex HMAC-SHA256 of ``<timestamp>.<body>`` under secret."""
    # The secret is used whole (with its whsec_ prefix); the raw bytes are never re-encoded.
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp, hashlib.sha256)
    mac.update(body)
    expected = mac.hexdigest()
    # compare_digest refuses non-ASCII str; such a value cannot match a hex digest anyway.
    for candidate in candidates:
        if candidate.isascii() and hmac.compare_digest(expected, candidate):
            return True
    return False
