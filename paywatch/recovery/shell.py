"""The pure half of the saga agent: table entries in, table entries and records out.

The Faust agent (``paywatch.streams.saga``) reads a saga's table entry, calls ``step`` and
then does the I/O: sends the commands, transitions and card records (retry permit requests
and attempts, to the card's ledger agent), waits for the acks, writes the entry back and
re-indexes the timers. Everything here is
deterministic given its arguments (the wall time is one of them).

Table entries are bytes, encoded once (the saga table's value serializer is ``raw``)::

    sagas[tenant/invoice_ref] = version 2: header (partition, last decision in saga time,
                                pending timer count, the first timer's id and wall due
                                time) + the saga, compact (:mod:`paywatch.recovery.entry_codec`)
                              | version 1 (read only, written before): JSON
                                {"v": 1, "p", "d", "t": [[timer id, wall due], ...], "s": Saga}
    card ledger[card key]     = [CardAttempt, ...]   # the last CARD_HISTORY_DAYS only

The header lets the timer index be rebuilt from the store's raw bytes without parsing any
saga; ``d`` keeps transition times monotonic per saga even if the wall clock steps back.
A decision that changes nothing (a replay, a stale tick) keeps the entry byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from paywatch.recovery import entry_codec
from paywatch.recovery.card_messages import route
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.decide import decide, ledger_card
from paywatch.recovery.ledger import CardAttempt, CardLedger
from paywatch.recovery.state import Decision, PermitDenied, Saga, SagaInput, TimerFired
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import PaymentEvent, RecoveryCommand, RiskBand, SagaTransition

ENTRY_VERSION = entry_codec.VERSION
CARD_HISTORY_DAYS = 31
"""Card attempts older than this (saga time) are dropped: every network window is ≤ 30 d."""

Entry = bytes
"""A saga table value (see the module docstring)."""
CardsGet = Callable[[str], list[dict[str, Any]] | None]


@dataclass
class Step:
    """What one decision changes: the saga entry, card entries, records to send."""

    entry: Entry | None
    cards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    commands: list[RecoveryCommand] = field(default_factory=list)
    transitions: list[SagaTransition] = field(default_factory=list)
    card_messages: list[tuple[str, bytes]] = field(default_factory=list)
    """(card key, record) for ``recovery.cards``: attempts seen and retry permit requests."""
    timers: list[tuple[str, datetime]] = field(default_factory=list)
    """The saga's pending timers after the decision, wall time (what the timer index holds)."""


class Next(NamedTuple):
    """What the timer index needs of an entry: its partition and its next timer."""

    partition: int
    pending: int  # how many timers are pending
    timer_id: str  # the first one's (due order)
    due: datetime  # wall time


def _v1(entry: Entry) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(entry)
    return value


def saga_of(entry: Entry | None) -> Saga | None:
    """The saga stored in a table entry (either version)."""
    if entry is None:
        return None
    if entry_codec.is_v2(entry):
        return entry_codec.decode(entry)
    return Saga.model_validate(_v1(entry)["s"])


def entry_next(entry: Entry) -> Next | None:
    """The partition and next timer of an entry without parsing the saga; None: no timer."""
    if entry_codec.is_v2(entry):
        head = entry_codec.read_head(entry)
        if not head.timers:
            return None
        due = entry_codec.from_us(head.first_due_us)
        return Next(head.partition, head.timers, head.first_id, due)
    old = _v1(entry)
    timers = sorted((datetime.fromisoformat(due), tid) for tid, due in old.get("t", []))
    if not timers:
        return None
    return Next(int(old["p"]), len(timers), timers[0][1], timers[0][0])


def entry_timers(entry: Entry | None, clock: SagaClock) -> list[tuple[str, datetime]]:
    """(timer id, wall due time) of every pending timer of a table entry."""
    saga = saga_of(entry)
    return [] if saga is None else _wall_timers(saga, clock)


def entry_partition(entry: Entry) -> int:
    """The partition the saga lives on."""
    if entry_codec.is_v2(entry):
        return entry_codec.read_head(entry).partition
    return int(_v1(entry)["p"])


def _decided(entry: Entry) -> datetime | None:
    if entry_codec.is_v2(entry):
        return entry_codec.from_us(entry_codec.read_head(entry).decided_us)
    decided = _v1(entry).get("d")
    return datetime.fromisoformat(decided) if decided else None


def _wall_timers(saga: Saga, clock: SagaClock) -> list[tuple[str, datetime]]:
    return [(tid, clock.to_wall(due)) for tid, due in saga.timers()]


def tick(fired: TimerFired) -> bytes:
    """The ``recovery.timers`` record that makes the agent fire a due timer."""
    return json.dumps(
        {
            "tenant": fired.tenant,
            "invoice_ref": fired.invoice_ref,
            "timer_id": fired.timer_id,
            "due_at": fired.due_at.isoformat(),
        }
    ).encode()


def read_tick(value: bytes) -> TimerFired | PermitDenied:
    """A ``recovery.timers`` record: a due timer, or a card ledger's refusal of a retry.

    Raises ValueError / ValidationError when malformed.
    """
    payload = json.loads(value)
    if isinstance(payload, dict) and "denied" in payload:
        return PermitDenied.model_validate(payload["denied"])
    return TimerFired.model_validate(payload)


