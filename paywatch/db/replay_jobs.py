"""The ``replay_jobs`` table (migration 019): rebuilds of the read models and their progress.

Writers: the API (a job it asks for, under its tenant), the process that runs a job
(:mod:`paywatch.projections.rebuild`, as the owner: claim, progress, done or failed).
Readers: ``GET /v1/ops/replay/{id}`` and ``paywatch replay``. One job may be active at a
time (a unique index), since two would swap the same tables: asking for a second one is
:class:`JobActive`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

ACTIVE = ("pending", "running", "swapping")
JOB_ID_PATTERN = r"^rb_[a-z2-7]{14}$"
STALE_AFTER_S = 30.0
"""A running job whose heartbeat is older than this was interrupted (Ctrl-C, kill)."""


class JobActive(Exception):
    """Another rebuild is pending or running: one at a time."""


@dataclass(frozen=True)
class Job:
    """One rebuild as its row stands."""

    job_id: str
    tenant: str | None
    models: tuple[str, ...]
    status: str
    requested_by: str
    events_done: int
    events_total: int | None
    events_per_s: float | None
    eta_s: float | None
    targets: dict[str, dict[str, int]] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @property
    def schema(self) -> str:
        """The schema holding the new generation's tables while it is built."""
        return f"pw_rebuild_{self.job_id}"

    @property
    def archive(self) -> str:
        """The schema the replaced tables move to at the swap."""
        return f"pw_archive_{self.job_id}"


_COLUMNS = ", ".join(Job.__dataclass_fields__)
_GET = f"SELECT {_COLUMNS} FROM replay_jobs WHERE job_id = $1"  # noqa: S608 (fixed columns)
_ACTIVE_JOB = f"SELECT {_COLUMNS} FROM replay_jobs WHERE status = ANY($1::text[])"  # noqa: S608
_CREATE = (
    "INSERT INTO replay_jobs (tenant, models, requested_by) VALUES ($1, $2, $3)"  # noqa: S608
    f" RETURNING {_COLUMNS}"
)


def _job(row: Any) -> Job:
    values = dict(row)
    values["models"] = tuple(values["models"])
    targets = values["targets"]
    values["targets"] = json.loads(targets) if isinstance(targets, str) else targets
    return Job(**values)


async def create(conn: Any, tenant: str | None, models: list[str], requested_by: str) -> Job:
    """A new pending job; JobActive when another one is pending or running."""
    try:
        async with conn.transaction():
            return _job(await conn.fetchrow(_CREATE, tenant, models, requested_by))
    except asyncpg.UniqueViolationError as exc:
        raise JobActive("another rebuild of the read models is pending or running") from exc


async def get(conn: Any, job_id: str) -> Job | None:
    """The job (None when unknown, or another tenant's under row-level security)."""
    row = await conn.fetchrow(_GET, job_id)
    return None if row is None else _job(row)


async def active(conn: Any) -> Job | None:
    """The pending or running job, if any (the owner sees every tenant's)."""
    row = await conn.fetchrow(_ACTIVE_JOB, list(ACTIVE))
    return None if row is None else _job(row)


async def start(conn: Any, job_id: str, targets: dict[str, dict[str, int]], total: int) -> None:
    """Mark the job running; the bulk phase's end offsets are kept from its first run."""
    await conn.execute(
        "UPDATE replay_jobs SET status = 'running', heartbeat_at = now(),"
        " started_at = coalesce(started_at, now()), targets = coalesce(targets, $2::jsonb),"
        " events_total = coalesce(events_total, $3), error = NULL WHERE job_id = $1",
        job_id,
        json.dumps(targets),
        total,
    )


async def progress(conn: Any, job_id: str, done: int, rate: float, eta_s: float | None) -> None:
    """Record how far the job got (also its heartbeat)."""
    await conn.execute(
        "UPDATE replay_jobs SET events_done = $2, events_per_s = $3, eta_s = $4,"
        " heartbeat_at = now() WHERE job_id = $1",
        job_id,
        done,
        rate,
        eta_s,
    )


async def set_status(conn: Any, job_id: str, status: str, error: str | None = None) -> None:
    """Move the job to ``status`` (``done``/``failed`` also stamp finished_at)."""
    await conn.execute(
        "UPDATE replay_jobs SET status = $2, error = $3, heartbeat_at = now(),"
        " finished_at = CASE WHEN $2 IN ('done', 'failed') THEN now() END WHERE job_id = $1",
        job_id,
        status,
        None if error is None else error[:2000],
    )
