"""Read model `recovery_workflows`: one row per tenant/invoice saga, its latest decision.

The saga emits a transition for every decision (self-transitions included), each carrying
the full snapshot (state, next action and when, attempts used and allowed, rule), so the
row is the newest transition alone. `evolve` is a pure fold that only moves forward: a
transition replaces the row when its position (at, topic, partition, offset) is greater,
so replays and batches that overlap after a rebalance never move it back.

The saga is the authority on an invoice's status (ARCHITECTURE §8, §9); the `invoices`
read model reads these rows after they are written (:mod:`paywatch.projections.invoices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import CommandType, SagaState, SagaTransition
from paywatch.schemas.topics import RECOVERY_TRANSITIONS

TERMINAL = frozenset({SagaState.recovered, SagaState.exhausted, SagaState.canceled})

Position = tuple[datetime, str, int, int]
"""(transition at, topic, partition, offset): a total order of transitions."""


@dataclass(frozen=True)
class WorkflowRow:
    """The columns of one `recovery_workflows` row."""

    tenant: str
    invoice_ref: str
    state: SagaState
    next_action: CommandType | None
    next_action_at: datetime | None
    attempts_used: int | None
    attempts_allowed: int | None
    last_rule_id: str
    last_rule_edition: str
    last_rule_source: str
    last_reason: str | None
    last_cause_event_id: str
    last_transition_at: datetime
    last_topic: str
    last_partition: int
    last_offset: int
    started_at: datetime
    closed_at: datetime | None
    experiment: str | None = None
    arm: str | None = None

    @classmethod
    def from_record(cls, rec: Any) -> WorkflowRow:
        """Build from an asyncpg record of `SELECT`."""
        values = dict(rec)
        values["state"] = SagaState(values["state"])
        action = values["next_action"]
        values["next_action"] = CommandType(action) if action is not None else None
        return cls(**values)

    @property
    def position(self) -> Position:
        """Where the transition behind this row sits in the total order."""
        return (self.last_transition_at, self.last_topic, self.last_partition, self.last_offset)

    def values(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order (the enums are str: written as their text)."""
        values: tuple[Any, ...] = _VALUES(self)
        return values


# SQL built from the fixed column names of WorkflowRow: no value is ever formatted in.
COLUMNS = tuple(WorkflowRow.__dataclass_fields__)
_VALUES = attrgetter(*COLUMNS)
SELECT = (
    f"SELECT {', '.join(COLUMNS)} FROM recovery_workflows"  # noqa: S608
    " WHERE (tenant, invoice_ref) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)
_GUARD = ("last_transition_at", "last_topic", "last_partition", "last_offset")
WRITE = CopyMerge("recovery_workflows", COLUMNS, key=COLUMNS[:2], update=True, guard=_GUARD)
"""The projector's write. Belt and braces: the fold already kept the newest; the guard never
lets an older row win (two projectors overlapping a rebalance)."""
UPSERT = (
    f"INSERT INTO recovery_workflows ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
    f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
    "ON CONFLICT (tenant, invoice_ref) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])
    + ", updated_at = now()"
    + f" WHERE ({', '.join(f'recovery_workflows.{c}' for c in _GUARD)})"
    + f" < ({', '.join(f'EXCLUDED.{c}' for c in _GUARD)})"
)
"""The same guarded write for one row (`WorkflowRow.values()`)."""


def position(transition: SagaTransition, at: Coords) -> Position:
    """The transition's place in the total order that decides which one is newest."""
    return (transition.at, at.topic, at.partition, at.offset)


def evolve(row: WorkflowRow | None, transition: SagaTransition, at: Coords) -> WorkflowRow:
    """Fold one transition into the workflow row; an older (or the same) one changes nothing.

    A transition from no state opens a new episode (a new saga for the same key), so it
    resets `started_at`; `closed_at` is when the episode reached a terminal state.
    """
    if row is not None and position(transition, at) <= row.position:
        return row
    if row is None or transition.from_state is None:
        started_at, closed_at = transition.at, None  # a new episode
    else:
        started_at, closed_at = row.started_at, row.closed_at
    closed_at = (closed_at or transition.at) if transition.to_state in TERMINAL else None
    return WorkflowRow(
        tenant=transition.tenant,
        invoice_ref=transition.invoice_ref,
        state=transition.to_state,
        next_action=transition.next_action,
        next_action_at=transition.next_action_at,
        attempts_used=transition.attempts_used,
        attempts_allowed=transition.attempts_allowed,
        last_rule_id=transition.rule.id,
        last_rule_edition=transition.rule.edition,
        last_rule_source=transition.rule.source,
        last_reason=transition.reason,
        last_cause_event_id=transition.cause_event_id,
        last_transition_at=transition.at,
        last_topic=at.topic,
        last_partition=at.partition,
        last_offset=at.offset,
        started_at=started_at,
        closed_at=closed_at,
        experiment=transition.experiment,
        arm=transition.arm,
    )


async def rows(conn: asyncpg.Connection, batch: Batch[SagaTransition]) -> Sequence[Row]:
    """The workflow rows the batch's transitions move forward (stored rows folded on)."""
    pairs = sorted({(t.tenant, t.invoice_ref) for t, _ in batch})
    stored = await conn.fetch(SELECT, [t for t, _ in pairs], [r for _, r in pairs])
    before = {(r["tenant"], r["invoice_ref"]): WorkflowRow.from_record(r) for r in stored}
    folded = dict(before)
    for transition, at in batch:
        key = (transition.tenant, transition.invoice_ref)
        folded[key] = evolve(folded.get(key), transition, at)
    return [row.values() for key, row in folded.items() if row is not before.get(key)]


READ_MODEL = ReadModel(
    "recovery_workflows",
    {RECOVERY_TRANSITIONS: SagaTransition},
    rows=rows,
    write=WRITE,
)
