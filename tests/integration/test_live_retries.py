"""Live retries through the providers' APIs (issue 11 items 5 and 6), on real Kafka and
Postgres, against the fake provider APIs of tests/fake_providers.py over real sockets.

The executor runs in-process for the behaviours (which retries go live, outages, claims
held by another executor, a crash between charge and record resolved by the provider) and
as `paywatch run executor` for the proof: killed with SIGKILL mid-batch, restarted, and
every due command charged once (the fake's ledger) and its webhook delivered once (the
delivery log), the two agreeing.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from paywatch.charging.registry import client_for
from paywatch.db import create_pool
from paywatch.executor import accounts
from paywatch.executor.live import LiveCharges, request
from paywatch.executor.outcome import outcome_event_id
from paywatch.executor.runner import Executor
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.codec import make_codec
from paywatch.outbound import endpoints
from paywatch.outbound.endpoints import TargetPolicy
from paywatch.schemas.models import (
    CommandType,
    DeadLetter,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RecoveryCommand,
    RuleRef,
)
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.fake_providers import FakeProviders, serve_providers
from tests.integration.test_executor import produce
from tests.integration.test_outbound_delivery import Receiver, serving
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process, settings_env

pytestmark = pytest.mark.integration

RULE = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="tests")
DEADLINE = 120.0


def retry(
    tenant: str, command_id: str, provider: str, *, invoice: str, customer: str | None = None,
    subscription: str | None = None, amount: int = 4900, currency: str = "USD",
    due_at: datetime | None = None,
) -> RecoveryCommand:  # fmt: skip
    return RecoveryCommand(
        command_id=command_id,
        type=CommandType.RETRY_PAYMENT,
        tenant=tenant,
        invoice_ref=invoice,
        due_at=due_at or datetime.now(UTC) - timedelta(seconds=1),
        attempt=1,
        reason="test",
        rule=RULE,
        provider=provider,
        customer_ref=customer,
        subscription_ref=subscription,
        amount_minor=amount,
        currency=currency,
        decline_category=DeclineCategory.SOFT,
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, min_size=1, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with serve_providers() as f:
        yield f


async def go_live(
    pool: asyncpg.Pool, settings: Settings, fake: FakeProviders, tenant: str, *providers: str
) -> None:
    """Create the tenant, store the fake's credentials and turn the providers live."""
    box = SecretBox.from_settings(settings)
    async with pool.acquire() as conn:
        await create_tenant(conn, tenant)
        for provider in providers:
            await set_secrets(conn, box, tenant, provider, fake.secrets(provider))
            assert await accounts.enable(conn, tenant, provider, "cli:test")


async def outcomes(settings: Settings, bootstrap: str) -> dict[str, list[PaymentEvent]]:
    """payments.events outcomes by command id (every copy)."""
    codec, topic = make_codec(settings), settings.topic("payments.events")
    found: dict[str, list[PaymentEvent]] = {}
    for r in await topic_records(bootstrap, topic):
        event = codec.decode(r.value, PaymentEvent, topic=topic)
        if event.raw is not None:
            found.setdefault(event.raw.provider_event_id or "", []).append(event)
    return found


