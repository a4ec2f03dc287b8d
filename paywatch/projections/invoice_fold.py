"""The pure fold of the `invoices` read model: one row per tenant/invoice that has failed.

`evolve(row, event, success)` folds one event. Providers deliver out of order and more
than once, so the fold compares provider timestamps instead of trusting arrival order: an
older event never overwrites newer state, a success always wins over a failure, and
applying an event twice changes nothing.

The `status` it yields is what the provider's events alone imply; the invoice's status
column is decided from it and the saga's state in one place,
:func:`paywatch.projections.invoices.decide_status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, SagaState

FAILURE_TYPES = frozenset(
    {EventType.PAYMENT_FAILED, EventType.SUBSCRIPTION_PAST_DUE, EventType.INVOICE_OVERDUE}
)
"""Events that (re)open an invoice as failed. Ledgers (Xero, QuickBooks) have no payment
failures: an unpaid invoice past its due date is their failure."""
SUCCESS_TYPES = frozenset({EventType.PAYMENT_SUCCEEDED, EventType.SUBSCRIPTION_REACTIVATED})
CLOSE_TYPES = {
    EventType.SUBSCRIPTION_CANCELED: SagaState.canceled,
    EventType.INVOICE_VOIDED: SagaState.canceled,
    EventType.INVOICE_UNCOLLECTIBLE: SagaState.exhausted,
}
CLOSED = frozenset({SagaState.canceled, SagaState.exhausted})


@dataclass(frozen=True)
class InvoiceRow:
    """The columns of one `invoices` row."""

    tenant: str
    invoice_ref: str
    provider: str
    customer_ref: str | None
    subscription_ref: str | None
    status: SagaState
    amount_minor: int | None
    currency: str | None
    attempts: int
    last_decline_code: str | None
    last_decline_category: str | None
    last_decline_message: str | None
    last_decline_at: datetime | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    recovered_at: datetime | None
    canceled_at: datetime | None
    last_event_at: datetime
    last_event_id: str

    @classmethod
    def from_record(cls, rec: Any) -> InvoiceRow:
        """Build from a database record of the `COLUMNS`."""
        values = dict(rec)
        values["status"] = SagaState(values["status"])
        values["last_event_id"] = str(values["last_event_id"])
        return cls(**values)

    def but(self, **changes: Any) -> InvoiceRow:
        """A copy with `changes`: `dataclasses.replace` without re-running `__init__`, several
        times faster, and the fold makes a few per event."""
        row = object.__new__(InvoiceRow)
        row.__dict__.update(self.__dict__, **changes)
        return row

    def values(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order."""
        values: tuple[Any, ...] = _VALUES(self)
        return values


COLUMNS = tuple(InvoiceRow.__dataclass_fields__)
_VALUES = attrgetter(*COLUMNS)


def _newer(event: PaymentEvent, at: datetime | None, event_id: str | None = None) -> bool:
    """Is the event at least as new as `at` (ties broken by event id, deterministically)?"""
    if at is None:
        return True
    return (event.occurred_at, event.event_id) >= (at, event_id or "")


