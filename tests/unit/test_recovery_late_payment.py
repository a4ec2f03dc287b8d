"""A payment after exhaustion ends the saga recovered; nothing else reopens or moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery import TenantPolicy, decide
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    SagaState,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _event(kind: EventType, at: datetime, eid: str) -> PaymentEvent:
    failed = kind is EventType.PAYMENT_FAILED
    return PaymentEvent(
        event_id=eid,
        type=kind,
        tenant="acme",
        provider="generic",
        source_type="test",
        occurred_at=at,
        invoice_ref="inv_1",
        amount_minor=4900,
        currency="EUR",
        decline=Decline(code="51", category=DeclineCategory.SOFT, network="visa", network_code="51")
        if failed
        else None,
        payment_method=PaymentMethod(brand="visa", last4="4242", fingerprint="fp1")
        if failed
        else None,
    )


def test_a_failure_older_than_the_window_is_exhausted_and_a_later_payment_recovers_it() -> None:
    policy = TenantPolicy()
    old = _event(EventType.PAYMENT_FAILED, NOW - timedelta(days=60), "e1")
    opened = decide(None, old, NOW, policy)
    assert opened.new_state is not None and opened.new_state.status is SagaState.exhausted
    assert not [c for c in opened.commands if c.type.value == "RETRY_PAYMENT"]

    paid = _event(EventType.PAYMENT_SUCCEEDED, NOW - timedelta(days=50), "e2")
    late = decide(opened.new_state, paid, NOW, policy)
    assert late.new_state is not None and late.new_state.status is SagaState.recovered
    (move,) = late.transitions
    assert (move.from_state, move.to_state) == (SagaState.exhausted, SagaState.recovered)
    assert move.rule.id == "paywatch.paid_after_exhaustion" and move.rule.edition
    assert late.commands == ()

    # Duplicates and reordered failures change nothing any more.
    again = decide(late.new_state, paid, NOW, policy)
    assert again.transitions == () and again.new_state == late.new_state
    stale = decide(
        late.new_state,
        _event(EventType.PAYMENT_FAILED, NOW - timedelta(days=55), "e3"),
        NOW,
        policy,
    )
    assert stale.new_state is not None and stale.new_state.status is SagaState.recovered
    assert stale.transitions == () and stale.commands == ()


def test_a_canceled_saga_stays_canceled_when_a_payment_arrives() -> None:
    policy = TenantPolicy()
    failed = decide(None, _event(EventType.PAYMENT_FAILED, NOW, "c1"), NOW, policy)
    canceled = decide(failed.new_state, _event(EventType.INVOICE_VOIDED, NOW, "c2"), NOW, policy)
    assert canceled.new_state is not None and canceled.new_state.status is SagaState.canceled
    paid = decide(canceled.new_state, _event(EventType.PAYMENT_SUCCEEDED, NOW, "c3"), NOW, policy)
    assert paid.new_state is not None and paid.new_state.status is SagaState.canceled
    assert paid.transitions == ()
