"""Stripe webhooks: ingest -> Faust normalize worker -> projector, on real Kafka + Postgres."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from paywatch.api.ingest.app import create_app
from paywatch.db import create_pool
from paywatch.kafka.codec import make_codec
from paywatch.projections.runner import Projector
from paywatch.risk.alerts import decode_signal
from paywatch.schemas.models import DeadLetter, PaymentEvent, RiskScore
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.builders import stripe as samples
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

SECRET = "whsec_pipeline_secret"


def webhooks(now: int) -> list[tuple[str, bytes]]:
    """(name, body) of the deliveries, in the order posted."""
    ev = samples.stripe_event
    legacy_fail = ev(
        "invoice.payment_failed",
        samples.stripe_invoice(
            basil=False, invoice_id="in_A", amount_due=4900, attempt_count=1, created=now
        ),
        event_id="evt_A1",
        created=now,
        api_version="2024-06-20",
    )
    hard_charge = ev(
        "charge.failed",
        samples.stripe_charge_failed(
            basil=False, invoice="in_A", reason="stolen_card", created=now + 1
        ),
        event_id="evt_A2",
        created=now + 1,
        api_version="2024-06-20",
    )
    b_fail = ev(
        "invoice.payment_failed",
        samples.stripe_invoice(
            basil=True,
            invoice_id="in_B",
            amount_due=1500,
            currency="eur",
            attempt_count=2,
            created=now,
        ),
        event_id="evt_B1",
        created=now,
    )
    b_paid = ev(
        "invoice.paid",
        samples.stripe_invoice(
            basil=True, invoice_id="in_B", amount_due=1500, currency="eur", paid=True, created=now
        ),
        event_id="evt_B2",
        created=now + 60,
    )
    ignored = ev(
        "customer.created", {"id": "cus_X", "object": "customer"}, event_id="evt_X", created=now
    )
    bodies = [
        ("A1", legacy_fail),
        ("A2", hard_charge),
        ("B1", b_fail),
        ("B2", b_paid),
        ("X", ignored),
        ("A1-again", legacy_fail),
    ]
    return [(name, samples.stripe_body(doc)) for name, doc in bodies]


async def post_all(settings: Settings, bootstrap: str, dsn: str, tenant: str) -> None:
    app = create_app(settings, bootstrap, dsn)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        ) as client:
            for name, body in webhooks(int(time.time())):
                sig = samples.sign_stripe(body, SECRET, int(time.time()))
                resp = await client.post(
                    f"/webhooks/stripe/{tenant}", content=body, headers={"Stripe-Signature": sig}
                )
                assert resp.status_code == 200, (name, resp.text)


async def garbage_into_raw(settings: Settings, bootstrap: str, tenant: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("webhooks.raw"), key=f"{tenant}/x".encode(), value=b"\x00garbage"
        )
    finally:
        await producer.stop()


async def events_in_topic(settings: Settings, bootstrap: str) -> list[PaymentEvent]:
    codec = make_codec(settings)
    records = await topic_records(bootstrap, settings.topic("payments.events"))
    return [codec.decode(r.value, PaymentEvent) for r in records]


async def test_stripe_webhooks_become_read_models(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await create_tenant(conn, unique)
    box = SecretBox(test_settings.secret_key.get_secret_value())
    await set_secrets(conn, box, unique, "stripe", {"signing_secret": SECRET})
    await conn.close()
    await post_all(test_settings, kafka_bootstrap, pg_dsn, unique)
    await garbage_into_raw(test_settings, kafka_bootstrap, unique)

    log = tmp_path / "worker.log"
    with paywatch_process(test_settings, "run", "worker", log=log) as worker:

        async def normalized() -> list[PaymentEvent]:
            assert worker.poll() is None, log_tail(log)
            events = await events_in_topic(test_settings, kafka_bootstrap)
            return events if len(events) >= 4 else []

        events = await eventually(normalized, timeout=120, what="4 canonical events")
        # The same events, keyed by customer, feed the risk agent: one score per customer.
        scores = await eventually(
            lambda: topic_records(kafka_bootstrap, test_settings.topic("risk.scores")),
            timeout=60,
            what="a risk score",
        )

        async def repartitioned() -> list[Any]:
            found = await topic_records(kafka_bootstrap, test_settings.topic("risk.customers"))
            return found if len(found) >= len(events) else []

        by_customer = await eventually(repartitioned, what="the events keyed by customer")
        signals = await topic_records(kafka_bootstrap, test_settings.topic("risk.tenants"))
        # The worker keeps running: the sagas' decisions are part of the read models.
        rows = await project_until(test_settings, kafka_bootstrap, pg_dsn, unique, count=2)
        letters = await eventually(
            lambda: topic_records(kafka_bootstrap, test_settings.topic("webhooks.raw.dlq")),
            what="a dead letter for the garbage record",
        )

    # the duplicate delivery of evt_A1 and the unhandled type produced nothing
    assert sorted((e.invoice_ref, e.type.value) for e in events) == [
        ("in_A", "PAYMENT_FAILED"),
        ("in_A", "PAYMENT_FAILED"),
        ("in_B", "PAYMENT_FAILED"),
        ("in_B", "PAYMENT_SUCCEEDED"),
    ]
    assert len({e.event_id for e in events}) == 4
    codec = make_codec(test_settings)
    # Both invoices are one Stripe customer's: all four events under that one key, in order.
    customer = f"{unique}/{samples.CUSTOMER_ID}".encode()
    assert {r.key for r in by_customer} == {customer}
    assert sorted(codec.decode(r.value, PaymentEvent).event_id for r in by_customer) == sorted(
        e.event_id for e in events
    )
    # Every failure and success is also a signal for the tenant's alerts, keyed by tenant.
    assert sorted(decode_signal(r.value).event_id for r in signals) == sorted(
        e.event_id for e in events
    )
    assert {r.key for r in signals} == {unique.encode()}
    first = codec.decode(scores[0].value, RiskScore)
    assert (scores[0].key, first.tenant, first.customer_ref) == (
        customer,
        unique,
        samples.CUSTOMER_ID,
    )
    letter = make_codec(test_settings).decode(letters[0].value, DeadLetter)
    assert letter.payload == b"\x00garbage" and letter.stage == "normalize"
    assert "CodecError" in letter.error

    a, b = rows["in_A"], rows["in_B"]
    # A stolen card is never retried: its saga waits for a new payment method.
    assert (a["status"], a["amount_minor"], a["currency"], a["attempts"]) == (
        "awaiting_customer",
        4900,
        "USD",
        1,
    )
    assert (a["last_decline_code"], a["last_decline_category"]) == ("stolen_card", "HARD")
    assert (b["status"], b["amount_minor"], b["currency"], b["attempts"]) == (
        "recovered",
        1500,
        "EUR",
        2,
    )


async def project_until(
    settings: Settings, bootstrap: str, dsn: str, tenant: str, count: int
) -> dict[str, Any]:
    pool = await create_pool(dsn)
    projector = Projector(settings, bootstrap, pool, make_codec(settings))
    task = asyncio.create_task(projector.run())
    try:

        async def rows() -> dict[str, Any]:
            assert not task.done() or task.result() is None
            found = await pool.fetch("SELECT * FROM invoices WHERE tenant = $1", tenant)
            # Statuses are saga states: wait for the sagas' decisions too, not just rows.
            settled = {"recovered", "awaiting_customer", "exhausted", "canceled"}
            done = len(found) == count and all(r["status"] in settled for r in found)
            return {r["invoice_ref"]: dict(r) for r in found} if done else {}

        return await eventually(rows, what=f"{count} invoices")
    finally:
        projector.stop()
        await asyncio.wait_for(task, 30)
        await pool.close()
