"""The executor process loop: recovery.commands -> retries (sandbox or live) and notices.

Each step polls a batch, decodes it, schedules the commands by ``due_at``
(schedule.py), then takes the due ones in batches: one journal lookup, every decision
(decide.py), one transaction that journals the rows and appends the outcomes with all
broker acks awaited at once (effects.py); then the step's dead letters, acked too, and
only then each partition's low watermark is committed. Nothing is committed before its
effects are durable, and a journaled command id is never executed again.

Live retries (live.py): a RETRY_PAYMENT of a tenant whose provider is charged live is
claimed in Postgres (committed) before the provider's API is called with the command id as
idempotency key; its outcome is then journaled and appended like a simulated one. No
outcome (provider unavailable, circuit open, claim held by another executor): the command
stays pending and is looked at again later; the provider refusing the request for good
dead-letters it (stage ``charge``).

Poison: a record that does not decode, cannot be decided or is refused by Postgres or
Kafka goes alone to recovery.commands.dlq (source coordinates, stage, error) and the
executor goes on. Kafka or Postgres unreachable: the batch is retried with backoff,
nothing is dead-lettered; a stop request during the backoff ends the process without
committing, and the restart resumes from the committed watermarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from paywatch.charging.base import ChargeResult, Pending, Rejected, Unavailable
from paywatch.charging.breaker import CircuitBreaker
from paywatch.email import outbox
from paywatch.errors import CodecError
from paywatch.executor import effects
from paywatch.executor import live as live_mod
from paywatch.executor.decide import Context, Coords, Decision, charged, decide_batch, decide_live
from paywatch.executor.failures import RETRIED, transient
from paywatch.executor.letters import DeadLetters
from paywatch.executor.live import LiveCharges
from paywatch.executor.metrics import BATCH, COMMANDS, PENDING, RETRIES
from paywatch.executor.schedule import Schedule, Slot
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.kafka.health import tracker
from paywatch.kafka.security import kafka_security
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import RecoveryCommand, dead_letter_reason
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_COMMANDS, dlq_name
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox

log = logging.getLogger(__name__)

MAX_POLL_MS = 1000
MAX_BATCH = 500
MAX_PENDING = 5000
"""Per partition: above this many fetched-but-not-due commands, fetching pauses."""
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 10.0
CHARGE_RETRY_FIRST_S, CHARGE_RETRY_MAX_S = 5.0, 300.0
"""A live retry without an outcome (provider unavailable, circuit open) waits this long,
doubling per try (real seconds: the provider's recovery is not simulated time)."""
CHARGE_TIMEOUT_S = 30.0
"""One provider call, whatever the client's own timeouts, ends within this."""
MAX_CHARGING = 32
"""Provider calls in flight in one executor."""

Clock = Callable[[], datetime]
R = TypeVar("R")


def utc_now() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


class Stopped(Exception):
    """A stop was requested while a batch waited for Kafka or Postgres to come back."""


@dataclass(frozen=True)
class Received:
    """A decoded command and the record that carried it."""

    command: RecoveryCommand
    record: Any


Slot_ = Slot[TopicPartition, Received]
Item = tuple[Slot_, RecoveryCommand, Coords]


def coords(rec: Any) -> Coords:
    """Where a consumer record was read."""
    return Coords(rec.topic, rec.partition, rec.offset)


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
        *,
        live: LiveCharges | None = None,
        notify: effects.Notify | None = outbox.enqueue,
        on_emails: Callable[[], None] | None = None,
    ) -> None:
        self._settings, self._pool, self._codec = settings, pool, codec
        self._config, self._clock = config, clock
        self._live = live or LiveCharges(
            pool,
            SecretBox.from_settings(settings),
            lease_s=settings.charge_lease_s,
            grace=timedelta(hours=settings.secret_grace_hours),
        )
        self._breaker = CircuitBreaker()
        self._notify, self._on_emails = notify, on_emails
        self._topic = settings.topic(RECOVERY_COMMANDS)
        self._events = settings.topic(PAYMENTS_EVENTS)
        self._dlq = settings.topic(dlq_name(RECOVERY_COMMANDS))
        security = kafka_security(settings)
        self._consumer = group_consumer(
            bootstrap,
            group_id=f"{settings.app_id}-executor",
            client_id="paywatch-executor",
            security=security,
        )
        self._producer = reliable_producer(
            bootstrap, client_id="paywatch-executor", security=security
        )
        self._schedule: Schedule[TopicPartition, Received] = Schedule()
        self._committed: dict[TopicPartition, int] = {}
        self._dead = DeadLetters(self._producer, codec, self._dlq, clock)
        self._stopping = asyncio.Event()
        self._charging = asyncio.Semaphore(MAX_CHARGING)

    async def run(self) -> None:
        """Run until `stop()`."""
        await self._producer.start()
        try:
            await self._consumer.start()
            self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
            tracker.watch(self._consumer)
            log.info("executor consuming %s (simulator seed %s)", self._topic, self._config.seed)
            try:
                while not self._stopping.is_set():
                    await self.step()  # each step ends with its commit
            except Stopped:
                log.info("executor stopped while waiting for Kafka/Postgres; nothing committed")
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()
            await self._live.aclose()

    def stop(self) -> None:
        """Ask the loop to finish after the current step."""
        self._stopping.set()

    async def step(self) -> None:
        """Poll once, execute what is due in batches, dead-letter, commit the watermarks."""
        batches = await self._consumer.getmany(timeout_ms=self._poll_ms(), max_records=MAX_BATCH)
        assigned = self._consumer.assignment()
        for tp, records in batches.items():
            if tp in assigned:
                for rec in records:
                    self._accept(tp, rec)
        due = self._schedule.due(self._clock())
        for start in range(0, len(due), MAX_BATCH):
            await self._execute(due[start : start + MAX_BATCH])
        for tp, offset in await self._dead.flush(self._durably):
            self._schedule.done(tp, offset)
        self._flow_control()
        await self._commit()
        PENDING.set(len(self._schedule))

    def _poll_ms(self) -> int:
        due = self._schedule.next_due()
        if due is None:
            return MAX_POLL_MS
        wait_ms = math.ceil((due - self._clock()).total_seconds() * 1000)
        return max(0, min(MAX_POLL_MS, wait_ms))

    def _accept(self, tp: TopicPartition, rec: Any) -> None:
        try:
            command = self._codec.decode(rec.value or b"", RecoveryCommand, topic=self._topic)
        except CodecError as exc:
            self._schedule.hold(tp, rec.offset)  # until its dead letter is acked
            self._reject(tp, rec, "decode", exc)
            return
        self._schedule.add(tp, rec.offset, command.due_at, Received(command, rec))

    async def _execute(self, slots: list[Slot_]) -> None:
        live = [s for s in slots if self._schedule.holds(s.partition, s.offset)]
        if not live:
            return  # their partitions were revoked meanwhile: the new owners execute them
        BATCH.observe(len(live))
        tracker.batch("execute", len(live))
        items = [(s, s.item.command, coords(s.item.record)) for s in live]
        items = await self._charge_live(items)
        if not items:
            return
        anchors, refused = await self._durably(
            functools.partial(effects.anchors, self._pool, items)
        )
        self._reject_all([(item[0], exc) for item, exc in refused], "lookup")
        gone = {id(item) for item, _ in refused}
        batch = decide_batch([i for i in items if id(i) not in gone], anchors, self._context())
        self._reject_all([(r.token, r.error) for r in batch.refused], "execute")
        applied = await self._apply(batch.decisions)
        if self._on_emails is not None and any(
            d.entry.outcome == "emailed" for d in applied.executed
        ):
            self._on_emails()  # the mailer looks at the outbox now, not at its next poll
        self._reject_all([(d.token, exc) for d, exc in applied.refused], "journal")
        for decision in applied.executed:
            self._done(decision.token, decision.entry.outcome)
        for slot in [*batch.duplicates, *(d.token for d in applied.duplicates)]:
            self._done(slot, "duplicate")

    async def _charge_live(self, items: list[Item]) -> list[Item]:
        """Charge the retries of live accounts through their providers (live.py); the other
        items are returned for the simulator and the journal."""
        accounts = await self._durably(self._live.accounts)
        live = [i for i in items if charged(i[1]) and (i[1].tenant, i[1].provider) in accounts]
        if not live:
            return items
        taken = {id(i) for i in live}
        mine, seen = [], set()
        for item in live:  # a command read twice in one batch is charged through its first
            key = (item[1].tenant, item[1].command_id)
            if key in seen:
                self._done(item[0], "duplicate")
            else:
                seen.add(key)
                mine.append(item)
        claims = await self._durably(
            functools.partial(self._live.claim, [command for _, command, _ in mine])
        )
        ours: list[tuple[Item, int]] = []
        for item in mine:
            slot, command, _ = item
            key = (command.tenant, command.command_id)
            if key in claims.journaled:
                self._done(slot, "duplicate")
            elif key in claims.held:  # another executor is charging it: look again later
                self._later(slot, (claims.held[key] - self._clock()).total_seconds() + 1)
            else:
                ours.append((item, claims.ours[key]))
        results = await asyncio.gather(*(self._charge_one(item, tries) for item, tries in ours))
        decisions: list[Decision] = []
        released: list[tuple[live_mod.Key, str]] = []
        for (item, tries), result in zip(ours, results, strict=True):
            slot, command, where = item
            if isinstance(result, ChargeResult):
                try:
                    ctx = self._context()
                    decisions.append(decide_live(slot, command, where, result, tries, ctx))
                except Exception as exc:  # building the record of one command
                    self._reject_all([(slot, exc)], "execute")
            elif isinstance(result, Rejected):
                self._reject_all([(slot, result)], "charge")
            else:
                released.append(((command.tenant, command.command_id), str(result)))
                self._later(slot, min(CHARGE_RETRY_MAX_S, CHARGE_RETRY_FIRST_S * 2 ** (tries - 1)))
        await self._durably(functools.partial(self._live.release, released))
        applied = await self._apply(decisions)
        self._reject_all([(d.token, exc) for d, exc in applied.refused], "journal")
        for decision in applied.executed:
            self._done(decision.token, decision.entry.outcome)
        for decision in applied.duplicates:
            self._done(decision.token, "duplicate")
        return [i for i in items if id(i) not in taken]

    async def _charge_one(self, item: Item, tries: int) -> ChargeResult | Exception:
        """One provider call: its result, ``Rejected``, or why there is no outcome yet."""
        _, command, _ = item
        account = (command.tenant, command.provider or "")
        if not self._breaker.allow(account):
            return Unavailable(f"circuit open for {command.provider} of tenant {command.tenant}")
        async with self._charging:
            try:
                client = await self._live.client(account)
                result = await asyncio.wait_for(
                    client.charge(live_mod.request(command), resumed=tries > 1), CHARGE_TIMEOUT_S
                )
            except Rejected as exc:
                self._breaker.succeeded(account)  # the provider answered
                return exc
            except Pending as exc:  # answered, no outcome yet: not an outage
                self._breaker.succeeded(account)
                log.info(
                    "live retry %s of %s/%s has no outcome yet (try %d): %s",
                    command.command_id, command.tenant, command.invoice_ref, tries, exc,
                )  # fmt: skip
                return exc
            except (Unavailable, TimeoutError, httpx.HTTPError, OSError) as exc:
                self._breaker.failed(account)
                log.warning("live retry %s of %s/%s got no outcome (try %d): %s",
                            command.command_id, command.tenant, command.invoice_ref, tries,
                            dead_letter_reason(exc))  # fmt: skip
                return exc if isinstance(exc, Unavailable) else Unavailable(str(exc) or repr(exc))
            except Exception as exc:  # a client bug: keep the command, never lose a charge
                self._breaker.failed(account)
                log.exception("live retry %s: unexpected client error", command.command_id)
                return Unavailable(f"unexpected client error: {exc!r}")
        self._breaker.succeeded(account)
        return result

    def _later(self, slot: Slot_, seconds: float) -> None:
        """Keep the command pending and look at it again in `seconds` (not before 1 s)."""
        when = self._clock() + timedelta(seconds=max(1.0, seconds))
        self._schedule.add(slot.partition, slot.offset, when, slot.item)

    def _context(self) -> Context:
        return Context(
            self._config,
            self._settings.time_scale,
            self._clock(),
            self._events,
            lambda event: self._codec.encode(event, topic=self._events),
        )

    async def _apply(self, decisions: list[Decision]) -> effects.Applied:
        """Make the decisions durable; records Kafka refuses for good are dead-lettered."""
        while True:
            try:
                return await self._durably(functools.partial(self._apply_once, decisions))
            except effects.SendRefused as refused:
                self._reject_all([(d.token, exc) for d, exc in refused.refused], "send")
                gone = {id(d) for d, _ in refused.refused}
                decisions = [d for d in decisions if id(d) not in gone]

    async def _apply_once(self, decisions: list[Decision]) -> effects.Applied:
        return await effects.apply(self._pool, self._producer, decisions, self._notify)

    async def _durably(self, op: Callable[[], Awaitable[R]]) -> R:
        """Run `op` until it succeeds; transient failures are retried with backoff."""
        delay = RETRY_FIRST_S
        while True:
            try:
                return await op()
            except RETRIED as exc:
                if not transient(exc):
                    raise
                log.warning(
                    "Kafka/Postgres unavailable, retry in %.1f s: %s",
                    delay,
                    dead_letter_reason(exc),
                )
            RETRIES.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                raise Stopped
            delay = min(delay * 2, RETRY_MAX_S)

    def _done(self, slot: Slot_, outcome: str) -> None:
        command = slot.item.command
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

    def _reject_all(self, refused: Iterable[tuple[Slot_, BaseException]], stage: str) -> None:
        for slot, exc in refused:
            COMMANDS.labels(slot.item.command.type.value, "dead_letter").inc()
            self._reject(slot.partition, slot.item.record, stage, exc)

    def _reject(self, tp: TopicPartition, rec: Any, stage: str, exc: BaseException) -> None:
        self._dead.add(tp, rec, stage, exc)  # its slot stays pending until the letter is acked
        tracker.dead_letter(stage, exc)

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
        except KafkaError as exc:
            # The group moved on (the new owner resumes from the last commit and the
            # journal skips what was executed since) or the coordinator is away for a
            # moment (the next step commits the same watermarks again).
            log.warning("offset commit skipped: %s", exc)
            return
        self._committed.update(offsets)

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Revoked partitions: commit their watermarks, then forget their pending commands."""
        await self._commit(revoked)
        self._schedule.drop(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)
