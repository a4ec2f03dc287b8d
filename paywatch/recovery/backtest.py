"""Policy backtest: a tenant's history replayed through the saga core, in isolation. Pure.

``compare(history, running, candidate, simulator)`` replays the same history once per
policy and returns both ``Figures`` (``backtest_figures``) side by side. Nothing leaves:
the saga core is driven through the in-memory shell (``memory_shell``, the worker's permit
protocol: every retry is granted by its card's ledger), whose commands are only counted.

How the history is replayed:

* events in ``occurred_at`` order (stable: ties keep the order given), so the answer does
  not depend on how many partitions the topic has; ``now`` is the event's time (never
  going back), and every timer due before an event fires first, at its own due time;
* invoices whose history never opens a saga (no failure, past-due or overdue event: most
  renewals are simply paid) are left out: without a saga their events change nothing;
* outcomes of retries paywatch made (``paywatch_retry``: the executor's sandbox or live
  answers, a schedule-only tenant's reports) are **not** reused: those retries were
  decided by the policy of the time. The backtest decides its own retries and draws each
  one's outcome from the sandbox simulator's model (``recovery.simulator``, seeded by
  command id, as the executor does), answered at the retry's due time. Everything else
  (provider retries, customers updating cards, payments out of band, cancellations) is
  the world, and is replayed as it happened whatever the policy;
* a failure of an invoice that one of the backtest's retries had already recovered, before
  the history itself resolved it (a provider's next retry, a past-due notice), is an echo
  of the real non-recovery: it would not have happened, so it is skipped (counted), until
  the history's own payment or closure of that invoice;
* the replay ends at ``horizon`` (default: the last event): later timers do not fire, and
  episodes still open then are counted as open.

Each retry is also audited when sent against the card rules
(``backtest_figures.network_violations``); the figure must be 0.

A year of a tenant runs in seconds: timers are kept in a heap (one entry per saga's next
timer), not found by scanning every saga (bench/bench_backtest.py).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paywatch.recovery.backtest_figures import (
    Figures,
    Tally,
    figures_json,
    iso,
    network_violations,
)
from paywatch.recovery.memory_shell import Key, MemoryShell
from paywatch.recovery.simulator import SimulatorConfig, simulate, simulated_days
from paywatch.recovery.state import Decision, SagaInput, TimerFired
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    CommandType,
    Decline,
    EventType,
    PaymentEvent,
    RecoveryCommand,
    SagaState,
)

OUTCOME_NAMESPACE = uuid.UUID("5d0b7c2e-8f41-4a3b-9c6d-2e7f1a9b3c58")
"""uuid5 namespace of the backtest's own retry outcomes (they never leave the backtest)."""
OUTCOME_SOURCE = "paywatch.backtest"
DECLINE_CODE = "sandbox_declined"
OPENERS = frozenset(
    {EventType.PAYMENT_FAILED, EventType.SUBSCRIPTION_PAST_DUE, EventType.INVOICE_OVERDUE}
)
"""Event types that can open a saga: an invoice with none of them never has one."""
RESOLVERS = frozenset(
    {
        EventType.PAYMENT_SUCCEEDED,
        EventType.SUBSCRIPTION_REACTIVATED,
        EventType.SUBSCRIPTION_CANCELED,
        EventType.INVOICE_VOIDED,
        EventType.INVOICE_UNCOLLECTIBLE,
    }
)
"""Event types that end an episode in the history itself (paid, canceled, written off)."""
MAX_EVENTS = 100_000
"""Events of failed invoices one backtest replays at most, whoever asks (the CLI, the API):
about six tenant-years of 10 000 subscribers, some 40 s and 0.5 GB (bench/bench_backtest.py)."""


@dataclass(frozen=True)
class Replayed:
    """The history as the backtest reads it (shared by both policies)."""

    events: tuple[PaymentEvent, ...]
    """The events replayed, in time order."""
    given: int
    skipped_outcomes: int
    """Outcomes of retries paywatch made in the history, not reused."""
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True)
class Comparison:
    """Both policies on the same history."""

    history: Replayed
    horizon: datetime | None
    seed: int
    running: Figures
    candidate: Figures


def prepare(history: Iterable[PaymentEvent]) -> Replayed:
    """The events that matter, in time order; how many were given and skipped."""
    given = list(history)
    world = [e for e in given if not e.paywatch_retry]
    sagas = {(e.tenant, e.invoice_ref) for e in world if e.type in OPENERS}
    kept = sorted(
        (e for e in world if (e.tenant, e.invoice_ref) in sagas), key=lambda e: e.occurred_at
    )
    first = min((e.occurred_at for e in given), default=None)
    last = max((e.occurred_at for e in given), default=None)
    return Replayed(tuple(kept), len(given), len(given) - len(world), first, last)


def compare(
    history: Iterable[PaymentEvent],
    running: TenantPolicy,
    candidate: TenantPolicy,
    simulator: SimulatorConfig,
    horizon: datetime | None = None,
) -> Comparison:
    """Replay `history` under the running and the candidate policy."""
    replayed = prepare(history)
    end = horizon or replayed.last_at
    return Comparison(
        history=replayed,
        horizon=end,
        seed=simulator.seed,
        running=run(replayed.events, running, simulator, end),
        candidate=run(replayed.events, candidate, simulator, end),
    )


def run(
    events: Sequence[PaymentEvent],
    policy: TenantPolicy,
    simulator: SimulatorConfig,
    horizon: datetime | None,
) -> Figures:
    """One policy's figures on events already in time order (see ``prepare``)."""
    replay = _Replay(MemoryShell(policy, permits=True), simulator, Tally(policy.revision))
    for event in events:
        replay.advance(event.occurred_at)
        if replay.echo(event):
            continue
        replay.apply(event, replay.later(event.occurred_at))
    if horizon is not None:
        replay.advance(horizon, inclusive=True)
    still_open = sum(1 for saga in replay.shell.sagas.values() if saga.is_open)
    return replay.tally.figures(still_open)


