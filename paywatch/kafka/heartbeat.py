"""The heartbeat of a worker, projector or executor: its tracker's figures into Postgres.

``async with Heartbeat(settings, dsn, "projector"): await projector.run()`` records the
start (a restart when the row exists; an *unclean* one when the previous run never
recorded its stop), writes a beat every :data:`HEARTBEAT_S` seconds (records, records/s,
batch sizes, dead letters, lag per partition, last error) and, on exit, the stop: clean
when the body returned, with the error when it raised. A ``kill -9`` writes nothing, which
is how the next start (and a stale heartbeat meanwhile) tells. Postgres being away never
stops the process: the beat is skipped and tried again.

:func:`serve_metrics` exposes this process's Prometheus registry on its metrics port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime
from types import TracebackType

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from paywatch.db import create_pool
from paywatch.db import heartbeats as store
from paywatch.kafka.health import LAG, RESTARTS, LastErrorHandler, Tracker, tracker
from paywatch.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
"""Seconds between beats (health.Thresholds.stale_s is 6 of them)."""
DB_TIMEOUT_S = 5.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def instance_name(settings: Settings) -> str:
    """This process instance's name in health reports: PAYWATCH_INSTANCE, else the host."""
    return settings.instance or socket.gethostname()


class Heartbeat:
    """Writes one process's heartbeat row while the `async with` body runs."""

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        process: str,
        source: Tracker = tracker,
        *,
        interval: float = HEARTBEAT_S,
    ) -> None:
        self._dsn, self._tracker, self._interval = dsn, source, interval
        self._key = store.Key(settings.app_id, process, instance_name(settings))
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self._handler = LastErrorHandler(source)
        self._started = False
        self._last = (time.monotonic(), 0)

    async def __aenter__(self) -> Heartbeat:
        logging.getLogger().addHandler(self._handler)
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self._key.process}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(None if exc is None or _requested(exc) else exc)

    async def close(self, error: BaseException | None = None) -> None:
        """Stop beating; record a clean stop (`error` None) or the error that ended the run."""
        logging.getLogger().removeHandler(self._handler)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._started:
            text = None if error is None else f"stopped by {type(error).__name__}: {error}"
            await self._write(lambda c: store.stopped(c, self._key, _now(), text))
        if self._pool is not None:
            await self._pool.close()

    async def _loop(self) -> None:
        while True:
            if not self._started:
                self._started = await self._start()
            if self._started:
                await self._beat()
            await asyncio.sleep(self._interval)  # the beat period

    async def _start(self) -> bool:
        if self._pool is None:
            try:
                self._pool = await create_pool(self._dsn, min_size=0, max_size=1)
            except _DB_ERRORS as exc:
                log.warning("heartbeat: cannot reach Postgres: %s", type(exc).__name__)
                return False
        starts = await self._write(lambda c: store.started(c, self._key, os.getpid(), _now()))
        if starts is None:
            return False
        RESTARTS.labels("all").set(starts - 1)
        return True

    async def _beat(self) -> None:
        t = self._tracker
        lag = await self._lag()
        _set_lag_gauges(lag)
        now_m, total = time.monotonic(), t.records_total
        rate = (total - self._last[1]) / max(now_m - self._last[0], 1e-3)
        self._last = (now_m, total)
        beat = store.Beat(
            records_total=total,
            records_per_s=rate,
            dead_letters=t.dead_letters,
            last_dead_letter_at=t.last_dead_letter_at,
            last_error=t.last_error,
            last_error_at=t.last_error_at,
            lag=lag,
            batches=t.batch_stats(),
        )
        await self._write(lambda c: store.beat(c, self._key, _now(), beat))

    async def _lag(self) -> dict[str, int]:
        if self._tracker.lag_source is None:
            return {}
        try:
            return await self._tracker.lag_source()
        except (TimeoutError, RuntimeError, KafkaError) as exc:  # e.g. in a rebalance
            log.info("heartbeat: lag not measured this time: %r", exc)
            return {}

    async def _write(self, op: store.Op) -> int | None:
        """Run one store call; None (logged) when Postgres is away."""
        if self._pool is None:
            return None
        try:
            async with self._pool.acquire(timeout=DB_TIMEOUT_S) as conn:
                result = await asyncio.wait_for(op(conn), DB_TIMEOUT_S)
        except _DB_ERRORS as exc:
            log.warning("heartbeat not written (Postgres: %s)", type(exc).__name__)
            return None
        return result if isinstance(result, int) else 0


def _requested(exc: BaseException) -> bool:
    """A stop asked for (Ctrl-C, cancellation), not a failure of the process."""
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit)


def _set_lag_gauges(lag: dict[str, int]) -> None:
    LAG.clear()  # partitions revoked since the last beat disappear
    for name, behind in lag.items():
        topic, _, rest = name.rpartition("[")
        LAG.labels(topic, rest.rstrip("]")).set(behind)


def _now() -> datetime:
    return datetime.now(UTC)


def serve_metrics(settings: Settings, port: int, process: str) -> bool:
    """Serve this process's Prometheus metrics on `port` (0: off); False when not serving.

    A port already taken (another stack on this machine) is logged, not fatal: metrics are
    not worth stopping a process for.
    """
    if port == 0:
        return False
    try:
        start_http_server(port, addr=settings.bind_host)
    except OSError as exc:
        log.warning("%s metrics not served: port %d: %s", process, port, exc.strerror or exc)
        return False
    log.info("%s metrics on http://%s:%d/metrics", process, settings.bind_host, port)
    return True
