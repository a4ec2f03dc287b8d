"""Schedule-only mode (issue 11 item 2): the policy option, the flag and budget a retry
carries, the card's budget the ledger adds, and the executor that does not charge. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paywatch.errors import InvalidPolicy
from paywatch.executor.decide import (
    SCHEDULED,
    Context,
    Coords,
    decide,
    decide_batch,
    needs_anchor,
)
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.codec import make_codec
from paywatch.recovery.card_messages import read_card_message
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.ledger import AttemptSource, CardAttempt, CardLedger
from paywatch.recovery.limits import card_budget
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.recovery.permits import grant
from paywatch.recovery.shell import Step, saga_of, step
from paywatch.recovery.state import Saga, TimerFired, TimerPurpose
from paywatch.recovery.tenant_policy import Charging, TenantPolicy
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    RuleRef,
)
from paywatch.settings import Settings
from paywatch.tenants.policy_input import canonical_json, parse_policy

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CARD = "acme/fp/fp_v"
VISA = PaymentMethod(brand="visa", last4="4242", exp_month=1, exp_year=2030, fingerprint="fp_v")
DEFAULT = TenantPolicy()  # paywatch retries for Adyen by default
SCHEDULE_ONLY = TenantPolicy(charging=Charging.SCHEDULE_ONLY)
DEFAULT_REVISION = "4be75a3f0d6a6cae"
"""The default policy's revision before ``charging`` existed (test_risk_renewals pins it too)."""


def failure(invoice: str = "in_1", network: str = "visa") -> PaymentEvent:
    return PaymentEvent(
        event_id=f"evt_{invoice}",
        type=EventType.PAYMENT_FAILED,
        tenant="acme",
        provider="adyen",
        source_type="test",
        occurred_at=T0,
        customer_ref="cus_1",
        invoice_ref=invoice,
        amount_minor=4900,
        currency="USD",
        decline=Decline(category=DeclineCategory.SOFT, network=network, network_code="51"),
        payment_method=VISA,
    )


# -- the policy option ---------------------------------------------------------------


def test_charging_defaults_to_paywatch_and_leaves_the_revision_alone() -> None:
    assert DEFAULT.charging is Charging.PAYWATCH and not DEFAULT.schedule_only
    assert DEFAULT.revision == DEFAULT_REVISION
    assert TenantPolicy(charging=Charging.PAYWATCH).revision == DEFAULT_REVISION
    assert parse_policy({"charging": "paywatch"}).revision == DEFAULT_REVISION
    assert SCHEDULE_ONLY.schedule_only
    assert SCHEDULE_ONLY.revision != DEFAULT_REVISION


def test_charging_round_trips_through_the_policy_json() -> None:
    stored = canonical_json(SCHEDULE_ONLY)
    assert '"charging":"schedule_only"' in stored
    again = TenantPolicy.model_validate_json(stored)
    assert again == SCHEDULE_ONLY and again.revision == SCHEDULE_ONLY.revision
    assert parse_policy({"charging": "schedule_only"}) == SCHEDULE_ONLY


def test_an_unknown_charging_mode_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidPolicy) as refused:
        parse_policy({"charging": "tenant"})
    assert [field for field, _ in refused.value.errors] == ["charging"]


# -- what the saga sends -------------------------------------------------------------


