"""Issue 12 item 1: PayPal certificate mode's CRC-32 forgery, refused by the ingest (401).

PayPal signs ``transmission_id|time|webhook_id|CRC32(body)``. CRC-32 is affine over GF(2),
so four bytes chosen inside a JSON string make any body match a captured delivery's CRC,
and the captured headers (kept forever in ``webhooks.raw``) verify it. The tests build that
forgery (``forge_crc``), show the pure check accepts it when both guards are off, then
send it to an ingest on real Kafka and Postgres: an old transmission is refused by the
freshness window, a fresh one seen before with other bytes by the transmission-id guard,
whose memory outlives the ingest and is shared by every ingest.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.api.ingest.app import create_app
from paywatch.db import create_pool
from paywatch.errors import VerificationError
from paywatch.kafka.codec import make_codec
from paywatch.providers.paypal import paypal, verify_signature
from paywatch.providers.paypal.replay import body_digest
from paywatch.schemas.models import EventType, RawWebhook
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from paywatch.tenants.transmissions import TransmissionLedger
from tests.builders.paypal import (
    WEBHOOK_ID,
    SamplePki,
    make_test_pki,
    mock_paypal,
    paypal_body,
    paypal_event,
    paypal_sale,
    sign_paypal,
)
from tests.kafka_helpers import topic_records

_PAD = b"\x00\x00\x00\x00"
_JSON_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


@cache
def pki() -> SamplePki:
    return make_test_pki(datetime.now(UTC))


def _solve_gf2(columns: list[int], target: int) -> int:
    """x with XOR of columns[i] over the bits i of x == target (Gaussian elimination)."""
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (vector, columns combined)
    for i, column in enumerate(columns):
        vector, combo = column, 1 << i
        while vector:
            pivot = vector.bit_length() - 1
            if pivot not in basis:
                basis[pivot] = (vector, combo)
                break
            vector, combo = vector ^ basis[pivot][0], combo ^ basis[pivot][1]
    solution = 0
    while target:
        pivot = target.bit_length() - 1
        assert pivot in basis, "no solution"
        target, solution = target ^ basis[pivot][0], solution ^ basis[pivot][1]
    return solution


def forge_crc(prefix: bytes, suffix: bytes, target: int) -> bytes:
    """Four bytes X with crc32(prefix + X + suffix) == target.

    For equal lengths crc32(a ^ b) == crc32(a) ^ crc32(b) ^ crc32(0...), so the CRC is the
    CRC at X = 0 XOR a linear map of X's 32 bits: one column per bit, then solve.
    """
    base = zlib.crc32(prefix + _PAD + suffix)
    columns = [
        zlib.crc32(prefix + (1 << bit).to_bytes(4, "little") + suffix) ^ base for bit in range(32)
    ]
    return _solve_gf2(columns, target ^ base).to_bytes(4, "little")


def forged_success(genuine: bytes, event_id: str) -> bytes:
    """A PAYMENT.SALE.COMPLETED body with the CRC-32 of ``genuine`` (a denied sale).

    The four bytes sit at the end of ``summary``; a counter before them is bumped until
    they are plain JSON string characters (about 1 in 57 tries).
    """
    for attempt in range(10_000):
        event = paypal_event(
            "PAYMENT.SALE.COMPLETED",
            paypal_sale(state="completed"),
            resource_type="sale",
            event_id=event_id,
            summary=f"Payment completed {attempt:04d}@@@@",
        )
        prefix, suffix = paypal_body(event).split(b"@@@@")
        pad = forge_crc(prefix, suffix, zlib.crc32(genuine))
        if all(byte in _JSON_SAFE for byte in pad):
            return prefix + pad + suffix
    raise AssertionError("no JSON-safe padding found")


def denied_sale(event_id: str) -> bytes:
    """A genuine PAYMENT.SALE.DENIED delivery's body."""
    sale = paypal_sale(state="denied", reason_code="PAYMENT_DENIED")
    return paypal_body(
        paypal_event("PAYMENT.SALE.DENIED", sale, resource_type="sale", event_id=event_id)
    )


