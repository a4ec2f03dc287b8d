"""Reading Kafka itself for audits and re-normalization: bounded scans and exact offsets.

Outside any consumer group (nothing is committed, no running process is disturbed). A scan
reads a partition from a start (the beginning, or the first offset at or after a time)
up to the end offset it saw when it began, so records appended meanwhile do not make it
run forever; a scan longer than its bound is refused before anything is read, with the
count, so the operator narrows it (``--since``) or raises the bound knowingly. Long scans
report progress on stderr every few seconds.

Keyed topics are read on one partition only: the one aiokafka's default partitioner (the
producers' and Faust's: murmur2 of the key bytes, like the Java client) puts the key on.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from paywatch.errors import InfraError, PaywatchError
from paywatch.kafka.admin import admin_client
from paywatch.kafka.clients import log_reader
from paywatch.kafka.security import kafka_security
from paywatch.settings import Settings

PROGRESS_EVERY_S = 2.0
POLL_MS = 500
STALL_S = 60.0
"""A partition that yields nothing for this long before its end offset is an error."""


class ScanTooLong(PaywatchError):
    """A scan would read more records than its bound."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producers' default partitioner gives ``key`` (murmur2, positive)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


Progress = Callable[[str], None]


def stderr_progress(line: str) -> None:
    """Progress of a long scan, on stderr (stdout stays the report)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class LogScanner:
    """One consumer outside any group, partitions assigned by hand."""

    consumer: AIOKafkaConsumer
    admin: AdminClient
    max_scan: int
    progress: Progress = stderr_progress
    known: dict[str, list[int]] = field(default_factory=dict)

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions (InfraError when the topic does not exist)."""
        if topic not in self.known:
            self.known[topic] = await asyncio.to_thread(self._list_partitions, topic)
        return self.known[topic]

    def _list_partitions(self, topic: str) -> list[int]:
        try:
            meta = self.admin.list_topics(topic, timeout=30)
        except KafkaException as exc:
            raise InfraError(f"Kafka did not list topic {topic}: {exc}") from exc
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise InfraError(f"topic {topic} does not exist (is this the right stack?)")
        return sorted(found.partitions)

    async def bounds(
        self, tps: list[TopicPartition], since_ms: int | None
    ) -> dict[TopicPartition, tuple[int, int]]:
        """(start, end) offsets per partition: from ``since_ms`` (or the beginning) to now."""
        ends = await self.consumer.end_offsets(tps)
        starts = await self.consumer.beginning_offsets(tps)
        if since_ms is not None:
            found = await self.consumer.offsets_for_times({tp: since_ms for tp in tps})
            starts = {tp: (at.offset if at else ends[tp]) for tp, at in found.items()}
        return {tp: (starts[tp], ends[tp]) for tp in tps}

    async def scan(
        self, tps: list[TopicPartition], since_ms: int | None = None
    ) -> AsyncIterator[Any]:
        """Every record of the partitions from their start to the end seen now, in order
        per partition; ScanTooLong before reading when that is over ``max_scan``."""
        bounds = await self.bounds(tps, since_ms)
        total = sum(end - start for start, end in bounds.values())
        if total > self.max_scan:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)
            raise ScanTooLong(
                f"{names} hold {total} records in range, over the bound of {self.max_scan}: "
                "narrow it with --since or raise --max-scan"
            )
        todo = {tp: b for tp, b in bounds.items() if b[1] > b[0]}
        if not todo:
            return
        self.consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            self.consumer.seek(tp, start)
        async for record in self._drain(todo, total):
            yield record

    async def _drain(
        self, todo: dict[TopicPartition, tuple[int, int]], total: int
    ) -> AsyncIterator[Any]:
        seen, shown, last_data = 0, time.monotonic(), time.monotonic()
        left = dict(todo)
        while left:
            batch = await self.consumer.getmany(*left, timeout_ms=POLL_MS)
            for tp, records in batch.items():
                start, end = left.get(tp, (0, -1))
                for record in records:
                    if record.offset >= end:
                        break
                    if record.offset < start:  # a fetch from before the seek, delivered late
                        continue
                    seen += 1
                    yield record
                if records:
                    last_data = time.monotonic()
            for tp in list(left):
                if await self.consumer.position(tp) >= left[tp][1]:
                    del left[tp]
            if left and time.monotonic() - last_data > STALL_S:
                raise InfraError(f"Kafka sent nothing for {STALL_S:.0f} s while reading {left}")
            if total > 10_000 and time.monotonic() - shown > PROGRESS_EVERY_S:
                shown = time.monotonic()
                self.progress(f"scanned {seen}/{total} records")

    async def read_at(self, topic: str, partition: int, offset: int) -> Any | None:
        """The record at exactly these coordinates (None when it is not there)."""
        tp = TopicPartition(topic, partition)
        if partition not in await self.partitions(topic):
            return None
        (start, end) = (await self.bounds([tp], None))[tp]
        if not start <= offset < end:
            return None
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(tp, timeout_ms=POLL_MS, max_records=1)
            for record in batch.get(tp, []):
                if record.offset >= offset:  # earlier ones: a fetch from before the seek
                    return record if record.offset == offset else None
        raise InfraError(f"Kafka did not send {topic}[{partition}]@{offset} in {STALL_S:.0f} s")


@asynccontextmanager
async def open_scanner(
    settings: Settings, bootstrap: str, *, max_scan: int, progress: Progress = stderr_progress
) -> AsyncIterator[LogScanner]:
    """A LogScanner on the stack's Kafka; InfraError when it cannot be reached."""
    security = kafka_security(settings)
    consumer = log_reader(bootstrap, client_id="paywatch-audit", security=security)
    try:
        await consumer.start()
    except KafkaError as exc:
        raise InfraError(
            f"Kafka at {bootstrap} is not reachable ({exc}); is the stack running "
            "(`paywatch status`)?"
        ) from exc
    try:
        yield LogScanner(consumer, admin_client(bootstrap, security=security), max_scan, progress)
    finally:
        await consumer.stop()
