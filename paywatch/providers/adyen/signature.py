"""Adyen Standard webhooks: a base64 HMAC-SHA256 per notification item, inside the body.

reference/webhooks.md §2.7 [V] (``Adyen/adyen-python-api-library`` ``Adyen/util.py``; the
Node library's ``HmacValidator.getDataToSign`` agrees)::

    key     = bytes.fromhex(hmac_key)
    message = ":".join([pspReference, originalReference, merchantAccountCode,
                        merchantReference, str(amount.value), amount.currency,
                        eventCode, success])                 # missing -> ""
    valid   = base64(HMAC_SHA256(key, message)) == additionalData.hmacSignature

A JSON ``null`` is signed as "" like a missing field (the Node library's behaviour; the
Python library would write "None"; Adyen sends strings, so this should never matter [U]).
Notification items are joined **without escaping**: the ``\\\\`` and ``\\:`` escapes of Adyen's
libraries belong to the key-value (hosted payment page) form only, not to webhooks.

The signature sits inside the JSON, so this is the one provider whose verification must
parse before it can verify (the documented exception to "verify raw bytes first"). The
parse is strict to make it safe: UTF-8 only, a size cap, no duplicate keys (another JSON
reader must not see other values than the ones verified), no NaN/Infinity, a cap on the
number of items. Every item must verify; one bad item rejects the whole batch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from paywatch.errors import PayloadError, VerificationError
from paywatch.providers.base import Secrets

DEFAULT_MAX_BODY = 256 * 1024
"""Bytes the strict parse accepts (the ingest's own limit; the parse must not rely on it)."""
DEFAULT_MAX_ITEMS = 100
"""Notification items accepted in one delivery [U: Adyen documents no maximum]."""

_SIGNED_ITEM_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load(body: bytes, max_body: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
    """Strictly decode a notification body into a JSON object (PayloadError otherwise)."""
    if len(body) > max_body:
        raise PayloadError(f"Adyen notification is larger than {max_body} bytes")
    try:
        doc = json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constants
        )
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not UTF-8") from exc
    except RecursionError as exc:
        raise PayloadError("JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, ints over the digit limit
        raise PayloadError(f"body is not strict JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("an Adyen notification is a JSON object")
    return doc


def items(doc: Mapping[str, Any], max_items: int = DEFAULT_MAX_ITEMS) -> list[dict[str, Any]]:
    """The ``NotificationRequestItem`` objects of a notification, in order."""
    entries = doc.get("notificationItems")
    if not isinstance(entries, list) or not entries:
        raise PayloadError("Adyen notification has no 'notificationItems' list")
    if len(entries) > max_items:
        raise PayloadError(f"Adyen notification has more than {max_items} items")
    found: list[dict[str, Any]] = []
    for position, entry in enumerate(entries):
        item = entry.get("NotificationRequestItem") if isinstance(entry, dict) else None
        if not isinstance(item, dict):
            raise PayloadError(f"notification item {position} has no NotificationRequestItem")
        found.append(item)
    return found


def _text(value: Any, field: str) -> str:
    """A signed field as Adyen's libraries write it: missing/null -> "", booleans lower-case."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise PayloadError(f"signed field {field!r} is a {type(value).__name__}, not text")


def signing_string(item: Mapping[str, Any]) -> str:
    """The colon-joined string an item's ``hmacSignature`` covers (no escaping)."""
    amount = item.get("amount")
    if amount is None:
        amount = {}
    if not isinstance(amount, dict):
        raise PayloadError("'amount' is not an object")
    parts = [_text(item.get(field), field) for field in _SIGNED_ITEM_FIELDS]
    parts.append(_text(amount.get("value"), "amount.value"))
    parts.append(_text(amount.get("currency"), "amount.currency"))
    parts.append(_text(item.get("eventCode"), "eventCode"))
    parts.append(_text(item.get("success"), "success"))
    return ":".join(parts)


def sign(item: Mapping[str, Any], key: bytes) -> bytes:
    """base64 HMAC-SHA256 of the item's signing string, as ASCII bytes."""
    message = signing_string(item).encode("utf-8")
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())


def hmac_keys(secrets: Secrets) -> list[bytes]:
    """The hex-decoded ``hmac_key`` of every secret set; malformed keys are skipped."""
    keys: list[bytes] = []
    for secret in secrets:
        value = secret.get("hmac_key")
        if not value:
            continue
        try:
            key = bytes.fromhex(value.strip())
        except ValueError:
            continue  # not hex: this set cannot verify anything
        if key:
            keys.append(key)
    return keys


def _claimed(item: Mapping[str, Any], position: int) -> bytes:
    data = item.get("additionalData")
    value = data.get("hmacSignature") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise VerificationError(f"notification item {position} has no additionalData.hmacSignature")
    if not value.isascii():
        raise VerificationError(f"notification item {position} signature is not base64")
    return value.encode("ascii")


def _item_signed(item: Mapping[str, Any], position: int, keys: list[bytes]) -> bool:
    claimed = _claimed(item, position)
    try:
        return any(hmac.compare_digest(sign(item, key), claimed) for key in keys)
    except PayloadError as exc:
        raise VerificationError(f"notification item {position}: {exc}") from exc
    except UnicodeEncodeError as exc:  # lone surrogates (\ud800) cannot be signed text
        raise VerificationError(f"notification item {position} has unencodable text") from exc


def verify_notification(
    body: bytes,
    secrets: Secrets,
    max_body: int = DEFAULT_MAX_BODY,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> None:
    """Raise VerificationError unless every item of the notification is signed by a key."""
    keys = hmac_keys(secrets)
    if not keys:
        raise VerificationError("no usable Adyen hmac_key configured for this tenant")
    try:
        found = items(load(body, max_body), max_items)
    except PayloadError as exc:
        raise VerificationError(f"cannot read the signatures of the Adyen body: {exc}") from exc
    for position, item in enumerate(found):
        if not _item_signed(item, position, keys):
            raise VerificationError(
                f"notification item {position} is not signed by any configured hmac_key"
            )
