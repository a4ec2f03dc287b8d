"""GET /health of ingest: 503 when Kafka does not answer, else the processes' verdict.

200 ``{"status": "ok", "kafka": "reachable", ...}`` as before; ``"degraded"`` (still 200:
ingest itself takes webhooks) with ``reasons`` and ``last_error`` when a worker, projector
or executor restarted uncleanly, dead-lettered, lags or went silent
(:mod:`paywatch.db.health`), or when their heartbeats cannot be read.
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


async def health(request: Request) -> JSONResponse:
    """503 when Kafka is unreachable; else 200 with ``ok`` or ``degraded`` and the reasons."""
    ctx = request.app.state.ingest
    if not await ctx.appender.healthy():
        return JSONResponse({"status": "unavailable", "kafka": "unreachable"}, status_code=503)
    found = await processes(request.app.state.health_pool, ctx.settings)
    return JSONResponse({"kafka": "reachable", **found})


async def processes(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    """The stack's verdict as JSON; ``degraded`` when the heartbeats cannot be read."""
    try:
        async with pool.acquire(timeout=_PROBE_TIMEOUT_S) as conn:
            found = await asyncio.wait_for(
                verdict(conn, settings.app_id, thresholds(settings), datetime.now(UTC)),
                _PROBE_TIMEOUT_S,
            )
    except _DB_ERRORS as exc:
        log.warning("process health not read: %s", type(exc).__name__)
        reason = f"process health unknown (database: {type(exc).__name__})"
        return {"status": "degraded", "reasons": [reason], "last_error": None, "processes": {}}
    return found.as_json()
