"""Scheduling: which timers an episode gets, and when (pure helpers of ``policy.decide``).

Everything is anchored at the episode's first failure (``Saga.opened_at``):

* dunning: one NOTIFY_CUSTOMER per ``TenantPolicy.dunning`` step, at ``opened_at + day``;
* the deadline: ``opened_at + window_days``; the saga is exhausted then (final action);
* retries (providers paywatch owns): retry *n* on schedule day *n* at the schedule's local
  time of day, never sooner than ``min_gap_hours`` after the last attempt on the invoice, nor
  before the network's "not before"; a retry after PAYMENT_METHOD_UPDATED goes at once (the
  customer just fixed the card). The gate (``limits.retry_gate``) still decides at fire time;
* escalation: one ESCALATE per episode, at ``opened_at + after_days`` or ``awaiting_customer_days``
  after the saga started waiting for the customer or, for a high-risk customer
  (``high_risk``), ``opened_at + escalate_after_days``, whichever is first; recomputed whenever
  the status changes or the customer becomes high-risk, never re-armed once it fired.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery import high_risk
from paywatch.recovery.commands import as_timer, command, tenant_rule, timer_id
from paywatch.recovery.limits import static_refusal
from paywatch.recovery.rules import NO_ADVICE
from paywatch.recovery.state import Saga, Timer, TimerPurpose
from paywatch.recovery.tenant_policy import Escalation, TenantPolicy
from paywatch.schemas.models import CommandType, RuleRef, SagaState


def _anchor(saga: Saga) -> datetime:
    if saga.opened_at is None:
        raise ValueError("an episode is planned only once it is open")
    return saga.opened_at


def opening(saga: Saga, policy: TenantPolicy, cause: str) -> Saga:
    """The dunning steps and the deadline of a new episode."""
    start, rule = _anchor(saga), tenant_rule(policy, "dunning")
    for step in policy.dunning:
        cmd = command(
            saga,
            CommandType.NOTIFY_CUSTOMER,
            f"day{step.day}",
            start + timedelta(days=step.day),
            reason=f"dunning step: day {step.day} after the first failure",
            rule=rule,
            cause=cause,
            channel=step.channel.value,
            template=step.template,
        )
        saga = saga.schedule(as_timer(cmd, TimerPurpose.NOTIFY))
    end = start + timedelta(days=policy.window_days)
    deadline = Timer(
        id=timer_id(saga, "deadline", "final"), due_at=end, purpose=TimerPurpose.DEADLINE
    )
    return saga.schedule(deadline)


def request_update(
    saga: Saga,
    policy: TenantPolicy,
    now: datetime,
    cause: str,
    rule: RuleRef,
    reason: str | None = None,
) -> Saga:
    """Ask the customer for a new or fixed payment method, now (one request per need)."""
    n = saga.update_requests + 1
    cmd = command(
        saga,
        CommandType.REQUEST_PAYMENT_METHOD_UPDATE,
        str(n),
        now,
        # Internal reason only: the template never names it (FRAUD must not be revealed).
        reason=reason or f"payment method must change before any retry ({rule.id})",
        rule=rule,
        cause=cause,
        channel=policy.update_channel.value,
        template=policy.update_template,
    )
    saga = saga.schedule(as_timer(cmd, TimerPurpose.REQUEST_UPDATE))
    return saga.model_copy(update={"update_requests": n})


def _slot(saga: Saga, policy: TenantPolicy, n: int) -> datetime:
    """Retry n's time on the tenant schedule, kept `min_gap_hours` after the last attempt."""
    schedule = policy.retry
    first = _anchor(saga).astimezone(schedule.zone).date()
    day = first + timedelta(days=schedule.days[n - 1])
    slot = datetime.combine(day, schedule.at, tzinfo=schedule.zone).astimezone(UTC)
    last = max((a.at for a in saga.attempts if a.counted), default=_anchor(saga))
    return max(slot, last + timedelta(hours=schedule.min_gap_hours))