def retry_request(policy: TenantPolicy) -> tuple[Saga, RecoveryCommand]:
    """A failure, then its first retry fired on the worker's path: the permit request."""

    def run(entry: bytes | None, event: PaymentEvent | TimerFired, now: datetime) -> Step:
        return step(entry, event, partition=0, wall_now=now, clock=SagaClock(), policy=policy)

    opened = run(None, failure(), T0)
    saga = saga_of(opened.entry)
    assert saga is not None
    timer = next(t for t in saga.pending if t.purpose is TimerPurpose.RETRY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    asked = run(opened.entry, fired, timer.due_at)
    request = read_card_message(asked.card_messages[-1][1])
    assert request.saga is not None and request.command is not None
    return request.saga, request.command


def test_a_retry_says_who_charges_it_and_how_much_of_the_invoices_budget_is_used() -> None:
    _, scheduled = retry_request(SCHEDULE_ONLY)
    _, charged = retry_request(DEFAULT)
    assert scheduled.type is CommandType.RETRY_PAYMENT and scheduled.schedule_only
    assert not charged.schedule_only
    for cmd in (scheduled, charged):
        # The original failure and this retry: one reattempt of the four allowed.
        assert (cmd.attempts_used, cmd.attempts_allowed) == (1, 4)
        assert cmd.card_retries_left is None  # only the card's ledger can say
    assert scheduled.model_copy(update={"schedule_only": False}) == charged


def test_only_retries_carry_the_flag() -> None:
    shell = MemoryShell(SCHEDULE_ONLY, permits=True)
    shell.receive(failure(), T0)
    notices = [c for c in shell.commands if c.type is CommandType.NOTIFY_CUSTOMER]
    assert notices and not any(c.schedule_only or c.attempts_used is not None for c in notices)


def other_attempts(count: int, start: datetime, step_: timedelta) -> tuple[CardAttempt, ...]:
    return tuple(
        CardAttempt(
            id=f"other_{i}",
            card=CARD,
            invoice_ref=f"in_other_{i}",
            provider="adyen",
            source=AttemptSource.PROVIDER,
            at=start + i * step_,
            amount_minor=4900,
            currency="USD",
        )
        for i in range(count)
    )


def test_the_ledger_sends_a_granted_retry_with_what_the_card_has_left() -> None:
    saga, command = retry_request(SCHEDULE_ONLY)
    now = command.due_at
    # 12 attempts of other invoices plus this invoice's failure and this retry: 14 of the
    # 21 Visa allows in 30 days (the original and 20 reattempts). Two older ones left the
    # window and do not count.
    old = other_attempts(2, now - 40 * DAY, DAY)
    recent = tuple(
        a.model_copy(update={"id": f"recent_{a.id}"})
        for a in other_attempts(12, now - 10 * DAY, timedelta(hours=5))
    )
    ledger = CardLedger(card=CARD, entries=old + recent)
    permit = grant(ledger, saga, command, now, SCHEDULE_ONLY)
    assert permit.granted and permit.command is not None
    assert (permit.command.card_retries_left, permit.command.card_limit) == (7, "visa.reattempts")
    assert permit.command.schedule_only and permit.command.command_id == command.command_id
    replay = grant(permit.ledger, saga, command, now, SCHEDULE_ONLY)
    assert replay.replayed and replay.command is None  # sent already: nothing to send again


def test_an_unknown_network_is_bound_by_the_tightest_counter_of_both() -> None:
    saga, command = retry_request(DEFAULT)
    now = command.due_at
    unknown = saga.model_copy(
        update={
            "network": None,
            "ledger": CardLedger(card=CARD, entries=other_attempts(3, now - DAY / 2, DAY / 8)),
        }
    )
    # Mastercard's 10 declines in 24 h: 3 others and the invoice's own failure leave 6.
    budget = card_budget(unknown, now, DEFAULT)
    assert (budget.left, budget.rule.id) == (6, "mastercard.declines_24h")
    full = other_attempts(30, now - 2 * DAY, timedelta(minutes=10))
    crowded = unknown.model_copy(update={"ledger": CardLedger(card=CARD, entries=full)})
    assert card_budget(crowded, now, DEFAULT).left == 0  # never negative


def test_the_memory_shell_sends_retries_through_the_ledger_with_the_budget() -> None:
    shell = MemoryShell(SCHEDULE_ONLY, permits=True)
    shell.receive(failure(), T0)
    for day in range(1, 3):
        shell.fire_due(T0 + day * DAY)
    retries = [c for c in shell.commands if c.type is CommandType.RETRY_PAYMENT]
    assert retries and all(c.schedule_only for c in retries)
    assert [c.card_retries_left for c in retries] == [19]  # 21 - the failure - this retry


# -- the executor --------------------------------------------------------------------

AT = Coords("recovery.commands", 0, 3)
CODEC = make_codec(Settings())


def context() -> Context:
    return Context(
        SimulatorConfig.parse(3, '{"SOFT": 1}'),
        1.0,
        T0,
        "payments.events",
        lambda event: CODEC.encode(event, topic="payments.events"),
    )


def command(command_id: str, *, schedule_only: bool, invoice: str = "in_1") -> RecoveryCommand:
    return RecoveryCommand(
        command_id=command_id,
        type=CommandType.RETRY_PAYMENT,
        tenant="acme",
        invoice_ref=invoice,
        due_at=T0,
        attempt=1,
        reason="test",
        rule=RuleRef(id="r", edition="2026-01", source="tests"),
        provider="adyen",
        decline_category=DeclineCategory.SOFT,
        schedule_only=schedule_only,
    )


def test_the_executor_journals_a_schedule_only_retry_and_charges_nothing() -> None:
    scheduled = command("c-sched", schedule_only=True)
    decision = decide("slot", scheduled, AT, None, context())
    assert decision.output is None, "nothing may be appended for a retry the tenant charges"
    assert decision.entry.outcome == SCHEDULED == "scheduled"
    assert decision.entry.detail["attempt"] == 1 and "event_id" not in decision.entry.detail
    assert not needs_anchor(scheduled)  # no simulator, so no day 0 to look up


def test_a_batch_charges_a_normal_tenants_retry_and_only_schedules_the_other() -> None:
    items = [
        ("a", command("c-sched", schedule_only=True), AT),
        ("b", command("c-paid", schedule_only=False, invoice="in_2"), AT),
    ]
    batch = decide_batch(items, {}, context())
    outcomes = {d.entry.command.command_id: (d.entry.outcome, d.output) for d in batch.decisions}
    assert outcomes["c-sched"] == ("scheduled", None)
    paid, output = outcomes["c-paid"]
    assert paid == "succeeded" and output is not None  # the table makes SOFT always succeed
    event = CODEC.decode(output.value, PaymentEvent, topic="payments.events")
    assert event.paywatch_retry and event.invoice_ref == "in_2"
    assert needs_anchor(command("c-paid", schedule_only=False))
