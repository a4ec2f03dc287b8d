"""The Faust worker: the one place naming the topics and tables the agents use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import faust
import httpx

from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import faust_broker, faust_credentials, kafka_security
from paywatch.providers.base import Provider
from paywatch.providers.registry import configured_providers
from paywatch.recovery.clock import SagaClock
from paywatch.risk.model import model_from
from paywatch.schemas.codec import Codec
from paywatch.schemas.topics import (
    ALERTS,
    PAYMENTS_EVENTS,
    RECOVERY_CARDS,
    RECOVERY_COMMANDS,
    RECOVERY_TIMERS,
    RECOVERY_TRANSITIONS,
    RISK_CUSTOMERS,
    RISK_SCORES,
    RISK_TENANTS,
    WEBHOOKS_FETCHED,
    WEBHOOKS_RAW,
    dlq_name,
    table_name,
)
from paywatch.settings import Settings
from paywatch.streams.alert_view import AlertView
from paywatch.streams.alerts import AlertsRuntime
from paywatch.streams.alerts import install as install_alerts
from paywatch.streams.batches import Stage
from paywatch.streams.card_expiry import RenewalWatch
from paywatch.streams.card_expiry import install as install_card_expiry
from paywatch.streams.card_ledger import CardLedgerRuntime
from paywatch.streams.card_ledger import install as install_card_ledger
from paywatch.streams.commits import Committer, OffsetLedger
from paywatch.streams.fetch import Fetcher
from paywatch.streams.fetch_agent import FetchAgent, FetchStage
from paywatch.streams.normalize_agent import EventTopics, FetchedStage, NormalizeStage
from paywatch.streams.normalize_agent import install as install_normalize
from paywatch.streams.policy_view import PolicyView
from paywatch.streams.risk import RiskRuntime
from paywatch.streams.risk import install as install_risk
from paywatch.streams.risk_view import RiskView
from paywatch.streams.saga import OutageSource, PolicySource, RiskSource, SagaRuntime
from paywatch.streams.saga import install as install_saga
from paywatch.streams.saga_clock import load_clock
from paywatch.tenants.pg_secrets import PgSecrets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """The Faust app with its topics and tables (built by `create_worker`)."""

    app: faust.App
    raw: Any
    events: EventTopics
    """payments.events, and risk.customers (the same events keyed by customer)."""
    raw_dlq: Any
    seen: Any
    providers: dict[str, Provider]
    fetched: Any = None
    fetched_dlq: Any = None
    fetcher: Fetcher | None = None
    """Fetches what thin webhooks name; None when the worker has no database."""
    saga: SagaRuntime | None = None
    """The recovery saga agent's tables, topics and timer index."""


def _raw_topic(
    app: faust.App, name: str, partitions: int | None = None, *, acks: bool = True
) -> Any:
    # Values are Avro bytes handled by our codec; Faust must not (de)serialize them.
    # acks=False: the stage reading it commits its offsets itself (streams/commits.py).
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        acks=acks,
    )


