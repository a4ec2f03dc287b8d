"""Health that tells the truth (engine issue item 7), on real Kafka + Postgres.

A real `paywatch run executor` dead-letters a poison record: the query API's and ingest's
``/health`` and `paywatch status` say ``degraded`` with the reason and the last error, and
the executor's own /metrics count the letter. Killed with SIGKILL and started again, it is
reported as restarted after an unclean stop; stopped on request, it degrades nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from paywatch.api.ingest.app import create_app as create_ingest
from paywatch.api.query.app import create_app as create_api
from paywatch.schemas.topics import RECOVERY_COMMANDS
from paywatch.settings import Settings
from tests.kafka_helpers import eventually
from tests.procs import paywatch_process, settings_env


def _env(settings: Settings, metrics_port: int) -> dict[str, str]:
    env = settings_env(settings)
    env["PAYWATCH_EXECUTOR_METRICS_PORT"] = str(metrics_port)
    env["PAYWATCH_INSTANCE"] = "it"
    return env


@asynccontextmanager
async def _client(app: Any, base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/health")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _reason(body: dict[str, Any], *parts: str) -> str | None:
    return next((r for r in body["reasons"] if all(p in r for p in parts)), None)


async def test_dead_letter_and_unclean_restart_degrade_health_and_status(
    test_settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    kafka_bootstrap: str,
    pg_dsn: str,
) -> None:
    port = free_port()
    env = _env(test_settings, port)
    log = tmp_path / "executor.log"
    api_app = create_api(test_settings, pg_dsn)
    ingest_app = create_ingest(test_settings, kafka_bootstrap, pg_dsn)
    async with _client(api_app, "http://api") as api, _client(ingest_app, "http://in") as ingest:
        with paywatch_process(test_settings, "run", "executor", log=log, env=env) as proc:

            async def running() -> dict[str, Any] | None:
                assert proc.poll() is None, log.read_text()
                body = await _health(api)
                executor = body["processes"].get("executor", {})
                return body if executor.get("state") == "running" else None

            healthy = await eventually(running, timeout=60, what="the executor's heartbeat")
            assert healthy["status"] == "ok" and healthy["reasons"] == []
            await _poison(kafka_bootstrap, test_settings.topic(RECOVERY_COMMANDS))

            async def degraded() -> dict[str, Any] | None:
                body = await _health(api)
                return body if _reason(body, "executor: dead-lettered 1 record") else None

            body = await eventually(degraded, timeout=60, what="/health degraded")
            assert body["status"] == "degraded"
            assert "dead letter (decode)" in body["last_error"]["error"]
            assert body["processes"]["executor"]["dead_letters"] == 1
            from_ingest = await _health(ingest)
            assert from_ingest["status"] == "degraded" and from_ingest["kafka"] == "reachable"
            assert _reason(from_ingest, "executor: dead-lettered 1 record")
            status = _status(env)
            assert status["health"]["status"] == "degraded"
            assert any("executor: dead-lettered 1 record" in r for r in status["health"]["reasons"])
            assert "dead letter (decode)" in status["health"]["last_error"]["error"]
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert 'paywatch_dead_letters_total{stage="decode"} 1.0' in metrics
            assert "paywatch_consumer_lag{partition=" in metrics
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

        with paywatch_process(test_settings, "run", "executor", log=log, env=env) as proc:

            async def restarted() -> dict[str, Any] | None:
                assert proc.poll() is None, log.read_text()
                body = await _health(api)
                return (
                    body if _reason(body, "executor: restarted", "did not stop cleanly") else None
                )

            body = await eventually(restarted, timeout=60, what="the unclean restart reported")
            assert body["processes"]["executor"]["restarts"] == 1
            assert "without a clean stop" in body["last_error"]["error"]
        # Stopped on request (SIGTERM): recorded as a clean stop, not a silent process.
        row = await _row(pg_dsn, test_settings.app_id)
        assert row["stopped_at"] is not None and row["unclean_restarts"] == 1


async def _poison(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"t/in_poison", value=b"not an avro command")
    finally:
        await producer.stop()


def _status(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "paywatch", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr  # 3: no `paywatch up` supervises here
    status: dict[str, Any] = json.loads(done.stdout)
    return status


async def _row(dsn: str, app_id: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(
            "SELECT * FROM process_health WHERE app_id = $1 AND process = 'executor'", app_id
        )
    finally:
        await conn.close()
