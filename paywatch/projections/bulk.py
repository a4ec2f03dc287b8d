"""A rebuild's bulk load of one partition group: folded in memory, written by plain COPY.

In the bulk phase of a rebuild (:mod:`paywatch.projections.rebuild`) the generation's
tables start empty, and one invoice's events, transitions and commands share a key, so a
partition number (murmur2, as every producer of paywatch partitions them). Partition
number ``p`` of ``payments.events``, ``recovery.transitions`` and ``recovery.commands`` (a
*group*) therefore holds the whole history of its invoices, and nothing else writes their
rows. Such a group is read whole, folded in memory and written in one transaction with its
checkpoints: each row once, by COPY straight into its table, with no lookup, no staging
and no merge (the incremental path costs about three times a COPY per row).

The rows are those the projector itself writes for the group's records given as **one
batch** (a batching the live projector may take, and read models do not depend on their
batching: tests/integration/test_replay.py compares a rebuild with an incremental build
row for row). The same pure functions make them: the models' ``row``/``evolve``, the
invoice fold with its decided status, ``metrics_daily.derive`` and its rollups. What the
projector reads back from its own tables in that batch is computed here from the group's
records instead: the newest success of an invoice and a saga's state (`invoices.LOOKUP`)
and the evidence of how an invoice was recovered (`metrics_daily.LOOKUP`).

A group is loaded this way only when none of its partitions has a checkpoint yet (a resumed
job loaded it whole or not at all) and it holds at most ``PAYWATCH_REPLAY_BULK_RECORDS``
records (its history is held in memory); otherwise, or when its COPY fails (a record that
cannot be written, a key met in two groups), it goes through the incremental path, after
the tables' other indexes are built (`generation.drop_secondary_indexes`: while groups are
loaded, the tables keep only their unique keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg

from paywatch.projections import (
    event_log,
    failures,
    invoices,
    metrics_daily,
    recovery_log,
    recovery_workflows,
)
from paywatch.projections.invoice_fold import COLUMNS as INVOICE_COLUMNS
from paywatch.projections.invoice_fold import FAILURE_TYPES, SUCCESS_TYPES, InvoiceRow, evolve
from paywatch.projections.recovery_workflows import WorkflowRow
from paywatch.projections.sink import CHECKPOINT
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    EventType,
    Frozen,
    PaymentEvent,
    RecoveryCommand,
    SagaState,
    SagaTransition,
)
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_COMMANDS, RECOVERY_TRANSITIONS

TOPICS = (PAYMENTS_EVENTS, RECOVERY_TRANSITIONS, RECOVERY_COMMANDS)
"""The logical topics of a group."""
MODELS = frozenset(
    {"event_log", "failures", "recovery_log", "recovery_workflows", "invoices", "metrics_daily"}
)
"""Every read model of these topics: a group is loaded in bulk only if all of its models are."""
TABLES = frozenset(MODELS - {"metrics_daily"}) | frozenset(metrics_daily.TABLES)
"""Their tables."""

Key = tuple[str, str]


class Folded(NamedTuple):
    """One invoice folded: its row, its events (event_log's rows of it), its newest success."""

    row: InvoiceRow
    history: list[PaymentEvent]
    success: PaymentEvent | None


@dataclass
class Group:
    """One partition group's records, in log order per topic."""

    events: list[tuple[PaymentEvent, Coords]] = field(default_factory=list)
    transitions: list[tuple[SagaTransition, Coords]] = field(default_factory=list)
    commands: list[tuple[RecoveryCommand, Coords]] = field(default_factory=list)

    def add(self, record: Frozen | None, at: Coords) -> None:
        """Add a decoded record (None: undecodable, skipped)."""
        if isinstance(record, PaymentEvent):
            self.events.append((record, at))
        elif isinstance(record, SagaTransition):
            self.transitions.append((record, at))
        elif isinstance(record, RecoveryCommand):
            self.commands.append((record, at))


@dataclass(frozen=True)
class Load:
    """What a group writes: rows per table (in the table's column order), rollup moves."""

    tables: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]
    facts: list[metrics_daily.Fact]


