"""Outbound deliveries end to end on the real Postgres, to real HTTP receivers on 127.0.0.1.

Each receiver is a small aiohttp server that records every request and answers what the
test says (a status per attempt, or nothing until released). The dispatcher runs in-process
with a large time scale (600: 1 min of the schedule is 0.1 s), exactly as the executor
runs it; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook, WebhookVerificationError

from paywatch.outbound import deliveries, endpoints
from paywatch.outbound.deliveries import NotRedeliverable, enqueue
from paywatch.outbound.endpoints import TargetPolicy, TargetRefused
from paywatch.outbound.events import EventType, OutboundEvent, event_id
from paywatch.outbound.sender import ATTEMPTS, Dispatcher
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

DEV = TargetPolicy(require_https=False, refuse_private=False)
PROD_KEY = "prod-test-master-key-0123456789abcdef"
DEADLINE = 90.0


@dataclass
class Request:
    """One request a receiver got."""

    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 answering ``statuses`` in turn (then ``then``), or,
    with ``hang``, nothing until ``release`` is set."""

    statuses: Sequence[int] = ()
    then: int = 200
    hang: bool = False
    got: list[Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    open_requests: int = 0
    url: str = ""
    reply: str = "x" * 5000

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append(Request(dict(request.headers), await request.read(), time.monotonic()))
        status = self.statuses[len(self.got) - 1] if len(self.got) <= len(self.statuses) else 0
        if self.hang:
            self.open_requests += 1
            try:
                await self.release.wait()
            finally:
                self.open_requests -= 1
        return web.Response(status=status or self.then, text=self.reply)


@asynccontextmanager
async def serving(receiver: Receiver, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The receiver on a free port of 127.0.0.1 until the block ends; yields the port."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = int(runner.addresses[0][1])
    receiver.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/hook"
    try:
        yield port
    finally:
        receiver.release.set()
        await runner.cleanup()


@asynccontextmanager
async def dispatching(
    settings: Settings, pool: asyncpg.Pool, **options: Any
) -> AsyncIterator[None]:
    """A dispatcher running until the block ends, stopped as the executor stops it."""
    dispatcher = Dispatcher(settings, pool, **options)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 60)


@pytest.fixture
def settings(pg_dsn: str) -> Settings:
    return Settings(database_url=pg_dsn, time_scale=600.0)


@pytest.fixture
async def tenant(pool: asyncpg.Pool, unique: str) -> AsyncIterator[str]:
    """A fresh tenant; its endpoints are disabled afterwards, so no later test's dispatcher
    sends what this one left pending."""
    async with pool.acquire() as conn:
        await create_tenant(conn, unique)
    yield unique
    async with pool.acquire() as conn:
        for e in await endpoints.list_endpoints(conn, unique):
            await endpoints.disable_endpoint(conn, unique, e.endpoint_id, by="test")


def box(settings: Settings) -> SecretBox:
    return SecretBox.from_settings(settings)


async def add(
    pool: asyncpg.Pool,
    settings: Settings,
    tenant: str,
    url: str,
    events: Sequence[EventType] = ("invoice.recovered",),
    **options: Any,
) -> endpoints.WithSecret:
    options.setdefault("policy", DEV)
    async with pool.acquire() as conn:
        return await endpoints.add_endpoint(conn, box(settings), tenant, url, events, **options)


def event(tenant: str, n: int, kind: EventType = "invoice.recovered") -> OutboundEvent:
    return OutboundEvent(
        id=event_id(f"test:{tenant}:{n}"),
        type=kind,
        tenant=tenant,
        created_at=datetime(2026, 3, 2, 9, n, tzinfo=UTC),
        data={"invoice_ref": f"in_{n}", "amount_minor": 4900, "currency": "EUR"},
    )


async def put(pool: asyncpg.Pool, *events: OutboundEvent) -> int:
    async with pool.acquire() as conn:
        return sum([await enqueue(conn, e) for e in events])


async def rows(pool: asyncpg.Pool, endpoint_id: str) -> list[Any]:
    return list(
        await pool.fetch(
            "SELECT * FROM deliveries WHERE endpoint_id = $1 ORDER BY event_id", endpoint_id
        )
    )


async def settled(pool: asyncpg.Pool, endpoint_id: str, status: str, count: int = 1) -> list[Any]:
    """The endpoint's deliveries once ``count`` of them have ``status``."""

    async def probe() -> list[Any] | None:
        found = await rows(pool, endpoint_id)
        return found if sum(r["status"] == status for r in found) >= count else None

    return await eventually(probe, timeout=DEADLINE, every=0.05, what=f"{count} {status}")


def verify(secret: str, got: Request) -> Any:
    return Webhook(secret).verify(got.body, got.headers)


async def test_a_delivery_is_signed_the_standard_way_and_enqueued_once(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url, ["invoice.recovered"])
        other = await add(pool, settings, tenant, receiver.url, ["alert.opened"])
        assert made.secret is not None and made.secret.startswith("whsec_")
        first = event(tenant, 1)
        assert await put(pool, first) == 1  # one endpoint subscribed to invoice.recovered
        assert await put(pool, first) == 0  # the same event again: nothing new
        before = ATTEMPTS.labels("succeeded")._value.get()
        async with dispatching(settings, pool):
            [row] = await settled(pool, made.endpoint.endpoint_id, "succeeded")
    assert await rows(pool, other.endpoint.endpoint_id) == []
    [got] = receiver.got
    assert verify(made.secret, got) == first.envelope()
    assert got.headers["webhook-id"] == first.id == row["event_id"]
    assert got.headers["Content-Type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 300
    assert got.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        verify(endpoints.new_secret(), got)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 200, None)
    assert row["next_attempt_at"] is None and row["delivered_at"] is not None
    assert ATTEMPTS.labels("succeeded")._value.get() >= before + 1


async def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url)
        ep = made.endpoint.endpoint_id
        assert made.secret is not None
        async with pool.acquire() as conn:
            rotated = await endpoints.rotate_secret(
                conn, box(settings), tenant, ep, by="test", grace=timedelta(hours=24)
            )
        assert rotated.secret is not None and rotated.secret != made.secret
        assert rotated.endpoint.previous_valid_until is not None
        await put(pool, event(tenant, 1))
        async with dispatching(settings, pool):
            await settled(pool, ep, "succeeded")
            async with pool.acquire() as conn:  # no grace: the old secret stops at once
                third = await endpoints.rotate_secret(
                    conn, box(settings), tenant, ep, by="test", grace=timedelta(0)
                )
            assert third.endpoint.previous_valid_until is None
            await put(pool, event(tenant, 2))
            await settled(pool, ep, "succeeded", count=2)
    during, after = receiver.got
    assert during.headers["webhook-signature"].count("v1,") == 2
    assert verify(made.secret, during) == verify(rotated.secret, during)
    assert after.headers["webhook-signature"].count("v1,") == 1
    assert third.secret is not None and verify(third.secret, after)
    for old in (made.secret, rotated.secret):
        with pytest.raises(WebhookVerificationError):
            verify(old, after)


