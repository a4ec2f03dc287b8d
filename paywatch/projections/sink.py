"""The Postgres sink: buffers records (`add`) and writes a batch in one transaction (`write`).

The rows of every registered read model and the `(topic, partition) -> next_offset`
checkpoints are committed together, so a crash anywhere replays at most the uncommitted
batch and the replay is a no-op (exactly-once effect; ARCHITECTURE §1, STYLE.md item 5).
Inside the transaction: the shared `GATE`, every model's advisory locks, then each model in
registry order (:mod:`paywatch.projections.base`), then the checkpoints.

A rebuild (:mod:`paywatch.projections.rebuild`) swaps its new tables in holding `GATE`
exclusively: it waits for the batch in flight to commit and holds the next one back before
it touches a table, so the swap reads checkpoints that match the rows, and no batch ever
writes half into the old generation and half into the new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from paywatch.projections.base import ReadModel
from paywatch.projections.registry import READ_MODELS
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Frozen

CHECKPOINT = (
    "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),"
    " updated_at = now()"
)
LOCKS = "SELECT pg_advisory_xact_lock(lock) FROM unnest($1::bigint[]) AS lock"
"""Every lock of a batch in one statement, taken in the array's (ascending) order."""
GATE = 0x7077_7377_6170
"""Advisory-lock id every batch holds shared and a rebuild's swap exclusively."""
ENTER = "SELECT pg_advisory_xact_lock_shared($1)"


@dataclass
class PostgresSink:
    """Buffers one batch for the registered read models (`models`)."""

    projection: str
    models: Sequence[ReadModel[Any]] = READ_MODELS
    records: list[tuple[Frozen, Coords]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, record: Frozen | None, at: Coords) -> None:
        """Buffer a record (None: a record skipped, e.g. dead-lettered, still checkpointed)."""
        if record is not None:
            self.records.append((record, at))
        key = (at.topic, at.partition)
        if at.offset >= self.positions.get(key, 0):
            self.positions[key] = at.offset + 1

    def __len__(self) -> int:
        return len(self.records)

    def batches(self) -> list[tuple[ReadModel[Any], list[tuple[Any, Coords]]]]:
        """Each model with its records of the batch: log order per record type (per topic)."""
        by_type: dict[type, list[tuple[Any, Coords]]] = {}
        for record, at in self.records:
            by_type.setdefault(type(record), []).append((record, at))
        return [
            (model, [item for t in model.record_types for item in by_type.get(t, ())])
            for model in self.models
        ]

    async def write(self, conn: asyncpg.Connection) -> int:
        """Write the batch and its checkpoints in one transaction; return records written."""
        if not self.positions:
            return 0
        batches = self.batches()
        async with conn.transaction():
            await conn.execute(ENTER, GATE)  # first: a swap never meets a batch half written
            locks = {lock for model, batch in batches if batch for lock in model.locks(batch)}
            if locks:  # in a fixed order, so two batches never deadlock
                await conn.execute(LOCKS, sorted(locks))
            for model, batch in batches:
                if batch:
                    await model.project(conn, batch)
            await conn.executemany(
                CHECKPOINT,
                [(self.projection, t, p, o) for (t, p), o in self.positions.items()],
            )
        written = len(self)
        self.records, self.positions = [], {}
        return written
