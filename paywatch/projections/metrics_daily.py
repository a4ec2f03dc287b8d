"""Read model `metrics_daily` (with its per-invoice `recovery_facts`): recovery analytics.

Why two tables. Analysts ask for sums over ranges (failures, amounts, recoveries, attempts,
a median time to recover) by day, week, month, provider, decline category or recovery path,
on tenants with millions of invoices, in well under a second. Summing invoices per request
grows with the tenant; summing `metrics_daily` rows grows with days x providers x
categories x paths x time buckets, which stays small. But sums cannot be kept from events
alone: an invoice's category, amount, status and path change as its events arrive, in any
order, more than once. So the projector derives one *fact* per invoice from the read models
it has just written (`invoices`, `event_log`, `recovery_log`, `recovery_workflows`: this
model runs after them), keeps it in `recovery_facts`, and moves `metrics_daily` by the
difference between the stored fact and the new one, in the batch's transaction.

That makes it deterministic and idempotent: a fact is a pure function (`derive`) of those
read models' rows for its invoice, which only change when a record of that invoice arrives
(and every such record reaches this model); a record seen twice derives the same fact, a
zero difference. `metrics_daily` always holds exactly the sums of the facts, and a row that
sums to nothing is deleted, so a replay, whatever its batches, ends with the same rows.

Two rollups of `metrics_daily` are moved by the same differences in the same transaction
(`ROLLUPS`), because a year of `metrics_daily` is ~0.5 rows per invoice (the time-to-recover
bucket splits nearly every recovery into a row of its own) and summing ~100k rows per request
is too slow: `metrics_monthly` (the same key by month) serves key groupings over whole
months, `metrics_daily_ttr` (day and bucket only) serves period groupings and the currency
pick. Each holds exactly the sums of `metrics_daily`'s rows it rolls up.

Cohorts are not a table of their own: a cohort is the failures of one day (``day`` is the UTC day
of the invoice's first failure), and whether it is final depends on the reader's clock and
the tenant's window, so the API decides it (paywatch/recovery/analytics.py). Attribution is
the fact's ``path``. Writers of one invoice are serialised by the `invoices` advisory locks;
the aggregate rows are moved in key order, so two projectors never deadlock on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any

import asyncpg

from paywatch.projections import invoices
from paywatch.projections.base import Batch, ReadModel, Row
from paywatch.projections.invoice_fold import FAILURE_TYPES, SUCCESS_TYPES
from paywatch.projections.merge import CopyMerge
from paywatch.recovery.analytics import (
    NO_BUCKET,
    NO_CURRENCY,
    NOT_RECOVERED,
    Evidence,
    attribute,
    bucket,
    hours_between,
)
from paywatch.schemas.models import DeclineCategory, PaymentEvent, SagaState, SagaTransition
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_TRANSITIONS

AggKey = tuple[str, str, date, str, str, str, int]
"""(tenant, currency, day, provider, decline_category, path, ttr_bucket): a metrics_daily row."""
SUMS = (
    "failures",
    "failed_amount_minor",
    "attempts",
    "recovered",
    "recovered_amount_minor",
    "recovered_attempts",
)


@dataclass(frozen=True)
class Fact:
    """One `recovery_facts` row: what one invoice adds to `metrics_daily`."""

    tenant: str
    invoice_ref: str
    day: date
    provider: str
    decline_category: str
    currency: str
    path: str
    ttr_bucket: int
    failed_amount_minor: int
    attempts: int
    recovered_at: datetime | None
    recovered_amount_minor: int

    @classmethod
    def from_stored(cls, rec: Mapping[str, Any]) -> Fact:
        """Build from the ``f_``-prefixed columns of `LOOKUP`."""
        return cls(**{name: rec[f"f_{name}"] for name in COLUMNS})

    def values(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order."""
        values: tuple[Any, ...] = _VALUES(self)
        return values

    @property
    def key(self) -> AggKey:
        """The metrics_daily row it counts in."""
        return (
            self.tenant,
            self.currency,
            self.day,
            self.provider,
            self.decline_category,
            self.path,
            self.ttr_bucket,
        )

    @property
    def sums(self) -> tuple[int, ...]:
        """Its contribution to each of `SUMS`."""
        recovered = 0 if self.recovered_at is None else 1
        return (
            1,
            self.failed_amount_minor,
            self.attempts,
            recovered,
            self.recovered_amount_minor,
            self.attempts * recovered,
        )


COLUMNS = tuple(Fact.__dataclass_fields__)
_VALUES = attrgetter(*COLUMNS)
FACTS = CopyMerge("recovery_facts", COLUMNS, key=COLUMNS[:2], update=True)

