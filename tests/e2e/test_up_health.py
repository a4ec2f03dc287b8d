"""`paywatch up -d` revives its embedded Postgres after a SIGKILL and says so in `status`.

The stack's Kafka is the test run's broker (its own topic prefix and app id); Postgres is the
stack's own embedded server, so it can be killed. Every process reports a heartbeat and the
worker, projector and executor serve Prometheus metrics on their ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from paywatch.ops.pids import pid_alive
from paywatch.settings import Settings
from tests.kafka_helpers import eventually
from tests.procs import settings_env

REPO = Path(__file__).resolve().parents[2]
METRICS = ("WORKER", "PROJECTOR", "EXECUTOR")


def _env(settings: Settings, state: Path, port: Callable[[], int]) -> dict[str, str]:
    env = settings_env(settings)
    env.pop("PAYWATCH_DATABASE_URL")  # the stack starts its own embedded Postgres
    env.update(
        {
            "PAYWATCH_STATE_DIR": str(state),
            "PAYWATCH_INGEST_PORT": str(port()),
            "PAYWATCH_API_PORT": str(port()),
            "PAYWATCH_EMBEDDED_PG_PORT": str(port()),
            **{f"PAYWATCH_{name}_METRICS_PORT": str(port()) for name in METRICS},
        }
    )
    return env


def _paywatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paywatch", *args],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=REPO,
        check=False,
    )


def _status(env: dict[str, str]) -> dict[str, Any]:
    done = _paywatch(env, "status")
    assert done.returncode == 0, done.stdout + done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


async def test_up_restarts_a_killed_postgres_and_reports_health(
    test_settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    env = _env(test_settings, tmp_path / "state", free_port)
    try:
        up = _paywatch(env, "up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr

        async def all_running() -> dict[str, Any] | None:
            status = _status(env)
            procs = status["health"].get("processes", {})
            wanted = all(
                procs.get(p, {}).get("state") == "running"
                for p in ("worker", "projector", "executor")
            )
            return status if wanted else None

        status = await eventually(all_running, timeout=120, every=1, what="three heartbeats")
        curl = next(line.strip() for line in up.stdout.splitlines() if "openssl dgst" in line)
        posted = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert '"status":"accepted"' in posted.stdout, posted.stdout + posted.stderr

        async def counted() -> dict[str, Any] | None:
            status = _status(env)
            procs = status["health"]["processes"]
            done = procs["worker"]["records_total"] and procs["projector"]["records_total"]
            return status if done else None

        status = await eventually(counted, timeout=90, every=1, what="records counted")
        assert status["health"]["status"] == "ok", status["health"]
        # The worker's stages report their batches (normalize, then the saga's decision).
        assert "normalize" in status["health"]["processes"]["worker"]["batches"], status
        assert status["supervisor"]["infra"] == {
            "postgres": {"restarts": 0, "last_restart_at": None, "last_failure": None}
        }
        for name in METRICS:
            port = env[f"PAYWATCH_{name}_METRICS_PORT"]
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "paywatch_consumer_lag" in text or "paywatch_records_total" in text, name

        killed = status["infra"]["postgres"]["pid"]
        os.kill(killed, signal.SIGKILL)

        async def revived() -> dict[str, Any] | None:
            status = _status(env)
            pg = status["infra"]["postgres"]
            again = pg["running"] and pg["pid"] != killed
            return (
                status if again and status["supervisor"]["infra"]["postgres"]["restarts"] else None
            )

        try:
            status = await eventually(revived, timeout=120, every=1, what="postgres restarted")
        except AssertionError as exc:  # say why: what the supervisor and Postgres logged
            logs = Path(env["PAYWATCH_STATE_DIR"])
            tails = {
                str(f.relative_to(logs)): f.read_text(errors="replace")[-3000:]
                for f in sorted(logs.rglob("*.log"))
                if "supervisor" in f.name or "postgres" in f.name or f.parent.name == "pg"
            }
            raise AssertionError(f"{exc}\nstatus: {_status(env)}\nlogs: {tails}") from exc
        assert status["supervisor"]["infra"]["postgres"]["restarts"] == 1
        assert status["health"]["status"] == "degraded"
        assert any(
            r.startswith("postgres: restarted by paywatch up") for r in status["health"]["reasons"]
        )

        async def api_healthy() -> bool:
            return bool(_status(env)["api_health"])

        await eventually(api_healthy, timeout=60, every=1, what="the api reconnected")
    finally:
        down = _paywatch(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not pid_alive(killed)
