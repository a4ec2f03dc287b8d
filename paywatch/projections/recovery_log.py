"""Read model `recovery_log`: every saga transition and recovery command with its Kafka
coordinates and the rule behind it (audit, and the invoice timeline)."""

from __future__ import annotations

from typing import Any

from paywatch.projections.base import ReadModel, each
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import RecoveryCommand, SagaTransition
from paywatch.schemas.topics import RECOVERY_COMMANDS, RECOVERY_TRANSITIONS

WRITE = CopyMerge(
    "recovery_log",
    tuple(
        "topic partition offset tenant invoice_ref kind at from_state to_state command_id"
        " command_type due_at rule_id rule_edition rule_source reason cause_event_id"
        " payload".split()
    ),
    key=("topic", "partition", "offset"),
    json=frozenset({"payload"}),
)
"""A known (topic, partition, offset) is left alone (a replay changes nothing)."""


def row(record: SagaTransition | RecoveryCommand, at: Coords) -> tuple[Any, ...]:
    """The recovery_log row of one transition or command."""
    if isinstance(record, SagaTransition):
        kind, when = "transition", record.at
        states: tuple[str | None, str | None] = (
            record.from_state.value if record.from_state else None,
            record.to_state.value,
        )
        command: tuple[Any, ...] = (None, None, None)
    else:
        # A command's place in the timeline is when it was decided, not when it is due.
        kind, when = "command", record.issued_at or record.due_at
        states = (None, None)
        command = (record.command_id, record.type.value, record.due_at)
    rule = record.rule
    return (
        at.topic, at.partition, at.offset, record.tenant, record.invoice_ref, kind, when,
        *states, *command, rule.id, rule.edition, rule.source, record.reason,
        record.cause_event_id, record.model_dump_json(),
    )  # fmt: skip


READ_MODEL: ReadModel[SagaTransition | RecoveryCommand] = ReadModel(
    "recovery_log",
    {RECOVERY_TRANSITIONS: SagaTransition, RECOVERY_COMMANDS: RecoveryCommand},
    rows=each(row),
    write=WRITE,
)
