"""The tenant/secret/apikey CLI (ARCHITECTURE §5) against the real Postgres."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from paywatch.settings import Settings
from tests.procs import settings_env


def paywatch(
    settings: Settings,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``input`` is its stdin (none: an empty one, never the test's terminal,
    where `paywatch tenant secret` would prompt)."""
    return subprocess.run(
        [sys.executable, "-m", "paywatch", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        env=env or settings_env(settings),
    )


async def test_tenant_secret_and_key_lifecycle(
    test_settings: Settings, pg_dsn: str, unique: str
) -> None:
    created = paywatch(test_settings, "tenant", "create", unique)
    assert created.returncode == 0, created.stderr
    assert (
        paywatch(test_settings, "tenant", "create", unique)
        .stdout.strip()
        .endswith("already exists")
    )

    secret = "whsec_cli_" + unique
    stored = paywatch(
        test_settings, "tenant", "secret", unique, "stripe", "-", input=f"signing_secret={secret}\n"
    )
    assert stored.returncode == 0, stored.stderr
    assert secret not in stored.stdout + stored.stderr  # never echoed

    made = paywatch(test_settings, "apikey", "create", unique, "--role", "analyst")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # the key alone on the last line
    assert key.startswith("pw_analyst_") and " " not in key

    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT tenant, role FROM api_keys WHERE key_hash = $1",
            hashlib.sha256(key.encode()).digest(),
        )
        assert dict(row) == {"tenant": unique, "role": "analyst"}
        enc = await conn.fetchval("SELECT value_enc FROM tenant_secrets WHERE tenant = $1", unique)
        assert secret.encode() not in enc  # encrypted at rest
        assert not await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE key_hash = $1 OR prefix = $2", key.encode(), key
        )  # the key itself is nowhere
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (("tenant", "secret", "{t}", "square", "-"), "x=y\n", 1, "unknown provider 'square'"),
        (
            ("tenant", "secret", "{t}", "stripe"),
            "webhook_key=x\n",
            2,
            "unknown secret 'webhook_key'",
        ),
        (("tenant", "secret", "{t}", "stripe", "-"), "novalue\n", 2, "line 1: expected NAME=VALUE"),
        (("tenant", "secret", "{t}", "stripe", "-"), "", 2, "no secrets given"),
        (("tenant", "secret", "{t}", "stripe", "--file", "/nonexistent"), "", 2, "cannot read"),
        (
            ("tenant", "secret", "nobody-{t}", "stripe", "-"),
            "signing_secret=x",
            1,
            "unknown tenant",
        ),
        (("apikey", "create", "nobody-{t}", "--role", "analyst"), None, 1, "unknown tenant"),
        (("tenant", "create", "Bad Name"), None, 2, "invalid tenant name"),
    ],
)
def test_bad_input_gets_a_precise_error(
    test_settings: Settings,
    unique: str,
    args: tuple[str, ...],
    stdin: str | None,
    code: int,
    message: str,
) -> None:
    paywatch(test_settings, "tenant", "create", unique)
    result = paywatch(test_settings, *(a.format(t=unique) for a in args), input=stdin)
    assert (result.returncode, message in result.stderr) == (code, True), result.stderr
    assert "Traceback" not in result.stderr


def test_commands_without_a_stack_say_how_to_start_one(
    tmp_path: Path, test_settings: Settings
) -> None:
    env = settings_env(test_settings)
    env.pop("PAYWATCH_KAFKA_BOOTSTRAP")
    env.pop("PAYWATCH_DATABASE_URL")
    env["PAYWATCH_STATE_DIR"] = str(tmp_path / "empty")
    result = paywatch(test_settings, "tenant", "create", "acme", env=env)
    assert result.returncode == 1
    assert "paywatch is not running here" in result.stderr and "paywatch up -d" in result.stderr


def test_prod_refuses_the_dev_secret_key(test_settings: Settings) -> None:
    env = settings_env(test_settings)
    env["PAYWATCH_ENV"] = "prod"
    env.pop("PAYWATCH_SECRET_KEY", None)
    result = paywatch(test_settings, "status", env=env)
    assert result.returncode == 2
    assert "PAYWATCH_SECRET_KEY must be set" in result.stderr
