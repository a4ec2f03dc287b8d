"""Query API against a real Postgres: auth, tenant isolation, pagination, filters, ops routes."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI

from paywatch.api.query import permissions
from paywatch.api.query.deps import Principal, require_role
from paywatch.tenants.api_keys import hash_api_key

pytestmark = pytest.mark.integration

OperatorCaller = Annotated[Principal, Depends(require_role("operator"))]
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass
class World:
    """Two tenants' rows and keys; ``invoices`` is tenant A's expected list order."""

    a: str
    b: str
    key_a: str
    key_b: str
    revoked: str
    operator: str
    invoices: list[str]
    failures: list[str]


async def _key(db: asyncpg.Connection, tenant: str, role: str, revoked: bool = False) -> str:
    key = f"pw_{secrets.token_urlsafe(24)}"
    await db.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix, revoked_at) VALUES ($1,$2,$3,$4,$5)",
        tenant, role, hash_api_key(key), key[:7], T0 if revoked else None,
    )  # fmt: skip
    return key


async def _invoice(db: asyncpg.Connection, tenant: str, ref: str, at: datetime, **kw: Any) -> None:
    row = {"provider": "stripe", "status": "failed", "customer_ref": "cus_1", "attempts": 1} | kw
    await db.execute(
        "INSERT INTO invoices (tenant, invoice_ref, provider, customer_ref, status, amount_minor,"
        " currency, attempts, last_decline_code, last_decline_category, first_failed_at,"
        " last_failed_at, last_event_at, last_event_id)"
        " VALUES ($1,$2,$3,$4,$5,$6,'EUR',$7,$8,$9,$10,$10,$10,$11)",
        tenant, ref, row["provider"], row["customer_ref"], row["status"], row.get("amount", 1999),
        row["attempts"], row.get("code", "card_declined"), row.get("category", "SOFT"), at,
        uuid.uuid4(),
    )  # fmt: skip


async def _failure(db: asyncpg.Connection, tenant: str, ref: str, at: datetime, **kw: Any) -> str:
    event_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO failures (event_id, tenant, invoice_ref, provider, customer_ref, occurred_at,"
        " amount_minor, currency, attempt, decline_code, decline_category, decline_network,"
        " card_brand, card_last4, topic, partition, \"offset\") VALUES"
        " ($1,$2,$3,$4,$5,$6,1999,'EUR',1,$7,$8,'visa','visa','4242','payments.events',3,$9)",
        event_id, tenant, ref, kw.get("provider", "stripe"), kw.get("customer_ref", "cus_1"), at,
        kw.get("code", "insufficient_funds"), kw.get("category", "SOFT"), kw.get("offset", 7),
    )  # fmt: skip
    return str(event_id)


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def world(db: asyncpg.Connection, unique: str) -> World:
    a, b = f"{unique}a", f"{unique}b"
    await db.executemany("INSERT INTO tenants (tenant) VALUES ($1)", [(a,), (b,)])
    # Two invoices share a timestamp: the ref breaks the tie, pagination must not skip either.
    at = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    refs = ["in_1", "in_2a", "in_2b", "sub:sub_123"]
    for ref, when in zip(refs, at, strict=True):
        await _invoice(db, a, ref, when)
    await _invoice(db, a, "in_ok", T0 - timedelta(days=1), status="recovered", provider="paypal")
    await _invoice(db, a, "shared", T0 - timedelta(days=2), amount=100)
    await _invoice(db, b, "shared", T0 + timedelta(days=1), amount=999_999)
    await _invoice(db, b, "only_b", T0 + timedelta(days=1))
    fails = [
        await _failure(db, a, "in_1", T0 + timedelta(seconds=s), category=c, offset=s)
        for s, c in [(0, "SOFT"), (10, "HARD"), (20, "SOFT")]
    ]
    await _failure(db, a, "in_ok", T0 - timedelta(days=1), provider="paypal", customer_ref="cus_9")
    await _failure(db, b, "only_b", T0 + timedelta(seconds=5))
    return World(
        a=a, b=b, key_a=await _key(db, a, "analyst"), key_b=await _key(db, b, "analyst"),
        revoked=await _key(db, a, "admin", revoked=True), operator=await _key(db, a, "operator"),
        invoices=["sub:sub_123", "in_2b", "in_2a", "in_1", "in_ok", "shared"],
        failures=fails[::-1],
    )  # fmt: skip


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def walk(api: httpx.AsyncClient, key: str, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, asserting the page shape on the way."""
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = params | ({"cursor": cursor} if cursor else {})
        r = await api.get(url, params=query, headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "next_cursor"}
        assert len(body["data"]) <= params.get("limit", 50)
        assert body["data"] or not rows, "an empty page after a non-null next_cursor"
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}]
)
async def test_missing_or_malformed_header_is_401(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await api.get("/v1/invoices", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"] == "unauthorized"


async def test_unknown_and_revoked_keys_are_401(api: httpx.AsyncClient, world: World) -> None:
    for key in ("pw_not_a_key", world.revoked):
        r = await api.get("/v1/invoices", headers=auth(key))
        assert r.status_code == 401, key
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert set(r.json()) == {"error", "detail"}


async def test_list_is_data_and_next_cursor(api: httpx.AsyncClient, world: World) -> None:
    r = await api.get("/v1/invoices", headers=auth(world.key_a))
    assert r.status_code == 200
    body = r.json()
    assert body["next_cursor"] is None
    assert [i["invoice_ref"] for i in body["data"]] == world.invoices


async def test_pagination_walks_every_row_once(api: httpx.AsyncClient, world: World) -> None:
    first = await api.get("/v1/invoices", params={"limit": 2}, headers=auth(world.key_a))
    assert len(first.json()["data"]) == 2 and first.json()["next_cursor"]
    rows = await walk(api, world.key_a, "/v1/invoices", limit=2)
    assert [i["invoice_ref"] for i in rows] == world.invoices
    exact = await api.get("/v1/invoices", params={"limit": 6}, headers=auth(world.key_a))
    assert len(exact.json()["data"]) == 6 and exact.json()["next_cursor"] is None


async def test_other_tenant_is_invisible(api: httpx.AsyncClient, world: World) -> None:
    r = await api.get("/v1/invoices/only_b", headers=auth(world.key_a))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    shared = await api.get("/v1/invoices/shared", headers=auth(world.key_a))
    assert shared.json()["amount_minor"] == 100
    refs_b = [i["invoice_ref"] for i in await walk(api, world.key_b, "/v1/invoices", limit=1)]
    assert refs_b == ["shared", "only_b"]
    fails_b = await walk(api, world.key_b, "/v1/failures")
    assert [f["invoice_ref"] for f in fails_b] == ["only_b"]


async def test_status_and_provider_filters(api: httpx.AsyncClient, world: World) -> None:
    ok = await walk(api, world.key_a, "/v1/invoices", status="recovered")
    assert [(i["invoice_ref"], i["status"]) for i in ok] == [("in_ok", "recovered")]
    paypal = await walk(api, world.key_a, "/v1/invoices", provider="paypal", customer_ref="cus_1")
    assert [i["invoice_ref"] for i in paypal] == ["in_ok"]
    assert await walk(api, world.key_a, "/v1/invoices", customer_ref="cus_none") == []


@pytest.mark.parametrize("ref", ["sub:sub_123", quote("sub:sub_123", safe="")])
async def test_single_invoice(api: httpx.AsyncClient, world: World, ref: str) -> None:
    r = await api.get(f"/v1/invoices/{ref}", headers=auth(world.key_a))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["invoice_ref"] == "sub:sub_123"
    assert body["status"] == "failed" and body["provider"] == "stripe"
    assert (body["customer_ref"], body["amount_minor"], body["currency"]) == ("cus_1", 1999, "EUR")
    assert body["attempts"] == 1
    assert body["last_decline"]["code"] == "card_declined"
    assert body["last_decline"]["category"] == "SOFT"
    assert datetime.fromisoformat(body["last_event_at"]) == T0 + timedelta(minutes=2)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("url", "params", "needle"),
    [
        ("/v1/invoices", {"status": "bogus"}, "status"),
        ("/v1/invoices", {"limit": 0}, "limit"),
        ("/v1/invoices", {"limit": 1000}, "limit"),
        ("/v1/invoices", {"limit": "ten"}, "limit"),
        ("/v1/invoices", {"cursor": "!!!"}, "base64"),
        ("/v1/invoices", {"cursor": _b64(b"not json")}, "JSON"),
        ("/v1/invoices", {"cursor": _b64(b'["x"]')}, "cursor"),
        ("/v1/invoices", {"cursor": _b64(b'["2024-05-01T00:00:00", "a"]')}, "timezone"),
        ("/v1/failures", {"cursor": _b64(b'["2024-05-01T00:00:00Z", "in_1"]')}, "UUID"),
        ("/v1/failures", {"category": "MAYBE"}, "category"),
        ("/v1/failures", {"since": "2024-05-01T00:00:00"}, "timezone"),
        ("/v1/failures", {"since": "2024-05-02T00:00Z", "until": "2024-05-01T00:00Z"}, "until"),
    ],
)  # fmt: skip
async def test_bad_parameters_are_400(
    api: httpx.AsyncClient, world: World, url: str, params: dict[str, Any], needle: str
) -> None:
    r = await api.get(url, params=params, headers=auth(world.key_a))
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert needle.lower() in body["detail"].lower()


async def test_failures_list_and_filters(api: httpx.AsyncClient, world: World) -> None:
    rows = await walk(api, world.key_a, "/v1/failures", invoice_ref="in_1", limit=1)
    assert [f["event_id"] for f in rows] == world.failures
    first = rows[0]
    assert first["decline"]["category"] == "SOFT" and first["decline"]["network"] == "visa"
    assert first["card"] == {"brand": "visa", "last4": "4242"}
    assert first["kafka"] == {"topic": "payments.events", "partition": 3, "offset": 20}
    hard = await walk(api, world.key_a, "/v1/failures", category="HARD")
    assert [f["event_id"] for f in hard] == [world.failures[1]]
    window = {"since": (T0 + timedelta(seconds=5)).isoformat(), "until": "2024-05-01T12:00:20Z"}
    assert [f["event_id"] for f in await walk(api, world.key_a, "/v1/failures", **window)] == [
        world.failures[1]
    ]
    by_customer = await walk(api, world.key_a, "/v1/failures", customer_ref="cus_9")
    assert [(f["invoice_ref"], f["provider"]) for f in by_customer] == [("in_ok", "paypal")]
    assert len(await walk(api, world.key_a, "/v1/failures", provider="paypal")) == 1


async def test_require_role(
    app: FastAPI, api: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def probe(caller: OperatorCaller) -> dict[str, str]:
        return {"tenant": caller.tenant}

    # A route must be in the permission matrix to answer anyone (fail closed); this one lets
    # every role past the matrix, so require_role("operator") alone decides.
    monkeypatch.setitem(permissions.PERMISSIONS, "GET /v1/_probe", permissions.ANYONE)
    app.add_api_route("/v1/_probe", probe)
    assert (await api.get("/v1/_probe", headers=auth(world.key_a))).status_code == 403
    assert (await api.get("/v1/_probe")).status_code == 401
    ok = await api.get("/v1/_probe", headers=auth(world.operator))
    assert ok.status_code == 200 and ok.json() == {"tenant": world.a}


async def test_health_metrics_openapi(api: httpx.AsyncClient, world: World) -> None:
    health = await api.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    await api.get("/v1/invoices/in_1", headers=auth(world.key_a))
    metrics = (await api.get("/metrics")).text
    assert 'paywatch_api_requests_total{method="GET",route="/v1/invoices/{invoice_ref}"' in metrics
    assert "paywatch_api_request_duration_seconds_bucket" in metrics
    spec = (await api.get("/openapi.json")).json()
    assert spec["info"]["title"] == "paywatch query API"
    for path in ("/v1/invoices", "/v1/invoices/{invoice_ref}", "/v1/failures", "/health"):
        assert path in spec["paths"], path
    assert (await api.get("/docs")).status_code == 200
    missing = await api.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_health_503_when_database_is_gone(app: FastAPI, api: httpx.AsyncClient) -> None:
    await app.state.pool.close()
    down = await api.get("/health")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"


def _cursor(key: list[Any]) -> str:
    return _b64(json.dumps(key).encode())


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("/v1/invoices", ["9999-12-31T23:59:59.999999Z", "\u2603 snow"]),
        ("/v1/invoices", ["0001-01-01T00:00:00Z", "in_1"]),
        ("/v1/invoices", ["2024-05-01T23:00:00+14:00", "in_1"]),
        ("/v1/failures", ["9999-12-31T23:59:59Z", str(uuid.UUID(int=2**128 - 1))]),
        ("/v1/customers", [1.7976931348623157e308, "c"]),
        ("/v1/alerts", ["0001-01-01T00:00:00Z", "a/b"]),
        ("/v1/policy/history", ["2024-05-01T00:00:00Z", "t", 2**31 - 1, 2**63 - 1]),
        ("/v1/invoices/in_1/timeline", ["asc", "0001-01-01T00:00:00Z", 2, "t", 2**31 - 1, 0]),
    ],
)  # fmt: skip
async def test_cursors_at_the_edges_of_the_columns_are_served(
    api: httpx.AsyncClient, world: World, url: str, key: list[Any]
) -> None:
    """Keys a listing could hold, however extreme, reach Postgres and page (never a 500)."""
    r = await api.get(url, params={"cursor": _cursor(key)}, headers=auth(world.key_a))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"data", "next_cursor"}


