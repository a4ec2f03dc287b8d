"""The `customers` read model and GET /v1/customers[/{ref}] on real Kafka + Postgres.

RiskScore and PaymentEvent records are produced to the test's own topics, the projector
runs in-process over them (as in test_projector.py), and the query API is asked over ASGI.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from paywatch.kafka.codec import make_codec
from paywatch.projections import customers
from paywatch.projections.runner import PROJECTION, Projector
from paywatch.providers.base import event_id
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RiskBand,
    RiskContribution,
    RiskScore,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import hash_api_key
from tests import pages
from tests.kafka_helpers import eventually, publish

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DEADLINE_S = 180.0  # two cores shared with other Kafka test runs: be patient
CONTRIBUTIONS = [
    RiskContribution(feature="failures_30d", contribution=1.5, value=3.0),
    RiskContribution(feature="open_invoices", contribution=0.25, value=1.0),
]
RISK_FIELDS = {"customer_ref", "score", "band", "reasons", "model_version", "as_of"}


def risk(
    tenant: str, ref: str, score: float, band: RiskBand, as_of: datetime = T0, model: str = "m1"
) -> RiskScore:
    return RiskScore(
        tenant=tenant,
        customer_ref=ref,
        score=score,
        band=band,
        reasons=["3 failed payments in 30 days"],
        model_version=model,
        as_of=as_of,
        contributions=CONTRIBUTIONS,
    )


def payment(
    tenant: str,
    customer: str,
    invoice: str,
    minutes: int,
    amount: int,
    currency: str,
    type_: EventType = EventType.PAYMENT_FAILED,
) -> PaymentEvent:
    failed = type_ is EventType.PAYMENT_FAILED
    return PaymentEvent(
        event_id=event_id(tenant, "stripe", f"evt_{invoice}_{type_.value}_{minutes}"),
        type=type_,
        tenant=tenant,
        provider="stripe",
        source_type="test",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref=customer,
        invoice_ref=invoice,
        amount_minor=amount,
        currency=currency,
        attempt=1,
        decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT)
        if failed
        else None,
    )


@asynccontextmanager
async def projecting(
    settings: Settings, bootstrap: str, pool: asyncpg.Pool
) -> AsyncIterator[asyncio.Task[None]]:
    """The projector running in this event loop until the block ends."""
    projector = Projector(settings, bootstrap, pool, make_codec(settings))
    task = asyncio.create_task(projector.run())
    try:
        yield task
    finally:
        projector.stop()
        await asyncio.wait_for(task, 30)


CHECKPOINTS = (
    "SELECT topic, partition, next_offset FROM projection_checkpoints"
    " WHERE projection = $1 AND topic = ANY($2::text[])"
)


async def until_projected(
    pool: asyncpg.Pool, task: asyncio.Task[None], records: Sequence[Coords]
) -> None:
    """Wait until the projector's checkpoints are past every one of `records`.

    Checkpoints are committed in the same transaction as the rows, so then every row of
    those records is written. A crash of the projector task surfaces at once.
    """
    want: dict[tuple[str, int], int] = {}
    for topic, partition, offset in records:
        want[topic, partition] = max(want.get((topic, partition), 0), offset + 1)
    topics = sorted({topic for topic, _ in want})

    async def behind() -> dict[tuple[str, int], int]:
        if task.done():
            task.result()
        rows = await pool.fetch(CHECKPOINTS, PROJECTION, topics)
        done = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        return {tp: end for tp, end in want.items() if done.get(tp, 0) < end}

    async def caught_up() -> bool:
        return not await behind()

    await eventually(caught_up, timeout=DEADLINE_S, what=f"checkpoints past {want}")


async def project(
    settings: Settings, bootstrap: str, pool: asyncpg.Pool, records: Sequence[Coords]
) -> None:
    """Run the projector until it has written `records`, then stop it."""
    async with projecting(settings, bootstrap, pool) as task:
        await until_projected(pool, task, records)


async def tenant_key(pool: asyncpg.Pool, tenant: str) -> dict[str, str]:
    """Create the tenant and an analyst key; return its Authorization header."""
    key = f"pw_{secrets.token_urlsafe(24)}"
    await pool.execute("INSERT INTO tenants (tenant) VALUES ($1)", tenant)
    await pool.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, 'analyst', $2, $3)",
        tenant,
        hash_api_key(key),
        key[:7],
    )
    return {"Authorization": f"Bearer {key}"}


async def walk(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    """Every page of the worklist, checked on the way (tests.pages.walk)."""
    return await pages.walk(api, "/v1/customers", headers, RISK_FIELDS, "customer_ref", **params)


async def test_one_customer_with_and_without_invoices(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    a, b, c = f"{unique}a", f"{unique}b", f"{unique}c"
    key_a, key_b, key_c = [await tenant_key(pool, t) for t in (a, b, c)]
    sent = await publish(test_settings, kafka_bootstrap, [
        risk(a, "cus_rich", 0.82, RiskBand.HIGH),
        risk(a, "cus_scored", 0.3, RiskBand.LOW, model="m2"),
        risk(b, "cus_rich", 0.11, RiskBand.LOW),  # the same ref in another tenant
        risk(b, "cus_b_only", 0.5, RiskBand.MEDIUM),
        # cus_rich: open EUR 1000 + 2500 (EUR is its most recent open invoice), open USD 700
        # (another currency: not summed), GBP recovered and EUR canceled (not open).
        payment(a, "cus_rich", "in_1", 0, 1000, "EUR"),
        payment(a, "cus_rich", "in_3", 5, 700, "USD"),
        payment(a, "cus_rich", "in_2", 10, 2500, "EUR"),
        payment(a, "cus_rich", "in_6", 2, 5000, "EUR"),
        payment(a, "cus_rich", "in_6", 3, 5000, "EUR", EventType.SUBSCRIPTION_CANCELED),
        payment(a, "cus_rich", "in_4", 15, 9999, "GBP"),
        payment(a, "cus_rich", "in_4", 20, 9999, "GBP", EventType.PAYMENT_SUCCEEDED),
        payment(a, "cus_unscored", "in_5", 1, 4200, "USD"),
    ])  # fmt: skip
    await project(test_settings, kafka_bootstrap, pool, sent)

    rich = await api.get("/v1/customers/cus_rich", headers=key_a)
    assert rich.status_code == 200, rich.text
    body = rich.json()
    assert datetime.fromisoformat(body["risk"].pop("as_of")) == T0
    assert body["risk"] == {
        "score": 0.82,
        "band": "high",
        "reasons": [
            {"feature": "failures_30d", "contribution": 1.5, "value": 3.0},
            {"feature": "open_invoices", "contribution": 0.25, "value": 1.0},
        ],
        "model_version": "m1",
    }
    assert body["invoices_open"] == 3
    assert (body["amount_at_risk_minor"], body["currency"]) == (3500, "EUR")
    assert datetime.fromisoformat(body["last_failure_at"]) == T0 + timedelta(minutes=15)

    scored = (await api.get("/v1/customers/cus_scored", headers=key_a)).json()
    assert (scored["risk"]["band"], scored["risk"]["model_version"]) == ("low", "m2")
    assert scored["invoices_open"] == scored["amount_at_risk_minor"] == 0
    assert scored["currency"] is None and scored["last_failure_at"] is None

    unscored = (await api.get("/v1/customers/cus_unscored", headers=key_a)).json()
    assert unscored["risk"] is None
    assert (unscored["invoices_open"], unscored["amount_at_risk_minor"]) == (1, 4200)
    assert unscored["currency"] == "USD"
    assert datetime.fromisoformat(unscored["last_failure_at"]) == T0 + timedelta(minutes=1)

    theirs = (await api.get("/v1/customers/cus_rich", headers=key_b)).json()
    assert (theirs["risk"]["score"], theirs["invoices_open"]) == (0.11, 0)
    assert theirs["last_failure_at"] is None
    for ref, key in [("cus_none", key_a), ("cus_b_only", key_a), ("cus_rich", key_c)]:
        missing = await api.get(f"/v1/customers/{ref}", headers=key)
        assert missing.status_code == 404, (ref, missing.text)
        assert missing.json() == {"error": "not_found", "detail": f"no customer {ref!r}"}
    assert (await api.get("/v1/customers/cus_rich")).status_code == 401


async def test_worklist_band_filter_order_and_pages(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    a, b, c = f"{unique}a", f"{unique}b", f"{unique}c"
    key_a, key_b, key_c = [await tenant_key(pool, t) for t in (a, b, c)]
    high, medium = RiskBand.HIGH, RiskBand.MEDIUM
    sent = await publish(test_settings, kafka_bootstrap, [
        risk(a, "c05", 0.99, RiskBand.CRITICAL),  # replaced below by a newer record
        risk(a, "c01", 0.95, RiskBand.CRITICAL),
        risk(a, "c02", 0.8, high), risk(a, "c03", 0.8, high), risk(a, "c04", 0.8, high),
        risk(a, "c05", 0.65, high),
        risk(a, "c06", 0.4, medium), risk(a, "c07", 0.4, medium),
        risk(a, "c09", 0.1 + 0.2, medium),  # 0.30000000000000004: a cursor must keep it exact
        risk(a, "c10", 0.3, medium),
        risk(a, "c08", 0.1, RiskBand.LOW),
        risk(b, "c99", 0.97, RiskBand.CRITICAL),
    ])  # fmt: skip
    await project(test_settings, kafka_bootstrap, pool, sent)

    # Highest score first; equal scores by customer_ref descending (the cursor's tie-break).
    everyone = ["c01", "c04", "c03", "c02", "c05", "c07", "c06", "c09", "c10", "c08"]
    for limit in (1, 2, 3, 10, 50):
        assert await walk(api, key_a, limit=limit) == everyone, limit
    for spelled in ("high", "HIGH", "High"):
        assert await walk(api, key_a, band=spelled, limit=2) == ["c04", "c03", "c02", "c05"]
    assert await walk(api, key_a, band="critical", limit=1) == ["c01"]
    assert await walk(api, key_a, band="medium", limit=3) == ["c07", "c06", "c09", "c10"]

    first = (await api.get("/v1/customers", params={"band": "low"}, headers=key_a)).json()
    [item] = first["data"]
    assert datetime.fromisoformat(item.pop("as_of")) == T0
    assert item == {
        "customer_ref": "c08", "score": 0.1, "band": "low", "model_version": "m1",
        "reasons": [r.model_dump() for r in CONTRIBUTIONS],
    }  # fmt: skip
    assert first["next_cursor"] is None

    assert await walk(api, key_b) == ["c99"]
    assert await walk(api, key_b, band="high") == []
    empty = await api.get("/v1/customers", headers=key_c)
    assert empty.json() == {"data": [], "next_cursor": None}

    for bad in ("severe", "", "hi gh"):
        r = await api.get("/v1/customers", params={"band": bad}, headers=key_a)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"] == "invalid_request"
        assert "low, medium, high, critical" in r.json()["detail"]
    r = await api.get("/v1/customers", params={"cursor": "!!!"}, headers=key_a)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_cursor")


async def test_an_older_record_never_replaces_a_newer_one(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    """The last record of a key wins, even with an earlier as_of (compaction keeps the last
    record): replaying the older one, alone or from Kafka, changes nothing, not even
    updated_at."""
    settings = test_settings.model_copy(update={"projector_batch": 1})  # one record a batch
    key = await tenant_key(pool, unique)
    older = risk(unique, "cus_x", 0.2, RiskBand.LOW, as_of=T0 + timedelta(hours=1))
    newer = risk(unique, "cus_x", 0.9, RiskBand.CRITICAL, as_of=T0, model="m2")
    at_older, at_newer = await publish(settings, kafka_bootstrap, [older, newer])
    assert at_older < at_newer
    await project(settings, kafka_bootstrap, pool, [at_older, at_newer])
    one = "SELECT * FROM customers WHERE tenant = $1 AND customer_ref = 'cus_x'"
    before = dict(await pool.fetchrow(one, unique))
    assert (before["score"], before["band"], before["model_version"]) == (0.9, "CRITICAL", "m2")

    # A projector behind the others (a rebalance overlap) writes the older record alone.
    async with pool.acquire() as conn, conn.transaction():
        await customers.READ_MODEL.project(conn, [(older, at_older)])
    assert dict(await pool.fetchrow(one, unique)) == before

    # Kafka replay: the checkpoint rewound to 0, so the older record comes back first and
    # alone in its batch; the checkpoint past the newer one again says the replay is done.
    rewound = await pool.execute(
        "UPDATE projection_checkpoints SET next_offset = 0 WHERE projection = $1 AND topic = $2",
        PROJECTION,
        at_newer.topic,
    )
    assert rewound != "UPDATE 0"
    await project(settings, kafka_bootstrap, pool, [at_older, at_newer])
    assert dict(await pool.fetchrow(one, unique)) == before

    answer = (await api.get("/v1/customers/cus_x", headers=key)).json()
    assert (answer["risk"]["score"], answer["risk"]["band"]) == (0.9, "critical")
