"""Read model `alerts`: one row per tenant/incident (`alert_id`), its latest Alert record.

An incident is an OPEN record when it opens, OPEN updates, then one RESOLVED record, all
with one `alert_id` and, keyed by tenant, all on one partition in the order they were
decided. So the latest record is the one at the greatest Kafka coordinates: `latest` keeps
it per incident within a batch (whatever order the batch holds them in) and the write's
guard keeps it across batches, so a replay, or a projector overlapping a rebalance, never
moves a row back and never reopens a resolved incident (ARCHITECTURE §1, STYLE.md item 5).

The row's `updated_at` is the latest record's window end, the time the detector last
judged the incident, so a rebuild from Kafka lists the alerts in the same order as the live
projection did.

Alerts are rare (at most one record a minute per incident), so the rows are written with
one guarded upsert per row (:func:`paywatch.projections.base.execute_many`): `CopyMerge`
would stamp `updated_at` with the time of the write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row, execute_many
from paywatch.projections.merge import quoted
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Alert
from paywatch.schemas.topics import ALERTS

COLUMNS = (
    "tenant",
    "alert_id",
    "kind",
    "severity",
    "status",
    "provider",
    "decline_code",
    "customer_ref",
    "observed",
    "baseline",
    "window_start",
    "window_end",
    "message",
    "opened_at",
    "updated_at",
    "resolved_at",
    "topic",
    "partition",
    "offset",
)
KEY = COLUMNS[:2]
GUARD = ("topic", "partition", "offset")


def _upsert() -> str:
    names = ", ".join(quoted(c) for c in COLUMNS)
    marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    sets = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in COLUMNS if c not in KEY)
    stored = ", ".join(f"t.{quoted(c)}" for c in GUARD)
    given = ", ".join(f"EXCLUDED.{quoted(c)}" for c in GUARD)
    return (
        f"INSERT INTO alerts AS t ({names}) VALUES ({marks})"  # noqa: S608 (fixed identifiers)
        f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {sets}"
        f" WHERE ({stored}) < ({given})"
    )


UPSERT = _upsert()
"""Insert an incident's row, or replace it only with a record at greater Kafka coordinates."""


def latest(batch: Batch[Alert]) -> list[tuple[Alert, Coords]]:
    """The record at the greatest coordinates of each incident of the batch."""
    newest: dict[tuple[str, str], tuple[Alert, Coords]] = {}
    for alert, at in batch:
        key = (alert.tenant, alert.alert_id)
        kept = newest.get(key)
        if kept is None or kept[1] < at:
            newest[key] = (alert, at)
    return list(newest.values())


def row(alert: Alert, at: Coords) -> Row:
    """The `alerts` row of one record, in `COLUMNS` order.

    A record without `alert_id` or `opened_at` names no incident, and a non-finite
    observed or baseline is no figure an analyst can read: both are refused (ValueError: a
    record's fault, so the projector dead-letters it) because a detector that produced
    them is broken.
    """
    if not alert.alert_id or alert.opened_at is None:
        raise ValueError(f"Alert of {alert.tenant!r} without alert_id or opened_at: no incident")
    if not (math.isfinite(alert.observed) and math.isfinite(alert.baseline)):
        raise ValueError(f"Alert {alert.alert_id!r}: observed and baseline must be finite")
    return (
        alert.tenant,
        alert.alert_id,
        alert.kind,
        alert.severity.value,
        alert.status.value,
        alert.provider,
        alert.decline_code,
        alert.customer_ref,
        alert.observed,
        alert.baseline,
        alert.window.start,
        alert.window.end,
        alert.message,
        alert.opened_at,
        alert.window.end,
        alert.resolved_at,
        at.topic,
        at.partition,
        at.offset,
    )


async def rows(conn: asyncpg.Connection, batch: Batch[Alert]) -> Sequence[Row]:
    """One row per incident of the batch: its latest record's."""
    return [row(alert, at) for alert, at in latest(batch)]


# Named, like its table, after the topic it reads (the topic's name is spelled only in
# paywatch.schemas.topics, which a contract test checks).
READ_MODEL = ReadModel(ALERTS, {ALERTS: Alert}, rows=rows, write=execute_many(UPSERT))