def fired_for(key: str, timer_id: str, entry: Entry | None) -> TimerFired | None:
    """The TimerFired of a pending timer of this entry (saga-time due), or None."""
    saga = saga_of(entry)
    timer = saga.timer(timer_id) if saga else None
    if saga is None or timer is None:
        return None
    return TimerFired(
        tenant=saga.tenant, invoice_ref=saga.invoice_ref, timer_id=timer_id, due_at=timer.due_at
    )


def _to_saga(event: SagaInput, clock: SagaClock) -> SagaInput:
    if clock.identity or not isinstance(event, PaymentEvent):
        return event
    update: dict[str, Any] = {"occurred_at": clock.to_saga(event.occurred_at)}
    if event.provider_retry_at is not None:
        update["provider_retry_at"] = clock.to_saga(event.provider_retry_at)
    return event.model_copy(update=update)


def _command_to_wall(command: RecoveryCommand, clock: SagaClock) -> RecoveryCommand:
    if clock.identity:
        return command
    update: dict[str, Any] = {"due_at": clock.to_wall(command.due_at)}
    for name in ("issued_at", "first_failed_at"):
        value = getattr(command, name)
        if value is not None:
            update[name] = clock.to_wall(value)
    return command.model_copy(update=update)


def _transition_to_wall(transition: SagaTransition, clock: SagaClock) -> SagaTransition:
    if clock.identity:
        return transition
    update: dict[str, Any] = {"at": clock.to_wall(transition.at)}
    if transition.next_action_at is not None:
        update["next_action_at"] = clock.to_wall(transition.next_action_at)
    return transition.model_copy(update=update)


def _merge(
    known: list[dict[str, Any]] | None, new: Iterable[CardAttempt], horizon: datetime
) -> list[dict[str, Any]]:
    entries = {e["id"]: e for e in known or []}
    for attempt in new:
        entries.setdefault(attempt.id, attempt.model_dump(mode="json"))
    return [e for e in entries.values() if datetime.fromisoformat(e["at"]) >= horizon]


def step(
    entry: Entry | None,
    event: SagaInput,
    *,
    partition: int,
    wall_now: datetime,
    clock: SagaClock,
    policy: TenantPolicy,
    cards: CardsGet | None = None,
    outages: frozenset[str] = frozenset(),
    risk: RiskBand | None = None,
) -> Step:
    """One decision of the saga behind ``entry`` (see the module docstring).

    With ``cards`` (a local card table: the plain-loop benchmark) the decision reads and
    writes card usage directly. Without (the worker), the saga knows its own attempts only:
    its retries become permit requests and its attempts records for the card's ledger
    (``card_messages``), which has the last word (:mod:`paywatch.recovery.permits`).
    ``outages`` and ``risk`` are what the worker's alert and risk views say now (``decide``).
    """
    state = saga_of(entry)
    event = _to_saga(event, clock)
    now = clock.to_saga(wall_now)
    decided = _decided(entry) if entry else None
    if decided is not None:
        now = max(now, decided)  # never back in time per saga
    with_ledger = _with_ledger(state, event, cards or _none)
    decision = decide(with_ledger, event, now, policy, outages, risk)
    out = Step(entry=entry)
    kept = decision.new_state
    if kept is not None and not _no_op(state, decision):
        out.entry = _entry(kept, partition, now, clock)
    commands = [_command_to_wall(c, clock) for c in decision.commands]
    if cards is None:
        routed = route(decision.new_state, commands, decision.ledger_entries)
        out.commands, out.card_messages = routed.commands, routed.card_messages
    else:
        out.cards = _card_updates(decision.ledger_entries, cards, now)
        out.commands = commands
    out.transitions = [_transition_to_wall(t, clock) for t in decision.transitions]
    final = kept if kept is not None else state
    out.timers = [] if final is None else _wall_timers(final, clock)
    return out


def _no_op(state: Saga | None, decision: Decision) -> bool:
    """Did the decision leave the saga as it was and emit nothing (the entry is kept)?"""
    if decision.commands or decision.transitions or decision.ledger_entries:
        return False
    new = decision.new_state
    return (
        state is not None and new is not None and new.model_copy(update={"ledger": None}) == state
    )


def _none(_card: str) -> None:
    return None


def _with_ledger(state: Saga | None, event: SagaInput, cards: CardsGet) -> Saga | None:
    """The saga with its card's ledger in it (``decide`` reads the card's usage from there)."""
    card = ledger_card(state, event)
    if card is None:
        return state
    entries = tuple(CardAttempt.model_validate(e) for e in cards(card) or [])
    blank = state or Saga(tenant=event.tenant, invoice_ref=event.invoice_ref)
    return blank.model_copy(update={"ledger": CardLedger(card=card, entries=entries)})


def _entry(saga: Saga, partition: int, now: datetime, clock: SagaClock) -> Entry:
    """The table entry of a decided saga (its ledger lives in the card table, not here)."""
    stored = saga.model_copy(update={"ledger": None}) if saga.ledger is not None else saga
    return entry_codec.encode(stored, partition, now, _wall_timers(saga, clock))


def _card_updates(
    attempts: Iterable[CardAttempt], cards: CardsGet, now: datetime
) -> dict[str, list[dict[str, Any]]]:
    """The card-table values the new attempts change (history kept CARD_HISTORY_DAYS)."""
    by_card: dict[str, list[CardAttempt]] = {}
    for attempt in attempts:
        by_card.setdefault(attempt.card, []).append(attempt)
    horizon = now - timedelta(days=CARD_HISTORY_DAYS)
    return {key: _merge(cards(key), new, horizon) for key, new in by_card.items()}
