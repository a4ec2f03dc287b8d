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
from dataclasses import replace

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row, execute_many
from paywatch.projections.invoice_fold import (
    COLUMNS,
    FAILURE_TYPES,
    SUCCESS_TYPES,
    InvoiceRow,
    evolve,
)
from paywatch.schemas.models import PaymentEvent, SagaState, SagaTransition
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_TRANSITIONS

Key = tuple[str, str]
"""(tenant, invoice_ref)"""

_KEYS = "(tenant, invoice_ref) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
# SQL built from the fixed column names of InvoiceRow: no value is ever formatted in.
SELECT = f"SELECT {', '.join(COLUMNS)} FROM invoices WHERE {_KEYS} FOR UPDATE"  # noqa: S608
UPSERT = (
    f"INSERT INTO invoices ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
    f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
    "ON CONFLICT (tenant, invoice_ref) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])
    + ", updated_at = now()"
)
SAGA_STATES = f"SELECT tenant, invoice_ref, state FROM recovery_workflows WHERE {_KEYS}"  # noqa: S608
LATEST_SUCCESS = (
    "SELECT payload FROM event_log WHERE tenant = $1 AND invoice_ref = $2"
    " AND type = ANY($3::text[]) ORDER BY occurred_at DESC, event_id DESC LIMIT 1"
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


def _arrays(keys: Sequence[Key]) -> tuple[list[str], list[str]]:
    """Keys as the two arrays ($1 tenants, $2 refs) of an unnest() lookup."""
    return [t for t, _ in keys], [r for _, r in keys]


async def rows(
    conn: asyncpg.Connection, batch: Batch[PaymentEvent | SagaTransition]
) -> Sequence[Row]:
    """The invoice rows of every invoice the batch touches, each with its decided status."""
    events: dict[Key, list[PaymentEvent]] = {}
    for record, _ in batch:
        if isinstance(record, PaymentEvent):
            events.setdefault((record.tenant, record.invoice_ref), []).append(record)
    keys = sorted({(r.tenant, r.invoice_ref) for r, _ in batch})
    stored = {
        (r["tenant"], r["invoice_ref"]): InvoiceRow.from_record(r)
        for r in await conn.fetch(SELECT, *_arrays(keys))
    }
    sagas = {
        (r["tenant"], r["invoice_ref"]): SagaState(r["state"])
        for r in await conn.fetch(SAGA_STATES, *_arrays(keys))
    }
    upserts = []
    for key in keys:
        row = await _fold(conn, key, stored.get(key), events.get(key, []))
        if row is None:
            continue
        row = replace(row, status=decide_status(sagas.get(key), row.status))
        if key in events or row != stored.get(key):  # transitions alone: only a new status
            upserts.append(row.values())
    return upserts


async def _fold(
    conn: asyncpg.Connection, key: Key, row: InvoiceRow | None, evs: list[PaymentEvent]
) -> InvoiceRow | None:
    """Fold the invoice's events of the batch, in log order, onto its stored row."""
    success = await _latest_success(conn, key, evs)
    for event in evs:
        row = evolve(row, event, success)
    return row


async def _latest_success(
    conn: asyncpg.Connection, key: Key, evs: list[PaymentEvent]
) -> PaymentEvent | None:
    """The newest success in the event log (this batch's included) when a failure needs it."""
    if not any(e.type in FAILURE_TYPES for e in evs):
        return None  # only failures consult it
    payload = await conn.fetchval(LATEST_SUCCESS, *key, SUCCESS_NAMES)
    return None if payload is None else PaymentEvent.model_validate(payload)


READ_MODEL: ReadModel[PaymentEvent | SagaTransition] = ReadModel(
    "invoices",
    {PAYMENTS_EVENTS: PaymentEvent, RECOVERY_TRANSITIONS: SagaTransition},
    rows=rows,
    write=execute_many(UPSERT),
    locks=locks,
    after=("event_log", "recovery_workflows"),
)
