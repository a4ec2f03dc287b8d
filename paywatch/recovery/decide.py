"""``decide(state, input, now, policy) -> Decision``: the recovery saga as a pure function.

One call handles one input (a PaymentEvent, a TimerFired, a PolicyChanged, a PermitDenied
from the card's ledger) in four steps:

1. reconcile: a saga planned under another policy revision drops the pending commands the
   new policy forbids (``plan.forbidden``); everything else stays as planned;
2. react to the input (``reactions.HANDLERS`` for events, then the customer's risk band
   for a high-risk customer (``high_risk``); ``permits.on_denied``);
3. flush: fire every pending timer that is due at ``now`` (a retry passes the gate first);
4. settle: derive ``retrying`` / ``awaiting_customer`` from the plan and emit the transition.

Idempotence: an event id already seen in the episode, an event at or before the close of
a previous episode, any event for a closed saga (except a strictly newer failure after
``recovered``, which opens a new episode), and a TimerFired that is not pending or not due
all leave the state as it was and emit nothing. Transitions are stamped ``now``.
"""

from __future__ import annotations

from datetime import datetime

from paywatch.recovery import plan
from paywatch.recovery.commands import tenant_rule
from paywatch.recovery.experiments import assign
from paywatch.recovery.firing import FINAL, flush
from paywatch.recovery.ledger import card_key, standin_card
from paywatch.recovery.permits import on_denied
from paywatch.recovery.reactions import on_event
from paywatch.recovery.run import Run
from paywatch.recovery.state import (
    Decision,
    PermitDenied,
    Saga,
    SagaInput,
    TimerFired,
    TimerPurpose,
)
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import PaymentEvent, RiskBand, SagaState, SagaTransition


def decide(
    state: Saga | None,
    event: SagaInput,
    now: datetime,
    policy: TenantPolicy,
    outages: frozenset[str] = frozenset(),
    risk: RiskBand | None = None,
) -> Decision:
    """The saga's next state, the commands to send and the transitions to record.

    ``outages``: the tenant's providers with an open failure-spike alert; a paywatch retry
    due on one of them is held (``firing``) instead of burning the card's network budget.
    ``risk``: the customer's current band in ``risk.scores`` (None: unknown or low); read for
    PaymentEvent inputs only (``high_risk``), the other inputs keep what the saga knows.
    """
    if isinstance(event, TimerFired) and not _due(state, event, now):
        return Decision(new_state=_kept(state))
    band = risk if isinstance(event, PaymentEvent) else None
    experiment, arm = _arm(state, event, policy)
    running = policy.experiment.id if policy.experiment is not None else None
    ruling = policy.for_arm(arm) if experiment is not None and experiment == running else policy
    run = Run(now, ruling.control, cause=_cause(event), outages=outages, risk=band)
    saga = state
    if saga is not None and saga.is_open and saga.policy_revision != run.policy.revision:
        saga = reconcile(saga, run)
    if isinstance(event, PaymentEvent):
        saga = on_event(saga, event, run)
    elif isinstance(event, PermitDenied):
        saga = on_denied(saga, event, run)
    if saga is not None and saga.is_open and not (state is not None and state.is_open):
        saga = saga.model_copy(update={"experiment": experiment, "arm": arm})  # opened now
    if saga is not None and saga.is_open:
        saga = _settle(flush(saga, run), run)
        # Settling may arm an escalation that is already due: fire it in this decision too.
        saga = _settle(flush(saga, run), run)
    return Decision(
        new_state=_kept(saga),
        commands=tuple(run.commands),
        transitions=_with_snapshot(run, saga),
        ledger_entries=tuple(run.entries),
    )


def ledger_card(state: Saga | None, event: SagaInput) -> str | None:
    """The card whose CardLedger the shell should put in the state before calling decide."""
    if isinstance(event, PaymentEvent):
        key = card_key(event.tenant, event.payment_method)
        fallback = state.card if state and state.card else None
        return key or fallback or standin_card(event.tenant, event.invoice_ref)
    return state.card if state else None


