"""Read model `invoices`: one row per tenant/invoice that has had a failure.

Each batch folds its events onto the stored rows (:mod:`paywatch.projections.invoice_fold`)
and `decide_status` alone sets the `status` column: the saga's state whenever the invoice
has a recovery workflow (ARCHITECTURE §8, §9), else what its events imply. An invoice's
events and transitions sit on different topics and may arrive in either order, so a
batch's transitions touch their invoices too: this model runs after `recovery_workflows`
(and after `event_log`, whose successes the fold consults) and reads what they wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row
from paywatch.projections.invoice_fold import (
    COLUMNS,
    FAILURE_TYPES,
    SUCCESS_TYPES,
    InvoiceRow,
    evolve,
)
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.models import PaymentEvent, SagaState, SagaTransition
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_TRANSITIONS

Key = tuple[str, str]
"""(tenant, invoice_ref)"""

WRITE = CopyMerge("invoices", COLUMNS, key=COLUMNS[:2], update=True)
# One lookup per batch: for every key, its stored row, its saga's state and, when the batch
# holds a failure of it, the newest success in the event log (this batch's included).
# Writers of one invoice are serialised by the advisory `locks`, taken before any read.
# SQL built from the fixed column names of InvoiceRow: no value is ever formatted in.
_STORED = ", ".join(f"i.{c}" for c in COLUMNS)
LOOKUP = (
    "SELECT k.tenant AS key_tenant, k.invoice_ref AS key_ref, i.tenant IS NOT NULL AS stored,"  # noqa: S608
    f" {_STORED}, w.state AS saga_state, s.payload AS success"
    " FROM unnest($1::text[], $2::text[], $3::bool[]) AS k(tenant, invoice_ref, failing)"
    " LEFT JOIN invoices i ON i.tenant = k.tenant AND i.invoice_ref = k.invoice_ref"
    " LEFT JOIN recovery_workflows w ON w.tenant = k.tenant AND w.invoice_ref = k.invoice_ref"
    " LEFT JOIN LATERAL (SELECT e.payload FROM event_log e WHERE k.failing"
    " AND e.tenant = k.tenant AND e.invoice_ref = k.invoice_ref AND e.type = ANY($4::text[])"
    " ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT 1) s ON true"
)
SUCCESS_NAMES = [t.value for t in SUCCESS_TYPES]


def decide_status(saga: SagaState | None, events: SagaState) -> SagaState:
    """The invoice's status: the saga's state when it has a workflow, else its events'."""
    return events if saga is None else saga


def lock_id(key: Key) -> int:
    """A stable signed 64-bit advisory-lock id of one invoice."""
    digest = hashlib.blake2b("/".join(key).encode(), digest_size=8, person=b"pw-invoice").digest()
    return int.from_bytes(digest, "big", signed=True)


def locks(batch: Batch[PaymentEvent | SagaTransition]) -> Iterable[int]:
    """Serialise writers of the same invoices until the transaction ends.

    Events and transitions of one invoice sit on different partitions, which two projector
    processes may own: without this, each could decide a status from a workflow or an
    invoice row the other has not committed yet.
    """
    return {lock_id((r.tenant, r.invoice_ref)) for r, _ in batch}


@dataclass(frozen=True)
class Known:
    """What the lookup found for one invoice."""

    row: InvoiceRow | None
    saga: SagaState | None
    success: PaymentEvent | None

    @classmethod
    def from_record(cls, rec: Any) -> Known:
        """Build from a record of `LOOKUP`."""
        row = InvoiceRow.from_record({c: rec[c] for c in COLUMNS}) if rec["stored"] else None
        saga = None if rec["saga_state"] is None else SagaState(rec["saga_state"])
        payload = rec["success"]
        success = None if payload is None else PaymentEvent.model_validate(payload)
        return cls(row, saga, success)


async def lookup(
    conn: asyncpg.Connection, events: dict[Key, list[PaymentEvent]], keys: Sequence[Key]
) -> dict[Key, Known]:
    """One query for every key of the batch: stored row, saga state, newest success."""
    failing = [any(e.type in FAILURE_TYPES for e in events.get(k, ())) for k in keys]
    found = await conn.fetch(
        LOOKUP, [t for t, _ in keys], [r for _, r in keys], failing, SUCCESS_NAMES
    )
    return {(r["key_tenant"], r["key_ref"]): Known.from_record(r) for r in found}


async def rows(
    conn: asyncpg.Connection, batch: Batch[PaymentEvent | SagaTransition]
) -> Sequence[Row]:
    """The invoice rows of every invoice the batch touches, each with its decided status."""
    events: dict[Key, list[PaymentEvent]] = {}
    for record, _ in batch:
        if isinstance(record, PaymentEvent):
            events.setdefault((record.tenant, record.invoice_ref), []).append(record)
    keys = sorted({(r.tenant, r.invoice_ref) for r, _ in batch})
    known = await lookup(conn, events, keys)
    upserts = []
    for key in keys:
        now = known[key]
        row = now.row
        for event in events.get(key, []):  # the batch's events, in log order
            row = evolve(row, event, now.success)
        if row is None:
            continue
        row = row.but(status=decide_status(now.saga, row.status))
        if key in events or row != now.row:  # transitions alone: only a new status
            upserts.append(row.values())
    return upserts


READ_MODEL: ReadModel[PaymentEvent | SagaTransition] = ReadModel(
    "invoices",
    {PAYMENTS_EVENTS: PaymentEvent, RECOVERY_TRANSITIONS: SagaTransition},
    rows=rows,
    write=WRITE,
    locks=locks,
    after=("event_log", "recovery_workflows"),
)
