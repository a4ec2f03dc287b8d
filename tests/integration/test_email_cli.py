"""`paywatch email|contact|template` as a user runs them, on the real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from paywatch.email import outbox, store
from paywatch.schemas.models import CommandType, RecoveryCommand
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from tests.integration.test_cli import paywatch

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, pg_dsn: str, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_dsn, state_dir=tmp_path)


@pytest.fixture
def tenant(settings: Settings, unique: str) -> str:
    made = paywatch(settings, "tenant", "create", unique)
    assert made.returncode == 0, made.stderr
    return unique


def _ok(settings: Settings, *args: str) -> list[str]:
    done = paywatch(settings, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


def test_unknown_tenants_are_refused_by_every_command(settings: Settings, unique: str) -> None:
    ghost = f"{unique}-ghost"
    for args in (
        ("email", "enable", ghost, "--from", "billing@acme.example"),
        ("email", "status", ghost),
        ("email", "log", ghost),
        ("contact", "set", ghost, "cus_1", "ada@example.com"),
        ("contact", "list", ghost),
        ("template", "list", ghost),
        ("template", "preview", ghost, "payment_failed"),
    ):
        done = paywatch(settings, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"unknown tenant '{ghost}'" in done.stderr, (args, done.stderr)


async def test_enable_contacts_log_and_disable(
    settings: Settings, tenant: str, pg_dsn: str
) -> None:
    enabled = _ok(settings, "email", "enable", tenant, "--from", "billing@acme.example",
                  "--name", "Acme", "--update-url", "https://acme.example/billing")  # fmt: skip
    secret = enabled[-1]
    assert secret.startswith("pwl_") and " " not in secret, enabled
    again = _ok(settings, "email", "enable", tenant, "--from", "billing@acme.example")
    assert not any(line.startswith("pwl_") for line in again), "the secret is shown once"
    bad = paywatch(settings, "email", "enable", tenant, "--from", "not an address")
    assert bad.returncode == 2 and "--from" in bad.stderr

    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM email_settings WHERE tenant = $1", tenant)
        assert secret.encode() not in row["link_secret_enc"]  # sealed at rest
        box = SecretBox.from_settings(settings)
        assert store.open_link_secret(box, tenant, row["link_secret_enc"]) == secret
    finally:
        await conn.close()

    _ok(settings, "contact", "set", tenant, "cus_1", "ada@example.com", "--name", "Ada")
    listed = [json.loads(line) for line in _ok(settings, "contact", "list", tenant, "--json")]
    assert [(c["customer_ref"], c["email"], c["name"]) for c in listed] == [
        ("cus_1", "ada@example.com", "Ada")
    ]
    refused = paywatch(settings, "contact", "set", tenant, "cus_2", "ada@@example")
    assert refused.returncode == 2 and "email" in refused.stderr

    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            said = await outbox.enqueue(conn, [_command(tenant, "1"), _command(tenant, "2")])
    finally:
        await conn.close()
    assert said == {f"{tenant}:1": "pending", f"{tenant}:2": "suppressed:daily_limit"}
    log = [json.loads(line) for line in _ok(settings, "email", "log", tenant, "--json")]
    assert sorted((e["status"], e["reason"]) for e in log) == [
        ("pending", None), ("suppressed", "daily_limit")
    ]  # fmt: skip
    status = json.loads(_ok(settings, "email", "status", tenant, "--json")[0])
    assert status["enabled"] is True and status["display_name"] == "Acme"
    assert status["emails"] == {"pending": 1, "suppressed": 1}

    _ok(settings, "email", "disable", tenant)
    log = [json.loads(line) for line in _ok(settings, "email", "log", tenant, "--json",
                                           "--status", "suppressed")]  # fmt: skip
    assert sorted(e["reason"] for e in log) == ["daily_limit", "disabled"]
    status = json.loads(_ok(settings, "email", "status", tenant, "--json")[0])
    assert status["enabled"] is False


def _command(tenant: str, n: str) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"{tenant}:{n}", type=CommandType.NOTIFY_CUSTOMER, tenant=tenant,
        invoice_ref="in_1", customer_ref="cus_1", due_at=datetime.now(UTC), reason="dunning",
        rule={"id": "tenant.dunning", "edition": "1", "source": "policy"},
    )  # fmt: skip


def test_templates_set_list_and_preview(settings: Settings, tenant: str, tmp_path: Path) -> None:
    text, html = tmp_path / "text.j2", tmp_path / "html.j2"
    text.write_text("Dear {{ customer_name }}, {{ amount }} {{ currency }} on {{ invoice_ref }}\n")
    html.write_text("<p>Dear {{ customer_name }}</p><a href='{{ update_url }}'>pay</a>\n")
    _ok(settings, "template", "set", tenant, "payment_failed", "--subject",
        "Invoice {{ invoice_ref }}", "--text", str(text), "--html", str(html))  # fmt: skip
    listed = _ok(settings, "template", "list", tenant)
    assert any(line.startswith("payment_failed  tenant  Invoice") for line in listed), listed
    assert any(line.startswith("card_expiring  built-in") for line in listed), listed

    shown = _ok(settings, "template", "preview", tenant, "payment_failed", "--invoice",
                "in_42", "--amount", "12.34", "--currency", "EUR")  # fmt: skip
    assert shown[0] == "Subject: Invoice in_42"
    assert shown[-1] == "Dear Ada Lovelace, 12.34 EUR on in_42"
    as_html = "\n".join(_ok(settings, "template", "preview", tenant, "payment_failed", "--html"))
    assert "<p>Dear Ada Lovelace</p>" in as_html
    builtin = _ok(settings, "template", "preview", tenant, "update_payment_method")
    assert builtin[0] == "Subject: Please update your payment method"

    text.write_text("Use {{ coupon }}\n")
    bad = paywatch(settings, "template", "set", tenant, "payment_failed", "--subject", "s",
                   "--text", str(text))  # fmt: skip
    assert bad.returncode == 2
    assert "template payment_failed, text: 'coupon' is undefined" in bad.stderr
    text.write_text("{{ ''.__class__ }}\n")
    evil = paywatch(settings, "template", "set", tenant, "mine", "--subject", "s",
                    "--text", str(text))  # fmt: skip
    assert evil.returncode == 2 and "template mine, text" in evil.stderr
