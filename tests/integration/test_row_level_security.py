"""Row-level security (migration 014) on a real Postgres: the API and the projector log in as
non-owner roles, and a query that forgets its tenant filter sees one tenant or none.

Two tenants' rows in every table with a tenant column: the read models written by the
projector's own sink logged in as paywatch_projector (one batch, both tenants), the rest by
the owner. Tables are listed from the catalog, so a tenant table added later without RLS
fails here.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from string import Formatter
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from paywatch.api.query.app import create_app
from paywatch.api.query.permissions import LINKS
from paywatch.db import TenantPool, create_pool, heartbeats
from paywatch.projections.sink import PostgresSink
from paywatch.providers.base import event_id
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    Alert,
    AlertWindow,
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    Frozen,
    OpsAudit,
    PaymentEvent,
    PolicyChanged,
    RecoveryCommand,
    RiskBand,
    RiskScore,
    RuleRef,
    SagaState,
    SagaTransition,
    Severity,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import hash_api_key
from paywatch.tenants.policy_input import canonical_json
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULE = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
READ_MODELS = (
    "event_log", "failures", "invoices", "recovery_workflows", "recovery_log",
    "tenant_policies", "tenant_policy_changes", "customers", "alerts", "ops_audit",
    "recovery_facts", "metrics_daily", "metrics_monthly", "metrics_daily_ttr",
)  # fmt: skip
"""What the projector writes, every one with a tenant column."""
NO_ROLE_MAY_READ = (
    "tenant_secrets", "executed_commands", "paypal_transmissions", "charge_accounts",
    "charge_claims",
)  # fmt: skip
OUTBOUND = ("endpoints", "deliveries")
"""The API manages its tenant's endpoints and reads and redelivers its deliveries (015)."""
EMAIL = ("customer_contacts", "email_settings")
"""The API sets and reads its tenant's contacts and reads its email settings (016)."""
REPLAY = ("replay_jobs",)
"""The API starts rebuilds of the read models and reads its tenant's (019)."""
TENANT_TABLES = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""
API_MAY_READ = "SELECT has_table_privilege('paywatch_api', $1, 'SELECT')"
Denied = asyncpg.InsufficientPrivilegeError


def replay_job_id(tenant: str) -> str:
    """The replay job id the test gives ``tenant`` (the id's pattern, none other's)."""
    digest = hashlib.sha256(tenant.encode()).digest()
    return "rb_" + base64.b32encode(digest).decode().lower()[:14]


@dataclass(frozen=True)
class Tenant:
    """One tenant's names: every ref carries the tenant, so a leak shows in any text."""

    name: str
    admin_key: str

    @property
    def invoice(self) -> str:
        return f"inv-{self.name}"

    @property
    def customer(self) -> str:
        return f"cus-{self.name}"

    @property
    def alert(self) -> str:
        return f"alert-{self.name}"

    @property
    def replay_job(self) -> str:
        """A replay job id of its own (rb_ + 14 base32 characters)."""
        return replay_job_id(self.name)


@dataclass(frozen=True)
class World:
    a: Tenant
    b: Tenant


def _records(tenant: str) -> list[Frozen]:
    """One record of every type the projector reads, for ``tenant``."""
    invoice, customer = f"inv-{tenant}", f"cus-{tenant}"
    policy = TenantPolicy().model_copy(update={"window_days": 21})
    return [
        PaymentEvent(
            event_id=event_id(tenant, "stripe", f"evt_{tenant}"),
            type=EventType.PAYMENT_FAILED,
            tenant=tenant,
            provider="stripe",
            source_type="invoice.payment_failed",
            occurred_at=T0,
            customer_ref=customer,
            invoice_ref=invoice,
            amount_minor=4900,
            currency="USD",
            attempt=1,
            decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT),
        ),
        SagaTransition(
            tenant=tenant,
            invoice_ref=invoice,
            to_state=SagaState.retrying,
            cause_event_id=f"cause-{tenant}",
            at=T0 + timedelta(seconds=1),
            rule=RULE,
            attempts_used=1,
            attempts_allowed=4,
            next_action=CommandType.RETRY_PAYMENT,
            next_action_at=T0 + timedelta(days=1),
        ),
        RecoveryCommand(
            command_id=f"cmd-{tenant}",
            type=CommandType.RETRY_PAYMENT,
            tenant=tenant,
            invoice_ref=invoice,
            due_at=T0 + timedelta(days=1),
            attempt=2,
            reason="soft decline: retry in a day",
            rule=RULE,
            issued_at=T0 + timedelta(seconds=1),
        ),
        PolicyChanged(
            tenant=tenant,
            revision=policy.revision,
            policy_json=canonical_json(policy),
            changed_at=T0,
            changed_by="test",
        ),
        RiskScore(
            tenant=tenant,
            customer_ref=customer,
            score=0.5,
            band=RiskBand.MEDIUM,
            reasons=["one open invoice"],
            model_version="risk-v1",
            as_of=T0,
        ),
        Alert(
            tenant=tenant,
            kind="decline_spike",
            severity=Severity.WARNING,
            window=AlertWindow(start=T0, end=T0 + timedelta(minutes=5)),
            observed=0.4,
            baseline=0.1,
            alert_id=f"alert-{tenant}",
            opened_at=T0,
        ),
        OpsAudit(
            audit_id=f"audit-{tenant}",
            tenant=tenant,
            actor="cli:test",
            action="apikey.create",
            subject=f"key-{tenant}",
            at=T0,
        ),
    ]


