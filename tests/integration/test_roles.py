"""Every route of the query API x every role, over HTTP on real Kafka + Postgres (issue 12 item 4).

One tenant gets data in every read model (payments with cards, a saga, risk scores, a
provider spike and a customer alert, an invoice the generic provider filed under its
customer's ref), produced to the test's topics and written by the real projector; it has a
key of each role. The routes are taken from the app itself, so a route added without an
entry in the permission matrix (paywatch/api/query/permissions.py) or without a sample
request here fails these tests rather than going unchecked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from paywatch.api.query.app import create_app
from paywatch.api.query.deps import Caller
from paywatch.api.query.permissions import (
    LINKS,
    PERMISSIONS,
    PUBLIC,
    REDACTED_FIELDS,
    allowed,
    route_key,
)
from paywatch.email import store as email_store
from paywatch.email.links import LinkSigner, claims_for
from paywatch.outbound.deliveries import enqueue
from paywatch.outbound.endpoints import TargetPolicy, add_endpoint
from paywatch.outbound.events import OutboundEvent
from paywatch.outbound.events import event_id as outbound_id
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RiskBand,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key, new_api_key
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.roles import ROLES, Role
from paywatch.tenants.store import create_tenant
from tests.integration.test_alerts_api import HIGH_RISK, PROVIDER, alert_id, record
from tests.integration.test_customers_api import project, risk
from tests.integration.test_recovery_projection import opening
from tests.kafka_helpers import Published, publish

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ENDPOINT = {"url": "http://127.0.0.1:9/hook", "events": ["alert.opened"]}  # discard port
_ATTEMPT = {"attempt_id": "att_1", "attempted_at": "2026-03-03T10:00:00Z", "outcome": "failed"}
Record = Published


@dataclass(frozen=True)
class World:
    """Tenant ``a`` with data everywhere and a key per role; ``b`` owns ``other_invoice``."""

    a: str
    keys: dict[Role, str]
    customers: tuple[str, ...]
    """Every customer ref of tenant a: a viewer must never see one, anywhere."""
    invoice: str
    customer_invoice: str
    """An invoice filed under its customer's ref (cus:<ref>)."""
    other_invoice: str
    spike: str
    customer_alert: str
    spare_keys: tuple[str, str]
    """Key ids of tenant a for the admin's revoke and rotate samples."""
    outbound: tuple[str, str, str]
    """Tenant a's endpoints to disable and to rotate, and a delivery to the second."""
    links: tuple[str, str]
    """The unsubscribe and update tokens of an email to alice (email LINKS: no key)."""

    @property
    def alice(self) -> str:
        return self.customers[0]

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@dataclass(frozen=True)
class Sample:
    """A request a role may or may not make, and the status it answers to one that may."""

    method: str
    url: str
    ok: int
    json: Any = None


