"""Response models of the query API (ARCHITECTURE §9): explicit fields, never row passthrough."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from paywatch.schemas.models import DeclineCategory, SagaState

T = TypeVar("T")


class Public(BaseModel):
    """Base: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Decline(Public):
    """The last decline of an invoice: provider code and paywatch category."""

    code: str | None = None
    category: DeclineCategory = DeclineCategory.UNKNOWN
    message: str | None = None


class FailureDecline(Decline):
    """A failed attempt's decline with its card-network details."""

    network: str | None = None
    network_code: str | None = None
    advice_code: str | None = None


class Card(Public):
    """Card facts safe to show: brand and last four digits only."""

    brand: str | None = None
    last4: str | None = None


class KafkaCoordinates(Public):
    """Where the event behind a row sits in Kafka (audit trail)."""

    topic: str
    partition: int
    offset: int


class Invoice(Public):
    """One invoice's read model: saga status, amounts, attempts and last decline."""

    invoice_ref: str
    status: SagaState
    provider: str
    customer_ref: str | None
    subscription_ref: str | None
    amount_minor: int | None
    currency: str | None
    attempts: int
    last_decline: Decline | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    recovered_at: datetime | None
    canceled_at: datetime | None
    last_event_at: datetime
    updated_at: datetime


class Failure(Public):
    """One failed payment attempt."""

    event_id: UUID
    invoice_ref: str
    provider: str
    customer_ref: str | None
    payment_ref: str | None
    occurred_at: datetime
    amount_minor: int | None
    currency: str | None
    attempt: int | None
    decline: FailureDecline
    card: Card | None
    kafka: KafkaCoordinates


class Page(Public, Generic[T]):
    """One page of a list; next_cursor is null on the last page."""

    data: list[T]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page.")


class ErrorBody(Public):
    """Every error answer: a stable machine code and a human explanation."""

    error: str
    detail: str


class Health(Public):
    """Liveness of the API and its database."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None