async def journal(pool: asyncpg.Pool, tenant: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM executed_commands WHERE tenant = $1", tenant)
    return {r["command_id"]: r for r in rows}


@asynccontextmanager
async def executing(
    settings: Settings, bootstrap: str, pool: asyncpg.Pool, **live: Any
) -> AsyncIterator[Executor]:
    """An in-process executor (lease from `live`, default 120 s) until the block ends."""
    charges = LiveCharges(
        pool, SecretBox.from_settings(settings), lease_s=live.pop("lease_s", 120.0),
        grace=timedelta(hours=1), **live,
    )  # fmt: skip
    config = SimulatorConfig.parse(1, '{"SOFT": 1}')
    executor = Executor(settings, bootstrap, pool, make_codec(settings), config, live=charges)
    task = asyncio.create_task(executor.run())
    try:
        yield executor
    finally:
        executor.stop()
        await asyncio.wait_for(task, 60)


async def test_each_provider_charges_a_live_tenant_s_retry_once_and_a_sandbox_one_simulates(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str,
) -> None:  # fmt: skip
    live, sandbox = unique, f"{unique}sb"
    await go_live(pool, test_settings, fake, live, *("stripe", "braintree", "authorizenet",
                                                     "adyen", "checkout"))  # fmt: skip
    async with pool.acquire() as conn:
        await create_tenant(conn, sandbox)
    fake.stripe_invoice("in_paid", "cus_s1", 4900)
    fake.stripe_invoice("in_declined", "cus_s2", 4900)
    fake.decline("stripe", "cus_s2", "insufficient_funds")
    fake.braintree_subscription("sub_bt1", "b1", "49.00")
    fake.anet_profile("9001", ("8001", False), ("8002", True))
    fake.adyen_shopper("shopper-1", "8415")
    fake.checkout_customer("cus_ck1")
    commands = [
        retry(live, "c-stripe", "stripe", invoice="in_paid", customer="cus_s1"),
        retry(live, "c-stripe-no", "stripe", invoice="in_declined", customer="cus_s2"),
        retry(
            live, "c-bt", "braintree", invoice="in_bt", customer="cus_b1", subscription="sub_bt1"
        ),
        retry(live, "c-anet", "authorizenet", invoice="in_an", customer="9001"),
        retry(live, "c-adyen", "adyen", invoice="in_ad", customer="shopper-1"),
        retry(live, "c-ck", "checkout", invoice="in_ck", customer="cus_ck1"),
        retry(sandbox, "c-sandbox", "stripe", invoice="in_sb", customer="cus_x"),
        retry(live, "c-paypal", "paypal", invoice="in_pp", customer="payer"),  # never live
    ]
    await produce(test_settings, kafka_bootstrap, [*commands, commands[0]])  # one repeated

    async with executing(test_settings, kafka_bootstrap, pool):

        async def all_out() -> dict[str, list[PaymentEvent]] | None:
            found = await outcomes(test_settings, kafka_bootstrap)
            return found if len(found) == len(commands) else None

        found = await eventually(all_out, what="an outcome per command", timeout=DEADLINE)
        rows = {**await journal(pool, live), **await journal(pool, sandbox)}

    charged = Counter(c.provider for c in fake.charges)
    assert charged == {"stripe": 2, "braintree": 1, "authorizenet": 1, "adyen": 1, "checkout": 1}
    assert sorted(c.key for c in fake.ledger("stripe")) == ["c-stripe", "c-stripe-no"]
    assert [c.amount_minor for c in fake.ledger("authorizenet")] == [4900]
    assert all(len(copies) == 1 for copies in found.values()), found
    by_id = {k: v[0] for k, v in found.items()}
    for cmd in commands:
        assert by_id[cmd.command_id].event_id == outcome_event_id(cmd)
        assert by_id[cmd.command_id].paywatch_retry
    for key in ("c-stripe", "c-bt", "c-anet", "c-adyen", "c-ck"):
        assert by_id[key].type is EventType.PAYMENT_SUCCEEDED, key
        assert rows[key]["outcome"] == "succeeded"
        assert rows[key]["detail"]["live"] is True and rows[key]["detail"]["tries"] == 1
        assert rows[key]["detail"]["provider_ref"], key
    declined = by_id["c-stripe-no"]
    assert declined.type is EventType.PAYMENT_FAILED
    assert declined.decline is not None and declined.decline.code == "insufficient_funds"
    assert declined.decline.category is DeclineCategory.SOFT
    assert rows["c-stripe-no"]["detail"]["decline_code"] == "insufficient_funds"
    for simulated in ("c-sandbox", "c-paypal"):  # no live account: the simulator, as before
        assert "live" not in rows[simulated]["detail"] and "day" in rows[simulated]["detail"]
    assert fake.ledger(key="c-sandbox") == [] and fake.ledger(key="c-paypal") == []
    sent = fake.received("stripe", "/pay")
    assert {r.headers.get("idempotency-key") for r in sent} == {"c-stripe", "c-stripe-no"}


async def test_a_provider_outage_keeps_the_retry_pending_until_it_is_charged_once(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str,
) -> None:  # fmt: skip
    await go_live(pool, test_settings, fake, unique, "stripe", "checkout")
    fake.stripe_invoice("in_down", "cus_1", 1500)
    fake.checkout_customer("cus_ck")
    fake.fail("stripe", 503, times=2)
    down = retry(unique, "c-down", "stripe", invoice="in_down", customer="cus_1")
    other = retry(unique, "c-up", "checkout", invoice="in_up", customer="cus_ck")
    await produce(test_settings, kafka_bootstrap, [down, other])

    async with executing(test_settings, kafka_bootstrap, pool):

        async def released() -> asyncpg.Record | None:
            row = await pool.fetchrow(
                "SELECT * FROM charge_claims WHERE tenant = $1 AND command_id = 'c-down'", unique
            )
            return row if row is not None and row["last_error"] else None

        claim = await eventually(released, what="the outage recorded on the claim")
        assert "503" in claim["last_error"]
        # The other provider is not held up by the outage.
        await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-up"),
            what="checkout's retry done during stripe's outage",
        )
        assert (await journal(pool, unique)).keys() == {"c-up"}
        found = await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-down"),
            what="stripe's retry charged once stripe answers", timeout=DEADLINE,
        )  # fmt: skip
    assert found["c-down"][0].type is EventType.PAYMENT_SUCCEEDED
    assert [c.key for c in fake.ledger("stripe")] == ["c-down"]  # three requests, one charge
    assert len(fake.received("stripe", "/pay")) == 3
    row = (await journal(pool, unique))["c-down"]
    assert row["detail"]["tries"] == 3


