"""Thin webhooks (Xero, QuickBooks) on real Kafka and Postgres, with a local fake provider API.

Ingest answers Xero's contract (intent-to-receive, empty bodies); the worker (a real
``paywatch run worker`` process) fetches what each webhook names with the tenant's OAuth
app, logs the exact documents to ``webhooks.fetched`` before normalizing them, stores
rotated refresh tokens, and dead-letters what it cannot fetch with the reason. Fetches run
in the worker's fetch agent, a few at a time per tenant: a tenant whose API hangs delays
only its own documents.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

from paywatch.api.ingest.app import create_app as create_ingest
from paywatch.kafka.codec import make_codec
from paywatch.providers.registry import configured_providers
from paywatch.schemas.models import DeadLetter, EventType, FetchedDocument, PaymentEvent
from paywatch.settings import Settings
from paywatch.streams.fetch import normalize_fetched, thin
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets, valid_secrets
from tests.builders import quickbooks as qbo
from tests.builders import xero as xs
from tests.fake_ledgers import Ledgers, quickbooks_path, serve_ledgers, xero_path
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process


async def _tenant(settings: Settings, dsn: str, name: str, provider: str, **secrets: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, name)
        box = SecretBox(settings.secret_key.get_secret_value())
        await set_secrets(conn, box, name, provider, secrets)
    finally:
        await conn.close()


async def _secrets(
    settings: Settings, dsn: str, tenant: str, provider: str
) -> list[dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        box = SecretBox(settings.secret_key.get_secret_value())
        found = await valid_secrets(conn, box, tenant, provider, timedelta(hours=24))
        assert found is not None
        return found
    finally:
        await conn.close()


def _xero_secrets(ledgers: Ledgers) -> dict[str, str]:
    return {
        "webhook_key": xs.WEBHOOK_KEY,
        "client_id": xs.CLIENT_ID,
        "client_secret": xs.CLIENT_SECRET,
        "refresh_token": xs.REFRESH_TOKEN,
        "api_base": ledgers.api_base("xero"),
    }


async def test_xero_intent_to_receive_and_empty_answers(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    await _tenant(test_settings, pg_dsn, unique, "xero", webhook_key=xs.WEBHOOK_KEY)
    itr = xs.xero_body(xs.xero_itr())
    batch = xs.xero_body(xs.xero_failure())
    app = create_ingest(test_settings, kafka_bootstrap, pg_dsn)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        ) as client:
            url = f"/webhooks/xero/{unique}"
            good = await client.post(url, content=itr, headers=xs.xero_headers(itr))
            bad = await client.post(url, content=itr, headers=xs.xero_headers(itr, key="wrong"))
            unsigned = await client.post(url, content=itr)
            accepted = await client.post(url, content=batch, headers=xs.xero_headers(batch))
    assert (good.status_code, good.content) == (200, b"")
    assert (bad.status_code, bad.content) == (401, b"")
    assert (unsigned.status_code, unsigned.content) == (401, b"")
    assert (accepted.status_code, accepted.content) == (200, b"")
    raw = await topic_records(kafka_bootstrap, test_settings.topic("webhooks.raw"))
    bodies = [r.value for r in raw if r.key.startswith(f"{unique}/".encode())]
    assert len(bodies) == 1 and batch in bodies[0]  # the handshake stored nothing


async def test_worker_fetches_logs_normalizes_rotates_and_dead_letters(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    codec = make_codec(test_settings)
    with serve_ledgers() as ledgers:
        settings = test_settings.model_copy(
            update={
                "xero_token_url": ledgers.token_url("xero"),
                "quickbooks_token_url": ledgers.token_url("quickbooks"),
                "fetch_deadline_s": 3.0,
            }
        )
        xero_fake, qbo_fake = ledgers.fakes["xero"], ledgers.fakes["quickbooks"]
        overdue = xs.xero_body(xs.xero_overdue())
        xero_fake.resources[xero_path()] = (200, overdue)
        paid_invoice = qbo.qbo_body(qbo.qbo_paid())
        qbo_fake.resources[quickbooks_path("payment", qbo.PAYMENT_ID)] = (
            200,
            qbo.qbo_body(qbo.qbo_payment()),
        )
        qbo_fake.resources[quickbooks_path("invoice", qbo.INVOICE_ID)] = (200, paid_invoice)
        ok, qb, no_oauth, down = (f"{unique}-{n}" for n in ("ok", "qb", "nooauth", "down"))
        await _tenant(settings, pg_dsn, ok, "xero", **_xero_secrets(ledgers))
        await _tenant(
            settings,
            pg_dsn,
            qb,
            "quickbooks",
            verifier_token=qbo.VERIFIER_TOKEN,
            client_id=qbo.CLIENT_ID,
            client_secret=qbo.CLIENT_SECRET,
            refresh_token=qbo.REFRESH_TOKEN,
            api_base=ledgers.api_base("quickbooks"),
        )
        await _tenant(settings, pg_dsn, no_oauth, "xero", webhook_key=xs.WEBHOOK_KEY)
        await _tenant(
            settings,
            pg_dsn,
            down,
            "xero",
            **{**_xero_secrets(ledgers), "api_base": "http://127.0.0.1:9/api.xro/2.0"},
        )
        failure = xs.xero_body(xs.xero_failure())
        recovery = qbo.qbo_body(qbo.qbo_recovery())
        app = create_ingest(settings, kafka_bootstrap, pg_dsn)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ingest"
            ) as client:
                for tenant in (ok, no_oauth, down):
                    resp = await client.post(
                        f"/webhooks/xero/{tenant}",
                        content=failure,
                        headers=xs.xero_headers(failure),
                    )
                    assert resp.status_code == 200, resp.text
                resp = await client.post(
                    f"/webhooks/quickbooks/{qb}",
                    content=recovery,
                    headers=qbo.quickbooks_headers(recovery),
                )
                assert resp.status_code == 200, resp.text

        log = tmp_path / "worker.log"
        with paywatch_process(settings, "run", "worker", log=log) as worker:

            async def events_of(tenant: str) -> list[PaymentEvent] | None:
                assert worker.poll() is None, log_tail(log)
                records = await topic_records(kafka_bootstrap, settings.topic("payments.events"))
                found = [
                    codec.decode(r.value, PaymentEvent, topic=r.topic)
                    for r in records
                    if r.key.startswith(f"{tenant}/".encode())
                ]
                return found or None

            async def letters() -> list[DeadLetter] | None:
                assert worker.poll() is None, log_tail(log)
                records = await topic_records(kafka_bootstrap, settings.topic("webhooks.raw.dlq"))
                found = [codec.decode(r.value, DeadLetter, topic=r.topic) for r in records]
                mine = [
                    d
                    for d in found
                    if d.key and d.key.split(b"/")[0] in (no_oauth.encode(), down.encode())
                ]
                return mine if len(mine) == 2 else None

            (xero_event,) = await eventually(lambda: events_of(ok), timeout=90, what="xero")
            (qbo_event,) = await eventually(lambda: events_of(qb), timeout=90, what="qbo")
            dead = await eventually(letters, timeout=90, what="two fetch dead letters")

    # Xero: the overdue invoice became a failure with the webhook's time and the amount due.
    assert xero_event.type is EventType.INVOICE_OVERDUE
    assert (xero_event.invoice_ref, xero_event.amount_minor, xero_event.currency) == (
        xs.INVOICE_ID,
        4900,
        "USD",
    )
    assert xero_event.decline is not None and xero_event.decline.category.value == "ACTION"
    # QuickBooks: the payment named the invoice it pays; the invoice's state decided.
    assert qbo_event.type is EventType.PAYMENT_SUCCEEDED
    assert (qbo_event.invoice_ref, qbo_event.amount_minor) == (qbo.INVOICE_ID, 4900)

    # The exact documents were logged before normalization, with what asked for them.
    fetched_records = await topic_records(kafka_bootstrap, settings.topic("webhooks.fetched"))
    fetched = [codec.decode(r.value, FetchedDocument, topic=r.topic) for r in fetched_records]
    by_tenant = {t: [d for d in fetched if d.tenant == t] for t in (ok, qb)}
    (xero_doc,) = by_tenant[ok]
    assert (xero_doc.status, xero_doc.document, xero_doc.ref.resource_id) == (
        200,
        overdue,
        xs.INVOICE_ID,
    )
    assert xero_doc.source.topic == settings.topic("webhooks.raw")
    payment_doc, invoice_doc = sorted(by_tenant[qb], key=lambda d: d.parent_resource_id or "")
    assert (payment_doc.ref.kind, payment_doc.parent_resource_id) == ("payment", None)
    assert (invoice_doc.ref.kind, invoice_doc.parent_resource_id) == ("invoice", qbo.PAYMENT_ID)
    assert invoice_doc.document == paid_invoice

    # Replay: re-normalizing the fetched log gives the same events, with no provider call.
    calls = len(xero_fake.requests) + len(qbo_fake.requests)
    providers = configured_providers(settings)
    replayed = []
    for record, doc in zip(fetched_records, fetched, strict=True):
        if doc.tenant in (ok, qb):
            provider = thin(providers[doc.provider])
            assert provider is not None
            coords = (record.topic, record.partition, record.offset)
            replayed.extend(normalize_fetched(provider, doc, coords))
    assert {e.event_id for e in replayed} == {xero_event.event_id, qbo_event.event_id}
    assert len(xero_fake.requests) + len(qbo_fake.requests) == calls

    # Xero rotated the refresh token: the newest one is stored, the old one kept in grace.
    stored = await _secrets(settings, pg_dsn, ok, "xero")
    assert stored[0]["refresh_token"] == xero_fake.refresh_token != xs.REFRESH_TOKEN
    assert stored[1]["refresh_token"] == xs.REFRESH_TOKEN

    # What could not be fetched is dead-lettered with the reason, the raw record kept.
    reasons = {d.key.split(b"/")[0].decode(): d for d in dead if d.key}
    assert reasons[no_oauth].stage == "fetch"
    assert "OAuth credentials" in reasons[no_oauth].error
    assert reasons[down].stage == "fetch"
    assert "unavailable for 3 s" in reasons[down].error
    assert reasons[down].payload and failure in reasons[down].payload


@contextmanager
def hanging_api() -> Iterator[str]:
    """An API base that accepts connections and never answers (a hung provider API)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(128)  # connections complete in the backlog; nothing ever reads them
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api.xro/2.0"