@pytest.mark.parametrize(
    ("url", "cursor", "needle"),
    [
        ("/v1/invoices", "s\u00cb", "base64"),  # non-ASCII: was a 500
        ("/v1/failures", "\U0001f600" * 3, "base64"),
        ("/v1/alerts", _b64("[\u00e9]".encode()), "JSON"),
        ("/v1/customers", _b64(b'[1e400, "c"]'), "finite"),
        ("/v1/policy/history", _cursor([T0.isoformat(), "t", 2**31, 0]), "2147483647"),
        ("/v1/invoices/in_1/timeline", _cursor(["asc", T0.isoformat(), 0, "t", 0, 2**64]), "9223"),
        ("/v1/invoices/in_1/timeline", _cursor(["desc", T0.isoformat(), 0, "t", 0, 0]), "order"),
        ("/v1/invoices", _cursor(["9999-12-31T23:00:00-05:00", "in_1"]), "years 1..9999"),
        ("/v1/invoices", _cursor([T0.isoformat(), "in\x00"]), "NUL"),
        ("/v1/invoices", _b64(b"[" * 300 + b"]" * 300), "recursion"),
    ],
)  # fmt: skip
async def test_malformed_cursors_are_400_invalid_cursor(
    api: httpx.AsyncClient, world: World, url: str, cursor: str, needle: str
) -> None:
    r = await api.get(url, params={"cursor": cursor}, headers=auth(world.key_a))
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == "invalid_cursor"
    assert needle in body["detail"]


