"""Kafka + Postgres for a paywatch stack: embedded ones, or the ones the environment names.

``PAYWATCH_KAFKA_BOOTSTRAP`` / ``PAYWATCH_DATABASE_URL`` win: for those we
start nothing. Otherwise the embedded servers of ``PAYWATCH_STATE_DIR`` are
started and ``<state>/stack.json`` records where they listen, so every later
command in the same folder finds them (``resolve_endpoints``). stack.json
never holds a secret: an external database URL is not written at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from paywatch.db import migrate_dsn
from paywatch.errors import ConfigError, InfraError, StackNotRunning
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.ops.pids import tcp_open
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.settings import Settings

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class Endpoints:
    """Where the stack's Kafka and Postgres answer."""

    bootstrap: str
    dsn: str


def stack_file(settings: Settings) -> Path:
    """Path of the stack.json of this state directory."""
    return settings.state_path / STACK_FILE


def start_infra(settings: Settings) -> Endpoints:
    """Start what the environment does not provide, migrate, write stack.json."""
    kafka, pg = _embedded(settings)
    started = _start_parallel(
        [(server.start, server.stop, server.is_running) for server in (kafka, pg) if server]
    )
    ends = Endpoints(
        bootstrap=kafka.bootstrap if kafka else str(settings.kafka_bootstrap),
        dsn=pg.dsn if pg else _env_dsn(settings),
    )
    try:
        _run_coroutine(lambda: migrate_dsn(ends.dsn))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _stop_all(started)
        raise InfraError(f"could not migrate the database: {exc}") from exc
    except BaseException:
        _stop_all(started)
        raise
    _write_stack(settings, ends, kafka, pg)
    return ends


def stop_infra(settings: Settings) -> list[str]:
    """Stop the embedded servers of this state dir (never external ones); remove stack.json."""
    kafka, pg = _embedded(settings)
    servers = {name: s for name, s in (("kafka", kafka), ("postgres", pg)) if s is not None}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(s.stop) for name, s in servers.items()}
    stopped = [name for name, fut in futures.items() if fut.result()]  # raises if one failed
    stack_file(settings).unlink(missing_ok=True)
    return stopped


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Endpoints of the running stack: environment first, else this state dir's stack.json."""
    if settings.kafka_bootstrap and settings.database_url:
        return Endpoints(settings.kafka_bootstrap, _env_dsn(settings))
    stack = read_stack(settings)
    if stack is None:
        raise StackNotRunning(_not_running(settings))
    return Endpoints(_resolve_kafka(settings, stack), _resolve_dsn(settings, stack))


def infra_status(settings: Settings) -> dict[str, Any]:
    """What runs where, for `paywatch status` (JSON-serialisable, no secrets)."""
    kafka, pg = _embedded(settings)
    stack = read_stack(settings) or {}
    if kafka is not None:
        kafka_status = _embedded_status(kafka.pid(), kafka.bootstrap)
    else:
        kafka_status = _external_status(str(settings.kafka_bootstrap).split(",")[0])
    if pg is not None:
        pg_status = _embedded_status(pg.pid(), f"127.0.0.1:{pg.port}")
    else:
        pg_status = _external_status(_host_port(_env_dsn(settings)))
    return {
        "state_dir": str(settings.state_path),
        "started_at": stack.get("started_at"),
        "kafka": kafka_status,
        "postgres": pg_status,
    }


class InfraWatch:
    """Restarts this state dir's embedded Kafka/Postgres when they die (`paywatch up`).

    External servers (from the environment) are never touched. A failed start is tried
    again after RETRY_S; each restart is counted and stack.json rewritten (new pids).
    """

    RETRY_S = 2.0

    def __init__(self, settings: Settings, ends: Endpoints) -> None:
        self.settings, self.ends = settings, ends
        self.kafka, self.pg = _embedded(settings)
        self.servers: dict[str, EmbeddedKafka | EmbeddedPostgres] = {
            name: s for name, s in (("kafka", self.kafka), ("postgres", self.pg)) if s
        }
        self.restarts = dict.fromkeys(self.servers, 0)
        self.last_restart_at: dict[str, str] = {}
        self.last_failure: dict[str, str] = {}
        self._next_try: dict[str, float] = {}

    def revive(self) -> list[str]:
        """Start every embedded server found dead; the names restarted."""
        revived = []
        for name, server in self.servers.items():
            now = time.monotonic()
            if server.is_running() or now < self._next_try.get(name, 0.0):
                continue
            log.warning("embedded %s is not running: restarting it", name)
            if isinstance(server, EmbeddedKafka):
                _reap(server.pid_file)
            try:
                server.start()
            except (InfraError, ConfigError, OSError) as exc:
                log.error("restarting embedded %s failed (retry in %.0f s): %s", name,
                          self.RETRY_S, exc)  # fmt: skip
                self.last_failure[name] = str(exc).splitlines()[0][:300]
                self._next_try[name] = now + self.RETRY_S
                continue
            self.restarts[name] += 1
            self.last_restart_at[name] = datetime.now(UTC).isoformat(timespec="seconds")
            revived.append(name)
        if revived:
            _write_stack(self.settings, self.ends, self.kafka, self.pg)
        return revived

    def report(self) -> dict[str, Any]:
        """Restarts per server, for supervision.json."""
        return {
            name: {
                "restarts": self.restarts[name],
                "last_restart_at": self.last_restart_at.get(name),
                "last_failure": self.last_failure.get(name),
            }
            for name in self.servers
        }


