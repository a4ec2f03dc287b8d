"""Ingest on real Kafka and Postgres: every status code of ARCHITECTURE §6."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.api.ingest.app import create_app
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import RawWebhook
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.builders import stripe as samples
from tests.kafka_helpers import topic_records

SECRET = "whsec_test_ingest_secret"
NEW_SECRET = "whsec_test_rotated_secret"


def failure_body(event_id: str = "evt_ingest_1", invoice: str = "in_ingest_1") -> bytes:
    inv = samples.stripe_invoice(
        invoice_id=invoice,
        customer="cus_ingest",
        subscription="sub_ingest",
        amount_due=2500,
        currency="eur",
        attempt_count=1,
        basil=True,
    )
    event = samples.stripe_event(
        "invoice.payment_failed",
        inv,
        event_id=event_id,
        created=int(time.time()),
        api_version="2025-03-31.basil",
    )
    return json.dumps(event).encode()


def signed(body: bytes, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {
        "Stripe-Signature": samples.sign_stripe(body, secret, stamp),
        "Content-Type": "application/json",
    }


async def _tenant(dsn: str, settings: Settings, name: str, *secrets: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, name)
        box = SecretBox(settings.secret_key.get_secret_value())
        for secret in secrets:
            await set_secrets(conn, box, name, "stripe", {"signing_secret": secret})
    finally:
        await conn.close()


async def _client(settings: Settings, bootstrap: str, dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, bootstrap, dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


@pytest.fixture
async def tenant(test_settings: Settings, pg_dsn: str, unique: str) -> str:
    await _tenant(pg_dsn, test_settings, unique, SECRET)
    return unique


@pytest.fixture
async def client(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, tenant: str
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(test_settings, kafka_bootstrap, pg_dsn):
        yield c


async def raw_records(settings: Settings, bootstrap: str) -> list[Any]:
    return await topic_records(bootstrap, settings.topic("webhooks.raw"))


async def test_signed_failure_is_appended_with_exact_bytes(
    client: httpx.AsyncClient, tenant: str, test_settings: Settings, kafka_bootstrap: str
) -> None:
    body = failure_body()
    resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=signed(body))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "accepted"
    records = await raw_records(test_settings, kafka_bootstrap)
    assert len(records) == 1
    raw = make_codec(test_settings).decode(records[0].value, RawWebhook)
    assert raw.body == body  # exact bytes, never re-serialized
    assert (raw.tenant, raw.provider, raw.subject) == (tenant, "stripe", "in_ingest_1")
    assert records[0].key == f"{tenant}/stripe/in_ingest_1".encode()
    assert "stripe-signature" in raw.headers


async def test_duplicate_delivery_is_accepted_again(client: httpx.AsyncClient, tenant: str) -> None:
    body = failure_body()
    for _ in range(2):
        resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=signed(body))
        assert resp.status_code == 200  # the normalize agent drops the duplicate


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("wrong_secret", 401),
        ("no_header", 401),
        ("expired", 401),
        ("tampered", 401),
        ("pan", 422),
        ("not_json", 400),
    ],
)
async def test_rejections_write_nothing(
    client: httpx.AsyncClient,
    tenant: str,
    test_settings: Settings,
    kafka_bootstrap: str,
    case: str,
    status: int,
) -> None:
    body = failure_body()
    headers = signed(body)
    if case == "wrong_secret":
        headers = signed(body, secret="whsec_someone_else")
    elif case == "no_header":
        headers = {"Content-Type": "application/json"}
    elif case == "expired":
        headers = signed(body, ts=int(time.time()) - 301)
    elif case == "tampered":
        body = body.replace(b"2500", b"2501")
    elif case == "pan":
        body = body.replace(b"cus_ingest", b"4242 4242 4242 4242")
        headers = signed(body)
    elif case == "not_json":
        body = b"amount=2500&currency=eur"
        headers = signed(body)
    resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert "4242" not in resp.text
    assert await raw_records(test_settings, kafka_bootstrap) == []


async def test_unknown_tenant_and_provider_are_404(client: httpx.AsyncClient, tenant: str) -> None:
    body = failure_body()
    assert (
        await client.post("/webhooks/stripe/nobody-here", content=body, headers=signed(body))
    ).status_code == 404
    assert (
        await client.post(f"/webhooks/square/{tenant}", content=body, headers=signed(body))
    ).status_code == 404


async def test_oversize_body_is_413_declared_or_streamed(
    client: httpx.AsyncClient, tenant: str, test_settings: Settings, kafka_bootstrap: str
) -> None:
    big = b"{" + b" " * (256 * 1024) + b"}"
    resp = await client.post(f"/webhooks/stripe/{tenant}", content=big, headers=signed(big))
    assert resp.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b" " * 1024

    resp = await client.post(f"/webhooks/stripe/{tenant}", content=chunks(), headers=signed(b""))
    assert resp.status_code == 413
    assert await raw_records(test_settings, kafka_bootstrap) == []


async def test_rotated_secret_and_previous_one_both_verify(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    tenant = f"{unique}-rot"
    await _tenant(pg_dsn, test_settings, tenant, SECRET, NEW_SECRET)
    async for client in _client(test_settings, kafka_bootstrap, pg_dsn):
        for i, secret in enumerate((SECRET, NEW_SECRET)):
            body = failure_body(event_id=f"evt_rot_{i}")
            resp = await client.post(
                f"/webhooks/stripe/{tenant}", content=body, headers=signed(body, secret=secret)
            )
            assert resp.status_code == 200, (secret, resp.text)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kafka_unreachable_is_503_and_health_says_so(
    test_settings: Settings, pg_dsn: str, tenant: str
) -> None:
    settings = test_settings.model_copy(update={"ingest_ack_timeout_s": 1.0})
    async for client in _client(settings, f"127.0.0.1:{_closed_port()}", pg_dsn):
        body = failure_body()
        resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=signed(body))
        assert resp.status_code == 503
        assert (await client.get("/health")).status_code == 503


async def test_health_and_metrics(client: httpx.AsyncClient, tenant: str) -> None:
    assert (await client.get("/health")).status_code == 200
    body = failure_body()
    await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=signed(body))
    metrics = (await client.get("/metrics")).text
    assert 'paywatch_ingest_requests_total{outcome="accepted",provider="stripe"}' in metrics


async def test_stripe_tolerance_is_configurable(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, tenant: str
) -> None:
    body = failure_body()
    minute_old = signed(body, ts=int(time.time()) - 60)
    strict = test_settings.model_copy(update={"stripe_tolerance_s": 10})
    async for client in _client(strict, kafka_bootstrap, pg_dsn):
        resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=minute_old)
        assert resp.status_code == 401
    async for client in _client(test_settings, kafka_bootstrap, pg_dsn):
        resp = await client.post(f"/webhooks/stripe/{tenant}", content=body, headers=minute_old)
        assert resp.status_code == 200


async def test_braintree_challenge_and_get_on_other_providers(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    from paywatch.providers.braintree import challenge_response
    from tests.builders import braintree as bt

    tenant = f"{unique}-bt"
    conn = await asyncpg.connect(pg_dsn)
    await create_tenant(conn, tenant)
    box = SecretBox(test_settings.secret_key.get_secret_value())
    await set_secrets(
        conn, box, tenant, "braintree", {"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY}
    )
    await conn.close()
    secrets = [{"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY}]
    async for client in _client(test_settings, kafka_bootstrap, pg_dsn):
        resp = await client.get(
            f"/webhooks/braintree/{tenant}",
            params={"bt_challenge": "20f9f8ed05f77439fe955c977e4c8a53"},
        )
        assert resp.status_code == 200
        assert resp.text == challenge_response("20f9f8ed05f77439fe955c977e4c8a53", secrets)
        assert resp.text.startswith(f"{bt.PUBLIC_KEY}|")
        assert (await client.get(f"/webhooks/braintree/{tenant}")).status_code == 400
        assert (
            await client.get(f"/webhooks/braintree/{tenant}", params={"bt_challenge": "<script>"})
        ).status_code == 400
        assert (
            await client.get("/webhooks/braintree/nobody", params={"bt_challenge": "ab"})
        ).status_code == 404
        assert (await client.get(f"/webhooks/stripe/{tenant}")).status_code == 405


def _luhn_valid_id(prefix: str, length: int) -> str:
    from paywatch.providers.pan import luhn_valid

    for n in range(10**6):
        candidate = f"{prefix}{n:0{length - len(prefix)}d}"
        if luhn_valid(candidate.encode()):
            return candidate
    raise AssertionError("no Luhn-valid id found")


async def test_adyen_reply_and_checkout_network_ids_are_not_card_numbers(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    from tests.builders import adyen as ady
    from tests.builders import checkout as cko

    tenant = f"{unique}-pp"
    conn = await asyncpg.connect(pg_dsn)
    await create_tenant(conn, tenant)
    box = SecretBox(test_settings.secret_key.get_secret_value())
    await set_secrets(conn, box, tenant, "adyen", {"hmac_key": ady.HMAC_KEY})
    await set_secrets(conn, box, tenant, "checkout", {"signature_key": cko.SIGNATURE_KEY})
    await conn.close()
    scheme_id = _luhn_valid_id("4", 15)  # a Visa transaction id that passes Luhn by chance
    event = cko.checkout_failure()
    event["data"]["scheme_id"] = scheme_id
    checkout_body = cko.checkout_body(event)
    with_pan = cko.checkout_failure()
    with_pan["data"]["description"] = "card 4242 4242 4242 4242"
    pan_body = cko.checkout_body(with_pan)
    adyen_body = ady.adyen_body(ady.adyen_failure())
    async for client in _client(test_settings, kafka_bootstrap, pg_dsn):
        resp = await client.post(
            f"/webhooks/adyen/{tenant}", content=adyen_body, headers=ady.adyen_headers(adyen_body)
        )
        assert (resp.status_code, resp.text) == (200, "[accepted]")
        resp = await client.post(
            f"/webhooks/checkout/{tenant}",
            content=checkout_body,
            headers=cko.checkout_headers(checkout_body),
        )
        assert resp.status_code == 200, resp.text
        resp = await client.post(
            f"/webhooks/checkout/{tenant}", content=pan_body, headers=cko.checkout_headers(pan_body)
        )
        assert resp.status_code == 422
