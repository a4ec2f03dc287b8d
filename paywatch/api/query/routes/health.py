"""GET /health (database reachable) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

import logging

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paywatch.api.query.deps import Pool
from paywatch.api.query.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])

_PROBE_TIMEOUT_S = 2.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Liveness and database check",
)
async def health(pool: Pool) -> Health | JSONResponse:
    """200 when Postgres answers ``SELECT 1``, else 503."""
    try:
        async with pool.acquire(timeout=_PROBE_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT_S)
    except _DB_ERRORS as exc:
        log.warning("health check failed: %s: %s", type(exc).__name__, exc)
        body = Health(status="unavailable", detail=f"database: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok")


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
