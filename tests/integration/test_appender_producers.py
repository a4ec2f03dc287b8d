"""KafkaAppender with two producers on a real broker: each partition written by one producer
only (its order and idempotence kept), both producers used, every record where its key
puts it, with the offset the append returned."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from paywatch.api.ingest.app import INGEST_PRODUCERS
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.appender import KafkaAppender, key_partition
from paywatch.schemas.topics import TopicSpec
from tests.kafka_helpers import topic_records

PARTITIONS = 12


async def test_each_partition_has_one_producer_and_every_record_its_place(
    kafka_bootstrap: str,
) -> None:
    topic = f"test.appender.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name=topic, partitions=PARTITIONS)
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, [spec], timeout=60.0)
    appender = KafkaAppender(kafka_bootstrap, 10.0, producers=INGEST_PRODUCERS)
    await appender.start()
    try:
        keys = [f"acme/stripe/in_{i}".encode() for i in range(400)]
        placed = await asyncio.gather(
            *(appender.append(topic, key, b"value-" + key) for key in keys)
        )
        producers = appender._producers
        assert len(producers) == INGEST_PRODUCERS == 2
        # Idempotence sequence numbers per partition: one producer per partition, the
        # partition's producer is p % 2, and both carried records.
        writers: dict[int, list[int]] = {}
        for p in range(PARTITIONS):
            tp = TopicPartition(topic, p)
            sequences = [producer._txn_manager.sequence_number(tp) for producer in producers]
            writers[p] = [i for i, n in enumerate(sequences) if n]
        assert all(w in ([], [p % 2]) for p, w in writers.items()), writers
        assert {i for w in writers.values() for i in w} == {0, 1}
    finally:
        await appender.stop()
    assert all(
        p == key_partition(key, PARTITIONS) for key, (p, _) in zip(keys, placed, strict=True)
    )
    records = await topic_records(kafka_bootstrap, topic)
    where = {(r.partition, r.offset): (r.key, r.value) for r in records}
    assert len(records) == len(keys)
    for key, spot in zip(keys, placed, strict=True):
        assert where[spot] == (key, b"value-" + key)
