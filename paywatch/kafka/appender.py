"""Appends records (webhooks, policy changes); success only after the broker ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from paywatch.deadlines import Deadlines
from paywatch.errors import Retryable
from paywatch.kafka.clients import reliable_producer
from paywatch.kafka.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


def key_partition(key: bytes, count: int) -> int:
    """The partition of a keyed record among ``count``: murmur2 of the key, as aiokafka's
    (and the Java client's) default partitioner computes it for partitions 0..count-1."""
    return (murmur2(key) & 0x7FFFFFFF) % count


_WORD = struct.Struct("<I")
_M32 = 0xFFFFFFFF
_MURMUR_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as an unsigned 32-bit int, aiokafka's result.

    aiokafka's version indexes and masks byte by byte: ~4 µs for a 40-byte webhook key;
    this one reads whole little-endian words, ~2 µs. Checked against aiokafka's on
    generated keys (tests/unit/test_appender_partition.py).
    """
    length = len(data)
    h = 0x9747B28C ^ length
    end = length & ~3
    for (k,) in _WORD.iter_unpack(data[:end]):
        k = (k * _MURMUR_M) & _M32
        k = ((k ^ (k >> 24)) * _MURMUR_M) & _M32
        h = ((h * _MURMUR_M) & _M32) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[end + 2] << 16
        if rest >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _MURMUR_M) & _M32
    h = ((h ^ (h >> 13)) * _MURMUR_M) & _M32
    return h ^ (h >> 15)


STOP_GRACE_S = 5.0
"""How long stop() waits past the ack timeout for the last records to be taken."""


class KafkaAppender:
    """Idempotent, acks=all producers that (re)connect in the background.

    Ingest must keep answering while Kafka is down (503, so providers redeliver),
    so a failed connect is retried instead of crashing the process. With ``producers``
    > 1, partition p is written by producer p % producers only (one producer per partition
    keeps each partition's order and idempotence), so that many produce requests can be
    in flight to a broker at once.
    """

    def __init__(
        self,
        bootstrap: str,
        ack_timeout: float,
        *,
        client_id: str = "paywatch-ingest",
        security: KafkaSecurity = PLAINTEXT,
        producers: int = 1,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._ack_timeout = ack_timeout
        self._deadlines = Deadlines(ack_timeout)
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._client_id = client_id
        if producers < 1:
            raise ValueError("producers must be at least 1")
        self._count = producers
        self._producers: list[AIOKafkaProducer] = []
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Try to connect now; keep trying in the background if the broker is down."""
        if not await self._connect_once():
            self._connector = asyncio.create_task(self._connect_forever())

    async def _connect_once(self) -> bool:
        producers = [
            reliable_producer(
                self._bootstrap,
                client_id=self._client_id,
                request_timeout_s=self._ack_timeout,
                security=self._security,
            )
            for _ in range(self._count)
        ]
        try:
            for producer in producers:
                await producer.start()
        except KafkaError as exc:
            log.warning("Kafka not reachable at %s: %s", self._bootstrap, exc)
            for producer in producers:
                with contextlib.suppress(KafkaError):
                    await producer.stop()
            return False
        self._producers = producers
        self._producer = producers[0]
        log.info("connected to Kafka at %s", self._bootstrap)
        return True

    async def _connect_forever(self) -> None:
        delay = 0.5
        while not await self._connect_once():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        """Flush and close."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producers:
            try:
                # aiokafka's stop() flushes and waits for a broker that may be gone for good;
                # what it still holds was never acknowledged to anyone (no 200 went out).
                async with asyncio.timeout(self._ack_timeout + STOP_GRACE_S):
                    await asyncio.gather(*(producer.stop() for producer in self._producers))
            except TimeoutError:
                log.warning("Kafka at %s did not take the last records: closed without them",
                            self._bootstrap)  # fmt: skip

    async def append(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Write one record and wait for the broker ack; (partition, offset) or Retryable."""
        if self._producer is None:
            raise Retryable("Kafka is not reachable")
        # One shared deadline sweep rather than a timer per append (asyncio.timeout costs
        # ~4 us an append; wait_for an extra task on top): paywatch/deadlines.py.
        deadline = self._deadlines.arm()
        try:
            meta = await (await self._enqueue(topic, key, value))
        except asyncio.CancelledError:
            if deadline.caused_cancel():
                raise Retryable(
                    f"Kafka did not acknowledge the write within {self._ack_timeout:g} s"
                ) from None
            raise
        except KafkaError as exc:
            raise Retryable(f"Kafka did not acknowledge the write: {exc!r}") from exc
        finally:
            deadline.disarm()
        return meta.partition, meta.offset

    async def _enqueue(
        self, topic: str, key: bytes, value: bytes
    ) -> asyncio.Future[RecordMetadata]:
        """``producer.send`` for a keyed record, without its per-record overhead.

        ``send`` re-awaits the topic's metadata, copies the partition set into two lists
        for the partitioner, builds a TopicPartition and logs at debug level on every call:
        ~6 of ingest's ~105 µs per webhook under load. This is the same record in the same
        partition (``key_partition`` is aiokafka's default partitioner, checked against it
        in tests/unit/test_appender_partition.py), handed to the accumulator of the
        partition's producer as ``send`` hands it; aiokafka is pinned (pyproject.toml)
        because this reads two of its private attributes.
        """
        producers = self._producers
        partitions = producers[0]._metadata.partitions_for_topic(topic)
        if not partitions:  # the topic's first record: every producer learns the topic
            for producer in producers:
                partitions = await producer.partitions_for(topic)
        partition = key_partition(key, len(partitions))
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        accumulator = producers[partition % self._count]._message_accumulator
        future: asyncio.Future[RecordMetadata] = await accumulator.add_message(
            tp, key, value, self._ack_timeout
        )
        return future

    async def healthy(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 (a probe budget)
        """True when the broker answers a metadata request."""
        if self._producer is None:
            return False
        try:
            return bool(
                await asyncio.wait_for(self._producer.client.force_metadata_update(), timeout)
            )
        except (KafkaError, TimeoutError):
            return False
