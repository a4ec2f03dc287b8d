"""Issue 12 item 5 on real processes, Kafka and Postgres: per-tenant rate limits (429 with
``Retry-After``), the body read timeout (408) and tenant names refused before any lookup."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from paywatch.api.ingest.app import create_app as create_ingest
from paywatch.api.ingest.context import IngestContext
from paywatch.api.query.app import create_app as create_api
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.cache import SecretCache
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.integration.test_ingest import SECRET, failure_body, signed
from tests.kafka_helpers import eventually
from tests.procs import log_tail, paywatch_process, settings_env

RARE = "0.05"
"""A refill of one token every 20 s: no token comes back while a test sends its burst."""
BURST = 3
BODY_TIMEOUT_S = 2.0


async def _tenants(dsn: str, settings: Settings, *names: str) -> dict[str, str]:
    """Create tenants with a Stripe secret; their analyst API keys by name."""
    conn = await asyncpg.connect(dsn)
    try:
        box = SecretBox(settings.secret_key.get_secret_value())
        keys = {}
        for name in names:
            await create_tenant(conn, name)
            await set_secrets(conn, box, name, "stripe", {"signing_secret": SECRET})
            keys[name] = await create_api_key(conn, name, "analyst")
        return keys
    finally:
        await conn.close()


@contextmanager
def _process(
    settings: Settings, which: str, port: int, log: Path, **extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`paywatch run <which>` on ``port`` with tight limits: its base URL and process."""
    env = settings_env(settings)
    env.update({f"PAYWATCH_{k.upper()}": v for k, v in extra.items()})
    env["PAYWATCH_BODY_READ_TIMEOUT_S"] = str(BODY_TIMEOUT_S)
    env[f"PAYWATCH_{which.upper()}_PORT"] = str(port)
    with paywatch_process(settings, "run", which, log=log, env=env) as proc:
        yield f"http://127.0.0.1:{port}", proc