@dataclass(frozen=True)
class Captured:
    """A genuine signed delivery and a forged body its headers verify."""

    body: bytes
    headers: dict[str, str]
    forged: bytes


def captured(sent: datetime, unique: str) -> Captured:
    """A delivery PayPal signed at ``sent`` (a fresh transmission id) and its forgery."""
    body = denied_sale(f"WH-{unique}-DENIED")
    headers = sign_paypal(
        body,
        WEBHOOK_ID,
        pki().leaf_key,
        transmission_id=str(uuid.uuid1()),
        transmission_time=sent.isoformat().replace("+00:00", "Z"),
    )
    return Captured(body, headers, forged_success(body, f"WH-{unique}-FORGED"))


async def _paypal_tenant(dsn: str, settings: Settings, tenant: str, **extra: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, tenant)
        box = SecretBox(settings.secret_key.get_secret_value())
        await set_secrets(conn, box, tenant, "paypal", {"webhook_id": WEBHOOK_ID, **extra})
    finally:
        await conn.close()


@asynccontextmanager
async def _ingest(settings: Settings, bootstrap: str, dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """One ingest (its own lifespan, pool and producer) whose PayPal is the test PKI."""
    fake = httpx.MockTransport(mock_paypal(pki().bundle, now=datetime.now(UTC)))
    app = create_app(settings, bootstrap, dsn, http_transport=fake)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def _post(
    client: httpx.AsyncClient, tenant: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """Status and JSON answer of one PayPal delivery."""
    resp = await client.post(
        f"/webhooks/paypal/{tenant}",
        content=body,
        headers={**headers, "content-type": "application/json"},
    )
    return resp.status_code, (resp.json() if resp.content else None)


async def _raw_bodies(settings: Settings, bootstrap: str) -> list[bytes]:
    codec = make_codec(settings)
    records = await topic_records(bootstrap, settings.topic("webhooks.raw"))
    return [codec.decode(r.value, RawWebhook).body for r in records]


def test_the_forgery_verifies_when_both_guards_are_off(unique: str) -> None:
    now = datetime.now(UTC)
    old = captured(now - timedelta(days=30), unique)
    assert old.forged != old.body and zlib.crc32(old.forged) == zlib.crc32(old.body)
    # The attack is real: the captured headers verify the forged body...
    verify_signature(old.forged, old.headers, WEBHOOK_ID, pki().bundle, now, tolerance=None)
    forged, genuine = (
        RawWebhook(ingest_id="i", tenant=unique, provider="paypal", received_at=now, body=body)
        for body in (old.forged, old.body)
    )
    [event] = paypal.normalize(forged, "webhooks.raw", 0, 1)
    assert event.type is EventType.PAYMENT_SUCCEEDED  # ...and it reads as a recovered payment
    assert [e.type for e in paypal.normalize(genuine, "webhooks.raw", 0, 0)] == [
        EventType.PAYMENT_FAILED
    ]
    # Freshness (on by default) refuses a month-old transmission, not a fresh one:
    with pytest.raises(VerificationError, match="older than"):
        verify_signature(old.forged, old.headers, WEBHOOK_ID, pki().bundle, now)
    fresh = captured(now, unique)
    verify_signature(fresh.forged, fresh.headers, WEBHOOK_ID, pki().bundle, now)
    assert json.loads(fresh.forged)["event_type"] == "PAYMENT.SALE.COMPLETED"


async def test_an_old_transmission_is_refused_whatever_its_body(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    await _paypal_tenant(pg_dsn, test_settings, unique)
    old = captured(datetime.now(UTC) - timedelta(days=5), unique)  # past the 4-day default
    async with _ingest(test_settings, kafka_bootstrap, pg_dsn) as client:
        status, answer = await _post(client, unique, old.forged, old.headers)
        assert status == 401 and "older than 4 days" in answer["detail"], answer
        status, answer = await _post(client, unique, old.body, old.headers)
        assert status == 401 and "older than" in answer["detail"], answer
    assert await _raw_bodies(test_settings, kafka_bootstrap) == []


async def test_a_seen_transmission_with_other_bytes_is_refused_by_every_ingest(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    await _paypal_tenant(pg_dsn, test_settings, unique)
    fresh = captured(datetime.now(UTC), unique)
    async with (
        _ingest(test_settings, kafka_bootstrap, pg_dsn) as first,
        _ingest(test_settings, kafka_bootstrap, pg_dsn) as second,
    ):
        assert (await _post(first, unique, fresh.body, fresh.headers))[0] == 200
        status, answer = await _post(second, unique, fresh.forged, fresh.headers)
        assert status == 401 and "different body" in answer["detail"], answer
        assert (await _post(second, unique, fresh.body, fresh.headers))[0] == 200  # a retry
    async with _ingest(test_settings, kafka_bootstrap, pg_dsn) as restarted:
        status, answer = await _post(restarted, unique, fresh.forged, fresh.headers)
        assert status == 401 and "different body" in answer["detail"], answer
        assert (await _post(restarted, unique, fresh.body, fresh.headers))[0] == 200
    assert await _raw_bodies(test_settings, kafka_bootstrap) == [fresh.body] * 3
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT transmission_id, body_sha256 FROM paypal_transmissions WHERE tenant = $1",
            unique,
        )
    finally:
        await conn.close()
    assert [(r["transmission_id"], bytes(r["body_sha256"])) for r in rows] == [
        (fresh.headers["paypal-transmission-id"], body_digest(fresh.body))
    ]


async def test_the_window_is_configurable_and_off_is_unsafe(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    """Window off (0): a forgery of a month-old transmission never seen here passes, and
    the genuine bytes then count as the replay; a one-hour window refuses two hours ago."""
    await _paypal_tenant(pg_dsn, test_settings, unique)
    old = captured(datetime.now(UTC) - timedelta(days=30), unique)
    unsafe = test_settings.model_copy(update={"paypal_tolerance_s": 0})
    async with _ingest(unsafe, kafka_bootstrap, pg_dsn) as client:
        assert (await _post(client, unique, old.forged, old.headers))[0] == 200
        status, answer = await _post(client, unique, old.body, old.headers)
        assert status == 401 and "different body" in answer["detail"], answer
    recent = captured(datetime.now(UTC) - timedelta(hours=2), unique)
    strict = test_settings.model_copy(update={"paypal_tolerance_s": 3600})
    async with _ingest(strict, kafka_bootstrap, pg_dsn) as client:
        status, answer = await _post(client, unique, recent.body, recent.headers)
        assert status == 401 and "older than 1:00:00" in answer["detail"], answer


async def test_verify_api_mode_keeps_no_transmission_ids(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    api = {"api_base": "https://api-m.sandbox.paypal.com", "client_id": "test-client"}
    await _paypal_tenant(pg_dsn, test_settings, unique, **api, client_secret="test-secret")
    fresh = captured(datetime.now(UTC), unique)
    async with _ingest(test_settings, kafka_bootstrap, pg_dsn) as client:
        assert (await _post(client, unique, fresh.body, fresh.headers))[0] == 200
    conn = await asyncpg.connect(pg_dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM paypal_transmissions WHERE tenant = $1", unique
        )
    finally:
        await conn.close()
    assert count == 0  # PayPal's API checked the body itself


async def test_ids_past_the_window_are_pruned_and_the_rest_kept(
    test_settings: Settings, pg_dsn: str, unique: str
) -> None:
    await _paypal_tenant(pg_dsn, test_settings, unique)
    now = datetime.now(UTC)
    pool = await create_pool(pg_dsn, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO paypal_transmissions VALUES ($1, $2, $3, $4)",
                [
                    (unique, "expired", body_digest(b"a"), now - timedelta(days=5)),
                    (unique, "kept", body_digest(b"b"), now - timedelta(days=3)),
                ],
            )
        ledger = TransmissionLedger(pool, timedelta(days=4))  # prunes on its first check
        await ledger.check(unique, "new", b"c", now)
        async with pool.acquire() as conn:
            ids = await conn.fetch(
                "SELECT transmission_id FROM paypal_transmissions WHERE tenant = $1"
                " ORDER BY transmission_id",
                unique,
            )
    finally:
        await pool.close()
    assert [r["transmission_id"] for r in ids] == ["kept", "new"]
