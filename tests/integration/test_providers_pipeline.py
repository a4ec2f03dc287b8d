"""Every enabled provider end to end: ingest -> worker -> projector -> query API.

Thin-webhook providers (Xero, QuickBooks) also go through the worker's fetch step against
a local fake of their API (tests/fake_ledgers.py), over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx

from paywatch.api.ingest.app import create_app as create_ingest
from paywatch.api.query.app import create_app as create_api
from paywatch.db import create_pool
from paywatch.kafka.codec import make_codec
from paywatch.projections.runner import Projector
from paywatch.providers.registry import PROVIDERS
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.fake_ledgers import serve_ledgers
from tests.kafka_helpers import eventually
from tests.procs import log_tail, paywatch_process
from tests.provider_cases import Case, provider_cases
from tests.provider_cases import transport as provider_apis

Post = Callable[[Case, bytes, dict[str, str]], Awaitable[None]]


def test_every_enabled_provider_has_a_case() -> None:
    assert {c.provider for c in provider_cases()} == set(PROVIDERS)


async def _setup(settings: Settings, dsn: str, tenant: str, cases: list[Case]) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, tenant)
        box = SecretBox(settings.secret_key.get_secret_value())
        for case in cases:
            await set_secrets(conn, box, tenant, case.provider, case.secrets)
        return await create_api_key(conn, tenant, "analyst")
    finally:
        await conn.close()


@asynccontextmanager
async def _ingest(
    settings: Settings, bootstrap: str, dsn: str, tenant: str, cases: list[Case]
) -> AsyncIterator[Post]:
    app = create_ingest(settings, bootstrap, dsn, http_transport=provider_apis(cases))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:

            async def post(case: Case, body: bytes, headers: dict[str, str]) -> None:
                resp = await client.post(
                    f"/webhooks/{case.provider}/{tenant}", content=body, headers=headers
                )
                assert resp.status_code == 200, (case.provider, resp.text)

            yield post


async def test_one_failure_and_recovery_per_provider_reach_the_query_api(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    with serve_ledgers() as ledgers:
        settings = test_settings.model_copy(
            update={
                "xero_token_url": ledgers.token_url("xero"),
                "quickbooks_token_url": ledgers.token_url("quickbooks"),
            }
        )
        cases = provider_cases(ledgers)
        key = await _setup(settings, pg_dsn, unique, cases)
        pool = await create_pool(pg_dsn)
        projector = Projector(settings, kafka_bootstrap, pool, make_codec(settings))
        task = asyncio.create_task(projector.run())
        api = create_api(settings, pg_dsn)
        log = tmp_path / "worker.log"
        try:
            with paywatch_process(settings, "run", "worker", log=log) as worker:
                async with (
                    api.router.lifespan_context(api),
                    _ingest(settings, kafka_bootstrap, pg_dsn, unique, cases) as post,
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=api),
                        base_url="http://api",
                        headers={"Authorization": f"Bearer {key}"},
                    ) as client,
                ):

                    async def status_is(case: Case, *statuses: str) -> dict[str, object]:
                        async def check() -> dict[str, object] | None:
                            assert worker.poll() is None, log_tail(log)
                            assert not task.done(), task
                            resp = await client.get(f"/v1/invoices/{case.invoice_ref}")
                            inv = resp.json() if resp.status_code == 200 else None
                            return inv if inv and inv["status"] in statuses else None

                        what = f"{case.provider} invoice {' or '.join(sorted(statuses))}"
                        result: dict[str, object] = await eventually(check, timeout=120, what=what)
                        return result

                    for case in cases:
                        if not case.documents:
                            for body, headers in case.deliveries:
                                await post(case, body, headers)
                    for case in cases:  # thin: the fake API's state moves between deliveries
                        fake = ledgers.fakes.get(case.provider)
                        for i, (body, headers) in enumerate(case.deliveries if fake else []):
                            assert fake is not None
                            fake.resources.update(
                                {p: (200, d) for p, d in case.documents[i].items()}
                            )
                            await post(case, body, headers)
                            if i < len(case.deliveries) - 1:
                                await status_is(case, *case.between)
                    for case in cases:
                        inv = await status_is(case, case.status)
                        assert (inv["provider"], inv["amount_minor"], inv["currency"]) == (
                            case.provider,
                            case.amount_minor,
                            case.currency,
                        )
                        failures = (
                            await client.get(
                                "/v1/failures", params={"invoice_ref": case.invoice_ref}
                            )
                        ).json()
                        assert [f["decline"]["category"] for f in failures["data"]] == [
                            case.decline_category
                        ], case.provider
        finally:
            projector.stop()
            await asyncio.wait_for(task, 30)
            await pool.close()