async def _started(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the process answers HTTP (its lifespan has finished)."""

    async def up() -> bool:
        assert proc.poll() is None, log_tail(log)
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                await http.get(f"{base}/metrics")
        except httpx.TransportError:
            return False
        return True

    await eventually(up, timeout=120, what=f"{base} serving")


async def _trickle(port: int, head: str) -> tuple[int, dict[str, str], bytes, float, int]:
    """Send ``head`` declaring a 1,000-byte body, then one byte a second until answered.

    Status, headers, body, seconds until the answer and body bytes sent.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    sent = 0
    try:
        writer.write(head.encode("latin-1") + b"Content-Length: 1000\r\n\r\n")
        await writer.drain()
        answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        deadline = started + 60
        while not answer.done() and time.monotonic() < deadline and sent < 1000:
            try:
                writer.write(b"x")
                await writer.drain()
                sent += 1
            except ConnectionError:
                break
            await asyncio.wait([answer], timeout=1.0)  # a poll interval, bounded by `deadline`
        raw = await asyncio.wait_for(answer, timeout=max(1.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - started
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(
            reader.readexactly(int(headers.get("content-length", "0"))), timeout=10
        )
        return status, headers, body, elapsed, sent
    finally:
        writer.close()


async def test_ingest_process_limits_a_tenant_burst_and_a_trickled_body(
    test_settings: Settings,
    pg_dsn: str,
    unique: str,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    busy, quiet = f"{unique}-busy", f"{unique}-quiet"
    await _tenants(pg_dsn, test_settings, busy, quiet)
    port = free_port()
    log = tmp_path / "ingest.log"
    extra = {"ingest_rate": RARE, "ingest_burst": str(BURST)}
    with _process(test_settings, "ingest", port, log, **extra) as (base, proc):
        await _started(base, proc, log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def post(tenant: str, n: int) -> httpx.Response:
                body = failure_body(event_id=f"evt_{tenant}_{n}", invoice=f"in_{n}")
                return await http.post(
                    f"/webhooks/stripe/{tenant}", content=body, headers=signed(body)
                )

            answers = [await post(busy, n) for n in range(BURST + 3)]
            assert [a.status_code for a in answers] == [200] * BURST + [429] * 3, [
                a.text for a in answers
            ]
            for refused in answers[BURST:]:
                assert refused.json()["error"] == "rate_limited"
                assert 1 <= int(refused.headers["retry-after"]) <= 20
            assert (await post(quiet, 0)).status_code == 200  # another tenant is unaffected
            # An unknown tenant is limited the same way, before any lookup.
            ghost = [await post(f"{unique}-ghost", n) for n in range(BURST + 2)]
            assert [g.status_code for g in ghost] == [404] * BURST + [429] * 2
            metrics = (await http.get("/metrics")).text
            assert "paywatch_ingest_rate_limited_total 5.0" in metrics

        status, headers, body, elapsed, sent = await _trickle(
            port, f"POST /webhooks/stripe/{quiet} HTTP/1.1\r\nHost: x\r\n"
        )
        assert status == 408, (headers, body)
        assert json.loads(body)["error"] == "body_timeout"
        assert headers.get("connection") == "close"
        assert elapsed >= BODY_TIMEOUT_S * 0.9 and sent < 1000


async def test_api_process_limits_a_tenant_burst_and_a_trickled_body(
    test_settings: Settings,
    pg_dsn: str,
    unique: str,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    busy, quiet = f"{unique}-busy", f"{unique}-quiet"
    keys = await _tenants(pg_dsn, test_settings, busy, quiet)
    port = free_port()
    log = tmp_path / "api.log"
    extra = {"api_rate": RARE, "api_burst": str(BURST)}
    with _process(test_settings, "api", port, log, **extra) as (base, proc):
        await _started(base, proc, log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def policy(tenant: str) -> httpx.Response:
                auth = {"Authorization": f"Bearer {keys[tenant]}"}
                return await http.get("/v1/policy", headers=auth)

            answers = [await policy(busy) for _ in range(BURST + 2)]
            assert [a.status_code for a in answers] == [200] * BURST + [429] * 2, [
                a.text for a in answers
            ]
            for refused in answers[BURST:]:
                assert refused.json()["error"] == "rate_limited"
                assert 1 <= int(refused.headers["retry-after"]) <= 20
            assert (await policy(quiet)).status_code == 200
            # A key that authenticates nothing is a 401, never a 429.
            bad = await http.get("/v1/policy", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            metrics = (await http.get("/metrics")).text
            assert "paywatch_api_rate_limited_total 2.0" in metrics

        status, headers, body, elapsed, sent = await _trickle(
            port,
            f"PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys[quiet]}\r\n"
            "Content-Type: application/json\r\n",
        )
        assert status == 408, (headers, body)
        assert json.loads(body)["error"] == "body_timeout"
        assert elapsed >= BODY_TIMEOUT_S * 0.9 and sent < 1000


# --- in-process, on real Kafka and Postgres: what is never looked up --------------------


class FailIfCalled:
    """A secret loader that fails the test: nothing should reach Postgres."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, tenant: str, provider: str) -> list[dict[str, str]] | None:
        self.calls.append(tenant)
        pytest.fail(f"looked up {tenant!r}")


@asynccontextmanager
async def _ingest(
    settings: Settings, bootstrap: str, dsn: str, loader: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_ingest(settings, bootstrap, dsn)
    async with app.router.lifespan_context(app):
        ctx: IngestContext = app.state.ingest
        app.state.ingest = dataclasses.replace(ctx, secrets=SecretCache(loader))  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


@pytest.mark.parametrize(
    "name",
    ["Acme", "-acme", "acme.eu", "a%20b", "t" * 64, "acme%0A", "%C3%A9t%C3%A9", "acme_%00"],
)
async def test_invalid_tenant_names_are_404_without_a_lookup(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, name: str
) -> None:
    loader = FailIfCalled()
    async with _ingest(test_settings, kafka_bootstrap, pg_dsn, loader) as client:
        body = failure_body()
        resp = await client.post(f"/webhooks/stripe/{name}", content=body, headers=signed(body))
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"] == "unknown_tenant"
    assert loader.calls == []


async def test_an_unknown_tenants_flood_costs_one_lookup(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str, unique: str
) -> None:
    calls: list[str] = []

    async def unknown(tenant: str, provider: str) -> list[dict[str, str]] | None:
        calls.append(tenant)
        return None

    settings = test_settings.model_copy(update={"ingest_rate": 0.05, "ingest_burst": BURST})
    async with _ingest(settings, kafka_bootstrap, pg_dsn, unknown) as client:
        body = failure_body()
        codes = [
            (
                await client.post(f"/webhooks/stripe/{unique}", content=body, headers=signed(body))
            ).status_code
            for _ in range(20)
        ]
    assert codes == [404] * BURST + [429] * (20 - BURST)
    assert calls == [unique]


async def test_api_refuses_a_body_over_the_cap_before_holding_it(
    test_settings: Settings, pg_dsn: str
) -> None:
    app = create_api(test_settings, pg_dsn)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB offered, 64 KiB at a time
            sent += 1
            yield b" " * 65536

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            resp = await client.put("/v1/policy", content=chunks())
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"] == "too_large"
    assert sent < 64  # refused while reading, not after the whole body
