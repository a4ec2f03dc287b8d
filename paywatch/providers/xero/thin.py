"""What thin-webhook providers (Xero, QuickBooks) share: refs, fetch results, HMAC, JSON, times.

A thin webhook names changed resources without their state. The pure side lists what must be
fetched (``ResourceRef``); the API client fetches each one (``FetchResult``: the exact response
bytes) and the caller appends it to ``webhooks.fetched`` before anything is derived from it.
Both providers sign the raw body with base64 HMAC-SHA256 (reference/webhooks.md §2.5, §2.6).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from paywatch.errors import PayloadError, Retryable, VerificationError
from paywatch.providers.base import Secrets

Kind = Literal["invoice", "payment"]

NOT_FETCHED = 0
"""``FetchResult.status`` of a reference that needs no request (``ResourceRef.fetch`` False)."""


class ResourceRef(BaseModel):
    """One provider resource a thin webhook says changed, to be fetched (pure, frozen).

    ``event_type`` is ``<CATEGORY>.<OPERATION>`` in the provider's spelling
    (``INVOICE.UPDATE``, ``Invoice.Void``); ``index`` is the event's position in the
    delivery (order only, not identity); ``fetch`` is False when the event alone says
    everything (a deletion): the API client then makes no request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    tenant_ref: str = Field(min_length=1)
    kind: Kind
    resource_id: str = Field(min_length=1)
    event_type: str
    event_time: AwareDatetime
    index: int = Field(ge=0)
    fetch: bool = True

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def dedupe_key(self) -> str:
        """Content key of the event behind this ref (redeliveries give the same key)."""
        at = self.event_time.isoformat(timespec="milliseconds")
        return f"{self.tenant_ref}/{self.kind}/{self.resource_id}/{self.event_type}/{at}"


@dataclass(frozen=True)
class FetchResult:
    """One fetched resource: the exact response body, to be logged before it is read.

    ``rotated_secrets`` is set when the OAuth server issued a new refresh token: the
    caller must store it (``{"refresh_token": ...}``) for the tenant, since the old one
    stops working. It is kept out of ``repr``.
    """

    document: bytes
    status: int
    content_type: str
    rotated_secrets: dict[str, str] | None = field(default=None, repr=False)

    @property
    def fetched(self) -> bool:
        """False for a reference that needed no request."""
        return self.status != NOT_FETCHED


class RateLimited(Retryable):
    """The provider API throttled us (HTTP 429); ``retry_after`` seconds when it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


def content_hash(prefix: str, parts: Iterable[str]) -> str:
    """``prefix`` + sha256 of the sorted parts: equal content, equal key, in any order."""
    joined = "\n".join(sorted(parts)).encode("utf-8", "surrogatepass")
    return prefix + hashlib.sha256(joined).hexdigest()


def collapse(refs: Iterable[ResourceRef]) -> list[ResourceRef]:
    """One ref per (tenant, kind, resource, event type), the latest; delivery order kept.

    A fetch returns the resource's current state, so two updates of one invoice in a
    delivery need one request. Different event types stay apart: a void must not be
    hidden by a later update of the voided invoice.
    """
    latest: dict[tuple[str, str, str, str], ResourceRef] = {}
    for ref in refs:
        key = (ref.tenant_ref, ref.kind, ref.resource_id, ref.event_type)
        kept = latest.get(key)
        if kept is None or (ref.event_time, ref.index) > (kept.event_time, kept.index):
            latest[key] = ref
    return sorted(latest.values(), key=lambda r: r.index)