@dataclass
class _Replay:
    """The shell, its timer heap and the tally of one policy's replay."""

    shell: MemoryShell
    simulator: SimulatorConfig
    tally: Tally
    clock: datetime | None = None
    timers: list[tuple[datetime, Key]] = field(default_factory=list)
    outcomes: set[str] = field(default_factory=set)
    recovered: set[Key] = field(default_factory=set)
    """Invoices a backtest retry recovered while their real episode was still unresolved."""

    def echo(self, event: PaymentEvent) -> bool:
        """Is `event` a failure that would not have happened: the backtest's own retry had
        recovered the invoice before the history resolved it (the provider's later retries,
        a past-due notice)? Those are skipped; the history's own resolution ends the echo."""
        key = (event.tenant, event.invoice_ref)
        if key not in self.recovered:
            return False
        if event.type in OPENERS:
            self.tally.echoes += 1
            return True
        if event.type in RESOLVERS:
            self.recovered.discard(key)
        return False

    def advance(self, until: datetime, *, inclusive: bool = False) -> None:
        """Fire every timer due before `until` (or at it, when `inclusive`), in due order."""
        while self.timers and (
            self.timers[0][0] < until or (inclusive and self.timers[0][0] == until)
        ):
            due, key = heapq.heappop(self.timers)
            saga = self.shell.sagas.get(key)
            if saga is None or not saga.pending or saga.pending[0].due_at != due:
                continue  # superseded: the saga's current next timer has its own entry
            timer = saga.pending[0]
            fired = TimerFired(tenant=key[0], invoice_ref=key[1], timer_id=timer.id, due_at=due)
            self.apply(fired, self.later(due))

    def later(self, at: datetime) -> datetime:
        """`at`, or the replay's clock when that is later (time never goes back)."""
        return at if self.clock is None or at > self.clock else self.clock

    def apply(self, event: SagaInput, now: datetime) -> None:
        """Decide one input at `now`, then answer the retries it sent (same instant)."""
        self.clock = now
        inputs: list[SagaInput] = [event]
        while inputs:
            decision = self.shell.apply(inputs.pop(0), now)
            self.shell.commands.clear()  # counted here; the shell need not keep them
            self.shell.transitions.clear()
            self.tally.decision(decision, self.outcomes)
            self._by_retry(decision)
            for cmd in decision.commands:
                self.tally.command(cmd)
                if cmd.type is CommandType.RETRY_PAYMENT:
                    self._audit(cmd, now)
                    inputs.append(self._outcome(cmd))
            self._index(decision)

    def _by_retry(self, decision: Decision) -> None:
        for t in decision.transitions:
            if t.to_state is SagaState.recovered and t.cause_event_id in self.outcomes:
                self.recovered.add((t.tenant, t.invoice_ref))

    def _index(self, decision: Decision) -> None:
        saga = decision.new_state
        if saga is not None and saga.pending:
            key = (saga.tenant, saga.invoice_ref)
            heapq.heappush(self.timers, (saga.pending[0].due_at, key))

    def _audit(self, cmd: RecoveryCommand, now: datetime) -> None:
        saga = self.shell.sagas.get((cmd.tenant, cmd.invoice_ref))
        if saga is None or saga.card is None:
            return
        others = (e for e in self.shell.ledger(saga.card).entries if e.id != cmd.command_id)
        self.tally.violated(cmd, network_violations(others, saga, now, self.shell.policy.rulebook))

    def _outcome(self, cmd: RecoveryCommand) -> PaymentEvent:
        """The simulated answer to one retry, as the executor would append it."""
        start = cmd.first_failed_at or cmd.due_at
        verdict = simulate(cmd, self.simulator, simulated_days(start, cmd.due_at, 1.0))
        event_id = str(uuid.uuid5(OUTCOME_NAMESPACE, f"{cmd.tenant}/{cmd.command_id}"))
        self.outcomes.add(event_id)
        decline = None
        if not verdict.succeeded:
            decline = Decline(code=DECLINE_CODE, category=verdict.category)
        return PaymentEvent(
            event_id=event_id,
            type=EventType.PAYMENT_SUCCEEDED if verdict.succeeded else EventType.PAYMENT_FAILED,
            tenant=cmd.tenant,
            provider=cmd.provider or "paywatch",
            source_type=OUTCOME_SOURCE,
            occurred_at=cmd.due_at,
            customer_ref=cmd.customer_ref,
            subscription_ref=cmd.subscription_ref,
            invoice_ref=cmd.invoice_ref,
            payment_ref=cmd.payment_ref,
            amount_minor=cmd.amount_minor,
            currency=cmd.currency,
            decline=decline,
            attempt=cmd.attempt,
            paywatch_retry=True,
        )


def comparison_json(
    c: Comparison, *, tenant: str, tenant_events: int, running_source: str
) -> dict[str, Any]:
    """The whole comparison as JSON-ready data (the CLI's --json, the API's answer):
    `tenant_events` counts every event of the window read, `running_source` says whether the
    running policy is the stored one or the defaults."""
    h = c.history
    return {
        "tenant": tenant,
        "seed": c.seed,
        "history": {
            "tenant_events": tenant_events,
            "events_replayed": len(h.events),
            "retry_outcomes_not_reused": h.skipped_outcomes,
            "first_event_at": iso(h.first_at),
            "last_event_at": iso(h.last_at),
            "horizon": iso(c.horizon),
        },
        "running": {"source": running_source, **figures_json(c.running)},
        "candidate": figures_json(c.candidate),
    }