async def _project(pool: asyncpg.Pool, unique: str, tenants: list[str]) -> None:
    """Both tenants' records in one batch of the projector's sink, on ``pool``."""
    sink = PostgresSink(projection=f"rls-{unique}")
    offsets: dict[str, int] = {}
    for tenant in tenants:
        for record in _records(tenant):
            topic = f"{unique}.{type(record).__name__}"
            offsets[topic] = offsets.get(topic, -1) + 1
            sink.add(record, Coords(topic, 0, offsets[topic]))
    async with pool.acquire() as conn:
        assert await sink.write(conn) == len(_records(tenants[0])) * len(tenants)


async def _owned_rows(owner: asyncpg.Connection, tenant: str) -> str:
    """Rows of the tables only the owner writes; returns the tenant's admin key."""
    key = f"pw_admin_{secrets.token_urlsafe(24)}"
    await owner.execute("INSERT INTO tenants (tenant) VALUES ($1)", tenant)
    await owner.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, 'admin', $2, $3)",
        tenant, hash_api_key(key), key[:16],
    )  # fmt: skip
    await owner.execute(
        "INSERT INTO tenant_secrets (tenant, provider, name, value_enc)"
        " VALUES ($1, 'stripe', 'signing_secret', '\\x00'::bytea)",
        tenant,
    )
    await owner.execute(
        "INSERT INTO executed_commands (tenant, command_id, type, invoice_ref, due_at, outcome)"
        " VALUES ($1, 'cmd', 'RETRY_PAYMENT', $2, $3, 'done')",
        tenant, f"inv-{tenant}", T0,
    )  # fmt: skip
    await owner.execute(
        "INSERT INTO paypal_transmissions (tenant, transmission_id, body_sha256, first_seen)"
        " VALUES ($1, 'tx', $2, $3)",
        tenant, bytes(32), T0,
    )  # fmt: skip
    await owner.execute(
        "INSERT INTO email_settings (tenant, from_address, link_secret_enc)"
        " VALUES ($1, 'billing@acme.example', '\\x00'::bytea)",
        tenant,
    )
    await owner.execute(
        "INSERT INTO customer_contacts (tenant, customer_ref, email)"
        " VALUES ($1, $2, 'ada@example.com')",
        tenant, f"cus-{tenant}",
    )  # fmt: skip
    await owner.execute(
        "INSERT INTO emails (tenant, command_id, command_type, invoice_ref, template)"
        " VALUES ($1, 'cmd', 'NOTIFY_CUSTOMER', $2, 'payment_failed')",
        tenant, f"inv-{tenant}",
    )  # fmt: skip
    endpoint = await owner.fetchval(
        "INSERT INTO endpoints (tenant, url, events, secret_enc)"
        " VALUES ($1, 'http://127.0.0.1:9/hook', '{alert.opened}', '\\x00'::bytea)"
        " RETURNING endpoint_id",
        tenant,
    )
    await owner.execute(
        "INSERT INTO deliveries"  # delivered: no dispatcher of a later test sends it
        " (tenant, endpoint_id, event_id, event_type, body, status, next_attempt_at)"
        " VALUES ($1, $2, 'evt_1', 'alert.opened', '{}'::jsonb, 'succeeded', NULL)",
        tenant, endpoint,
    )  # fmt: skip
    await owner.execute(
        "INSERT INTO replay_jobs (job_id, tenant, models, requested_by, status, finished_at)"
        " VALUES ($1, $2, '{all}', 'test', 'done', now())",  # done: it holds no active slot
        replay_job_id(tenant), tenant,
    )  # fmt: skip
    return key


