"""Braintree signatures: the form fields, HMAC-SHA1 over ``bt_payload``, the challenge.

Checked against braintree_python ``braintree/webhook_notification_gateway.py`` (``parse``,
``__validate_signature``, ``verify``) and ``braintree/util/crypto.py`` (``sha1_hmac_hash``);
reference/webhooks.md §2.3::

    key          = sha1(private_key).digest()
    signature    = hmac_sha1(key, bt_payload).hexdigest()      # or over bt_payload + "\\n"
    bt_signature = "public_key|signature[&public_key2|signature2...]"
    challenge    = f"{public_key}|{hmac_sha1(key, bt_challenge).hexdigest()}"

The signature covers the *form-decoded* ``bt_payload`` string, not the HTTP body, so the form
is parsed (strictly, with a field cap) before verifying; the XML inside is only decoded after.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qs

from paywatch.errors import ProviderError, VerificationError
from paywatch.providers.base import Secrets

MAX_FORM_FIELDS = 16
"""Fields a webhook form may carry (Braintree sends two)."""
MAX_SIGNATURE_PAIRS = 16
"""``public_key|hex`` pairs read from ``bt_signature``; bounds the HMAC work per request."""

PAYLOAD_CHARS = re.compile(r"[A-Za-z0-9+=/\n]+")
"""What the SDK allows in ``bt_payload`` before verifying (MIME base64 with ``\\n``)."""
_CHALLENGE = re.compile(r"[a-f0-9]{20,32}")
_MALFORMED = "malformed bt_signature: expected public_key|hex[&public_key|hex]"

KeyPair = tuple[str, str]
"""``(public_key, private_key)``."""


def form_fields(body: bytes, error: type[ProviderError]) -> tuple[str, str]:
    """``(bt_signature, bt_payload)`` of a form-encoded body; ``error`` when it is not one."""
    try:
        fields = parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except ValueError as exc:  # UnicodeDecodeError, bad field, too many fields
        raise error("body is not a form with bt_signature and bt_payload") from exc
    return _single(fields, "bt_signature", error), _single(fields, "bt_payload", error)


def key_pairs(secrets: Secrets) -> list[KeyPair]:
    """Every configured ``(public_key, private_key)``, newest first."""
    return [
        (s["public_key"], s["private_key"])
        for s in secrets
        if s.get("public_key") and s.get("private_key")
    ]


def verify_form(body: bytes, secrets: Secrets) -> None:
    """Raise VerificationError unless ``bt_signature`` signs ``bt_payload`` for a key pair."""
    signature, payload = form_fields(body, VerificationError)
    if not PAYLOAD_CHARS.fullmatch(payload):
        raise VerificationError("bt_payload has characters outside MIME base64")
    pairs = _signature_pairs(signature)
    keys = key_pairs(secrets)
    if not keys:
        raise VerificationError("no Braintree public_key/private_key configured for this tenant")
    known = False
    for public_key, private_key in keys:
        candidates = [sig for pub, sig in pairs if pub == public_key]
        known = known or bool(candidates)
        if candidates and _matches(candidates, _expected(private_key, payload)):
            return
    if not known:
        raise VerificationError("bt_signature has no pair for the tenant's public key")
    raise VerificationError("bt_signature does not match bt_payload for any key")


def challenge_response(challenge: str, secrets: Secrets) -> str:
    """The body answering ``GET ?bt_challenge=<hex>``: ``public_key|hmac_sha1 hex``.

    Uses the newest key pair (the one the merchant registers the webhook with). Stricter than
    the SDK's ``re.match("^[a-f0-9]{20,32}$")``, which also lets a trailing newline through.
    """
    if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
        raise VerificationError("bt_challenge must be 20-32 lowercase hex characters")
    keys = key_pairs(secrets)
    if not keys:
        raise VerificationError("no Braintree public_key/private_key configured for this tenant")
    public_key, private_key = keys[0]
    digest = hmac.new(_hmac_key(private_key), challenge.encode("ascii"), hashlib.sha1)
    return f"{public_key}|{digest.hexdigest()}"


def sign_payload(payload: str, private_key: str) -> str:
    """Hex HMAC-SHA1 of ``payload`` as Braintree computes it (for samples and tests)."""
    return hmac.new(_hmac_key(private_key), payload.encode("ascii"), hashlib.sha1).hexdigest()


def _single(fields: dict[str, list[str]], name: str, error: type[ProviderError]) -> str:
    values = fields.get(name, [])
    if len(values) != 1 or not values[0]:
        raise error(f"form field {name} is missing, empty or repeated")
    return values[0]


def _signature_pairs(signature: str) -> list[tuple[str, str]]:
    # The SDK splits on "&" then "|" and skips items without "|"; so do we.
    items = [item.partition("|") for item in signature.split("&")]
    pairs = [(public_key, sig) for public_key, sep, sig in items if sep]
    if not pairs:
        raise VerificationError(_MALFORMED)
    if len(pairs) > MAX_SIGNATURE_PAIRS:
        raise VerificationError(f"bt_signature has more than {MAX_SIGNATURE_PAIRS} pairs")
    return pairs


def _hmac_key(private_key: str) -> bytes:
    # SHA-1 is Braintree's protocol (the key is SHA1(private_key)), not our choice.
    return hashlib.sha1(private_key.encode("utf-8")).digest()  # noqa: S324


def _expected(private_key: str, payload: str) -> list[bytes]:
    key = _hmac_key(private_key)
    data = payload.encode("ascii")
    # The SDK also accepts the signature of the payload plus a trailing newline.
    return [
        hmac.new(key, message, hashlib.sha1).hexdigest().encode("ascii")
        for message in (data, data + b"\n")
    ]


def _matches(candidates: list[str], expected: list[bytes]) -> bool:
    return any(
        candidate.isascii() and hmac.compare_digest(digest, candidate.encode("ascii"))
        for candidate in candidates
        for digest in expected
    )
