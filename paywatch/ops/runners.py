"""`paywatch run <process>`: each process in the foreground, one at a time (ARCHITECTURE §2)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import uvicorn
from fastapi import FastAPI

from paywatch.kafka.heartbeat import Heartbeat, serve_metrics
from paywatch.ops.http_protocol import OneWriteHttpToolsProtocol
from paywatch.ops.infra import Endpoints
from paywatch.settings import Settings

if TYPE_CHECKING:
    from paywatch.executor.simulator import SimulatorConfig

log = logging.getLogger(__name__)

PROCESSES = ("ingest", "worker", "projector", "api", "executor")

GC_THRESHOLDS = (20_000, 50, 100)
"""Young-generation collections every 20,000 net allocations instead of CPython's 700."""


def tune_gc() -> None:
    """Garbage collection for a long-running process, called once its modules are loaded.

    The import-time heap (pydantic schemas, FastAPI, Faust, aiokafka: hundreds of
    thousands of objects that live as long as the process) is frozen out of collection,
    and young collections run ~30 times less often. On ingest this took 9 of 114 µs CPU
    per webhook and the answer's p99 from 43 to 15 ms (full collections walked that heap
    under load); bench/RESULTS.md, "Ingest, fourth engine session". Reference cycles are
    still collected; they are rare on these paths.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _serve(app: FastAPI, settings: Settings, port: int) -> None:
    """Serve an HTTP process with bounded connections and timeouts.

    Slow clients: an idle keep-alive connection is closed after 5 s; headers are capped at
    16 KiB (h11; httptools parses with its own limits); the body must arrive within
    PAYWATCH_BODY_READ_TIMEOUT_S (the apps answer 408). Uvicorn has no timeout for the
    request line and headers themselves: a client trickling those holds a connection until
    it stops, so put a proxy with a header timeout in front of an exposed port.
    """
    tune_gc()
    config = uvicorn.Config(
        app,
        http=OneWriteHttpToolsProtocol,  # an answer's head and body in one write
        host=settings.bind_host,
        port=port,
        log_level="info",
        access_log=False,
        lifespan="on",
        limit_concurrency=1000,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )
    uvicorn.Server(config).run()


def run_ingest(settings: Settings, ends: Endpoints) -> None:
    """Serve provider webhooks on settings.ingest_port."""
    from paywatch.api.ingest.app import create_app

    _serve(create_app(settings, ends.bootstrap, ends.dsn), settings, settings.ingest_port)


def run_api(settings: Settings, ends: Endpoints) -> None:
    """Serve the query API on settings.api_port (logged in as paywatch_api: the app derives
    its DSN from the owner's, Settings.role_dsn)."""
    from paywatch.api.query.app import create_app

    _serve(create_app(settings, ends.dsn, ends.bootstrap), settings, settings.api_port)


def run_worker(settings: Settings, ends: Endpoints) -> None:
    """Run the Faust worker (normalize agent and its tables) until SIGTERM/SIGINT."""
    from faust.worker import Worker as FaustWorker

    from paywatch.kafka.admin import ensure_topics
    from paywatch.kafka.security import kafka_security
    from paywatch.schemas.topics import topic_specs
    from paywatch.streams.app import create_worker
    from paywatch.streams.health import install as install_health
    from paywatch.streams.table_restore import prerestore

    (settings.state_path / "worker").mkdir(parents=True, exist_ok=True)  # table stores
    # Idempotent: topics and table changelogs exist before Faust's consumer joins.
    security = kafka_security(settings)
    ensure_topics(ends.bootstrap, topic_specs(settings), timeout=60.0, security=security)
    worker = create_worker(settings, ends.bootstrap, ends.dsn)
    if settings.table_prerestore:  # a cold start reads the changelogs in bulk, not via Faust
        tables = list(worker.app.tables.values())
        prerestore(tables, ends.bootstrap, settings.topic_partitions, security=security)
    install_health(worker.app, settings, ends.dsn)
    serve_metrics(settings, settings.worker_metrics_port, "worker")
    tune_gc()
    FaustWorker(worker.app, loglevel="info", redirect_stdouts=False).execute_from_commandline()


def run_projector(settings: Settings, ends: Endpoints) -> None:
    """Run the projector until SIGTERM/SIGINT."""
    asyncio.run(_projector(settings, ends))


def _stop_on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def _projector(settings: Settings, ends: Endpoints) -> None:
    from paywatch.db import create_pool
    from paywatch.kafka.codec import make_codec
    from paywatch.projections.runner import Projector

    # As paywatch_projector, heartbeat included: row-level security (migration 014) lets it
    # write every tenant's read models, and nothing of the owner's (secrets, DDL).
    dsn = settings.role_dsn("projector", ends.dsn)
    pool = await create_pool(dsn, min_size=1, max_size=3)
    projector = Projector(settings, ends.bootstrap, pool, make_codec(settings))
    tune_gc()
    _stop_on_signals(projector.stop)
    serve_metrics(settings, settings.projector_metrics_port, "projector")
    try:
        async with Heartbeat(settings, dsn, "projector"):
            await projector.run()
    finally:
        await pool.close()


def run_executor(settings: Settings, ends: Endpoints) -> None:
    """Run the sandbox executor (recovery.commands) until SIGTERM/SIGINT."""
    from paywatch.executor.simulator import SimulatorConfig

    # A bad success table is a ConfigError (exit 2) before anything connects.
    config = SimulatorConfig.parse(settings.simulator_seed, settings.simulator_success)
    asyncio.run(_executor(settings, ends, config))


async def _executor(settings: Settings, ends: Endpoints, config: SimulatorConfig) -> None:
    """The executor process: recovery commands, and what paywatch tells tenants (outbound
    events in, deliveries out), side by side on one pool, stopped by the same signals."""
    from paywatch.db import create_pool
    from paywatch.email.dispatcher import EmailDispatcher
    from paywatch.executor.runner import Executor
    from paywatch.kafka.codec import make_codec
    from paywatch.outbound.producer import OutboundProducer
    from paywatch.outbound.sender import Dispatcher
    from paywatch.outbound.slack import slack_body

    pool = await create_pool(ends.dsn, min_size=1, max_size=6)
    codec = make_codec(settings)
    slack = functools.partial(slack_body, base_url=settings.public_api_url)
    dispatcher = Dispatcher(settings, pool, renderers={"slack": slack})
    mailer = EmailDispatcher(settings, pool)  # customer email (paywatch/email)
    loops: list[_Loop] = [
        Executor(settings, ends.bootstrap, pool, codec, config, on_emails=mailer.wake),
        OutboundProducer(settings, ends.bootstrap, pool, codec, on_enqueued=dispatcher.wake),
        dispatcher,
        mailer,
    ]
    tune_gc()
    _stop_on_signals(lambda: _stop_all(loops))
    serve_metrics(settings, settings.executor_metrics_port, "executor")
    try:
        async with Heartbeat(settings, ends.dsn, "executor"):
            await _side_by_side(loops)
    finally:
        await pool.close()


class _Loop(Protocol):
    """A long-running part of a process: `run()` until `stop()`."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


def _stop_all(loops: Sequence[_Loop]) -> None:
    for loop in loops:
        loop.stop()


async def _side_by_side(loops: Sequence[_Loop]) -> None:
    """Run the loops together. When one ends or fails the others are asked to stop (each
    finishes its step: nothing half done is committed); then the first failure is raised."""

    async def one(loop: _Loop) -> None:
        try:
            await loop.run()
        finally:
            _stop_all(loops)

    results = await asyncio.gather(*(one(loop) for loop in loops), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


RUNNERS: dict[str, Callable[[Settings, Endpoints], None]] = {
    "ingest": run_ingest,
    "worker": run_worker,
    "projector": run_projector,
    "api": run_api,
    "executor": run_executor,
}