async def test_a_hung_tenant_api_delays_only_that_tenants_documents(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    codec = make_codec(test_settings)
    with serve_ledgers() as ledgers, hanging_api() as hung_base:
        settings = test_settings.model_copy(
            update={"xero_token_url": ledgers.token_url("xero"), "fetch_deadline_s": 600.0}
        )
        ledgers.fakes["xero"].resources[xero_path()] = (200, xs.xero_body(xs.xero_overdue()))
        hung, ok = f"{unique}-hung", f"{unique}-ok"
        await _tenant(
            settings, pg_dsn, hung, "xero", **{**_xero_secrets(ledgers), "api_base": hung_base}
        )
        await _tenant(settings, pg_dsn, ok, "xero", **_xero_secrets(ledgers))
        # More webhooks of the hung tenant than it may fetch at once, all before ok's one.
        deliveries = [(hung, xs.xero_batch(xs.xero_event(), first_sequence=i)) for i in range(8)]
        deliveries.append((ok, xs.xero_failure()))
        app = create_ingest(settings, kafka_bootstrap, pg_dsn)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ingest"
            ) as client:
                for tenant, doc in deliveries:
                    body = xs.xero_body(doc)
                    resp = await client.post(
                        f"/webhooks/xero/{tenant}", content=body, headers=xs.xero_headers(body)
                    )
                    assert resp.status_code == 200, resp.text

        log = tmp_path / "worker.log"
        with paywatch_process(settings, "run", "worker", log=log) as worker:

            async def events_of(tenant: str) -> list[PaymentEvent] | None:
                assert worker.poll() is None, log_tail(log)
                records = await topic_records(kafka_bootstrap, settings.topic("payments.events"))
                found = [
                    codec.decode(r.value, PaymentEvent, topic=r.topic)
                    for r in records
                    if r.key.startswith(f"{tenant}/".encode())
                ]
                return found or None

            # The hung API holds its fetches for up to 600 s; ok's document flows meanwhile.
            (event,) = await eventually(lambda: events_of(ok), timeout=90, what="ok's event")
            assert event.type is EventType.INVOICE_OVERDUE
            assert await events_of(hung) is None
            letters = await topic_records(kafka_bootstrap, settings.topic("webhooks.raw.dlq"))
            assert not [r for r in letters if r.key.startswith(f"{hung}/".encode())]
