"""The outbound producer on real Kafka + Postgres: one delivery per endpoint and event, never
twice (a replay of the whole log included), poison skipped or dead-lettered alone, Postgres
waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.db import create_pool, migrate
from paywatch.kafka.codec import make_codec
from paywatch.outbound.endpoints import TargetPolicy, add_endpoint
from paywatch.outbound.events import EVENT_TYPES
from paywatch.outbound.mapping import InvoiceFacts, to_event
from paywatch.outbound.producer import OutboundProducer
from paywatch.schemas.models import (
    Alert,
    AlertStatus,
    AlertWindow,
    CommandType,
    DeadLetter,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
    Severity,
)
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant
from tests.kafka_helpers import Published, eventually, publish, topic_records

NOW = datetime.now(UTC).replace(microsecond=0)
RULE = RuleRef(id="visa.cat2", edition="2024-04", source="Visa reattempt rules")
TOPICS = ("recovery.transitions", "recovery.commands", "alerts")
OPEN = TargetPolicy(require_https=False, refuse_private=False)


def transition(tenant: str, invoice: str, frm: SagaState, to: SagaState) -> SagaTransition:
    return SagaTransition(
        tenant=tenant, invoice_ref=invoice, from_state=frm, to_state=to,
        cause_event_id=f"evt-{invoice}-{to}", at=NOW, rule=RULE, reason="test",
    )  # fmt: skip


def command(tenant: str, invoice: str, kind: CommandType, n: int = 1) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"{invoice}-{kind}-{n}", type=kind, tenant=tenant, invoice_ref=invoice,
        due_at=NOW, attempt=n, reason="test", rule=RULE, provider="stripe",
        customer_ref="cus_1", amount_minor=4900, currency="USD", issued_at=NOW,
        channel="email" if kind is CommandType.NOTIFY_CUSTOMER else None,
    )  # fmt: skip


def alert(tenant: str, status: AlertStatus, minutes: int = 0) -> Alert:
    end = NOW + timedelta(minutes=minutes)
    return Alert(
        tenant=tenant, kind="PROVIDER_FAILURE_SPIKE", severity=Severity.WARNING,
        window=AlertWindow(start=NOW - timedelta(minutes=14), end=end), observed=40.0,
        baseline=2.0, alert_id=f"{tenant}/PROVIDER_FAILURE_SPIKE/stripe/1", status=status,
        provider="stripe", opened_at=NOW,
        resolved_at=end if status is AlertStatus.RESOLVED else None,
    )  # fmt: skip


def story(tenant: str) -> list[Published]:
    """Records of every kind: the ones that make events and the ones that must not."""
    return [
        transition(tenant, "in_1", SagaState.failed, SagaState.retrying),  # nothing
        command(tenant, "in_1", CommandType.RETRY_PAYMENT),
        command(tenant, "in_1", CommandType.NOTIFY_CUSTOMER),
        transition(tenant, "in_1", SagaState.retrying, SagaState.recovered),
        transition(tenant, "in_2", SagaState.retrying, SagaState.awaiting_customer),
        transition(tenant, "in_2", SagaState.awaiting_customer, SagaState.awaiting_customer),
        command(tenant, "in_2", CommandType.ESCALATE),
        command(tenant, "in_2", CommandType.CANCEL),  # nothing
        transition(tenant, "in_2", SagaState.awaiting_customer, SagaState.canceled),
        transition(tenant, "in_3", SagaState.retrying, SagaState.exhausted),
        alert(tenant, AlertStatus.OPEN),
        alert(tenant, AlertStatus.OPEN, minutes=2),  # an update: nothing
        alert(tenant, AlertStatus.RESOLVED, minutes=30),
        command(tenant, "in_1", CommandType.RETRY_PAYMENT),  # a redelivered record
    ]


@pytest.fixture
async def small_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def endpoints(
    db: asyncpg.Pool | asyncpg.Connection, tenant: str, subscriptions: Sequence[Sequence[str]]
) -> list[str]:
    """The tenant (created) with one endpoint per subscription list; their ids."""
    box = SecretBox(Settings().secret_key.get_secret_value())
    async with contextlib.AsyncExitStack() as stack:
        conn = (
            db
            if isinstance(db, asyncpg.Connection)
            else await stack.enter_async_context(db.acquire())
        )
        await create_tenant(conn, tenant)
        made = [
            await add_endpoint(conn, box, tenant, f"http://127.0.0.1:9/{n}", events, policy=OPEN)
            for n, events in enumerate(subscriptions)
        ]
    return [m.endpoint.endpoint_id for m in made]


async def garbage(bootstrap: str, settings: Settings) -> None:
    """One record of each source topic that is not Avro at all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic in TOPICS:
            await producer.send_and_wait(settings.topic(topic), b"not avro", key=b"poison")
    finally:
        await producer.stop()


