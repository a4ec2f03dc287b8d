"""GET /health (database reachable, verdict on the processes) and GET /metrics (Prometheus)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paywatch.api.query.deps import AppPool
from paywatch.api.query.schemas import Health
from paywatch.db.heartbeats import verdict
from paywatch.kafka.health import thresholds

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])

_PROBE_TIMEOUT_S = 2.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Liveness, database check and the processes' health",
)
async def health(pool: AppPool, request: Request) -> Health | JSONResponse:
    """503 when Postgres does not answer; else 200, ``ok`` or ``degraded`` with the reasons.

    Unauthenticated, so on the pool bound to no tenant: process_health has no tenant."""
    settings = request.app.state.settings
    try:
        async with pool.acquire(timeout=_PROBE_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT_S)
            found = await verdict(conn, settings.app_id, thresholds(settings), datetime.now(UTC))
    except _DB_ERRORS as exc:
        log.warning("health check failed: %s: %s", type(exc).__name__, exc)
        body = Health(status="unavailable", detail=f"database: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    return Health.model_validate(found.as_json())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    """This process's metrics in the Prometheus text exposition format."""
    payload = generate_latest(request.app.state.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