def load(group: Group, models: Iterable[str]) -> Load:
    """The rows of `models` (names in `MODELS`) for the group given as one batch."""
    wanted = set(models)
    tables: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]] = {}
    events = _first_of_each_event(group.events)
    if "event_log" in wanted:
        tables["event_log"] = (event_log.WRITE.columns, [event_log.row(e, at) for e, at in events])
    if "failures" in wanted:
        rows = [r for e, at in events if (r := failures.row(e, at)) is not None]
        tables["failures"] = (failures.WRITE.columns, rows)
    if "recovery_log" in wanted:
        logged: list[tuple[SagaTransition | RecoveryCommand, Coords]] = [
            *group.transitions,
            *group.commands,
        ]
        tables["recovery_log"] = (
            recovery_log.WRITE.columns,
            [recovery_log.row(r, at) for r, at in logged],
        )
    flows: dict[Key, WorkflowRow] = {}
    for t, at in group.transitions:
        key = (t.tenant, t.invoice_ref)
        flows[key] = recovery_workflows.evolve(flows.get(key), t, at)
    if "recovery_workflows" in wanted:
        rows = [row.values() for row in flows.values()]
        tables["recovery_workflows"] = (recovery_workflows.COLUMNS, rows)
    facts: list[metrics_daily.Fact] = []
    if wanted & {"invoices", "metrics_daily"}:
        folded = _invoices(events, flows)
        if "invoices" in wanted:
            tables["invoices"] = (INVOICE_COLUMNS, [f.row.values() for f in folded.values()])
        if "metrics_daily" in wanted:
            exhausted_then_recovered = {
                (t.tenant, t.invoice_ref)
                for t, _ in group.transitions
                if t.from_state is SagaState.exhausted and t.to_state is SagaState.recovered
            }
            for key, invoice in folded.items():
                flow = flows.get(key)
                closed_at = flow.closed_at if flow is not None else None
                evidence = _evidence(invoice, closed_at, key in exhausted_then_recovered)
                facts.append(metrics_daily.derive(evidence))
            tables["recovery_facts"] = (metrics_daily.COLUMNS, [f.values() for f in facts])
    return Load(tables, facts)


def _first_of_each_event(
    events: Sequence[tuple[PaymentEvent, Coords]],
) -> list[tuple[PaymentEvent, Coords]]:
    """Each event id once, its first delivery (what `DO NOTHING` keeps), in log order."""
    seen: set[str] = set()
    first = []
    for event, at in sorted(events, key=lambda item: item[1]):
        if event.event_id not in seen:
            seen.add(event.event_id)
            first.append((event, at))
    return first


def _newest(events: Iterable[PaymentEvent]) -> PaymentEvent | None:
    """The newest by (occurred_at, event_id): `ORDER BY occurred_at DESC, event_id DESC`."""
    return max(events, key=lambda e: (e.occurred_at, e.event_id), default=None)


def _invoices(
    events: Sequence[tuple[PaymentEvent, Coords]], flows: Mapping[Key, WorkflowRow]
) -> dict[Key, Folded]:
    """Per invoice with a row: the row as `invoices.rows` leaves it after one batch holding
    the whole group (no stored row; success and saga state as its lookup would find them
    once the batch's event_log and recovery_workflows rows are written)."""
    by_key: dict[Key, list[PaymentEvent]] = {}
    for event, _ in events:
        by_key.setdefault((event.tenant, event.invoice_ref), []).append(event)
    out = {}
    for key in sorted(by_key):
        history = by_key[key]
        success = _newest(e for e in history if e.type in SUCCESS_TYPES)
        row: InvoiceRow | None = None
        for event in history:
            row = evolve(row, event, success)
        if row is None:
            continue
        flow = flows.get(key)
        saga = flow.state if flow is not None else None
        decided = row.but(status=invoices.decide_status(saga, row.status))
        out[key] = Folded(decided, history, success)
    return out


def _evidence(invoice: Folded, closed_at: Any, after_exhaustion: bool) -> dict[str, Any]:
    """The `metrics_daily.LOOKUP` record of one invoice, from its rows and events."""
    row, history = invoice.row, invoice.history
    recovered = row.status is SagaState.recovered
    success = invoice.success if recovered else None
    low, high = row.first_failed_at, row.recovered_at
    return {
        "key_tenant": row.tenant,
        "key_ref": row.invoice_ref,
        "provider": row.provider,
        "status": row.status.value,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "attempts": row.attempts,
        "last_decline_category": row.last_decline_category,
        "first_failed_at": row.first_failed_at,
        "recovered_at": row.recovered_at,
        "last_event_at": row.last_event_at,
        "closed_at": closed_at,
        "success": None
        if success is None
        else {
            "paywatch_retry": success.paywatch_retry,
            "payment_ref": success.payment_ref,
            "amount_minor": success.amount_minor,
        },
        "method_updated": recovered
        and any(
            e.type is EventType.PAYMENT_METHOD_UPDATED
            and (low is None or e.occurred_at >= low)
            and (high is None or e.occurred_at <= high)
            for e in history
        ),
        "provider_retry": recovered
        and any(e.type in FAILURE_TYPES and e.provider_retry_at is not None for e in history),
        "after_exhaustion": recovered and after_exhaustion,
    }


async def write(
    conn: asyncpg.Connection,
    loaded: Load,
    projection: str,
    positions: Mapping[tuple[str, int], int],
) -> None:
    """COPY every table's rows, move the rollups, checkpoint the group: one transaction.

    `conn` resolves the generation's tables through its search_path and has asyncpg's own
    jsonb codec (JSON text in binary COPY), not the pool's."""
    async with conn.transaction():
        for table, (columns, rows) in loaded.tables.items():
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=list(columns))
        if loaded.facts:
            await metrics_daily.move_rollups(
                conn, metrics_daily.differences((None, f) for f in loaded.facts)
            )
        await conn.executemany(
            CHECKPOINT,
            [(projection, topic, partition, nxt) for (topic, partition), nxt in positions.items()],
        )
