"""decide() for high-risk customers (``TenantPolicy.high_risk``, issue 9 item 6).

The band comes with each PaymentEvent (the shell's risk view, here ``MemoryShell.risk``); a
customer at or above ``min_band`` gets a request for a new payment method at once and the
episode's escalation at ``opened_at + escalate_after_days``, both under rule
``tenant.high_risk``. Everything else about the plan stays as it was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from paywatch.recovery import TenantPolicy, TimerFired, TimerPurpose, decide
from paywatch.recovery.high_risk import at_least
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.schemas.models import CommandType, DeclineCategory, EventType, RiskBand, SagaState
from tests.unit.test_recovery_policy import (
    DAY,
    HOUR,
    NEW_CARD,
    REQUEST,
    RETRY,
    T0,
    advance,
    ev,
    of,
    saga,
    visa,
)

ESCALATE = CommandType.ESCALATE
RULE = "tenant.high_risk"
HIGH, CRITICAL, MEDIUM = RiskBand.HIGH, RiskBand.CRITICAL, RiskBand.MEDIUM


def shell(band: RiskBand | None = None, **policy: Any) -> MemoryShell:
    sh = MemoryShell(TenantPolicy.model_validate(policy))
    if band is not None:
        sh.risk["cus_1"] = band  # ev() names customer cus_1
    return sh


def escalation_due(sh: MemoryShell, invoice: str = "in_1") -> datetime | None:
    return next(
        (t.due_at for t in saga(sh, invoice).pending if t.purpose is TimerPurpose.ESCALATE), None
    )


def plan(sh: MemoryShell) -> list[tuple[CommandType, datetime]]:
    """What was sent and what is pending, by type and time (rule editions differ per policy)."""
    pending = [(t.command.type, t.due_at) for t in saga(sh).pending if t.command is not None]
    return [(c.type, c.due_at) for c in sh.commands] + pending


def test_bands_are_ordered_low_to_critical() -> None:
    assert at_least(CRITICAL, HIGH) and at_least(HIGH, HIGH) and not at_least(MEDIUM, HIGH)
    assert not at_least(HIGH, CRITICAL)  # alphabetically "CRITICAL" < "HIGH": not the order


def test_a_high_risk_customer_is_asked_for_a_new_method_at_once_and_escalated_on_day_3() -> None:
    sh = shell(HIGH, high_risk={})
    decision = sh.receive(ev(1, decline=visa("51")), T0)
    requests = [c for c in decision.commands if c.type is REQUEST]
    assert [(c.due_at, c.rule.id) for c in requests] == [(T0, RULE)]
    assert "risk band HIGH" in requests[0].reason
    assert requests[0].rule.edition == f"tenant-policy/{sh.policy.revision}"
    assert saga(sh).high_risk is HIGH and saga(sh).update_requests == 1
    assert not saga(sh).needs_update  # retries stay on their schedule
    moved = [t for t in decision.transitions if t.from_state is not None]
    assert [t.rule.id for t in moved] == [RULE] and "risk band HIGH" in (moved[0].reason or "")
    assert escalation_due(sh) == T0 + 3 * DAY
    advance(sh, T0 + 3 * DAY + HOUR)
    assert [c.due_at for c in of(sh, RETRY)] == [T0 + DAY]  # day 1 as for anyone
    (escalated,) = of(sh, ESCALATE)
    assert (escalated.due_at, escalated.rule.id) == (T0 + 3 * DAY, RULE)
    assert "high-risk customer (risk band HIGH) open 3 days" in escalated.reason
    assert (escalated.channel, escalated.template) == ("slack", "recovery_escalation")
    assert len(of(sh, REQUEST)) == 1


@pytest.mark.parametrize(
    ("band", "option"),
    [
        (HIGH, None),  # the tenant did not turn the option on
        (MEDIUM, {}),  # below HIGH
        (HIGH, {"min_band": "CRITICAL"}),  # below the tenant's bar
        (None, {}),  # no score, or a low one: the risk view holds nothing
    ],
)
def test_anyone_else_gets_the_default_plan(band: RiskBand | None, option: Any) -> None:
    sh = shell(band, high_risk=option)
    baseline = shell()
    for s in (sh, baseline):
        s.receive(ev(1, decline=visa("51")), T0)
        advance(s, T0 + 20 * DAY)
    assert plan(sh) == plan(baseline)
    assert of(sh, REQUEST) == [] and [c.due_at for c in of(sh, ESCALATE)] == [T0 + 14 * DAY]
    assert RULE not in {c.rule.id for c in sh.commands} | {t.rule.id for t in sh.transitions}
    assert saga(sh).high_risk is None


def test_a_critical_customer_counts_for_a_critical_bar_without_the_request() -> None:
    sh = shell(CRITICAL, high_risk={"min_band": "CRITICAL", "request_update_first": False})
    sh.receive(ev(1, decline=visa("51")), T0)
    assert of(sh, REQUEST) == [] and escalation_due(sh) == T0 + 3 * DAY


def test_becoming_high_risk_later_asks_once_and_brings_the_escalation_forward() -> None:
    sh = shell(high_risk={})
    sh.receive(ev(1, decline=visa("51")), T0)
    assert escalation_due(sh) == T0 + 14 * DAY and of(sh, REQUEST) == []
    sh.risk["cus_1"] = HIGH  # the risk agent scored the customer HIGH since
    now = T0 + 2 * DAY
    advance(sh, now)  # the day-1 retry went out on time
    decision = sh.receive(ev(2, at=now, decline=visa("51")), now)
    assert [(c.type, c.due_at, c.rule.id) for c in decision.commands if c.type is REQUEST] == [
        (REQUEST, now, RULE)
    ]
    assert escalation_due(sh) == T0 + 3 * DAY
    assert decision.transitions and decision.transitions[-1].rule.id == RULE
    later = now + HOUR
    again = sh.receive(ev(3, at=later, decline=visa("51")), later)
    assert not [c for c in again.commands if c.type is REQUEST]  # once per episode
    advance(sh, T0 + 5 * DAY)
    assert [(c.due_at, c.rule.id) for c in of(sh, ESCALATE)] == [(T0 + 3 * DAY, RULE)]
    assert len(of(sh, REQUEST)) == 1


def test_becoming_high_risk_after_the_early_day_escalates_in_the_same_decision() -> None:
    sh = shell(high_risk={})
    sh.receive(ev(1, decline=visa("51")), T0)
    sh.risk["cus_1"] = CRITICAL
    now = T0 + 5 * DAY
    decision = sh.receive(ev(2, at=now, decline=visa("51")), now)
    escalations = [c for c in decision.commands if c.type is ESCALATE]
    assert [(c.due_at, c.rule.id) for c in escalations] == [(T0 + 3 * DAY, RULE)]
    assert "risk band CRITICAL" in escalations[0].reason


def test_an_episode_that_asked_already_is_not_asked_again() -> None:
    sh = shell(high_risk={})
    sh.receive(ev(1, decline=visa("54", DeclineCategory.ACTION)), T0)  # expired card: asked
    assert [c.rule.id for c in of(sh, REQUEST)] == ["visa.category3"]
    sh.risk["cus_1"] = HIGH
    sh.receive(ev(2, at=T0 + HOUR, decline=visa("54", DeclineCategory.ACTION)), T0 + HOUR)
    assert len(of(sh, REQUEST)) == 1 and escalation_due(sh) == T0 + 3 * DAY


def test_a_method_update_marks_the_customer_but_is_not_answered_with_a_request() -> None:
    sh = shell(high_risk={})
    sh.receive(ev(1, decline=visa("51")), T0)
    sh.risk["cus_1"] = HIGH
    updated = ev(2, EventType.PAYMENT_METHOD_UPDATED, at=T0 + HOUR, pm=NEW_CARD)
    decision = sh.receive(updated, T0 + HOUR)
    assert [c.type for c in decision.commands] == [RETRY]  # the new card at once
    assert of(sh, REQUEST) == [] and escalation_due(sh) == T0 + 3 * DAY


def test_an_escalation_that_fired_is_never_armed_again() -> None:
    sh = shell(high_risk={}, escalation={"after_days": 2})
    sh.receive(ev(1, decline=visa("51")), T0)
    advance(sh, T0 + 2 * DAY + HOUR)
    assert [c.rule.id for c in of(sh, ESCALATE)] == ["tenant.escalation"]
    sh.risk["cus_1"] = HIGH
    now = T0 + 2 * DAY + 2 * HOUR
    decision = sh.receive(ev(2, at=now, decline=visa("51")), now)
    assert [c.rule.id for c in decision.commands if c.type is REQUEST] == [RULE]
    assert escalation_due(sh) is None
    advance(sh, T0 + 40 * DAY)
    assert len(of(sh, ESCALATE)) == 1


def test_timers_keep_the_earlier_escalation_when_the_status_changes() -> None:
    """A TimerFired carries no band: the re-planned escalation keeps the high-risk time."""
    sh = shell(HIGH, high_risk={})
    sh.receive(ev(1, decline=visa("51")), T0)
    # Another invoice on the card is declined as stolen: the card's stop refuses in_1's
    # day-1 retry when it fires, and in_1 starts waiting for the customer on a timer.
    sh.receive(
        ev(2, invoice="in_2", at=T0 + HOUR, decline=visa("43", DeclineCategory.FRAUD)), T0 + HOUR
    )
    timer = next(t for t in saga(sh).pending if t.purpose is TimerPurpose.RETRY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    decision = sh.apply(fired, timer.due_at)
    assert decision.transitions[-1].to_state is SagaState.awaiting_customer
    assert not saga(sh).has(TimerPurpose.RETRY)
    # Without the stored band: min(day 14, 7 days awaiting) = day 8.
    assert saga(sh).high_risk is HIGH and escalation_due(sh) == T0 + 3 * DAY


def test_decide_reads_the_band_of_payment_events_only() -> None:
    policy = TenantPolicy.model_validate({"high_risk": {}})
    opened = decide(None, ev(1, decline=visa("51")), T0, policy).new_state
    assert opened is not None and opened.high_risk is None
    timer = next(t for t in opened.pending if t.purpose is TimerPurpose.NOTIFY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    after = decide(opened, fired, timer.due_at, policy, risk=HIGH).new_state
    assert after is not None and after.high_risk is None
    assert not after.has(TimerPurpose.REQUEST_UPDATE) and after.update_requests == 0


def test_a_new_episode_starts_without_the_band() -> None:
    sh = shell(HIGH, high_risk={})
    sh.receive(ev(1, decline=visa("51")), T0)
    paid = ev(2, EventType.PAYMENT_SUCCEEDED, at=T0 + HOUR)
    sh.receive(paid, T0 + HOUR)
    del sh.risk["cus_1"]  # the customer paid and its score fell
    now = T0 + 10 * DAY
    sh.receive(ev(3, at=now, decline=visa("51")), now)
    assert saga(sh).episode == 1 and saga(sh).high_risk is None
    assert escalation_due(sh) == now + 14 * DAY
    assert len(of(sh, REQUEST)) == 1  # the first episode's only


def test_the_option_escalates_even_when_the_tenant_turned_escalation_off() -> None:
    sh = shell(HIGH, high_risk={"request_update_first": False}, escalation=None)
    sh.receive(ev(1, decline=visa("51")), T0)
    advance(sh, T0 + 3 * DAY)
    assert [(c.due_at, c.rule.id, c.channel) for c in of(sh, ESCALATE)] == [
        (T0 + 3 * DAY, RULE, "slack")
    ]
    quiet = shell(escalation=None)
    quiet.receive(ev(1, decline=visa("51")), T0)
    advance(quiet, T0 + 40 * DAY)
    assert of(quiet, ESCALATE) == []
