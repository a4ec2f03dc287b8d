"""The projector on real Kafka + Postgres: batches, checkpoints, restarts, poison records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.projections.runner import PROJECTION, Projector
from paywatch.providers.base import event_id
from paywatch.schemas.models import Decline, DeclineCategory, EventType, PaymentEvent
from paywatch.settings import Settings
from paywatch.streams.normalize import event_key
from tests.kafka_helpers import eventually, topic_records

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def event(
    tenant: str,
    n: int,
    invoice: str,
    type_: EventType = EventType.PAYMENT_FAILED,
    minutes: int = 0,
    attempt: int = 1,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id(tenant, "stripe", f"evt_{n}"),
        type=type_,
        tenant=tenant,
        provider="stripe",
        source_type="test",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref="cus_p",
        invoice_ref=invoice,
        amount_minor=1000 + n,
        currency="USD",
        attempt=attempt,
        decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT)
        if type_ is EventType.PAYMENT_FAILED
        else None,
    )


async def publish(settings: Settings, bootstrap: str, events: list[PaymentEvent]) -> None:
    codec = make_codec(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        topic = settings.topic("payments.events")
        for e in events:
            await producer.send(topic, key=event_key(e), value=codec.encode(e, topic=topic))
        await producer.flush()
    finally:
        await producer.stop()


class Running:
    """A projector task that can be stopped and restarted within a test."""

    def __init__(self, settings: Settings, bootstrap: str, pool: asyncpg.Pool) -> None:
        self.projector = Projector(settings, bootstrap, pool, make_codec(settings))
        self.task = asyncio.create_task(self.projector.run())
        RUNNING[:] = [self]

    def check(self) -> None:
        """Surface a crash of the projector task instead of waiting for a timeout."""
        if self.task.done():
            self.task.result()

    async def stop(self) -> None:
        self.projector.stop()
        await asyncio.wait_for(self.task, 30)


RUNNING: list[Running] = []


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    for run in RUNNING:
        run.check()
    return int(await pool.fetchval(sql, *args))


async def test_projects_batches_and_resumes_from_checkpoint(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    n = 600  # more than one batch of 500
    first = [event(unique, i, f"in_{i % 50}", attempt=1 + i // 50) for i in range(n)]
    await publish(test_settings, kafka_bootstrap, first)
    run = Running(test_settings, kafka_bootstrap, pool)

    async def projected() -> int:
        c = await count(pool, "SELECT count(*) FROM event_log WHERE tenant = $1", unique)
        return c if c == n else 0

    await eventually(projected, what=f"{n} events in event_log")
    await run.stop()
    assert await count(pool, "SELECT count(*) FROM invoices WHERE tenant = $1", unique) == 50
    assert await count(pool, "SELECT count(*) FROM failures WHERE tenant = $1", unique) == n
    assert await count(pool, "SELECT max(attempts) FROM invoices WHERE tenant = $1", unique) == 12

    # Stopped: more events arrive, including recoveries; a new projector resumes after the
    # checkpoint (nothing projected twice) and applies them.
    recoveries = [
        event(unique, n + i, f"in_{i}", EventType.PAYMENT_SUCCEEDED, minutes=5) for i in range(10)
    ]
    await publish(test_settings, kafka_bootstrap, recoveries)
    run = Running(test_settings, kafka_bootstrap, pool)

    async def recovered() -> int:
        return await count(
            pool, "SELECT count(*) FROM invoices WHERE tenant = $1 AND status = 'recovered'", unique
        )

    assert await eventually(recovered, what="10 recovered invoices") == 10
    await run.stop()
    assert await count(pool, "SELECT count(*) FROM event_log WHERE tenant = $1", unique) == n + 10
    assert await count(pool, "SELECT count(*) FROM failures WHERE tenant = $1", unique) == n
    topic = test_settings.topic("payments.events")
    stored = await count(
        pool,
        "SELECT sum(next_offset) FROM projection_checkpoints WHERE projection = $1 AND topic = $2",
        PROJECTION,
        topic,
    )
    assert stored == n + 10  # checkpoint == end offsets: every record accounted once


async def test_checkpoint_lives_in_postgres_not_in_kafka(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    """Rewinding the stored checkpoint replays; the guarded writes make the replay a no-op."""
    await publish(
        test_settings, kafka_bootstrap, [event(unique, 1, "in_a"), event(unique, 2, "in_b")]
    )
    run = Running(test_settings, kafka_bootstrap, pool)

    async def both() -> bool:
        return await count(pool, "SELECT count(*) FROM invoices WHERE tenant = $1", unique) == 2

    await eventually(both, what="2 invoices")
    await run.stop()
    before = await pool.fetch(
        "SELECT * FROM invoices WHERE tenant = $1 ORDER BY invoice_ref", unique
    )
    await pool.execute(
        "UPDATE projection_checkpoints SET next_offset = 0 WHERE topic = $1",
        test_settings.topic("payments.events"),
    )
    await publish(test_settings, kafka_bootstrap, [event(unique, 3, "in_c")])
    run = Running(test_settings, kafka_bootstrap, pool)

    async def three() -> bool:
        return await count(pool, "SELECT count(*) FROM invoices WHERE tenant = $1", unique) == 3

    await eventually(three, what="3 invoices after replay")
    await run.stop()
    after = await pool.fetch(
        "SELECT * FROM invoices WHERE tenant = $1 AND invoice_ref <> 'in_c' ORDER BY invoice_ref",
        unique,
    )
    strip = [{k: v for k, v in dict(r).items() if k != "updated_at"} for r in before]
    assert strip == [{k: v for k, v in dict(r).items() if k != "updated_at"} for r in after]
    assert await count(pool, "SELECT count(*) FROM event_log WHERE tenant = $1", unique) == 3


async def test_poison_record_goes_to_dlq_and_is_checkpointed(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    topic = test_settings.topic("payments.events")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(topic, key=f"{unique}/in_x".encode(), value=b"not avro")
    await producer.stop()
    await publish(test_settings, kafka_bootstrap, [event(unique, 7, "in_x")])
    run = Running(test_settings, kafka_bootstrap, pool)

    async def one() -> bool:
        return await count(pool, "SELECT count(*) FROM invoices WHERE tenant = $1", unique) == 1

    await eventually(one, what="the good event projected past the poison one")
    await run.stop()
    letters = await topic_records(kafka_bootstrap, test_settings.topic("payments.events.dlq"))
    assert len(letters) == 1
    from paywatch.schemas.models import DeadLetter

    letter = make_codec(test_settings).decode(letters[0].value, DeadLetter)
    assert letter.payload == b"not avro" and letter.source_topic == topic
    assert letter.stage == "project"
