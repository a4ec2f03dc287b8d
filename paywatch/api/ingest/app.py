"""The ingest process: FastAPI app receiving provider webhooks (default :8080)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import httpx
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from paywatch.api.ingest.context import IngestContext
from paywatch.api.ingest.health import health
from paywatch.api.ingest.metrics import RATE_LIMITED
from paywatch.api.ingest.routes import router
from paywatch.api.ingest.webhooks import WebhookEndpoint, webhook_target
from paywatch.api.ratelimit import TokenBuckets
from paywatch.db import create_pool
from paywatch.deadlines import Deadlines
from paywatch.kafka.appender import KafkaAppender
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import kafka_security
from paywatch.providers.base import Provider
from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.paypal.replay import replay_retention
from paywatch.providers.registry import configured_providers
from paywatch.schemas.topics import WEBHOOKS_RAW
from paywatch.settings import Settings
from paywatch.tenants.cache import SecretCache
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import valid_secrets
from paywatch.tenants.transmissions import TransmissionLedger

# Providers answer within seconds or the webhook is retried later (503): never hang ingest.
PROVIDER_HTTP_TIMEOUT_S = 5.0
WEBHOOK_PATH = "/webhooks/{provider}/{tenant}"
INGEST_PRODUCERS = 2
"""Producers behind ingest's appender, each owning the partitions p with p % 2 == its index.
aiokafka keeps one produce request in flight per producer and broker, and every webhook
waits for its ack: with one producer ingest's core sat idle 8 % of the time at 64
connections; with two, 1 % (bench/RESULTS.md, "Ingest, fourth engine session")."""


class IngestApp(FastAPI):
    """The ingest FastAPI app; webhook POSTs go straight to their endpoint.

    Every webhook would otherwise pass FastAPI's middleware (error page, telemetry, body
    limit, exception handlers, exit stack) and router before reaching an endpoint that
    uses none of them: ~40 of ~155 us CPU per webhook when measured (bench_ingest.py).
    Everything else (the GET handshake, /health, /metrics, unknown paths) is served by
    FastAPI as usual.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection."""
        target = webhook_target(scope)
        if target is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.webhook_endpoint.handle(scope, receive, send, *target)

    webhook_endpoint = WebhookEndpoint()


def create_app(
    settings: Settings,
    bootstrap: str,
    dsn: str,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the ingest app; connections are opened in the lifespan, not here.

    `http_transport` replaces the network for provider calls (tests: httpx.MockTransport).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(dsn, min_size=1, max_size=5)
        box = SecretBox.from_settings(settings)
        grace = timedelta(hours=settings.secret_grace_hours)

        async def load(tenant: str, provider: str) -> list[dict[str, str]] | None:
            async with pool.acquire() as conn:
                return await valid_secrets(conn, box, tenant, provider, grace)

        http = httpx.AsyncClient(
            transport=http_transport, timeout=PROVIDER_HTTP_TIMEOUT_S, follow_redirects=False
        )
        appender = KafkaAppender(
            bootstrap,
            settings.ingest_ack_timeout_s,
            security=kafka_security(settings),
            producers=INGEST_PRODUCERS,
        )
        await appender.start()
        providers = configured_providers(settings, http)
        app.state.health_pool = pool  # GET /health reads the processes' heartbeats
        app.state.ingest = IngestContext(
            settings=settings,
            appender=appender,
            secrets=SecretCache(load),
            codec=make_codec(settings),
            raw_topic=settings.topic(WEBHOOKS_RAW),
            providers=providers,
            body_deadlines=Deadlines(settings.body_read_timeout_s),
            paypal_transmissions=_paypal_ledger(pool, providers),
            limits=_limits(settings),
        )
        try:
            yield
        finally:
            await appender.stop()
            await http.aclose()
            await pool.close()

    app = IngestApp(title="paywatch ingest", lifespan=lifespan, docs_url=None, redoc_url=None)
    # The webhook POST is a plain ASGI route (the hot path: see webhooks.py); the handshake
    # GET on the same path, /health and /metrics are FastAPI routes.
    app.router.routes.append(Route(WEBHOOK_PATH, app.webhook_endpoint, methods=["POST"]))
    app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    return app


def _paypal_ledger(pool: asyncpg.Pool, providers: dict[str, Provider]) -> TransmissionLedger | None:
    """The replay guard of PayPal certificate mode, kept as long as its freshness window."""
    paypal = providers.get("paypal")
    if not isinstance(paypal, PayPalProvider):
        return None
    return TransmissionLedger(pool, replay_retention(paypal.tolerance))


def _limits(settings: Settings) -> TokenBuckets | None:
    """The per-tenant webhook rate limit of this process (None: PAYWATCH_INGEST_RATE=0).

    Keyed by tenant alone, all providers together: the limit protects this process and
    Postgres from one tenant's flood, whichever provider URL it arrives on.
    """
    if settings.ingest_rate <= 0:
        return None
    return TokenBuckets(
        settings.ingest_rate,
        settings.ingest_burst,
        max_keys=settings.rate_limit_tenants,
        refused=RATE_LIMITED,
    )


async def metrics() -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