def _kept(saga: Saga | None) -> Saga | None:
    return saga if saga is not None and saga.status is not None else None


def _arm(
    state: Saga | None, event: SagaInput, policy: TenantPolicy
) -> tuple[str | None, str | None]:
    """(experiment, arm) of the decision: an open saga keeps the ones it was opened under;
    a failure that may open one is assigned an arm of the tenant's running experiment."""
    if state is not None and state.is_open:
        return state.experiment, state.arm
    exp = policy.experiment
    if exp is None or not isinstance(event, PaymentEvent):
        return None, None
    return exp.id, assign(event.tenant, event.invoice_ref, exp.id, exp.share)


def _cause(event: SagaInput) -> str:
    if isinstance(event, PaymentEvent):
        return event.event_id
    if isinstance(event, TimerFired):
        return event.timer_id
    if isinstance(event, PermitDenied):
        return f"permit:{event.command_id}"
    return f"policy:{event.revision}"


def _due(state: Saga | None, fired: TimerFired, now: datetime) -> bool:
    timer = state.timer(fired.timer_id) if state is not None and state.is_open else None
    return timer is not None and timer.due_at <= now


def reconcile(saga: Saga, run: Run) -> Saga:
    """Adopt the tenant's new policy: drop what it forbids, keep every other plan."""
    dropped = 0
    for timer in saga.pending:
        if plan.forbidden(saga, timer, run.policy, run.now):
            saga, dropped = saga.unschedule(timer.id), dropped + 1
    reason = f"tenant policy {run.policy.revision} adopted; {dropped} planned command(s) dropped"
    run.because(tenant_rule(run.policy, "policy_change"), reason)
    return saga.model_copy(update={"policy_revision": run.policy.revision})


def _wanted(saga: Saga) -> SagaState:
    """Retrying while someone will retry (paywatch or the provider), else awaiting the customer.

    A provider's announced retry does not count once the card is stopped (Visa category 1,
    Mastercard 03/21, hard or fraud): providers do not retry those either (Stripe skips hard
    declines, reference §3c), and the customer is being asked for a new payment method.
    """
    provider_will = saga.provider_retry_at is not None and saga.stop is None
    retrying = saga.in_flight or saga.has(TimerPurpose.RETRY) or provider_will
    return SagaState.retrying if retrying else SagaState.awaiting_customer


def _settle(saga: Saga, run: Run) -> Saga:
    """Move to the wanted state; a decision that keeps it still records a self-transition."""
    wanted = _wanted(saga)
    if not saga.is_open or (wanted is saga.status and (run.transitions or not run.touched)):
        return saga
    if wanted is saga.status:
        return run.move(saga, wanted)
    saga = run.move(saga, wanted)
    since = run.now if wanted is SagaState.awaiting_customer else None
    saga = saga.model_copy(update={"awaiting_since": since})
    return plan.escalation(saga, run.policy, run.cause)


def _with_snapshot(run: Run, saga: Saga | None) -> tuple[SagaTransition, ...]:
    """The call's transitions, each carrying the snapshot of where the decision left the saga."""
    if not run.transitions or saga is None:
        return tuple(run.transitions)
    nxt = saga.pending[0] if saga.pending else None
    action, at = None, None
    if nxt is not None and nxt.command is not None:
        action, at = nxt.command.type, nxt.due_at
    elif nxt is not None:  # the deadline: the final action, if it sends one
        action = FINAL.get(run.policy.final_action)
        at = nxt.due_at if action else None
    snapshot = {
        "experiment": saga.experiment,
        "arm": saga.arm,
        "attempts_used": max(0, sum(a.counted for a in saga.attempts) - 1),
        "attempts_allowed": run.policy.retry.max_retries,
        "next_action": action,
        "next_action_at": at,
    }
    return tuple(t.model_copy(update=snapshot) for t in run.transitions)
