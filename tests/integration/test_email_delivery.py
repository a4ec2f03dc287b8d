"""Customer email end to end: the real Postgres (a scratch database of its own), a real SMTP
server (aiosmtpd) on 127.0.0.1 in plain, STARTTLS and implicit TLS modes, and the query
API's link routes in-process (httpx.ASGITransport). Only Stripe is faked, by an httpx
MockTransport: its API is not ours. The dispatcher runs with time scale 600 (1 min of the
retry schedule is 0.1 s); every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from paywatch.api.query.app import create_app
from paywatch.db import create_pool, migrate
from paywatch.email import links, outbox, store
from paywatch.email.dispatcher import EmailDispatcher
from paywatch.schemas.models import CommandType, RecoveryCommand
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.conftest import free_tcp_port
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

DEADLINE = 90.0
SMTP_PASSWORD = "hunter2-smtp-pass"
RULE = {"id": "tenant.dunning", "edition": "1", "source": "tenant policy"}


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what it accepts; refuses ``bounce*`` recipients (550)
    and answers ``temp_failures`` 451s to RCPT before accepting."""

    got: list[EmailMessage] = field(default_factory=list)
    temp_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:  # fmt: skip
        if address.startswith("bounce"):
            return "550 5.1.1 no such user"
        with self.lock:
            if self.temp_failures > 0:
                self.temp_failures -= 1
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.got.append(msg)
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
    ok = isinstance(auth, LoginPassword) and auth.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


