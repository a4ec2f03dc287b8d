"""Shared pure pieces of normalizing fetched ledger documents (Xero invoices, QBO invoices).

Ledgers have no declines: an invoice is *overdue* when money is still due after its due
date. paywatch reports that as INVOICE_OVERDUE with a ``Decline`` of code ``overdue`` whose
category defaults to ACTION (the customer has to pay; there is no card to retry) and is
configurable per provider. Every event takes the webhook's event time as ``occurred_at``
and ``event_id(tenant, provider, ref.dedupe_key, index)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from paywatch.errors import PayloadError
from paywatch.providers.base import event_id
from paywatch.providers.money import to_minor
from paywatch.providers.thin.refs import ResourceRef
from paywatch.schemas.models import Decline, DeclineCategory, PaymentEvent, RawRef

RawCoords = tuple[str, int, int]
"""(topic, partition, offset) of the ``webhooks.fetched`` record the document came from."""

OVERDUE_CODE = "overdue"
OVERDUE_SOURCE = (
    "reference/webhooks.md §1.5/§1.6: ledgers send no payment-failed event; overdue = amount "
    "due > 0 after the due date. Category is paywatch's choice (customer must pay) [U]"
)
_CURRENCY = re.compile(r"[A-Za-z]{3}")


@dataclass(frozen=True)
class LedgerRules:
    """Tunable choices of ledger normalization (documented defaults)."""

    grace_days: int = 0
    """Days after the due date before an unpaid invoice counts as overdue."""
    overdue_category: DeclineCategory = DeclineCategory.ACTION
    """Decline category of INVOICE_OVERDUE events."""

    def __post_init__(self) -> None:
        if not 0 <= self.grace_days <= 365:
            raise ValueError("grace_days must be between 0 and 365")


def decimal_amount(value: Any, what: str) -> Decimal | None:
    """A JSON number (or numeric string) as a finite Decimal; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str | float):
        raise PayloadError(f"{what} is not a number")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise PayloadError(f"{what} is not a number") from exc
    if not amount.is_finite():
        raise PayloadError(f"{what} is not a finite number")
    return amount


def currency_code(value: Any) -> str | None:
    """An ISO 4217 code upper-cased, None when absent; PayloadError when not 3 letters."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise PayloadError("currency is not a 3-letter ISO 4217 code")
    return value.upper()


def minor(amount: Decimal | None, currency: str | None) -> int | None:
    """Integer minor units, or None without an amount or a currency."""
    if amount is None or currency is None:
        return None
    return to_minor(amount, currency)


def is_overdue(due: date | None, at: datetime, rules: LedgerRules) -> bool:
    """Unpaid after the due date (+ grace), comparing UTC calendar dates [U: org timezone]."""
    # Days between the dates, not ``due + grace``: that overflows for a DueDate in 9999.
    return due is not None and (at.date() - due).days > rules.grace_days


def overdue_identity(ref: ResourceRef, invoice_id: str, due: date) -> str:
    """Identity of "invoice X of organisation O is overdue since due date D"."""
    return f"{ref.tenant_ref}/invoice/{invoice_id}/overdue/{due.isoformat()}"


def overdue_decline(due: date, at: datetime, rules: LedgerRules) -> Decline:
    """The Decline of an INVOICE_OVERDUE event."""
    days = (at.date() - due).days
    return Decline(
        code=OVERDUE_CODE,
        category=rules.overdue_category,
        message=f"overdue: due {due.isoformat()}, unpaid {days} day(s) later",
    )


def build_event(
    tenant: str,
    ref: ResourceRef,
    raw_coords: RawCoords,
    index: int,
    draft: dict[str, Any],
) -> PaymentEvent:
    """The canonical event of one fetched document (``draft`` holds type, refs, amounts).

    The event id comes from the webhook event (``ref.dedupe_key``), except for overdue:
    every later update of an unpaid invoice is seen as overdue again, yet it is one fact
    per invoice and due date, so its id is ``overdue_identity`` and repeats collapse.
    """
    topic, partition, offset = raw_coords
    key = ref.dedupe_key
    draft = dict(draft)
    identity = draft.pop("identity", None) or key
    try:
        return PaymentEvent(
            event_id=event_id(tenant, ref.provider, identity, index),
            tenant=tenant,
            provider=ref.provider,
            source_type=ref.event_type,
            occurred_at=ref.event_time,
            raw=RawRef(topic=topic, partition=partition, offset=offset, provider_event_id=key),
            **draft,
        )
    except ValidationError as exc:
        raise PayloadError(f"fetched {ref.provider} {ref.kind} has unexpected values") from exc
