"""The ``process_health`` table (migration 007): heartbeats written and read back.

Writers: the heartbeat task of the worker, projector and executor
(:mod:`paywatch.kafka.heartbeat`). Readers: ``/health`` of ingest and api and
``paywatch status``, through :func:`verdict`. Error texts are scrubbed
(:func:`paywatch.db.health.scrub`) before they are stored.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from paywatch.db.health import ProcessReport, Thresholds, Verdict, assess, scrub

Op = Callable[[asyncpg.Connection], Awaitable[Any]]
"""One store call on a connection (what the heartbeat runs with its timeout)."""


@dataclass(frozen=True)
class Key:
    """Which row: the stack (app id), the process name and the instance (host)."""

    app_id: str
    process: str
    instance: str


@dataclass(frozen=True)
class Beat:
    """What one heartbeat writes."""

    records_total: int
    records_per_s: float
    dead_letters: int
    last_dead_letter_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lag: Mapping[str, int]
    batches: Mapping[str, Any]


_START = """
INSERT INTO process_health AS h (app_id, process, instance, pid, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $5)
ON CONFLICT (app_id, process, instance) DO UPDATE SET
    pid = EXCLUDED.pid,
    starts = h.starts + 1,
    last_start_unclean = h.stopped_at IS NULL,
    unclean_restarts = h.unclean_restarts + (h.stopped_at IS NULL)::int,
    last_error = CASE WHEN h.stopped_at IS NULL THEN $6 || to_char(h.heartbeat_at
        AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ')' ELSE h.last_error END,
    last_error_at = CASE WHEN h.stopped_at IS NULL THEN $5 ELSE h.last_error_at END,
    started_at = $5, heartbeat_at = $5, stopped_at = NULL,
    records_total = 0, records_per_s = 0, dead_letters = 0, lag = '{}', batches = '{}'
RETURNING starts
"""
_UNCLEAN = "the previous run ended without a clean stop (killed or crashed; last heartbeat "

_BEAT = """
UPDATE process_health SET
    heartbeat_at = $4, records_total = $5, records_per_s = $6, dead_letters = $7,
    last_dead_letter_at = COALESCE($8, last_dead_letter_at),
    last_error = CASE WHEN $10::timestamptz IS NULL THEN last_error ELSE $9 END,
    last_error_at = COALESCE($10, last_error_at),
    lag = $11, batches = $12
WHERE app_id = $1 AND process = $2 AND instance = $3
"""

_STOP = """
UPDATE process_health SET
    stopped_at = CASE WHEN $5::text IS NULL THEN $4::timestamptz END,
    heartbeat_at = $4::timestamptz,
    last_error = COALESCE($5::text, last_error),
    last_error_at = CASE WHEN $5::text IS NULL THEN last_error_at ELSE $4::timestamptz END
WHERE app_id = $1 AND process = $2 AND instance = $3
"""


async def started(conn: asyncpg.Connection, key: Key, pid: int, now: datetime) -> int:
    """Record a start (a restart when the row exists); the number of starts so far."""
    starts: int = await conn.fetchval(
        _START, key.app_id, key.process, key.instance, pid, now, _UNCLEAN
    )
    return starts


async def beat(conn: asyncpg.Connection, key: Key, now: datetime, b: Beat) -> None:
    """Write one heartbeat."""
    error = scrub(b.last_error) if b.last_error else None
    await conn.execute(
        _BEAT, key.app_id, key.process, key.instance, now, b.records_total, b.records_per_s,
        b.dead_letters, b.last_dead_letter_at, error, b.last_error_at, dict(b.lag),
        dict(b.batches),
    )  # fmt: skip


async def stopped(
    conn: asyncpg.Connection, key: Key, now: datetime, error: str | None = None
) -> None:
    """A requested stop (`error` None: clean) or a stop because of `error` (not clean)."""
    text = scrub(error) if error else None
    await conn.execute(_STOP, key.app_id, key.process, key.instance, now, text)


async def reports(conn: asyncpg.Connection, app_id: str) -> list[ProcessReport]:
    """Every process row of one stack."""
    try:
        rows = await conn.fetch("SELECT * FROM process_health WHERE app_id = $1", app_id)
    except asyncpg.UndefinedTableError:  # a database not migrated to 007 yet: no reports
        return []
    return [_report(row) for row in rows]


async def verdict(conn: asyncpg.Connection, app_id: str, th: Thresholds, now: datetime) -> Verdict:
    """The stack's verdict, read now (Postgres' clock is not used: `now` comes in)."""
    return assess(await reports(conn, app_id), now, th)


def _report(row: Any) -> ProcessReport:
    fields = dict(row)
    fields.pop("app_id")
    fields["lag"] = _json(fields["lag"])
    fields["batches"] = _json(fields["batches"])
    return ProcessReport(**fields)


def _json(value: Any) -> Any:
    """jsonb comes back decoded on paywatch pools, as text on a bare connection."""
    return json.loads(value) if isinstance(value, str) else value