def create_worker(
    settings: Settings,
    bootstrap: str,
    dsn: str | None = None,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    policies: PolicySource | None = None,
    outages: OutageSource | None = None,
    risk: RiskSource | None = None,
) -> Worker:
    """Build the Faust app, its topics, tables and agents.

    ``dsn`` gives the fetch step of thin webhooks its tenant secrets; without it, thin
    webhooks are dead-lettered. ``http_transport`` replaces the network for provider API
    calls (tests). ``policies``: tenant recovery policies (default: the ``recovery.policies``
    topic, read to its end before the first decision). ``outages``: each tenant's providers
    with an open outage alert, whose paywatch retries wait (default: the ``alerts`` topic).
    ``risk``: each customer's band if HIGH or CRITICAL, for the tenants' ``high_risk``
    option (default: the ``risk.scores`` topic).
    """
    app = faust.App(
        settings.app_id,
        broker=faust_broker(bootstrap),
        broker_credentials=faust_credentials(kafka_security(settings)),
        store=settings.table_store,
        datadir=str(settings.state_path / "worker"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        table_standby_replicas=settings.table_standby_replicas,
        processing_guarantee="at_least_once",  # Faust's exactly_once has open duplicate bugs
        consumer_auto_offset_reset="earliest",  # never "latest" with tables (stack.md §1.2)
        producer_acks=-1,
        producer_linger=settings.worker_linger_ms / 1000,  # fewer, fuller produce requests
        web_enabled=False,
        autodiscover=False,
    )
    worker = Worker(
        app=app,
        raw=_raw_topic(app, settings.topic(WEBHOOKS_RAW), acks=False),
        events=EventTopics(
            _raw_topic(app, settings.topic(PAYMENTS_EVENTS)),
            _raw_topic(app, settings.topic(RISK_CUSTOMERS)),
            _raw_topic(app, settings.topic(RISK_TENANTS)),
        ),
        raw_dlq=_raw_topic(app, settings.topic(dlq_name(WEBHOOKS_RAW))),
        # Delivery dedupe: provider event key -> raw offset that first carried it.
        # Co-partitioned with webhooks.raw (same partition count, written from its stream).
        seen=app.Table(
            table_name(settings, "normalize-seen"),
            default=None,
            partitions=settings.topic_partitions,
        ),
        providers=configured_providers(settings),
        fetched=_raw_topic(app, settings.topic(WEBHOOKS_FETCHED), acks=False),
        fetched_dlq=_raw_topic(app, settings.topic(dlq_name(WEBHOOKS_FETCHED))),
        fetcher=None if dsn is None else _fetcher(settings, dsn, http_transport),
    )
    codec = make_codec(settings)
    ledger = OffsetLedger()  # every stage commits its own offsets (streams/commits.py)
    Committer(app, ledger).install()
    _normalize_agents(worker, codec, ledger)
    policy_source = policies or PolicyView.from_settings(settings, bootstrap)
    clock = load_clock(settings.time_scale, settings.state_path / "worker", settings.time_anchor)
    outage_source = outages or AlertView.from_settings(settings, bootstrap)
    risk_source = risk or RiskView.from_settings(settings, bootstrap)
    views = (policy_source, outage_source, risk_source)
    saga = _saga(app, settings, codec, clock, views, ledger)
    _risk(app, settings, codec, clock, ledger, saga)
    _alerts(app, settings, codec, clock, ledger, saga)
    return replace(worker, saga=saga)


SAGA_STORE_OPTIONS = {
    "write_buffer_size": 16 * 2**20,
    "max_write_buffer_number": 2,
    "block_cache_size": 32 * 2**20,
}
"""rocksdb options of the saga table, per partition database (Faust's defaults, 64 MiB x 3
write buffers and a 2 GiB block cache each, took 6.6 GiB restoring a million sagas)."""


def _bytes_table(app: faust.App, settings: Settings, name: str) -> Any:
    """A table of one agent whose values are its own compact bytes, stored and changelogged
    as they are (Faust's "raw" serializer), with the bounded rocksdb options."""
    return app.Table(
        table_name(settings, name),
        default=None,
        partitions=settings.topic_partitions,
        value_type=bytes,
        options=dict(SAGA_STORE_OPTIONS),
    )


def _saga(
    app: faust.App,
    settings: Settings,
    codec: Codec,
    clock: SagaClock,
    views: tuple[PolicySource, OutageSource, RiskSource],
    ledger: OffsetLedger,
) -> SagaRuntime:
    # Both agents dead-letter to payments.events.dlq (a tick or card record names its topic).
    stage = Stage(app, codec, _raw_topic(app, settings.topic(dlq_name(PAYMENTS_EVENTS))), ledger)
    cards = _raw_topic(app, settings.topic(RECOVERY_CARDS))
    policies, outages, risk = views
    commands = _raw_topic(app, settings.topic(RECOVERY_COMMANDS))
    timers = _raw_topic(app, settings.topic(RECOVERY_TIMERS))
    runtime = SagaRuntime(
        codec=codec,
        clock=clock,
        policies=policies,
        # Written from the saga agent's stream (payments.events and recovery.timers,
        # co-partitioned), so its changelog follows its partitions. Values are the shell's
        # bytes (recovery/entry_codec.py), stored and changelogged as they are.
        sagas=_bytes_table(app, settings, "recovery-sagas"),
        cards=cards,
        commands=commands,
        transitions=_raw_topic(app, settings.topic(RECOVERY_TRANSITIONS)),
        timers=timers,
        events_topic=settings.topic(PAYMENTS_EVENTS),
        timers_topic=settings.topic(RECOVERY_TIMERS),
        outages=outages,
        risk=risk,
    )
    source = app.topic(
        settings.topic(PAYMENTS_EVENTS),
        settings.topic(RECOVERY_TIMERS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,  # the saga stage commits its offsets itself (streams/commits.py)
    )
    install_saga(app, runtime, source, stage)
    card_ledger = CardLedgerRuntime(
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
    )
    card_source = _raw_topic(app, settings.topic(RECOVERY_CARDS), acks=False)
    install_card_ledger(app, card_ledger, card_source, stage)
    return runtime


def _risk(
    app: faust.App,
    settings: Settings,
    codec: Codec,
    clock: SagaClock,
    ledger: OffsetLedger,
    saga: SagaRuntime,
) -> None:
    # Dead letters to payments.events.dlq: a risk.customers record is a payments.events one.
    stage = Stage(app, codec, _raw_topic(app, settings.topic(dlq_name(PAYMENTS_EVENTS))), ledger)
    # Written from the risk agent's stream too: only customers with a pending warning.
    renewals = _bytes_table(app, settings, "risk-renewals")  # risk/renewals.py Watch msgpack
    watch = RenewalWatch(
        codec=codec,
        clock=clock,
        policies=saga.policies,  # the lead is the tenant's (recovery.policies)
        table=renewals,
        ticks=_raw_topic(app, settings.topic(RISK_CUSTOMERS)),
        prepare=saga.policies_ready,
    )
    runtime = RiskRuntime(
        codec=codec,
        clock=clock,
        model=model_from(settings.risk_model),
        # Written from the risk agent's stream (risk.customers, keyed by customer).
        entries=_bytes_table(app, settings, "risk-customers"),  # risk/entry.py msgpack
        scores=_raw_topic(app, settings.topic(RISK_SCORES)),
        alerts=_raw_topic(app, settings.topic(ALERTS)),
        renewals=renewals,
        events=_raw_topic(app, settings.topic(PAYMENTS_EVENTS)),
        commands=_raw_topic(app, settings.topic(RECOVERY_COMMANDS)),
        policies=saga.policies,
        policies_ready=saga.policies_ready,
        watch=watch,
    )
    source = _raw_topic(app, settings.topic(RISK_CUSTOMERS), acks=False)
    install_risk(app, runtime, source, stage)
    install_card_expiry(app, watch, settings.topic(RISK_CUSTOMERS))


def _alerts(
    app: faust.App,
    settings: Settings,
    codec: Codec,
    clock: SagaClock,
    ledger: OffsetLedger,
    saga: SagaRuntime,
) -> None:
    stage = Stage(app, codec, _raw_topic(app, settings.topic(dlq_name(PAYMENTS_EVENTS))), ledger)
    alerts = AlertsRuntime(
        codec=codec,
        clock=clock,
        # Written from the alerts agent's stream (risk.tenants, keyed by tenant).
        entries=_bytes_table(app, settings, "alerts-tenants"),  # risk/alerts.py msgpack
        alerts=_raw_topic(app, settings.topic(ALERTS)),
    )
    source = _raw_topic(app, settings.topic(RISK_TENANTS), acks=False)
    # The clock ticks the tenants with an open incident, as the saga's alert view reads them
    # (a test's own outage source has none to tick).
    view = saga.outages
    ticks = None
    if isinstance(view, AlertView):
        ticks = (view, _raw_topic(app, settings.topic(RISK_TENANTS)), saga.policies_ready)
    install_alerts(app, alerts, source, stage, ticks)


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


def _normalize_agents(w: Worker, codec: Codec, ledger: OffsetLedger) -> None:
    """The normalize, fetch and normalize-fetched agents, committing their own offsets."""
    raw_stage = Stage(w.app, codec, w.raw_dlq, ledger)
    fetch = FetchAgent(FetchStage(raw_stage, w.fetcher, w.fetched, w.seen))
    normalize = NormalizeStage(raw_stage, w.providers, w.seen, w.events, fetch)
    install_normalize(w.app, w.raw, "normalize", normalize)
    fetched_stage = Stage(w.app, codec, w.fetched_dlq, ledger)
    fetched = FetchedStage(fetched_stage, w.providers, w.events)
    install_normalize(w.app, w.fetched, "normalize-fetched", fetched)