async def test_three_500s_then_delivered_on_the_fourth_attempt_on_schedule(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver(statuses=[500, 500, 503])
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url)
        ep = made.endpoint.endpoint_id
        await put(pool, event(tenant, 1))
        async with dispatching(settings, pool):
            [row] = await settled(pool, ep, "succeeded")
    assert len(receiver.got) == 4 and row["attempts"] == 4
    assert {r.headers["webhook-id"] for r in receiver.got} == {row["event_id"]}
    gaps = [b.at - a.at for a, b in zip(receiver.got, receiver.got[1:], strict=False)]
    scaled = [60 / 600, 300 / 600, 1800 / 600]  # 1, 5 and 30 min at time scale 600
    assert all(gap >= wait * 0.95 for gap, wait in zip(gaps, scaled, strict=True)), gaps


async def test_after_the_last_retry_the_delivery_is_failed_and_redeliver_sends_it_again(
    pool: asyncpg.Pool, pg_dsn: str, tenant: str
) -> None:
    fast = Settings(database_url=pg_dsn, time_scale=3600.0)  # the whole schedule in ~2.6 s
    receiver = Receiver(then=500, reply="\x00\x1b[2Jnope" + "x" * 5000)
    async with serving(receiver):
        made = await add(pool, fast, tenant, receiver.url)
        ep = made.endpoint.endpoint_id
        await put(pool, event(tenant, 1))
        async with dispatching(fast, pool):
            [failed] = await settled(pool, ep, "failed")
            assert failed["attempts"] == 5 and len(receiver.got) == 5
            assert failed["last_status"] == 500 and failed["next_attempt_at"] is None
            assert failed["last_error"].startswith("HTTP 500:   [2Jnopexxx")  # printable only
            assert len(failed["last_error"]) <= deliveries.MAX_ERROR_CHARS
            receiver.then = 200  # the receiver is fixed; an operator redelivers
            async with pool.acquire() as conn:
                again = await deliveries.redeliver(conn, tenant, failed["delivery_id"])
            assert again.status == "pending" and again.event_id == failed["event_id"]
            [done] = await settled(pool, ep, "succeeded")
    assert done["attempts"] == 6 and len(receiver.got) == 6
    assert {r.headers["webhook-id"] for r in receiver.got} == {failed["event_id"]}
    assert made.secret is not None and verify(made.secret, receiver.got[-1])


