"""What thin-webhook providers (Xero, QuickBooks) fetch: resource refs and fetch results.

A thin webhook names changed resources without their state. The pure side lists what must be
fetched (``ResourceRef``); the API client fetches each one (``FetchResult``: the exact response
bytes) and the caller appends it to ``webhooks.fetched`` before anything is derived from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from paywatch.errors import Retryable

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
