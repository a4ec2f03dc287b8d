"""The batched executor on real Kafka + Postgres: poison alone in the DLQ, transient
failures retried, kill -9 mid-stream without a lost or doubled effect."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from paywatch.db import create_pool
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
)
from paywatch.settings import Settings
from tests.integration.test_executor import (
    SUCCESS,
    all_committed,
    command,
    executor_process,
    journal,
    outcomes,
)
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail

Coordinates = tuple[int, int]


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, min_size=1, max_size=3)
    yield p
    await p.close()


async def append(
    settings: Settings, bootstrap: str, items: list[RecoveryCommand | bytes]
) -> list[Coordinates]:
    """Append commands (or garbage bytes), all acked together; their (partition, offset)."""
    codec, topic = make_codec(settings), settings.topic("recovery.commands")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = []
        for item in items:
            if isinstance(item, bytes):
                key, value = b"garbage", item
            else:
                key, value = f"{item.tenant}/{item.invoice_ref}".encode(), codec.encode(item, topic)
            futures.append(await producer.send(topic, value, key))
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def letters(settings: Settings, bootstrap: str) -> list[DeadLetter]:
    codec, topic = make_codec(settings), settings.topic("recovery.commands.dlq")
    return [codec.decode(r.value, DeadLetter, topic) for r in await topic_records(bootstrap, topic)]


def retries(count: int, unique: str, *, prefix: str = "c") -> list[RecoveryCommand]:
    now = datetime.now(UTC)
    return [
        command(unique, f"{prefix}{i}", due_at=now, invoice=f"in_{i % 37}") for i in range(count)
    ]


class Running:
    """An in-process executor task; stopped (and its error surfaced) on exit."""

    def __init__(self, settings: Settings, bootstrap: str, pool: asyncpg.Pool) -> None:
        config = SimulatorConfig.parse(5, SUCCESS)
        self.executor = Executor(settings, bootstrap, pool, make_codec(settings), config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.executor.run())
        return self

    def alive(self) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # surface the crash
            raise AssertionError("the executor stopped by itself")

    async def __aexit__(self, *exc: object) -> None:
        self.executor.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def test_poison_commands_go_alone_to_the_dlq_and_the_executor_goes_on(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    # A trigger refuses one command's journal row (a value Postgres rejects for good);
    # another record is not a command at all. Both sit among good commands that the
    # executor reads in the same batch.
    await pool.execute(
        f"""CREATE FUNCTION {unique}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.tenant = '{unique}' AND NEW.command_id = 'poison' THEN
            RAISE EXCEPTION 'test trigger refuses %', NEW.command_id;
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER {unique}_refuse BEFORE INSERT ON executed_commands
          FOR EACH ROW EXECUTE FUNCTION {unique}_refuse();"""
    )
    good = retries(40, unique)
    notices = [
        command(unique, f"n{i}", due_at=datetime.now(UTC), type_=CommandType.NOTIFY_CUSTOMER)
        for i in range(5)
    ]
    poison = command(unique, "poison", due_at=datetime.now(UTC), invoice="in_poison")
    items: list[RecoveryCommand | bytes] = [
        *good[:20],
        b"\x00not avro",
        poison,
        *notices,
        *good[20:],
    ]
    at = await append(test_settings, kafka_bootstrap, items)
    try:
        async with Running(test_settings, kafka_bootstrap, pool) as running:

            async def settled() -> list[DeadLetter] | None:
                running.alive()
                found = await letters(test_settings, kafka_bootstrap)
                rows = await journal(pool, unique)
                done = len(found) == 2 and len(rows) == 45
                return (
                    found if done and await all_committed(test_settings, kafka_bootstrap) else None
                )

            dead = await eventually(settled, what="45 journaled, 2 dead letters, all committed")
            # Still running: a command appended afterwards is executed too.
            [late] = retries(1, unique, prefix="late")
            await append(test_settings, kafka_bootstrap, [late])

            async def late_done() -> bool:
                running.alive()
                return "late0" in await journal(pool, unique)

            await eventually(late_done, what="a command after the poison executed")
    finally:
        await pool.execute(
            f"DROP TRIGGER {unique}_refuse ON executed_commands; DROP FUNCTION {unique}_refuse()"
        )

    rows = await journal(pool, unique)
    assert set(rows) == {c.command_id for c in [*good, *notices, late]}
    events = await outcomes(test_settings, kafka_bootstrap)
    ids = Counter(e.raw.provider_event_id for e, _ in events if e.raw)
    assert ids == Counter({c.command_id: 1 for c in [*good, late]})  # none for the poison
    topic = test_settings.topic("recovery.commands")
    by_stage = {d.stage: d for d in dead}
    assert set(by_stage) == {"decode", "journal"}
    undecodable, refused = by_stage["decode"], by_stage["journal"]
    assert (undecodable.source_partition, undecodable.source_offset) == at[20]
    assert (refused.source_partition, refused.source_offset) == at[21]
    assert {undecodable.source_topic, refused.source_topic} == {topic}
    assert undecodable.payload == b"\x00not avro" and undecodable.error.startswith("CodecError")
    assert "RaiseError: test trigger refuses poison" in refused.error
    back = make_codec(test_settings).decode(refused.payload, RecoveryCommand, topic)
    assert (back.tenant, back.command_id) == (unique, "poison")


async def test_an_unavailable_database_is_retried_never_dead_lettered(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    # The first three journal writes of this tenant fail as a serialization failure
    # (SQLSTATE 40001, transient); a sequence counts the attempts across rollbacks.
    await pool.execute(
        f"""CREATE SEQUENCE {unique}_attempts;
        CREATE FUNCTION {unique}_flaky() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.tenant = '{unique}' AND nextval('{unique}_attempts') <= 3 THEN
            RAISE EXCEPTION 'test: try again' USING ERRCODE = '40001';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER {unique}_flaky BEFORE INSERT ON executed_commands
          FOR EACH ROW EXECUTE FUNCTION {unique}_flaky();"""
    )
    good = retries(30, unique)
    before = REGISTRY.get_sample_value("paywatch_executor_transient_retries_total") or 0.0
    await append(test_settings, kafka_bootstrap, list(good))
    try:
        async with Running(test_settings, kafka_bootstrap, pool) as running:

            async def settled() -> bool:
                running.alive()
                rows = await journal(pool, unique)
                return len(rows) == 30 and await all_committed(test_settings, kafka_bootstrap)

            await eventually(settled, what="30 journaled after the retries, all committed")
    finally:
        await pool.execute(
            f"DROP TRIGGER {unique}_flaky ON executed_commands; DROP FUNCTION {unique}_flaky();"
            f" DROP SEQUENCE {unique}_attempts"
        )
    after = REGISTRY.get_sample_value("paywatch_executor_transient_retries_total") or 0.0
    assert after - before >= 3
    assert await letters(test_settings, kafka_bootstrap) == []
    ids = Counter(
        e.raw.provider_event_id for e, _ in await outcomes(test_settings, kafka_bootstrap) if e.raw
    )
    assert set(ids) == {c.command_id for c in good}


async def test_kill_9_mid_stream_loses_nothing_and_executes_each_command_once(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    # 3,000 commands arrive at ~300/s while the executor process is killed with SIGKILL
    # three times: at 1/3 of the journal, right after a restart (before it joined the
    # group) and at 2/3. Half are soft declines (always recover), half hard (never).
    total = 3000
    now = datetime.now(UTC)
    commands = [
        command(unique, f"k{i}", due_at=now, invoice=f"in_{i % 101}",
                category=DeclineCategory.SOFT if i % 2 else DeclineCategory.HARD)
        for i in range(total)
    ]  # fmt: skip

    async def feed() -> None:
        for start in range(0, total, 60):
            await append(test_settings, kafka_bootstrap, list(commands[start : start + 60]))
            await asyncio.sleep(0.2)  # pacing of the stream, not a wait for a condition

    log = tmp_path / "executor.log"
    feeder = asyncio.create_task(feed())
    kills = 0

    async def journaled(at_least: int, proc: subprocess.Popen[bytes]) -> int | None:
        assert proc.poll() is None, log_tail(log)
        count = int(
            await pool.fetchval("SELECT count(*) FROM executed_commands WHERE tenant = $1", unique)
        )
        return count if count >= at_least else None

    def kill(proc: subprocess.Popen[bytes]) -> None:
        nonlocal kills
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        kills += 1

    with executor_process(test_settings, log) as proc:
        await eventually(lambda: journaled(total // 3, proc), timeout=120, what="a third journaled")
        kill(proc)
    with executor_process(test_settings, log) as proc:

        async def subscribed() -> bool:
            assert proc.poll() is None, log_tail(log)
            return log.read_text().count("executor consuming") == 2

        await eventually(subscribed, what="the restarted process subscribed")
        # The group waits for the killed member's session to expire: not joined yet.
        assert log.read_text().count("executor assigned") == 1
        kill(proc)
    with executor_process(test_settings, log) as proc:
        await eventually(lambda: journaled(2 * total // 3, proc), timeout=120, what="2/3 journaled")
        kill(proc)
    await feeder
    with executor_process(test_settings, log) as proc:

        async def finished() -> bool:
            count = await journaled(total, proc)
            return count is not None and await all_committed(test_settings, kafka_bootstrap)

        await eventually(finished, timeout=180, what="every command journaled and committed")
    assert kills == 3

    rows = await journal(pool, unique)
    assert set(rows) == {c.command_id for c in commands}
    copies: dict[str, list[PaymentEvent]] = defaultdict(list)
    for event, _ in await outcomes(test_settings, kafka_bootstrap):
        assert event.raw is not None
        copies[event.raw.provider_event_id].append(event)
    # Every command has its outcome; a copy appended again after a kill between the
    # broker ack and the journal commit is the very same event (downstream dedupes it
    # by event id), so the effect is once per command.
    assert set(copies) == set(rows)
    for command_id, events in copies.items():
        assert all(e == events[0] for e in events), command_id
        expected = (
            EventType.PAYMENT_SUCCEEDED
            if rows[command_id]["outcome"] == "succeeded"
            else EventType.PAYMENT_FAILED
        )
        assert events[0].type is expected
    repeated = sum(len(e) - 1 for e in copies.values())
    print(
        f"kill -9 x{kills}: {total} commands, {repeated} outcome records appended twice (identical)"
    )
    assert await letters(test_settings, kafka_bootstrap) == []