def _samples(w: World) -> dict[str, Sample]:
    """One request per route of the app (its matrix name), all on tenant a's data."""
    get = {
        "GET /v1/invoices": "/v1/invoices",
        "GET /v1/invoices/{invoice_ref}": f"/v1/invoices/{w.invoice}",
        "GET /v1/invoices/{invoice_ref}/timeline": f"/v1/invoices/{w.invoice}/timeline",
        "GET /v1/failures": "/v1/failures",
        "GET /v1/metrics/recovery": "/v1/metrics/recovery?group_by=provider",
        "GET /v1/metrics/at-risk": "/v1/metrics/at-risk",
        "GET /v1/customers": "/v1/customers",
        "GET /v1/customers/{customer_ref}": f"/v1/customers/{w.alice}",
        "GET /v1/customers/{customer_ref}/contact": f"/v1/customers/{w.alice}/contact",
        "GET /v1/alerts": "/v1/alerts",
        "GET /v1/alerts/{alert_id:path}": f"/v1/alerts/{quote(w.spike, safe='')}",
        "GET /v1/policy": "/v1/policy",
        "GET /v1/policy/history": "/v1/policy/history",
        "GET /v1/apikeys": "/v1/apikeys",
        "GET /v1/endpoints": "/v1/endpoints",
        "GET /v1/deliveries": "/v1/deliveries",
        "GET /v1/ops/audit": "/v1/ops/audit",
        **{route: route.removeprefix("GET ") for route in PUBLIC - LINKS},
    }
    unsubscribe, update = (
        f"/v1/email/{p}?token={t}" for p, t in zip(("unsubscribe", "update"), w.links, strict=True)
    )
    revoke, rotate = w.spare_keys
    ep_off, ep_on, delivery = w.outbound
    return {route: Sample("GET", url, 200) for route, url in get.items()} | {
        "PUT /v1/policy": Sample("PUT", "/v1/policy", 200, {"retry": {"days": [1, 3, 5]}}),
        "POST /v1/apikeys": Sample("POST", "/v1/apikeys", 201, {"role": "viewer"}),
        "POST /v1/apikeys/{key_id}/revoke": Sample("POST", f"/v1/apikeys/{revoke}/revoke", 200),
        "POST /v1/apikeys/{key_id}/rotate": Sample("POST", f"/v1/apikeys/{rotate}/rotate", 201),
        "POST /v1/endpoints": Sample("POST", "/v1/endpoints", 201, _ENDPOINT),
        "POST /v1/endpoints/{endpoint_id}/disable": Sample(
            "POST", f"/v1/endpoints/{ep_off}/disable", 200
        ),
        "POST /v1/endpoints/{endpoint_id}/rotate-secret": Sample(
            "POST", f"/v1/endpoints/{ep_on}/rotate-secret", 200
        ),
        "POST /v1/deliveries/{delivery_id}/redeliver": Sample(
            "POST", f"/v1/deliveries/{delivery}/redeliver", 200
        ),
        # A rebuild swaps every test's tables: the samples stop at the checks after the role
        # (tests/integration/test_replay.py starts real ones, on a database of their own).
        "POST /v1/ops/replay": Sample("POST", "/v1/ops/replay", 400, {"projection": "nope"}),
        "GET /v1/ops/replay/{job_id}": Sample("GET", "/v1/ops/replay/rb_aaaaaaaaaaaaaa", 404),
        "POST /v1/ops/backtest": Sample(
            "POST", "/v1/ops/backtest", 200, {"policy": {"retry": {"days": [2], "max_retries": 1}}}
        ),
        "POST /v1/invoices/{invoice_ref}/attempts": Sample(
            "POST", f"/v1/invoices/{w.invoice}/attempts", 202, _ATTEMPT
        ),
        "PUT /v1/customers/{customer_ref}/contact": Sample(
            "PUT", f"/v1/customers/{w.alice}/contact", 200, {"email": "alice@example.com"}
        ),
        "GET /v1/email/unsubscribe": Sample("GET", unsubscribe, 200),
        "POST /v1/email/unsubscribe": Sample("POST", unsubscribe, 200),
        "GET /v1/email/update": Sample("GET", update, 303),
    }


def _payment(
    tenant: str, customer: str, invoice: str, minutes: int, *, provider: str = "stripe"
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id(tenant, provider, f"evt_{invoice}_{minutes}"),
        type=EventType.PAYMENT_FAILED,
        tenant=tenant,
        provider=provider,
        source_type="test",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref=customer,
        invoice_ref=invoice,
        payment_ref=f"pay_{minutes}",
        amount_minor=4900,
        currency="EUR",
        attempt=1,
        decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT),
        payment_method=PaymentMethod(brand="visa", last4="4242", exp_month=4, exp_year=2030),
    )


@pytest.fixture
async def app(test_settings: Settings, pg_dsn: str) -> AsyncIterator[FastAPI]:
    """The query API with Kafka (so PUT /v1/policy can succeed) and no rate limit (this
    test's request rate is not a tenant's)."""
    settings = test_settings.model_copy(update={"api_rate": 0})
    app = create_app(settings, pg_dsn, test_settings.kafka_bootstrap)
    async with app.router.lifespan_context(app):
        yield app