async def test_nul_in_a_filter_is_400_and_in_a_ref_is_404(
    api: httpx.AsyncClient, world: World
) -> None:
    """Postgres text cannot hold NUL: never sent to it (it answered 500 before)."""
    for url, params in [
        ("/v1/invoices", {"provider": "a\x00"}),
        ("/v1/invoices", {"customer_ref": "\x00"}),
        ("/v1/failures", {"invoice_ref": "in_1\x00"}),
        ("/v1/alerts", {"provider": "\x00"}),
    ]:
        r = await api.get(url, params=params, headers=auth(world.key_a))
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"] == "invalid_request" and "NUL" in r.json()["detail"]
    for url in ("/v1/invoices/in%00", "/v1/invoices/%00/timeline", "/v1/customers/c%00"):
        r = await api.get(url, headers=auth(world.key_a))
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (url, r.text)
    alert = await api.get("/v1/alerts/a%00b", headers=auth(world.key_a))
    assert alert.status_code == 404, alert.text


async def test_time_windows_beyond_utc_are_open_ended(api: httpx.AsyncClient, world: World) -> None:
    """An offset that pushes a bound past year 1 or 9999 in UTC is -infinity / infinity."""
    wide = {"since": "0001-01-01T00:00:00+05:00", "until": "9999-12-31T23:59:59-05:00"}
    every = await walk(api, world.key_a, "/v1/failures", **wide)
    assert len(every) == len(await walk(api, world.key_a, "/v1/failures")) == 4
    none = {"since": "9999-12-31T23:00:00-05:00"}
    assert await walk(api, world.key_a, "/v1/failures", **none) == []
    for value in ("0.5", "1714521600", "2024-05-01", "2024-05-01T00:00:00+0100"):
        r = await api.get("/v1/failures", params={"since": value}, headers=auth(world.key_a))
        assert r.status_code == 400 and "RFC 3339" in r.json()["detail"], (value, r.text)


async def test_choice_parameters_are_400_naming_the_choices(
    api: httpx.AsyncClient, world: World
) -> None:
    for url, params, named in [
        ("/v1/customers", {"band": ""}, "low, medium, high, critical"),
        ("/v1/alerts", {"kind": "spike"}, "PROVIDER_FAILURE_SPIKE"),
        ("/v1/alerts", {"status": "closed"}, "open, resolved"),
    ]:
        r = await api.get(url, params=params, headers=auth(world.key_a))
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request" and named in r.json()["detail"]
    ok = await api.get("/v1/customers", params={"band": "HiGh"}, headers=auth(world.key_a))
    assert ok.status_code == 200, ok.text


async def test_405_allows_every_method_of_the_path(api: httpx.AsyncClient, world: World) -> None:
    for method in ("OPTIONS", "DELETE", "POST"):
        r = await api.request(method, "/v1/policy", headers=auth(world.key_a))
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "GET, PUT"
        assert r.json()["error"] == "method_not_allowed"
    one = await api.request("DELETE", "/v1/invoices", headers=auth(world.key_a))
    assert (one.status_code, one.headers["allow"]) == (405, "GET")