def _tls(tmp: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context


@contextmanager
def smtp_server(
    box: Mailbox,
    mode: str = "plain",
    tmp: Path | None = None,
    port: int | None = None,
    auth: bool = False,
) -> Iterator[str]:
    """A real SMTP server on 127.0.0.1 until the block ends; yields the URL paywatch uses."""
    port = port or free_tcp_port()
    options: dict[str, Any] = {}
    if auth:
        options |= {"authenticator": _authenticator, "auth_require_tls": False,
                    "auth_required": True}  # fmt: skip
    if mode == "starttls":
        assert tmp is not None
        options |= {"tls_context": _tls(tmp), "require_starttls": True}
    if mode == "tls":
        assert tmp is not None
        options |= {"ssl_context": _tls(tmp)}
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    user = f"mailer:{SMTP_PASSWORD}@" if auth else ""
    url = {
        "plain": f"smtp://{user}127.0.0.1:{port}?starttls=false",
        "starttls": f"smtp://{user}127.0.0.1:{port}?starttls=true&tls_verify=false",
        "tls": f"smtps://{user}127.0.0.1:{port}?tls_verify=false",
    }[mode]
    try:
        yield url
    finally:
        controller.stop()


@pytest.fixture
async def db(scratch_db: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A migrated database of this test's own: no other test's or person's emails in it."""
    pool = await create_pool(scratch_db, min_size=1, max_size=6)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield scratch_db, pool
    await pool.close()


def settings_for(dsn: str, smtp_url: str | None) -> Settings:
    return Settings(
        database_url=dsn, time_scale=600.0, smtp_url=SecretStr(smtp_url) if smtp_url else None,
        public_api_url="https://paywatch.test",
    )  # fmt: skip


async def tenant(
    pool: asyncpg.Pool, settings: Settings, name: str, *contacts: tuple[str, str]
) -> str:
    """A tenant with email enabled and the given (customer, address) contacts; its link
    secret is returned."""
    async with pool.acquire() as conn:
        await create_tenant(conn, name)
        _, secret = await store.enable(
            conn, SecretBox.from_settings(settings), name, from_address="billing@acme.example",
            display_name="Acme", update_url="https://acme.example/billing", by="test",
        )  # fmt: skip
        for customer, address in contacts:
            await store.set_contact(conn, name, customer, address, name="Ada", by="test")
    assert secret is not None
    return secret


def command(
    t: str,
    n: int,
    customer: str = "cus_1",
    invoice: str = "in_1",
    provider: str = "generic",
    kind: CommandType = CommandType.NOTIFY_CUSTOMER,
) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"{t}:{n}", type=kind, tenant=t, invoice_ref=invoice, customer_ref=customer,
        due_at=datetime.now(UTC), reason="dunning", rule=RULE, provider=provider,
        amount_minor=4900, currency="EUR", template=None, channel="email",
    )  # fmt: skip


async def enqueue(pool: asyncpg.Pool, *commands: RecoveryCommand) -> dict[str, str]:
    async with pool.acquire() as conn, conn.transaction():
        return await outbox.enqueue(conn, commands)


@asynccontextmanager
async def dispatching(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[EmailDispatcher]:
    dispatcher = EmailDispatcher(settings, pool)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 60)


async def settled(pool: asyncpg.Pool, t: str, count: int) -> list[Any]:
    """The tenant's emails once ``count`` of them are no longer pending."""

    async def probe() -> list[Any] | None:
        rows = await pool.fetch(
            "SELECT * FROM emails WHERE tenant = $1 AND status <> 'pending' ORDER BY command_id",
            t,
        )
        return rows if len(rows) >= count else None

    return await eventually(probe, timeout=DEADLINE, what=f"{count} settled emails of {t}")


async def got(box: Mailbox, count: int) -> list[EmailMessage]:
    async def probe() -> list[EmailMessage] | None:
        return list(box.got) if len(box.got) >= count else None

    return await eventually(probe, timeout=DEADLINE, what=f"{count} messages received")


def link(msg: EmailMessage, start: str) -> str:
    """The first URL in the text body starting with ``start``."""
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    found = text[text.index(start) :].split()[0]
    return found


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
async def test_an_email_arrives_with_both_parts_unsubscribe_headers_and_links(
    db: tuple[str, asyncpg.Pool], unique: str, tmp_path: Path, mode: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box, mode, tmp_path) as url:
        settings = settings_for(dsn, url)
        secret = await tenant(pool, settings, unique, ("cus_1", "ada@example.com"))
        assert await enqueue(pool, command(unique, 1)) == {f"{unique}:1": "pending"}
        assert await enqueue(pool, command(unique, 1)) == {f"{unique}:1": "pending"}  # once
        async with dispatching(settings, pool):
            [row] = await settled(pool, unique, 1)
            [msg] = await got(box, 1)
    assert (row["status"], row["to_address"], row["attempts"]) == ("sent", "ada@example.com", 1)
    assert row["message_id"] == msg["Message-ID"]
    assert msg["To"] == "ada@example.com" and "billing@acme.example" in msg["From"]
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "Your payment of 49.00 EUR did not go through"
    unsubscribe = msg["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://paywatch.test/v1/email/unsubscribe?token=v1.")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    update = link(msg, "https://acme.example/billing?token=")
    token = parse_qs(urlsplit(update).query)["token"][0]
    claims = links.verify([secret.encode()], token, "update", datetime.now(UTC))
    assert (claims.tenant, claims.customer_ref, claims.invoice_ref) == (unique, "cus_1", "in_1")
    html = msg.get_body(("html",))
    assert html is not None and "https://acme.example/billing?token=" in html.get_content()


async def test_one_email_per_customer_invoice_and_day_and_suppressions_are_recorded(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        await tenant(pool, settings, unique, ("cus_1", "ada@example.com"))
        said = await enqueue(
            pool, command(unique, 1), command(unique, 2),
            command(unique, 3, kind=CommandType.REQUEST_PAYMENT_METHOD_UPDATE),
            command(unique, 4, invoice="in_2"), command(unique, 5, customer="cus_nobody"),
            command(unique, 6, invoice="in_3").model_copy(update={"channel": "sms"}),
        )  # fmt: skip
        assert said == {
            f"{unique}:1": "pending", f"{unique}:2": "suppressed:daily_limit",
            f"{unique}:3": "suppressed:daily_limit", f"{unique}:4": "pending",
            f"{unique}:5": "suppressed:no_address",
        }  # fmt: skip
        async with pool.acquire() as conn:
            assert await outbox.enqueue(conn, [command("no-email-tenant", 1)]) == {}
        async with dispatching(settings, pool):
            await settled(pool, unique, 5)
            await got(box, 2)
        later = await enqueue(pool, command(unique, 7))
        assert later == {f"{unique}:7": "suppressed:daily_limit"}, "the first one was sent"
    assert sorted(m["To"] for m in box.got) == ["ada@example.com", "ada@example.com"]


async def test_unsubscribe_through_the_api_link_suppresses_the_next_email(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        await tenant(pool, settings, unique, ("cus_1", "ada@example.com"))
        await enqueue(pool, command(unique, 1))
        async with dispatching(settings, pool):
            [msg] = await got(box, 1)
    target = msg["List-Unsubscribe"].strip("<>")
    path = target.removeprefix("https://paywatch.test")
    app = create_app(settings, dsn)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as api:  # fmt: skip
        page = await api.get(path)
        assert page.status_code == 200 and "<form method='post'" in page.text
        async with pool.acquire() as conn:
            assert (await store.get_contact(conn, unique, "cus_1")).unsubscribed_at is None  # type: ignore[union-attr]
        bad = await api.post(path[:-3] + "AAA")
        assert bad.status_code == 403 and "not signed by this service" in bad.text
        mangled = await api.post(path[:-5])  # a link cut short: not of a token's shape
        assert mangled.status_code == 400 and "malformed link token" in mangled.text
        assert mangled.headers["content-type"].startswith("text/html"), "the customer's page"
        done = await api.post(path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "Unsubscribed" in done.text
    async with pool.acquire() as conn:
        contact = await store.get_contact(conn, unique, "cus_1")
    assert contact is not None and contact.unsubscribed_at is not None
    said = await enqueue(pool, command(unique, 2, invoice="in_2"))
    assert said == {f"{unique}:2": "suppressed:unsubscribed"}


async def test_a_refused_recipient_bounces_and_later_emails_are_suppressed(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        await tenant(pool, settings, unique, ("cus_1", "bounce@example.com"),
                     ("cus_2", "ada@example.com"))  # fmt: skip
        await enqueue(pool, command(unique, 1), command(unique, 2, customer="cus_2"))
        async with dispatching(settings, pool):
            rows = await settled(pool, unique, 2)
        assert [(r["status"], r["to_address"]) for r in rows] == [
            ("bounced", "bounce@example.com"), ("sent", "ada@example.com"),
        ]  # fmt: skip
        assert "550" in rows[0]["last_error"]
        async with pool.acquire() as conn:
            contact = await store.get_contact(conn, unique, "cus_1")
            assert contact is not None and contact.bounced_at is not None
            assert contact.bounce_reason is not None and "550" in contact.bounce_reason
        said = await enqueue(pool, command(unique, 3, invoice="in_2"))
        assert said == {f"{unique}:3": "suppressed:bounced"}
        async with pool.acquire() as conn:  # a new address clears the bounce
            await store.set_contact(conn, unique, "cus_1", "ada2@example.com", name=None, by="t")
        assert await enqueue(pool, command(unique, 4, invoice="in_3")) == {f"{unique}:4": "pending"}


async def test_a_451_and_a_server_that_is_down_are_retried_until_sent(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox(temp_failures=2)
    port = free_tcp_port()
    down = f"smtp://127.0.0.1:{port}?starttls=false"
    settings = settings_for(dsn, down)
    await tenant(pool, settings, unique, ("cus_1", "ada@example.com"))
    await enqueue(pool, command(unique, 1))
    async with dispatching(settings, pool):

        async def failed_once() -> Any:
            row = await pool.fetchrow("SELECT * FROM emails WHERE tenant = $1", unique)
            return row if row["attempts"] >= 1 else None

        row = await eventually(failed_once, timeout=DEADLINE, what="a failed attempt")
        assert row["status"] == "pending" and "Connect" in row["last_error"], dict(row)
        with smtp_server(box, port=port):
            [row] = await settled(pool, unique, 1)
    assert row["status"] == "sent" and row["attempts"] >= 4, dict(row)  # 1+ down, 2 x 451
    assert len(box.got) == 1


async def test_two_dispatchers_never_send_one_email_twice(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        customers = [(f"cus_{n}", f"c{n}@example.com") for n in range(60)]
        await tenant(pool, settings, unique, *customers)
        await enqueue(pool, *(command(unique, n, customer=f"cus_{n}") for n in range(60)))
        async with dispatching(settings, pool), dispatching(settings, pool):
            rows = await settled(pool, unique, 60)
            await got(box, 60)
    # Both dispatchers have stopped, their sends in flight ended: every message is in.
    ids = [m["X-Paywatch-Email-Id"] for m in box.got]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert {r["status"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}


async def test_a_tenant_s_own_smtp_server_is_used_and_no_password_is_logged(
    db: tuple[str, asyncpg.Pool], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn, pool = db
    default_box, own_box = Mailbox(), Mailbox(temp_failures=1)
    caplog.set_level(logging.DEBUG)
    with smtp_server(default_box, auth=True) as default_url, smtp_server(own_box, auth=True) as own:
        settings = settings_for(dsn, default_url)
        await tenant(pool, settings, unique, ("cus_1", "ada@example.com"))
        async with pool.acquire() as conn:
            await set_secrets(conn, SecretBox.from_settings(settings), unique, "email",
                              {"smtp_url": own})  # fmt: skip
        await enqueue(pool, command(unique, 1))
        async with dispatching(settings, pool):
            await settled(pool, unique, 1)
            await got(own_box, 1)
    assert default_box.got == []
    assert "***" in caplog.text, "the servers are logged, without their password"
    assert SMTP_PASSWORD not in caplog.text


async def test_a_stripe_update_link_opens_a_billing_portal_session_on_click(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    calls: list[httpx.Request] = []

    def stripe(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"url": "https://billing.stripe.com/p/session/test_1"})

    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        await tenant(pool, settings, unique, ("cus_S1", "ada@example.com"))
        async with pool.acquire() as conn:
            secrets = {"api_key": "sk_test_123", "api_base": "https://stripe.test"}
            await set_secrets(conn, SecretBox.from_settings(settings), unique, "stripe", secrets)
        update_kind = CommandType.REQUEST_PAYMENT_METHOD_UPDATE
        await enqueue(pool, command(unique, 1, "cus_S1", provider="stripe", kind=update_kind))
        async with dispatching(settings, pool):
            [msg] = await got(box, 1)
    assert msg["Subject"] == "Please update your payment method"
    update = link(msg, "https://paywatch.test/v1/email/update?token=")
    assert calls == [], "the portal session is made when the customer clicks, not before"
    app = create_app(settings, dsn)
    app.state.stripe_transport = httpx.MockTransport(stripe)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as api:  # fmt: skip
        answer = await api.get(update.removeprefix("https://paywatch.test"))
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "https://billing.stripe.com/p/session/test_1"
        unsubscribe = msg["List-Unsubscribe"].strip("<>").removeprefix("https://paywatch.test")
        wrong = await api.get(unsubscribe.replace("/unsubscribe?", "/update?"))
        assert wrong.status_code == 403 and "not update" in wrong.text
    [call] = calls
    assert str(call.url) == "https://stripe.test/v1/billing_portal/sessions"
    assert call.headers["Authorization"] == "Bearer sk_test_123"
    form = parse_qs(call.content.decode())
    assert form == {"customer": ["cus_S1"], "return_url": ["https://acme.example/billing"]}


async def test_a_broken_tenant_template_fails_its_email_with_the_reason_and_others_go_on(
    db: tuple[str, asyncpg.Pool], unique: str
) -> None:
    dsn, pool = db
    box = Mailbox()
    with smtp_server(box) as url:
        settings = settings_for(dsn, url)
        await tenant(pool, settings, unique, ("cus_1", "ada@example.com"),
                     ("cus_2", "bob@example.com"))  # fmt: skip
        async with pool.acquire() as conn:  # stored unchecked, as an older version might have
            await conn.execute(
                "INSERT INTO email_templates (tenant, name, subject, text_body) VALUES"
                " ($1, 'payment_failed', 'Hi', 'Use {{ coupon }}')", unique,
            )  # fmt: skip
        update_kind = CommandType.REQUEST_PAYMENT_METHOD_UPDATE
        await enqueue(pool, command(unique, 1), command(unique, 2, "cus_2", kind=update_kind))
        async with dispatching(settings, pool):
            rows = await settled(pool, unique, 2)
    assert [r["status"] for r in rows] == ["failed", "sent"]
    assert rows[0]["last_error"] == "template payment_failed, text: 'coupon' is undefined"
