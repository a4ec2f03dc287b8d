"""Retry permits: one ledger per card, across invoices, partitions and worker processes.

Visa and Mastercard count attempts per card and merchant, but a saga is per invoice and
lives on its invoice's partition; a table read on the production store only sees that
partition. So a saga's own gate (``limits.retry_gate``) sees its own attempts only, and
every RETRY_PAYMENT it emits is a *request*: the shell routes it to the card's ledger (a
card-keyed agent, one writer per card), which checks the same gate against every attempt
on the card and either grants it (records the attempt, forwards the command) or refuses it
with the time the card's counters allow one more, or never. A refused saga gets a
``PermitDenied`` and plans the retry again from there; nothing was charged. A granted
command goes out with what the card has left (``card_retries_left``, ``card_limit``): only
the ledger sees every invoice of the card, so only it can say (a schedule-only tenant, who
charges the retry itself, is told through ``recovery.retry_due``).

``grant`` is the ledger's side, ``on_denied`` the saga's; both are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from paywatch.recovery.ledger import AttemptSource, CardAttempt, CardLedger
from paywatch.recovery.limits import card_budget, retry_gate
from paywatch.recovery.run import Run
from paywatch.recovery.state import PermitDenied, Saga
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import RecoveryCommand, RuleRef


@dataclass(frozen=True)
class Permit:
    """The ledger's answer to one retry request."""

    granted: bool
    ledger: CardLedger
    replayed: bool = False
    """Granted before: the ledger only records a grant once its command was acked, so the
    command is in ``recovery.commands`` already and must not be sent again."""
    until: datetime | None = None
    rule: RuleRef | None = None
    reason: str = ""
    command: RecoveryCommand | None = None
    """Granted (not replayed): the command to send, with the card's budget after it."""


def grant(
    ledger: CardLedger, saga: Saga, command: RecoveryCommand, now: datetime, policy: TenantPolicy
) -> Permit:
    """May `command` (a retry `saga` emitted) go now, given every attempt on the card?

    Idempotent: a command already in the ledger was granted (and sent) before: a replayed
    request is answered ``replayed`` without a second entry.
    """
    if any(e.id == command.command_id for e in ledger.entries):
        return Permit(True, ledger, replayed=True)
    own = tuple(a for a in saga.attempts if a.id != command.command_id)
    asking = saga.model_copy(update={"attempts": own, "ledger": ledger})
    gate = retry_gate(asking, now, policy)
    if gate.allowed_at is not None and gate.allowed_at <= now:
        granted = ledger.add((_attempt(saga, command, now),))
        budget = card_budget(asking.model_copy(update={"ledger": granted}), now, policy)
        sent = command.model_copy(
            update={"card_retries_left": budget.left, "card_limit": budget.rule.id}
        )
        return Permit(True, granted, rule=gate.rule, reason=gate.reason, command=sent)
    return Permit(False, ledger, until=gate.allowed_at, rule=gate.rule, reason=gate.reason)


def _attempt(saga: Saga, command: RecoveryCommand, now: datetime) -> CardAttempt:
    assert saga.card is not None and saga.provider is not None  # a retrying saga has both
    return CardAttempt(
        id=command.command_id,
        card=saga.card,
        invoice_ref=saga.invoice_ref,
        provider=saga.provider,
        source=AttemptSource.PAYWATCH,
        at=now,
        amount_minor=saga.amount_minor,
        currency=saga.currency,
    )


def on_denied(saga: Saga | None, denied: PermitDenied, run: Run) -> Saga | None:
    """Undo the refused retry and plan it again when the card allows (or drop it)."""
    planned = saga.permit if saga is not None and saga.is_open else None
    if saga is None or planned is None or planned.id != denied.command_id:
        return saga  # closed since, or an answer to an older retry: nothing to undo
    attempts = tuple(a for a in saga.attempts if a.id != denied.command_id)
    saga = saga.model_copy(
        update={
            "attempts": attempts,
            "retries": max(0, saga.retries - 1),
            "in_flight": False,
            "permit": None,
        }
    )
    run.because(denied.rule, f"card ledger: {denied.reason}")
    deadline = saga.deadline
    if denied.until is None or (deadline is not None and denied.until >= deadline):
        return saga
    assert planned.command is not None  # a retry timer carries its command
    due = max(planned.due_at, denied.until)
    cmd = planned.command.model_copy(update={"due_at": due})
    return saga.schedule(planned.model_copy(update={"due_at": due, "command": cmd}))
