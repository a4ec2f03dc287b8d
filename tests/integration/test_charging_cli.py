"""`paywatch charging enable|disable|status` as an operator runs them, on the real Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paywatch.settings import Settings
from tests.integration.test_cli import paywatch

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, pg_dsn: str, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_dsn, state_dir=tmp_path)


def test_a_provider_turns_live_only_with_its_credentials_and_back(
    settings: Settings, unique: str
) -> None:
    assert paywatch(settings, "tenant", "create", unique).returncode == 0
    refused = paywatch(settings, "charging", "enable", unique, "stripe")
    assert refused.returncode == 1
    assert f"tenant '{unique}' has no stripe api_key secret" in refused.stderr
    assert "paywatch tenant secret" in refused.stderr
    unknown = paywatch(settings, "charging", "enable", "no-such-tenant", "stripe")
    assert unknown.returncode == 1 and "unknown tenant" in unknown.stderr
    paypal = paywatch(settings, "charging", "enable", unique, "paypal")
    assert paypal.returncode == 2 and "invalid choice: 'paypal'" in paypal.stderr

    key = "sk_test_cli_0123456789"
    stored = paywatch(settings, "tenant", "secret", unique, "stripe", "-", input=f"api_key={key}\n")
    assert stored.returncode == 0, stored.stderr
    on = paywatch(settings, "charging", "enable", unique, "stripe")
    assert on.returncode == 0, on.stderr
    assert "now charges its stripe retries live" in on.stdout and key not in on.stdout
    again = paywatch(settings, "charging", "enable", unique, "stripe")
    assert "already charged" in again.stdout

    table = paywatch(settings, "charging", "status", unique)
    assert table.returncode == 0 and table.stdout.splitlines()[1].startswith("stripe ")
    [line] = paywatch(settings, "charging", "status", unique, "--json").stdout.splitlines()
    status = json.loads(line)
    assert (status["provider"], status["waiting"], status["last_error"]) == ("stripe", 0, None)
    assert status["enabled_by"].startswith("cli:")

    off = paywatch(settings, "charging", "disable", unique, "stripe")
    assert off.returncode == 0 and "back to the sandbox simulator" in off.stdout
    empty = paywatch(settings, "charging", "status", unique)
    assert "every retry is simulated" in empty.stdout
