"""`paywatch up -d` / `status` / `down` on the embedded Kafka and Postgres, as `make run` does."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from paywatch.ops.pids import pid_alive

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(
        {
            "PAYWATCH_STATE_DIR": str(state),
            "PAYWATCH_INGEST_PORT": str(_free_port()),
            "PAYWATCH_API_PORT": str(_free_port()),
            "PAYWATCH_EMBEDDED_KAFKA_PORT": str(_free_port()),
            "PAYWATCH_EMBEDDED_KAFKA_CONTROLLER_PORT": str(_free_port()),
            "PAYWATCH_EMBEDDED_PG_PORT": str(_free_port()),
            "PAYWATCH_TOPIC_PARTITIONS": "3",
            "PAYWATCH_TABLE_STANDBY_REPLICAS": "0",
        }
    )
    return env


def _paywatch(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paywatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def _seed_jars(state: Path) -> None:
    """Reuse jars already fetched in this checkout (Maven would fetch them otherwise)."""
    for src in (REPO / ".paywatch" / "kafka" / "libs", REPO / ".paywatch" / "test-infra" / "jars"):
        if (src / ".paywatch-complete").exists():
            shutil.copytree(src, state / "kafka" / "libs", copy_function=os.link)
            return


def test_detached_up_status_down_keeps_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _seed_jars(state)
    env = _env(state)
    try:
        up = _paywatch(env, "up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "paywatch is running" in up.stdout and "Stop: `paywatch down`" in up.stdout
        status = _paywatch(env, "status")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["infra"]["kafka"]["source"] == "embedded" and info["infra"]["kafka"]["running"]
        assert info["infra"]["postgres"]["running"] and info["ingest_health"] and info["api_health"]
        pids = [p["pid"] for p in info["processes"].values()]
        pids += [info["infra"]["kafka"]["pid"], info["infra"]["postgres"]["pid"]]
        assert _paywatch(env, "up", "-d").returncode == 1  # already running: says so

        made = _paywatch(env, "apikey", "create", "demo", "--role", "operator")
        key = made.stdout.strip().splitlines()[-1]
        api = f"http://127.0.0.1:{env['PAYWATCH_API_PORT']}"
        assert (
            httpx.get(f"{api}/v1/invoices", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )

        down = _paywatch(env, "down")
        assert down.returncode == 0 and "paywatch stopped" in down.stdout
        assert not [pid for pid in pids if pid_alive(pid)]  # infra and every process stopped
        assert _paywatch(env, "status").returncode == 3

        # restart: Postgres data (the key created above) survived
        again = _paywatch(env, "up", "-d")
        assert again.returncode == 0, again.stdout + again.stderr
        resp = httpx.get(f"{api}/v1/invoices", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200
    finally:
        _paywatch(env, "down", timeout=120)
