"""Bulk restore of the worker's rocksdb tables from their changelogs, before Faust starts.

Faust restores a table by passing every changelog record through its consumer and recovery
loop as an event: about 3,400 records/s on this 2-core machine whatever their size, so a
worker with an empty state directory and a million open sagas took 290 s to restore
(engine issue, item 4: cold start to ready <= 120 s). Its rocksdb store keeps, in each
partition's database, the raw changelog key and value of every key and the offset of the
last record applied (``__faust\\0offset__``); on assignment it reads the changelog from
there to its end.

``prerestore`` does that read itself, before the worker's consumer joins its group: for
every partition of every rocksdb table, one librdkafka consumer (confluent-kafka, large
fetches) reads the changelog from the offset after the persisted one to the high watermark
and writes the records in rocksdb write batches, exactly as Faust's
``Store.apply_changelog_batch`` would (value = None deletes), recording the last offset
applied after each batch. Faust then finds its databases current and restores only what
was appended since. A crash in the middle leaves a consistent prefix (the offset is written
after its batch), which the next start continues.

It restores every partition, not only the ones this worker will be assigned (the
assignment is not known before the join): with one worker that is the same; with several,
each one holds every partition's state on disk, which makes later rebalances cheap too.
``PAYWATCH_TABLE_PRERESTORE=false`` leaves restoring to Faust alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rocksdict
from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.stores.rocksdb import Store as RocksStore
from faust.types import TP

from paywatch.kafka.security import PLAINTEXT, KafkaSecurity, librdkafka_config

log = logging.getLogger(__name__)

BATCH = 10_000
"""Records per consume call and per rocksdb write batch."""
WATERMARK_TIMEOUT_S = 30.0
STALL_S = 60.0
"""A partition that yields nothing for this long is left to Faust's own restore."""


@dataclass
class Restored:
    """What one table's bulk restore read."""

    table: str
    records: int = 0
    partitions: int = 0
    seconds: float = 0.0


def prerestore(
    tables: Sequence[Any],
    bootstrap: str,
    partitions: int,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Restored]:
    """Bring the rocksdb stores of ``tables`` (Faust tables) up to their changelogs' ends."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **librdkafka_config(security),
            "group.id": "paywatch-table-restore",  # never joins: partitions assigned by hand
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 2**20,
            "max.partition.fetch.bytes": 16 * 2**20,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    try:
        return [
            _restore(consumer, table, partitions)
            for table in tables
            if isinstance(table.data, RocksStore)
        ]
    finally:
        consumer.close()


def _restore(consumer: Consumer, table: Any, partitions: int) -> Restored:
    store: RocksStore = table.data
    topic = table.changelog_topic.get_topic_name()
    done = Restored(table.name)
    begin = time.monotonic()
    store.path.mkdir(parents=True, exist_ok=True)
    for partition in range(partitions):
        try:
            count = _restore_partition(consumer, store, topic, partition)
        except Exception as exc:  # e.g. another process holds the database's lock
            if "lock" not in str(exc).lower():
                raise
            log.warning("table %s[%s]: not restored in bulk: %s", table.name, partition, exc)
            continue
        done.records += count
        done.partitions += 1 if count else 0
    done.seconds = time.monotonic() - begin
    log.info(
        "table %s: %d changelog records restored in bulk (%d partitions) in %.1f s",
        done.table, done.records, done.partitions, done.seconds,
    )  # fmt: skip
    return done


def _restore_partition(consumer: Consumer, store: RocksStore, topic: str, partition: int) -> int:
    tp = TP(topic, partition)
    low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S, cached=False
    )
    persisted = store.persisted_offset(tp)
    start = low if persisted is None else max(low, persisted + 1)
    if start >= high:
        return 0
    db = store._db_for_partition(partition)
    consumer.assign([TopicPartition(topic, partition, start)])
    count, last = 0, start - 1
    quiet_since = time.monotonic()
    try:
        while last < high - 1:
            batch, size = rocksdict.WriteBatch(raw_mode=True), 0
            for msg in consumer.consume(BATCH, timeout=1.0):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        last = max(last, high - 1)  # compacted away up to the end
                        continue
                    raise RuntimeError(f"restoring {topic}[{partition}]: {error}")
                key, value, offset = msg.key(), msg.value(), msg.offset()
                if offset is not None:
                    last = max(last, offset)
                if key is None:
                    continue  # not a table entry (Faust never writes one)
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                size += 1
            if size:
                db.write(batch)  # then the offset: a crash leaves a consistent prefix
                store.set_persisted_offset(tp, last)
                count += size
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > STALL_S:
                log.warning(
                    "restoring %s[%s]: nothing read for %.0f s at offset %s of %s;"
                    " Faust restores the rest",
                    topic, partition, STALL_S, last + 1, high,
                )  # fmt: skip
                break
    finally:
        consumer.unassign()
    return count
