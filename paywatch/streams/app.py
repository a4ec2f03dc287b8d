"""The Faust worker: the one place naming the topics and tables the agents use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import faust
import httpx
from pydantic import ValidationError

from paywatch.errors import CardDataError, PayloadError, UnknownProvider, VerificationError
from paywatch.kafka.codec import make_codec
from paywatch.providers.base import Provider
from paywatch.providers.registry import configured_providers, get_provider
from paywatch.providers.thin import ThinProvider
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import FetchedDocument, RawRef
from paywatch.schemas.topics import (
    PAYMENTS_EVENTS,
    RECOVERY_CARDS,
    RECOVERY_COMMANDS,
    RECOVERY_TIMERS,
    RECOVERY_TRANSITIONS,
    WEBHOOKS_FETCHED,
    WEBHOOKS_RAW,
    dlq_name,
    table_name,
)
from paywatch.settings import Settings
from paywatch.streams.card_ledger import CardLedgerRuntime
from paywatch.streams.card_ledger import install as install_card_ledger
from paywatch.streams.fetch import (
    Fetcher,
    FetchGaveUp,
    fetched_key,
    normalize_fetched,
    thin,
)
from paywatch.streams.normalize import (
    POISON,
    Normalized,
    dead_letter,
    event_key,
    normalize_record,
)
from paywatch.streams.policy_view import PolicyView
from paywatch.streams.saga import PolicySource, SagaRuntime
from paywatch.streams.saga import install as install_saga
from paywatch.streams.saga_clock import load_clock
from paywatch.streams.sends import send_all
from paywatch.tenants.pg_secrets import PgSecrets

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
    fetched: Any = None
    fetched_dlq: Any = None
    fetcher: Fetcher | None = None
    """Fetches what thin webhooks name; None when the worker has no database."""
    saga: SagaRuntime | None = None
    """The recovery saga agent's tables, topics and timer index."""


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


def create_worker(
    settings: Settings,
    bootstrap: str,
    dsn: str | None = None,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    policies: PolicySource | None = None,
) -> Worker:
    """Build the Faust app, its topics, tables and agents.

    ``dsn`` gives the fetch step of thin webhooks its tenant secrets; without it, thin
    webhooks are dead-lettered. ``http_transport`` replaces the network for provider API
    calls (tests). ``policies``: tenant recovery policies (default: the ``recovery.policies``
    topic, read to its end before the first decision).
    """
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
        raw=_raw_topic(app, settings.topic(WEBHOOKS_RAW)),
        events=_raw_topic(app, settings.topic(PAYMENTS_EVENTS)),
        raw_dlq=_raw_topic(app, settings.topic(dlq_name(WEBHOOKS_RAW))),
        # Delivery dedupe: provider event key -> raw offset that first carried it.
        # Co-partitioned with webhooks.raw (same partition count, written from its stream).
        seen=app.Table(
            table_name(settings, "normalize-seen"),
            default=None,
            partitions=settings.topic_partitions,
        ),
        providers=configured_providers(settings),
        fetched=_raw_topic(app, settings.topic(WEBHOOKS_FETCHED)),
        fetched_dlq=_raw_topic(app, settings.topic(dlq_name(WEBHOOKS_FETCHED))),
        fetcher=None if dsn is None else _fetcher(settings, dsn, http_transport),
    )
    codec = make_codec(settings)
    _normalize_agent(worker, codec)
    _normalize_fetched_agent(worker, codec)
    saga = _saga(app, settings, codec, policies or PolicyView.from_settings(settings, bootstrap))
    return replace(worker, saga=saga)


