"""The two loops bench_executor.py measures the batched executor against, same I/O.

* ``one_at_a_time``: the executor as it was before the engine issue (``git show
  0909124^:paywatch/executor/runner.py``), without its due-time schedule (every bench
  command is due): per command one EXISTS query, one min(due_at) query when the command
  does not carry its first failure, ``send_and_wait`` of the outcome, one INSERT; the
  offsets committed after each poll.
* ``plain_batches``: a hand-written loop with the least work the executor's effects need:
  poll 500, decode, simulate and encode each outcome, send all, await the acks once, one
  multi-row INSERT (no transaction, no lookups, no dedupe, no logging), commit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.executor.decide import Coords, command_detail
from paywatch.executor.journal import INSERT
from paywatch.executor.outcome import outcome_event
from paywatch.executor.simulator import SimulatorConfig, simulate, simulated_days
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import CommandType, PaymentEvent, RecoveryCommand
from paywatch.schemas.topics import invoice_key

EXISTS = "SELECT EXISTS (SELECT 1 FROM executed_commands WHERE tenant = $1 AND command_id = $2)"
FIRST_DUE = "SELECT min(due_at) FROM executed_commands WHERE tenant = $1 AND invoice_ref = $2"
INSERT_ONE = (
    "INSERT INTO executed_commands"
    " (tenant, command_id, type, invoice_ref, due_at, executed_at, outcome, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) ON CONFLICT (tenant, command_id) DO NOTHING"
)

Loop = Callable[[AIOKafkaConsumer, AIOKafkaProducer, asyncpg.Pool, "Env"], Any]


class Env:
    """What the loops share: codec, topics, simulator table, stop flag."""

    def __init__(self, codec: Codec, commands: str, events: str, config: SimulatorConfig) -> None:
        self.codec, self.commands, self.events, self.config = codec, commands, events, config
        self.stopping = asyncio.Event()


def _outcome(
    env: Env, c: RecoveryCommand, rec: Any, anchor: datetime | None
) -> tuple[PaymentEvent, int, Any]:
    start = c.first_failed_at or anchor
    start = c.due_at if start is None else min(start, c.due_at)
    day = simulated_days(start, c.due_at, 1.0)
    verdict = simulate(c, env.config, day)
    event = outcome_event(c, verdict, topic=rec.topic, partition=rec.partition, offset=rec.offset)
    return event, day, verdict


async def one_at_a_time(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, pool: asyncpg.Pool, env: Env
) -> None:
    """The previous executor's I/O, command by command."""
    while not env.stopping.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=500)
        for records in batches.values():
            for rec in records:
                c = env.codec.decode(rec.value, RecoveryCommand, env.commands)
                async with pool.acquire() as conn:
                    if await conn.fetchval(EXISTS, c.tenant, c.command_id):
                        continue
                    detail = command_detail(c, Coords(rec.topic, rec.partition, rec.offset))
                    outcome = "recorded"
                    if c.type is CommandType.RETRY_PAYMENT:
                        anchor = c.first_failed_at or await conn.fetchval(
                            FIRST_DUE, c.tenant, c.invoice_ref
                        )
                        event, day, verdict = _outcome(env, c, rec, anchor)
                        value = env.codec.encode(event, env.events)
                        key = invoice_key(c.tenant, c.invoice_ref).encode()
                        await producer.send_and_wait(env.events, value, key)
                        detail |= {
                            "event_id": event.event_id,
                            "day": day,
                            "probability": verdict.probability,
                        }
                        outcome = "succeeded" if verdict.succeeded else "failed"
                    await conn.execute(
                        INSERT_ONE,
                        c.tenant,
                        c.command_id,
                        c.type.value,
                        c.invoice_ref,
                        c.due_at,
                        datetime.now(UTC),
                        outcome,
                        json.dumps(detail),
                    )
        await _commit(consumer, batches)


async def plain_batches(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, pool: asyncpg.Pool, env: Env
) -> None:
    """Poll, decide, send all, one ack wait, one INSERT, commit."""
    while not env.stopping.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=500)
        futures, columns = [], [[] for _ in range(8)]  # type: ignore[var-annotated]
        now = datetime.now(UTC)
        for records in batches.values():
            for rec in records:
                c = env.codec.decode(rec.value, RecoveryCommand, env.commands)
                outcome, detail = "recorded", {"source": rec.offset}
                if c.type is CommandType.RETRY_PAYMENT:
                    event, day, verdict = _outcome(env, c, rec, None)
                    value = env.codec.encode(event, env.events)
                    futures.append(
                        await producer.send(
                            env.events, value, invoice_key(c.tenant, c.invoice_ref).encode()
                        )
                    )
                    outcome, detail = ("succeeded" if verdict.succeeded else "failed"), {"day": day}
                row = (
                    c.tenant,
                    c.command_id,
                    c.type.value,
                    c.invoice_ref,
                    c.due_at,
                    now,
                    outcome,
                    json.dumps(detail),
                )
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
        await asyncio.gather(*futures)
        if columns[0]:
            await pool.execute(INSERT, *columns)
        await _commit(consumer, batches)


async def _commit(consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
    if offsets:
        await consumer.commit(offsets)
