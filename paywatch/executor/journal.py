"""The executor's journal in Postgres (`executed_commands`): idempotency guard and record.

A batch's rows are inserted in one transaction that commits only after the batch's
outcome events are acknowledged by Kafka; the insert itself is the guard (``ON CONFLICT
DO NOTHING RETURNING``): only the commands it inserted have their outcome appended, so a
journaled command id is never executed again. A crash between the acks and the commit
re-executes the batch, which the deterministic outcomes make harmless (same event ids).
Every query is scoped by tenant.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from paywatch.executor.decide import Entry, Invoice, Key

FIRST_DUE = (
    "SELECT k.tenant, k.invoice_ref, min(e.due_at) AS first"
    " FROM unnest($1::text[], $2::text[]) AS k(tenant, invoice_ref)"
    " JOIN executed_commands e ON e.tenant = k.tenant AND e.invoice_ref = k.invoice_ref"
    " GROUP BY k.tenant, k.invoice_ref"
)
INSERT = (
    "INSERT INTO executed_commands"
    " (tenant, command_id, type, invoice_ref, due_at, executed_at, outcome, detail)"
    " SELECT t, c, ty, i, d, x, o, de::jsonb FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[])"
    " AS r(t, c, ty, i, d, x, o, de)"
    " ON CONFLICT (tenant, command_id) DO NOTHING RETURNING tenant, command_id"
)


async def first_due_ats(
    conn: asyncpg.Connection, invoices: Iterable[Invoice]
) -> dict[Invoice, datetime]:
    """Due time of each invoice's earliest journaled command (the simulator's day 0)."""
    keys = sorted(set(invoices))
    if not keys:
        return {}
    rows = await conn.fetch(FIRST_DUE, [t for t, _ in keys], [i for _, i in keys])
    return {(r["tenant"], r["invoice_ref"]): r["first"] for r in rows}


async def insert(conn: asyncpg.Connection, entries: Sequence[Entry]) -> set[Key]:
    """Journal the entries in one statement; the keys it inserted (not already there)."""
    columns: list[list[object]] = [[] for _ in range(8)]
    for e in entries:
        c = e.command
        row = (c.tenant, c.command_id, c.type.value, c.invoice_ref, c.due_at, e.executed_at,
               e.outcome, json.dumps(e.detail))  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    rows = await conn.fetch(INSERT, *columns)
    return {(r["tenant"], r["command_id"]) for r in rows}
