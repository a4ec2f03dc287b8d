"""Schedule-only mode (issue 11 item 2) on real Kafka + Postgres: `paywatch run worker` and
`paywatch run executor` processes, the projector and the query API in this event loop.

* A schedule-only tenant's RETRY_PAYMENT goes out flagged, with the invoice's and the card's
  budget; the executor journals it ``scheduled`` and appends nothing, while a normal
  tenant's retry is simulated and its outcome appended.
* ``POST /v1/invoices/{ref}/attempts`` appends one canonical event per attempt: a repeat
  finds it in the log and appends nothing; 404, 400 (card number, bad body), 409, 503.
* Reported attempts are counted once by the saga and the card's ledger: the outcome of a
  scheduled retry (its command id as ``attempt_id``) adds nothing to what the ledger counted
  when it granted the retry, an attempt of the tenant's own counts like a provider's retry.
  The ledger's own answer, ``card_retries_left`` of the next granted retry, shows both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from paywatch.api.query.app import create_app
from paywatch.executor.outcome import outcome_event_id
from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import Charging, RetrySchedule, TenantPolicy
from paywatch.schemas.models import CommandType, PaymentEvent, RecoveryCommand
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.store import create_tenant
from tests.integration.test_card_expiry import set_policy
from tests.integration.test_customers_api import project, projecting
from tests.integration.test_executor import executor_process
from tests.integration.test_saga_agent import commands, failure, scaled, transitions
from tests.kafka_helpers import eventually, publish, topic_records
from tests.procs import log_tail, paywatch_process

SCHEDULE_ONLY = TenantPolicy(charging=Charging.SCHEDULE_ONLY)
VISA_ATTEMPTS = 21  # in 30 days on one card: the original and 20 reattempts


@pytest.fixture
async def app(test_settings: Settings, pg_dsn: str) -> AsyncIterator[FastAPI]:
    """The query API on the test's topics, with Kafka, without a rate limit."""
    settings = test_settings.model_copy(update={"api_rate": 0})
    app = create_app(settings, pg_dsn, test_settings.kafka_bootstrap)
    async with app.router.lifespan_context(app):
        yield app


async def operator(pool: asyncpg.Pool, tenant: str, role: str = "operator") -> dict[str, str]:
    async with pool.acquire() as conn:
        await create_tenant(conn, tenant)
        key = await create_api_key(conn, tenant, role)
    return {"Authorization": f"Bearer {key}"}


def report(attempt_id: str, outcome: str = "failed", **more: Any) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    return {"attempt_id": attempt_id, "attempted_at": at, "outcome": outcome, **more}


async def events(settings: Settings, bootstrap: str) -> list[PaymentEvent]:
    codec, topic = make_codec(settings), settings.topic("payments.events")
    return [codec.decode(r.value, PaymentEvent, topic=topic) for r in await topic_records(
        bootstrap, topic
    )]  # fmt: skip


async def retries(settings: Settings, bootstrap: str, invoice: str) -> list[RecoveryCommand]:
    found = await commands(settings, bootstrap, invoice)
    return [c for c in found if c.type is CommandType.RETRY_PAYMENT]


