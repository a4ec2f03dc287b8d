"""PolicyView on the real broker: ready means caught up, the last change wins, live follow."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from paywatch.errors import InfraError
from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import PolicyChanged
from paywatch.settings import Settings
from paywatch.streams.policy_view import PolicyView
from paywatch.tenants.policy_input import canonical_json
from tests.kafka_helpers import eventually

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Log:
    """Writes PolicyChanged records (and garbage) to the test's recovery.policies."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.topic = settings.topic("recovery.policies")
        self.codec = make_codec(settings)
        self.producer = producer

    async def change(self, tenant: str, window_days: int, policy_json: str | None = None) -> None:
        policy = TenantPolicy(window_days=window_days, retry={"days": [1]}, dunning=())
        change = PolicyChanged(
            tenant=tenant, revision=policy.revision,
            policy_json=policy_json or canonical_json(policy), changed_at=T0, changed_by="cli",
        )  # fmt: skip
        await self.raw(tenant, self.codec.encode(change, topic=self.topic))

    async def raw(self, tenant: str, value: bytes) -> None:
        await self.producer.send(self.topic, value, tenant.encode())


@pytest.fixture
async def log(test_settings: Settings, kafka_bootstrap: str) -> AsyncIterator[Log]:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        yield Log(test_settings, producer)
    finally:
        await producer.stop()


@pytest.fixture
async def view(test_settings: Settings, kafka_bootstrap: str) -> AsyncIterator[PolicyView]:
    v = PolicyView.from_settings(test_settings, kafka_bootstrap)
    yield v
    await v.stop()


async def test_ready_means_every_stored_policy_is_known(
    log: Log, view: PolicyView, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenants = [f"{unique}-{i}" for i in range(25)]
    for round_ in range(1, 9):  # 200 changes over every partition; the last one wins
        for tenant in tenants:
            await log.change(tenant, window_days=round_ + 1)
    await log.raw(tenants[0], b"garbage")
    await log.change(tenants[1], 2, policy_json='{"window_days": 0}')  # invalid: skipped
    await log.producer.flush()

    with caplog.at_level(logging.WARNING, logger="paywatch.streams.policy_view"):
        await view.start()
        await view.wait_ready(30)
    assert view.ready
    # No waiting after ready: every tenant's last valid change is already in force.
    assert {view.get(t).window_days for t in tenants} == {9}
    assert view.get(f"{unique}-unknown") == TenantPolicy()
    assert caplog.text.count("skipped policy change") == 2

    # It keeps following: a change made after ready applies to decisions after it.
    await log.change(tenants[2], window_days=30)
    await log.producer.flush()

    async def followed() -> bool:
        return view.get(tenants[2]).window_days == 30

    await eventually(followed, timeout=30, what="the live change")


async def test_an_empty_topic_is_ready_at_once(view: PolicyView, unique: str) -> None:
    started = time.monotonic()
    await view.start()
    await view.wait_ready(30)
    assert time.monotonic() - started < 10
    assert view.get(unique) == TenantPolicy()


async def test_waiting_before_start_and_a_missing_topic_are_errors(
    kafka_bootstrap: str, unique: str
) -> None:
    view = PolicyView(kafka_bootstrap, f"{unique}.no.such.topic", make_codec(Settings()))
    with pytest.raises(RuntimeError, match="start"):
        await view.wait_ready(1)
    with pytest.raises(InfraError, match="does not exist"):
        await view.start()
    await view.stop()
