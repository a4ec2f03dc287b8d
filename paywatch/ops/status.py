"""`paywatch status`: infrastructure, processes, and whether the stack is healthy.

The JSON keeps its fields (``infra``, ``processes`` {pid, running}, ``ingest_health``,
``api_health``) and adds ``supervisor`` (restarts of children and of the embedded
Kafka/Postgres, from supervision.json) and ``health``: ``ok`` or ``degraded`` with the
reasons and the last error, from the processes' heartbeats (:mod:`paywatch.db.health`) plus
what only the supervisor knows (a child not running, a recent infrastructure restart).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from paywatch.db.heartbeats import verdict
from paywatch.errors import InfraError, StackNotRunning
from paywatch.kafka.health import thresholds
from paywatch.ops import supervisor
from paywatch.ops.infra import infra_status, resolve_endpoints
from paywatch.ops.pids import pid_alive
from paywatch.settings import Settings

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_DB_TIMEOUT_S = 5.0


def stack_status(settings: Settings) -> tuple[dict[str, Any], bool]:
    """The status document and whether a supervisor (`paywatch up`) runs here."""
    status: dict[str, Any] = {"infra": infra_status(settings)}
    running = supervisor.running_supervisor(settings) is not None
    supervised = _read_json(supervisor.supervision_file(settings)) if running else {}
    procs = settings.state_path / "processes.json"
    if running and procs.exists():
        restarts = supervised.get("processes", {})
        status["processes"] = {
            name: {"pid": pid, "running": pid_alive(pid), **restarts.get(name, {})}
            for name, pid in json.loads(procs.read_text()).items()
        }
    if supervised:
        status["supervisor"] = supervised
    status["ingest_health"] = supervisor.http_ok(
        f"{supervisor.local_url(settings, settings.ingest_port)}/health"
    )
    status["api_health"] = supervisor.http_ok(
        f"{supervisor.local_url(settings, settings.api_port)}/health"
    )
    status["health"] = _health(settings, status, supervised)
    return status, running


def _health(settings: Settings, status: dict[str, Any], supervised: dict[str, Any]) -> Any:
    now = datetime.now(UTC)
    found = _heartbeats(settings, now)
    reasons = list(found.get("reasons", []))
    for name, proc in status.get("processes", {}).items():
        if not proc["running"]:
            reasons.append(f"{name}: not running ({proc.get('last_exit') or 'exited'})")
    window = settings.health_window_s
    for name, server in supervised.get("infra", {}).items():
        at = server.get("last_restart_at")
        if at and (now - datetime.fromisoformat(at)).total_seconds() <= window:
            reasons.append(
                f"{name}: restarted by paywatch up at {at} ({server['restarts']} restart(s))"
            )
        if server.get("last_failure"):
            reasons.append(f"{name}: last restart attempt failed: {server['last_failure']}")
    found["reasons"] = reasons
    if reasons:
        found["status"] = "degraded"
    return found


def _heartbeats(settings: Settings, now: datetime) -> dict[str, Any]:
    """The verdict from Postgres, or ``unknown`` with why it could not be read."""
    try:
        dsn = resolve_endpoints(settings).dsn
    except (StackNotRunning, InfraError) as exc:
        return {"status": "unknown", "detail": str(exc), "reasons": []}

    async def read() -> dict[str, Any]:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), _DB_TIMEOUT_S)
        try:
            found = await verdict(conn, settings.app_id, thresholds(settings), now)
        finally:
            await conn.close()
        return found.as_json()

    try:
        return asyncio.run(read())
    except _DB_ERRORS as exc:
        return {"status": "unknown", "detail": f"database: {type(exc).__name__}", "reasons": []}


def _read_json(path: Any) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