async def rows(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT endpoint_id, event_id, event_type, body FROM deliveries WHERE tenant = $1", tenant
    )


def group(settings: Settings) -> str:
    return f"{settings.topic_prefix}paywatch-outbound"


async def _partitions(settings: Settings) -> list[TopicPartition]:
    return [
        TopicPartition(settings.topic(t), p)
        for t in TOPICS
        for p in range(settings.topic_partitions)
    ]


async def committed_to_end(settings: Settings, bootstrap: str) -> bool:
    """True when the producer's group committed every source partition to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await _partitions(settings)
        ends = await consumer.end_offsets(tps)
        return all([(await consumer.committed(tp) or 0) == ends[tp] for tp in tps])
    finally:
        await consumer.stop()


async def rewind(settings: Settings, bootstrap: str) -> None:
    """Commit offset 0 everywhere for the (idle) group: the next run replays the whole log."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await _partitions(settings)
        consumer.assign(tps)
        await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()


async def letters(settings: Settings, bootstrap: str) -> list[DeadLetter]:
    codec, found = make_codec(settings), []
    topic = settings.topic("outbound.dlq")
    found += [
        codec.decode(r.value, DeadLetter, topic=topic)
        for r in await topic_records(bootstrap, topic)
    ]
    return found


@contextlib.asynccontextmanager
async def running(
    settings: Settings, bootstrap: str, pool: asyncpg.Pool
) -> AsyncIterator[OutboundProducer]:
    """The producer in this process until the block ends (stopped, then awaited)."""
    producer = OutboundProducer(settings, bootstrap, pool, make_codec(settings))
    task = asyncio.create_task(producer.run())
    try:
        yield producer
    finally:
        producer.stop()
        await asyncio.wait_for(task, 60)


async def settled(
    settings: Settings, bootstrap: str, pool: asyncpg.Pool, tenant: str, want: int
) -> list[Any] | None:
    found = await rows(pool, tenant)
    if len(found) >= want and await committed_to_end(settings, bootstrap):
        return found
    return None


async def test_each_endpoint_gets_each_event_once_and_undecodable_records_are_skipped(
    test_settings: Settings, kafka_bootstrap: str, small_pool: asyncpg.Pool, unique: str
) -> None:
    every, some = await endpoints(
        small_pool,
        unique,
        [EVENT_TYPES, ["invoice.recovered", "recovery.escalated", "alert.opened"]],
    )
    others = await endpoints(small_pool, f"{unique}x", [EVENT_TYPES])  # another tenant's
    records = story(unique)
    # What the invoices read model knows of in_1 fills the transitions' amount.
    await small_pool.execute(
        "INSERT INTO invoices (tenant, invoice_ref, provider, customer_ref, status, amount_minor,"
        " currency, last_event_at, last_event_id) VALUES ($1, 'in_1', 'stripe', 'cus_1',"
        " 'recovered', 4900, 'USD', now(), gen_random_uuid())",
        unique,
    )
    await publish(test_settings, kafka_bootstrap, records[:7])
    await garbage(kafka_bootstrap, test_settings)
    await publish(test_settings, kafka_bootstrap, records[7:])
    expected = {e.id: e for r in records if (e := to_event(r)) is not None}
    assert sorted(e.type for e in expected.values()) == sorted(EVENT_TYPES)  # nine, each once
    want = len(expected) + 3  # `every` gets all nine, `some` three

    async with running(test_settings, kafka_bootstrap, small_pool):
        found = await eventually(
            lambda: settled(test_settings, kafka_bootstrap, small_pool, unique, want),
            timeout=120, what="every delivery and every offset committed",
        )  # fmt: skip

    by_endpoint: dict[str, dict[str, Any]] = {every: {}, some: {}}
    for row in found:
        assert row["event_id"] not in by_endpoint[row["endpoint_id"]], row  # never twice
        by_endpoint[row["endpoint_id"]][row["event_id"]] = row
    assert set(by_endpoint[every]) == set(expected)
    assert {r["event_type"] for r in by_endpoint[some].values()} == {
        "invoice.recovered", "recovery.escalated", "alert.opened"
    }  # fmt: skip
    for event_id, row in by_endpoint[every].items():
        body, event = row["body"], expected[event_id]
        assert (body["id"], body["type"], body["tenant"]) == (event_id, event.type, unique)
        assert row["event_type"] == event.type
    recovered = next(r["body"] for r in found if r["event_type"] == "invoice.recovered")
    assert (recovered["data"]["amount_minor"], recovered["data"]["currency"]) == (4900, "USD")
    facts = InvoiceFacts("recovered", "stripe", "cus_1", 4900, "USD")
    made = to_event(records[3], facts)
    assert made is not None and recovered == made.envelope()
    assert not await rows(small_pool, f"{unique}x"), others  # nothing crossed tenants

    # Undecodable records are skipped: the stages owning their topics dead-letter them.
    assert not await letters(test_settings, kafka_bootstrap)

    # A restart that re-reads the whole log (offsets lost) makes no second delivery.
    await rewind(test_settings, kafka_bootstrap)
    late = command(unique, "in_4", CommandType.RETRY_PAYMENT)
    await publish(test_settings, kafka_bootstrap, [late])
    async with running(test_settings, kafka_bootstrap, small_pool):
        again = await eventually(
            lambda: settled(test_settings, kafka_bootstrap, small_pool, unique, want + 1),
            timeout=120, what="the replay read to the end",
        )  # fmt: skip
    assert len(again) == want + 1
    new = {r["event_id"] for r in again} - {r["event_id"] for r in found}
    assert new == {e.id for e in [to_event(late)] if e}