_NAMES = ", ".join(f"f.{c} AS f_{c}" for c in COLUMNS)
_OF_KEY = "e.tenant = k.tenant AND e.invoice_ref = k.invoice_ref"
LOOKUP = (
    "SELECT k.tenant AS key_tenant, k.invoice_ref AS key_ref, i.provider, i.status,"  # noqa: S608
    " i.amount_minor, i.currency, i.attempts, i.last_decline_category, i.first_failed_at,"
    " i.recovered_at, i.last_event_at, w.closed_at, f.tenant IS NOT NULL AS has_fact,"
    f" {_NAMES}, s.payload AS success,"
    " (i.status = 'recovered' AND EXISTS (SELECT FROM event_log e WHERE"
    f" {_OF_KEY} AND e.type = 'PAYMENT_METHOD_UPDATED'"
    " AND e.occurred_at >= coalesce(i.first_failed_at, '-infinity')"
    " AND e.occurred_at <= coalesce(i.recovered_at, 'infinity'))) AS method_updated,"
    " (i.status = 'recovered' AND EXISTS (SELECT FROM event_log e WHERE"
    f" {_OF_KEY} AND e.type = ANY($3::text[])"
    " AND e.payload->>'provider_retry_at' IS NOT NULL)) AS provider_retry,"
    " (i.status = 'recovered' AND EXISTS (SELECT FROM recovery_log r WHERE"
    " r.tenant = k.tenant AND r.invoice_ref = k.invoice_ref AND r.kind = 'transition'"
    " AND r.from_state = 'exhausted' AND r.to_state = 'recovered')) AS after_exhaustion"
    " FROM unnest($1::text[], $2::text[]) AS k(tenant, invoice_ref)"
    " JOIN invoices i ON i.tenant = k.tenant AND i.invoice_ref = k.invoice_ref"
    " LEFT JOIN recovery_workflows w ON w.tenant = k.tenant AND w.invoice_ref = k.invoice_ref"
    " LEFT JOIN recovery_facts f ON f.tenant = k.tenant AND f.invoice_ref = k.invoice_ref"
    " LEFT JOIN LATERAL (SELECT e.payload FROM event_log e WHERE i.status = 'recovered'"
    f" AND {_OF_KEY} AND e.type = ANY($4::text[])"
    " ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT 1) s ON true"
)
"""Per invoice of the batch: its invoices row, saga, stored fact and the evidence of how it
was recovered (the newest success; the EXISTS only for recovered invoices)."""
FAILURE_NAMES = sorted(t.value for t in FAILURE_TYPES)
SUCCESS_NAMES = sorted(t.value for t in SUCCESS_TYPES)


@dataclass(frozen=True)
class Rollup:
    """One aggregate table: the sums of the facts per ``key`` of their metrics_daily row."""

    table: str
    columns: tuple[str, ...]
    """Its key columns, in primary-key order."""
    types: tuple[str, ...]
    key: Callable[[AggKey], tuple[Any, ...]]

    @property
    def apply(self) -> str:
        """Adds each key's difference (rows given in key order: locks taken in that order)."""
        keys = ", ".join(self.columns)
        types = (*self.types, *("int8",) * len(SUMS))
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        return (
            f"INSERT INTO {self.table} AS m ({keys}, {', '.join(SUMS)})"  # noqa: S608
            f" SELECT * FROM unnest({arrays}) ON CONFLICT ({keys}) DO UPDATE SET "
            + ", ".join(f"{c} = m.{c} + EXCLUDED.{c}" for c in SUMS)
            + ", updated_at = now()"
        )

    @property
    def prune(self) -> str:
        """Drops the rows the batch emptied (every fact counts one failure: 0 failures, 0 of
        all)."""
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(self.types))
        return (
            f"DELETE FROM {self.table} m USING unnest({arrays})"  # noqa: S608
            f" AS k({', '.join(self.columns)}) WHERE m.failures = 0 AND "
            + " AND ".join(f"m.{c} = k.{c}" for c in self.columns)
        )

    def roll_up(self, moved: Mapping[AggKey, Sequence[int]]) -> list[tuple[Any, ...]]:
        """(key..., sums...) rows of this table that ``moved`` changes, in key order."""
        summed: dict[tuple[Any, ...], list[int]] = {}
        for key, sums in moved.items():
            total = summed.setdefault(self.key(key), [0] * len(SUMS))
            for i, value in enumerate(sums):
                total[i] += value
        return sorted((*key, *sums) for key, sums in summed.items() if any(sums))