async def test_a_hanging_endpoint_never_delays_another_one(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    stuck, fine = Receiver(hang=True), Receiver()
    async with serving(stuck), serving(fine):
        slow = await add(pool, settings, tenant, stuck.url, ["invoice.recovered"])
        fast = await add(pool, settings, tenant, fine.url, ["alert.opened"])
        await put(pool, *(event(tenant, n) for n in range(6)))  # due first: they wait longest
        await put(pool, event(tenant, 9, "alert.opened"))
        async with dispatching(settings, pool, per_endpoint=4, timeout_s=60.0):
            await settled(pool, fast.endpoint.endpoint_id, "succeeded")
            # Delivered while the other endpoint held its 4 slots, none answered yet.
            assert (stuck.open_requests, len(stuck.got), len(fine.got)) == (4, 4, 1)
            stuck.release.set()
            await settled(pool, slow.endpoint.endpoint_id, "succeeded", count=6)
    assert len(stuck.got) == 6


async def test_an_attempt_without_an_answer_in_time_is_retried(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    stuck = Receiver(hang=True)
    async with serving(stuck):
        made = await add(pool, settings, tenant, stuck.url)
        await put(pool, event(tenant, 1))
        async with dispatching(settings, pool, timeout_s=1.0):
            [row] = await eventually(
                lambda: _attempted(pool, made.endpoint.endpoint_id, at_least=2),
                timeout=DEADLINE, what="two timed-out attempts",
            )  # fmt: skip
            stuck.release.set()
    assert row["status"] == "pending" and row["last_status"] is None
    assert row["last_error"] == "no answer within 1 s"
    assert len(stuck.got) >= 2


async def test_two_dispatchers_never_send_one_attempt_twice(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url)
        count = 30
        await put(pool, *(event(tenant, n) for n in range(count)))
        async with dispatching(settings, pool), dispatching(settings, pool):
            await settled(pool, made.endpoint.endpoint_id, "succeeded", count=count)
    ids = [r.headers["webhook-id"] for r in receiver.got]
    assert len(ids) == count and len(set(ids)) == count


async def test_a_disabled_endpoint_gets_nothing_new_and_nothing_pending(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url)
        ep = made.endpoint.endpoint_id
        assert await put(pool, event(tenant, 1)) == 1
        async with pool.acquire() as conn:
            disabled, changed = await endpoints.disable_endpoint(conn, tenant, ep, by="test")
            assert changed and disabled.status == "disabled"
            assert (await endpoints.disable_endpoint(conn, tenant, ep, by="test"))[1] is False
        assert await put(pool, event(tenant, 2)) == 0
        [row] = await rows(pool, ep)
        assert row["status"] == "failed" and row["attempts"] == 0
        assert row["last_error"] == "endpoint disabled before delivery"
        async with pool.acquire() as conn:
            with pytest.raises(NotRedeliverable, match="disabled"):
                await deliveries.redeliver(conn, tenant, row["delivery_id"])
    assert receiver.got == []


async def test_an_attempt_in_flight_cannot_be_redelivered(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    made = await add(pool, settings, tenant, "http://127.0.0.1:9/never")
    await put(pool, event(tenant, 1))
    [claimed] = await deliveries.claim(pool, made.endpoint.endpoint_id, 10)
    assert await deliveries.claim(pool, made.endpoint.endpoint_id, 10) == []  # leased
    async with pool.acquire() as conn:
        with pytest.raises(NotRedeliverable, match="in flight"):
            await deliveries.redeliver(conn, tenant, claimed.delivery_id)
    ok = deliveries.Outcome(True, 204)
    now = datetime.now(UTC)
    recorded = await deliveries.record_attempt(pool, claimed, ok, started_at=now, time_scale=600.0)
    assert recorded == "succeeded"
    again = await deliveries.record_attempt(pool, claimed, ok, started_at=now, time_scale=600.0)
    assert again is None, "an attempt is recorded once"


# --- SSRF: prod refuses private targets, at add time and again at every attempt ----------


def _prod(pg_dsn: str, allow_private: bool = False) -> Settings:
    return Settings(
        env="prod", secret_key=PROD_KEY, database_url=pg_dsn, time_scale=600.0,
        outbound_allow_private=allow_private,
    )  # fmt: skip


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/hook", "https://10.0.0.8/hook", "https://169.254.169.254/latest"],
)
async def test_prod_refuses_private_targets_unless_allowed(
    pool: asyncpg.Pool, pg_dsn: str, tenant: str, url: str
) -> None:
    prod = _prod(pg_dsn)
    with pytest.raises(TargetRefused, match="refused in prod"):
        await add(pool, prod, tenant, url, policy=TargetPolicy.from_settings(prod))
    with pytest.raises(TargetRefused, match="https"):
        await add(pool, prod, tenant, url.replace("https", "http"),
                  policy=TargetPolicy.from_settings(prod))  # fmt: skip
    allowed = _prod(pg_dsn, allow_private=True)
    made = await add(pool, allowed, tenant, url, policy=TargetPolicy.from_settings(allowed))
    assert made.endpoint.url == url


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the server's TLS context and a client
    context trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


def _dns(table: dict[str, list[str]]) -> Any:
    """A resolver answering from ``table`` (a test's DNS, which it may change)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        ipaddress.ip_address(host)  # an IP literal resolves to itself, as getaddrinfo does
        return [host]

    return resolve


async def test_prod_sends_to_the_checked_address_with_the_host_s_name_and_rechecks_it(
    pool: asyncpg.Pool, pg_dsn: str, tenant: str, tmp_path: Path
) -> None:
    name = "hooks.paywatch.test"
    server_tls, client_tls = _certificate(tmp_path, name)
    receiver = Receiver()
    dns = {name: ["93.184.215.14"]}  # public when the endpoint is added
    allowed, strict = _prod(pg_dsn, allow_private=True), _prod(pg_dsn)
    transport = httpx.AsyncHTTPTransport(verify=client_tls)
    async with serving(receiver, tls=server_tls) as port:
        url = f"https://{name}:{port}/hook"
        made = await add(pool, strict, tenant, url, policy=TargetPolicy.from_settings(strict),
                         resolver=_dns(dns))  # fmt: skip
        ep = made.endpoint.endpoint_id
        dns[name] = ["127.0.0.1"]  # then the name moves to a loopback address
        await put(pool, event(tenant, 1))
        async with dispatching(strict, pool, transport=transport, resolver=_dns(dns)):
            [refused] = await eventually(
                lambda: _attempted(pool, ep), timeout=DEADLINE, what="the refused attempt"
            )
        assert refused["status"] == "pending" and refused["last_status"] is None
        assert "resolves to 127.0.0.1, a loopback address" in refused["last_error"]
        assert receiver.got == []
        async with pool.acquire() as conn:  # allowed now: sent to 127.0.0.1 as the name
            await deliveries.redeliver(conn, tenant, refused["delivery_id"])
        async with dispatching(allowed, pool, transport=transport, resolver=_dns(dns)):
            await settled(pool, ep, "succeeded")
    [got] = receiver.got
    assert got.headers["Host"] == f"{name}:{port}"  # and TLS verified the name's certificate
    assert made.secret is not None and verify(made.secret, got)


async def _attempted(pool: asyncpg.Pool, endpoint_id: str, at_least: int = 1) -> list[Any] | None:
    found = await rows(pool, endpoint_id)
    return found if found and found[0]["attempts"] >= at_least else None


async def test_a_slack_endpoint_gets_its_rendering_at_its_sealed_url(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver) as port:
        made = await add(pool, settings, tenant, receiver.url, kind="slack")
        assert made.secret is None and made.endpoint.url == f"http://127.0.0.1:{port}/…"
        ep = made.endpoint.endpoint_id
        await put(pool, event(tenant, 1))
        async with dispatching(settings, pool):  # no renderer for slack here: not sent
            [row] = await eventually(lambda: _attempted(pool, ep), timeout=DEADLINE, what="try")
        assert row["last_error"] == "no body renderer for slack endpoints here"
        async with pool.acquire() as conn:
            await deliveries.redeliver(conn, tenant, row["delivery_id"])

        def render(envelope: dict[str, Any]) -> bytes:
            return f'{{"text": "{envelope["type"]} {envelope["data"]["invoice_ref"]}"}}'.encode()

        async with dispatching(settings, pool, renderers={"slack": render}):
            await settled(pool, ep, "succeeded")
    [got] = receiver.got
    assert got.body == b'{"text": "invoice.recovered in_1"}'
    assert "webhook-signature" not in got.headers and got.headers["webhook-id"] == row["event_id"]


async def test_a_renderer_that_raises_is_a_recorded_failed_attempt_not_a_loop(
    pool: asyncpg.Pool, settings: Settings, tenant: str
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        made = await add(pool, settings, tenant, receiver.url, kind="slack")
        ep = made.endpoint.endpoint_id
        await put(pool, event(tenant, 1))

        def broken(envelope: dict[str, Any]) -> bytes:
            raise KeyError("data")

        async with dispatching(settings, pool, renderers={"slack": broken}):
            [row] = await eventually(lambda: _attempted(pool, ep), timeout=DEADLINE, what="try")
    assert row["last_error"] == "body not rendered: KeyError" and row["attempts"] >= 1
    assert row["status"] in ("pending", "failed") and not receiver.got
