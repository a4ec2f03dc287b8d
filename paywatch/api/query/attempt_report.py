"""Reported payment attempts as canonical events: the body, its checks, its event. Pure.

The body of ``POST /v1/invoices/{invoice_ref}/attempts`` (routes/attempts.py) is one of two
strict models told apart by ``outcome``; its JSON Schema states exactly what is accepted
(schemathesis holds the API to it), the card-number scan and the invoice's existence
being the only checks beyond it. ``report_event`` turns a report into the ``PaymentEvent``
that goes to payments.events, a function of the tenant, the invoice's facts, the body and
the scheduled retry it names (if any), so a retried POST builds the very same event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from paywatch.api.query.deps import NO_NUL
from paywatch.api.query.schemas import KafkaCoordinates
from paywatch.providers import pan
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    MAX_MINOR,
    MAX_REF,
    MAX_TEXT,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
)

SOURCE_TYPE = "tenant.attempt_report"
"""source_type of reported attempts; also their event id namespace (no provider's name)."""

_YEAR = r"(?:20[0-9]{2}|21[0-8][0-9]|219[0-8])"
_LEAP = r"(?:20(?:[02468][048]|[13579][26])|21(?:[02468][48]|[2468]0|[13579][26]))"
_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
_CLOCK = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
ATTEMPTED_AT = f"^(?:{_YEAR}-{_DAY}|{_LEAP}-02-29){_CLOCK}{_OFFSET}$"
"""RFC 3339 with seconds and an offset, real calendar dates of years 2000-2198 only: the
schema states exactly what is accepted (schemathesis holds the API to it), every match is a
valid instant, and any offset keeps it inside what a PaymentEvent may hold (1970-2199)."""


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF, pattern=NO_NUL)]
Message = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL)]


def _integral(value: object) -> object:
    """JSON Schema's integer: a number without a fraction, ``5.0`` and ``1e3`` too (strict
    int alone would refuse what the published schema accepts); anything else as it came."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Amount = Annotated[int, Field(ge=0, le=MAX_MINOR), BeforeValidator(_integral)]
Category = Literal["SOFT", "HARD", "ACTION", "FRAUD", "UNKNOWN"]


class _Report(BaseModel):
    """Strict: each value must have the JSON type the schema gives it (no "5" for 5)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    attempt_id: Text = Field(
        description="The tenant's id of the attempt; the command_id of a recovery.retry_due"
        " to report that scheduled retry. The same id again is the same attempt."
    )
    attempted_at: Annotated[str, StringConstraints(pattern=ATTEMPTED_AT)] = Field(
        description="When the attempt was made: RFC 3339 with seconds and an offset"
        " (years 2000-2198).",
        examples=["2026-05-01T10:00:00Z"],
    )
    amount_minor: Amount | None = Field(
        None, description="Amount charged, in minor units (default: the invoice's)."
    )
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="ISO 4217 code (default: the invoice's)."
    )

    @property
    def at(self) -> datetime:
        """``attempted_at`` in UTC, to the millisecond (what the Avro log keeps)."""
        at = datetime.fromisoformat(self.attempted_at).astimezone(UTC)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)


class AttemptSucceeded(_Report):
    """The attempt collected the payment."""

    outcome: Literal["succeeded"]


class AttemptFailed(_Report):
    """The attempt was declined."""

    outcome: Literal["failed"]
    decline_code: Text | None = Field(None, description="The processor's decline code.")
    decline_message: Message | None = None
    decline_category: Category | None = Field(
        None, description="How to treat the decline (default: the invoice's last category)."
    )


AttemptReport = AttemptSucceeded | AttemptFailed


class AttemptRecorded(BaseModel):
    """A reported attempt, as it is in payments.events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    type: EventType
    invoice_ref: str
    attempt_id: str
    retry_command_id: str | None = Field(
        description="The scheduled RETRY_PAYMENT this reports the outcome of (counted when"
        " it was granted); null: an attempt of the tenant's own, counted on the card."
    )
    duplicate: bool = Field(description="true: reported before; nothing was appended now.")
    kafka: KafkaCoordinates


@dataclass(frozen=True)
class InvoiceFacts:
    """What the report takes from the invoice it is about (``invoices`` read model)."""

    provider: str
    customer_ref: str | None
    subscription_ref: str | None
    amount_minor: int | None
    currency: str | None
    last_category: DeclineCategory


@dataclass(frozen=True)
class Retry:
    """The scheduled retry a report names by its command id."""

    command_id: str
    attempt: int


def report_event_id(tenant: str, invoice_ref: str, attempt_id: str) -> str:
    """The report's event id: the same attempt of the same invoice, the same id."""
    return event_id(tenant, SOURCE_TYPE, json.dumps([invoice_ref, attempt_id]))


def report_event(
    tenant: str, invoice_ref: str, facts: InvoiceFacts, report: AttemptReport, retry: Retry | None
) -> PaymentEvent:
    """The canonical event of a report (pure: a retried POST builds the same one)."""
    decline = None
    if isinstance(report, AttemptFailed):
        category = report.decline_category or facts.last_category
        decline = Decline(
            code=report.decline_code,
            category=DeclineCategory(category),
            message=report.decline_message,
        )
    succeeded = isinstance(report, AttemptSucceeded)
    return PaymentEvent(
        event_id=report_event_id(tenant, invoice_ref, report.attempt_id),
        type=EventType.PAYMENT_SUCCEEDED if succeeded else EventType.PAYMENT_FAILED,
        tenant=tenant,
        provider=facts.provider,
        source_type=SOURCE_TYPE,
        occurred_at=report.at,
        customer_ref=facts.customer_ref,
        subscription_ref=facts.subscription_ref,
        invoice_ref=invoice_ref,
        payment_ref=report.attempt_id,
        amount_minor=facts.amount_minor if report.amount_minor is None else report.amount_minor,
        currency=report.currency or facts.currency,
        decline=decline,
        attempt=retry.attempt if retry else None,
        paywatch_retry=retry is not None,
    )


def has_card_number(report: AttemptReport) -> bool:
    """True when a free-text field holds a card number (one field per line: never joined)."""
    texts = [report.attempt_id]
    if isinstance(report, AttemptFailed):
        texts += [t for t in (report.decline_code, report.decline_message) if t]
    body = "\n".join(texts).encode("utf-8")
    return pan.contains_pan(body) or (b"\\" in body and pan.contains_pan(pan.json_unescaped(body)))


def conflicts(stored: PaymentEvent, report: AttemptReport) -> bool:
    """Does ``report`` say something other than the stored event of the same attempt?"""
    said: dict[str, Any] = {"type": "PAYMENT_SUCCEEDED", "occurred_at": report.at}
    said |= {"amount_minor": report.amount_minor, "currency": report.currency}
    if isinstance(report, AttemptFailed):
        said |= {"type": "PAYMENT_FAILED", "code": report.decline_code}
        said |= {"message": report.decline_message, "category": report.decline_category}
    decline = stored.decline.model_dump() if stored.decline else {}
    known = {**stored.model_dump(), **decline}
    return any(value is not None and value != known.get(key) for key, value in said.items())
