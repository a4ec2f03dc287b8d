"""POST /webhooks/{provider}/{tenant}: verify, append to webhooks.raw, answer after the ack.

Order of checks (ARCHITECTURE §6): provider (404) -> tenant name's form (404, nothing
looked up) -> the tenant's rate limit (429 with ``Retry-After``, before any Postgres lookup
or signature work, for known and unknown tenants alike) -> size (413) and body read
timeout (408) -> tenant (404) -> signature on the raw bytes (401) -> card number (422) ->
parse (400) -> append with broker ack (503 when Kafka is unavailable) -> 200. Postgres
down while the tenant's secrets are looked up is a 503 too: nothing is known, so nothing is
refused for good; every 503 carries ``Retry-After``.

This is the hot path of the ingest process, so it is a plain ASGI endpoint rather than a
FastAPI route: no request object, dependency solving, path-parameter validation or
response objects per webhook, and ``app.py``'s ``IngestApp`` hands it the POSTs that
``webhook_target`` recognises before FastAPI's middleware and router (the endpoint is
also a Starlette route of the same path, so routing gives the same answer). The ASGI headers are
decoded once into the dict the provider verifies and the record keeps; answers are bytes
with the same status, body and content type the FastAPI responses had (Starlette's
``JSONResponse`` rendering, ``text/plain; charset=utf-8``, an empty 200/401).
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from starlette.types import Receive, Scope, Send

from paywatch.api.ingest.body import BodyTimeout, BodyTooLarge, ClientGone, read_body
from paywatch.api.ingest.context import IngestContext
from paywatch.api.ingest.metrics import PAN_REJECTED, count
from paywatch.api.ratelimit import retry_after
from paywatch.errors import (
    CardDataError,
    ConfigError,
    PayloadError,
    Retryable,
    UnknownProvider,
    UnknownTenant,
    VerificationError,
)
from paywatch.providers.base import Provider, Secrets
from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.paypal.replay import TransmissionReplayed
from paywatch.providers.registry import get_provider
from paywatch.schemas.models import RawWebhook
from paywatch.schemas.topics import raw_key
from paywatch.settings import BODY_LIMIT_BYTES
from paywatch.tenants.cache import Miss
from paywatch.tenants.store import TENANT_RE

log = logging.getLogger(__name__)

# Headers never written to the log: credentials some providers send next to the signature.
_DROP_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "content-length",
        "connection",
        "accept-encoding",
    }
)
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
RETRY_AFTER_S = 5
"""Retry-After of a 503: Kafka or Postgres is expected back within seconds."""
_CLOSE = (b"connection", b"close")
"""A 408 closes the connection: the rest of the trickled body is never read."""
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

Reply = tuple[int, bytes, bytes | None]
"""Status, body and content type (None: no Content-Type header) of an answer."""


def json_reply(status: int, content: dict[str, Any]) -> Reply:
    """A compact JSON answer (msgspec writes what Starlette's JSONResponse did: UTF-8, no
    spaces, ~0.1 µs instead of json.dumps's ~1.9); a string that UTF-8
    cannot carry (a lone surrogate from a ``\\ud800`` escape in a provider's body) is sent
    escaped instead of failing the answer after the webhook was stored."""
    try:
        return status, _ENCODER.encode(content), _JSON
    except UnicodeEncodeError:
        escaped = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return status, escaped.encode("ascii"), _JSON


_ENCODER = msgspec.json.Encoder()
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_ingest_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` in a third of its time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _error(status: int, error: str, detail: str) -> Reply:
    return json_reply(status, {"error": error, "detail": detail})


_EMPTY_OK: Reply = (200, b"", None)
_EMPTY_401: Reply = (401, b"", None)


_PREFIX = "/webhooks/"


class RateLimited(Exception):
    """The tenant is over its rate limit (HTTP 429); ``retry_after`` whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def valid_tenant(name: str) -> bool:
    """True when ``name`` has the form `paywatch tenant create` accepts (tenants/store.py).

    Checked before any cache or Postgres lookup, so a name no tenant can have costs no
    query and no cache entry.
    """
    return TENANT_RE.fullmatch(name) is not None


def webhook_target(scope: Scope) -> tuple[str, str] | None:
    """(provider, tenant) when ``scope`` is a POST the webhook route would match, else None.

    Same match as the route ``/webhooks/{provider}/{tenant}`` (two non-empty segments
    without ``/``); requests under a root path are left to the router.
    """
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(_PREFIX):
        return None
    provider, slash, tenant = path[len(_PREFIX) :].partition("/")
    if not provider or not slash or not tenant or "/" in tenant:
        return None
    return provider, tenant


class WebhookEndpoint:
    """The ASGI app of the POST route (an instance, so Starlette calls it as ASGI)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Accept one webhook routed by Starlette (path parameters in the scope)."""
        params = scope["path_params"]
        await self.handle(scope, receive, send, params["provider"], params["tenant"])

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, provider: str, tenant: str
    ) -> None:
        """Accept one provider webhook: answer it, count it."""
        started = time.perf_counter()
        ctx: IngestContext = scope["app"].state.ingest
        wait = 0
        module: Provider | None = None
        try:
            module = get_provider(provider, ctx.providers)
            reply = await _accept(ctx, module, tenant, scope, receive)
            outcome = "accepted"
        except ClientGone:
            return  # nobody left to answer; nothing was appended
        except RateLimited as exc:  # before the body: the cheapest refusal there is
            wait = exc.retry_after
            outcome, reply = (
                "rate_limited",
                _error(
                    429, "rate_limited", f"tenant {tenant!r} is over its rate limit; retry later"
                ),
            )
        except _REFUSALS as exc:
            outcome, reply = _refusal(ctx, module, provider, tenant, exc)
        label = provider if outcome != "unknown_provider" else "-"
        count(label, outcome, time.perf_counter() - started)
        status, body, content_type = reply
        headers = [(b"content-length", str(len(body)).encode("latin-1"))]
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if status == 503:
            headers.append((b"retry-after", str(RETRY_AFTER_S).encode("latin-1")))
        elif status == 429:
            headers.append((b"retry-after", str(wait).encode("latin-1")))
        elif status == 408:
            headers.append(_CLOSE)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_REFUSALS = (
    BodyTooLarge,
    BodyTimeout,
    UnknownProvider,
    UnknownTenant,
    VerificationError,
    CardDataError,
    PayloadError,
    Retryable,
)
"""What `_accept` raises for a webhook it refuses; `_refusal` answers each."""


def _refusal(
    ctx: IngestContext, provider: Provider | None, name: str, tenant: str, exc: Exception
) -> tuple[str, Reply]:
    """The outcome label and answer of a refused webhook (checked in this order)."""
    if isinstance(exc, BodyTooLarge):
        return "too_large", _error(413, "too_large", f"body exceeds {BODY_LIMIT_BYTES} bytes")
    if isinstance(exc, BodyTimeout):
        seconds = ctx.settings.body_read_timeout_s
        return "body_timeout", _error(
            408, "body_timeout", f"the request body was not received within {seconds:g} s"
        )
    if isinstance(exc, UnknownProvider):
        return "unknown_provider", _error(404, "unknown_provider", str(exc))
    if isinstance(exc, UnknownTenant):
        return "unknown_tenant", _error(404, "unknown_tenant", f"no tenant {tenant!r}")
    if isinstance(exc, VerificationError):
        if provider is not None and provider.empty_ack:  # Xero: 401 with no body (§2.5)
            return "bad_signature", _EMPTY_401
        return "bad_signature", _error(401, "bad_signature", str(exc))
    if isinstance(exc, CardDataError):
        PAN_REJECTED.inc()
        return "card_data", _error(
            422,
            "card_data_rejected",
            "the body contains a card number (PAN); it was not stored. Send provider tokens only",
        )
    if isinstance(exc, PayloadError):
        return "malformed", _error(400, "malformed", str(exc))
    log.warning("webhook for %s/%s not acknowledged: %s", tenant, name, exc)  # Retryable
    return "unavailable", _error(
        503, "unavailable", "the webhook could not be verified or stored right now; retry"
    )


async def tenant_secrets(ctx: IngestContext, tenant: str, provider: str) -> Secrets | None:
    """The tenant's secret sets for ``provider`` (None: no such tenant); Retryable (503) when
    Postgres cannot be asked, never a 500: whether the tenant exists is not known.
    A malformed name is unknown without a lookup."""
    if not valid_tenant(tenant):
        return None
    try:
        return await ctx.secrets.get(tenant, provider)
    except _DB_ERRORS as exc:
        raise Retryable(f"tenant secrets unavailable: {type(exc).__name__}") from exc
    except ConfigError as exc:
        # A stored value that does not open (another master key, a row copied or altered):
        # the operator's to fix, and the provider's webhook is not at fault, so 503 and
        # its retries wait for the fix instead of a 500 or a 401 losing it. The error names
        # the row and key ids, never a value.
        log.error("tenant %s: %s secrets cannot be opened: %s", tenant, provider, exc)
        raise Retryable(f"tenant secrets cannot be opened: {exc}") from exc


async def _verify(
    ctx: IngestContext,
    provider: Provider,
    tenant: str,
    body: bytes,
    headers: dict[str, str],
    secrets: Secrets,
    now: datetime,
) -> None:
    """The provider's check (PayPal calls out), then PayPal certificate mode's replay guard.

    Certificate mode signs only a CRC-32 of the body, so a transmission id seen before with
    other bytes is a forged body (paywatch/providers/paypal/replay.py): 401 like any bad
    signature. It is recorded before the append, so a 503 leaves the genuine bytes known
    and PayPal's retry of them passes.
    """
    ledger = ctx.paypal_transmissions
    if ledger is None or not isinstance(provider, PayPalProvider):
        await provider.verify_async(body, headers, secrets, now)
        return
    verified = await provider.verify_delivery(body, headers, secrets, now)
    if verified.needs_replay_guard:
        try:
            await ledger.check(tenant, verified.transmission_id, body, now)
        except TransmissionReplayed:
            # No reason label on the request metric: this 401 counts as bad_signature.
            log.warning(
                "PayPal transmission %s for %s replayed with another body: refused",
                verified.transmission_id,
                tenant,
            )
            raise


async def _accept(
    ctx: IngestContext, provider: Provider, tenant: str, scope: Scope, receive: Receive
) -> Reply:
    if not valid_tenant(tenant):
        raise UnknownTenant(tenant)
    limits = ctx.limits
    if limits is not None:
        wait = limits.take(tenant)
        if wait:
            raise RateLimited(retry_after(wait))
    # ASGI servers lowercase header names; lowered again so no transport can differ.
    # One pass: every header for the checks, the ones the record may keep beside them.
    headers: dict[str, str] = {}
    kept: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = value
        if name not in _DROP_HEADERS:
            kept[name] = value
    declared = headers.get("content-length")
    body = await read_body(declared, receive, BODY_LIMIT_BYTES, ctx.body_deadlines)
    hit = ctx.secrets.cached(tenant, provider.name)  # no coroutine on a hit
    secrets = await tenant_secrets(ctx, tenant, provider.name) if isinstance(hit, Miss) else hit
    if secrets is None:
        raise UnknownTenant(tenant)
    now = datetime.now(UTC)
    if type(provider).verify_async is Provider.verify_async:
        provider.verify(body, headers, secrets, now)  # what verify_async would call
    else:  # PayPal calls out
        await _verify(ctx, provider, tenant, body, headers, secrets, now)
    doc = provider.read(body)  # card numbers (422), then the one parse (400)
    if provider.handshake(doc):  # Xero intent-to-receive
        return _EMPTY_OK  # verified, nothing to store
    subject = provider.subject(doc)
    raw = RawWebhook(
        ingest_id=new_ingest_id(),
        tenant=tenant,
        provider=provider.name,
        received_at=now,
        headers=kept,
        body=body,
        subject=subject,
    )
    key = raw_key(tenant, provider.name, subject)
    value = ctx.codec.encode(raw, topic=ctx.raw_topic)
    partition, offset = await ctx.appender.append(ctx.raw_topic, key.encode(), value)
    if provider.success_body is not None:  # Adyen: "[accepted]"
        return 200, provider.success_body.encode("utf-8"), _TEXT
    if provider.empty_ack:  # Xero: 200 with no body
        return _EMPTY_OK
    return json_reply(
        200,
        {
            "status": "accepted",
            "ingest_id": raw.ingest_id,
            "provider_event_id": provider.provider_event_id(doc),
            "partition": partition,
            "offset": offset,
        },
    )
