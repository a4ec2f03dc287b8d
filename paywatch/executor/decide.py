"""What a batch of due commands does, decided before any I/O. Pure.

For each command, in due order: its journal entry and, for a retry, the outcome event
already encoded for payments.events. A retry of a schedule-only tenant (the command's
``schedule_only``, set by the saga from the policy it emitted the retry under) is not
charged: it is journaled ``scheduled`` with no outcome, since the tenant charges it and
reports the result itself (``POST /v1/invoices/{ref}/attempts`` or a provider webhook).
The flag rides on the command rather than being looked up here: the executor then needs
no policy view, and a replay decides exactly as the first run did.

The simulator's day 0 (the anchor) is the invoice's first failure when the command carries
it, else the earliest due time of the invoice's journaled commands (looked up once per
batch) or of the commands decided before it in the same batch, exactly as when commands
were journaled one by one.

A command that cannot be decided (any exception while simulating, building or encoding
its outcome) is returned as a failure for the dead-letter queue, alone: the work is a
function of that record only, so the failure is the record's, never transient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from paywatch.charging.base import ChargeResult
from paywatch.executor.outcome import live_outcome_event, outcome_event
from paywatch.executor.simulator import SimulatorConfig, simulate, simulated_days
from paywatch.schemas.models import CommandType, PaymentEvent, RecoveryCommand
from paywatch.schemas.topics import invoice_key

SCHEDULED = "scheduled"
"""Journal outcome of a retry the tenant charges itself (nothing appended)."""
Key = tuple[str, str]
"""(tenant, command_id): the journal's primary key."""
Invoice = tuple[str, str]
"""(tenant, invoice_ref)."""


class Coords(NamedTuple):
    """Where a command was read."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Entry:
    """One executed command as the journal keeps it (no customer data in `detail`)."""

    command: RecoveryCommand
    outcome: str
    executed_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        """The journal's primary key."""
        return (self.command.tenant, self.command.command_id)


@dataclass(frozen=True)
class Output:
    """An encoded record to append, acknowledged before its command is journaled."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Decision:
    """A decided command: what to journal and what to append first (nothing for notices)."""

    entry: Entry
    output: Output | None
    token: Any
    """The caller's handle on the command (its schedule slot)."""


@dataclass(frozen=True)
class Refused:
    """A command that could not be decided, and why."""

    token: Any
    error: Exception


@dataclass(frozen=True)
class Batch:
    """The decisions of a batch, the in-batch duplicates and the refused commands."""

    decisions: list[Decision] = field(default_factory=list)
    duplicates: list[Any] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What deciding needs besides the command: table, time scale, clock, event encoder."""

    config: SimulatorConfig
    time_scale: float
    now: datetime
    events_topic: str
    encode: Callable[[PaymentEvent], bytes]


def charged(command: RecoveryCommand) -> bool:
    """True for a retry the executor carries out (a schedule-only one is the tenant's)."""
    return command.type is CommandType.RETRY_PAYMENT and not command.schedule_only


NOTICES = frozenset({CommandType.NOTIFY_CUSTOMER, CommandType.REQUEST_PAYMENT_METHOD_UPDATE})
"""Commands whose message goes to the customer (email, when the tenant turned it on)."""


def customer_notice(command: RecoveryCommand) -> bool:
    """True for a command that messages the customer (queued as an email if enabled)."""
    return command.type in NOTICES


def needs_anchor(command: RecoveryCommand) -> bool:
    """True when the command's day 0 must come from the journal."""
    return charged(command) and command.first_failed_at is None


def decide_batch(
    items: Sequence[tuple[Any, RecoveryCommand, Coords]],
    journaled: Mapping[Invoice, datetime],
    ctx: Context,
) -> Batch:
    """Decide (token, command, coords) items in order; `journaled`: earliest due per invoice."""
    batch, seen = Batch(), set()
    earliest = dict(journaled)
    for token, command, coords in items:
        key = (command.tenant, command.command_id)
        if key in seen:
            batch.duplicates.append(token)
            continue
        seen.add(key)
        invoice = (command.tenant, command.invoice_ref)
        try:
            decision = decide(token, command, coords, earliest.get(invoice), ctx)
        except Exception as exc:  # pure work over one record: any failure is the record's
            batch.refused.append(Refused(token, exc))
            continue
        batch.decisions.append(decision)
        first = earliest.get(invoice)
        earliest[invoice] = command.due_at if first is None else min(first, command.due_at)
    return batch


def decide(
    token: Any, command: RecoveryCommand, coords: Coords, anchor: datetime | None, ctx: Context
) -> Decision:
    """The journal entry of one command and, for a charged retry, its encoded outcome."""
    detail = command_detail(command, coords)
    if not charged(command):
        recorded = SCHEDULED if command.type is CommandType.RETRY_PAYMENT else "recorded"
        return Decision(Entry(command, recorded, ctx.now, detail), None, token)
    start = command.first_failed_at or anchor
    start = command.due_at if start is None else min(start, command.due_at)
    day = simulated_days(start, command.due_at, ctx.time_scale)
    verdict = simulate(command, ctx.config, day)
    event = outcome_event(command, verdict, topic=coords.topic, partition=coords.partition,
                          offset=coords.offset)  # fmt: skip
    output = Output(
        ctx.events_topic, invoice_key(event.tenant, event.invoice_ref).encode(), ctx.encode(event)
    )
    extra = {"event_id": event.event_id, "day": day, "probability": verdict.probability}
    outcome = "succeeded" if verdict.succeeded else "failed"
    return Decision(Entry(command, outcome, ctx.now, {**detail, **extra}), output, token)


def decide_live(
    token: Any, command: RecoveryCommand, coords: Coords, result: ChargeResult, tries: int,
    ctx: Context,
) -> Decision:  # fmt: skip
    """The journal entry and encoded outcome of a retry the provider charged (live.py)."""
    event = live_outcome_event(command, result, topic=coords.topic, partition=coords.partition,
                               offset=coords.offset)  # fmt: skip
    output = Output(
        ctx.events_topic, invoice_key(event.tenant, event.invoice_ref).encode(), ctx.encode(event)
    )
    extra = {"event_id": event.event_id, "live": True, "tries": tries,
             "provider_ref": result.provider_ref}  # fmt: skip
    if not result.succeeded and event.decline is not None:
        extra["decline_code"] = event.decline.code
    outcome = "succeeded" if result.succeeded else "failed"
    return Decision(Entry(command, outcome, ctx.now, {**command_detail(command, coords), **extra}),
                    output, token)  # fmt: skip


def command_detail(command: RecoveryCommand, coords: Coords) -> dict[str, Any]:
    """What the journal keeps about a command besides its columns: no customer data."""
    return {
        "attempt": command.attempt,
        "channel": command.channel,
        "template": command.template,
        "reason": command.reason,
        "rule": {"id": command.rule.id, "edition": command.rule.edition},
        "cause_event_id": command.cause_event_id,
        "source": {"topic": coords.topic, "partition": coords.partition, "offset": coords.offset},
    }
