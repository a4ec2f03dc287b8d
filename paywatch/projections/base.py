"""The one small base every read model fills in (STYLE.md item 4).

A read model is one module that builds one `ReadModel`: the source topics it consumes with
the record type of each (`sources`), the rows a batch of its `(record, Coords)` yields
(`rows`, which may read on the connection what a fold needs) and how they are written
(`write`). The registry lists them; the sink writes one batch in one transaction:

1. the advisory `locks` of every model, all taken together in ascending order (so two
   projectors never deadlock);
2. each model in registry order that has records in the batch: `rows`, then `write`;
3. the `(topic, partition) -> next_offset` checkpoints.

Order is explicit: a model whose `rows` read the rows another model writes in the same
batch (it runs "after" it) names that model in `after`; the registry checks at import that
every such model comes earlier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Frozen

R = TypeVar("R", bound=Frozen)
Row = tuple[Any, ...]
"""One statement's parameters."""
Batch = Sequence[tuple[R, Coords]]
"""A model's records of one batch, in log order, with their Kafka coordinates."""
RowsFn = Callable[[asyncpg.Connection, Batch[R]], Awaitable[Sequence[Row]]]
WriteFn = Callable[[asyncpg.Connection, Sequence[Row]], Awaitable[None]]


async def _no_rows(conn: asyncpg.Connection, batch: Batch[Any]) -> Sequence[Row]:
    return ()


async def _no_write(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    return None


def _no_locks(batch: Batch[Any]) -> Iterable[int]:
    return ()


@dataclass(frozen=True)
class ReadModel(Generic[R]):
    """What one read model consumes, the rows a batch yields, and how they are written."""

    name: str
    sources: Mapping[str, type[R]]
    """Logical source topic (`paywatch.schemas.topics`) -> the record type of its values."""
    rows: RowsFn[R] = _no_rows
    write: WriteFn = _no_write
    locks: Callable[[Batch[R]], Iterable[int]] = _no_locks
    """Advisory-lock ids (`pg_advisory_xact_lock`) to hold before any model writes."""
    after: tuple[str, ...] = ()
    """Models whose rows of the same batch `rows` reads: the registry lists them earlier."""

    @property
    def record_types(self) -> tuple[type[R], ...]:
        """The record types this model consumes."""
        return tuple(dict.fromkeys(self.sources.values()))

    def select(self, records: Iterable[tuple[Frozen, Coords]]) -> list[tuple[R, Coords]]:
        """This model's records of a batch, in log order."""
        types = self.record_types
        return [(r, at) for r, at in records if isinstance(r, types)]

    async def project(self, conn: asyncpg.Connection, records: Batch[R]) -> None:
        """Yield the batch's rows and write them (nothing when there are none)."""
        rows = await self.rows(conn, records)
        if rows:
            await self.write(conn, rows)


def each(row: Callable[[R, Coords], Row | None]) -> RowsFn[R]:
    """`rows` of a model whose rows are one pure function of each record (None: no row)."""

    async def rows(conn: asyncpg.Connection, batch: Batch[R]) -> Sequence[Row]:
        return [r for record, at in batch if (r := row(record, at)) is not None]

    return rows


def latest_per_key(batch: Batch[R], key: Callable[[R], Hashable]) -> list[tuple[R, Coords]]:
    """Per ``key``, the batch's record at the greatest Kafka coordinates, whatever order the
    batch holds them in (on a compacted or per-key ordered topic, the one that counts)."""
    newest: dict[Hashable, tuple[R, Coords]] = {}
    for record, at in batch:
        k = key(record)
        kept = newest.get(k)
        if kept is None or kept[1] < at:
            newest[k] = (record, at)
    return list(newest.values())


def execute_many(*statements: str) -> WriteFn:
    """`write` that runs each statement over all the rows, statement by statement."""

    async def write(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
        for statement in statements:
            await conn.executemany(statement, rows)

    return write
