"""The executor process loop: recovery.commands -> sandbox retries and recorded notices.

Each step polls, decodes (undecodable records go to recovery.commands.dlq), schedules
the commands by ``due_at`` (schedule.py), executes those that are due and commits each
partition's low watermark. Effects are at-least-once and idempotent: a RETRY_PAYMENT
appends its deterministic outcome to payments.events (acks=all, idempotent producer),
then the command id is journaled in Postgres; a journaled id is never executed again.
Other command types are journaled, logged and counted (real channels come later).
Kafka or Postgres failures end the process; it resumes from the committed watermarks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from paywatch.errors import CodecError
from paywatch.executor import journal
from paywatch.executor.metrics import COMMANDS, DEAD_LETTERS, PENDING
from paywatch.executor.outcome import outcome_event
from paywatch.executor.schedule import Schedule, Slot
from paywatch.executor.simulator import SimulatorConfig, simulate, simulated_days
from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import CommandType, DeadLetter, RecoveryCommand
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_COMMANDS, dlq_name, invoice_key
from paywatch.settings import Settings

log = logging.getLogger(__name__)

MAX_POLL_MS = 1000
MAX_BATCH = 500
MAX_PENDING = 5000
"""Per partition: above this many fetched-but-not-due commands, fetching pauses."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Received:
    """A decoded command and the record that carried it."""

    command: RecoveryCommand
    record: Any


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._executor.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("executor assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class Executor:
    """Consumes recovery.commands and carries each command out once it is due."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        pool: asyncpg.Pool,
        codec: Codec,
        config: SimulatorConfig,
        clock: Clock = utc_now,
    ) -> None:
        self._settings, self._pool, self._codec = settings, pool, codec
        self._config, self._clock = config, clock
        self._topic = settings.topic(RECOVERY_COMMANDS)
        self._events = settings.topic(PAYMENTS_EVENTS)
        self._dlq = settings.topic(dlq_name(RECOVERY_COMMANDS))
        self._consumer = group_consumer(
            bootstrap, group_id=f"{settings.app_id}-executor", client_id="paywatch-executor"
        )
        self._producer = reliable_producer(bootstrap, client_id="paywatch-executor")
        self._schedule: Schedule[TopicPartition, Received] = Schedule()
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`."""
        await self._producer.start()
        try:
            await self._consumer.start()
            self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
            log.info("executor consuming %s (simulator seed %s)", self._topic, self._config.seed)
            try:
                while not self._stopping.is_set():
                    await self.step()  # each step ends with its commit
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()

    def stop(self) -> None:
        """Ask the loop to finish after the current step."""
        self._stopping.set()

    async def step(self) -> None:
        """Poll once, execute what is due, commit the watermarks."""
        batches = await self._consumer.getmany(timeout_ms=self._poll_ms(), max_records=MAX_BATCH)
        assigned = self._consumer.assignment()
        for tp, records in batches.items():
            if tp in assigned:
                for rec in records:
                    await self._accept(tp, rec)
        for slot in self._schedule.due(self._clock()):
            await self._execute(slot)
        self._flow_control()
        await self._commit()
        PENDING.set(len(self._schedule))

    def _poll_ms(self) -> int:
        due = self._schedule.next_due()
        if due is None:
            return MAX_POLL_MS
        wait_ms = math.ceil((due - self._clock()).total_seconds() * 1000)
        return max(0, min(MAX_POLL_MS, wait_ms))

    async def _accept(self, tp: TopicPartition, rec: Any) -> None:
        try:
            command = self._codec.decode(rec.value or b"", RecoveryCommand, topic=self._topic)
        except CodecError as exc:
            await self._dead_letter(rec, "decode", exc)
            self._schedule.skip(tp, rec.offset)
            return
        self._schedule.add(tp, rec.offset, command.due_at, Received(command, rec))

    async def _execute(self, slot: Slot[TopicPartition, Received]) -> None:
        if not self._schedule.holds(slot.partition, slot.offset):
            return  # its partition was revoked meanwhile: the new owner executes it
        command, rec = slot.item.command, slot.item.record
        async with self._pool.acquire() as conn:
            outcome = await self._carry_out(conn, command, rec)
        COMMANDS.labels(command.type.value, outcome).inc()
        log.info(
            "%s %s command %s (invoice %s/%s, attempt %s, due %s)",
            outcome,
            command.type.value,
            command.command_id,
            command.tenant,
            command.invoice_ref,
            command.attempt,
            command.due_at.isoformat(),
        )
        self._schedule.done(slot.partition, slot.offset)

    async def _carry_out(self, conn: asyncpg.Connection, command: RecoveryCommand, rec: Any) -> str:
        """Execute or record the command unless journaled already; return the outcome."""
        if await journal.executed(conn, command.tenant, command.command_id):
            return "duplicate"
        if command.type is CommandType.RETRY_PAYMENT:
            entry = await self._retry(conn, command, rec)
            if entry is None:
                return "dead_letter"
        else:
            entry = self._entry(command, rec, "recorded", {})
        await journal.record(conn, entry)
        return entry.outcome

    async def _retry(
        self, conn: asyncpg.Connection, command: RecoveryCommand, rec: Any
    ) -> journal.Entry | None:
        """Simulate the retry, append its outcome, return the journal entry."""
        # Day 0 is the invoice's first failure when the saga says it (first_failed_at);
        # commands without it fall back to the earliest journaled command of the invoice.
        anchor = command.first_failed_at or await journal.first_due_at(
            conn, command.tenant, command.invoice_ref
        )
        start = command.due_at if anchor is None else min(anchor, command.due_at)
        day = simulated_days(start, command.due_at, self._settings.time_scale)
        verdict = simulate(command, self._config, day)
        event = outcome_event(
            command, verdict, topic=rec.topic, partition=rec.partition, offset=rec.offset
        )
        try:
            value = self._codec.encode(event, topic=self._events)
        except CodecError as exc:
            await self._dead_letter(rec, "execute", exc)
            return None
        await self._producer.send_and_wait(
            self._events, key=invoice_key(event.tenant, event.invoice_ref).encode(), value=value
        )
        detail = {"event_id": event.event_id, "day": day, "probability": verdict.probability}
        return self._entry(command, rec, "succeeded" if verdict.succeeded else "failed", detail)

    def _entry(
        self, command: RecoveryCommand, rec: Any, outcome: str, extra: dict[str, Any]
    ) -> journal.Entry:
        detail = journal.command_detail(command, rec.topic, rec.partition, rec.offset)
        return journal.Entry(command, outcome, self._clock(), {**detail, **extra})

    async def _dead_letter(self, rec: Any, stage: str, exc: Exception) -> None:
        log.warning("dead letter %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset, exc)
        letter = DeadLetter(
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            stage=stage,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            key=rec.key,
            payload=rec.value or b"",
            failed_at=self._clock(),
        )
        value = self._codec.encode(letter, topic=self._dlq)
        await self._producer.send_and_wait(self._dlq, key=rec.key, value=value)
        DEAD_LETTERS.labels(stage).inc()

    def _flow_control(self) -> None:
        """Pause partitions whose backlog of not-yet-due commands is full; resume drained ones."""
        paused = self._consumer.paused()
        for tp in self._consumer.assignment():  # read now: a rebalance may have run meanwhile
            backlog = self._schedule.backlog(tp)
            if backlog >= MAX_PENDING and tp not in paused:
                self._consumer.pause(tp)
            elif backlog < MAX_PENDING // 2 and tp in paused:
                self._consumer.resume(tp)

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        assigned = self._consumer.assignment() if only is None else set(only)
        offsets = {
            tp: offset
            for tp, offset in self._schedule.watermarks().items()
            if tp in assigned and self._committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner resumes from the last commit and the
            # journal skips what was executed since.
            log.warning("offset commit skipped: %s", exc)
            return
        self._committed.update(offsets)

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Revoked partitions: commit their watermarks, then forget their pending commands."""
        await self._commit(revoked)
        self._schedule.drop(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)
