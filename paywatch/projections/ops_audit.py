"""Read model `ops_audit`: one row per OpsAudit record of `ops.audit`, with its coordinates.

Each record is one action and carries its own id, so a row is written once: a replay, or
a projector overlapping a rebalance, meets the primary key and changes nothing.
"""

from __future__ import annotations

from typing import Any

from paywatch.projections.base import ReadModel, each, execute_many
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import OpsAudit
from paywatch.schemas.topics import OPS_AUDIT

INSERT = (
    "INSERT INTO ops_audit (audit_id, tenant, actor, action, subject, at, details, topic,"
    ' partition, "offset") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
    " ON CONFLICT DO NOTHING"
)


def row(entry: OpsAudit, at: Coords) -> tuple[Any, ...]:
    """The values of INSERT (details as a JSON object for jsonb)."""
    return (
        entry.audit_id, entry.tenant, entry.actor, entry.action, entry.subject, entry.at,
        dict(entry.details), at.topic, at.partition, at.offset,
    )  # fmt: skip


READ_MODEL = ReadModel(
    "ops_audit", {OPS_AUDIT: OpsAudit}, rows=each(row), write=execute_many(INSERT)
)
