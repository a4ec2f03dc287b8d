"""Running paywatch processes as a user does (`python -m paywatch ...`), stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from paywatch.settings import Settings

_FIELDS = (
    "env",
    "ingest_port",
    "api_port",
    "topic_prefix",
    "topic_partitions",
    "app_id",
    "table_store",
    "table_standby_replicas",
    "table_prerestore",
    "time_scale",
    "time_anchor",
    "xero_token_url",
    "quickbooks_token_url",
    "fetch_deadline_s",
    "simulator_seed",
    "simulator_success",
    "public_api_url",
    "api_rate",
    "api_burst",
)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces `settings` in a child process."""
    env = dict(os.environ)
    for name in _FIELDS:
        value = getattr(settings, name)
        if value is not None:
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            env[f"PAYWATCH_{name.upper()}"] = text
    env["PAYWATCH_STATE_DIR"] = str(settings.state_path)
    if settings.kafka_bootstrap:
        env["PAYWATCH_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    if settings.database_url:
        env["PAYWATCH_DATABASE_URL"] = settings.database_url.get_secret_value()
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def paywatch_process(
    settings: Settings, *args: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m paywatch <args>`; SIGTERM (then SIGKILL) it by pid on exit.

    `env`: the whole environment when given (else the settings' own)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else settings_env(settings),
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def log_tail(log: Path, lines: int = 40) -> str:
    """Last lines of a process log, for assertion messages."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
