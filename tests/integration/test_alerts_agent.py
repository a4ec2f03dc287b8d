"""The alerts agent on rocksdb, real Kafka, a real worker: a provider outage is one incident.

Hours of a tenant's ordinary traffic, then a burst of SOFT ``processing_error`` failures
from one provider, then ordinary traffic again, are appended to ``risk.tenants`` with
their Kafka timestamps spread over those hours (the agent decides as of each record's time,
so the hours pass in seconds). ``alerts`` must then hold exactly one incident: the bursting
provider's, opened, possibly updated, resolved once; nothing for the other provider.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.risk.alerts import Signal, encode_signal
from paywatch.schemas.models import (
    Alert,
    AlertStatus,
    AlertWindow,
    CommandType,
    DeclineCategory,
    RecoveryCommand,
    SagaTransition,
    Severity,
)
from paywatch.settings import Settings
from tests.integration.test_saga_agent import (
    commands,
    committed,
    failure,
    publish,
    scaled,
    transitions,
)
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

Timed = tuple[datetime, Signal]


def traffic(start: datetime, minutes: int, tag: str) -> list[Timed]:
    """Ordinary traffic: each minute, per provider, a few successes and one soft decline."""
    out: list[Timed] = []
    for m in range(minutes):
        at = start + timedelta(minutes=m)
        for provider in ("stripe", "adyen"):
            for i in range(3):
                out.append((at, Signal(f"{tag}-{provider}-{m}-ok{i}", provider, "success")))
            decline = Signal(
                f"{tag}-{provider}-{m}-nf",
                provider,
                "failure",
                "insufficient_funds",
                DeclineCategory.SOFT,
            )
            out.append((at + timedelta(seconds=30), decline))
    return out


def burst(start: datetime, count: int) -> list[Timed]:
    """A processor outage at stripe: ``count`` SOFT processing errors within five minutes."""
    step = timedelta(minutes=5) / count
    return [
        (
            start + i * step,
            Signal(f"burst-{i}", "stripe", "failure", "processing_error", DeclineCategory.SOFT),
        )
        for i in range(count)
    ]


async def publish_signals(
    settings: Settings, bootstrap: str, tenant: str, signals: list[Timed]
) -> None:
    topic = settings.topic("risk.tenants")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for at, signal in signals:
            stamp = int(at.timestamp() * 1000)
            await producer.send(
                topic, encode_signal(signal), key=tenant.encode(), timestamp_ms=stamp
            )
        await producer.flush()
    finally:
        await producer.stop()


async def until_resolved(settings: Settings, bootstrap: str, worker: Any, log: Path) -> list[Alert]:
    """The alerts topic once it holds a RESOLVED record (the worker must stay up)."""
    codec = make_codec(settings)

    async def resolved() -> list[Alert]:
        assert worker.poll() is None, log_tail(log)
        records = await topic_records(bootstrap, settings.topic("alerts"))
        alerts = [codec.decode(r.value, Alert, topic=r.topic) for r in records]
        done = any(a.status is AlertStatus.RESOLVED for a in alerts)
        return alerts if done else []

    return await eventually(resolved, timeout=120, what="the outage's alert, resolved")


async def test_a_burst_of_processor_errors_is_one_incident_opened_and_resolved(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    before = traffic(start, 4 * 60, "before")
    outage = burst(start + timedelta(hours=4, minutes=2), 200)
    after = traffic(start + timedelta(hours=4, minutes=10), 60, "after")
    signals = sorted([*before, *outage, *after], key=lambda timed: timed[0])
    await publish_signals(test_settings, kafka_bootstrap, unique, signals)

    settings = test_settings.model_copy(
        update={"table_store": "rocksdb://", "state_dir": tmp_path / "w"}
    )
    log = tmp_path / "worker.log"
    codec = make_codec(settings)
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        await until_resolved(settings, kafka_bootstrap, worker, log)

        async def all_folded() -> bool:
            assert worker.poll() is None, log_tail(log)
            done = await committed(settings, kafka_bootstrap, parts, source="risk.tenants")
            return done == len(signals)

        # Committed past every signal: whatever the agent sends for them has been acked.
        parts = settings.topic_partitions
        await eventually(all_folded, timeout=120, what="every signal folded and committed")
        records = await topic_records(kafka_bootstrap, settings.topic("alerts"))
        alerts = [codec.decode(r.value, Alert, topic=r.topic) for r in records]

    assert {a.alert_id for a in alerts} == {alerts[0].alert_id}, [a.message for a in alerts]
    statuses = [a.status for a in alerts]
    assert statuses[0] is AlertStatus.OPEN and statuses[-1] is AlertStatus.RESOLVED
    assert statuses.count(AlertStatus.RESOLVED) == 1
    first, last = alerts[0], alerts[-1]
    assert (first.tenant, first.kind, first.provider) == (
        unique,
        "PROVIDER_FAILURE_SPIKE",
        "stripe",
    )
    assert first.observed >= 20 and first.observed > 5 * first.baseline
    assert first.opened_at is not None and outage[0][0] <= first.opened_at <= outage[-1][0]
    assert last.resolved_at is not None and last.resolved_at > outage[-1][0]


async def test_an_outage_after_which_traffic_stops_resolves_on_the_clock(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """No signal follows the burst: the worker's clock ticks the tenant while its incident is
    open, and the incident resolves after the quiet period. A saga minute lasts a wall
    second here (time scale 60), so the 4 h of ordinary traffic take 4 wall minutes of
    record times and the 10 quiet minutes pass in 10 s."""
    scale = 60.0
    now = datetime.now(UTC)

    def wall(saga_minutes: float) -> datetime:  # record times, counted back from now
        return now - timedelta(seconds=saga_minutes * 60 / scale)

    ordinary = traffic(datetime(2026, 1, 1, tzinfo=UTC), 4 * 60, "before")
    before = [(wall(4 * 60 + 10 - i // 8), sig) for i, (_, sig) in enumerate(ordinary)]
    outage = [(wall(8 - i * 5 / 200), sig) for i, (_, sig) in enumerate(burst(now, 200))]
    signals = sorted([*before, *outage], key=lambda timed: timed[0])
    await publish_signals(test_settings, kafka_bootstrap, unique, signals)

    settings = test_settings.model_copy(
        update={"table_store": "rocksdb://", "state_dir": tmp_path / "w", "time_scale": scale}
    )
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        alerts = await until_resolved(settings, kafka_bootstrap, worker, log)
    assert {a.alert_id for a in alerts} == {alerts[0].alert_id}, [a.message for a in alerts]
    assert alerts[0].status is AlertStatus.OPEN and alerts[0].provider == "stripe"
    assert [a.status for a in alerts].count(AlertStatus.RESOLVED) == 1
    ticks = await topic_records(kafka_bootstrap, settings.topic("risk.tenants"))
    assert len(ticks) > len(signals)  # the resolution came from the worker's ticks


async def publish_alert(settings: Settings, bootstrap: str, alert: Alert) -> None:
    codec = make_codec(settings)
    topic = settings.topic("alerts")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        value = codec.encode(alert, topic=topic)
        await producer.send_and_wait(topic, value, key=alert.tenant.encode())
    finally:
        await producer.stop()


async def test_retries_wait_while_their_providers_outage_alert_is_open(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The saga holds a paywatch retry on a provider with an open outage alert (a saga day
    lasts a wall second here), and lets it go once the alert is resolved."""
    settings = scaled(test_settings)
    now = datetime.now(UTC)
    opened = Alert(
        tenant=unique,
        kind="PROVIDER_FAILURE_SPIKE",
        severity=Severity.CRITICAL,
        window=AlertWindow(start=now - timedelta(minutes=10), end=now),
        observed=200,
        baseline=3,
        alert_id=f"{unique}/PROVIDER_FAILURE_SPIKE/generic/1",
        status=AlertStatus.OPEN,
        provider="generic",
        opened_at=now,
    )
    await publish_alert(settings, kafka_bootstrap, opened)
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        await publish(settings, kafka_bootstrap, failure(unique, "inv_held"))

        async def held() -> list[SagaTransition]:
            assert worker.poll() is None, log_tail(log)
            moves = await transitions(settings, kafka_bootstrap, "inv_held")
            return [t for t in moves if t.rule.id == "paywatch.provider_outage"]

        # The first retry is due after a saga day: a few wall seconds of holds.
        holds = await eventually(held, timeout=90, what="the retry held for the outage")
        sent = await commands(settings, kafka_bootstrap, "inv_held")
        assert not [c for c in sent if c.type is CommandType.RETRY_PAYMENT]
        resolved = opened.model_copy(
            update={"status": AlertStatus.RESOLVED, "resolved_at": datetime.now(UTC)}
        )
        await publish_alert(settings, kafka_bootstrap, resolved)

        async def retried() -> list[RecoveryCommand]:
            assert worker.poll() is None, log_tail(log)
            found = await commands(settings, kafka_bootstrap, "inv_held")
            return [c for c in found if c.type is CommandType.RETRY_PAYMENT]

        retries = await eventually(retried, timeout=90, what="the retry after the resolution")
    assert "generic has an open failure-spike alert" in (holds[0].reason or "")
    assert retries[0].attempt == 1 and retries[0].issued_at is not None
    assert retries[0].issued_at > holds[0].at
