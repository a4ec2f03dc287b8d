"""When things happened in the system under test: read-model commits and Kafka record times.

Read-model visibility: the projector (and the baseline's consumer) commits its
``(topic, partition) -> next_offset`` checkpoints in the same transaction as its rows, so a
`CheckpointPoller` that reads the (tiny) checkpoint table every ``interval`` seconds knows,
to within that interval, when the row of any record became visible: the first poll whose
checkpoint of the record's partition is past its offset. No poll of the big tables.

Kafka times: `record_times` reads a topic from the start and keeps each record's timestamp
(CreateTime: the producer's clock when it sent the record, the same clock as the load
generator's on this one machine), per partition indexed by offset.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from array import array
from dataclasses import dataclass, field

import asyncpg
from confluent_kafka import Consumer, TopicPartition

Position = tuple[str, int]


@dataclass
class CheckpointPoller:
    """Polls a checkpoint query; remembers when each checkpoint first reached each value."""

    dsn: str
    query: str
    interval: float = 0.05
    history: dict[Position, tuple[list[int], list[float]]] = field(default_factory=dict)
    last_change: float = 0.0
    backend_pid: int = 0
    _conn: asyncpg.Connection | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (the bench's own backend pid is kept, to leave it out of Postgres's CPU)."""
        self._conn = await asyncpg.connect(self.dsn)
        self.backend_pid = int(await self._conn.fetchval("SELECT pg_backend_pid()"))
        await self.poll()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop polling and close."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._conn is not None:
            await self._conn.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()

    async def poll(self) -> None:
        """Read every checkpoint once."""
        assert self._conn is not None
        rows = await self._conn.fetch(self.query)
        now = time.time()
        for topic, partition, next_offset in rows:
            offsets, times = self.history.setdefault((topic, partition), ([], []))
            if not offsets or next_offset > offsets[-1]:
                offsets.append(int(next_offset))
                times.append(now)
                self.last_change = now

    def visible_at(self, topic: str, partition: int, offset: int) -> float | None:
        """When the row of record topic[partition]@offset was first seen committed."""
        offsets, times = self.history.get((topic, partition), ([], []))
        i = bisect.bisect_right(offsets, offset)  # first checkpoint > offset
        return times[i] if i < len(offsets) else None

    async def drained(self, quiet: float, limit: float) -> bool:
        """Wait until no checkpoint moved for `quiet` seconds; False after `limit` seconds."""
        deadline = time.monotonic() + limit
        self.last_change = max(self.last_change, time.time())
        while time.time() - self.last_change < quiet:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)
        return True


@dataclass
class RecordTimes:
    """Per partition: first offset and every record's timestamp in ms (-1: no record)."""

    parts: dict[int, tuple[int, array[int]]] = field(default_factory=dict)

    def at(self, partition: int, offset: int) -> float | None:
        """Epoch seconds of record partition@offset, None if unknown."""
        base, stamps = self.parts.get(partition, (0, array("q")))
        i = offset - base
        if 0 <= i < len(stamps) and stamps[i] >= 0:
            return stamps[i] / 1000.0
        return None

    def count(self) -> int:
        """How many records were read."""
        return sum(sum(1 for s in stamps if s >= 0) for _, stamps in self.parts.values())


def record_times(bootstrap: str, topic: str, timeout: float = 120.0) -> RecordTimes:
    """Every record's timestamp of `topic`, read from the start to the high watermarks."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-e2e-times",
        "enable.auto.commit": False, "enable.partition.eof": False,
        "isolation.level": "read_uncommitted",
    })
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        ends: dict[int, tuple[int, int]] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = (low, high)
        times = RecordTimes({p: (low, array("q", [-1]) * (high - low))
                             for p, (low, high) in ends.items()})
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        left = set(ends)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            msgs = consumer.consume(10_000, timeout=1.0)
            for msg in msgs:
                if msg.error():
                    continue
                p, o = int(msg.partition() or 0), int(msg.offset() or 0)
                if p not in ends or o >= ends[p][1]:  # appended after the watermarks were read
                    left.discard(p)
                    continue
                base, stamps = times.parts[p]
                stamps[o - base] = msg.timestamp()[1]
                if o + 1 >= ends[p][1]:
                    left.discard(p)
            if not msgs:  # a partition ending in a transaction marker has no last record
                at = consumer.position([TopicPartition(topic, p) for p in left])
                left -= {tp.partition for tp in at if tp.offset >= ends[tp.partition][1]}
        return times
    finally:
        consumer.close()
