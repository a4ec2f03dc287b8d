"""Bulk restore of the worker's rocksdb tables before it joins (engine issue, item 4).

Real Kafka and the production store: records written to the saga table's changelog as
Faust writes them (raw key and value, tombstones delete) must land in the partition's
rocksdb database with the last offset applied recorded as Faust records it, so that
Faust's own recovery starts after them; a second run reads only what was appended since.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from faust.types import TP

from paywatch.settings import Settings
from paywatch.streams.app import create_worker
from paywatch.streams.saga import DefaultPolicies
from paywatch.streams.table_restore import prerestore


async def _append(
    bootstrap: str, topic: str, records: Sequence[tuple[int, bytes, bytes | None]]
) -> dict[int, int]:
    """Write (partition, key, value) records; the last offset written per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        last: dict[int, int] = {}
        for partition, key, value in records:
            meta = await producer.send_and_wait(topic, key=key, value=value, partition=partition)
            last[partition] = max(last.get(partition, -1), meta.offset)
        return last
    finally:
        await producer.stop()


async def test_the_changelog_is_restored_in_bulk_and_faust_starts_after_it(
    test_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = test_settings.model_copy(update={"table_store": "rocksdb://"})
    worker = create_worker(settings, kafka_bootstrap, policies=DefaultPolicies())
    assert worker.saga is not None
    table = worker.saga.sagas
    topic = table.changelog_topic.get_topic_name()
    first = [(i % 3, f"k{i}".encode(), f"v{i}".encode()) for i in range(300)]
    ends = await _append(kafka_bootstrap, topic, first)

    (done,) = [r for r in prerestore([table], kafka_bootstrap, 3) if r.table == table.name]
    assert done.records == 300 and done.partitions == 3

    store = table.data
    for partition, key, value in first:
        assert store._db_for_partition(partition)[key] == value
    for partition, offset in ends.items():  # what Faust's recovery seeks past
        assert store.persisted_offset(TP(topic, partition)) == offset

    later = [(0, b"k0", None), (1, b"k1", b"v1-new"), (2, b"k500", b"v500")]
    ends = await _append(kafka_bootstrap, topic, later)
    (again,) = [r for r in prerestore([table], kafka_bootstrap, 3) if r.table == table.name]
    assert again.records == 3  # only what was appended since the first restore
    assert store._db_for_partition(0).get(b"k0") is None  # a tombstone deletes
    assert store._db_for_partition(1)[b"k1"] == b"v1-new"
    assert store._db_for_partition(2)[b"k500"] == b"v500"
    assert store.persisted_offset(TP(topic, 2)) == ends[2]
