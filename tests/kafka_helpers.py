"""Reading test topics on the real broker, waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka.admin import AdminClient

from paywatch.kafka.codec import make_codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Alert, PaymentEvent, RecoveryCommand, RiskScore, SagaTransition
from paywatch.schemas.topics import (
    ALERTS,
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_TRANSITIONS,
    RISK_SCORES,
    customer_key,
    invoice_key,
)
from paywatch.settings import Settings

T = TypeVar("T")


async def topic_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record currently in `topic`, in partition/offset order (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p) for p in await asyncio.to_thread(_partitions, bootstrap, topic)
        ]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        # By coordinates: a fetch aiokafka started at assign() may still deliver its records
        # after the seek to the same offset, and the records of that offset come again
        # (seen once in CI as one dead letter read twice). A record is its coordinates.
        out: dict[tuple[int, int], Any] = {}
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {ends}")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.update(((r.partition, r.offset), r) for r in records)
        return [out[at] for at in sorted(out)]
    finally:
        await consumer.stop()


def _partitions(bootstrap: str, topic: str) -> list[int]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return sorted(meta.topics[topic].partitions) if topic in meta.topics else []


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 (a deadline, not a cancellation scope)
    every: float = 0.25,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)  # poll interval of a deadline-bound wait
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


Published = PaymentEvent | SagaTransition | RecoveryCommand | RiskScore | Alert


def destination(settings: Settings, r: Published) -> tuple[str, str]:
    """The topic and key the worker gives a record of this type (what the projector reads)."""
    if isinstance(r, RiskScore):
        return settings.topic(RISK_SCORES), customer_key(r.tenant, r.customer_ref)
    if isinstance(r, Alert):
        return settings.topic(ALERTS), r.tenant
    names = {PaymentEvent: PAYMENTS_EVENTS, SagaTransition: RECOVERY_TRANSITIONS}
    topic = names.get(type(r), RECOVERY_COMMANDS)
    return settings.topic(topic), invoice_key(r.tenant, r.invoice_ref)


async def publish(settings: Settings, bootstrap: str, records: Sequence[Published]) -> list[Coords]:
    """Produce the records in order, keyed as the worker keys them (acks=all); where each
    landed."""
    codec = make_codec(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = []
        for r in records:
            topic, key = destination(settings, r)
            value = codec.encode(r, topic=topic)
            sent.append(await producer.send(topic, key=key.encode(), value=value))
        acked = [await future for future in sent]
    finally:
        await producer.stop()
    return [Coords(m.topic, m.partition, m.offset) for m in acked]