async def _outbound(settings: Settings, pool: asyncpg.Pool, a: str) -> tuple[str, str, str]:
    """Two endpoints of tenant a, sent one alert each: (endpoint, endpoint, delivery of 2nd)."""
    box, dev = SecretBox.from_settings(settings), TargetPolicy.from_settings(settings)
    async with pool.acquire() as conn:
        made = [
            (await add_endpoint(conn, box, a, _ENDPOINT["url"], ["alert.opened"], policy=dev))
            .endpoint.endpoint_id for _ in range(2)
        ]  # fmt: skip
        await enqueue(conn, OutboundEvent(outbound_id(f"roles:{a}"), "alert.opened", a, T0))
        query = "SELECT delivery_id FROM deliveries WHERE endpoint_id = $1"
        return made[0], made[1], await conn.fetchval(query, made[1])


async def _email(settings: Settings, pool: asyncpg.Pool, a: str, alice: str) -> tuple[str, str]:
    """Email for tenant a (an update page, alice's contact) and the tokens of her links."""
    async with pool.acquire() as conn:
        await email_store.enable(
            conn, SecretBox.from_settings(settings), a, from_address="billing@acme.example",
            update_url="https://acme.example/billing", by="test",
        )  # fmt: skip
        await email_store.set_contact(conn, a, alice, "alice@example.com", name=None, by="test")
    signer, until = LinkSigner.from_settings(settings), T0 + timedelta(days=36500)
    return signer.sign(claims_for(a, alice, "in_1", "unsubscribe", until)), signer.sign(
        claims_for(a, alice, "in_1", "update", until)
    )


async def _keys(pool: asyncpg.Pool, a: str, b: str) -> tuple[dict[Role, str], tuple[str, str]]:
    async with pool.acquire() as conn:
        for tenant in (a, b):
            await create_tenant(conn, tenant)
        keys = {role: await create_api_key(conn, a, role) for role in ROLES}
        spares = [(await new_api_key(conn, a, "analyst")).record.key_id for _ in range(2)]
    return keys, (spares[0], spares[1])