def _min(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _max(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else max(a, b)


def _new_row(event: PaymentEvent) -> InvoiceRow:
    decline = event.decline
    return InvoiceRow(
        tenant=event.tenant,
        invoice_ref=event.invoice_ref,
        provider=event.provider,
        customer_ref=event.customer_ref,
        subscription_ref=event.subscription_ref,
        status=SagaState.failed,
        amount_minor=event.amount_minor,
        currency=event.currency,
        attempts=max(event.attempt or 1, 1),
        last_decline_code=decline.code if decline else None,
        last_decline_category=(decline.category if decline else DeclineCategory.UNKNOWN).value,
        last_decline_message=decline.message if decline else None,
        last_decline_at=event.occurred_at if decline else None,
        first_failed_at=event.occurred_at,
        last_failed_at=event.occurred_at,
        recovered_at=None,
        canceled_at=None,
        last_event_at=event.occurred_at,
        last_event_id=event.event_id,
    )


def _touch(row: InvoiceRow, event: PaymentEvent) -> InvoiceRow:
    """Fill blanks and move last_event_* forward."""
    newer = _newer(event, row.last_event_at, row.last_event_id)
    return row.but(
        customer_ref=row.customer_ref or event.customer_ref,
        subscription_ref=row.subscription_ref or event.subscription_ref,
        amount_minor=(
            event.amount_minor
            if newer and event.amount_minor is not None
            else row.amount_minor
            if row.amount_minor is not None
            else event.amount_minor
        ),
        currency=(event.currency if newer and event.currency else row.currency or event.currency),
        last_event_at=event.occurred_at if newer else row.last_event_at,
        last_event_id=event.event_id if newer else row.last_event_id,
    )


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _decline_rank(
    classified: bool, at: datetime | None, code: str | None
) -> tuple[bool, datetime, str]:
    return (classified, at or _EPOCH, code or "")


def _takes_decline(row: InvoiceRow, event: PaymentEvent) -> bool:
    """Keep the max of (classified, time, code): a total order, so arrival order never matters."""
    decline = event.decline
    if decline is None:
        return False
    current = _decline_rank(
        row.last_decline_category not in (None, DeclineCategory.UNKNOWN.value),
        row.last_decline_at,
        row.last_decline_code,
    )
    offered = _decline_rank(
        decline.category is not DeclineCategory.UNKNOWN, event.occurred_at, decline.code
    )
    return offered > current


def _apply_failure(row: InvoiceRow, event: PaymentEvent) -> InvoiceRow:
    decline = event.decline
    if decline is not None and _takes_decline(row, event):
        row = row.but(
            last_decline_code=decline.code,
            last_decline_category=decline.category.value,
            last_decline_message=decline.message,
            last_decline_at=event.occurred_at,
        )
    return row.but(
        attempts=max(row.attempts, event.attempt or 1),
        first_failed_at=_min(row.first_failed_at, event.occurred_at),
        last_failed_at=_max(row.last_failed_at, event.occurred_at),
    )


def evolve(
    row: InvoiceRow | None, event: PaymentEvent, success: PaymentEvent | None
) -> InvoiceRow | None:
    """Fold one event into an invoice row.

    `success` is the latest success already in the event log for this invoice, so a
    failure that arrives after its own recovery does not reopen it and the row ends up
    as if the events had arrived in order. A failure *newer* than every success does
    reopen it (refs such as subscription ids are reused across billing cycles).
    Successes and closes for invoices that never failed create no row.
    """
    if event.type in FAILURE_TYPES:
        row = _apply_failure(_touch(row, event), event) if row else _new_row(event)
        if success is not None:
            row = _succeed(_touch(row, success), success)
        return _event_state(row)
    if row is None:
        return None
    row = _touch(row, event)
    if event.type in SUCCESS_TYPES:
        return _event_state(_succeed(row, event))
    closed = CLOSE_TYPES.get(event.type)
    if closed is not None:
        row = row.but(canceled_at=_max(row.canceled_at, event.occurred_at))
        return _event_state(row, closed)
    return row


def _succeed(row: InvoiceRow, success: PaymentEvent) -> InvoiceRow:
    return row.but(recovered_at=_max(row.recovered_at, success.occurred_at))


def _event_state(row: InvoiceRow, closed: SagaState | None = None) -> InvoiceRow:
    """The status the events alone imply: the latest of failure, success and close wins.

    A success at or after the last failure recovers; a close after the last failure
    (and not beaten by a success) cancels or exhausts; otherwise the invoice is failed.
    A stored row's status is the saga's when the invoice has a workflow; it is read here
    only in that case's shadow, since the saga's state then wins anyway.
    """
    last_failure = row.last_failed_at or _EPOCH
    if row.recovered_at is not None and row.recovered_at >= last_failure:
        return _status(row, SagaState.recovered)
    if row.canceled_at is not None and row.canceled_at >= last_failure:
        kind = closed or (row.status if row.status in CLOSED else SagaState.canceled)
        return _status(row, kind)
    return _status(row, SagaState.failed)


def _status(row: InvoiceRow, status: SagaState) -> InvoiceRow:
    return row if row.status is status else row.but(status=status)