def _retry_due(
    saga: Saga, current: Timer | None, policy: TenantPolicy, now: datetime, immediate: bool
) -> tuple[datetime | None, RuleRef, str]:
    """When the next paywatch retry should go (None: not at all), by which rule, and why."""
    refusal = static_refusal(saga, now, policy)
    if refusal is not None:
        return None, refusal.rule, refusal.reason
    if saga.verdict is None:  # static_refusal refuses those; kept for the type checker
        return None, NO_ADVICE.rule, "no decline to judge"
    n = saga.retries + 1
    if immediate:
        due = now
    elif current is not None:
        due = current.due_at
    elif n <= len(policy.retry.days):
        due = _slot(saga, policy, n)
    else:
        return None, tenant_rule(policy, "retry_schedule"), "the retry schedule is used up"
    due = max(due, saga.not_before or due)
    deadline = saga.deadline
    if deadline is not None and due >= deadline:
        return None, tenant_rule(policy, "window_days"), "no retry slot before the deadline"
    return due, saga.verdict.rule, f"retry {n} due {due:%Y-%m-%d %H:%M}"


def retry(
    saga: Saga, policy: TenantPolicy, now: datetime, cause: str, *, immediate: bool
) -> tuple[Saga, RuleRef, str]:
    """Plan, move or drop the episode's next paywatch retry; the rule and reason."""
    current = next((t for t in saga.pending if t.purpose is TimerPurpose.RETRY), None)
    due, rule, reason = _retry_due(saga, current, policy, now, immediate)
    if due is None:
        return (saga.unschedule(current.id) if current else saga), rule, reason
    if current is not None and current.command is not None:
        moved = current.command.model_copy(update={"due_at": due})
        timer = current.model_copy(update={"due_at": due, "command": moved})
        return saga.schedule(timer), rule, reason
    n = saga.retries + 1
    why = "the payment method was updated" if immediate else f"day {policy.retry.days[n - 1]}"
    cmd = command(
        saga,
        CommandType.RETRY_PAYMENT,
        str(n),
        due,
        reason=f"paywatch retry {n} ({why})",
        rule=rule,
        cause=cause,
        attempt=n,
    )
    return saga.schedule(as_timer(cmd, TimerPurpose.RETRY)), rule, reason


def _escalation_options(saga: Saga, policy: TenantPolicy) -> list[tuple[datetime, str, str]]:
    """(due, reason, tenant rule) of every way the episode may escalate now."""
    esc, options = policy.escalation, []
    if esc is not None and esc.after_days is not None:
        due = _anchor(saga) + timedelta(days=esc.after_days)
        options.append((due, f"open {esc.after_days} days", "escalation"))
    since = saga.awaiting_since if saga.status is SagaState.awaiting_customer else None
    if esc is not None and esc.awaiting_customer_days is not None and since is not None:
        since += timedelta(days=esc.awaiting_customer_days)
        reason = f"awaiting the customer {esc.awaiting_customer_days} days"
        options.append((since, reason, "escalation"))
    early = high_risk.escalation_days(saga, policy)
    if early is not None and saga.high_risk is not None:
        reason = f"{high_risk.why(saga.high_risk)} open {early} days"
        options.append((_anchor(saga) + timedelta(days=early), reason, high_risk.RULE))
    return options


def escalation(saga: Saga, policy: TenantPolicy, cause: str) -> Saga:
    """Arm, move or drop the episode's one ESCALATE for the saga's current status.

    The high-risk option escalates even when the tenant turned ``escalation`` off, on the
    default channel and template then.
    """
    eid = timer_id(saga, CommandType.ESCALATE.value, "1")
    if _never_escalates(saga, policy) or eid in saga.done:
        return saga
    options = _escalation_options(saga, policy)
    if not options:
        return saga.unschedule(eid)
    due, reason, rule = min(options)
    current = saga.timer(eid)
    if current is not None and current.due_at == due:
        return saga
    esc = policy.escalation or Escalation()
    cmd = command(
        saga,
        CommandType.ESCALATE,
        "1",
        due,
        reason=f"escalation: {reason} without payment",
        rule=tenant_rule(policy, rule),
        cause=cause,
        channel=esc.channel.value,
        template=esc.template,
    )
    return saga.schedule(as_timer(cmd, TimerPurpose.ESCALATE))


def _never_escalates(saga: Saga, policy: TenantPolicy) -> bool:
    return policy.escalation is None and high_risk.escalation_days(saga, policy) is None


def forbidden(saga: Saga, timer: Timer, policy: TenantPolicy, now: datetime) -> bool:
    """Does `policy` forbid a pending timer planned under an earlier revision?"""
    if timer.purpose is TimerPurpose.RETRY:
        return static_refusal(saga, now, policy) is not None
    if timer.purpose is TimerPurpose.NOTIFY:
        return not policy.dunning
    if timer.purpose is TimerPurpose.ESCALATE:
        return _never_escalates(saga, policy)
    return False
