"""The invoices read model fold: out-of-order, duplicated events give one answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.projections.invoice_fold import InvoiceRow, evolve
from paywatch.schemas.models import Decline, DeclineCategory, EventType, PaymentEvent, SagaState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(
    n: int,
    type_: EventType = EventType.PAYMENT_FAILED,
    *,
    minutes: int = 0,
    attempt: int | None = None,
    decline: Decline | None = None,
    amount: int | None = 4900,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        type=type_,
        tenant="acme",
        provider="stripe",
        source_type="test",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref="cus_1",
        invoice_ref="in_1",
        amount_minor=amount,
        currency="USD",
        attempt=attempt,
        decline=decline,
    )


def fold(events: list[PaymentEvent]) -> InvoiceRow | None:
    """Project events one by one, as the sink does: the event log holds events[: i + 1]."""
    row: InvoiceRow | None = None
    for i, e in enumerate(events):
        seen = [s for s in events[: i + 1] if s.type is EventType.PAYMENT_SUCCEEDED]
        latest = max(seen, key=lambda s: (s.occurred_at, s.event_id)) if seen else None
        row = evolve(row, e, latest)
    return row


SOFT = Decline(code="insufficient_funds", category=DeclineCategory.SOFT)
HARD = Decline(code="stolen_card", category=DeclineCategory.HARD)
BLANK = Decline()


def test_first_failure_creates_a_failed_row() -> None:
    row = evolve(None, ev(1, attempt=1, decline=SOFT), None)
    assert row is not None
    assert row.status is SagaState.failed
    assert (row.attempts, row.amount_minor, row.currency) == (1, 4900, "USD")
    assert (row.last_decline_code, row.last_decline_category) == ("insufficient_funds", "SOFT")


def test_success_without_a_failure_creates_no_row() -> None:
    assert evolve(None, ev(1, EventType.PAYMENT_SUCCEEDED), None) is None
    assert evolve(None, ev(1, EventType.SUBSCRIPTION_CANCELED), None) is None


def test_success_recovers_and_later_cancel_does_not_reopen() -> None:
    row = fold(
        [
            ev(1, attempt=1),
            ev(2, EventType.PAYMENT_SUCCEEDED, minutes=5),
            ev(3, EventType.SUBSCRIPTION_CANCELED, minutes=9),
        ]
    )
    assert row is not None and row.status is SagaState.recovered
    assert row.recovered_at == T0 + timedelta(minutes=5)


def test_failure_after_its_own_recovery_does_not_reopen() -> None:
    # success delivered first (already in the event log), failure of an earlier attempt later
    row = fold([ev(2, EventType.PAYMENT_SUCCEEDED, minutes=5), ev(1, attempt=1)])
    assert row is not None and row.status is SagaState.recovered


def test_cancel_closes_and_uncollectible_exhausts() -> None:
    canceled = fold([ev(1), ev(2, EventType.SUBSCRIPTION_CANCELED, minutes=1)])
    exhausted = fold([ev(1), ev(2, EventType.INVOICE_UNCOLLECTIBLE, minutes=1)])
    assert canceled is not None and canceled.status is SagaState.canceled
    assert exhausted is not None and exhausted.status is SagaState.exhausted


def test_attempts_take_the_provider_count_not_the_number_of_events() -> None:
    row = fold([ev(1, attempt=1), ev(2, attempt=3, minutes=2), ev(3, minutes=3)])
    assert row is not None and row.attempts == 3


def test_unclassified_decline_does_not_hide_a_classified_one() -> None:
    row = fold([ev(1, minutes=0, decline=SOFT), ev(2, minutes=1, decline=BLANK)])
    assert row is not None and row.last_decline_category == "SOFT"


def test_duplicate_event_changes_nothing() -> None:
    once = fold([ev(1, attempt=1, decline=SOFT)])
    twice = fold([ev(1, attempt=1, decline=SOFT), ev(1, attempt=1, decline=SOFT)])
    assert once == twice


EVENTS = [
    ev(1, attempt=1, decline=SOFT),
    ev(2, attempt=2, minutes=60, decline=BLANK, amount=5100),
    ev(3, attempt=2, minutes=60, decline=HARD),
    ev(4, EventType.SUBSCRIPTION_PAST_DUE, minutes=61),
    ev(5, EventType.PAYMENT_SUCCEEDED, minutes=120, amount=5100),
    ev(6, EventType.SUBSCRIPTION_CANCELED, minutes=30),
]


@settings(max_examples=300, deadline=None)
@given(st.permutations(EVENTS), st.lists(st.sampled_from(EVENTS), max_size=3))
def test_any_arrival_order_and_duplicates_give_the_same_row(
    order: list[PaymentEvent], dupes: list[PaymentEvent]
) -> None:
    expected = fold(EVENTS)
    got = fold([*order, *dupes])
    assert expected is not None and got is not None
    assert got.status is SagaState.recovered
    keys = (
        "status",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "last_decline_code",
        "last_decline_category",
        "amount_minor",
        "last_event_at",
        "last_event_id",
    )
    assert {k: getattr(got, k) for k in keys} == {k: getattr(expected, k) for k in keys}


def test_a_newer_failure_reopens_a_recovered_invoice() -> None:
    # subscription-level refs are reused: next cycle's failure must show again
    row = fold(
        [
            ev(1, attempt=1),
            ev(2, EventType.PAYMENT_SUCCEEDED, minutes=5),
            ev(3, attempt=1, minutes=60 * 24 * 30),
        ]
    )
    assert row is not None and row.status is SagaState.failed


def test_an_older_success_does_not_recover_a_newer_failure() -> None:
    row = fold(
        [ev(3, minutes=100), ev(1, minutes=0), ev(2, EventType.PAYMENT_SUCCEEDED, minutes=5)]
    )
    assert row is not None and row.status is SagaState.failed


def test_a_close_older_than_the_last_failure_does_not_close() -> None:
    row = fold([ev(1, minutes=50), ev(2, EventType.SUBSCRIPTION_CANCELED, minutes=10)])
    assert row is not None and row.status is SagaState.failed
