"""The PaymentEvent a sandbox retry appends: fields, determinism, Avro round trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paywatch.executor.outcome import (
    DECLINE_CODE,
    RETRY_SOURCE,
    SANDBOX_PROVIDER,
    outcome_event,
    outcome_event_id,
)
from paywatch.executor.simulator import SimulatorConfig, Verdict, simulate
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import (
    CommandType,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RawRef,
    RecoveryCommand,
    RuleRef,
)
from paywatch.settings import Settings

DUE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
AT = {"topic": "recovery.commands", "partition": 2, "offset": 41}


def command(command_id: str = "cmd-1", **changes: object) -> RecoveryCommand:
    base = RecoveryCommand(
        command_id=command_id,
        type=CommandType.RETRY_PAYMENT,
        tenant="acme",
        invoice_ref="in_1",
        due_at=DUE,
        attempt=3,
        reason="soft decline, visa category 2",
        rule=RuleRef(id="visa-cat2", edition="2026-04-18", source="Visa Core Rules"),
        cause_event_id="evt-cause",
        provider="stripe",
        customer_ref="cus_1",
        subscription_ref="sub_1",
        payment_ref="pi_1",
        amount_minor=4900,
        currency="USD",
        decline_category=DeclineCategory.SOFT,
    )
    return base.model_copy(update=changes)


def verdict(succeeded: bool, category: DeclineCategory = DeclineCategory.SOFT) -> Verdict:
    return Verdict(succeeded=succeeded, category=category, day=4, probability=0.2, draw=0.1)


def test_a_successful_retry_is_a_payment_succeeded_marked_as_paywatch_retry() -> None:
    event = outcome_event(command(), verdict(True), **AT)
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert event.paywatch_retry is True
    assert event.decline is None
    assert (event.tenant, event.provider, event.source_type) == ("acme", "stripe", RETRY_SOURCE)
    assert (event.invoice_ref, event.customer_ref, event.subscription_ref) == (
        "in_1",
        "cus_1",
        "sub_1",
    )
    assert (event.payment_ref, event.amount_minor, event.currency, event.attempt) == (
        "pi_1",
        4900,
        "USD",
        3,
    )
    assert event.occurred_at == DUE  # the due time, so a re-execution gives the same event
    assert event.raw == RawRef(
        topic="recovery.commands", partition=2, offset=41, provider_event_id="cmd-1"
    )


def test_a_failed_retry_carries_a_sandbox_decline_of_the_same_category() -> None:
    event = outcome_event(command(), verdict(False, DeclineCategory.HARD), **AT)
    assert event.type is EventType.PAYMENT_FAILED
    assert event.paywatch_retry is True
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (DECLINE_CODE, DeclineCategory.HARD)
    assert event.decline.message


def test_the_event_id_is_a_deterministic_function_of_tenant_and_command_id() -> None:
    first = outcome_event(command(), verdict(True), **AT)
    again = outcome_event(
        command(), verdict(True), topic="recovery.commands", partition=0, offset=9
    )
    assert first.event_id == again.event_id == outcome_event_id(command())
    assert uuid.UUID(first.event_id).version == 5
    assert outcome_event_id(command("cmd-2")) != first.event_id
    assert outcome_event_id(command(tenant="other")) != first.event_id


def test_re_executing_a_command_gives_an_identical_event() -> None:
    config = SimulatorConfig.parse(11, "")
    events = [outcome_event(command(), simulate(command(), config, 2), **AT) for _ in range(3)]
    assert events[0] == events[1] == events[2]


def test_without_provider_the_outcome_is_the_sandbox_s() -> None:
    event = outcome_event(
        command(provider=None, customer_ref=None, amount_minor=None), verdict(True), **AT
    )
    assert event.provider == SANDBOX_PROVIDER
    assert (event.customer_ref, event.amount_minor) == (None, None)


def test_only_retry_commands_have_a_payment_outcome() -> None:
    with pytest.raises(ValueError, match="NOTIFY_CUSTOMER"):
        outcome_event(command(type=CommandType.NOTIFY_CUSTOMER), verdict(True), **AT)


def test_outcomes_round_trip_through_the_payments_events_codec() -> None:
    codec = make_codec(Settings())
    for ok in (True, False):
        event = outcome_event(command(), verdict(ok), **AT)
        wire = codec.encode(event, topic="payments.events")
        assert codec.decode(wire, PaymentEvent, topic="payments.events") == event