async def _has(found: Any, key: str) -> dict[str, list[PaymentEvent]] | None:
    got = await found
    return got if key in got else None


async def test_a_claim_held_by_another_executor_waits_and_a_dead_one_s_charge_is_not_repeated(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str,
) -> None:  # fmt: skip
    await go_live(pool, test_settings, fake, unique, "stripe", "braintree")
    fake.stripe_invoice("in_1", "cus_1", 2500)
    fake.braintree_subscription("sub_1", "cus_2", "25.00")
    held = retry(unique, "c-held", "stripe", invoice="in_1", customer="cus_1")
    dead = retry(unique, "c-dead", "braintree", invoice="in_2", customer="cus_2",
                 subscription="sub_1")  # fmt: skip
    # An executor that died after charging `dead` (its claim's lease is over), and one still
    # alive holding `held` for a few seconds more.
    other = client_for("braintree", fake.secrets("braintree"))
    try:
        first = await other.charge(request(dead))
    finally:
        await other.aclose()
    assert first.succeeded and len(fake.ledger("braintree")) == 1
    lease_end = datetime.now(UTC) + timedelta(seconds=6)
    await pool.executemany(
        "INSERT INTO charge_claims (tenant, command_id, provider, invoice_ref, claimed_by,"
        " lease_until) VALUES ($1, $2, $3, $4, 'another-executor', $5)",
        [(unique, "c-held", "stripe", "in_1", lease_end),
         (unique, "c-dead", "braintree", "in_2", datetime.now(UTC) - timedelta(seconds=1))],
    )  # fmt: skip
    await produce(test_settings, kafka_bootstrap, [held, dead])

    async with executing(test_settings, kafka_bootstrap, pool):
        found = await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-dead"),
            what="the dead executor's claim resumed",
        )
        if datetime.now(UTC) < lease_end:
            assert fake.ledger("stripe") == []  # still held by the live one
        found = await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-held"),
            what="the held claim taken over after its lease", timeout=DEADLINE,
        )  # fmt: skip
    # The resumed Braintree try found the first charge instead of charging again.
    assert len(fake.ledger("braintree")) == 1
    assert found["c-dead"][0].type is EventType.PAYMENT_SUCCEEDED
    assert found["c-dead"][0].payment_ref == first.provider_ref
    rows = await journal(pool, unique)
    assert rows["c-dead"]["detail"]["tries"] == 2
    assert rows["c-held"]["executed_at"] >= lease_end
    assert [c.key for c in fake.ledger("stripe")] == ["c-held"]


async def test_a_request_the_provider_refuses_is_dead_lettered_and_the_rest_goes_on(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str,
) -> None:  # fmt: skip
    await go_live(pool, test_settings, fake, unique, "stripe")
    fake.stripe_invoice("in_ok", "cus_1", 900)
    bad = retry(unique, "c-unknown", "stripe", invoice="in_nowhere", customer="cus_1")
    good = retry(unique, "c-ok", "stripe", invoice="in_ok", customer="cus_1")
    await produce(test_settings, kafka_bootstrap, [bad, good])
    dlq = test_settings.topic("recovery.commands.dlq")
    async with executing(test_settings, kafka_bootstrap, pool):
        await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-ok"), what="c-ok charged"
        )
        [record] = await eventually(
            lambda: topic_records(kafka_bootstrap, dlq), what="the refused command's letter"
        )
    letter = make_codec(test_settings).decode(record.value, DeadLetter, topic=dlq)
    assert letter.stage == "charge", letter
    assert "No such invoice" in letter.error, letter.error
    assert "c-unknown" not in await journal(pool, unique)
    assert "c-unknown" not in await outcomes(test_settings, kafka_bootstrap)