@pytest.fixture
async def refusing_trigger(small_pool: asyncpg.Pool, unique: str) -> AsyncIterator[str]:
    """A trigger on deliveries that refuses (SQLSTATE P0001) this tenant's invoice in_bad."""
    name = f"refuse_{unique}"
    await small_pool.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.tenant = '{unique}' AND NEW.body->'data'->>'invoice_ref' = 'in_bad' THEN"
        " RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$"
    )
    await small_pool.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION {name}()"
    )
    yield name
    await small_pool.execute(f"DROP TRIGGER {name} ON deliveries")
    await small_pool.execute(f"DROP FUNCTION {name}()")


async def test_a_record_postgres_refuses_is_dead_lettered_and_its_batch_delivered(
    test_settings: Settings, kafka_bootstrap: str, small_pool: asyncpg.Pool, unique: str,
    refusing_trigger: str,
) -> None:  # fmt: skip
    await endpoints(small_pool, unique, [EVENT_TYPES])
    good = [command(unique, f"in_{n}", CommandType.RETRY_PAYMENT) for n in range(4)]
    bad = command(unique, "in_bad", CommandType.RETRY_PAYMENT)
    await publish(test_settings, kafka_bootstrap, [*good[:2], bad, *good[2:]])

    async with running(test_settings, kafka_bootstrap, small_pool):
        found = await eventually(
            lambda: settled(test_settings, kafka_bootstrap, small_pool, unique, len(good)),
            timeout=120, what="the good records delivered and every offset committed",
        )  # fmt: skip
    assert sorted(r["body"]["data"]["invoice_ref"] for r in found) == [f"in_{n}" for n in range(4)]
    [dead] = await letters(test_settings, kafka_bootstrap)
    assert dead.stage == "outbound-enqueue" and "refused by the test trigger" in dead.error
    assert make_codec(test_settings).decode(dead.payload, RecoveryCommand) == bad


async def test_postgres_unavailable_is_waited_out_with_nothing_committed_or_dead_lettered(
    test_settings: Settings, kafka_bootstrap: str, scratch_db: str, unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # A database without paywatch's tables stands for one that cannot take the batch yet:
    # every transaction fails (undefined table), which is the infrastructure's fault.
    pool = await create_pool(scratch_db, min_size=1, max_size=2)
    try:
        records = [
            command(unique, "in_1", CommandType.RETRY_PAYMENT),
            alert(unique, AlertStatus.OPEN),
        ]
        await publish(test_settings, kafka_bootstrap, records)
        async with running(test_settings, kafka_bootstrap, pool):

            async def retried() -> bool:
                return "Kafka/Postgres unavailable" in caplog.text

            await eventually(retried, timeout=60, what="the first batch failed and retried")
            assert not await _any_committed(test_settings, kafka_bootstrap)
            assert not await letters(test_settings, kafka_bootstrap)
            # Postgres "comes back": tables, tenant and endpoint appear in one transaction.
            async with pool.acquire() as conn, conn.transaction():
                await migrate(conn)
                await endpoints(conn, unique, [EVENT_TYPES])
            found = await eventually(
                lambda: settled(test_settings, kafka_bootstrap, pool, unique, 2),
                timeout=120, what="the batch delivered once the database took it",
            )  # fmt: skip
        assert {r["event_type"] for r in found} == {"recovery.retry_due", "alert.opened"}
        assert not await letters(test_settings, kafka_bootstrap)
    finally:
        await pool.close()


async def _any_committed(settings: Settings, bootstrap: str) -> bool:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        return any([await consumer.committed(tp) for tp in await _partitions(settings)])
    finally:
        await consumer.stop()