async def test_a_schedule_only_retry_is_journaled_scheduled_and_a_normal_one_is_charged(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    settings = scaled(test_settings)
    tenant, normal = f"{unique}s", f"{unique}n"
    await set_policy(settings, kafka_bootstrap, tenant, SCHEDULE_ONLY)
    await publish(settings, kafka_bootstrap, [
        failure(tenant, "in_s", card="fp_s"), failure(normal, "in_n", card="fp_n"),
    ])  # fmt: skip
    worker_log, executor_log = tmp_path / "worker.log", tmp_path / "executor.log"
    with (
        paywatch_process(settings, "run", "worker", log=worker_log) as worker,
        executor_process(settings, executor_log) as executor,
    ):

        async def journaled() -> dict[str, asyncpg.Record] | None:
            assert worker.poll() is None, log_tail(worker_log)
            assert executor.poll() is None, log_tail(executor_log)
            rows = await pool.fetch(
                "SELECT * FROM executed_commands WHERE tenant = ANY($1::text[])"
                " AND type = 'RETRY_PAYMENT'",
                [tenant, normal],
            )
            first = {r["tenant"]: r for r in rows if r["detail"]["attempt"] == 1}
            return first if len(first) == 2 else None

        rows = await eventually(journaled, timeout=120, what="both first retries journaled")
        (scheduled,) = await retries(settings, kafka_bootstrap, "in_s")
        charged = (await retries(settings, kafka_bootstrap, "in_n"))[0]

        async def appended() -> list[PaymentEvent] | None:
            got = await events(settings, kafka_bootstrap)
            ids = {e.event_id for e in got}
            return got if outcome_event_id(charged) in ids else None

        # The normal tenant's outcome is appended before its row commits (effects.apply).
        logged = await eventually(appended, timeout=30, what="the normal tenant's outcome")
    assert scheduled.schedule_only and not charged.schedule_only
    for cmd in (scheduled, charged):
        assert (cmd.attempts_used, cmd.attempts_allowed) == (1, 4)
        assert (cmd.card_retries_left, cmd.card_limit) == (VISA_ATTEMPTS - 2, "visa.reattempts")
    assert rows[tenant]["command_id"] == scheduled.command_id
    assert rows[tenant]["outcome"] == "scheduled"
    assert rows[normal]["outcome"] in {"succeeded", "failed"}
    # Nothing was appended for the schedule-only tenant: no retry outcome at all.
    assert [e for e in logged if e.tenant == tenant and e.paywatch_retry] == []
    assert outcome_event_id(scheduled) not in {e.event_id for e in logged}


async def test_a_report_is_appended_once_and_refused_when_it_must_be(
    test_settings: Settings,
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    api: httpx.AsyncClient,
    unique: str,
    pg_dsn: str,
    free_port: Callable[[], int],
) -> None:
    auth = await operator(pool, unique)
    analyst = await operator(pool, f"{unique}x", "analyst")
    opened = failure(unique, "in_1", card="fp_1")
    await project(test_settings, kafka_bootstrap, pool, await publish(
        test_settings, kafka_bootstrap, [opened]
    ))  # fmt: skip
    url = "/v1/invoices/in_1/attempts"

    missing = await api.post("/v1/invoices/in_nope/attempts", json=report("a1"), headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    pan = report("a1", decline_message="declined: card 4111 1111 1111 1111")
    refused = await api.post(url, json=pan, headers=auth)
    assert refused.status_code == 400 and refused.json()["error"] == "card_data_rejected"
    bad = await api.post(url, json={**report("a1"), "amount_minor": "5"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request", bad.text
    role = await api.post(url, json=report("a1"), headers=analyst)
    assert role.status_code == 403

    body = report("a1", decline_code="51", amount_minor=4900)
    first = await api.post(url, json=body, headers=auth)
    assert first.status_code == 202, first.text
    made = first.json()
    assert made["duplicate"] is False and made["retry_command_id"] is None
    async with projecting(test_settings, kafka_bootstrap, pool) as task:

        async def in_the_log() -> bool:
            assert not task.done(), task
            row = await pool.fetchrow(
                "SELECT source_type FROM event_log WHERE event_id = $1", made["event_id"]
            )
            return row is not None and row["source_type"] == "tenant.attempt_report"

        await eventually(in_the_log, timeout=60, what="the reported attempt projected")
    again = await api.post(url, json=body, headers=auth)
    assert again.status_code == 202 and again.json() == {**made, "duplicate": True}
    other = await api.post(url, json={**body, "decline_code": "05"}, headers=auth)
    assert other.status_code == 409 and other.json()["error"] == "attempt_conflict"

    logged = [e for e in await events(test_settings, kafka_bootstrap) if e.invoice_ref == "in_1"]
    reported = [e for e in logged if e.event_id == made["event_id"]]
    assert len(reported) == 1, "a repeated report must not be appended again"
    assert (reported[0].provider, reported[0].decline and reported[0].decline.code) == (
        "generic",
        "51",
    )
    assert len(logged) == 2  # the failure and the one report: the refused ones wrote nothing
    kafka = made["kafka"]
    assert kafka["topic"] == test_settings.topic("payments.events") and kafka["offset"] >= 0

    # Kafka unreachable: 503, nothing written.
    down = create_app(test_settings, pg_dsn, f"127.0.0.1:{free_port()}")
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            r = await client.post(url, json=report("a2"), headers=auth)
    assert r.status_code == 503 and r.json()["error"] == "kafka_unavailable", r.text


async def test_reports_count_once_in_the_saga_and_the_cards_ledger(
    test_settings: Settings,
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    api: httpx.AsyncClient,
    unique: str,
    tmp_path: Path,
) -> None:
    # A saga day is 10 wall seconds: time for a report between two retries.
    settings = test_settings.model_copy(update={"time_scale": 8640.0})
    policy = SCHEDULE_ONLY.model_copy(update={"retry": RetrySchedule(days=(1, 2, 3))})
    await set_policy(settings, kafka_bootstrap, unique, policy)
    auth = await operator(pool, unique)
    url = "/v1/invoices/in_1/attempts"
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        async with projecting(settings, kafka_bootstrap, pool) as task:
            await publish(settings, kafka_bootstrap, [failure(unique, "in_1", card="fp_1")])

            async def retry(n: int) -> RecoveryCommand | None:
                assert worker.poll() is None, log_tail(log)
                assert not task.done(), task
                found = await retries(settings, kafka_bootstrap, "in_1")
                if len(found) < n:
                    return None
                logged = await pool.fetchval(
                    "SELECT count(*) FROM recovery_log WHERE tenant = $1 AND command_id = $2",
                    unique,
                    found[n - 1].command_id,
                )  # projected: the route can tell the tenant names it
                invoice = await pool.fetchval(
                    "SELECT 1 FROM invoices WHERE tenant = $1 AND invoice_ref = 'in_1'", unique
                )
                return found[n - 1] if logged and invoice else None

            r1 = await eventually(lambda: retry(1), timeout=120, what="retry 1")
            # The outcome of the scheduled retry: its command id names it.
            answer = await api.post(url, json=report(r1.command_id), headers=auth)
            assert answer.status_code == 202, answer.text
            outcome = answer.json()
            assert outcome["retry_command_id"] == r1.command_id
            r2 = await eventually(lambda: retry(2), timeout=120, what="retry 2")
            # An attempt of the tenant's own, outside paywatch's schedule.
            own = await api.post(url, json=report("own-1"), headers=auth)
            assert own.status_code == 202 and own.json()["retry_command_id"] is None
            r3 = await eventually(lambda: retry(3), timeout=120, what="retry 3")

    # What the card's ledger allowed with each retry: the original failure and r1; then r2
    # too (r1's outcome added nothing: the ledger counted r1 when it granted it); then
    # own-1 and r3 (own-1 counted like a provider's retry).
    assert [r.card_retries_left for r in (r1, r2, r3)] == [
        VISA_ATTEMPTS - 2,
        VISA_ATTEMPTS - 3,
        VISA_ATTEMPTS - 5,
    ]
    assert [r.attempts_used for r in (r1, r2, r3)] == [1, 2, 4]
    assert all(r.schedule_only for r in (r1, r2, r3))
    moves = {t.cause_event_id: t for t in await transitions(settings, kafka_bootstrap, "in_1")}
    assert moves[outcome["event_id"]].attempts_used == 1  # F and r1: nothing new
    assert moves[own.json()["event_id"]].attempts_used == 3  # F, r1, r2 and own-1
    # The saga told the card's ledger of own-1 (and of nothing for r1's outcome).
    told = [
        entry
        for record in await topic_records(kafka_bootstrap, settings.topic("recovery.cards"))
        for entry in json.loads(record.value).get("e", [])
    ]
    assert [e["source"] for e in told if e["id"] == own.json()["event_id"]] == ["provider"]
    assert not [e for e in told if e["id"] == outcome["event_id"]]
