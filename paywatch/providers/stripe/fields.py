"""Type-checked reads of Stripe JSON fields: a wrong type reads as absent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import PayloadError

Fields = dict[str, Any]
"""Keyword arguments of one PaymentEvent, beyond those every event has."""


def obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The object under ``key``, or {} when there is none."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def string(mapping: Mapping[str, Any], key: str) -> str | None:
    """The non-empty string under ``key``, else None."""
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def integer(mapping: Mapping[str, Any], key: str) -> int | None:
    """The integer (not bool) under ``key``, else None."""
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ref(value: Any) -> str | None:
    """An id, whether Stripe sent it as a string or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def timestamp(value: Any) -> datetime | None:
    """A Unix timestamp as an aware UTC datetime; None when it is not an integer."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(f"timestamp {value} out of range") from exc


def created(doc: Mapping[str, Any]) -> datetime:
    """When the event was created; raises PayloadError when ``created`` is missing."""
    when = timestamp(doc.get("created"))
    if when is None:
        raise PayloadError("Stripe event has no integer 'created'")
    return when


def currency(mapping: Mapping[str, Any]) -> str | None:
    """The upper-cased ISO currency code, or None when it is absent or odd."""
    code = string(mapping, "currency")
    return code.upper() if code and code.isascii() and code.isalpha() else None


def require_id(mapping: Mapping[str, Any], what: str) -> str:
    """The object's id; raises PayloadError when it has none."""
    obj_id = string(mapping, "id")
    if obj_id is None:
        raise PayloadError(f"Stripe {what} has no id")
    return obj_id
