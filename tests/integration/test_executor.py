"""The sandbox executor on real Kafka + Postgres: due times, idempotency, DLQ, restarts."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.db import create_pool
from paywatch.executor.outcome import outcome_event_id
from paywatch.executor.runner import Executor
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import (
    CommandType,
    DeadLetter,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RecoveryCommand,
    RuleRef,
)
from paywatch.settings import Settings
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process, settings_env

# Soft declines always recover, hard ones never: outcomes are known in advance.
SUCCESS = '{"SOFT": 1, "HARD": 0}'
RULE = RuleRef(id="test-rule", edition="2026-01", source="tests")


def command(
    tenant: str,
    command_id: str,
    *,
    due_at: datetime,
    type_: CommandType = CommandType.RETRY_PAYMENT,
    category: DeclineCategory = DeclineCategory.SOFT,
    invoice: str = "in_1",
) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=command_id,
        type=type_,
        tenant=tenant,
        invoice_ref=invoice,
        due_at=due_at,
        attempt=1,
        channel="email" if type_ is CommandType.NOTIFY_CUSTOMER else None,
        reason="test",
        rule=RULE,
        provider="stripe",
        customer_ref="cus_1",
        amount_minor=4900,
        currency="USD",
        decline_category=category,
    )


async def produce(
    settings: Settings, bootstrap: str, items: list[RecoveryCommand | bytes]
) -> list[TopicPartition]:
    """Append commands (or raw garbage bytes) to recovery.commands in order; their partitions."""
    codec = make_codec(settings)
    topic = settings.topic("recovery.commands")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    written = []
    try:
        for item in items:
            if isinstance(item, bytes):
                key, value = b"garbage", item
            else:
                key = f"{item.tenant}/{item.invoice_ref}".encode()
                value = codec.encode(item, topic=topic)
            meta = await producer.send_and_wait(topic, key=key, value=value)
            written.append(TopicPartition(topic, meta.partition))
    finally:
        await producer.stop()
    return written


async def outcomes(settings: Settings, bootstrap: str) -> list[tuple[PaymentEvent, Any]]:
    """Every (event, record) in the test's payments.events."""
    codec, topic = make_codec(settings), settings.topic("payments.events")
    return [
        (codec.decode(r.value, PaymentEvent, topic=topic), r)
        for r in await topic_records(bootstrap, topic)
    ]


async def all_committed(
    settings: Settings, bootstrap: str, held: dict[TopicPartition, int] | None = None
) -> bool:
    """True when the executor's group committed recovery.commands to its end (or to `held`)."""
    topic = settings.topic("recovery.commands")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{settings.app_id}-executor",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        want = {**await consumer.end_offsets(tps), **(held or {})}
        return all([(await consumer.committed(tp) or 0) == want[tp] for tp in tps])
    finally:
        await consumer.stop()


@contextmanager
def executor_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`paywatch run executor` as a user runs it, with the test's simulator table."""
    env = settings_env(settings)
    env.update(PAYWATCH_SIMULATOR_SEED="5", PAYWATCH_SIMULATOR_SUCCESS=SUCCESS)
    with paywatch_process(settings, "run", "executor", log=log, env=env) as proc:
        yield proc


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, min_size=1, max_size=3)
    yield p
    await p.close()