@pytest.fixture
async def world(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> World:
    a, b = f"{unique}a", f"{unique}b"
    alice, bob, carol = f"{a}_alice", f"{a}_bob", f"{a}_carol"
    invoice, by_customer, other = f"{a}_in_1", f"cus:{carol}", f"{b}_in_9"
    keys, spares = await _keys(pool, a, b)
    outbound = await _outbound(test_settings, pool, a)
    email_links = await _email(test_settings, pool, a, alice)
    records: list[Record] = [
        _payment(a, alice, invoice, 0),
        _payment(a, bob, f"{a}_in_2", 5),
        _payment(a, carol, by_customer, 7, provider="generic"),
        *opening(a, invoice),
        risk(a, alice, 0.91, RiskBand.CRITICAL),
        risk(a, bob, 0.12, RiskBand.LOW),
        record(a, PROVIDER, "stripe", 5),
        record(a, HIGH_RISK, alice, 9, observed=0.91),
        _payment(b, f"{b}_dave", other, 1),
    ]
    await project(test_settings, kafka_bootstrap, pool, await publish(
        test_settings, kafka_bootstrap, records
    ))  # fmt: skip
    return World(
        a=a, keys=keys, customers=(alice, bob, carol), invoice=invoice,
        customer_invoice=by_customer, other_invoice=other,
        spike=alert_id(a, PROVIDER, "stripe"), customer_alert=alert_id(a, HIGH_RISK, alice),
        spare_keys=spares, outbound=outbound, links=email_links,
    )  # fmt: skip


def _routes(app: FastAPI) -> list[str]:
    """Every route of the app by its matrix name (HEAD is Starlette's twin of GET)."""
    return sorted(
        route_key(method, str(context.path))
        for context in iter_route_contexts(app.routes)
        for method in (context.methods or set()) - {"HEAD"}
    )


async def _call(api: httpx.AsyncClient, sample: Sample, headers: dict[str, str]) -> httpx.Response:
    return await api.request(sample.method, sample.url, json=sample.json, headers=headers)


def _refused(r: httpx.Response) -> bool:
    """A 403 with the error body, naming the roles that may."""
    if r.status_code != 403:
        return False
    body = r.json()
    return body["error"] == "forbidden" and "needs one of the roles" in body["detail"]


async def test_every_route_answers_every_role_as_the_matrix_says(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    samples = _samples(world)
    wrong: list[str] = []
    for route in _routes(app):
        sample = samples.get(route)
        if sample is None:
            wrong.append(f"{route}: no sample request in test_roles._samples")
            continue
        if route in PUBLIC:
            r = await _call(api, sample, {})
            if r.status_code != sample.ok:
                wrong.append(f"{route} without a key: {r.status_code} {r.text[:200]}")
            continue
        if (r := await _call(api, sample, {})).status_code != 401:
            wrong.append(f"{route} without a key: {r.status_code}, not 401")
        for role in ROLES:
            r = await _call(api, sample, world.auth(role))
            if role in allowed(route) and r.status_code != sample.ok:
                wrong.append(f"{route} as {role}: {r.status_code}, not {sample.ok}: {r.text[:200]}")
            if role not in allowed(route) and not _refused(r):
                wrong.append(f"{route} as {role}: {r.status_code}, not 403: {r.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert set(PERMISSIONS) <= set(_routes(app)), "the matrix names a route the app lacks"


def _redacted_values(node: Any) -> list[Any]:
    """Every value of a redacted field name in a JSON document, at any depth."""
    if isinstance(node, list):
        return [v for item in node for v in _redacted_values(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in REDACTED_FIELDS]
    return found + [v for item in node.values() for v in _redacted_values(item)]


async def test_a_viewer_is_never_shown_a_customer_identifier(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    samples = _samples(world)
    readable = [r for r in _routes(app) if r not in PUBLIC and "viewer" in allowed(r)]
    assert len(readable) >= 8, readable
    seen: dict[Role, list[str]] = {"viewer": [], "analyst": []}
    for route in readable:
        for role, texts in seen.items():
            r = await _call(api, samples[route], world.auth(role))
            assert r.status_code == 200, (route, role, r.text)
            texts.append(r.text)
            values = _redacted_values(r.json())
            if role == "viewer":
                assert all(v is None for v in values), (route, values)
    viewer, analyst = "\n".join(seen["viewer"]), "\n".join(seen["analyst"])
    for customer in world.customers:
        assert customer in analyst, f"{customer}: the seeded data does not show it to an analyst"
        assert customer not in viewer, f"{customer} shown to a viewer"
    assert '"last4":"4242"' in analyst, "the seeded cards do not show to an analyst"
    assert '"last4"' not in viewer


async def _same_refusal(api: httpx.AsyncClient, w: World, *urls: str) -> dict[str, Any]:
    """The viewer's answer to each url: one and the same 403, whether the object exists."""
    bodies = []
    for url in urls:
        r = await api.get(url, headers=w.auth("viewer"))
        assert _refused(r), (url, r.status_code, r.text)
        bodies.append(r.json())
    assert all(body == bodies[0] for body in bodies), bodies
    return bodies[0]


async def test_what_names_a_customer_is_refused_to_a_viewer_exists_or_not(
    api: httpx.AsyncClient, world: World
) -> None:
    w = world
    for path in ("/v1/invoices", "/v1/failures"):
        refused = await _same_refusal(api, w, f"{path}?customer_ref={w.alice}")
        assert "customer_ref" in refused["detail"]
        mine = await api.get(path, params={"customer_ref": w.alice}, headers=w.auth("analyst"))
        assert mine.status_code == 200 and mine.json()["data"], mine.text

    kind = await _same_refusal(api, w, "/v1/alerts?kind=high_risk_customer")
    assert "HIGH_RISK_CUSTOMER" in kind["detail"]
    ghost = alert_id(w.a, HIGH_RISK, "nobody")
    urls = [f"/v1/alerts/{quote(i, safe='')}" for i in (w.customer_alert, ghost)]
    await _same_refusal(api, w, *urls)
    assert (await api.get(urls[0], headers=w.auth("analyst"))).status_code == 200

    nobody = "cus:nobody"
    for tail in ("", "/timeline"):
        refs = (w.customer_invoice, nobody)
        urls = [f"/v1/invoices/{quote(ref, safe='')}{tail}" for ref in refs]
        await _same_refusal(api, w, *urls)
        assert (await api.get(urls[0], headers=w.auth("analyst"))).status_code == 200
        assert (await api.get(urls[0], headers=w.auth("support"))).status_code == 200

    for path in ("/v1/invoices", "/v1/failures"):
        refs = {role: await _listed(api, w, role, path, "invoice_ref") for role in LOOKERS}
        assert {w.customer_invoice, w.invoice} <= set(refs["analyst"]), refs
        assert w.customer_invoice not in refs["viewer"] and w.invoice in refs["viewer"], refs
    kinds = {role: set(await _listed(api, w, role, "/v1/alerts", "kind")) for role in LOOKERS}
    assert kinds == {"viewer": {PROVIDER}, "analyst": {PROVIDER, HIGH_RISK}}


LOOKERS: tuple[Role, ...] = ("viewer", "analyst")


async def _listed(api: httpx.AsyncClient, w: World, role: Role, path: str, field: str) -> list[Any]:
    r = await api.get(path, headers=w.auth(role))
    assert r.status_code == 200, r.text
    return [item[field] for item in r.json()["data"]]


async def test_support_reads_one_invoice_with_its_customer_and_lists_nothing(
    api: httpx.AsyncClient, world: World
) -> None:
    w = world
    one = await api.get(f"/v1/invoices/{w.invoice}", headers=w.auth("support"))
    assert one.status_code == 200 and one.json()["customer_ref"] == w.alice, one.text
    timeline = await api.get(f"/v1/invoices/{w.invoice}/timeline", headers=w.auth("support"))
    assert timeline.status_code == 200, timeline.text
    assert {item["kind"] for item in timeline.json()["data"]} == {"event", "transition", "command"}
    lists = ("/v1/invoices", "/v1/failures", "/v1/customers", "/v1/alerts", "/v1/policy/history")
    for path in lists:
        assert _refused(await api.get(path, headers=w.auth("support"))), path


async def test_another_tenant_s_objects_are_404_for_every_role(
    api: httpx.AsyncClient, world: World
) -> None:
    w = world
    for role in ("viewer", "support", "analyst"):
        for tail in ("", "/timeline"):
            r = await api.get(f"/v1/invoices/{w.other_invoice}{tail}", headers=w.auth(role))
            assert r.status_code == 404 and r.json()["error"] == "not_found", (role, tail, r.text)


async def test_a_route_without_an_entry_is_refused_to_every_role(
    app: FastAPI, api: httpx.AsyncClient, pool: asyncpg.Pool, unique: str
) -> None:
    async def probe(caller: Caller) -> dict[str, str]:
        return {"tenant": caller.tenant}

    app.add_api_route("/v1/_unlisted", probe)
    assert "GET /v1/_unlisted" in _routes(app) and "GET /v1/_unlisted" not in PERMISSIONS
    keys, _ = await _keys(pool, f"{unique}a", f"{unique}b")
    assert (await api.get("/v1/_unlisted")).status_code == 401
    for role, key in keys.items():
        r = await api.get("/v1/_unlisted", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403, (role, r.text)
        assert r.json() == {
            "error": "forbidden",
            "detail": "GET /v1/_unlisted has no entry in the permission matrix"
            " (paywatch/api/query/permissions.py), so no role may call it",
        }
