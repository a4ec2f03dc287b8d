"""Type-checked reads of thin-webhook and fetched JSON documents (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from paywatch.errors import PayloadError


def load_json(body: bytes, what: str) -> Any:
    """JSON with decimals kept exact, or PayloadError."""
    try:
        return json.loads(body.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{what} is not UTF-8") from exc
    except RecursionError as exc:
        raise PayloadError(f"{what}: JSON nested too deeply") from exc
    except InvalidOperation as exc:  # a number like 1e99999999999999999999: no Decimal holds it
        raise PayloadError(f"{what}: JSON number out of range") from exc
    except ValueError as exc:
        raise PayloadError(f"{what} is not JSON: {str(exc)[:80]}") from exc


def obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object ({} when absent or not an object)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string field, else None."""
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def iso_utc(value: Any) -> datetime | None:
    """An ISO 8601 time as aware UTC (naive means UTC); None when unreadable.

    Also None when UTC falls outside years 1-9999 (``0001-01-01T00:00+01:00``):
    ``astimezone`` raises OverflowError there.
    """
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
