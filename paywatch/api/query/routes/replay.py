"""/v1/ops/replay: rebuild read models from the log, as `paywatch replay` does (operator).

POST records a pending job (:mod:`paywatch.db.replay_jobs`) under the caller's tenant, with
its ``replay.start`` record on ``ops.audit`` (both or neither), and starts ``python -m
paywatch replay --job <id>`` beside this process: the very command an operator runs, as the
database owner (the API's own role may not create schemas or move tables), in a process of
its own so a rebuild's decoding never slows the API's answers. Its output goes to
``<state dir>/logs/replay-<id>.log``; its progress to the job row, which GET shows. While it
runs the API keeps answering from the old tables; the swap is atomic.

One rebuild at a time (409 while another is pending or running, whoever started it). A
job whose process was killed shows ``running`` with an old ``heartbeat_at``;
``interrupted`` then says so, and ``paywatch replay --job <id>`` resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import field_validator

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.routes.ops_audit import audit
from paywatch.api.query.schemas import ErrorBody, Public
from paywatch.db import replay_jobs
from paywatch.db.replay_jobs import JOB_ID_PATTERN, STALE_AFTER_S, Job, JobActive
from paywatch.schemas.read_models import ALL, NAMES
from paywatch.settings import Settings
from paywatch.tenants.ops_audit import OpsEntry

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/ops/replay", tags=["ops"], responses=FORBIDDEN)
_EXAMPLE_ID = "rb_2m7qk4zd3xab5c"
JobId = Annotated[
    str,
    Path(pattern=JOB_ID_PATTERN, description="As POST answered: rb_ + 14 base32 characters.",
         examples=[_EXAMPLE_ID]),
]  # fmt: skip
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}}
Launcher = Callable[[Settings, str], Awaitable[None]]


class ReplayRequest(Public):
    """What to rebuild."""

    projection: str
    """A read model's name, or ``all``; the models it reads are rebuilt with it."""

    @field_validator("projection")
    @classmethod
    def _known(cls, value: str) -> str:
        if value != ALL and value not in NAMES:
            raise ValueError(f"must be {ALL} or one of {', '.join(sorted(NAMES))}")
        return value


class ReplayJob(Public):
    """A rebuild and how far it got."""

    job_id: str
    status: Literal["pending", "running", "swapping", "done", "failed"]
    interrupted: bool
    """Running, but its process has not reported for a while: resume it with
    ``paywatch replay --job <job_id>``."""
    models: list[str]
    requested_by: str
    events_done: int
    events_total: int | None
    events_per_s: float | None
    eta_s: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


def _item(job: Job) -> ReplayJob:
    beat = job.heartbeat_at or job.created_at
    stale = (datetime.now(UTC) - beat).total_seconds() > STALE_AFTER_S
    fields = {name: getattr(job, name) for name in ReplayJob.model_fields if name != "interrupted"}
    fields["models"] = list(job.models)
    return ReplayJob(**fields, interrupted=job.status in replay_jobs.ACTIVE and stale)


async def spawn(settings: Settings, job_id: str) -> None:
    """Start `paywatch replay --job` in a child process (reaped when it ends)."""
    logs = settings.state_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"replay-{job_id}.log").open("ab") as out:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paywatch", "replay", "--job", job_id,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    _CHILDREN.add(task := asyncio.create_task(_reap(child, job_id)))
    task.add_done_callback(_CHILDREN.discard)


_CHILDREN: set[asyncio.Task[None]] = set()


async def _reap(child: asyncio.subprocess.Process, job_id: str) -> None:
    code = await child.wait()
    log.info("replay job %s: its process ended with exit code %s", job_id, code)


@router.post(
    "",
    status_code=202,
    responses={**_ERRORS, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Rebuild read models from the log (operator)",
)
async def start_replay(
    request: Request, pool: Pool, caller: Caller, body: ReplayRequest
) -> ReplayJob:
    """A pending job, started in a process of its own; 409 while another one is unfinished."""
    by = f"api:{getattr(request.state, 'api_key_id', None) or caller.role}"
    async with pool.acquire() as conn:
        try:
            job = await replay_jobs.create(conn, caller.tenant, [body.projection], by)
        except JobActive as exc:
            raise ApiError(409, "replay_running", str(exc)) from exc
        details = {"projection": body.projection}
        await audit(request, OpsEntry(caller.tenant, "replay.start", job.job_id, details))
    launch: Launcher = getattr(request.app.state, "replay_launcher", spawn)
    try:
        await launch(request.app.state.settings, job.job_id)
    except OSError as exc:
        raise ApiError(
            503,
            "replay_not_started",
            f"replay job {job.job_id} is recorded but its process did not start ({exc}):"
            f" run `paywatch replay --job {job.job_id}`",
        ) from exc
    return _item(job)


@router.get(
    "/{job_id}",
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="A rebuild's progress (operator)",
)
async def get_replay(pool: Pool, caller: Caller, job_id: JobId) -> ReplayJob:
    """The job as it stands: status, events done of the total, rate, ETA, error."""
    async with pool.acquire() as conn:
        job = await replay_jobs.get(conn, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no replay job {job_id!r}")
    return _item(job)
