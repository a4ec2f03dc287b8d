"""The Postgres sink: buffers events (`add`) and writes a batch in one transaction (`write`).

Rows of every read model and the `(topic, partition) -> next_offset` checkpoints are
committed together, so a crash anywhere replays at most the uncommitted batch and the
replay is a no-op (exactly-once effect; ARCHITECTURE §1, STYLE.md item 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from paywatch.projections import Coords, event_log, failures, invoices
from paywatch.schemas.models import PaymentEvent

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


@dataclass
class PostgresSink:
    """Buffers one batch of events for the read models `event_log`, `failures`, `invoices`."""

    projection: str
    events: list[tuple[PaymentEvent, Coords]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, event: PaymentEvent | None, at: Coords) -> None:
        """Buffer an event (None: a record skipped, e.g. dead-lettered, still checkpointed)."""
        if event is not None:
            self.events.append((event, at))
        key = (at.topic, at.partition)
        self.positions[key] = max(self.positions.get(key, 0), at.offset + 1)

    def __len__(self) -> int:
        return len(self.events)

    async def write(self, conn: asyncpg.Connection) -> int:
        """Write the batch and its checkpoints in one transaction; return events written."""
        if not self.positions:
            return 0
        async with conn.transaction():
            await self._write_rows(conn)
            await conn.executemany(
                CHECKPOINT,
                [(self.projection, t, p, o) for (t, p), o in self.positions.items()],
            )
        written = len(self.events)
        self.events.clear()
        self.positions.clear()
        return written

    async def _write_rows(self, conn: asyncpg.Connection) -> None:
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

    @staticmethod
    async def _latest_success(
        conn: asyncpg.Connection, tenant: str, ref: str, evs: list[PaymentEvent]
    ) -> PaymentEvent | None:
        if not any(e.type in invoices.FAILURE_TYPES for e in evs):
            return None  # only failures consult it
        payload = await conn.fetchval(LATEST_SUCCESS, tenant, ref, SUCCESS_NAMES)
        return None if payload is None else PaymentEvent.model_validate(payload)
