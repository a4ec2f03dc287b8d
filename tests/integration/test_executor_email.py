"""The executor queues customer email as it journals notification commands (issue 11 item
3): real Kafka, the real Postgres and a real SMTP server (aiosmtpd) on 127.0.0.1, with the
executor and the email dispatcher in-process, wired as `paywatch run executor` wires them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from paywatch.db import create_pool
from paywatch.email import store
from paywatch.email.dispatcher import EmailDispatcher
from paywatch.executor.runner import Executor
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import CommandType, RecoveryCommand, RuleRef
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant
from tests.integration.test_email_delivery import Mailbox, smtp_server
from tests.integration.test_executor import produce
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

RULE = RuleRef(id="tenant.dunning", edition="1", source="tenant policy")


def notice(
    tenant: str, command_id: str, invoice: str, customer: str,
    type_: CommandType = CommandType.NOTIFY_CUSTOMER, template: str = "payment_failed",
) -> RecoveryCommand:  # fmt: skip
    return RecoveryCommand(
        command_id=command_id,
        type=type_,
        tenant=tenant,
        invoice_ref=invoice,
        due_at=datetime.now(UTC) - timedelta(seconds=1),
        channel="email",
        template=template,
        reason="dunning step",
        rule=RULE,
        provider="checkout",
        customer_ref=customer,
        amount_minor=4900,
        currency="EUR",
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def test_notification_commands_are_emailed_once_per_customer_invoice_and_day(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    box = SecretBox.from_settings(test_settings)
    async with pool.acquire() as conn:
        await create_tenant(conn, unique)
        await store.enable(conn, box, unique, from_address="billing@acme.example",
                           display_name="Acme", update_url="https://acme.example/billing",
                           by="cli:test")  # fmt: skip
        await store.set_contact(conn, unique, "cus_ada", "ada@example.com", name="Ada", by="t")
    commands = [
        notice(unique, "n1", "inv_1", "cus_ada"),
        notice(unique, "n2", "inv_1", "cus_ada", template="payment_reminder"),  # same day
        notice(unique, "n3", "inv_2", "cus_nobody"),  # no address on file
        notice(
            unique,
            "u1",
            "inv_3",
            "cus_ada",
            CommandType.REQUEST_PAYMENT_METHOD_UPDATE,
            "update_payment_method",
        ),
    ]
    mailbox = Mailbox()
    with smtp_server(mailbox) as url:
        settings = test_settings.model_copy(update={"smtp_url": SecretStr(url)})
        mailer = EmailDispatcher(settings, pool)
        executor = Executor(
            settings, kafka_bootstrap, pool, make_codec(settings), SimulatorConfig(),
            on_emails=mailer.wake,
        )  # fmt: skip
        tasks = [asyncio.create_task(executor.run()), asyncio.create_task(mailer.run())]
        await produce(test_settings, kafka_bootstrap, [*commands, commands[0]])  # n1 twice
        try:

            async def sent() -> list[asyncpg.Record] | None:
                for task in tasks:
                    if task.done():
                        task.result()
                rows = await pool.fetch(
                    "SELECT command_id, status, reason, to_address FROM emails"
                    " WHERE tenant = $1 ORDER BY command_id",
                    unique,
                )
                done = len(rows) == 4 and "pending" not in {r["status"] for r in rows}
                return rows if done and len(mailbox.got) == 2 else None

            rows = await eventually(sent, what="two emails sent, two suppressed", timeout=90)
        finally:
            executor.stop()
            mailer.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
    journal = {
        r["command_id"]: r
        for r in await pool.fetch(
            "SELECT command_id, outcome, detail FROM executed_commands WHERE tenant = $1", unique
        )
    }
    assert {r["command_id"]: (r["status"], r["reason"]) for r in rows} == {
        "n1": ("sent", None),
        "n2": ("suppressed", "daily_limit"),
        "n3": ("suppressed", "no_address"),
        "u1": ("sent", None),
    }
    assert {k: r["outcome"] for k, r in journal.items()} == {
        "n1": "emailed", "n2": "suppressed", "n3": "suppressed", "u1": "emailed",
    }  # fmt: skip
    assert journal["n2"]["detail"]["email"] == "suppressed:daily_limit"
    assert sorted(str(m["To"]) for m in mailbox.got) == ["ada@example.com", "ada@example.com"]
    subjects = sorted(str(m["Subject"]) for m in mailbox.got)
    assert subjects == ["Please update your payment method",
                        "Your payment of 49.00 EUR did not go through"]  # fmt: skip
    update = next(m for m in mailbox.got if "update" in str(m["Subject"]))
    text = update.get_body(("plain",))
    assert text is not None and "https://acme.example/billing?token=" in text.get_content()
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in mailbox.got)
