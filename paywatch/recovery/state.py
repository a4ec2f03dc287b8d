"""The saga's state, its inputs and its output: frozen models, no behaviour beyond lookups.

One saga per tenant/invoice (ARCHITECTURE §8). States and the edges ``decide`` may take::

    (none) -> failed -> retrying <-> awaiting_customer
                 \\            \\           /
                  +-------------+---------+--> recovered | exhausted | canceled

``failed`` is the entry state: the opening decision always moves on from it in the same
decision. Every decision that changes an open saga emits at least one transition (ARCHITECTURE
§8), so a decision that keeps the state emits a self-transition (``retrying -> retrying``,
``awaiting_customer -> awaiting_customer``); each carries the decision snapshot (reason,
attempts used and allowed, next action and when) for the ``recovery_workflows`` read model.

Terminal states are final. A saga that ended ``recovered`` can be followed by a
new *episode* for the same key (PayPal tracks a whole subscription under one
``invoice_ref``), opened only by a failure strictly newer than everything the closed episode
saw: it starts from ``None`` again, so its transitions say it is a new saga.

Timers live here, in ``Saga.pending``: each is a scheduled command (or the deadline) with
its ``due_at``. The shell indexes ``(timer.id, timer.due_at)`` after every decision and calls
``decide(state, TimerFired(...), now, policy)`` when one comes due. A timer fires once: when
it fires it leaves ``pending``, and a ``TimerFired`` for an id that is not pending (already
fired, superseded, or the saga closed) or not yet due does nothing.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from paywatch.errors import PaywatchError
from paywatch.recovery.ledger import CardAttempt, CardLedger
from paywatch.recovery.rules import Verdict
from paywatch.schemas.models import (
    DeclineCategory,
    Frozen,
    PaymentEvent,
    RecoveryCommand,
    RiskBand,
    RuleRef,
    SagaState,
    SagaTransition,
)

OPEN = frozenset({SagaState.failed, SagaState.retrying, SagaState.awaiting_customer})
TERMINAL = frozenset({SagaState.recovered, SagaState.exhausted, SagaState.canceled})
ALLOWED_EDGES: frozenset[tuple[SagaState | None, SagaState]] = frozenset(
    {(None, SagaState.failed)}
    | {(SagaState.failed, to) for to in (SagaState.retrying, SagaState.awaiting_customer)}
    | {(SagaState.retrying, SagaState.awaiting_customer)}
    | {(SagaState.awaiting_customer, SagaState.retrying)}
    | {(SagaState.retrying, SagaState.retrying)}
    | {(SagaState.awaiting_customer, SagaState.awaiting_customer)}
    | {(src, to) for src in OPEN for to in TERMINAL}
    | {(SagaState.exhausted, SagaState.recovered)}  # paid after the recovery window
)
"""Every (from_state, to_state) a transition may name."""


class InvalidTransition(PaywatchError):
    """A decision tried an edge outside ALLOWED_EDGES (a bug: the record goes to the DLQ)."""


class TimerPurpose(StrEnum):
    """Why a timer is pending."""

    RETRY = "retry"
    NOTIFY = "notify"
    REQUEST_UPDATE = "request_update"
    ESCALATE = "escalate"
    DEADLINE = "deadline"


class Timer(Frozen):
    """A scheduled command (or the saga's deadline) waiting for its due time."""

    id: str  # the command id (idempotency key); for the deadline a uuid5 of its own
    due_at: datetime
    purpose: TimerPurpose
    command: RecoveryCommand | None = None  # None only for the deadline


class Saga(Frozen):
    """The state of one recovery saga (one tenant/invoice; one episode at a time)."""

    tenant: str
    invoice_ref: str
    status: SagaState | None = None  # None: no saga yet (a blank state may carry a ledger)
    episode: int = 0
    opened_at: datetime | None = None  # first failure of the episode: anchors every day count
    closed_at: datetime | None = None
    floor: datetime | None = None  # events at or before it belong to a closed episode
    last_event_at: datetime | None = None
    provider: str | None = None
    customer_ref: str | None = None
    subscription_ref: str | None = None
    payment_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    card: str | None = None
    card_known: bool = False  # False: `card` is the invoice's stand-in (no card named yet)
    card_at: datetime | None = None  # occurred_at of the event that named `card`
    network: str | None = None
    verdict: Verdict | None = None  # of the newest failure on `card`
    verdict_at: datetime | None = None
    decline_category: DeclineCategory | None = None  # of the newest failure
    not_before: datetime | None = None  # earliest retry the network asked for
    not_before_rule: RuleRef | None = None
    stop: RuleRef | None = None  # never retry `card` again in this episode
    needs_update: bool = False  # waiting for PAYMENT_METHOD_UPDATED
    update_requests: int = 0
    provider_retry_at: datetime | None = None  # the provider said it retries itself
    in_flight: bool = False  # a paywatch retry was emitted, its outcome not seen yet
    retries: int = 0  # paywatch retries emitted in this episode
    awaiting_since: datetime | None = None
    policy_revision: str | None = None
    attempts: tuple[CardAttempt, ...] = ()  # this episode's ledger entries (attempts, stops)
    seen: tuple[str, ...] = ()  # event ids of this episode
    done: tuple[str, ...] = ()  # timer ids fired in this episode
    pending: tuple[Timer, ...] = ()  # sorted by (due_at, id)
    # The shell's snapshot of `card` (replaced before every call, need not be persisted),
    # plus what this decision added.
    ledger: CardLedger | None = None
    # The retry last emitted, as it was planned: the card's ledger (a card-keyed agent) may
    # still refuse it, and then it is planned again from here (see ``permits``).
    permit: Timer | None = None
    # The band that made this episode's customer high-risk (``TenantPolicy.high_risk``),
    # kept for the episode: timers and permit answers come without a band, and a re-planned
    # escalation must keep the earlier time. None: not high-risk (a new episode starts so).
    high_risk: RiskBand | None = None
    # The policy experiment the episode was opened under and its arm (``experiments``);
    # None: opened without one. The arm names every transition of the episode.
    experiment: str | None = None
    arm: str | None = None

    @property
    def is_open(self) -> bool:
        """Is the saga between its first failure and a terminal state?"""
        return self.status in OPEN

    @property
    def deadline(self) -> datetime | None:
        """When the episode gives up (its pending deadline timer), if open."""
        return next((t.due_at for t in self.pending if t.purpose is TimerPurpose.DEADLINE), None)

    def timer(self, timer_id: str) -> Timer | None:
        """The pending timer with that id, if any."""
        return next((t for t in self.pending if t.id == timer_id), None)

    def has(self, purpose: TimerPurpose) -> bool:
        """Is a timer of that purpose pending?"""
        return any(t.purpose is purpose for t in self.pending)

    def schedule(self, timer: Timer) -> Saga:
        """The saga with `timer` pending (replacing a pending one with the same id)."""
        rest = [t for t in self.pending if t.id != timer.id]
        pending = tuple(sorted([*rest, timer], key=lambda t: (t.due_at, t.id)))
        return self.model_copy(update={"pending": pending})

    def unschedule(self, timer_id: str) -> Saga:
        """The saga without that pending timer."""
        return self.model_copy(
            update={"pending": tuple(t for t in self.pending if t.id != timer_id)}
        )

    def timers(self) -> list[tuple[str, datetime]]:
        """(timer id, due_at) of every pending timer: what the shell indexes."""
        return [(t.id, t.due_at) for t in self.pending]


class TimerFired(Frozen):
    """The shell's signal that a pending timer came due."""

    tenant: str
    invoice_ref: str
    timer_id: str
    due_at: datetime


class PolicyChanged(Frozen):
    """The tenant's policy changed; `decide` is given the new one."""

    tenant: str
    invoice_ref: str
    revision: str


class PermitDenied(Frozen):
    """The card's ledger refused a retry this saga emitted (another invoice used the card).

    ``until`` is when the card's counters allow one more (saga time), or None: never (a stop
    on the card, or no time left before the saga's deadline). ``rule`` says which limit.
    """

    tenant: str
    invoice_ref: str
    command_id: str
    until: datetime | None = None
    rule: RuleRef
    reason: str


SagaInput = PaymentEvent | TimerFired | PolicyChanged | PermitDenied
"""What ``decide`` reacts to."""


class Decision(Frozen):
    """The outcome of one ``decide`` call."""

    new_state: Saga | None
    commands: tuple[RecoveryCommand, ...] = ()
    transitions: tuple[SagaTransition, ...] = ()
    ledger_entries: tuple[CardAttempt, ...] = ()