def _reap(pid_file: Path) -> None:
    """Collect a dead broker we launched (else it stays a zombie of this process)."""
    with contextlib.suppress(OSError, ValueError):
        os.waitpid(int(pid_file.read_text().strip()), os.WNOHANG)


def read_stack(settings: Settings) -> dict[str, Any] | None:
    """The parsed stack.json, or None when missing or unreadable."""
    try:
        data = json.loads(stack_file(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# -- helpers ------------------------------------------------------------------


def _embedded(settings: Settings) -> tuple[EmbeddedKafka | None, EmbeddedPostgres | None]:
    """The embedded servers this settings object asks for (None where env provides one)."""
    kafka = None if settings.kafka_bootstrap else EmbeddedKafka(settings)
    pg = None if settings.database_url else EmbeddedPostgres(settings)
    return kafka, pg


Starter = tuple[Callable[[], None], Callable[[], bool], Callable[[], bool]]


def _start_parallel(servers: list[Starter]) -> list[Callable[[], bool]]:
    """Start servers in threads; if one fails, stop those this call started, then raise."""
    was_running = [is_running() for _, _, is_running in servers]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures: list[Future[None]] = [pool.submit(start) for start, _, _ in servers]
    started = [stop for (_, stop, _), ran in zip(servers, was_running, strict=True) if not ran]
    for fut in futures:
        error = fut.exception()
        if error is not None:
            _stop_all(started)
            raise error
    return started


def _stop_all(stops: list[Callable[[], bool]]) -> None:
    for stop in stops:
        stop()


def _run_coroutine(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion in a fresh thread (works even inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _env_dsn(settings: Settings) -> str:
    if settings.database_url is None:
        raise InfraError("PAYWATCH_DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def _write_stack(
    settings: Settings, ends: Endpoints, kafka: EmbeddedKafka | None, pg: EmbeddedPostgres | None
) -> None:
    data = {
        "state_dir": str(settings.state_path),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kafka": {
            "embedded": kafka is not None,
            "bootstrap": ends.bootstrap,
            "pid": kafka.pid() if kafka else None,
            "from_env": kafka is None,
        },
        # An external URL may carry a password: record only that it came from the environment.
        "postgres": {
            "embedded": pg is not None,
            "dsn": pg.dsn if pg else None,
            "pid": pg.pid() if pg else None,
            "from_env": pg is None,
        },
    }
    path = stack_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written file


def _not_running(settings: Settings, extra: str = "") -> str:
    return (
        f"paywatch is not running here (state dir {settings.state_path}): start it with "
        "`make run` or `paywatch up -d`, or set PAYWATCH_KAFKA_BOOTSTRAP and "
        f"PAYWATCH_DATABASE_URL{extra}"
    )


def _resolve_kafka(settings: Settings, stack: dict[str, Any]) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    entry = stack.get("kafka") or {}
    if entry.get("embedded") and not EmbeddedKafka(settings).is_running():
        raise StackNotRunning(_not_running(settings, " (the embedded Kafka is not running)"))
    return str(entry["bootstrap"])


def _resolve_dsn(settings: Settings, stack: dict[str, Any]) -> str:
    if settings.database_url:
        return _env_dsn(settings)
    entry = stack.get("postgres") or {}
    if not entry.get("embedded"):
        raise StackNotRunning(
            _not_running(
                settings, " (this stack uses PAYWATCH_DATABASE_URL: set it in this shell too)"
            )
        )
    if not EmbeddedPostgres(settings).is_running():
        raise StackNotRunning(_not_running(settings, " (the embedded Postgres is not running)"))
    return str(entry["dsn"])


def _embedded_status(pid: int | None, address: str) -> dict[str, Any]:
    return {"source": "embedded", "running": pid is not None, "pid": pid, "address": address}


def _external_status(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    reachable = port.isdigit() and tcp_open(host, int(port), timeout=1.0)
    return {"source": "env", "running": reachable, "pid": None, "address": address}


def _host_port(dsn: str) -> str:
    """host:port of a database URL, without user or password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
