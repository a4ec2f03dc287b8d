"""What one backtest run counts, and the network-rule check every simulated retry passes.

``Tally`` is fed every decision of the replay (``paywatch.recovery.backtest``) and turns it
into ``Figures``: retries spent, recoveries reached (and how many a paywatch retry made),
revenue recovered per currency (never summed across currencies), the median days from the
first failure to the recovery, customer notifications (NOTIFY_CUSTOMER and
REQUEST_PAYMENT_METHOD_UPDATE: both reach the customer), escalations, and how the episodes
ended.

``network_violations`` is the audit of one retry at the instant it was sent: it is written
from the card rules themselves (the rulebook's counters over every counted attempt on the
card, the 30-day stop markers, the network's "not before"), not by asking the gate that
decided, so a shell that let a retry past its card's ledger would be caught here. Pure.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.recovery.ledger import CardAttempt
from paywatch.recovery.limits import STOP_WINDOW
from paywatch.recovery.rules import Rulebook
from paywatch.recovery.state import Decision, Saga
from paywatch.schemas.models import CommandType, RecoveryCommand, RuleRef, SagaState

DAY = timedelta(days=1)
MAX_LISTED = 20
"""Violations listed one by one (all are counted)."""
_NOTICES = frozenset({CommandType.NOTIFY_CUSTOMER, CommandType.REQUEST_PAYMENT_METHOD_UPDATE})


@dataclass(frozen=True)
class Violation:
    """A retry that broke a card-network rule when it was sent."""

    invoice_ref: str
    at: datetime
    rule: str


@dataclass(frozen=True)
class Figures:
    """One policy's result on the history."""

    revision: str
    sagas: int
    retries: int
    recovered: int
    recovered_by_retry: int
    revenue: dict[str, int]
    median_days_to_recover: float | None
    violations: int
    listed_violations: tuple[Violation, ...]
    notifications: int
    escalations: int
    outcomes: dict[str, int]
    echoes: int
    """History failures skipped: the backtest had recovered their invoice already."""

    @property
    def recovery_rate(self) -> float | None:
        """Recovered episodes over opened ones (None when none opened)."""
        return self.recovered / self.sagas if self.sagas else None


def _same_amount(entry: CardAttempt, saga: Saga) -> bool:
    if entry.amount_minor is None or saga.amount_minor is None:
        return True  # unknown amounts count, as the ledger counts them
    return entry.amount_minor == saga.amount_minor and entry.currency == saga.currency


def network_violations(
    card: Iterable[CardAttempt], saga: Saga, now: datetime, book: Rulebook
) -> list[RuleRef]:
    """The card rules a retry of `saga` sent at `now` breaks, given every other entry of its
    card (all invoices, all providers); empty when it is allowed."""
    entries = list(card)
    counted = [e for e in entries if e.counted]
    broken = []
    for limit in book.limits(saga.network):
        inside = [
            e
            for e in counted
            if e.at > now - limit.window and (not limit.same_amount or _same_amount(e, saga))
        ]
        if len(inside) > limit.max_prior:
            broken.append(limit.rule)
    stop = saga.stop or next(
        (e.stop for e in entries if e.stop is not None and e.at > now - STOP_WINDOW), None
    )
    if stop is not None:
        broken.append(stop)
    if saga.not_before is not None and now < saga.not_before and saga.not_before_rule:
        broken.append(saga.not_before_rule)
    return broken


@dataclass
class Tally:
    """Running counts of one replay (mutable, local to it)."""

    revision: str
    retries: int = 0
    by_retry: int = 0
    notifications: int = 0
    escalations: int = 0
    violations: int = 0
    listed: list[Violation] = field(default_factory=list)
    revenue: Counter[str] = field(default_factory=Counter)
    days: list[float] = field(default_factory=list)
    ended: dict[tuple[str, int], SagaState] = field(default_factory=dict)
    """(invoice, episode) -> its latest terminal state (a late payment follows exhaustion)."""
    opened: int = 0
    echoes: int = 0

    def command(self, cmd: RecoveryCommand) -> None:
        """Count one command that left the saga."""
        if cmd.type is CommandType.RETRY_PAYMENT:
            self.retries += 1
        elif cmd.type in _NOTICES:
            self.notifications += 1
        elif cmd.type is CommandType.ESCALATE:
            self.escalations += 1

    def violated(self, cmd: RecoveryCommand, broken: list[RuleRef]) -> None:
        """Record the rules one retry broke (nothing when `broken` is empty)."""
        if not broken:
            return
        self.violations += 1
        if len(self.listed) < MAX_LISTED:
            rules = ",".join(r.id for r in broken)
            self.listed.append(Violation(cmd.invoice_ref, cmd.due_at, rules))

    def decision(self, decision: Decision, retry_outcomes: set[str]) -> None:
        """Count the episodes a decision opened and ended (`retry_outcomes`: the ids of the
        outcome events of the backtest's own retries)."""
        saga = decision.new_state
        for t in decision.transitions:
            if t.from_state is None:
                self.opened += 1
            if saga is None or t.to_state not in (
                SagaState.recovered,
                SagaState.exhausted,
                SagaState.canceled,
            ):
                continue
            self.ended[(t.invoice_ref, saga.episode)] = t.to_state
            if t.to_state is SagaState.recovered:
                self._recovered(saga, t.at, t.cause_event_id in retry_outcomes)

    def _recovered(self, saga: Saga, at: datetime, by_retry: bool) -> None:
        self.by_retry += by_retry
        if saga.amount_minor is not None and saga.currency is not None:
            self.revenue[saga.currency] += saga.amount_minor
        if saga.opened_at is not None:
            self.days.append(max(0.0, (at - saga.opened_at) / DAY))

    def figures(self, still_open: int) -> Figures:
        """The final figures; `still_open`: episodes open when the replay ended."""
        outcomes = Counter(state.value for state in self.ended.values())
        median = round(statistics.median(self.days), 2) if self.days else None
        return Figures(
            revision=self.revision,
            sagas=self.opened,
            retries=self.retries,
            recovered=outcomes[SagaState.recovered.value],
            recovered_by_retry=self.by_retry,
            revenue=dict(sorted(self.revenue.items())),
            median_days_to_recover=median,
            violations=self.violations,
            listed_violations=tuple(self.listed),
            notifications=self.notifications,
            escalations=self.escalations,
            outcomes={
                "recovered": outcomes[SagaState.recovered.value],
                "exhausted": outcomes[SagaState.exhausted.value],
                "canceled": outcomes[SagaState.canceled.value],
                "open": still_open,
            },
            echoes=self.echoes,
        )


def iso(at: datetime | None) -> str | None:
    """An instant as JSON spells it here and in the API: UTC, ``Z``."""
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def figures_json(f: Figures) -> dict[str, Any]:
    """One policy's figures as JSON-ready data (the CLI's --json, the API's answer)."""
    return {
        "revision": f.revision,
        "sagas": f.sagas,
        "retries_spent": f.retries,
        "recoveries": f.recovered,
        "recovered_by_paywatch_retry": f.recovered_by_retry,
        "recovery_rate": None if f.recovery_rate is None else round(f.recovery_rate, 4),
        "revenue_recovered_minor": f.revenue,
        "median_days_to_recover": f.median_days_to_recover,
        "network_rule_violations": f.violations,
        "violations": [
            {"invoice_ref": v.invoice_ref, "at": iso(v.at), "rules": v.rule}
            for v in f.listed_violations
        ],
        "customer_notifications": f.notifications,
        "escalations": f.escalations,
        "outcomes": f.outcomes,
        "history_failures_skipped": f.echoes,
    }
