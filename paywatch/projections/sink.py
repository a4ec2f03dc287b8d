"""The Postgres sink: buffers records (`add`) and writes a batch in one transaction (`write`).

Rows of every read model and the `(topic, partition) -> next_offset` checkpoints are
committed together, so a crash anywhere replays at most the uncommitted batch and the
replay is a no-op (exactly-once effect; ARCHITECTURE §1, STYLE.md item 5).

`invoices.status` is the saga state whenever the invoice has a recovery workflow: the
events of an invoice and its transitions sit on different topics and may arrive in either
order, so every batch that touches an invoice (through an event or a transition) ends by
copying the workflow state onto it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from paywatch.projections import event_log, failures, invoices, recovery_log
from paywatch.projections import recovery_workflows as workflows
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, PolicyChanged, RecoveryCommand, SagaTransition
from paywatch.tenants import policy_rows as policies

CHECKPOINT = (
    "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),"
    " updated_at = now()"
)
LATEST_SUCCESS = (
    "SELECT payload FROM event_log WHERE tenant = $1 AND invoice_ref = $2"
    " AND type = ANY($3::text[]) ORDER BY occurred_at DESC, event_id DESC LIMIT 1"
)
SUCCESS_NAMES = [t.value for t in invoices.SUCCESS_TYPES]
LOCK = "SELECT pg_advisory_xact_lock($1)"

Record = PaymentEvent | SagaTransition | RecoveryCommand | PolicyChanged
Key = tuple[str, str]
"""(tenant, invoice_ref)"""


def _lock_id(key: Key) -> int:
    """A stable signed 64-bit advisory-lock id of one invoice."""
    digest = hashlib.blake2b("/".join(key).encode(), digest_size=8, person=b"pw-invoice").digest()
    return int.from_bytes(digest, "big", signed=True)


async def _lock_invoices(conn: asyncpg.Connection, keys: set[Key]) -> None:
    """Serialise writers of the same invoices until the transaction ends.

    Events and transitions of one invoice sit on different partitions, which two projector
    processes may own: without this, each could copy a status the other has not committed
    yet. Locks are taken in a fixed order, so two batches never deadlock.
    """
    if keys:
        await conn.executemany(LOCK, [(k,) for k in sorted({_lock_id(k) for k in keys})])


def _columns(keys: Iterable[Key]) -> tuple[list[str], list[str]]:
    """Keys as the two arrays ($1 tenants, $2 refs) of an unnest() lookup."""
    pairs = sorted(set(keys))
    return [t for t, _ in pairs], [r for _, r in pairs]


@dataclass
class PostgresSink:
    """Buffers one batch for `event_log`, `failures`, `invoices`, `recovery_workflows`,
    `recovery_log`, `tenant_policies` and `tenant_policy_changes`."""

    projection: str
    events: list[tuple[PaymentEvent, Coords]] = field(default_factory=list)
    transitions: list[tuple[SagaTransition, Coords]] = field(default_factory=list)
    commands: list[tuple[RecoveryCommand, Coords]] = field(default_factory=list)
    policies: list[tuple[PolicyChanged, Coords]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, record: Record | None, at: Coords) -> None:
        """Buffer a record (None: a record skipped, e.g. dead-lettered, still checkpointed)."""
        if isinstance(record, PaymentEvent):
            self.events.append((record, at))
        elif isinstance(record, SagaTransition):
            self.transitions.append((record, at))
        elif isinstance(record, RecoveryCommand):
            self.commands.append((record, at))
        elif isinstance(record, PolicyChanged):
            self.policies.append((record, at))
        key = (at.topic, at.partition)
        self.positions[key] = max(self.positions.get(key, 0), at.offset + 1)

    def __len__(self) -> int:
        return len(self.events) + len(self.transitions) + len(self.commands) + len(self.policies)

    async def write(self, conn: asyncpg.Connection) -> int:
        """Write the batch and its checkpoints in one transaction; return records written."""
        if not self.positions:
            return 0
        touched = {(e.tenant, e.invoice_ref) for e, _ in self.events}
        touched |= {(t.tenant, t.invoice_ref) for t, _ in self.transitions}
        async with conn.transaction():
            await _lock_invoices(conn, touched)
            await self._write_rows(conn)
            await self._write_recovery(conn)
            await self._write_policies(conn)
            if touched:  # the saga state wins over the event-derived status
                await conn.execute(workflows.SYNC_STATUS, *_columns(touched))
            await conn.executemany(
                CHECKPOINT,
                [(self.projection, t, p, o) for (t, p), o in self.positions.items()],
            )
        written = len(self)
        self.events, self.transitions, self.commands, self.positions = [], [], [], {}
        self.policies = []
        return written

    async def _write_rows(self, conn: asyncpg.Connection) -> None:
        if not self.events:
            return
        await conn.executemany(event_log.INSERT, [event_log.row(e, at) for e, at in self.events])
        failure_rows = [r for e, at in self.events if (r := failures.row(e, at)) is not None]
        if failure_rows:
            await conn.executemany(failures.INSERT, failure_rows)
        await self._write_invoices(conn)

    async def _write_invoices(self, conn: asyncpg.Connection) -> None:
        by_invoice: dict[tuple[str, str], list[PaymentEvent]] = {}
        for event, _ in self.events:
            by_invoice.setdefault((event.tenant, event.invoice_ref), []).append(event)
        upserts = []
        for (tenant, ref), evs in by_invoice.items():
            rec = await conn.fetchrow(invoices.SELECT, tenant, ref)
            row = invoices.InvoiceRow.from_record(rec) if rec else None
            success = await self._latest_success(conn, tenant, ref, evs)
            for ev in evs:
                row = invoices.evolve(row, ev, success)
            if row is not None:
                upserts.append(row.values())
        if upserts:
            await conn.executemany(invoices.UPSERT, upserts)

    async def _write_recovery(self, conn: asyncpg.Connection) -> None:
        logged = [recovery_log.row(t, at) for t, at in self.transitions]
        logged += [recovery_log.row(c, at) for c, at in self.commands]
        if logged:
            await conn.executemany(recovery_log.INSERT, logged)
        if not self.transitions:
            return
        keys = {(t.tenant, t.invoice_ref) for t, _ in self.transitions}
        stored = await conn.fetch(workflows.SELECT, *_columns(keys))
        before = {
            (r["tenant"], r["invoice_ref"]): workflows.WorkflowRow.from_record(r) for r in stored
        }
        rows = dict(before)
        for transition, at in self.transitions:
            key = (transition.tenant, transition.invoice_ref)
            rows[key] = workflows.evolve(rows.get(key), transition, at)
        changed = [row.values() for key, row in rows.items() if row is not before.get(key)]
        if changed:
            await conn.executemany(workflows.UPSERT, changed)

    async def _write_policies(self, conn: asyncpg.Connection) -> None:
        rows = [policies.row(change, at) for change, at in self.policies]
        if rows:  # in log order: each upsert only moves its tenant's row forward
            await conn.executemany(policies.INSERT_CHANGE, rows)
            await conn.executemany(policies.UPSERT, rows)

    @staticmethod
    async def _latest_success(
        conn: asyncpg.Connection, tenant: str, ref: str, evs: list[PaymentEvent]
    ) -> PaymentEvent | None:
        if not any(e.type in invoices.FAILURE_TYPES for e in evs):
            return None  # only failures consult it
        payload = await conn.fetchval(LATEST_SUCCESS, tenant, ref, SUCCESS_NAMES)
        return None if payload is None else PaymentEvent.model_validate(payload)
