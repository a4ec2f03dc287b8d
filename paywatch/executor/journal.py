"""The executor's journal in Postgres (`executed_commands`): idempotency guard and record.

A row is written only after the command's effect is durable (the outcome event acked
by Kafka), so a command id found here is never executed again; a crash in between
re-executes it, which the deterministic outcome makes harmless. Every query is scoped
by tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from paywatch.schemas.models import RecoveryCommand

EXISTS = "SELECT EXISTS (SELECT 1 FROM executed_commands WHERE tenant = $1 AND command_id = $2)"
FIRST_DUE = "SELECT min(due_at) FROM executed_commands WHERE tenant = $1 AND invoice_ref = $2"
INSERT = (
    "INSERT INTO executed_commands"
    " (tenant, command_id, type, invoice_ref, due_at, executed_at, outcome, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant, command_id) DO NOTHING"
)


@dataclass(frozen=True)
class Entry:
    """One executed command as the journal keeps it (no customer data in `detail`)."""

    command: RecoveryCommand
    outcome: str
    executed_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)

    def values(self) -> tuple[Any, ...]:
        """Parameters of INSERT."""
        c = self.command
        return (
            c.tenant,
            c.command_id,
            c.type.value,
            c.invoice_ref,
            c.due_at,
            self.executed_at,
            self.outcome,
            self.detail,
        )


async def executed(conn: asyncpg.Connection, tenant: str, command_id: str) -> bool:
    """True when the tenant's command id is already in the journal."""
    return bool(await conn.fetchval(EXISTS, tenant, command_id))


async def first_due_at(conn: asyncpg.Connection, tenant: str, invoice_ref: str) -> datetime | None:
    """Due time of the invoice's earliest journaled command (the simulator's day 0)."""
    found: datetime | None = await conn.fetchval(FIRST_DUE, tenant, invoice_ref)
    return found


async def record(conn: asyncpg.Connection, entry: Entry) -> bool:
    """Journal an executed command; False when its id was already there."""
    status: str = await conn.execute(INSERT, *entry.values())
    return status.endswith(" 1")


def command_detail(
    command: RecoveryCommand, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """What the journal keeps about a command besides its columns: no customer data."""
    return {
        "attempt": command.attempt,
        "channel": command.channel,
        "template": command.template,
        "reason": command.reason,
        "rule": {"id": command.rule.id, "edition": command.rule.edition},
        "cause_event_id": command.cause_event_id,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }
