"""Writes polled batches through the sink so that no record can stop the projector.

`BatchWriter.write(entries)` writes a batch (records with their Kafka coordinates and raw
bytes, in log order) in one transaction (:class:`paywatch.projections.sink.PostgresSink`).
When it fails:

* the database's fault (:mod:`paywatch.projections.faults`): the same batch again after a
  backoff (0.2 s doubling to 5 s), until Postgres answers; nothing is dead-lettered;
* a record's fault: the batch is split in two halves, written one after the other in log
  order (each with its own checkpoints), and a failing half is split again, until the
  failing part is one record. That record is dead-lettered (`dead_letter`, which returns
  after the broker's ack) and then checkpointed as skipped, so a restart neither loses nor
  repeats it. Every other record of the batch is written.

A poison record thus costs about 2·log2(batch) extra transactions, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import asyncpg

from paywatch.projections.base import ReadModel
from paywatch.projections.faults import record_fault
from paywatch.projections.registry import READ_MODELS
from paywatch.projections.sink import PostgresSink
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Frozen

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


class Entry(NamedTuple):
    """One polled record: decoded (None: already dead-lettered), where it sits, its bytes."""

    record: Frozen | None
    at: Coords
    key: bytes | None = None
    value: bytes | None = None


DeadLetterFn = Callable[[Entry, BaseException], Awaitable[None]]


class Stopped(Exception):
    """The projector was asked to stop while waiting for the database."""


@dataclass
class BatchWriter:
    """Writes batches of entries for one projection, isolating poison records."""

    pool: asyncpg.Pool
    projection: str
    dead_letter: DeadLetterFn
    models: Sequence[ReadModel[Any]] = READ_MODELS
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    retries: int = 0
    """Batches retried after a database failure (a health signal)."""
    dead_lettered: int = 0
    """Records dead-lettered because their write failed."""

    async def write(self, entries: Sequence[Entry]) -> int:
        """Write the batch (poison records dead-lettered); return the records written."""
        if not entries:
            return 0
        try:
            return await self._durably(lambda: self._transaction(entries))
        except Exception as exc:
            if isinstance(exc, Stopped) or not record_fault(exc):
                raise
            if len(entries) == 1:
                await self._skip(entries[0], exc)
                return 0
            half = len(entries) // 2
            return await self.write(entries[:half]) + await self.write(entries[half:])

    async def _transaction(self, entries: Sequence[Entry]) -> int:
        sink = PostgresSink(self.projection, self.models)
        for entry in entries:
            sink.add(entry.record, entry.at)
        async with self.pool.acquire() as conn:
            return await sink.write(conn)

    async def _skip(self, entry: Entry, exc: BaseException) -> None:
        """Dead-letter the record, then checkpoint past it."""
        log.warning(
            "projector dead-letters %s[%s]@%s: %s",
            entry.at.topic, entry.at.partition, entry.at.offset, exc,
        )  # fmt: skip
        await self._durably(lambda: self.dead_letter(entry, exc))
        self.dead_lettered += 1
        await self._durably(lambda: self._transaction([entry._replace(record=None)]))

    async def _durably(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await durably(attempt, self.stopping, self._retried)

    def _retried(self) -> None:
        self.retries += 1


async def durably(
    attempt: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    retried: Callable[[], None] = lambda: None,
) -> T:
    """Run `attempt` until it succeeds, retrying the database's failures after a backoff.

    A record's fault (:func:`paywatch.projections.faults.record_fault`) is raised; `Stopped`
    when `stopping` is set during a backoff.
    """
    delay = FIRST_BACKOFF_S
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if record_fault(exc):
                raise
            retried()
            log.warning("projector waits %.1f s for the database: %r", delay, exc)
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, MAX_BACKOFF_S)
            continue
        raise Stopped