_KEY = ("tenant", "currency", "day", "provider", "decline_category", "path", "ttr_bucket")
_TYPES = ("text", "text", "date", "text", "text", "text", "int2")
DAILY = Rollup("metrics_daily", _KEY, _TYPES, lambda k: k)
MONTHLY = Rollup(
    "metrics_monthly",
    ("tenant", "currency", "month", *_KEY[3:]),
    _TYPES,
    lambda k: (k[0], k[1], k[2].replace(day=1), *k[3:]),
)
DAILY_TTR = Rollup(
    "metrics_daily_ttr",
    ("tenant", "currency", "day", "ttr_bucket"),
    ("text", "text", "date", "int2"),
    lambda k: (k[0], k[1], k[2], k[6]),
)
ROLLUPS = (DAILY, MONTHLY, DAILY_TTR)
"""Every aggregate table, in the order their rows are locked."""
TABLES = ("recovery_facts", *(r.table for r in ROLLUPS))
"""Every table this read model writes (a rebuild must copy and swap each of them)."""


def derive(rec: Mapping[str, Any]) -> Fact:
    """The fact of one invoice from its `LOOKUP` record (pure: no clock, no I/O)."""
    first_failed: datetime = rec["first_failed_at"] or rec["last_event_at"]
    amount = rec["amount_minor"] or 0
    base = {
        "tenant": rec["key_tenant"],
        "invoice_ref": rec["key_ref"],
        "day": first_failed.astimezone(UTC).date(),
        "provider": rec["provider"],
        "decline_category": rec["last_decline_category"] or DeclineCategory.UNKNOWN.value,
        "currency": (rec["currency"] or NO_CURRENCY).upper(),
        "failed_amount_minor": amount,
        "attempts": rec["attempts"],
    }
    if rec["status"] != SagaState.recovered.value:
        return Fact(
            **base,
            path=NOT_RECOVERED,
            ttr_bucket=NO_BUCKET,
            recovered_at=None,
            recovered_amount_minor=0,
        )
    success: Mapping[str, Any] = rec["success"] or {}
    at: datetime = rec["recovered_at"] or rec["closed_at"] or rec["last_event_at"]
    evidence = Evidence(
        after_exhaustion=bool(rec["after_exhaustion"]),
        method_updated=bool(rec["method_updated"]),
        paywatch_retry=bool(success.get("paywatch_retry")),
        provider_retry_announced=bool(rec["provider_retry"]),
        payment_ref=success.get("payment_ref"),
    )
    paid = success.get("amount_minor")
    return Fact(
        **base,
        path=attribute(evidence).value,
        ttr_bucket=bucket(hours_between(first_failed, at)),
        recovered_at=at,
        recovered_amount_minor=amount if paid is None else paid,
    )


def differences(changes: Iterable[tuple[Fact | None, Fact]]) -> dict[AggKey, list[int]]:
    """Per metrics_daily row, what the changed facts add (new) and take back (old); rows
    whose difference is nothing are left out."""
    moved: dict[AggKey, list[int]] = {}
    for old, new in changes:
        for fact, sign in ((old, -1), (new, 1)):
            if fact is None:
                continue
            sums = moved.setdefault(fact.key, [0] * len(SUMS))
            for i, value in enumerate(fact.sums):
                sums[i] += sign * value
    return {key: sums for key, sums in moved.items() if any(sums)}


async def rows(
    conn: asyncpg.Connection, batch: Batch[PaymentEvent | SagaTransition]
) -> Sequence[Row]:
    """(stored fact or None, new fact) of every invoice of the batch whose fact changed."""
    keys = sorted({(r.tenant, r.invoice_ref) for r, _ in batch})
    found = await conn.fetch(
        LOOKUP, [t for t, _ in keys], [r for _, r in keys], FAILURE_NAMES, SUCCESS_NAMES
    )
    changed: list[Row] = []
    for rec in found:
        new = derive(rec)
        old = Fact.from_stored(rec) if rec["has_fact"] else None
        if new != old:
            changed.append((old, new))
    return changed


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


async def write(conn: asyncpg.Connection, changes: Sequence[Row]) -> None:
    """Store the new facts and move every rollup by their differences, in key order."""
    await FACTS(conn, [new.values() for _, new in changes])
    await move_rollups(conn, differences((old, new) for old, new in changes))


async def move_rollups(conn: asyncpg.Connection, moved: Mapping[AggKey, Sequence[int]]) -> None:
    """Move every rollup by `moved` (`differences`), each table's rows in key order."""
    for rollup in ROLLUPS:
        rows = rollup.roll_up(moved)
        if not rows:
            continue
        width = len(rollup.columns)
        await conn.execute(rollup.apply, *_columns(rows, width + len(SUMS)))
        await conn.execute(rollup.prune, *_columns(rows, width))


READ_MODEL: ReadModel[PaymentEvent | SagaTransition] = ReadModel(
    "metrics_daily",
    {PAYMENTS_EVENTS: PaymentEvent, RECOVERY_TRANSITIONS: SagaTransition},
    rows=rows,
    write=write,
    locks=invoices.locks,
    after=("event_log", "recovery_log", "recovery_workflows", "invoices"),
)
