"""The projector process: Kafka -> Postgres read models, exactly-once effect.

It reads the topics of every registered read model (`SOURCES`, derived from
:mod:`paywatch.projections.registry`) under one projection name. On every partition
assignment the consumer seeks to the checkpoint stored in Postgres (not Kafka's committed
offset); each polled batch (up to `projector_batch` records, filled for at most LINGER_S),
whatever topics it spans, is written with the checkpoints of every partition it read in one
transaction. Kafka offsets are committed afterwards for monitoring only.

No record stops it: an undecodable record is dead-lettered here, a record whose write fails
is isolated and dead-lettered by :class:`paywatch.projections.writer.BatchWriter`, each with
its coordinates, the stage ``project`` and the error, and checkpointed as skipped; while
Postgres is unreachable it waits and retries, dead-lettering nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from paywatch.errors import CodecError
from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.kafka.health import tracker
from paywatch.kafka.security import kafka_security
from paywatch.projections import registry
from paywatch.projections.faults import describe
from paywatch.projections.writer import BatchWriter, Entry, Stopped, durably
from paywatch.schemas.codec import Codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import DeadLetter, Frozen
from paywatch.schemas.topics import DLQ_SOURCES, PAYMENTS_EVENTS, dlq_name
from paywatch.settings import Settings

log = logging.getLogger(__name__)
PROJECTION = "read_models"
LINGER_S = 0.05
"""After the first records of a batch, how long to keep polling to fill it."""
SOURCES: Mapping[str, type[Frozen]] = registry.sources()
"""Logical topics the projector reads, with the model of their values."""


@dataclass(frozen=True)
class Source:
    """One topic the projector reads: its value model and where its poison records go."""

    model: type[Frozen]
    dlq: str


def dead_letter_topic(source: str) -> str:
    """The source's own DLQ, else the projector's (payments.events.dlq).

    recovery.transitions and recovery.policies have no DLQ of their own (ARCHITECTURE §7
    lists none); their letters name their source topic, so they stay distinguishable in
    payments.events.dlq.
    """
    return dlq_name(source if source in DLQ_SOURCES else PAYMENTS_EVENTS)


class _SeekToCheckpoint(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks assigned partitions to their Postgres checkpoint and marks them `ready`.

    aiokafka may hand out records of a new assignment while this listener is still
    awaiting Postgres; records of partitions not yet in `ready` are ignored (and
    fetched again from the checkpoint), so nothing is processed from a wrong position.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        projection: str,
        stopping: asyncio.Event,
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._projection = projection
        self._stopping = stopping
        self.ready: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Batches are written before the next poll; just forget the partitions."""
        self.ready.difference_update(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Seek each partition to checkpoint (or the beginning when none)."""
        stored = await durably(self._checkpoints, self._stopping)
        # No await from here on: every seek and the `ready` mark happen together, so the
        # fetcher cannot hand out records from the pre-seek position in between. Offset 0
        # below the log start falls back to the earliest offset (auto_offset_reset).
        for tp in assigned:
            self._consumer.seek(tp, stored.get((tp.topic, tp.partition), 0))
        self.ready.update(assigned)
        log.info("projector assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    async def _checkpoints(self) -> dict[tuple[str, int], int]:
        """The stored (topic, partition) -> next_offset of the projection (waits for Postgres)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM projection_checkpoints"
                " WHERE projection = $1",
                self._projection,
            )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


class Projector:
    """Consumes the SOURCES topics and writes the read models in batches."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        pool: asyncpg.Pool,
        codec: Codec,
        projection: str = PROJECTION,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._sources = {
            settings.topic(name): Source(model, settings.topic(dead_letter_topic(name)))
            for name, model in SOURCES.items()
        }
        self._consumer = group_consumer(
            bootstrap,
            group_id=f"{settings.app_id}-projector-{projection}",
            client_id="paywatch-projector",
            security=kafka_security(settings),
        )
        self._producer = reliable_producer(
            bootstrap, client_id="paywatch-projector", security=kafka_security(settings)
        )
        self._stopping = asyncio.Event()
        self._listener = _SeekToCheckpoint(self._consumer, pool, projection, self._stopping)
        self.writer = BatchWriter(pool, projection, self._dead_letter, stopping=self._stopping)

    async def run(self) -> None:
        """Run until `stop()`."""
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self._sources), listener=self._listener)
        tracker.watch(self._consumer)
        try:
            while not self._stopping.is_set():
                await self.step()
        except Stopped:
            log.info("projector stopped while waiting for the database")
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self._stopping.set()

    async def step(self) -> int:
        """Poll one batch and write it; returns the number of records written."""
        polled = await self._poll()
        fresh: dict[Coords, Any] = {}  # a rebalance while lingering may deliver a record twice
        for tp, records in polled:
            if tp in self._listener.ready:  # else fetched before the seek: will come again
                fresh.update((Coords(r.topic, r.partition, r.offset), r) for r in records)
        entries = [
            Entry(await self._decode(rec), at, rec.key, rec.value) for at, rec in fresh.items()
        ]
        written = await self.writer.write(entries)
        tracker.batch("project", len(entries))
        if polled:
            await self._consumer.commit()
        return written

    async def _poll(self) -> list[tuple[TopicPartition, list[Any]]]:
        """Records of one batch: up to `projector_batch`, polled for at most LINGER_S more
        once the first records are in (a rebalance in between drops revoked partitions)."""
        limit = self._settings.projector_batch
        batch = await self._consumer.getmany(timeout_ms=500, max_records=limit)
        polled = list(batch.items())
        size = sum(len(records) for _, records in polled)
        deadline = asyncio.get_running_loop().time() + LINGER_S
        while polled and size < limit:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            more = await self._consumer.getmany(
                timeout_ms=int(left * 1000) + 1, max_records=limit - size
            )
            polled.extend(more.items())
            size += sum(len(records) for records in more.values())
        return polled

    async def _decode(self, rec: Any) -> Frozen | None:
        source = self._sources[rec.topic]
        try:
            return self._codec.decode(rec.value, source.model, topic=rec.topic)
        except CodecError as exc:
            entry = Entry(None, Coords(rec.topic, rec.partition, rec.offset), rec.key, rec.value)
            await self._dead_letter(entry, exc)
            return None

    async def _dead_letter(self, entry: Entry, exc: BaseException) -> None:
        """Send the record's DeadLetter (stage "project", the error) and wait for the ack."""
        at = entry.at
        log.warning("dead letter %s[%s]@%s: %s", at.topic, at.partition, at.offset, exc)
        tracker.dead_letter("project", exc)
        letter = DeadLetter(
            source_topic=at.topic,
            source_partition=at.partition,
            source_offset=at.offset,
            stage="project",
            error=describe(exc),
            key=entry.key,
            payload=entry.value or b"",
            failed_at=datetime.now(UTC),
        )
        dlq = self._sources[at.topic].dlq
        value = self._codec.encode(letter, topic=dlq)
        await self._producer.send_and_wait(dlq, key=entry.key, value=value)