async def test_live_charging_is_refused_until_the_credentials_are_set(
    test_settings: Settings, pool: asyncpg.Pool, unique: str
) -> None:
    box = SecretBox.from_settings(test_settings)
    async with pool.acquire() as conn:
        await create_tenant(conn, unique)
        with pytest.raises(accounts.NotChargeable, match="no adyen api_key, merchant_account"):
            await accounts.enable(conn, unique, "adyen", "cli:test")
        with pytest.raises(accounts.NotChargeable, match="no live retries"):
            await accounts.enable(conn, unique, "paypal", "cli:test")
        await set_secrets(conn, box, unique, "adyen", {"api_key": "k", "merchant_account": "M"})
        assert await accounts.enable(conn, unique, "adyen", "cli:test")
        assert not await accounts.enable(conn, unique, "adyen", "cli:test")
        [acct] = await accounts.accounts(conn, unique)
        assert (acct.provider, acct.waiting, acct.enabled_by) == ("adyen", 0, "cli:test")
        assert await accounts.disable(conn, unique, "adyen")
        assert await accounts.accounts(conn, unique) == []


async def test_kill_9_mid_batch_every_due_command_is_charged_and_delivered_exactly_once(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str, tmp_path: Path,
) -> None:  # fmt: skip
    """`paywatch run executor` killed with SIGKILL while its batch is at the providers
    (charges booked, answers not back), restarted: every command charged once, its outcome
    appended under one id, its `recovery.retry_due` webhook in the delivery log once."""
    n = 30  # per provider: Stripe (idempotency key) and Braintree (lookup by order id)
    await go_live(pool, test_settings, fake, unique, "stripe", "braintree")
    receiver = Receiver()
    commands = []
    for i in range(n):
        fake.stripe_invoice(f"in_s{i}", f"cus_s{i}", 1000 + i)
        fake.braintree_subscription(f"sub_{i}", f"cus_b{i}", f"{20 + i}.00")
        commands.append(retry(unique, f"s{i}", "stripe", invoice=f"in_s{i}", customer=f"cus_s{i}",
                              amount=1000 + i))  # fmt: skip
        commands.append(retry(unique, f"b{i}", "braintree", invoice=f"in_b{i}",
                              customer=f"cus_b{i}", subscription=f"sub_{i}",
                              amount=2000 + 100 * i))  # fmt: skip
    fake.slow("stripe", 1.5)  # each charge is booked, its answer comes 1.5 s later
    fake.slow("braintree", 1.5)
    env = settings_env(test_settings)
    env.update(PAYWATCH_CHARGE_LEASE_S="3", PAYWATCH_SIMULATOR_SUCCESS='{"SOFT": 1}')
    log = tmp_path / "executor.log"

    async with serving(receiver):
        async with pool.acquire() as conn:
            await endpoints.add_endpoint(
                conn, SecretBox.from_settings(test_settings), unique, receiver.url,
                ["recovery.retry_due"], policy=TargetPolicy(require_https=False,
                                                            refuse_private=False),
            )  # fmt: skip
        await produce(test_settings, kafka_bootstrap, list(commands))
        with paywatch_process(test_settings, "run", "executor", log=log, env=env) as proc:

            async def charging() -> int | None:
                assert proc.poll() is None, log_tail(log)
                booked = len(fake.charges)
                return booked if booked >= n // 2 else None

            booked = await eventually(charging, what="half the charges booked", timeout=DEADLINE)
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 30)
        journaled_at_kill = len(await journal(pool, unique))
        fake.slow("stripe", 0.0)
        fake.slow("braintree", 0.0)
        with paywatch_process(test_settings, "run", "executor", log=log, env=env) as proc:

            async def settled() -> dict[str, asyncpg.Record] | None:
                assert proc.poll() is None, log_tail(log)
                rows = await journal(pool, unique)
                delivered = await pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE tenant = $1 AND status = 'succeeded'",
                    unique,
                )
                return rows if len(rows) == 2 * n and delivered == 2 * n else None

            rows = await eventually(settled, what="every command journaled and delivered",
                                    timeout=DEADLINE * 2)  # fmt: skip
        found = await outcomes(test_settings, kafka_bootstrap)
        deliveries = await pool.fetch(
            "SELECT event_id, status, body FROM deliveries WHERE tenant = $1", unique
        )

    assert booked >= n // 2 and journaled_at_kill < 2 * n, "the kill came mid-batch"
    resumed = [k for k, r in rows.items() if r["detail"]["tries"] > 1]
    assert resumed, "some claims were taken over after the kill"
    # The fake provider's ledger: exactly one charge per command, whatever was retried.
    per_command = Counter(c.key for c in fake.ledger("stripe"))
    assert per_command == Counter({f"s{i}": 1 for i in range(n)})
    per_subscription = Counter(c.subscription for c in fake.ledger("braintree"))
    assert per_subscription == Counter({f"sub_{i}": 1 for i in range(n)})
    # One outcome id per command (a copy appended before the kill has the same id and body).
    assert set(found) == {c.command_id for c in commands}
    for cmd in commands:
        copies = found[cmd.command_id]
        assert {e.event_id for e in copies} == {outcome_event_id(cmd)}
        assert all(e == copies[0] for e in copies)
        assert copies[0].type is EventType.PAYMENT_SUCCEEDED
        assert rows[cmd.command_id]["outcome"] == "succeeded"
    # The delivery log agrees with the ledger: one delivered retry_due per charged command.
    delivered_for = Counter(
        json.loads(d["body"])["data"]["command_id"] if isinstance(d["body"], str)
        else d["body"]["data"]["command_id"]
        for d in deliveries
    )  # fmt: skip
    assert delivered_for == Counter({c.command_id: 1 for c in commands})
    assert {d["status"] for d in deliveries} == {"succeeded"}
    got_ids = {r.headers.get("webhook-id") for r in receiver.got}
    assert got_ids == {d["event_id"] for d in deliveries}


