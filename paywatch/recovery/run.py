"""The accumulator of one ``decide`` call: transitions, commands and ledger entries so far.

It is mutable, but local to a single call, so ``decide`` stays a pure function. ``rule``
and ``reason`` say why the latest decision step was taken: a transition emitted after it
names them. Commands are completed when emitted: who to charge (provider, customer,
amount, ...) as the saga knows it then, and ``issued_at``; a retry also says whether the
tenant charges it (``schedule_only``) and how much of the invoice's budget is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from paywatch.recovery.ledger import CardAttempt
from paywatch.recovery.rules import paywatch_rule
from paywatch.recovery.state import ALLOWED_EDGES, InvalidTransition, Saga
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    CommandType,
    RecoveryCommand,
    RiskBand,
    RuleRef,
    SagaState,
    SagaTransition,
)

OPENED = paywatch_rule("saga_opened", "ARCHITECTURE §8")


@dataclass
class Run:
    """What one decide call has produced so far."""

    now: datetime
    policy: TenantPolicy
    cause: str
    outages: frozenset[str] = frozenset()
    """Providers of the tenant with an open failure-spike alert: paywatch retries wait."""
    risk: RiskBand | None = None
    """The customer's band in ``risk.scores`` when a PaymentEvent is decided (else None)."""
    rule: RuleRef | None = None
    reason: str | None = None
    touched: bool = False  # the call changed the saga: it owes a transition
    commands: list[RecoveryCommand] = field(default_factory=list)
    transitions: list[SagaTransition] = field(default_factory=list)
    entries: list[CardAttempt] = field(default_factory=list)

    def because(self, rule: RuleRef, reason: str) -> None:
        """Record why the current step was taken."""
        self.rule, self.reason, self.touched = rule, reason, True

    def move(self, saga: Saga, to: SagaState) -> Saga:
        """`saga` in state `to`, with the transition recorded (allowed edges only)."""
        if (saga.status, to) not in ALLOWED_EDGES:
            raise InvalidTransition(f"{saga.invoice_ref}: {saga.status} -> {to}")
        self.transitions.append(
            SagaTransition(
                tenant=saga.tenant,
                invoice_ref=saga.invoice_ref,
                from_state=saga.status,
                to_state=to,
                cause_event_id=self.cause,
                at=self.now,
                rule=self.rule or OPENED,
                reason=self.reason,
            )
        )
        return saga.model_copy(update={"status": to})

    def record(self, saga: Saga, entries: tuple[CardAttempt, ...]) -> Saga:
        """`saga` with new card-ledger entries (its own record of the episode too)."""
        if not entries:
            return saga
        self.entries.extend(entries)
        attempts = saga.attempts + entries
        ledger = saga.ledger.add(entries) if saga.ledger else None
        return saga.model_copy(update={"attempts": attempts, "ledger": ledger})

    def emit(self, saga: Saga, cmd: RecoveryCommand) -> Saga:
        """Send `cmd`, completed from the saga; its id joins the episode's done ids."""
        self.touched = True
        if self.rule is None:
            self.rule, self.reason = cmd.rule, cmd.reason
        update: dict[str, object] = {
            "issued_at": self.now,
            "first_failed_at": saga.opened_at,
            "provider": saga.provider,
            "customer_ref": saga.customer_ref,
            "subscription_ref": saga.subscription_ref,
            "payment_ref": saga.payment_ref,
            "amount_minor": saga.amount_minor,
            "currency": saga.currency,
            "decline_category": saga.decline_category,
        }
        if cmd.type is CommandType.RETRY_PAYMENT:
            update |= self._retry_facts(saga)
        self.commands.append(cmd.model_copy(update=update))
        return saga.model_copy(update={"done": (*saga.done, cmd.command_id)})

    def _retry_facts(self, saga: Saga) -> dict[str, object]:
        """Who charges a retry (the policy it is emitted under: retries are emitted when
        due, so a change of ``charging`` applies to every retry not yet due) and the
        invoice's budget, this retry counted (it is recorded before it is emitted)."""
        return {
            "schedule_only": self.policy.schedule_only,
            "attempts_used": max(0, sum(a.counted for a in saga.attempts) - 1),
            "attempts_allowed": self.policy.retry.max_retries,
        }

    def close(self, saga: Saga, to: SagaState) -> Saga:
        """End the episode (a saga never opened becomes a tombstone: no transition)."""
        closed = {"status": to, "closed_at": saga.last_event_at, "pending": (), "in_flight": False}
        if saga.status is not None:
            saga = self.move(saga, to)
        return saga.model_copy(update=closed)
