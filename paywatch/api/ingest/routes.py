"""POST /webhooks/{provider}/{tenant}: verify, append to webhooks.raw, answer after the ack.

Order of checks (ARCHITECTURE §6): size (413) -> provider/tenant (404) ->
signature on the raw bytes (401) -> card number (422) -> parse (400) ->
append with broker ack (503 when Kafka is unavailable) -> 200.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from paywatch.api.ingest.body import BodyTooLarge, read_capped
from paywatch.api.ingest.metrics import LATENCY, PAN_REJECTED, REQUESTS
from paywatch.errors import (
    CardDataError,
    PayloadError,
    Retryable,
    UnknownProvider,
    UnknownTenant,
    VerificationError,
)
from paywatch.kafka.appender import KafkaAppender
from paywatch.providers.base import Provider
from paywatch.providers.registry import get_provider
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import RawWebhook
from paywatch.schemas.topics import raw_key
from paywatch.settings import BODY_LIMIT_BYTES, Settings
from paywatch.tenants.cache import SecretCache

log = logging.getLogger(__name__)
router = APIRouter()

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


@dataclass(frozen=True)
class IngestContext:
    """What the route needs, built once in the app lifespan."""

    settings: Settings
    appender: KafkaAppender
    secrets: SecretCache
    codec: Codec
    raw_topic: str
    providers: dict[str, Provider]


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _kept_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in _DROP_HEADERS}


async def _accept(
    ctx: IngestContext, provider: Provider, tenant: str, request: Request
) -> Response:
    body = await read_capped(request, BODY_LIMIT_BYTES)
    secrets = await ctx.secrets.get(tenant, provider.name)
    if secrets is None:
        raise UnknownTenant(tenant)
    now = datetime.now(UTC)
    headers = {k.lower(): v for k, v in request.headers.items()}
    await provider.verify_async(body, headers, secrets, now)  # PayPal calls out
    doc = provider.read(body)  # card numbers (422), then the one parse (400)
    if provider.handshake(doc):  # Xero intent-to-receive
        return Response(status_code=200)  # verified, nothing to store
    subject = provider.subject(doc)
    raw = RawWebhook(
        ingest_id=str(uuid.uuid4()),
        tenant=tenant,
        provider=provider.name,
        received_at=now,
        headers=_kept_headers(request),
        body=body,
        subject=subject,
    )
    key = raw_key(tenant, provider.name, subject)
    value = ctx.codec.encode(raw, topic=ctx.raw_topic)
    partition, offset = await ctx.appender.append(ctx.raw_topic, key.encode(), value)
    if provider.success_body is not None:  # Adyen: "[accepted]"
        return PlainTextResponse(provider.success_body)
    if provider.empty_ack:  # Xero: 200 with no body
        return Response(status_code=200)
    return JSONResponse(
        {
            "status": "accepted",
            "ingest_id": raw.ingest_id,
            "provider_event_id": provider.provider_event_id(doc),
            "partition": partition,
            "offset": offset,
        },
        status_code=200,
    )


async def _handle(
    ctx: IngestContext, provider_name: str, tenant: str, request: Request
) -> tuple[str, Response]:
    provider: Provider | None = None
    try:
        provider = get_provider(provider_name, ctx.providers)
        return "accepted", await _accept(ctx, provider, tenant, request)
    except BodyTooLarge:
        return "too_large", _error(413, "too_large", f"body exceeds {BODY_LIMIT_BYTES} bytes")
    except UnknownProvider as exc:
        return "unknown_provider", _error(404, "unknown_provider", str(exc))
    except UnknownTenant:
        return "unknown_tenant", _error(404, "unknown_tenant", f"no tenant {tenant!r}")
    except VerificationError as exc:
        if provider is not None and provider.empty_ack:  # Xero: 401 with no body (§2.5)
            return "bad_signature", Response(status_code=401)
        return "bad_signature", _error(401, "bad_signature", str(exc))
    except CardDataError:
        PAN_REJECTED.inc()
        return "card_data", _error(
            422,
            "card_data_rejected",
            "the body contains a card number (PAN); it was not stored. Send provider tokens only",
        )
    except PayloadError as exc:
        return "malformed", _error(400, "malformed", str(exc))
    except Retryable as exc:
        log.warning("webhook for %s/%s not acknowledged: %s", tenant, provider_name, exc)
        return "unavailable", _error(
            503, "unavailable", "the webhook could not be verified or stored right now; retry"
        )


@router.post("/webhooks/{provider}/{tenant}", response_model=None)
async def receive_webhook(provider: str, tenant: str, request: Request) -> Response:
    """Accept one provider webhook."""
    started = time.perf_counter()
    ctx: IngestContext = request.app.state.ingest
    outcome, response = await _handle(ctx, provider, tenant, request)
    REQUESTS.labels(provider if outcome != "unknown_provider" else "-", outcome).inc()
    LATENCY.labels(outcome).observe(time.perf_counter() - started)
    return response


@router.get("/webhooks/{provider}/{tenant}", response_model=None)
async def handshake(provider: str, tenant: str, request: Request) -> Response:
    """Provider verification handshakes (Braintree `?bt_challenge=`); 405 for the others."""
    ctx: IngestContext = request.app.state.ingest
    try:
        module = get_provider(provider, ctx.providers)
    except UnknownProvider as exc:
        return _error(404, "unknown_provider", str(exc))
    if not module.answers_challenge:
        return _error(405, "method_not_allowed", f"{provider} webhooks are POSTed")
    challenge = request.query_params.get("bt_challenge")
    if not challenge:
        return _error(400, "malformed", "missing bt_challenge query parameter")
    secrets = await ctx.secrets.get(tenant, module.name)
    if secrets is None:
        return _error(404, "unknown_tenant", f"no tenant {tenant!r}")
    try:
        return PlainTextResponse(module.challenge_response(challenge, secrets))
    except VerificationError as exc:
        return _error(401 if not secrets else 400, "bad_challenge", str(exc))
