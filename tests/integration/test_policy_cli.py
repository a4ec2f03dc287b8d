"""`paywatch policy show|set|history` as a user runs them, on real Kafka + Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import PolicyChanged
from paywatch.settings import Settings
from tests.conftest import free_tcp_port
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import topic_records
from tests.procs import settings_env


@pytest.fixture
def tenant(test_settings: Settings, unique: str) -> str:
    created = paywatch(test_settings, "tenant", "create", unique)
    assert created.returncode == 0, created.stderr
    return unique


def policy_file(tmp_path: Path, data: object, name: str = "policy.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


async def events(settings: Settings) -> list[PolicyChanged]:
    topic = settings.topic("recovery.policies")
    codec = make_codec(settings)
    records = await topic_records(str(settings.kafka_bootstrap), topic)
    return [codec.decode(r.value, PolicyChanged, topic=topic) for r in records]


async def test_show_set_history(
    test_settings: Settings, tenant: str, tmp_path: Path, pg_dsn: str
) -> None:
    shown = paywatch(test_settings, "policy", "show", tenant)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == TenantPolicy().model_dump(mode="json")  # stdout: JSON
    assert f"revision {TenantPolicy().revision} (the defaults" in shown.stderr

    # Edit what `show` printed and store it.
    edited = json.loads(shown.stdout) | {"window_days": 21, "final_action": "cancel"}
    path = policy_file(tmp_path, edited)
    first = paywatch(test_settings, "policy", "set", tenant, "--file", path, "--reason", "trial")
    assert first.returncode == 0, first.stderr
    revision = first.stdout.strip().splitlines()[-1]  # the revision alone on the last line
    assert revision == TenantPolicy.model_validate(edited).revision
    assert "defaults -> " in first.stdout and "recovery.policies[" in first.stdout

    again = paywatch(test_settings, "policy", "set", tenant, "--file", path)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout and again.stdout.strip().splitlines()[-1] == revision

    from_stdin = subprocess.run(
        [sys.executable, "-m", "paywatch", "policy", "set", tenant, "--file", "-"],
        input=json.dumps({"window_days": 14, "retry": {"days": [1, 3]}}),
        capture_output=True, text=True, timeout=60, env=settings_env(test_settings),
    )  # fmt: skip
    assert from_stdin.returncode == 0, from_stdin.stderr
    second = from_stdin.stdout.strip().splitlines()[-1]
    assert f"{revision} -> {second}" in from_stdin.stdout

    now = paywatch(test_settings, "policy", "show", tenant)
    assert json.loads(now.stdout)["window_days"] == 14
    assert f"revision {second} (stored, changed " in now.stderr and "by cli" in now.stderr

    history = paywatch(test_settings, "policy", "history", tenant)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.strip().splitlines()
    assert len(lines) == 2
    assert f"  {second}  previous={revision}  by=cli" in lines[0]
    assert f"  {revision}  previous=defaults  by=cli  reason='trial'" in lines[1]
    limited = paywatch(test_settings, "policy", "history", tenant, "--limit", "1")
    assert limited.stdout.strip().splitlines() == lines[:1]

    changes = await events(test_settings)
    assert [(e.revision, e.previous_revision, e.changed_by) for e in changes] == [
        (revision, None, "cli"),
        (second, revision, "cli"),
    ]
    conn = await asyncpg.connect(pg_dsn)
    try:
        stored = await conn.fetchval(
            "SELECT revision FROM tenant_policies WHERE tenant = $1", tenant
        )
    finally:
        await conn.close()
    assert stored == second


def test_history_of_a_tenant_that_never_changed(test_settings: Settings, tenant: str) -> None:
    history = paywatch(test_settings, "policy", "history", tenant)
    assert history.returncode == 0 and "never changed its policy" in history.stdout


async def test_a_bad_file_is_exit_2_with_the_field_errors(
    test_settings: Settings, tenant: str, tmp_path: Path
) -> None:
    bad = policy_file(tmp_path, {"window_days": 0, "retry": {"days": [5, 3]}, "colour": 1})
    result = paywatch(test_settings, "policy", "set", tenant, "--file", bad)
    assert result.returncode == 2, result.stderr
    assert "invalid policy (3 errors):" in result.stderr
    assert "  window_days: Input should be greater than or equal to 1 (got 0)" in result.stderr
    assert "  retry.days: days must be strictly increasing: 3 follows 5" in result.stderr
    assert "  colour: Extra inputs are not permitted" in result.stderr

    (tmp_path / "broken.json").write_text("{nope")
    broken = paywatch(
        test_settings, "policy", "set", tenant, "--file", str(tmp_path / "broken.json")
    )
    assert broken.returncode == 2 and "is not JSON" in broken.stderr
    missing = paywatch(test_settings, "policy", "set", tenant, "--file", str(tmp_path / "none"))
    assert missing.returncode == 2 and "cannot read policy file" in missing.stderr
    for failed in (result, broken, missing):
        assert "Traceback" not in failed.stderr and failed.stdout == ""
    assert await events(test_settings) == []


def test_unknown_tenant_and_bad_limit(test_settings: Settings, unique: str, tmp_path: Path) -> None:
    path = policy_file(tmp_path, {"window_days": 20})
    for args in (("show", f"nobody-{unique}"), ("set", f"nobody-{unique}", "--file", path)):
        result = paywatch(test_settings, "policy", *args)
        assert result.returncode == 1 and "unknown tenant" in result.stderr, result.stderr
    limit = paywatch(test_settings, "policy", "history", unique, "--limit", "0")
    assert limit.returncode == 2 and "--limit must be at least 1" in limit.stderr


async def test_kafka_down_is_a_clear_error_and_changes_nothing(
    test_settings: Settings, tenant: str, tmp_path: Path
) -> None:
    env = settings_env(test_settings)
    env["PAYWATCH_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{free_tcp_port()}"
    path = policy_file(tmp_path, {"window_days": 20})
    result = paywatch(test_settings, "policy", "set", tenant, "--file", path, env=env)
    assert result.returncode == 1, result.stderr
    assert "did not take the change" in result.stderr and "not changed" in result.stderr
    assert "Traceback" not in result.stderr
    shown = paywatch(test_settings, "policy", "show", tenant)
    assert "(the defaults" in shown.stderr
