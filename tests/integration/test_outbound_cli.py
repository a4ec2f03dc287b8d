"""`paywatch endpoint add|list|disable|rotate-secret` as a user runs them, on the real Postgres."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
import pytest

from paywatch.outbound import endpoints
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from tests.integration.test_cli import paywatch
from tests.procs import settings_env

pytestmark = pytest.mark.integration

SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXsecretXXXX"


@pytest.fixture
def settings(kafka_bootstrap: str, pg_dsn: str, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_dsn, state_dir=tmp_path)


@pytest.fixture
def tenant(settings: Settings, unique: str) -> str:
    made = paywatch(settings, "tenant", "create", unique)
    assert made.returncode == 0, made.stderr
    return unique


def _ok(settings: Settings, *args: str, stdin: str | None = None) -> list[str]:
    done = paywatch(settings, *args, input=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


async def _row(pg_dsn: str, endpoint_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM endpoints WHERE endpoint_id = $1", endpoint_id)
    finally:
        await conn.close()
    assert row is not None
    return row


def _opened(settings: Settings, row: asyncpg.Record, column: str, previous: bool = False) -> str:
    box = SecretBox.from_settings(settings)
    return endpoints.open_secret(
        box, row["tenant"], row["endpoint_id"], row[column], previous=previous
    )


async def test_add_list_rotate_disable_a_webhook_endpoint(
    settings: Settings, tenant: str, pg_dsn: str
) -> None:
    url = "http://127.0.0.1:9/hooks/paywatch"
    added = _ok(
        settings, "endpoint", "add", tenant, url, "--events", "invoice.recovered,alert.opened"
    )
    secret = added[-1]  # the secret alone on the last line
    assert secret.startswith("whsec_") and " " not in secret
    endpoint_id = added[0].split()[2]
    assert re.fullmatch(endpoints.ENDPOINT_ID_PATTERN, endpoint_id), added

    listed = "\n".join(_ok(settings, "endpoint", "list", tenant))
    assert endpoint_id in listed and url in listed and "whsec_" not in listed
    [item] = [json.loads(line) for line in _ok(settings, "endpoint", "list", tenant, "--json")]
    assert item["events"] == ["invoice.recovered", "alert.opened"]
    assert (item["kind"], item["status"], item["url"]) == ("webhook", "active", url)
    assert item["created_by"].startswith("cli")

    row = await _row(pg_dsn, endpoint_id)
    assert secret.encode() not in row["secret_enc"]  # sealed at rest
    assert _opened(settings, row, "secret_enc") == secret

    rotated = _ok(settings, "endpoint", "rotate-secret", tenant, endpoint_id)
    new = rotated[-1]
    assert new.startswith("whsec_") and new != secret
    assert "also signs until" in rotated[0]
    row = await _row(pg_dsn, endpoint_id)
    assert _opened(settings, row, "secret_enc") == new
    assert _opened(settings, row, "previous_secret_enc", previous=True) == secret

    assert _ok(settings, "endpoint", "disable", tenant, endpoint_id)[-1].startswith("disabled")
    assert "already disabled" in _ok(settings, "endpoint", "disable", tenant, endpoint_id)[-1]
    refused = paywatch(settings, "endpoint", "rotate-secret", tenant, endpoint_id)
    assert refused.returncode == 1 and "is disabled" in refused.stderr


async def test_a_slack_url_comes_from_stdin_and_is_never_shown(
    settings: Settings, tenant: str, pg_dsn: str
) -> None:
    args = ("endpoint", "add", tenant, "--events", "recovery.escalated", "--kind", "slack")
    on_argv = paywatch(settings, *args[:3], SLACK_URL, *args[3:])
    assert on_argv.returncode == 2 and "never read from the command line" in on_argv.stderr
    assert "XXXXsecret" not in on_argv.stdout + on_argv.stderr  # not repeated

    added = paywatch(settings, *args[:3], "-", *args[3:], input=SLACK_URL + "\n")
    assert added.returncode == 0, added.stderr
    assert "XXXXsecret" not in added.stdout + added.stderr and "whsec_" not in added.stdout
    endpoint_id = added.stdout.split()[2]
    listed = "\n".join(_ok(settings, "endpoint", "list", tenant))
    assert "https://hooks.slack.com/…" in listed and "XXXXsecret" not in listed

    row = await _row(pg_dsn, endpoint_id)
    assert row["kind"] == "slack" and SLACK_URL.encode() not in row["secret_enc"]
    assert _opened(settings, row, "secret_enc") == SLACK_URL
    refused = paywatch(settings, "endpoint", "rotate-secret", tenant, endpoint_id)
    assert refused.returncode == 1 and "Slack endpoint" in refused.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("http://127.0.0.1:9/", "--events", "invoice.paid"), 2, "unknown event type(s)"),
        (("ftp://127.0.0.1/", "--events", "alert.opened"), 2, "not a target URL"),
        (("http://127.0.0.1:9/", "--events", ","), 2, "at least one event type"),
    ],
)
def test_add_refuses_what_cannot_be_an_endpoint(
    settings: Settings, tenant: str, args: tuple[str, ...], code: int, message: str
) -> None:
    done = paywatch(settings, "endpoint", "add", tenant, *args)
    assert (done.returncode, done.stdout) == (code, "")
    assert message in done.stderr


def test_unknown_tenant_and_endpoint(settings: Settings, tenant: str) -> None:
    done = paywatch(settings, "endpoint", "list", f"{tenant}-nope")
    assert done.returncode == 1 and "unknown tenant" in done.stderr
    done = paywatch(settings, "endpoint", "disable", tenant, "ep_aaaaaaaaaaaaaa")
    assert done.returncode == 1 and "has no endpoint 'ep_aaaaaaaaaaaaaa'" in done.stderr
    assert paywatch(settings, "endpoint", "list", tenant).stdout.startswith(
        f"tenant {tenant} has no endpoints"
    )


def test_prod_refuses_plain_http_and_private_addresses(settings: Settings, tenant: str) -> None:
    env = settings_env(settings) | {
        "PAYWATCH_ENV": "prod",
        "PAYWATCH_SECRET_KEY": "prod-cli-master-key-0123456789abcdefgh",
    }
    env.pop("PAYWATCH_OUTBOUND_ALLOW_PRIVATE", None)
    base = ("endpoint", "add", tenant)
    done = paywatch(settings, *base, "http://127.0.0.1/", "--events", "alert.opened", env=env)
    assert done.returncode == 2 and "https in prod" in done.stderr
    done = paywatch(settings, *base, "https://10.1.2.3/", "--events", "alert.opened", env=env)
    assert done.returncode == 2 and "10.1.2.3, a private address" in done.stderr
    allowed = env | {"PAYWATCH_OUTBOUND_ALLOW_PRIVATE": "true"}
    done = paywatch(settings, *base, "https://10.1.2.3/", "--events", "alert.opened", env=allowed)
    assert done.returncode == 0, done.stderr
