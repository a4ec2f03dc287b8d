"""Read model `customers`: one row per tenant/customer, its latest risk score.

`risk.scores` is compacted on `tenant/customer_ref`: once the broker compacts, only the last
record of each key is left, so the last record (the greatest Kafka coordinates) is the
truth, not the one with the latest `as_of`. Ordering by coordinates alone is what makes a
live projection and a rebuild from the compacted topic end on the same row. `latest` keeps
that record per key within a batch (whatever order the batch holds them in), and the
write's guard keeps it across batches: a replay, or a projector overlapping a rebalance,
never moves a row back to an older record (ARCHITECTURE §1, STYLE.md item 5).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from paywatch.projections.base import Batch, ReadModel, Row, latest_per_key
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import RiskScore
from paywatch.schemas.topics import RISK_SCORES

COLUMNS = (
    "tenant",
    "customer_ref",
    "score",
    "band",
    "reasons",
    "reason_texts",
    "model_version",
    "as_of",
    "topic",
    "partition",
    "offset",
)
WRITE = CopyMerge(
    "customers",
    COLUMNS,
    key=COLUMNS[:2],
    update=True,
    guard=("topic", "partition", "offset"),
    json=frozenset({"reasons"}),
)
"""Replace a stored row only with a record at greater Kafka coordinates."""


def latest(batch: Batch[RiskScore]) -> list[tuple[RiskScore, Coords]]:
    """The record at the greatest coordinates of each key of the batch."""
    return latest_per_key(batch, lambda score: (score.tenant, score.customer_ref))


def row(score: RiskScore, at: Coords) -> Row:
    """The `customers` row of one record, in `COLUMNS` order.

    `reasons` holds the contributions (largest first, as scored); the words of
    `RiskScore.reasons` go to `reason_texts`. A non-finite contribution is refused here
    (ValueError: a record's fault, so the projector dead-letters it) because jsonb cannot
    hold it and a scorer that produced it is broken.
    """
    reasons = [
        {"feature": c.feature, "contribution": c.contribution, "value": c.value}
        for c in score.contributions
    ]
    return (
        score.tenant,
        score.customer_ref,
        score.score,
        score.band.value,
        json.dumps(reasons, allow_nan=False),
        list(score.reasons),
        score.model_version,
        score.as_of,
        at.topic,
        at.partition,
        at.offset,
    )


async def rows(conn: asyncpg.Connection, batch: Batch[RiskScore]) -> Sequence[Row]:
    """One row per key of the batch: its latest record's."""
    return [row(score, at) for score, at in latest(batch)]


READ_MODEL = ReadModel("customers", {RISK_SCORES: RiskScore}, rows=rows, write=WRITE)