async def test_payments_without_an_outcome_yet_wait_without_opening_the_circuit(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, fake: FakeProviders,
    unique: str,
) -> None:  # fmt: skip
    """Checkout.com answering 202 (pending) for six retries is an answer, not an outage: the
    tenant's circuit stays closed, another customer's retry goes through at once, and each
    pending payment is recorded once it settles, charged once."""
    await go_live(pool, test_settings, fake, unique, "checkout")
    for customer in ("cus_slow", "cus_ok"):
        fake.checkout_customer(customer)
    fake.checkout_pending("cus_slow")
    pending = [retry(unique, f"c-p{i}", "checkout", invoice=f"in_p{i}", customer="cus_slow")
               for i in range(6)]  # fmt: skip
    await produce(test_settings, kafka_bootstrap, list(pending))
    async with executing(test_settings, kafka_bootstrap, pool) as executor:

        async def waiting() -> list[asyncpg.Record] | None:
            rows = await pool.fetch(
                "SELECT last_error FROM charge_claims WHERE tenant = $1 AND last_error IS NOT NULL",
                unique,
            )
            return rows if len(rows) == len(pending) else None

        rows = await eventually(waiting, what="six retries waiting for their payments")
        assert all("Pending" in r["last_error"] for r in rows), rows
        assert executor._breaker.state((unique, "checkout")) == "closed"
        ok = retry(unique, "c-ok", "checkout", invoice="in_ok", customer="cus_ok")
        await produce(test_settings, kafka_bootstrap, [ok])
        await eventually(
            lambda: _has(outcomes(test_settings, kafka_bootstrap), "c-ok"),
            what="another customer's retry not held behind a circuit", timeout=20,
        )  # fmt: skip
        for payment_id in list(fake.checkout_payments):
            fake.settle_checkout(payment_id, "Captured")

        async def settled() -> dict[str, list[PaymentEvent]] | None:
            found = await outcomes(test_settings, kafka_bootstrap)
            return found if all(c.command_id in found for c in pending) else None

        found = await eventually(settled, what="the settled payments recorded", timeout=DEADLINE)
    assert Counter(c.key for c in fake.ledger("checkout")) == Counter(
        {**{c.command_id: 1 for c in pending}, "c-ok": 1}
    )
    assert all(found[c.command_id][0].type is EventType.PAYMENT_SUCCEEDED for c in pending)