async def journal(pool: asyncpg.Pool, tenant: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM executed_commands WHERE tenant = $1", tenant)
    return {r["command_id"]: r for r in rows}


async def test_executor_process_executes_each_command_once_and_never_early(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    soft = command(unique, "r-soft", due_at=now - timedelta(minutes=5))
    hard = command(unique, "r-hard", due_at=now, category=DeclineCategory.HARD, invoice="in_2")
    future = command(unique, "r-future", due_at=now + timedelta(seconds=8), invoice="in_3")
    notify = command(unique, "n-1", due_at=now, type_=CommandType.NOTIFY_CUSTOMER)
    await produce(test_settings, kafka_bootstrap, [future, soft, hard, notify, soft, b"not avro"])
    log = tmp_path / "executor.log"

    with executor_process(test_settings, log) as proc:

        async def settled() -> list[tuple[PaymentEvent, Any]] | None:
            assert proc.poll() is None, log_tail(log)
            found = await outcomes(test_settings, kafka_bootstrap)
            done = len(found) >= 3 and await all_committed(test_settings, kafka_bootstrap)
            return found if done else None

        found = await eventually(settled, what="three outcomes and every offset committed")
        rows = await journal(pool, unique)

    ids = Counter(e.raw.provider_event_id for e, _ in found if e.raw)
    assert ids == {"r-soft": 1, "r-hard": 1, "r-future": 1}  # the duplicate made no second
    events = {e.raw.provider_event_id: (e, r) for e, r in found if e.raw}
    assert events["r-soft"][0].type is EventType.PAYMENT_SUCCEEDED
    assert events["r-hard"][0].type is EventType.PAYMENT_FAILED
    for cmd in (soft, hard, future):
        event = events[cmd.command_id][0]
        assert event.paywatch_retry and event.event_id == outcome_event_id(cmd)
    # Never early: appended (record timestamp) and journaled at or after due_at.
    assert events["r-future"][1].timestamp >= int(future.due_at.timestamp() * 1000)
    assert rows["r-future"]["executed_at"] >= future.due_at
    assert set(rows) == {"r-soft", "r-hard", "r-future", "n-1"}
    assert (rows["n-1"]["type"], rows["n-1"]["outcome"]) == ("NOTIFY_CUSTOMER", "recorded")
    assert rows["n-1"]["detail"]["channel"] == "email"
    assert (rows["r-soft"]["outcome"], rows["r-hard"]["outcome"]) == ("succeeded", "failed")

    dlq_topic = test_settings.topic("recovery.commands.dlq")
    [dead] = await topic_records(kafka_bootstrap, dlq_topic)
    letter = make_codec(test_settings).decode(dead.value, DeadLetter, topic=dlq_topic)
    assert (letter.stage, letter.payload, letter.key) == ("decode", b"not avro", b"garbage")
    assert letter.source_topic == test_settings.topic("recovery.commands")
    assert proc.returncode == 0, log_tail(log)  # SIGTERM: a clean stop


async def test_restart_skips_handled_commands_and_never_waits_behind_a_later_one(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    # `later` (due in an hour) sits before `a1` on the same partition: a1 must not wait
    # for it, and the partition's committed offset must stay at `later` meanwhile.
    later = command(unique, "later", due_at=now + timedelta(hours=1))
    a1, a2 = (command(unique, f"a{i}", due_at=now, invoice=f"in_{i}") for i in (1, 2))
    parts = await produce(test_settings, kafka_bootstrap, [later, a1, a2])
    held = {parts[0]: 0}  # `later` is the first record of its partition
    log = tmp_path / "executor.log"

    async def handled(expected: set[str]) -> set[str] | None:
        events = await outcomes(test_settings, kafka_bootstrap)
        found = {e.raw.provider_event_id for e, _ in events if e.raw}
        if found != expected:
            return None
        return found if await all_committed(test_settings, kafka_bootstrap, held) else None

    with executor_process(test_settings, log) as proc:
        await eventually(lambda: handled({"a1", "a2"}), what="a1, a2 executed, offsets committed")
    assert proc.returncode == 0, log_tail(log)

    # Stopped; more commands arrive, one a duplicate of a1. The restart reads a1 and a2
    # again (the watermark is held at `later`): the journal skips them.
    b1 = command(unique, "b1", due_at=now, invoice="in_4")
    await produce(test_settings, kafka_bootstrap, [b1, a1])
    with executor_process(test_settings, log) as proc:
        await eventually(lambda: handled({"a1", "a2", "b1"}), what="b1 executed after restart")
    assert proc.returncode == 0, log_tail(log)

    found = await outcomes(test_settings, kafka_bootstrap)
    ids = Counter(e.raw.provider_event_id for e, _ in found if e.raw)
    assert ids == {"a1": 1, "a2": 1, "b1": 1}
    assert set(await journal(pool, unique)) == {"a1", "a2", "b1"}
    assert "duplicate RETRY_PAYMENT command a1" in log.read_text()


async def test_replay_without_the_journal_appends_identical_events(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    # The worst crash: every outcome appended, nothing journaled, nothing committed.
    # Re-executing everything must give the same events (ids and contents).
    now = datetime.now(UTC)
    categories = list(DeclineCategory)
    commands = [
        command(
            unique,
            f"c{i}",
            due_at=now - timedelta(days=20 - i),  # a few per invoice, days apart
            category=categories[i % len(categories)],
            invoice=f"in_{i % 4}",
        )
        for i in range(20)
    ]
    await produce(test_settings, kafka_bootstrap, list(commands))
    config = SimulatorConfig.parse(3, "")  # the default, probabilistic table

    async def run_until(settings: Settings, count: int) -> list[tuple[PaymentEvent, Any]]:
        executor = Executor(settings, kafka_bootstrap, pool, make_codec(settings), config)
        task = asyncio.create_task(executor.run())

        async def appended() -> list[tuple[PaymentEvent, Any]] | None:
            if task.done():
                task.result()  # surface a crash instead of waiting for the deadline
            found = await outcomes(test_settings, kafka_bootstrap)
            return found if len(found) >= count else None

        try:
            return await eventually(appended, what=f"{count} outcomes")
        finally:
            executor.stop()
            await asyncio.wait_for(task, 30)

    first = await run_until(test_settings, 20)
    first_rows = await journal(pool, unique)
    await pool.execute("DELETE FROM executed_commands WHERE tenant = $1", unique)
    replay = test_settings.model_copy(update={"app_id": f"{test_settings.app_id}-replay"})
    both = await run_until(replay, 40)

    copies: dict[str, list[PaymentEvent]] = {}
    for event, _ in both:
        copies.setdefault(event.event_id, []).append(event)
    assert set(copies) == {outcome_event_id(c) for c in commands}
    assert all(len(pair) == 2 and pair[0] == pair[1] for pair in copies.values())
    assert {e.type for e, _ in first} == {EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_FAILED}
    again = await journal(pool, unique)
    assert set(again) == set(first_rows)
    for key, row in again.items():
        assert row["outcome"] == first_rows[key]["outcome"]
        assert row["detail"]["day"] == first_rows[key]["detail"]["day"]
