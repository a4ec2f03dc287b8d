"""The query API process (`paywatch run api`, :8081): read models over HTTP, per tenant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paywatch.api.query.deps import ApiError, pattern_meaning
from paywatch.api.query.openapi import corrected
from paywatch.api.query.routes import (
    alerts,
    apikeys,
    attempts,
    backtest,
    contacts,
    customers,
    deliveries,
    email_links,
    endpoints,
    failures,
    health,
    invoices,
    metrics,
    ops_audit,
    policy,
    replay,
    timeline,
)
from paywatch.api.query.schemas import ErrorBody
from paywatch.api.ratelimit import TokenBuckets
from paywatch.db import create_pool
from paywatch.settings import BODY_LIMIT_BYTES, Settings
from paywatch.tenants.ops_audit import open_ops_log
from paywatch.tenants.policy_log import open_policy_log

_UNMATCHED = "<unmatched>"
_MAX_INPUT_CHARS = 80


@dataclass(frozen=True)
class RequestMetrics:
    """Per-app request metrics (own registry, so several apps can live in one process)."""

    requests: Counter
    latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RequestMetrics:
        """Register the paywatch_api_* request metrics in ``registry``."""
        labels = ["method", "route", "status"]
        return cls(
            requests=Counter(
                "paywatch_api_requests", "HTTP requests answered.", labels, registry=registry
            ),
            latency=Histogram(
                "paywatch_api_request_duration_seconds",
                "Time to answer an HTTP request.",
                labels,
                registry=registry,
            ),
        )


class MetricsMiddleware:
    """ASGI middleware: counts and times requests by route template, never by raw path."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through and record its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            # The router stores the matched route in the (shared) scope.
            route = getattr(scope.get("route"), "path", _UNMATCHED)
            labels = (scope["method"], route, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BodyDeadlineMiddleware:
    """ASGI middleware: a request body must arrive in full within ``within_s`` (else 408).

    A client that trickles its body (slowloris) would otherwise hold a connection, a
    request task and a database-free wait for as long as it likes. The body is read here
    under one deadline and handed on as it came; API bodies (policies, at most 64 KiB) are
    small, so one over BODY_LIMIT_BYTES is refused (413) as soon as it passes that, not
    held whole.
    """

    def __init__(self, app: ASGIApp, within_s: float) -> None:
        self.app = app
        self.within_s = within_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body under the deadline, then pass the request through."""
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        try:
            async with asyncio.timeout(self.within_s):
                while True:
                    message = await receive()
                    messages.append(message)
                    size += len(message.get("body", b""))
                    if size > BODY_LIMIT_BYTES:
                        detail = f"the request body exceeds {BODY_LIMIT_BYTES} bytes"
                        reply = _error(413, "too_large", detail, {"Connection": "close"})
                        await reply(scope, receive, send)
                        return
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break
        except TimeoutError:
            detail = f"the request body was not received within {self.within_s:g} s"
            reply = _error(408, "body_timeout", detail, {"Connection": "close"})
            await reply(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _error(status: int, error: str, detail: str, headers: Any = None) -> JSONResponse:
    body = ErrorBody(error=error, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names only the first route of the path (GET of /v1/policy, not PUT):
    # ask every route whether it would take the path with each method instead.
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ApiError):
        code = exc.error
    else:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = exc.headers
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return _error(exc.status_code, code, str(exc.detail), headers)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    meaning = None
    if error["type"] == "string_pattern_mismatch":
        meaning = pattern_meaning(error.get("ctx", {}).get("pattern", ""))
    said = meaning or error["msg"].removeprefix("Value error, ")
    text = f"{where}: {said}"
    if "input" in error and error["input"] is not None:
        given = repr(error["input"])
        if len(given) > _MAX_INPUT_CHARS:
            given = given[:_MAX_INPUT_CHARS] + "..."
        text += f" (got {given})"
    return text


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    # Bad query/path parameters are the client's fault: 400 everywhere, with every reason.
    assert isinstance(exc, RequestValidationError)
    detail = "; ".join(_describe(e) for e in exc.errors())
    return _error(400, "invalid_request", detail)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class QueryApp(FastAPI):
    """The query API's FastAPI app, publishing the corrected OpenAPI document (openapi.py)."""

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, built once."""
        if self.openapi_schema is None:
            self.openapi_schema = corrected(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings, dsn: str, bootstrap: str | None = None) -> FastAPI:
    """Build the query API; the lifespan opens (and closes) the Postgres pool.

    With `bootstrap`, also producers for policy changes (PUT /v1/policy) and the ops.audit
    records of admin actions; without one, PUT /v1/policy answers 503 and admin actions
    are not audited (an app for tests or embedding: `paywatch run api` always has Kafka).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # As paywatch_api: row-level security (migration 014) scopes every query.
            app.state.pool = await create_pool(settings.role_dsn("api", dsn))
            stack.push_async_callback(app.state.pool.close)
            app.state.policy_log = None
            app.state.ops_log = None  # no Kafka: admin actions are not audited (tests only)
            if bootstrap is not None:
                log = open_policy_log(settings, bootstrap)
                app.state.policy_log = await stack.enter_async_context(log)
                ops_log = open_ops_log(settings, bootstrap)
                app.state.ops_log = await stack.enter_async_context(ops_log)
            yield

    app = QueryApp(
        title="paywatch query API",
        summary="Payment failures, invoices and recovery read models, per tenant.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.bootstrap = bootstrap  # None: POST /v1/ops/backtest answers 503
    app.state.registry = _registry()
    app.state.rate_limits = _limits(settings, app.state.registry)
    app.add_middleware(BodyDeadlineMiddleware, within_s=settings.body_read_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics.create(app.state.registry))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for module in (
        invoices,
        timeline,
        attempts,
        failures,
        metrics,
        customers,
        alerts,
        policy,
        apikeys,
        endpoints,
        deliveries,
        contacts,
        email_links,
        ops_audit,
        backtest,
        replay,
        health,
    ):
        app.include_router(module.router)
    return app


def _limits(settings: Settings, registry: CollectorRegistry) -> TokenBuckets | None:
    """Per-tenant request limit of this API process (None: PAYWATCH_API_RATE=0), keyed by
    the API key's tenant (deps.get_caller), refusals counted in ``registry``."""
    if settings.api_rate <= 0:
        return None
    refused = Counter(
        "paywatch_api_rate_limited",
        "Requests refused with 429 because their tenant was over its rate limit.",
        registry=registry,
    )
    return TokenBuckets(
        settings.api_rate,
        settings.api_burst,
        max_keys=settings.rate_limit_tenants,
        refused=refused,
    )