@pytest.fixture
async def owner(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def api_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """One connection logged in as paywatch_api: every use reuses it."""
    pool = await create_pool(Settings().role_dsn("api", pg_dsn), min_size=1, max_size=1)
    yield pool
    await pool.close()


@pytest.fixture
async def projector_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(Settings().role_dsn("projector", pg_dsn), min_size=1, max_size=1)
    yield pool
    await pool.close()


@pytest.fixture
async def world(owner: asyncpg.Connection, projector_pool: asyncpg.Pool, unique: str) -> World:
    a, b = f"{unique}a", f"{unique}b"
    keys = [await _owned_rows(owner, tenant) for tenant in (a, b)]
    await _project(projector_pool, unique, [a, b])
    return World(Tenant(a, keys[0]), Tenant(b, keys[1]))


async def _tenants_seen(pool: asyncpg.Pool, tenant: str | None, table: str) -> set[str]:
    """The tenants of every row ``table`` shows, queried without any tenant filter."""
    rows = await TenantPool(pool, tenant).fetch(f'SELECT tenant FROM "{table}"')
    return {r["tenant"] for r in rows}


async def test_every_tenant_table_is_under_row_level_security(owner: asyncpg.Connection) -> None:
    tables = await owner.fetch(TENANT_TABLES)
    names = {t["relname"] for t in tables}
    assert {*READ_MODELS, *NO_ROLE_MAY_READ, "tenants", "api_keys"} <= names
    assert [t["relname"] for t in tables if not t["relrowsecurity"]] == []
    # Enabled, not forced: the owner (CLI, ingest, worker, executor) is not restricted.
    assert [t["relname"] for t in tables if t["relforcerowsecurity"]] == []


async def test_a_query_without_tenant_filter_sees_the_bound_tenant_or_nothing(
    world: World, owner: asyncpg.Connection, api_pool: asyncpg.Pool
) -> None:
    a, b = world.a.name, world.b.name
    readable = []
    for table in [t["relname"] for t in await owner.fetch(TENANT_TABLES)]:
        if not await owner.fetchval(API_MAY_READ, table):
            with pytest.raises(Denied):
                await _tenants_seen(api_pool, a, table)
            continue
        readable.append(table)
        everyone = {r["tenant"] for r in await owner.fetch(f'SELECT tenant FROM "{table}"')}
        assert {a, b} <= everyone, table  # both have rows: what follows can fail
        assert await _tenants_seen(api_pool, a, table) == {a}, table
        assert await _tenants_seen(api_pool, b, table) == {b}, table
        assert await _tenants_seen(api_pool, None, table) == set(), table
        assert await _tenants_seen(api_pool, "no-such-tenant", table) == set(), table
    expected = {*READ_MODELS, "tenants", "api_keys", *OUTBOUND, *EMAIL, *REPLAY}
    assert sorted(readable) == sorted(expected)
    invoices = await TenantPool(api_pool, a).fetch("SELECT * FROM invoices")
    assert [(r["tenant"], r["invoice_ref"]) for r in invoices] == [(a, world.a.invoice)]


async def test_no_role_reads_secrets_and_neither_changes_the_schema(
    world: World, api_pool: asyncpg.Pool, projector_pool: asyncpg.Pool
) -> None:
    for pool in (api_pool, projector_pool):
        async with pool.acquire() as conn:
            assert not await conn.fetchval("SELECT has_schema_privilege('public', 'CREATE')")
            for table in NO_ROLE_MAY_READ:
                with pytest.raises(Denied):
                    await conn.fetch(f'SELECT * FROM "{table}"')
            for statement in (
                "CREATE TABLE rls_probe (x int)",
                "ALTER TABLE invoices DISABLE ROW LEVEL SECURITY",
                "DROP POLICY api_own_tenant ON invoices",
                "DELETE FROM invoices",
                "TRUNCATE invoices",
                "SET ROLE postgres",
            ):
                with pytest.raises(Denied):
                    await conn.execute(statement)


async def test_the_projector_writes_and_reads_every_tenant(
    world: World, owner: asyncpg.Connection, projector_pool: asyncpg.Pool, unique: str
) -> None:
    both = {world.a.name, world.b.name}
    for table in READ_MODELS:  # the world's one batch, written as paywatch_projector
        found = await owner.fetch(
            f'SELECT DISTINCT tenant FROM "{table}" WHERE tenant = ANY($1)',
            list(both),
        )
        assert {r["tenant"] for r in found} == both, table
    async with projector_pool.acquire() as conn:
        seen = await conn.fetch("SELECT tenant FROM invoices")  # no filter, no tenant bound
        assert both <= {r["tenant"] for r in seen}
        checkpoints = await conn.fetchval(
            "SELECT count(*) FROM projection_checkpoints WHERE projection = $1", f"rls-{unique}"
        )
        assert checkpoints == len(_records(world.a.name))  # one topic per record type
        with pytest.raises(Denied):  # the keys are the API's and the owner's business
            await conn.fetch("SELECT * FROM api_keys")
        with pytest.raises(Denied):
            await conn.fetch("SELECT * FROM paywatch_authenticate('\\x00'::bytea)")


async def test_the_projector_beats_and_the_api_reads_the_health_of_processes(
    api_pool: asyncpg.Pool, projector_pool: asyncpg.Pool, unique: str
) -> None:
    key = heartbeats.Key(f"rls-{unique}", "projector", "host")
    now = datetime.now(UTC)
    beat = heartbeats.Beat(1, 0.5, 0, None, None, None, {}, {})
    async with projector_pool.acquire() as conn:  # what runners.py's Heartbeat writes
        assert await heartbeats.started(conn, key, 4242, now) == 1
        await heartbeats.beat(conn, key, now, beat)
        await heartbeats.stopped(conn, key, now)
    async with api_pool.acquire() as conn:  # what GET /health reads, bound to no tenant
        reports = await heartbeats.reports(conn, key.app_id)
    assert [(r.process, r.pid, r.records_total) for r in reports] == [("projector", 4242, 1)]


async def test_the_api_writes_its_own_tenant_only(
    world: World, owner: asyncpg.Connection, api_pool: asyncpg.Pool
) -> None:
    a, b = world.a.name, world.b.name
    insert_key = "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, $2, $3, 'p')"
    bound = TenantPool(api_pool, a)
    assert await bound.execute(insert_key, a, "viewer", secrets.token_bytes(32)) == "INSERT 0 1"
    with pytest.raises(Denied, match="row-level security"):
        await bound.execute(insert_key, b, "admin", secrets.token_bytes(32))
    assert await bound.execute("UPDATE api_keys SET label = 'mine'") == "UPDATE 2"
    with pytest.raises(Denied, match="row-level security"):
        await bound.execute("UPDATE api_keys SET tenant = $1", b)
    with pytest.raises(Denied):  # read models are the projector's to write
        await bound.execute("UPDATE invoices SET status = 'recovered'")
    labels = await owner.fetch("SELECT tenant, label FROM api_keys WHERE tenant = ANY($1)", [a, b])
    assert sorted((r["tenant"], r["label"]) for r in labels) == [
        (a, "mine"),
        (a, "mine"),
        (b, None),
    ]


async def test_keys_are_found_by_hash_before_the_tenant_is_known(
    world: World, owner: asyncpg.Connection, api_pool: asyncpg.Pool
) -> None:
    digest = hash_api_key(world.b.admin_key)
    unbound = TenantPool(api_pool, None)
    assert await unbound.fetchval("SELECT count(*) FROM api_keys") == 0
    found = await unbound.fetch("SELECT * FROM paywatch_authenticate($1)", digest)
    assert [(r["tenant"], r["role"], r["key_hash"]) for r in found] == [
        (world.b.name, "admin", digest)
    ]
    assert await unbound.fetch("SELECT * FROM paywatch_authenticate($1)", bytes(32)) == []
    last_used = "SELECT last_used_at FROM api_keys WHERE key_hash = $1"
    assert await owner.fetchval(last_used, digest) is None
    await unbound.execute("SELECT paywatch_touch_api_key($1)", digest)
    assert await owner.fetchval(last_used, digest) is not None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool reset that leaves session settings alone (asyncpg still rolls back)."""


@pytest.fixture(params=["reset", "no-reset"])
async def one_connection(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Any]:
    """A pool of one paywatch_api connection: with asyncpg's session reset on release, and
    without one, as behind a pooler that hands sessions on as they are (PgBouncer in
    transaction mode): the tenant binding must not need the reset."""
    reset = None if request.param == "reset" else _keep_session
    dsn = Settings().role_dsn("api", pg_dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, reset=reset)
    yield pool
    await pool.close()


async def test_a_pooled_connection_reused_across_tenants_leaks_nothing(
    world: World, one_connection: asyncpg.Pool
) -> None:
    a, b = world.a.name, world.b.name
    pool = one_connection
    pids = set()
    for tenant in (a, b, a, b):
        async with TenantPool(pool, tenant).acquire() as conn:
            pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            rows = await conn.fetch("SELECT tenant FROM invoices")
            assert {r["tenant"] for r in rows} == {tenant}
    with pytest.raises(asyncpg.DivisionByZeroError):  # a request that fails half-way
        async with TenantPool(pool, a).acquire() as conn:
            pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.fetch("SELECT 1 / 0 FROM invoices")
    async with pool.acquire() as conn:  # the same connection, unbound now
        pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
        assert await conn.fetchval("SELECT current_setting('paywatch.tenant', true)") in (None, "")
        assert await conn.fetchval("SELECT count(*) FROM invoices") == 0
    assert await _tenants_seen(pool, b, "invoices") == {b}
    assert await _tenants_seen(pool, None, "invoices") == set()
    assert len(pids) == 1, "the pool of one connection used several"


@pytest.fixture
async def live(
    test_settings: Settings, pg_dsn: str, api_pool: asyncpg.Pool
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The query API as paywatch_api, with Kafka (PUT /v1/policy), on one connection."""
    app = create_app(test_settings, pg_dsn, test_settings.kafka_bootstrap)
    async with app.router.lifespan_context(app):
        assert await app.state.pool.fetchval("SELECT current_user") == "paywatch_api"
        app.state.pool = api_pool  # one connection: every request reuses the previous one's
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield app, client


def _get_routes(app: FastAPI) -> list[str]:
    """The path format of every GET route of the API's own (/v1/...)."""
    found = {
        str(context.path_format)
        for context in iter_route_contexts(app.routes)
        if "GET" in (context.methods or ())
        and str(context.path).startswith("/v1/")
        and f"GET {context.path}" not in LINKS  # no API key: the signed token names the tenant
    }
    return sorted(found)


def _params(path: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(path) if name}


def _path(path: str, tenant: Tenant) -> str:
    """The route's path for ``tenant``'s own objects."""
    values = {"invoice_ref": tenant.invoice, "customer_ref": tenant.customer,
              "alert_id": tenant.alert, "job_id": tenant.replay_job}  # fmt: skip
    missing = _params(path) - set(values)
    assert not missing, f"{path}: give this test a {missing} of each tenant"
    return path.format(**values)


async def test_the_live_api_answers_every_route_with_the_callers_rows_only(
    world: World, owner: asyncpg.Connection, live: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, api = live
    routes = _get_routes(app)
    assert len(routes) >= 10, routes
    for me, other in ((world.a, world.b), (world.b, world.a), (world.a, world.b)):
        auth = {"Authorization": f"Bearer {me.admin_key}"}
        for route in routes:
            r = await api.get(_path(route, me), headers=auth)
            assert r.status_code == 200, (route, r.text)
            assert other.name not in r.text, (route, r.text)
        for route in routes:
            if _params(route):  # another tenant's object is unknown
                r = await api.get(_path(route, other), headers=auth)
                assert r.status_code == 404, (route, r.text)
        invoices = (await api.get("/v1/invoices", headers=auth)).json()["data"]
        assert [i["invoice_ref"] for i in invoices] == [me.invoice]
    assert (await api.get("/health")).status_code == 200


async def test_the_live_api_writes_policies_and_keys_of_its_tenant(
    world: World, owner: asyncpg.Connection, live: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    _, api = live
    a, b = world.a, world.b
    auth = {"Authorization": f"Bearer {a.admin_key}"}
    policy = TenantPolicy().model_copy(update={"window_days": 9}).model_dump(mode="json")
    put = await api.put("/v1/policy", json=policy, headers=auth)
    assert put.status_code == 200, put.text
    for tenant, days in ((a, 9), (b, 21)):  # b keeps what the projector wrote
        mine = {"Authorization": f"Bearer {tenant.admin_key}"}
        got = (await api.get("/v1/policy", headers=mine)).json()
        assert got["policy"]["window_days"] == days, got

    made = await api.post("/v1/apikeys", json={"role": "analyst"}, headers=auth)
    assert made.status_code == 201, made.text
    listed = (await api.get("/v1/apikeys", headers=auth)).json()["data"]
    assert made.json()["key_id"] in {k["key_id"] for k in listed}
    revoked = await api.post(f"/v1/apikeys/{made.json()['key_id']}/revoke", headers=auth)
    assert revoked.status_code == 200, revoked.text
    b_key = await owner.fetchval("SELECT key_id FROM api_keys WHERE tenant = $1", b.name)
    other = await api.post(f"/v1/apikeys/{b_key}/revoke", headers=auth)
    assert other.status_code == 404, other.text
    assert await owner.fetchval("SELECT revoked_at FROM api_keys WHERE key_id = $1", b_key) is None

    async def used() -> Any:  # recorded in the background, through the tenant-bound pool
        sql = "SELECT last_used_at FROM api_keys WHERE key_hash = $1"
        return await owner.fetchval(sql, hash_api_key(a.admin_key))

    await eventually(used, timeout=30, what="the last use of a's key")
