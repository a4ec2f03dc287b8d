"""`paywatch up` as a user runs it: the printed curl posts a signed failure, the API shows it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from paywatch.ops.pids import pid_alive
from paywatch.settings import Settings
from tests.kafka_helpers import eventually
from tests.procs import settings_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def up_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    return test_settings.model_copy(
        update={
            "ingest_port": _free_port(),
            "api_port": _free_port(),
            "state_dir": tmp_path / "state",
        }
    )


def _banner_line(out: Path, prefix: str) -> str:
    match = re.search(rf"^\s*{re.escape(prefix)}\s+(\S+)\s*$", out.read_text(), re.M)
    assert match, f"no '{prefix}' line in the banner:\n{out.read_text()}"
    return match.group(1)


async def test_up_then_the_printed_curl_shows_a_failed_invoice(
    up_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "up.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch", "up"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=settings_env(up_settings),
        )
    try:

        async def ready() -> bool:
            assert proc.poll() is None, out.read_text()
            return "paywatch is running" in out.read_text() and "Stop: Ctrl-C" in out.read_text()

        await eventually(ready, timeout=180, what="the ready banner")
        text = out.read_text()
        key = _banner_line(out, "analyst API key")
        curl = next(line.strip() for line in text.splitlines() if "openssl dgst" in line)

        posted = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert posted.returncode == 0, posted.stderr
        assert '"status":"accepted"' in posted.stdout, posted.stdout

        api = f"http://127.0.0.1:{up_settings.api_port}"
        async with httpx.AsyncClient(base_url=api, timeout=5) as client:

            async def invoice() -> dict[str, object] | None:
                assert proc.poll() is None, out.read_text()
                resp = await client.get(
                    "/v1/invoices/in_demo_0001", headers={"Authorization": f"Bearer {key}"}
                )
                return resp.json() if resp.status_code == 200 else None

            async def retrying() -> dict[str, object] | None:
                inv = await invoice()
                return inv if inv and inv["status"] == "retrying" else None

            # The status is the saga's state: Stripe retries its own failures by default,
            # so the saga opened (failed) and moved on to retrying.
            inv = await eventually(retrying, timeout=120, what="invoice in_demo_0001 retrying")
            assert (inv["amount_minor"], inv["currency"], inv["provider"]) == (
                4900,
                "USD",
                "stripe",
            )
            listed = await client.get("/v1/invoices", headers={"Authorization": f"Bearer {key}"})
            assert any(i["invoice_ref"] == "in_demo_0001" for i in listed.json()["data"])
            assert (await client.get("/v1/invoices")).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops everything
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(
                "paywatch up did not stop on Ctrl-C:\n" + out.read_text()
            ) from None
    assert code == 0, out.read_text()
    logs = up_settings.state_path / "logs"
    for name in ("ingest", "worker", "projector", "api", "executor"):
        assert (logs / f"{name}.log").exists()
    assert "executor consuming" in (logs / "executor.log").read_text()  # a real process now
    # every child was stopped with the supervisor
    assert not (up_settings.state_path / "supervisor.pid").exists()
    children = json.loads((up_settings.state_path / "processes.json").read_text())
    assert set(children) == {"ingest", "worker", "projector", "api", "executor"}
    assert not [name for name, pid in children.items() if pid_alive(pid)]
