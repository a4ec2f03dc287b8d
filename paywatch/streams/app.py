"""The Faust worker: the one place naming the topics and tables the agents use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from paywatch.providers.base import Provider
from paywatch.providers.registry import configured_providers
from paywatch.schemas.codec import Codec, make_codec
from paywatch.settings import Settings
from paywatch.streams.normalize import POISON, dead_letter, event_key, normalize_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """The Faust app with its topics and tables (built by `create_worker`)."""

    app: faust.App
    raw: Any
    events: Any
    raw_dlq: Any
    seen: Any
    providers: dict[str, Provider]


def _raw_topic(app: faust.App, name: str, partitions: int | None = None) -> Any:
    # Values are Avro bytes handled by our codec; Faust must not (de)serialize them.
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


def create_worker(settings: Settings, bootstrap: str) -> Worker:
    """Build the Faust app, its topics, tables and agents."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store=settings.table_store,
        datadir=str(settings.state_path / "worker"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        table_standby_replicas=settings.table_standby_replicas,
        processing_guarantee="at_least_once",  # Faust's exactly_once has open duplicate bugs
        consumer_auto_offset_reset="earliest",  # never "latest" with tables (stack.md §1.2)
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
    )
    worker = Worker(
        app=app,
        raw=_raw_topic(app, settings.topic("webhooks.raw")),
        events=_raw_topic(app, settings.topic("payments.events")),
        raw_dlq=_raw_topic(app, settings.topic("webhooks.raw.dlq")),
        # Delivery dedupe: provider event key -> raw offset that first carried it.
        # Co-partitioned with webhooks.raw (same partition count, written from its stream).
        seen=app.Table(
            f"{settings.topic_prefix}normalize-seen",
            default=None,
            partitions=settings.topic_partitions,
        ),
        providers=configured_providers(settings),
    )
    _normalize_agent(worker, make_codec(settings))
    return worker


def _normalize_agent(w: Worker, codec: Codec) -> None:
    @w.app.agent(w.raw, name="normalize")
    async def normalize(stream: Any) -> None:
        async for event in stream.events():
            await _normalize_one(w, codec, event.message)


async def _normalize_one(w: Worker, codec: Codec, msg: Any) -> None:
    """Normalize one record; duplicates of an already-normalized delivery are dropped."""
    try:
        result = normalize_record(
            codec, w.providers, msg.value, msg.topic, msg.partition, msg.offset
        )
    except POISON as exc:
        log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
        letter = dead_letter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            error=exc,
            now=datetime.now(UTC),
        )
        fut = await w.raw_dlq.send(
            key=msg.key, value=codec.encode(letter, topic=w.raw_dlq.get_topic_name())
        )
        await fut
        return
    first = w.seen.get(result.dedupe_key)
    if first is not None and first != msg.offset:
        return  # a redelivery of a provider event that was already normalized
    futures = []
    for ev in result.events:
        futures.append(
            await w.events.send(
                key=event_key(ev), value=codec.encode(ev, topic=w.events.get_topic_name())
            )
        )
    for fut in futures:
        await fut  # at-least-once: the source offset is only committed after these acks
    if first is None:
        w.seen[result.dedupe_key] = msg.offset
