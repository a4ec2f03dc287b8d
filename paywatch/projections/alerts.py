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

The rows are written by `CopyMerge` (a guarded upsert), which leaves `updated_at` as the
rows give it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row, latest_per_key
from paywatch.projections.merge import CopyMerge
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


WRITE = CopyMerge(ALERTS, COLUMNS, key=KEY, update=True, guard=GUARD)  # table named as its topic
"""Insert an incident's row, or replace it only with a record at greater Kafka coordinates;
`updated_at` comes with the row (the record's window end), not from the clock of the write."""


def latest(batch: Batch[Alert]) -> list[tuple[Alert, Coords]]:
    """The record at the greatest coordinates of each incident of the batch."""
    return latest_per_key(batch, lambda alert: (alert.tenant, alert.alert_id))


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
READ_MODEL = ReadModel(ALERTS, {ALERTS: Alert}, rows=rows, write=WRITE)
