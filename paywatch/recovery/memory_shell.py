"""An in-memory shell around ``decide``: the reference for what the Faust agent must do.

Used by the property tests and the benchmark; never by the worker. Per input it:

1. reads the saga (or starts from a blank one), puts the ``CardLedger`` of
   ``ledger_card(state, input)`` into it, calls ``decide``;
2. stores ``new_state``, adds ``ledger_entries`` to the card table (idempotent by id), keeps
   the commands and transitions;
3. fires timers: ``fire_due(now)`` calls ``decide`` with a ``TimerFired`` for every pending
   timer due at ``now``, earliest first.

With ``permits=True`` it is the worker's protocol instead (``paywatch.recovery.permits``):
``decide`` sees the saga's own attempts only, every RETRY_PAYMENT is a request the card's
ledger grants (the command goes out, its attempt is recorded) or refuses (the saga gets a
``PermitDenied`` at once), and the sagas' other attempts are added to the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from paywatch.recovery.decide import decide, ledger_card
from paywatch.recovery.ledger import CardAttempt, CardLedger
from paywatch.recovery.permits import grant
from paywatch.recovery.state import (
    Decision,
    PermitDenied,
    PolicyChanged,
    Saga,
    SagaInput,
    TimerFired,
)
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    CommandType,
    PaymentEvent,
    RecoveryCommand,
    RiskBand,
    SagaTransition,
)

Key = tuple[str, str]


@dataclass
class MemoryShell:
    """Saga table, card table and output topics of one tenant policy, in memory."""

    policy: TenantPolicy
    sagas: dict[Key, Saga] = field(default_factory=dict)
    cards: dict[str, dict[str, CardAttempt]] = field(default_factory=dict)
    commands: list[RecoveryCommand] = field(default_factory=list)
    transitions: list[SagaTransition] = field(default_factory=list)
    permits: bool = False
    """True: the worker's protocol (the saga asks its card's ledger for every retry)."""
    outages: frozenset[str] = frozenset()
    """Providers with an open failure-spike alert now (the worker's alert view)."""
    risk: dict[str, RiskBand] = field(default_factory=dict)
    """customer_ref -> its band now (the worker's risk view; absent: unknown or low)."""

    def ledger(self, card: str) -> CardLedger:
        """The card table's snapshot of one card."""
        entries = self.cards.get(card, {})
        return CardLedger(card=card, entries=tuple(entries.values()))

    def state_for(self, key: Key, event: SagaInput) -> Saga | None:
        """The saga as the agent passes it to decide: with its card's ledger."""
        state = self.sagas.get(key)
        card = ledger_card(state, event)
        if card is None:
            return state
        blank = state or Saga(tenant=key[0], invoice_ref=key[1])
        known = CardLedger(card=card) if self.permits else self.ledger(card)
        return blank.model_copy(update={"ledger": known})

    def band(self, event: SagaInput) -> RiskBand | None:
        """The band the agent passes with `event`: a PaymentEvent's customer's, else None."""
        if isinstance(event, PaymentEvent) and event.customer_ref is not None:
            return self.risk.get(event.customer_ref)
        return None

    def apply(self, event: SagaInput, now: datetime) -> Decision:
        """One decision, with its effects applied to the tables and topics."""
        key = (event.tenant, event.invoice_ref)
        band = self.band(event)
        decision = decide(self.state_for(key, event), event, now, self.policy, self.outages, band)
        if decision.new_state is not None:
            self.sagas[key] = decision.new_state
        if self.permits:
            return self._through_ledger(decision, now)
        for entry in decision.ledger_entries:
            self.cards.setdefault(entry.card, {}).setdefault(entry.id, entry)
        self.commands.extend(decision.commands)
        self.transitions.extend(decision.transitions)
        return decision

    def _through_ledger(self, decision: Decision, now: datetime) -> Decision:
        """The worker's protocol: retries are granted by the card's ledger, or refused."""
        saga = decision.new_state
        asked = {c.command_id for c in decision.commands if c.type is CommandType.RETRY_PAYMENT}
        for entry in decision.ledger_entries:
            if entry.id not in asked:
                self.cards.setdefault(entry.card, {}).setdefault(entry.id, entry)
        sent, refusals = [], []
        for cmd in decision.commands:
            if cmd.command_id not in asked or saga is None or saga.card is None:
                sent.append(cmd)
                continue
            permit = grant(self.ledger(saga.card), saga, cmd, now, self.policy)
            if permit.granted:
                self.cards[saga.card] = {e.id: e for e in permit.ledger.entries}
                sent.append(permit.command or cmd)
            else:
                assert permit.rule is not None
                refusals.append(
                    PermitDenied(
                        tenant=saga.tenant,
                        invoice_ref=saga.invoice_ref,
                        command_id=cmd.command_id,
                        until=permit.until,
                        rule=permit.rule,
                        reason=permit.reason,
                    )
                )
        self.commands.extend(sent)
        self.transitions.extend(decision.transitions)
        merged = decision.model_copy(update={"commands": tuple(sent)})
        for refused in refusals:
            answer = self.apply(refused, now)
            merged = merged.model_copy(
                update={
                    "new_state": answer.new_state,
                    "commands": merged.commands + answer.commands,
                    "transitions": merged.transitions + answer.transitions,
                    "ledger_entries": merged.ledger_entries + answer.ledger_entries,
                }
            )
        return merged

    def receive(self, event: PaymentEvent, now: datetime) -> Decision:
        """An event read from payments.events at `now`."""
        return self.apply(event, now)

    def due(self, now: datetime) -> list[tuple[datetime, Key, str]]:
        """(due_at, saga key, timer id) of every timer due at `now`, earliest first."""
        return sorted(
            (timer.due_at, key, timer.id)
            for key, saga in self.sagas.items()
            for timer in saga.pending
            if timer.due_at <= now
        )

    def fire_due(self, now: datetime) -> list[Decision]:
        """Fire every due timer (each once: a fired timer leaves the saga's pending list)."""
        decisions = []
        for due_at, (tenant, invoice), timer_id in self.due(now):
            fired = TimerFired(tenant=tenant, invoice_ref=invoice, timer_id=timer_id, due_at=due_at)
            decisions.append(self.apply(fired, now))
        return decisions

    def change_policy(self, policy: TenantPolicy, now: datetime) -> list[Decision]:
        """Adopt a new policy and reconcile every open saga with it."""
        self.policy = policy
        return [
            self.apply(PolicyChanged(tenant=t, invoice_ref=i, revision=policy.revision), now)
            for (t, i), saga in list(self.sagas.items())
            if saga.is_open
        ]
