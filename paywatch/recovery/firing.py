"""Firing due timers: emit the command, or for a retry ask the gate first.

A retry whose provider has an open failure-spike alert is held (moved later, same id). A
retry the gate allows now is emitted and counted on the card at once (its outcome may
never be reported); one it allows later is moved to that time (same id); one it refuses
is dropped; one whose card ledger the shell did not supply stays pending, untouched. The
deadline exhausts the saga and sends the tenant's final action.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from paywatch.recovery.commands import command, tenant_rule
from paywatch.recovery.ledger import AttemptSource, CardAttempt
from paywatch.recovery.limits import retry_gate
from paywatch.recovery.plan import forbidden
from paywatch.recovery.rules import paywatch_rule
from paywatch.recovery.run import Run
from paywatch.recovery.state import Saga, Timer, TimerPurpose
from paywatch.recovery.tenant_policy import FinalAction
from paywatch.schemas.models import CommandType, RecoveryCommand, SagaState

OUTAGE_HOLD = timedelta(minutes=30)
"""How long a retry waits when its provider has an open failure-spike alert; it is looked at
again then (the alert resolves after ten quiet minutes)."""
PROVIDER_OUTAGE = paywatch_rule("provider_outage", "paywatch alerts: PROVIDER_FAILURE_SPIKE")


def flush(saga: Saga, run: Run) -> Saga:
    """Fire every due timer once (a retry without its card ledger stays pending)."""
    tried: set[str] = set()
    while saga.is_open:
        due = [t for t in saga.pending if t.due_at <= run.now and t.id not in tried]
        if not due:
            break
        tried.add(due[0].id)
        saga = _fire(saga, due[0], run)
    return saga


def _fire(saga: Saga, timer: Timer, run: Run) -> Saga:
    if timer.purpose is TimerPurpose.RETRY:
        return _fire_retry(saga, timer, run)
    saga = saga.unschedule(timer.id)
    if timer.purpose is TimerPurpose.DEADLINE:
        return _exhaust(saga, timer, run)
    if timer.command is None or forbidden(saga, timer, run.policy, run.now):
        run.because(tenant_rule(run.policy, "policy_change"), "dropped: the policy forbids it")
        return saga
    return run.emit(saga, timer.command)


def _fire_retry(saga: Saga, timer: Timer, run: Run) -> Saga:
    if saga.provider in run.outages and timer.command is not None:
        return _hold(saga, timer, run)
    gate = retry_gate(saga, run.now, run.policy)
    if not gate.known or timer.command is None:
        return saga
    saga = saga.unschedule(timer.id)
    run.because(gate.rule, gate.reason)
    if gate.allowed_at is None:
        return saga
    due = max(timer.due_at, gate.allowed_at)
    cmd = timer.command.model_copy(update={"due_at": due})
    if gate.allowed_at > run.now:
        return saga.schedule(timer.model_copy(update={"due_at": due, "command": cmd}))
    saga = run.record(saga, (_paywatch_attempt(saga, cmd, run.now),))
    planned = timer.model_copy(update={"due_at": due, "command": cmd})
    update = {"retries": saga.retries + 1, "in_flight": True, "permit": planned}
    return run.emit(saga.model_copy(update=update), cmd)


def _hold(saga: Saga, timer: Timer, run: Run) -> Saga:
    """Move a retry due during its provider's outage ``OUTAGE_HOLD`` later (same id): a
    retry into an outage fails and still counts against the card's network limits."""
    assert timer.command is not None
    due = run.now + OUTAGE_HOLD
    run.because(
        PROVIDER_OUTAGE,
        f"retry held until {due.isoformat()}: {saga.provider} has an open failure-spike alert",
    )
    cmd = timer.command.model_copy(update={"due_at": due})
    return saga.unschedule(timer.id).schedule(
        timer.model_copy(update={"due_at": due, "command": cmd})
    )


def _paywatch_attempt(saga: Saga, cmd: RecoveryCommand, now: datetime) -> CardAttempt:
    assert saga.card is not None and saga.provider is not None  # open sagas have both
    return CardAttempt(
        id=cmd.command_id,
        card=saga.card,
        invoice_ref=saga.invoice_ref,
        provider=saga.provider,
        source=AttemptSource.PAYWATCH,
        at=now,
        amount_minor=saga.amount_minor,
        currency=saga.currency,
    )


FINAL = {FinalAction.CANCEL: CommandType.CANCEL, FinalAction.WRITE_OFF: CommandType.WRITE_OFF}
"""The command each final action sends (leaving the invoice open sends none)."""


def _exhaust(saga: Saga, timer: Timer, run: Run) -> Saga:
    rule = tenant_rule(run.policy, "final_action")
    action = run.policy.final_action.value
    reason = f"unpaid at the end of the recovery window: {action}"
    run.because(rule, reason)
    kind = FINAL.get(run.policy.final_action)
    if kind is not None:
        cmd = command(saga, kind, "final", timer.due_at, reason=reason, rule=rule, cause=timer.id)
        saga = run.emit(saga, cmd)
    saga = saga.model_copy(
        update={"last_event_at": max(saga.last_event_at or timer.due_at, timer.due_at)}
    )
    return run.close(saga, SagaState.exhausted)
