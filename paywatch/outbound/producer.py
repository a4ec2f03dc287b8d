"""The outbound producer: saga transitions, commands and alerts -> pending deliveries.

It runs in the executor process, in its own consumer group ``<topic prefix>paywatch-outbound``
over recovery.transitions, recovery.commands and alerts. Each step polls a batch, decodes
and maps every record (``mapping.to_event``), reads what the ``invoices`` read model knows
of the batch's invoices and enqueues every event (``deliveries.enqueue``: one pending
delivery per subscribed active endpoint) in one Postgres transaction; then the step's dead
letters are sent and acked, and only then the offsets are committed. At least once: a
crash after the transaction re-reads the batch, and enqueue is idempotent on (endpoint,
event id), so no endpoint ever gets an event twice.

Poison: a record that does not decode is skipped with a warning (the executor or the
projector, which own those topics, dead-letter it; one poison record is one letter). A
record that does not map, or whose deliveries Postgres refuses for
good (a data or integrity error of that record), goes alone to ``outbound.dlq`` (its own:
the executor dead-letters a poison command too, and one DLQ per stage keeps each letter
once where its readers look) with the stage ``outbound-decode`` / ``outbound-map`` /
``outbound-enqueue``, and the loop goes on. Kafka or Postgres unreachable: the batch is
retried with backoff and nothing is committed; a stop request during the backoff ends the
loop without committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.kafka.health import tracker
from paywatch.kafka.security import kafka_security
from paywatch.outbound.deliveries import enqueue
from paywatch.outbound.events import OutboundEvent
from paywatch.outbound.mapping import InvoiceFacts, Source, to_event
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import (
    MAX_BODY,
    MAX_HEADER,
    MAX_TEXT,
    Alert,
    DeadLetter,
    Frozen,
    RecoveryCommand,
    SagaTransition,
    dead_letter_reason,
)
from paywatch.schemas.topics import (
    ALERTS,
    OUTBOUND,
    RECOVERY_COMMANDS,
    RECOVERY_TRANSITIONS,
    dlq_name,
)
from paywatch.settings import Settings

log = logging.getLogger(__name__)

MAX_POLL_MS = 1000
MAX_BATCH = 500
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 10.0
SOURCES: dict[str, type[Frozen]] = {
    RECOVERY_TRANSITIONS: SagaTransition,
    RECOVERY_COMMANDS: RecoveryCommand,
    ALERTS: Alert,
}
PERMANENT_SQLSTATE = ("22", "23", "54", "P0")
"""Postgres refused a value (data, integrity, limit, raised): the record's fault."""
RETRIED = (KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_FACTS = (
    "SELECT tenant, invoice_ref, status, provider, customer_ref, amount_minor, currency"
    " FROM invoices WHERE (tenant, invoice_ref) IN"
    " (SELECT * FROM unnest($1::text[], $2::text[]))"
)

Enqueue = Callable[[asyncpg.Connection, OutboundEvent], Awaitable[int]]
R = TypeVar("R")


class Stopped(Exception):
    """A stop was requested while a batch waited for Kafka or Postgres to come back."""


class Refused(Exception):
    """Postgres refused one record's deliveries for good (wraps the database error)."""


@dataclass
class Item:
    """One polled record: the event it makes (if any), or why it is dead-lettered."""

    record: Any
    source: Source | None = None
    event: OutboundEvent | None = None
    stage: str | None = None  # set: dead-letter the record at this stage
    error: BaseException | None = None

    @property
    def invoice(self) -> tuple[str, str] | None:
        """(tenant, invoice_ref) of an invoice's event: the read model may know more."""
        s = self.source
        if self.event is None or not isinstance(s, SagaTransition | RecoveryCommand):
            return None
        return s.tenant, s.invoice_ref


def permanent(exc: BaseException) -> bool:
    """True when Postgres (or asyncpg) refused a value: retrying would fail the same way."""
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return True  # asyncpg's DataError: a parameter it cannot encode
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(state, str) and state.startswith(PERMANENT_SQLSTATE)


class OutboundProducer:
    """Turns the saga's and the alerts' records into pending outbound deliveries."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        pool: asyncpg.Pool,
        codec: Codec,
        enqueue_one: Enqueue = enqueue,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._pool, self._codec, self._enqueue = pool, codec, enqueue_one
        self._on_enqueued = on_enqueued  # e.g. the Dispatcher's wake: send without polling
        self._models = {settings.topic(name): model for name, model in SOURCES.items()}
        # Its own DLQ: a poison command is dead-lettered by the executor too, and the two
        # letters (one per stage that refused it) must not meet in one topic.
        self._dlqs = {settings.topic(name): settings.topic(dlq_name(OUTBOUND)) for name in SOURCES}
        security = kafka_security(settings)
        self._consumer = group_consumer(
            bootstrap,
            group_id=f"{settings.topic_prefix}paywatch-outbound",
            client_id="paywatch-outbound",
            security=security,
        )
        self._producer = reliable_producer(
            bootstrap, client_id="paywatch-outbound", security=security
        )
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`."""
        await self._producer.start()
        try:
            await self._consumer.start()
            self._consumer.subscribe(sorted(self._models))
            log.info("outbound producer consuming %s", ", ".join(sorted(self._models)))
            try:
                while not self._stopping.is_set():
                    await self.step()
            except Stopped:
                log.info("outbound producer stopped while waiting for Kafka/Postgres")
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()

    def stop(self) -> None:
        """Ask the loop to finish after the current step."""
        self._stopping.set()

    async def step(self) -> None:
        """Poll once; enqueue the batch's events, dead-letter its poison, commit."""
        polled = await self._consumer.getmany(timeout_ms=MAX_POLL_MS, max_records=MAX_BATCH)
        assigned = self._consumer.assignment()
        records = [r for tp, rs in polled.items() if tp in assigned for r in rs]
        if not records:
            return
        items = [self._decode(r) for r in records]
        added = await self._durably(lambda: self._enqueue_all(items))
        if added and self._on_enqueued is not None:
            self._on_enqueued()
        await self._durably(lambda: self._dead_letters(items))
        tracker.batch("outbound", len(items))
        await self._commit(records)

    def _decode(self, record: Any) -> Item:
        """Decode and map one record (no I/O); a failure makes it a dead letter."""
        try:
            model = self._models[record.topic]
            source = cast(Source, self._codec.decode(record.value or b"", model, record.topic))
        except Exception as exc:
            # Not lettered here: the stage that owns the topic (the executor for commands, the
            # projector for transitions and alerts) dead-letters it already, and one poison
            # record must count once, in the DLQ and in its process's health.
            # INFO, not a warning: the owning stage's letter is the process's last error.
            log.info(
                "outbound: skipped undecodable %s[%s]@%s (%s); its own stage dead-letters it",
                record.topic, record.partition, record.offset, dead_letter_reason(exc),
            )  # fmt: skip
            return Item(record)
        try:
            return Item(record, source=source, event=to_event(source))
        except Exception as exc:  # a record the mapping cannot take is its own dead letter
            return Item(record, source=source, stage="outbound-map", error=exc)

    async def _enqueue_all(self, items: Sequence[Item]) -> int:
        """Every live item's event in one transaction; on a refusal, one transaction each.
        How many deliveries are new."""
        live = [i for i in items if i.stage is None and i.event is not None]
        if not live:
            return 0
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._enqueue_items(conn, live)
        except Refused:
            # Rare: find the record Postgres refuses, keep the others.
            return sum([await self._enqueue_alone(item) for item in live])

    async def _enqueue_alone(self, item: Item) -> int:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._enqueue_items(conn, [item])
        except Refused as exc:
            item.stage, item.error = "outbound-enqueue", exc.__cause__ or exc
            return 0

    async def _enqueue_items(self, conn: asyncpg.Connection, items: Sequence[Item]) -> int:
        facts = await _facts(conn, {key for i in items if (key := i.invoice) is not None})
        added = 0
        for item in items:
            event, key = item.event, item.invoice
            if event is None:
                continue
            if key in facts and item.source is not None:
                event = to_event(item.source, facts[key]) or event
            try:
                added += await self._enqueue(conn, event)
            except RETRIED as exc:
                if permanent(exc):
                    raise Refused(dead_letter_reason(exc)) from exc
                raise
        return added

    async def _dead_letters(self, items: Iterable[Item]) -> None:
        """Send the batch's dead letters and wait for every ack."""
        futures = []
        for item in items:
            if item.stage is None or item.error is None:
                continue
            rec, topic = item.record, self._dlqs[item.record.topic]
            log.warning("dead letter %s[%s]@%s (%s): %s", rec.topic, rec.partition, rec.offset,
                        item.stage, dead_letter_reason(item.error))  # fmt: skip
            value = self._codec.encode(_letter(item), topic=topic)
            futures.append(await self._producer.send(topic, value, rec.key))
        for future in futures:
            await future
        for item in items:
            if item.stage is not None and item.error is not None:
                tracker.dead_letter(item.stage, item.error)

    async def _commit(self, records: Sequence[Any]) -> None:
        assigned = self._consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in assigned:
                offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance moved the partition (its new owner re-reads from the last commit
            # and enqueue skips what is known) or the coordinator is away for a moment.
            log.warning("outbound offset commit skipped: %s", exc)

    async def _durably(self, op: Callable[[], Awaitable[R]]) -> R:
        """Run `op` until it succeeds; Kafka/Postgres being away is waited out with backoff."""
        delay = RETRY_FIRST_S
        while True:
            try:
                return await op()
            except RETRIED as exc:
                if permanent(exc):
                    raise
                log.warning("outbound: Kafka/Postgres unavailable, retry in %.1f s: %s",
                            delay, dead_letter_reason(exc))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                raise Stopped
            delay = min(delay * 2, RETRY_MAX_S)


async def _facts(
    conn: asyncpg.Connection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], InvoiceFacts]:
    """What the invoices read model knows of these (tenant, invoice_ref) (one query)."""
    if not keys:
        return {}
    tenants, refs = zip(*keys, strict=True)
    rows = await conn.fetch(_FACTS, list(tenants), list(refs))
    return {
        (r["tenant"], r["invoice_ref"]): InvoiceFacts(
            status=r["status"],
            provider=r["provider"],
            customer_ref=r["customer_ref"],
            amount_minor=r["amount_minor"],
            currency=r["currency"],
        )
        for r in rows
    }


def _letter(item: Item) -> DeadLetter:
    """The DeadLetter of an item, cut to fit a Kafka record."""
    rec, payload = item.record, item.record.value or b""
    error = dead_letter_reason(item.error or "unknown")
    if len(payload) > MAX_BODY:
        note = f" [payload cut from {len(payload)} to {MAX_BODY} bytes]"
        error, payload = error[: MAX_TEXT - len(note)] + note, payload[:MAX_BODY]
    return DeadLetter(
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        stage=item.stage or "outbound",
        error=error,
        key=None if rec.key is None else rec.key[:MAX_HEADER],
        payload=payload,
        failed_at=datetime.now(UTC),
    )
