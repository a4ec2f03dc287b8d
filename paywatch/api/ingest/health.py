"""GET /health of ingest: 503 when Kafka or Postgres does not answer, else the processes' verdict.

Ingest needs both to take a webhook: Postgres for the tenant's secrets (and PayPal's
transmission ids), Kafka for the append. So, like the query API's /health, it probes
Postgres (``SELECT 1``) and answers 503 ``{"status": "unavailable", "kafka": ...,
"database": ..., "detail": ...}`` when either is down: a load balancer stops sending it
webhooks, which providers redeliver. Otherwise 200 ``{"status": "ok", "kafka": "reachable",
"database": "reachable", ...}``, or ``"degraded"`` (still 200: ingest itself takes
webhooks) with ``reasons`` and ``last_error`` when a worker, projector or executor
restarted uncleanly, dead-lettered, lags or went silent (:mod:`paywatch.db.health`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from paywatch.db.heartbeats import verdict
from paywatch.kafka.health import thresholds
from paywatch.settings import Settings

log = logging.getLogger(__name__)
_PROBE_TIMEOUT_S = 2.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseDown(Exception):
    """Postgres did not answer the probe; the message names the error's type."""


async def health(request: Request) -> JSONResponse:
    """503 when Kafka or Postgres is unreachable; else 200 with ``ok`` or ``degraded``."""
    ctx = request.app.state.ingest
    kafka = "reachable" if await ctx.appender.healthy() else "unreachable"
    try:
        found = await processes(request.app.state.health_pool, ctx.settings)
    except DatabaseDown as exc:
        down = {"status": "unavailable", "kafka": kafka, "database": "unreachable"}
        return JSONResponse(down | {"detail": f"database: {exc}"}, status_code=503)
    if kafka == "unreachable":
        body = {"status": "unavailable", "kafka": kafka, "database": "reachable"}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"kafka": kafka, "database": "reachable", **found})


async def processes(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    """The stack's verdict as JSON; DatabaseDown when Postgres does not answer."""
    try:
        async with pool.acquire(timeout=_PROBE_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT_S)
            found = await asyncio.wait_for(
                verdict(conn, settings.app_id, thresholds(settings), datetime.now(UTC)),
                _PROBE_TIMEOUT_S,
            )
    except _DB_ERRORS as exc:
        log.warning("health check failed: database: %s: %s", type(exc).__name__, exc)
        raise DatabaseDown(type(exc).__name__) from exc
    return found.as_json()
