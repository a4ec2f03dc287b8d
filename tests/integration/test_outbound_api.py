"""/v1/endpoints (admin) and /v1/deliveries (operator) over HTTP, the API logged in as
paywatch_api under row-level security, on the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from paywatch.api.query.app import create_app
from paywatch.db import TenantPool, create_pool
from paywatch.outbound import deliveries
from paywatch.outbound.deliveries import enqueue
from paywatch.outbound.endpoints import MAX_URL
from paywatch.outbound.events import OutboundEvent, event_id
from paywatch.schemas.models import MAX_TEXT
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.roles import ROLES, Role
from paywatch.tenants.store import create_tenant
from tests.integration.test_audit import cli, json_lines

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9/hook"  # the discard port: nothing is ever delivered there


@dataclass(frozen=True)
class Tenant:
    name: str
    keys: dict[Role, str]

    def auth(self, role: Role = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


async def _tenant(pool: asyncpg.Pool, name: str) -> Tenant:
    async with pool.acquire() as conn:
        await create_tenant(conn, name)
        return Tenant(name, {role: await create_api_key(conn, name, role) for role in ROLES})


@pytest.fixture
async def a(pool: asyncpg.Pool, unique: str) -> Tenant:
    return await _tenant(pool, f"{unique}a")


@pytest.fixture
async def b(pool: asyncpg.Pool, unique: str) -> Tenant:
    return await _tenant(pool, f"{unique}b")


async def _add(api: httpx.AsyncClient, t: Tenant, **body: Any) -> dict[str, Any]:
    body = {"url": NOWHERE, "events": ["invoice.recovered"]} | body
    r = await api.post("/v1/endpoints", json=body, headers=t.auth())
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _event(tenant: str, n: int) -> OutboundEvent:
    return OutboundEvent(
        id=event_id(f"api-test:{tenant}:{n}"), type="invoice.recovered", tenant=tenant,
        created_at=datetime(2026, 3, 2, 9, n, tzinfo=UTC), data={"invoice_ref": f"in_{n}"},
    )  # fmt: skip


async def test_an_admin_adds_lists_rotates_and_disables_endpoints(
    api: httpx.AsyncClient, a: Tenant
) -> None:
    made = await _add(api, a, events=["alert.opened", "invoice.recovered", "alert.opened"])
    assert made["secret"].startswith("whsec_") and made["kind"] == "webhook"
    assert made["events"] == ["invoice.recovered", "alert.opened"]  # EVENT_TYPES order, once
    assert made["created_by"].startswith("api:key_") and made["status"] == "active"
    ep = made["endpoint_id"]
    Webhook(made["secret"])  # a secret the official library takes

    listed = await api.get("/v1/endpoints", headers=a.auth())
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert item["endpoint_id"] == ep and "secret" not in item and "whsec_" not in listed.text

    rotated = await api.post(f"/v1/endpoints/{ep}/rotate-secret", headers=a.auth())
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] not in (None, made["secret"])
    assert rotated.json()["previous_valid_until"] is not None

    for changed in (True, False):
        r = await api.post(f"/v1/endpoints/{ep}/disable", headers=a.auth())
        assert r.status_code == 200 and r.json()["changed"] is changed, r.text
        assert r.json()["status"] == "disabled" and r.json()["disabled_by"].startswith("api:")
    again = await api.post(f"/v1/endpoints/{ep}/rotate-secret", headers=a.auth())
    assert again.status_code == 409 and again.json()["error"] == "not_rotatable"


async def test_a_slack_endpoint_keeps_its_url_secret(api: httpx.AsyncClient, a: Tenant) -> None:
    url = "https://hooks.slack.com/services/T0/B0/secretpart"
    made = await _add(api, a, url=url, kind="slack", events=["recovery.escalated"])
    assert made["secret"] is None and made["url"] == "https://hooks.slack.com/…"
    listed = await api.get("/v1/endpoints", headers=a.auth())
    assert "secretpart" not in listed.text
    r = await api.post(f"/v1/endpoints/{made['endpoint_id']}/rotate-secret", headers=a.auth())
    assert r.status_code == 409 and "Slack" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://127.0.0.1/x", "events": ["alert.opened"]},
        {"url": "http://127.0.0.1/#x", "events": ["alert.opened"]},
        {"url": NOWHERE, "events": []},
        {"url": NOWHERE, "events": ["invoice.paid"]},
        {"url": NOWHERE, "events": ["alert.opened"], "kind": "email"},
        {"url": NOWHERE, "events": ["alert.opened"], "secret": "whsec_mine"},
        {"events": ["alert.opened"]},
    ],
)
async def test_a_bad_endpoint_is_400(
    api: httpx.AsyncClient, a: Tenant, body: dict[str, Any]
) -> None:
    r = await api.post("/v1/endpoints", json=body, headers=a.auth())
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    assert (await api.get("/v1/endpoints", headers=a.auth())).json()["data"] == []


async def test_routes_answer_403_to_roles_without_them_and_404_for_another_tenant(
    api: httpx.AsyncClient, pool: asyncpg.Pool, a: Tenant, b: Tenant
) -> None:
    theirs = await _add(api, b)
    async with pool.acquire() as conn:
        assert await enqueue(conn, _event(b.name, 1)) == 1
    [their_delivery] = (await api.get("/v1/deliveries", headers=b.auth())).json()["data"]
    for role in ("viewer", "support", "analyst", "operator"):
        r = await api.get("/v1/endpoints", headers=a.auth(role))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (role, r.text)
    for role in ("viewer", "support", "analyst"):
        r = await api.get("/v1/deliveries", headers=a.auth(role))
        assert r.status_code == 403, (role, r.text)
    assert (await api.get("/v1/deliveries", headers=a.auth("operator"))).status_code == 200
    ep, dlv = theirs["endpoint_id"], their_delivery["delivery_id"]
    for path in (f"/v1/endpoints/{ep}/disable", f"/v1/endpoints/{ep}/rotate-secret"):
        r = await api.post(path, headers=a.auth())
        assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    r = await api.post(f"/v1/deliveries/{dlv}/redeliver", headers=a.auth("operator"))
    assert r.status_code == 404, r.text
    assert (await api.get("/v1/endpoints", headers=a.auth())).json()["data"] == []
    mine = await api.get("/v1/deliveries", params={"endpoint": ep}, headers=a.auth())
    assert mine.json()["data"] == []
    await api.post(f"/v1/endpoints/{ep}/disable", headers=b.auth())


@pytest.mark.parametrize(
    "path",
    [
        "/v1/endpoints/nope/disable",
        "/v1/endpoints/ep_AAAAAAAAAAAAAA/rotate-secret",
        "/v1/deliveries/dlv_1/redeliver",
    ],
)
async def test_a_malformed_id_is_400(api: httpx.AsyncClient, a: Tenant, path: str) -> None:
    r = await api.post(path, headers=a.auth())
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


async def test_the_delivery_log_filters_pages_and_redelivers(
    api: httpx.AsyncClient, pool: asyncpg.Pool, a: Tenant
) -> None:
    one, two = await _add(api, a), await _add(api, a)
    async with pool.acquire() as conn:
        assert sum([await enqueue(conn, _event(a.name, n)) for n in range(3)]) == 6
    op = a.auth("operator")
    got: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/v1/deliveries", params=params, headers=op)).json()
        got += page["data"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(got) == 6 and len({d["delivery_id"] for d in got}) == 6
    stamps = [(d["created_at"], d["delivery_id"]) for d in got]
    assert stamps == sorted(stamps, reverse=True)
    assert {d["status"] for d in got} == {"pending"}
    assert got[0]["body"]["tenant"] == a.name and got[0]["body"]["type"] == "invoice.recovered"

    ep = one["endpoint_id"]
    mine = await api.get("/v1/deliveries", params={"endpoint": ep, "status": "PENDING"}, headers=op)
    assert {d["endpoint_id"] for d in mine.json()["data"]} == {ep}
    assert len(mine.json()["data"]) == 3
    none = await api.get("/v1/deliveries", params={"status": "failed"}, headers=op)
    assert none.json()["data"] == []
    bad = await api.get("/v1/deliveries", params={"status": "lost"}, headers=op)
    assert bad.status_code == 400 and "pending, succeeded, failed" in bad.json()["detail"]
    bad = await api.get("/v1/deliveries", params={"cursor": "nope"}, headers=op)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_cursor"

    target = mine.json()["data"][0]["delivery_id"]
    r = await api.post(f"/v1/deliveries/{target}/redeliver", headers=op)
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    claimed = await deliveries.claim(pool, ep, 3)  # as a dispatcher does: in flight now
    assert target in {c.delivery_id for c in claimed}
    r = await api.post(f"/v1/deliveries/{target}/redeliver", headers=op)
    assert r.status_code == 409 and r.json()["error"] == "not_redeliverable", r.text
    for made in (one, two):  # the abandoned leases end as failed deliveries
        await api.post(f"/v1/endpoints/{made['endpoint_id']}/disable", headers=a.auth())
    failed = await api.get("/v1/deliveries", params={"status": "failed"}, headers=op)
    assert len(failed.json()["data"]) == 6


async def test_a_url_longer_than_an_audit_detail_is_added_and_audited_clipped(
    test_settings: Settings, pg_dsn: str, a: Tenant
) -> None:
    """Regression (schemathesis): a target of MAX_URL characters, more than an ops.audit
    detail holds (MAX_TEXT), made the audit record invalid, a 500. It is a valid target:
    added whole, and recorded on ops.audit with its URL clipped."""
    url = "http://0?" + "0" * (MAX_URL - len("http://0?"))
    app: FastAPI = create_app(test_settings, pg_dsn, test_settings.kafka_bootstrap)
    async with app.router.lifespan_context(app):  # with Kafka: actions are audited
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            made = await _add(api, a, url=url, events=["alert.opened"])
            assert made["url"] == url
            ep = made["endpoint_id"]
            r = await api.post(f"/v1/endpoints/{ep}/disable", headers=a.auth())
            assert r.status_code == 200 and r.json()["changed"], r.text
    trail = cli(test_settings, "audit", "ops", "--tenant", a.name, "--json")
    assert trail.returncode == 0, trail.stderr
    ops = [x for x in json_lines(trail.stdout) if x["subject"] == ep]
    assert [x["action"] for x in ops] == ["endpoint.add", "endpoint.disable"], ops
    for x in ops:
        clipped = x["details"]["url"]
        assert len(clipped) == MAX_TEXT and clipped == url[: MAX_TEXT - 1] + "…", clipped[-20:]


@pytest.fixture
async def prod_api(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(env="prod", secret_key="prod-api-master-key-0123456789abcdefgh")
    app: FastAPI = create_app(settings, pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:9/hook", "https in prod"),
        ("https://127.0.0.1/hook", "127.0.0.1, a loopback address"),
        ("https://10.9.8.7/hook", "10.9.8.7, a private address"),
        ("https://169.254.169.254/latest", "a link-local address"),
    ],
)
async def test_prod_refuses_plain_http_and_private_targets(
    prod_api: httpx.AsyncClient, a: Tenant, url: str, said: str
) -> None:
    body = {"url": url, "events": ["alert.opened"]}
    r = await prod_api.post("/v1/endpoints", json=body, headers=a.auth())
    assert r.status_code == 400 and r.json()["error"] == "invalid_target", r.text
    assert said in r.json()["detail"]


async def test_row_level_security_keeps_each_tenant_to_its_own_rows(
    api: httpx.AsyncClient, pool: asyncpg.Pool, pg_dsn: str, a: Tenant, b: Tenant
) -> None:
    for t in (a, b):
        await _add(api, t)
        async with pool.acquire() as conn:
            assert await enqueue(conn, _event(t.name, 1)) == 1
    api_role = await create_pool(Settings().role_dsn("api", pg_dsn), min_size=1, max_size=1)
    projector = await create_pool(Settings().role_dsn("projector", pg_dsn), min_size=1, max_size=1)
    try:
        for table in ("endpoints", "deliveries"):
            query = f"SELECT DISTINCT tenant FROM {table}"  # no tenant filter
            for t in (a, b):
                seen = await TenantPool(api_role, t.name).fetch(query)
                assert [r["tenant"] for r in seen] == [t.name], table
            assert await TenantPool(api_role, None).fetch(query) == [], table
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await projector.fetch(query)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the executor enqueues
            await TenantPool(api_role, a.name).execute("DELETE FROM deliveries")
    finally:
        await api_role.close()
        await projector.close()
    for t in (a, b):
        [ep] = (await api.get("/v1/endpoints", headers=t.auth())).json()["data"]
        await api.post(f"/v1/endpoints/{ep['endpoint_id']}/disable", headers=t.auth())
