"""Postgres stopped under ingest (issue 12 item 6): 503 + Retry-After, never 500; /health too.

The test starts a Postgres of its own (embedded, free port, temporary directory) so it can
stop it without touching the session database the other tests share; ingest runs in-process
on it and on the session broker. While it is down, a webhook whose tenant's secrets must be
looked up is answered 503 ``{"error": "unavailable", ...}`` with ``Retry-After`` (nothing
refused for good: the provider redelivers), as is a Braintree handshake, and ``/health`` is
503 naming the database. Started again, ingest accepts again without being restarted itself,
and only the deliveries answered 200 are in ``webhooks.raw``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from paywatch.api.ingest.app import create_app
from paywatch.db import migrate_dsn
from paywatch.kafka.codec import make_codec
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.schemas.models import RawWebhook
from paywatch.schemas.topics import WEBHOOKS_RAW
from paywatch.settings import Settings
from tests.integration.test_ingest import SECRET, _tenant, failure_body, signed
from tests.kafka_helpers import eventually, topic_records

DEADLINE_S = 90.0  # two cores shared with other test runs: be patient


@pytest.fixture
async def own_pg(tmp_path: Path, free_port: Callable[[], int]) -> AsyncIterator[EmbeddedPostgres]:
    """A Postgres only this test uses (and stops), migrated, on a free port."""
    settings = Settings(
        state_dir=tmp_path / "own-pg",
        kafka_bootstrap=None,
        database_url=None,
        embedded_pg_port=free_port(),
    )
    pg = EmbeddedPostgres(settings)
    try:
        await asyncio.to_thread(pg.start)
        await migrate_dsn(pg.dsn)
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


@pytest.fixture
async def client(
    test_settings: Settings, kafka_bootstrap: str, own_pg: EmbeddedPostgres, unique: str
) -> AsyncIterator[httpx.AsyncClient]:
    await _tenant(own_pg.dsn, test_settings, unique, SECRET)
    app = create_app(test_settings, kafka_bootstrap, own_pg.dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ingest", timeout=30.0
        ) as http:
            yield http


class Deliveries:
    """Distinct signed Stripe failures for one tenant; remembers which were accepted."""

    def __init__(self, http: httpx.AsyncClient, tenant: str) -> None:
        self.http, self.tenant = http, tenant
        self.accepted: dict[str, str] = {}  # ingest_id -> Stripe event id
        self._count = 0

    async def post(self, tenant: str | None = None) -> httpx.Response:
        self._count += 1
        event_id = f"evt_pg_down_{self._count}"
        body = failure_body(event_id=event_id, invoice=f"in_pg_down_{self._count}")
        url = f"/webhooks/stripe/{tenant or self.tenant}"
        resp = await self.http.post(url, content=body, headers=signed(body))
        if resp.status_code == 200:
            self.accepted[resp.json()["ingest_id"]] = event_id
        return resp


def _unavailable(resp: httpx.Response) -> bool:
    """A 503 in the documented shape, with Retry-After; anything else but 200 fails at once."""
    assert resp.status_code in (200, 503), resp.text  # never 500, never 404 for a known tenant
    if resp.status_code == 200:
        return False
    assert resp.headers["retry-after"].isdigit(), resp.headers
    assert set(resp.json()) == {"error", "detail"} and resp.json()["error"] == "unavailable"
    return True


async def test_postgres_down_is_503_with_retry_after_and_health_says_so(
    client: httpx.AsyncClient, own_pg: EmbeddedPostgres, test_settings: Settings, unique: str
) -> None:
    posts = Deliveries(client, unique)
    for _ in range(3):
        resp = await posts.post()
        assert resp.status_code == 200, resp.text
    health = await client.get("/health")
    assert health.status_code == 200, health.text
    assert (health.json()["kafka"], health.json()["database"]) == ("reachable", "reachable")

    assert await asyncio.to_thread(own_pg.stop)
    # A tenant never looked up needs Postgres at once: not 404 (it may exist), not 500.
    assert _unavailable(await posts.post(tenant=f"{unique}-new"))
    braintree = await client.get(f"/webhooks/braintree/{unique}", params={"bt_challenge": "abc"})
    assert _unavailable(braintree), braintree.text

    async def refused() -> bool:
        return _unavailable(await posts.post())  # once the tenant's cached secrets expire

    await eventually(refused, timeout=DEADLINE_S, every=0.5, what="503 for the known tenant")
    down = await client.get("/health")
    assert down.status_code == 503, down.text
    body = down.json()
    assert (body["status"], body["database"], body["kafka"]) == (
        "unavailable",
        "unreachable",
        "reachable",
    )
    assert body["detail"].startswith("database: ")

    await asyncio.to_thread(own_pg.start)  # ingest keeps running meanwhile

    async def accepts_again() -> bool:
        return (await posts.post()).status_code == 200

    await eventually(accepts_again, timeout=DEADLINE_S, every=0.5, what="ingest accepting again")
    assert (await client.get("/health")).status_code == 200
    await _assert_log_holds_only_accepted(test_settings, posts)


async def _assert_log_holds_only_accepted(settings: Settings, posts: Deliveries) -> None:
    codec = make_codec(settings)
    records = await topic_records(settings.kafka_bootstrap or "", settings.topic(WEBHOOKS_RAW))
    raws = [codec.decode(record.value, RawWebhook) for record in records]
    # Each 200 is in the log once; nothing answered 503 was written (it failed before append).
    assert sorted(raw.ingest_id for raw in raws) == sorted(posts.accepted)
    for raw in raws:
        assert json.loads(raw.body)["id"] == posts.accepted[raw.ingest_id]
