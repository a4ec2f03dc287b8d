"""Retry permits: the worker's sagas ask the card's ledger, which has the last word.

Pure tests of the three pieces: the saga shell routes retries and attempts to the card
(``shell.step`` without a local card table), the ledger grants or refuses against every
attempt on the card (``permits.grant``), and a refused saga plans again (``PermitDenied``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery import TenantPolicy
from paywatch.recovery.card_messages import denial, read_card_message
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.ledger import AttemptSource, CardAttempt, CardLedger
from paywatch.recovery.permits import grant
from paywatch.recovery.rules import paywatch_rule
from paywatch.recovery.shell import Entry, Step, read_tick, saga_of, step
from paywatch.recovery.state import PermitDenied, Saga, SagaInput, TimerFired, TimerPurpose
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    SagaState,
)

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CARD = "acme/fp/fp_v"
VISA = PaymentMethod(brand="visa", last4="4242", exp_month=1, exp_year=2030, fingerprint="fp_v")
POLICY = TenantPolicy()  # paywatch retries for Adyen by default
CLOCK = SagaClock()
LIMIT = paywatch_rule("visa.limit", "test")


def failure(invoice: str = "in_1", at: datetime = T0) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"evt_{invoice}",
        type=EventType.PAYMENT_FAILED,
        tenant="acme",
        provider="adyen",
        source_type="test",
        occurred_at=at,
        customer_ref="cus_1",
        invoice_ref=invoice,
        amount_minor=4900,
        currency="USD",
        decline=Decline(category=DeclineCategory.SOFT, network="visa", network_code="51"),
        payment_method=VISA,
    )


def run(entry: Entry | None, event: SagaInput, now: datetime) -> Step:
    return step(entry, event, partition=0, wall_now=now, clock=CLOCK, policy=POLICY)


def retry_asked() -> tuple[Step, Step]:
    """A failure, then its first retry timer fired on the worker's path."""
    opened = run(None, failure(), T0)
    saga = saga_of(opened.entry)
    assert saga is not None
    timer = next(t for t in saga.pending if t.purpose is TimerPurpose.RETRY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    return opened, run(opened.entry, fired, timer.due_at)


def other_attempts(count: int, start: datetime) -> tuple[CardAttempt, ...]:
    return tuple(
        CardAttempt(
            id=f"other_{i}",
            card=CARD,
            invoice_ref=f"in_other_{i}",
            provider="adyen",
            source=AttemptSource.PAYWATCH,
            at=start + i * timedelta(hours=1),
            amount_minor=4900,
            currency="USD",
        )
        for i in range(count)
    )


def test_the_worker_path_sends_attempts_and_retries_to_the_card_not_to_executors() -> None:
    opened, asked = retry_asked()
    first = [read_card_message(value) for _, value in opened.card_messages]
    assert [m.card for m in first] == [CARD]
    assert [e.id for e in first[0].entries] == ["evt_in_1"]
    assert not [c for c in asked.commands if c.type is CommandType.RETRY_PAYMENT]
    requests = [read_card_message(value) for _, value in asked.card_messages]
    assert len(requests) == 1 and requests[0].command is not None
    assert requests[0].command.type is CommandType.RETRY_PAYMENT
    assert requests[0].saga is not None and requests[0].saga.retries == 1


def _request() -> tuple[Saga, RecoveryCommand, datetime]:
    _, asked = retry_asked()
    request = read_card_message(asked.card_messages[-1][1])
    assert request.saga is not None and request.command is not None
    return request.saga, request.command, request.command.due_at


def test_the_ledger_grants_while_the_card_has_room_and_records_the_attempt() -> None:
    saga, command, now = _request()
    ledger = CardLedger(card=CARD, entries=other_attempts(19, now - 10 * DAY))
    permit = grant(ledger, saga, command, now, POLICY)
    assert permit.granted and not permit.replayed
    assert command.command_id in {e.id for e in permit.ledger.entries}
    again = grant(permit.ledger, saga, command, now, POLICY)
    assert again.granted and again.replayed and again.ledger == permit.ledger


def test_the_ledger_refuses_the_twenty_first_visa_attempt_until_the_oldest_leaves() -> None:
    saga, command, now = _request()
    start = now - 10 * DAY
    ledger = CardLedger(card=CARD, entries=other_attempts(20, start))
    permit = grant(ledger, saga, command, now, POLICY)
    assert not permit.granted and permit.ledger == ledger
    assert permit.until == start + 30 * DAY
    assert permit.rule is not None and permit.rule.id.startswith("visa")


def test_a_stop_on_the_card_from_another_invoice_refuses_for_good() -> None:
    saga, command, now = _request()
    marker = other_attempts(1, now - DAY)[0].model_copy(
        update={"counted": False, "stop": paywatch_rule("visa.cat1", "test")}
    )
    permit = grant(CardLedger(card=CARD, entries=(marker,)), saga, command, now, POLICY)
    assert not permit.granted and permit.until is None


def _denied(asked: Step, until: datetime | None, command_id: str | None = None) -> Step:
    request = read_card_message(asked.card_messages[-1][1])
    assert request.command is not None
    refused = PermitDenied(
        tenant="acme",
        invoice_ref="in_1",
        command_id=command_id or request.command.command_id,
        until=until,
        rule=LIMIT,
        reason="20 attempts in 30 days",
    )
    event = read_tick(denial(refused))  # through the wire format the saga agent reads
    assert event == refused
    return run(asked.entry, event, request.command.due_at + timedelta(seconds=1))


def test_a_refused_retry_is_undone_and_planned_again_when_the_card_allows() -> None:
    _, asked = retry_asked()
    until = T0 + 9 * DAY
    out = _denied(asked, until)
    saga = saga_of(out.entry)
    assert saga is not None and saga.retries == 0 and not saga.in_flight
    assert not [a for a in saga.attempts if a.source is AttemptSource.PAYWATCH]
    retry = [t for t in saga.pending if t.purpose is TimerPurpose.RETRY]
    assert [t.due_at for t in retry] == [until]
    assert out.commands == [] and out.card_messages == []
    assert [t.rule.id for t in out.transitions] == [LIMIT.id]
    assert out.transitions[0].to_state is SagaState.retrying


def test_a_retry_refused_for_good_leaves_the_saga_awaiting_the_customer() -> None:
    _, asked = retry_asked()
    out = _denied(asked, None)
    saga = saga_of(out.entry)
    assert saga is not None and not saga.has(TimerPurpose.RETRY)
    assert out.transitions and out.transitions[-1].rule.id == LIMIT.id
    assert out.transitions[-1].to_state is SagaState.awaiting_customer


def test_a_refusal_of_another_command_changes_nothing() -> None:
    _, asked = retry_asked()
    out = _denied(asked, T0 + 9 * DAY, command_id="not-this-one")
    assert saga_of(out.entry) == saga_of(asked.entry)
    assert out.transitions == [] and out.commands == []
