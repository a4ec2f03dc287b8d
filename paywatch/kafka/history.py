"""One tenant's ``payments.events`` history, read from Kafka itself (the system of record).

For the policy backtest (``paywatch backtest``, ``POST /v1/ops/backtest``): a reader outside
any consumer group (nothing is committed, nothing moves for the worker) takes every
partition from the first record appended at ``since`` (by record timestamp: an event is
appended after it occurred, so nothing earlier can be in the window) to the end offsets
seen when it started, skips other tenants' records by key before decoding them, and keeps
the tenant's events that occurred in ``[since, until)`` of the invoices that can open a
saga (the others change nothing in a backtest; see ``_Kept``). Records that do not decode
are counted, not fatal. More than ``max_events`` kept events stop the read
(``HistoryTooLarge``): the work of one backtest is bounded, whoever asks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException

from paywatch.errors import CodecError, PaywatchError, Retryable
from paywatch.kafka.admin import admin_client
from paywatch.kafka.clients import log_reader
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import KafkaSecurity, kafka_security
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import EventType, PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS, invoice_key
from paywatch.settings import Settings

SKEW = timedelta(days=1)
"""Margin for producer clocks when seeking to ``since`` by record timestamp."""
FETCH_RECORDS = 5000
METADATA_TIMEOUT_S = 15.0
OPENERS = frozenset(
    {EventType.PAYMENT_FAILED, EventType.SUBSCRIPTION_PAST_DUE, EventType.INVOICE_OVERDUE}
)
"""Event types that can open a saga (``paywatch.recovery.reactions``)."""


class HistoryTooLarge(PaywatchError):
    """The tenant has more events in the window than one backtest may replay."""


@dataclass(frozen=True)
class History:
    """The events of the tenant's invoices that open a saga (partition by partition, in
    offset order), and what the read saw."""

    events: list[PaymentEvent]
    tenant_events: int
    """All of the tenant's events in the window, those of invoices never failing included."""
    undecodable: int
    records_read: int


async def read_history(
    settings: Settings,
    bootstrap: str,
    tenant: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    max_events: int,
) -> History:
    """The tenant's PaymentEvents that occurred in ``[since, until)``; Retryable when Kafka
    does not answer, HistoryTooLarge past ``max_events``."""
    topic, security = settings.topic(PAYMENTS_EVENTS), kafka_security(settings)
    ids = await asyncio.to_thread(_partitions, bootstrap, topic, security)
    reader = log_reader(bootstrap, client_id="paywatch-backtest", security=security)
    try:
        await reader.start()
        tps = [TopicPartition(topic, p) for p in ids]
        reader.assign(tps)
        await _seek(reader, tps, since)
        return await _read(reader, settings, tps, tenant, since, until, max_events)
    except KafkaError as exc:
        raise Retryable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    finally:
        await reader.stop()


def _partitions(bootstrap: str, topic: str, security: KafkaSecurity) -> list[int]:
    """The topic's partitions (aiokafka only knows the topics it subscribed to)."""
    try:
        found = (
            admin_client(bootstrap, security=security)
            .list_topics(topic, timeout=METADATA_TIMEOUT_S)
            .topics.get(topic)
        )
    except KafkaException as exc:
        raise Retryable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    if found is None or found.error is not None or not found.partitions:
        raise Retryable(f"no topic {topic} on Kafka at {bootstrap}")
    return sorted(found.partitions)


async def _seek(
    reader: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None
) -> None:
    if since is None:
        await reader.seek_to_beginning(*tps)
        return
    try:  # a time before the epoch (or year 1 minus the skew) is the beginning
        ms = max(0, int((since - SKEW).timestamp() * 1000))
    except (OverflowError, ValueError):
        ms = 0
    found = await reader.offsets_for_times(dict.fromkeys(tps, ms))
    ends = await reader.end_offsets(tps)
    for tp in tps:
        at = found.get(tp)
        reader.seek(tp, at.offset if at is not None else ends[tp])


async def _read(
    reader: AIOKafkaConsumer,
    settings: Settings,
    tps: list[TopicPartition],
    tenant: str,
    since: datetime | None,
    until: datetime | None,
    max_events: int,
) -> History:
    ends = await reader.end_offsets(tps)
    kept = _Kept(make_codec(settings), tenant, since, until, max_events)
    prefix = invoice_key(tenant, "").encode()
    while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
        batches = await reader.getmany(*tps, timeout_ms=1000, max_records=FETCH_RECORDS)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    continue  # appended after the read started: not in this history
                kept.read += 1
                if record.key is not None and record.key.startswith(prefix):
                    kept.add(record.key, record.value, tp.topic)
    return History(kept.events, kept.tenant_events, kept.undecodable, kept.read)


@dataclass
class _Kept:
    """The events of invoices that open a saga, decoded; the others held as bytes.

    Most of a tenant's events are renewals paid at once, whose invoices never open a saga
    and change nothing in a backtest; a decoded event costs about 5 KB of memory, its
    bytes a tenth of that. So an invoice's events are kept as bytes until one of them can
    open a saga (then all are decoded), and dropped at the end if none ever did.
    """

    codec: Codec
    tenant: str
    since: datetime | None
    until: datetime | None
    max_events: int
    events: list[PaymentEvent] = field(default_factory=list)
    held: dict[bytes, list[bytes]] = field(default_factory=dict)
    opened: set[bytes] = field(default_factory=set)
    tenant_events: int = 0
    undecodable: int = 0
    read: int = 0

    def add(self, key: bytes, value: bytes, topic: str) -> None:
        """One record of the tenant's key space."""
        event = self._decode(value, topic)
        if event is None:
            return
        self.tenant_events += 1
        if key not in self.opened and event.type not in OPENERS:
            self.held.setdefault(key, []).append(value)
            return
        if key not in self.opened:
            self.opened.add(key)
            for earlier in self.held.pop(key, []):
                self._keep(self._decode(earlier, topic))
        self._keep(event)

    def _decode(self, value: bytes, topic: str) -> PaymentEvent | None:
        try:
            event = self.codec.decode(value, PaymentEvent, topic=topic)
        except CodecError:
            self.undecodable += 1
            return None
        if event.tenant != self.tenant or not _within(event.occurred_at, self.since, self.until):
            return None
        return event

    def _keep(self, event: PaymentEvent | None) -> None:
        if event is None:
            return
        self.events.append(event)
        if len(self.events) > self.max_events:
            raise HistoryTooLarge(
                f"tenant {self.tenant} has more than {self.max_events} events of failed "
                "invoices in the window: narrow it with from/to"
            )


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)
