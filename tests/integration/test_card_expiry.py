"""CARD_EXPIRING ahead of a renewal the card will not reach, on rocksdb, real Kafka, a real
worker process (issue 9, item 4).

Customers renew a monthly subscription; the card on file of some expires before the next
renewal. The worker's risk agent must produce exactly one CARD_EXPIRING (payments.events)
for each renewal at risk whose lead time has come, and, for the tenant that opted in, one
pre-dunning NOTIFY_CUSTOMER naming rule ``tenant.card_expiry``; nothing for a card that
lasts, nor for a renewal still further away than the lead. A duplicate tick and a cold
restart (empty state directory: the watch table restored from its changelog and the index
rebuilt) must not warn twice.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import CardExpiry, TenantPolicy
from paywatch.risk.renewals import SOURCE
from paywatch.schemas.models import (
    CommandType,
    EventType,
    PaymentEvent,
    PaymentMethod,
    PolicyChanged,
    RecoveryCommand,
)
from paywatch.schemas.topics import customer_key
from paywatch.settings import Settings
from paywatch.tenants.policy_input import canonical_json
from tests.integration.test_risk_agent import publish
from tests.integration.test_saga_agent import committed
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process


def _settings(test_settings: Settings, tmp_path: Path, name: str) -> Settings:
    return test_settings.model_copy(
        update={"table_store": "rocksdb://", "state_dir": tmp_path / name}
    )


def _months(at: datetime, n: int) -> datetime:
    index = at.year * 12 + at.month - 1 + n
    year, month = divmod(index, 12)
    return at.replace(year=year, month=month + 1, day=min(at.day, 28))


def renewals(
    tenant: str, customer: str, last: datetime, exp: tuple[int, int]
) -> list[PaymentEvent]:
    """Two monthly renewals of ``sub_<customer>``, the latest at ``last``, paid with a card
    expiring ``exp`` (year, month)."""
    out = []
    for i, at in enumerate((_months(last, -1), last)):
        out.append(
            PaymentEvent(
                event_id=f"{tenant}-{customer}-paid-{i}",
                type=EventType.PAYMENT_SUCCEEDED,
                tenant=tenant,
                provider="generic",
                source_type="payment.succeeded",
                occurred_at=at,
                customer_ref=customer,
                subscription_ref=f"sub_{customer}",
                invoice_ref=f"in_{customer}_{i}",
                amount_minor=4900,
                currency="EUR",
                payment_method=PaymentMethod(exp_year=exp[0], exp_month=exp[1]),
            )
        )
    return out


def expiring_at(last: datetime) -> tuple[int, int]:
    """A card that works at ``last`` and ends on the 1st of the month after it."""
    return last.year, last.month


async def set_policy(settings: Settings, bootstrap: str, tenant: str, policy: TenantPolicy) -> None:
    codec, topic = make_codec(settings), settings.topic("recovery.policies")
    change = PolicyChanged(
        tenant=tenant, revision=policy.revision, policy_json=canonical_json(policy),
        changed_at=datetime.now(UTC), changed_by="test",
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, codec.encode(change, topic=topic), tenant.encode())
    finally:
        await producer.stop()


async def warnings(settings: Settings, bootstrap: str) -> list[PaymentEvent]:
    codec, topic = make_codec(settings), settings.topic("payments.events")
    events = [
        codec.decode(r.value, PaymentEvent, topic=topic)
        for r in await topic_records(bootstrap, topic)
    ]
    return [e for e in events if e.type is EventType.CARD_EXPIRING]


async def notices(settings: Settings, bootstrap: str) -> list[RecoveryCommand]:
    codec, topic = make_codec(settings), settings.topic("recovery.commands")
    records = await topic_records(bootstrap, topic)
    return [codec.decode(r.value, RecoveryCommand, topic=topic) for r in records]


async def until(
    settings: Settings,
    bootstrap: str,
    process: tuple[Any, Path],
    enough: Callable[[list[PaymentEvent]], bool],
) -> list[PaymentEvent]:
    """The CARD_EXPIRING events once ``enough`` says so (the worker must stay up)."""
    worker, log = process

    async def probe() -> list[PaymentEvent] | None:
        assert worker.poll() is None, log_tail(log)
        got = await warnings(settings, bootstrap)
        return got if enough(got) else None

    return await eventually(probe, timeout=120, what="CARD_EXPIRING warnings")


async def test_one_warning_per_renewal_at_risk_and_an_opt_in_notice(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    opted, plain = f"{unique}-opted", f"{unique}-plain"
    await set_policy(
        test_settings, kafka_bootstrap, opted,
        TenantPolicy(card_expiry=CardExpiry(lead_days=14, notify=True, template="card_soon")),
    )  # fmt: skip
    now = datetime.now(UTC)
    soon = now - timedelta(days=25)  # renews in about 5 days: inside the 14-day lead
    later = now - timedelta(days=2)  # renews in about 28 days: not yet
    await publish(
        test_settings,
        kafka_bootstrap,
        *renewals(opted, "cus_exp", soon, expiring_at(soon)),
        *renewals(opted, "cus_ok", soon, (soon.year + 3, 12)),
        *renewals(opted, "cus_later", later, expiring_at(later)),
        *renewals(plain, "cus_exp", soon, expiring_at(soon)),
    )
    ms = soon.replace(microsecond=soon.microsecond // 1000 * 1000)  # Avro keeps milliseconds
    year, month = divmod(ms.year * 12 + ms.month, 12)  # the month after ``soon``
    renews_at = ms.replace(
        year=year, month=month + 1, day=min(ms.day, calendar.monthrange(year, month + 1)[1])
    )

    run1 = _settings(test_settings, tmp_path, "w1")
    log1 = tmp_path / "w1.log"
    with paywatch_process(run1, "run", "worker", log=log1) as worker:
        got = await until(run1, kafka_bootstrap, (worker, log1), lambda got: len(got) >= 2)
        by_tenant = {e.tenant: e for e in got}
        assert set(by_tenant) == {opted, plain}, got
        for event in got:
            assert event.customer_ref == "cus_exp" and event.subscription_ref == "sub_cus_exp"
            assert event.source_type == SOURCE and event.invoice_ref == "renewal:sub_cus_exp"
            assert event.renews_at == renews_at
            assert event.payment_method == PaymentMethod(exp_year=soon.year, exp_month=soon.month)

        async def noticed() -> list[RecoveryCommand] | None:
            got = await notices(test_settings, kafka_bootstrap)
            return got or None

        (command,) = await eventually(noticed, timeout=60, what="the pre-dunning notice")
        assert command.type is CommandType.NOTIFY_CUSTOMER and command.tenant == opted
        assert command.rule.id == "tenant.card_expiry" and command.template == "card_soon"
        assert command.cause_event_id == by_tenant[opted].event_id
        # The same tick again (a resend after a lost ack) warns nobody twice.
        dup = by_tenant[opted]
        await publish(test_settings, kafka_bootstrap, dup)

    # A cold restart: the watch table comes back from its changelog, the index is rebuilt.
    # A new customer at risk is the marker that the new worker's loop has run.
    await publish(
        test_settings, kafka_bootstrap, *renewals(opted, "cus_new", soon, expiring_at(soon))
    )
    run2 = _settings(test_settings, tmp_path, "w2")
    log2 = tmp_path / "w2.log"
    with paywatch_process(run2, "run", "worker", log=log2) as worker:
        got = await until(
            run2,
            kafka_bootstrap,
            (worker, log2),
            lambda got: any(e.customer_ref == "cus_new" for e in got),
        )

        async def all_folded() -> bool:  # the duplicate tick included
            records = await topic_records(kafka_bootstrap, run2.topic("risk.customers"))
            parts = run2.topic_partitions
            return await committed(run2, kafka_bootstrap, parts, "risk.customers") == len(records)

        await eventually(all_folded, timeout=60, what="every risk.customers record folded")
        got = await warnings(run2, kafka_bootstrap)

        async def two() -> list[RecoveryCommand] | None:
            got = await notices(test_settings, kafka_bootstrap)
            return got if len(got) >= 2 else None

        commands = await eventually(two, timeout=60, what="the new customer's notice")
    keys = sorted((e.tenant, e.customer_ref or "") for e in got)
    assert keys == [(opted, "cus_exp"), (opted, "cus_new"), (plain, "cus_exp")], keys
    assert sorted(c.customer_ref or "" for c in commands) == ["cus_exp", "cus_new"]
    assert customer_key(opted, "cus_later") not in {
        customer_key(e.tenant, e.customer_ref or "") for e in got
    }
