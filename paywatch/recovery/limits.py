"""The retry gate: may paywatch send a RETRY_PAYMENT now, later, or never, and by which rule.

Checked in order, the first refusal wins:

1. the card's ledger must be known (the shell's snapshot of ``saga.card``), else the answer
   is "unknown" and the retry waits for a call that has it;
2. the provider owns retries (tenant policy), or said it retries itself;
3. the card is stopped (Visa category 1, Mastercard 03/21, HARD, FRAUD), in this saga or by
   a stop marker of another invoice within 30 days;
4. the customer must update the payment method first;
5. the tenant's budget: at most ``max_retries`` reattempts of the invoice, by anyone;
6. the counters: every network limit over the card's attempts (all invoices, all providers,
   paywatch's own) gives the earliest time it allows one more; the latest of those, and of
   the network's "not before" (Mastercard 02, 24-30), is when the retry may go;
7. a retry that could only go after the saga's deadline does not go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from paywatch.recovery.commands import tenant_rule
from paywatch.recovery.ledger import CardAttempt
from paywatch.recovery.rules import NO_ADVICE, Action, WindowLimit, paywatch_rule
from paywatch.recovery.state import Saga
from paywatch.recovery.tenant_policy import RetryOwner, TenantPolicy
from paywatch.schemas.models import RuleRef

STOP_WINDOW = timedelta(days=30)
PROVIDER_RETRIES = paywatch_rule("provider_retries", "recovery-rules.md §3c [ST1][PV1][PV5]")
UNKNOWN_LEDGER = paywatch_rule("card_ledger_required", "recovery-rules.md §3c")
# An UPDATE verdict allows a retry once the customer has updated (needs_update is False).
_AFTER_UPDATE = frozenset({Action.RETRY, Action.WAIT, Action.UPDATE})


@dataclass(frozen=True)
class Gate:
    """When a retry may go: `allowed_at`, or never (None); `known` False: ledger missing."""

    allowed_at: datetime | None
    rule: RuleRef
    reason: str
    known: bool = True


def card_attempts(saga: Saga) -> list[CardAttempt]:
    """Attempts on the saga's card: the ledger snapshot plus the saga's own, once each."""
    ledger = saga.ledger.entries if saga.ledger else ()
    seen: dict[str, CardAttempt] = {}
    for entry in (*ledger, *saga.attempts):
        if entry.card == saga.card:
            seen.setdefault(entry.id, entry)
    return list(seen.values())


def static_refusal(saga: Saga, now: datetime, policy: TenantPolicy) -> Gate | None:
    """Why no paywatch retry of `saga` may go at all (checks 2-5), or None."""
    if saga.provider is None or policy.owner(saga.provider) is RetryOwner.PROVIDER:
        return Gate(None, tenant_rule(policy, "retry_owner"), f"{saga.provider} owns retries")
    if saga.provider_retry_at is not None:
        when = f"{saga.provider_retry_at:%Y-%m-%d %H:%M}"
        return Gate(None, PROVIDER_RETRIES, f"{saga.provider} retries itself ({when})")
    stop = saga.stop or next(
        (e.stop for e in card_attempts(saga) if e.stop and e.at > now - STOP_WINDOW), None
    )
    if stop is not None:
        return Gate(None, stop, f"no reattempt on this card ({stop.id})")
    verdict = saga.verdict
    if verdict is None or saga.needs_update or verdict.action not in _AFTER_UPDATE:
        rule = verdict.rule if verdict else NO_ADVICE.rule
        return Gate(None, rule, f"waiting for a new payment method ({rule.id})")
    used, budget = sum(a.counted for a in saga.attempts) - 1, policy.retry.max_retries
    if used >= budget:
        return Gate(None, tenant_rule(policy, "max_retries"), f"{used} of {budget} reattempts used")
    return None


def _same_amount(entry: CardAttempt, saga: Saga) -> bool:
    if entry.amount_minor is None or saga.amount_minor is None:
        return True  # unknown amounts count: stricter
    return entry.amount_minor == saga.amount_minor and entry.currency == saga.currency


def earliest(times: list[datetime], limit: WindowLimit) -> datetime | None:
    """When at most `limit.max_prior` of `times` remain in the window (None: already so)."""
    excess = len(times) - limit.max_prior
    return sorted(times)[excess - 1] + limit.window if excess > 0 else None


@dataclass(frozen=True)
class Budget:
    """How many more attempts the card's counters allow at a time, and which one binds."""

    left: int
    rule: RuleRef


def card_budget(saga: Saga, now: datetime, policy: TenantPolicy) -> Budget:
    """More attempts the network counters allow on the saga's card at `now`, over its
    ledger snapshot and the saga's own attempts (all invoices of the card).

    A counter allows a new attempt while at most ``max_prior`` of the card's attempts sit
    in its window, so ``max_prior + 1 - in window`` more fit; the smallest over the
    network's counters binds (an unknown network has Visa's and Mastercard's). Windows
    empty with time, giving more later: this is what fits now.
    """
    attempts = [a for a in card_attempts(saga) if a.counted]
    budgets = []
    for limit in policy.rulebook.limits(saga.network):
        inside = [
            a
            for a in attempts
            if a.at > now - limit.window and (not limit.same_amount or _same_amount(a, saga))
        ]
        budgets.append(Budget(max(0, limit.max_prior + 1 - len(inside)), limit.rule))
    return min(budgets, key=lambda b: b.left)


def retry_gate(saga: Saga, now: datetime, policy: TenantPolicy) -> Gate:
    """May a paywatch retry of `saga` go at `now`, later (when), or never (by which rule)?"""
    if saga.ledger is None or saga.ledger.card != saga.card:
        return Gate(None, UNKNOWN_LEDGER, "the card's ledger is needed", known=False)
    refused = static_refusal(saga, now, policy)
    if refused is not None:
        return refused
    assert saga.verdict is not None  # static_refusal refuses a saga without a verdict
    attempts = [a for a in card_attempts(saga) if a.counted]
    bound, rule = now, saga.verdict.rule
    for limit in policy.rulebook.limits(saga.network):
        times = [a.at for a in attempts if not limit.same_amount or _same_amount(a, saga)]
        at = earliest(times, limit)
        if at is not None and at > bound:
            bound, rule = at, limit.rule
    if saga.not_before is not None and saga.not_before > bound:
        bound, rule = saga.not_before, saga.not_before_rule or rule
    deadline = saga.deadline
    if deadline is not None and bound >= deadline:
        return Gate(None, rule, f"{rule.id} allows no retry before the deadline")
    when = "now" if bound == now else f"not before {bound:%Y-%m-%d %H:%M} ({rule.id})"
    return Gate(bound, rule, f"retry allowed {when}")