def _saga(app: faust.App, settings: Settings, codec: Codec, policies: PolicySource) -> SagaRuntime:
    events_dlq = _raw_topic(app, settings.topic(dlq_name(PAYMENTS_EVENTS)))

    async def dead_letter(msg: Any, exc: Exception, stage: str) -> None:
        await _dead_letter(events_dlq, codec, msg, exc, stage)

    clock = load_clock(settings.time_scale, settings.state_path / "worker", settings.time_anchor)
    cards = _raw_topic(app, settings.topic(RECOVERY_CARDS))
    commands = _raw_topic(app, settings.topic(RECOVERY_COMMANDS))
    timers = _raw_topic(app, settings.topic(RECOVERY_TIMERS))
    runtime = SagaRuntime(
        codec=codec,
        clock=clock,
        policies=policies,
        # Written from the saga agent's stream (payments.events and recovery.timers,
        # co-partitioned), so its changelog follows its partitions.
        sagas=app.Table(
            table_name(settings, "recovery-sagas"),
            default=None,
            partitions=settings.topic_partitions,
        ),
        cards=cards,
        commands=commands,
        transitions=_raw_topic(app, settings.topic(RECOVERY_TRANSITIONS)),
        timers=timers,
        events_topic=settings.topic(PAYMENTS_EVENTS),
        timers_topic=settings.topic(RECOVERY_TIMERS),
        dead_letter=dead_letter,
    )
    source = app.topic(
        settings.topic(PAYMENTS_EVENTS),
        settings.topic(RECOVERY_TIMERS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    install_saga(app, runtime, source)
    ledger = CardLedgerRuntime(
        codec=codec,
        clock=clock,
        policies=policies,
        policies_ready=runtime.policies_ready,
        # Written from the card-ledger agent's stream (recovery.cards, keyed by card).
        ledgers=app.Table(
            table_name(settings, "recovery-card-ledger"),
            default=None,
            partitions=settings.topic_partitions,
        ),
        commands=commands,
        timers=timers,
        dead_letter=dead_letter,
    )
    install_card_ledger(app, ledger, cards)
    return runtime


def _fetcher(settings: Settings, dsn: str, transport: httpx.AsyncBaseTransport | None) -> Fetcher:
    http = httpx.AsyncClient(
        transport=transport, timeout=settings.fetch_timeout_s, follow_redirects=False
    )
    return Fetcher(
        http,
        PgSecrets(settings, dsn),
        deadline_s=settings.fetch_deadline_s,
        token_urls={
            "xero": settings.xero_token_url,
            "quickbooks": settings.quickbooks_token_url,
        },
    )


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
        await _dead_letter(w.raw_dlq, codec, msg, exc, "normalize")
        return
    first = w.seen.get(result.dedupe_key)
    if first is not None and first != msg.offset:
        return  # a redelivery of a provider event that was already normalized
    provider = w.providers[result.raw.provider] if result.raw else None
    thin_provider = thin(provider) if provider is not None else None
    if thin_provider is not None and result.raw is not None:
        if not await _fetch(w, codec, msg, thin_provider, result):
            return  # dead-lettered: not marked seen, so a replay fetches again
    else:
        await send_all(codec, [(w.events, event_key(ev), ev) for ev in result.events])
    if first is None:
        w.seen[result.dedupe_key] = msg.offset


async def _dead_letter(dlq: Any, codec: Codec, msg: Any, exc: Exception, stage: str) -> None:
    log.warning("dead letter (%s) %s[%s]@%s: %s", stage, msg.topic, msg.partition, msg.offset, exc)
    letter = dead_letter(
        stage=stage,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        error=exc,
        now=datetime.now(UTC),
    )
    fut = await dlq.send(key=msg.key, value=codec.encode(letter, topic=dlq.get_topic_name()))
    await fut


FETCH_FAILURES = (VerificationError, CardDataError, PayloadError, FetchGaveUp)
"""Fetch outcomes that dead-letter the raw webhook (see ``paywatch.streams.fetch``)."""


async def _fetch(
    w: Worker, codec: Codec, msg: Any, provider: ThinProvider, result: Normalized
) -> bool:
    """Fetch what a thin webhook names and log it to webhooks.fetched; False if DLQ'd."""
    assert result.raw is not None
    source = RawRef(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        provider_event_id=result.provider_event_id,
    )
    try:
        if w.fetcher is None:
            raise VerificationError("the worker has no database: it cannot read OAuth secrets")
        docs = await w.fetcher.fetch_all(
            provider, result.raw.tenant, result.doc, source, lambda: datetime.now(UTC)
        )
    except FETCH_FAILURES as exc:
        await _dead_letter(w.raw_dlq, codec, msg, exc, "fetch")
        return False
    await send_all(codec, [(w.fetched, fetched_key(d), d) for d in docs])
    return True


def _normalize_fetched_agent(w: Worker, codec: Codec) -> None:
    @w.app.agent(w.fetched, name="normalize-fetched")
    async def normalize_fetched_docs(stream: Any) -> None:
        async for event in stream.events():
            await _normalize_fetched_one(w, codec, event.message)


async def _normalize_fetched_one(w: Worker, codec: Codec, msg: Any) -> None:
    """One webhooks.fetched record -> canonical events (replay runs only this)."""
    try:
        doc = codec.decode(msg.value, FetchedDocument, topic=msg.topic)
        provider = thin(get_provider(doc.provider, w.providers))
        if provider is None:
            raise UnknownProvider(f"{doc.provider!r} is not a thin-webhook provider")
        events = normalize_fetched(provider, doc, (msg.topic, msg.partition, msg.offset))
    except (*POISON, ValidationError) as exc:
        await _dead_letter(w.fetched_dlq, codec, msg, exc, "normalize")
        return
    await send_all(codec, [(w.events, event_key(ev), ev) for ev in events])
