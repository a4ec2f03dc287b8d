"""bench_saga's baseline: the saga agent's per-record work in a plain aiokafka loop.

One consumer (group of its own, both source topics, offsets committed every
``COMMIT_S`` like Faust's ``broker_commit_interval``) and one acks=all idempotent
producer. In batches of up to ``BATCH_MAX`` records, as the saga agent takes them: per
record decode with the codec, ``shell.step`` over dict-backed saga and card stores, encode
and send the commands and transitions; then every ack of the batch awaited once, then the
timer index updated. What it leaves out is what Faust adds: table changelogs and local
stores, the stream machinery, acking and its commit bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.recovery.clock import SagaClock
from paywatch.recovery.shell import Entry, read_tick, saga_of, step
from paywatch.recovery.state import SagaInput
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.recovery.timer_index import TimerIndex
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import PaymentEvent

COMMIT_S = 2.8  # Faust's default broker_commit_interval
BATCH_MAX = 500  # the saga agent's batch (streams/saga.py BATCH_MAX)


@dataclass(frozen=True)
class Topics:
    """The topic names the loop reads and writes."""

    events: str
    timers: str
    commands: str
    transitions: str


@dataclass
class PlainSaga:
    """The loop's state: dict tables, the timer index, the clients."""

    codec: Codec
    topics: Topics
    producer: AIOKafkaProducer
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    clock: SagaClock = field(default_factory=SagaClock)
    sagas: dict[str, Entry] = field(default_factory=dict)
    cards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    index: TimerIndex = field(default_factory=TimerIndex)

    def decode(self, msg: Any) -> SagaInput:
        """A payments.events record or a recovery.timers tick."""
        if msg.topic == self.topics.timers:
            return read_tick(msg.value)
        event: PaymentEvent = self.codec.decode(msg.value, PaymentEvent, topic=msg.topic)
        return event

    async def decide(self, msg: Any, futures: list[Any]) -> Callable[[], None]:
        """One decision for one record, its sends queued to ``futures``; what to store once
        they are acked (a batch's later records of a saga see its earlier entries)."""
        event = self.decode(msg)
        key = f"{event.tenant}/{event.invoice_ref}"
        entry = self.sagas.get(key)
        out = step(
            entry,
            event,
            partition=msg.partition,
            wall_now=datetime.now(UTC),
            clock=self.clock,
            policy=self.policy,
            cards=self.cards.get,
        )
        record_key, send = key.encode(), self.producer.send
        commands, transitions = self.topics.commands, self.topics.transitions
        for c in out.commands:
            value = self.codec.encode(c, topic=commands)
            futures.append(await send(commands, value, key=record_key))
        for t in out.transitions:
            value = self.codec.encode(t, topic=transitions)
            futures.append(await send(transitions, value, key=record_key))
        if out.entry is not None and out.entry != entry:
            self.sagas[key] = out.entry
        self.cards.update(out.cards)
        partition, timers = msg.partition, out.timers
        return lambda: self.index.put(key, partition, timers)


async def run(bootstrap: str, codec: Codec, topics: Topics, group: str, expected: int) -> int:
    """Process records until ``expected`` were handled; the number of open sagas left."""
    consumer = AIOKafkaConsumer(
        topics.events,
        topics.timers,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    await consumer.start()
    saga = PlainSaga(codec, topics, producer)
    try:
        await _loop(consumer, saga, expected)
    finally:
        await consumer.stop()
        await producer.stop()
    return sum(1 for e in saga.sagas.values() if _status(e) in OPEN_STATES)


def _status(entry: Entry) -> str | None:
    saga = saga_of(entry)
    return None if saga is None or saga.status is None else saga.status.value


OPEN_STATES = frozenset({"failed", "retrying", "awaiting_customer"})


async def _loop(consumer: AIOKafkaConsumer, saga: PlainSaga, expected: int) -> None:
    """Batches as the agent takes them: decide all, send all, await the acks once, commit."""
    processed, offsets = 0, dict[TopicPartition, int]()
    next_commit = time.monotonic() + COMMIT_S
    while processed < expected:
        batch = await consumer.getmany(timeout_ms=500, max_records=BATCH_MAX)
        futures: list[Any] = []
        after = []
        for tp, messages in batch.items():
            for msg in messages:
                after.append(await saga.decide(msg, futures))
                offsets[tp] = msg.offset + 1
                processed += 1
        await asyncio.gather(*futures)
        for done in after:
            done()
        if time.monotonic() >= next_commit and offsets:
            await consumer.commit(offsets)
            next_commit = time.monotonic() + COMMIT_S
    await consumer.commit(offsets)
