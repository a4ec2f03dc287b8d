"""The email loop: claims due emails, renders and sends them, and records each outcome.

Each turn ``EmailDispatcher`` claims what its free slots allow (leases: outbox.py), reads
what it needs of each tenant once (its SMTP server: the sealed ``email``/``smtp_url``
secret, else PAYWATCH_SMTP_URL; whether it has a Stripe API key; its own templates), groups
the emails by server and sends each group over at most PER_SERVER connections at once, one
message after another per connection. A slow or dead server holds its own slots only.
Every email is checked again just before it is sent (the tenant may have disabled email,
the customer unsubscribed or bounced since it was enqueued: then it is ``suppressed``).

Links: the unsubscribe URL (``{PAYWATCH_PUBLIC_API_URL}/v1/email/unsubscribe?token=``,
UNSUBSCRIBE_DAYS) and the update URL: for a Stripe invoice of a tenant with a Stripe API
key, paywatch's redirect (``/v1/email/update?token=``) that makes a billing-portal session
on click; otherwise the tenant's ``update_url`` with a token signed by its link secret
(PAYWATCH_EMAIL_LINK_DAYS). Logs name servers without their password (SmtpServer.shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from prometheus_client import Counter

from paywatch.email import outbox, store
from paywatch.email.links import LinkSigner, Purpose, claims_for, sign, with_token
from paywatch.email.outbox import Claimed
from paywatch.email.sender import Connection, Envelope, Outcome
from paywatch.email.smtp_url import SmtpServer, SmtpUrlError, parse_smtp_url
from paywatch.email.templates import (
    BUILTIN,
    Rendered,
    Template,
    TemplateError,
    context,
    render,
)
from paywatch.errors import ConfigError
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import valid_secrets

log = logging.getLogger(__name__)

BATCH = 100
"""Emails claimed per turn at most."""
MAX_IN_FLIGHT = 200
PER_SERVER = 4
"""Connections to one SMTP server at once, per executor."""
MAX_POLL_S = 1.0
RETRY_S = 1.0
UNSUBSCRIBE_DAYS = 365
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

SENDS = Counter(
    "paywatch_email_outcomes_total",
    "Emails handled by the dispatcher, by outcome (sent, bounced, retry, failed, suppressed)",
    ["outcome"],
)


def utc_now() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass
class _Tenant:
    """What one turn knows of a tenant."""

    server: SmtpServer | None
    server_error: str | None
    stripe: bool
    templates: dict[str, Template] = field(default_factory=dict)


class EmailDispatcher:
    """Sends due emails until ``stop()``; several may run against one database.

    ``http_transport`` is accepted for symmetry with the outbound Dispatcher and unused:
    Stripe portal sessions are made by the API when the customer clicks, not here.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        clock: Callable[[], datetime] = utc_now,
        http_transport: httpx.AsyncBaseTransport | None = None,
        box: SecretBox | None = None,
        per_server: int = PER_SERVER,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._settings, self._pool, self._clock = settings, pool, clock
        self._box = box or SecretBox.from_settings(settings)
        self._signer = LinkSigner.from_settings(settings)
        self._per_server, self._max_in_flight = per_server, max_in_flight
        self._tasks: dict[asyncio.Task[None], int] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._default, self._default_error = _default_server(settings)

    async def run(self) -> None:
        """Claim and send until ``stop()``; then let sends in flight end."""
        shown = self._default.shown if self._default else self._default_error or "none"
        log.info("email dispatcher started (default SMTP server: %s)", shown)
        try:
            while not self._stopping.is_set():
                await self._step()
        finally:
            await self._drain()

    def stop(self) -> None:
        """Ask the loop to end after its current turn."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the outbox now (e.g. right after an enqueue in this process)."""
        self._wake.set()

    def _in_flight(self) -> int:
        return sum(self._tasks.values())

    async def _step(self) -> None:
        try:
            await self._pause(await self._turn())
        except _DB_ERRORS as exc:
            log.warning("email dispatcher: database unavailable (%s); retrying", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_S):
                    await self._stopping.wait()

    async def _turn(self) -> int:
        free = min(self._max_in_flight - self._in_flight(), BATCH)
        if free <= 0:
            return 0
        rows = await outbox.claim(self._pool, free)
        if not rows:
            return 0
        tenants = await self._tenants({r.tenant for r in rows})
        groups: dict[SmtpServer | None, list[Claimed]] = {}
        for row in rows:
            groups.setdefault(tenants[row.tenant].server, []).append(row)
        for server, group in groups.items():
            chunks = [group[i :: self._per_server] for i in range(self._per_server)]
            for chunk in (c for c in chunks if c):
                self._start(self._send_all(server, chunk, tenants), len(chunk))
        return len(rows)

    async def _tenants(self, names: set[str]) -> dict[str, _Tenant]:
        grace = timedelta(hours=self._settings.secret_grace_hours)
        found: dict[str, _Tenant] = {}
        async with self._pool.acquire() as conn:
            for name in names:
                try:
                    own = (await valid_secrets(conn, self._box, name, "email", grace) or [{}])[0]
                    stripe = (await valid_secrets(conn, self._box, name, "stripe", grace) or [{}])[
                        0
                    ]
                except ConfigError as exc:  # a sealed value that does not open here
                    found[name] = _Tenant(None, f"tenant secrets: {exc}", False)
                    continue
                server, error = self._default, self._default_error
                if "smtp_url" in own:
                    server, error = _server(own["smtp_url"], f"tenant {name}'s email/smtp_url")
                templates = await store.tenant_templates(conn, name)
                found[name] = _Tenant(server, error, "api_key" in stripe, templates)
        return found

    async def _pause(self, claimed: int) -> None:
        due_in = await outbox.next_due_in(self._pool)
        wait = MAX_POLL_S if due_in is None else min(MAX_POLL_S, max(due_in, 0.0))
        if self._in_flight() >= self._max_in_flight:
            wait = MAX_POLL_S
        elif wait <= 0.0 and claimed == 0:
            wait = 0.05  # due rows another executor holds right now: do not spin on them
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    def _start(self, work: Coroutine[Any, Any, None], size: int) -> None:
        task = asyncio.create_task(work)
        self._tasks[task] = size

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.pop(finished, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "email sends crashed; retried when their leases end",
                    exc_info=finished.exception(),
                )
            self._wake.set()

        task.add_done_callback(done)

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._settings.email_timeout_s + 5)
        for task in pending:  # their leases end and another turn sends them again
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _send_all(
        self, server: SmtpServer | None, rows: list[Claimed], tenants: dict[str, _Tenant]
    ) -> None:
        connection = Connection(server, self._settings.email_timeout_s) if server else None
        try:
            for row in rows:
                label = await self._one(connection, row, tenants[row.tenant])
                SENDS.labels(label).inc()
        finally:
            if connection is not None:
                await connection.close()

    async def _one(self, connection: Connection | None, row: Claimed, tenant: _Tenant) -> str:
        """Send one claimed email (or suppress, defer or fail it); the outcome's label."""
        scale, db = self._settings.time_scale, self._pool
        reason = row.suppression()
        if reason is not None:
            await outbox.record_suppressed(db, row, reason)
            return "suppressed"
        if connection is None:
            await outbox.defer(db, row, tenant.server_error or outbox.NO_SERVER, time_scale=scale)
            return "deferred"
        try:
            envelope, rendered = self._compose(row, tenant)
        except (TemplateError, ConfigError) as exc:
            await outbox.record_failed(db, row, str(exc))
            return "failed"
        outcome = await connection.send(envelope, rendered)
        return await self._record(row, envelope.to_address, outcome, connection.server)

    async def _record(self, row: Claimed, to: str, outcome: Outcome, server: SmtpServer) -> str:
        db, scale = self._pool, self._settings.time_scale
        if outcome.kind == "sent":
            await outbox.record_sent(db, row, to, outcome.message_id or "")
            return "sent"
        if outcome.kind == "bounce":
            await outbox.record_bounced(db, row, to, outcome.detail)
            return "bounced"
        if outcome.kind == "failed":
            await outbox.record_failed(db, row, outcome.detail, to=to)
            return "failed"
        status = await outbox.record_failure(db, row, outcome.detail, time_scale=scale, to=to)
        log.info("email %s via %s: %s (%s)", row.email_id, server.shown, outcome.detail, status)
        return "retry"

    def _compose(self, row: Claimed, tenant: _Tenant) -> tuple[Envelope, Rendered]:
        template = tenant.templates.get(row.template) or BUILTIN.get(row.template)
        if template is None:
            raise TemplateError(
                f"no template {row.template!r}: add it with `paywatch template set "
                f"{row.tenant} {row.template} ...`"
            )
        assert row.to_address and row.customer_ref and row.from_address  # suppression()
        values = context(
            company=row.display_name or row.tenant, customer_name=row.customer_name,
            customer_ref=row.customer_ref, invoice_ref=row.invoice_ref,
            amount_minor=row.amount_minor, currency=row.currency, provider=row.provider,
            due_at=row.due_at, template=row.template,
            update_url=self._update_url(row, tenant),
            unsubscribe_url=self._api_link(row, "unsubscribe", UNSUBSCRIBE_DAYS),
        )  # fmt: skip
        envelope = Envelope(
            row.from_address, row.to_address, row.display_name, row.reply_to,
            values["unsubscribe_url"], row.email_id,
        )  # fmt: skip
        return envelope, render(row.template, template, values)

    def _api_link(self, row: Claimed, purpose: Purpose, days: int) -> str:
        assert row.customer_ref is not None
        expires = self._clock() + timedelta(days=days)
        claims = claims_for(row.tenant, row.customer_ref, row.invoice_ref, purpose, expires)
        base = self._settings.public_api_url.rstrip("/")
        return with_token(f"{base}/v1/email/{purpose}", self._signer.sign(claims))

    def _update_url(self, row: Claimed, tenant: _Tenant) -> str:
        days = self._settings.email_link_days
        if row.provider == "stripe" and tenant.stripe:
            return self._api_link(row, "update", days)
        if row.update_url is None or row.link_secret_enc is None or row.customer_ref is None:
            return ""
        secret = store.open_link_secret(self._box, row.tenant, row.link_secret_enc)
        expires = self._clock() + timedelta(days=days)
        claims = claims_for(row.tenant, row.customer_ref, row.invoice_ref, "update", expires)
        return with_token(row.update_url, sign(secret.encode("utf-8"), claims))


def _server(url: str, what: str) -> tuple[SmtpServer | None, str | None]:
    try:
        return parse_smtp_url(url), None
    except SmtpUrlError as exc:
        return None, f"{what}: {exc}"


def _default_server(settings: Settings) -> tuple[SmtpServer | None, str | None]:
    if settings.smtp_url is None:
        return None, None
    return _server(settings.smtp_url.get_secret_value(), "PAYWATCH_SMTP_URL")
