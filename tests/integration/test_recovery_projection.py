"""Recovery read models on real Kafka + Postgres: workflows, invoices.status, the timeline.

The projector reads payments.events, recovery.transitions and recovery.commands; these
tests write all three (as the worker would) and check what Postgres and the API show.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from paywatch.api.query.app import create_app
from paywatch.kafka.codec import make_codec
from paywatch.projections.recovery_workflows import COLUMNS, UPSERT, WorkflowRow
from paywatch.projections.runner import PROJECTION
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    CommandType,
    DeadLetter,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import hash_api_key
from tests.integration.test_projector import Running
from tests.kafka_helpers import eventually, topic_records

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
S = SagaState
EVENTS, TRANSITIONS, COMMANDS = "payments.events", "recovery.transitions", "recovery.commands"
VISA = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
TENANT_RULE = RuleRef(id="tenant.max_attempts", edition="tenant-policy/r1", source="tenant")


def pay(tenant: str, n: int, ref: str, type_: EventType, minutes: int = 0) -> PaymentEvent:
    failed = type_ is EventType.PAYMENT_FAILED
    return PaymentEvent(
        event_id=event_id(tenant, "stripe", f"evt_{ref}_{n}"),
        type=type_,
        tenant=tenant,
        provider="stripe",
        source_type="invoice.payment_failed" if failed else "invoice.paid",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref="cus_r",
        invoice_ref=ref,
        amount_minor=4900,
        currency="USD",
        attempt=n,
        decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT)
        if failed
        else None,
        paywatch_retry=n > 1,
    )


def move(
    tenant: str,
    ref: str,
    src: SagaState | None,
    dst: SagaState,
    seconds: int,
    *,
    rule: RuleRef = VISA,
    action: CommandType | None = None,
) -> SagaTransition:
    return SagaTransition(
        tenant=tenant,
        invoice_ref=ref,
        from_state=src,
        to_state=dst,
        cause_event_id=f"cause_{seconds}",
        at=T0 + timedelta(seconds=seconds),
        rule=rule,
        reason=f"{src} -> {dst}",
        attempts_used=1,
        attempts_allowed=4,
        next_action=action,
        next_action_at=T0 + timedelta(days=1) if action else None,
    )


def retry(tenant: str, ref: str, seconds: int) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"cmd_{ref}_{seconds}",
        type=CommandType.RETRY_PAYMENT,
        tenant=tenant,
        invoice_ref=ref,
        due_at=T0 + timedelta(days=1),
        attempt=2,
        reason="soft decline: retry in a day",
        rule=VISA,
        cause_event_id=f"cause_{seconds}",
        issued_at=T0 + timedelta(seconds=seconds),
    )


Record = PaymentEvent | SagaTransition | RecoveryCommand


async def publish(settings: Settings, bootstrap: str, records: Sequence[Record]) -> None:
    """Write records to their topics, keyed tenant/invoice_ref as the worker does."""
    codec = make_codec(settings)
    topics = {PaymentEvent: EVENTS, SagaTransition: TRANSITIONS, RecoveryCommand: COMMANDS}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for r in records:
            topic = settings.topic(topics[type(r)])
            key = f"{r.tenant}/{r.invoice_ref}".encode()
            await producer.send(topic, key=key, value=codec.encode(r, topic=topic))
        await producer.flush()
    finally:
        await producer.stop()


class Scene:
    """A running projector plus probes of the rows it writes for one tenant."""

    def __init__(self, settings: Settings, bootstrap: str, pool: asyncpg.Pool, tenant: str):
        self.settings, self.bootstrap, self.pool, self.tenant = settings, bootstrap, pool, tenant
        self.run = Running(settings, bootstrap, pool)

    async def send(self, *records: Record) -> None:
        await publish(self.settings, self.bootstrap, records)

    async def value(self, sql: str, *args: object, tenant: str | None = None) -> Any:
        """fetchval of `sql` with $1 = the tenant and $2.. = args."""
        self.run.check()
        return await self.pool.fetchval(sql, tenant or self.tenant, *args)

    async def wait(
        self, sql: str, expected: object, *args: object, tenant: str | None = None
    ) -> None:
        async def probe() -> bool:
            return bool(await self.value(sql, *args, tenant=tenant) == expected)

        await eventually(probe, what=f"{sql} {args} == {expected!r}")


STATE = "SELECT state FROM recovery_workflows WHERE tenant = $1 AND invoice_ref = $2"
STATUS = "SELECT status FROM invoices WHERE tenant = $1 AND invoice_ref = $2"
LOGGED = "SELECT count(*) FROM recovery_log WHERE tenant = $1 AND invoice_ref = $2"
EVENTS_OF = "SELECT count(*) FROM event_log WHERE tenant = $1 AND invoice_ref = $2"


def opening(tenant: str, ref: str, at: int = 1) -> list[Record]:
    """The saga's opening decision: two transitions (same `at`) and a retry command."""
    return [
        move(tenant, ref, None, S.failed, at),
        move(tenant, ref, S.failed, S.retrying, at, action=CommandType.RETRY_PAYMENT),
        retry(tenant, ref, at),
    ]


async def test_saga_state_wins_whichever_topic_arrives_first(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    scene = Scene(test_settings, kafka_bootstrap, pool, unique)
    # Events first: the invoice exists with the event-derived status, then the saga moves it.
    await scene.send(pay(unique, 1, "in_a", EventType.PAYMENT_FAILED))
    await scene.wait(STATUS, "failed", "in_a")
    await scene.send(*opening(unique, "in_a"))
    await scene.wait(STATE, "retrying", "in_a")
    assert await scene.value(STATUS, "in_a") == "retrying"
    # The retry command comes from recovery.commands, which may land in a later batch.
    await scene.wait(LOGGED, 3, "in_a")
    # An event alone never overrides the saga: the success waits for the saga's decision.
    await scene.send(pay(unique, 2, "in_a", EventType.PAYMENT_SUCCEEDED, minutes=60))
    await scene.wait("SELECT count(*) FROM event_log WHERE tenant = $1", 2)
    assert await scene.value(STATUS, "in_a") == "retrying"
    await scene.send(move(unique, "in_a", S.retrying, S.recovered, 3700))
    await scene.wait(STATUS, "recovered", "in_a")

    # Transitions first: the workflow exists before the invoice; the invoice is born in step.
    await scene.send(
        move(unique, "in_b", None, S.failed, 5),
        move(unique, "in_b", S.failed, S.awaiting_customer, 5, rule=TENANT_RULE),
    )
    await scene.wait(STATE, "awaiting_customer", "in_b")
    assert await scene.value(STATUS, "in_b") is None
    await scene.send(pay(unique, 1, "in_b", EventType.PAYMENT_FAILED))
    await scene.wait(STATUS, "awaiting_customer", "in_b")
    await scene.run.stop()

    row = await pool.fetchrow(
        "SELECT * FROM recovery_workflows WHERE tenant = $1 AND invoice_ref = 'in_a'", unique
    )
    assert row["closed_at"] == T0 + timedelta(seconds=3700)
    assert row["started_at"] == T0 + timedelta(seconds=1)
    assert (row["last_rule_id"], row["last_rule_edition"]) == (VISA.id, VISA.edition)
    assert row["last_topic"] == test_settings.topic(TRANSITIONS)


async def test_replay_from_zero_rewrites_the_same_rows(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    scene = Scene(test_settings, kafka_bootstrap, pool, unique)
    await scene.send(
        pay(unique, 1, "in_r", EventType.PAYMENT_FAILED),
        *opening(unique, "in_r"),
        move(unique, "in_r", S.retrying, S.retrying, 90, action=CommandType.RETRY_PAYMENT),
        move(unique, "in_r", S.retrying, S.exhausted, 120, rule=TENANT_RULE),
    )
    await scene.wait(STATUS, "exhausted", "in_r")
    await scene.wait(LOGGED, 5, "in_r")
    await scene.run.stop()
    tables = ("recovery_workflows", "invoices", "recovery_log", "event_log")
    before = {t: await _rows(pool, t, unique) for t in tables}
    prefix = test_settings.topic("")
    ends = await pool.fetchval(
        "SELECT sum(next_offset) FROM projection_checkpoints"
        " WHERE projection = $1 AND starts_with(topic, $2)",
        PROJECTION,
        prefix,
    )
    assert ends == 6
    # Events alone first (their fold alone would say `failed`), then everything.
    for rewind in (test_settings.topic(EVENTS), prefix):
        await pool.execute(
            "UPDATE projection_checkpoints SET next_offset = 0 WHERE starts_with(topic, $1)",
            rewind,
        )
        scene.run = Running(test_settings, kafka_bootstrap, pool)

        async def replayed() -> bool:
            scene.run.check()
            done = await pool.fetchval(
                "SELECT sum(next_offset) FROM projection_checkpoints WHERE starts_with(topic, $1)",
                prefix,
            )
            return bool(done == ends)

        await eventually(replayed, what=f"{rewind}* replayed to the end offsets")
        await scene.run.stop()
        assert {t: await _rows(pool, t, unique) for t in tables} == before, rewind

    # The upsert itself refuses an older snapshot (two projectors overlapping a rebalance).
    newest = WorkflowRow.from_record(
        await pool.fetchrow(
            f"SELECT {', '.join(COLUMNS)} FROM recovery_workflows"
            " WHERE tenant = $1 AND invoice_ref = 'in_r'",
            unique,
        )
    )
    older = replace(newest, state=S.retrying, last_offset=newest.last_offset - 1)
    await pool.execute(UPSERT, *older.values())
    assert await _rows(pool, "recovery_workflows", unique) == before["recovery_workflows"]


async def _rows(pool: asyncpg.Pool, table: str, tenant: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT * FROM {table} WHERE tenant = $1", tenant)
    volatile = {"updated_at", "recorded_at"}
    strip = [{k: v for k, v in dict(r).items() if k not in volatile} for r in rows]
    return sorted(strip, key=repr)


async def test_undecodable_recovery_records_are_dead_lettered(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, unique: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    for logical in (TRANSITIONS, COMMANDS):
        topic = test_settings.topic(logical)
        await producer.send_and_wait(topic, key=f"{unique}/in_x".encode(), value=b"junk")
    await producer.stop()
    scene = Scene(test_settings, kafka_bootstrap, pool, unique)
    await scene.send(*opening(unique, "in_x"))
    await scene.wait(LOGGED, 3, "in_x")
    await scene.run.stop()
    codec = make_codec(test_settings)
    for dlq, source in [("payments.events.dlq", TRANSITIONS), ("recovery.commands.dlq", COMMANDS)]:
        records = await topic_records(kafka_bootstrap, test_settings.topic(dlq))
        letters = [codec.decode(r.value, DeadLetter) for r in records]
        assert [(x.source_topic, x.payload, x.stage) for x in letters] == [
            (test_settings.topic(source), b"junk", "project")
        ]


# --- the timeline API over rows the projector wrote -----------------------------------


async def _key(pool: asyncpg.Pool, tenant: str) -> str:
    key = f"pw_{secrets.token_urlsafe(24)}"
    await pool.execute("INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING", tenant)
    await pool.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, 'analyst', $2, $3)",
        tenant,
        hash_api_key(key),
        key[:7],
    )
    return key


@pytest.fixture
async def api(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def _walk(api: httpx.AsyncClient, key: str, url: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    for _ in range(20):
        query = params | ({"cursor": cursor} if cursor else {})
        r = await api.get(url, params=query, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "next_cursor"}
        items += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_timeline_lists_events_transitions_and_commands_in_order(
    test_settings: Settings,
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    unique: str,
    api: httpx.AsyncClient,
) -> None:
    other = f"{unique}z"
    scene = Scene(test_settings, kafka_bootstrap, pool, unique)
    # Published out of time order on purpose: the timeline sorts by time, not arrival.
    await scene.send(
        *opening(unique, "in_t"),
        move(unique, "in_t", S.retrying, S.recovered, 86_460),
        pay(unique, 1, "in_t", EventType.PAYMENT_FAILED),
        pay(unique, 2, "in_t", EventType.PAYMENT_SUCCEEDED, minutes=1440),
        pay(other, 1, "in_other", EventType.PAYMENT_FAILED),
    )
    await scene.wait(STATUS, "recovered", "in_t")
    await scene.wait(LOGGED, 4, "in_t")
    await scene.wait(EVENTS_OF, 2, "in_t")
    await scene.wait(STATUS, "failed", "in_other", tenant=other)
    await scene.run.stop()
    key, key_other = await _key(pool, unique), await _key(pool, other)
    url = "/v1/invoices/in_t/timeline"

    items = await _walk(api, key, url, limit=2)
    kinds = ["event", "transition", "transition", "command", "event", "transition"]
    assert [i["kind"] for i in items] == kinds
    first, opened, retrying, command, success, recovered = items
    assert first["type"] == "PAYMENT_FAILED" and first["paywatch_retry"] is False
    assert first["decline"] == {"code": "insufficient_funds", "category": "SOFT", "message": None}
    assert (first["amount_minor"], first["currency"], first["attempt"]) == (4900, "USD", 1)
    assert first["kafka"]["topic"] == test_settings.topic(EVENTS)
    assert (opened["from_state"], opened["to_state"]) == (None, "failed")
    assert retrying["to_state"] == "retrying" and retrying["cause_event_id"] == "cause_1"
    assert retrying["rule"] == VISA.model_dump()
    assert retrying["kafka"]["offset"] == opened["kafka"]["offset"] + 1
    assert command["type"] == "RETRY_PAYMENT" and command["command_id"] == "cmd_in_t_1"
    assert command["rule"] == VISA.model_dump() and command["attempt"] == 2
    assert datetime.fromisoformat(command["due_at"]) == T0 + timedelta(days=1)
    assert command["kafka"]["topic"] == test_settings.topic(COMMANDS)
    assert success["type"] == "PAYMENT_SUCCEEDED" and success["paywatch_retry"] is True
    assert recovered["to_state"] == "recovered"

    newest_first = await _walk(api, key, url, limit=4, order="desc")
    assert newest_first == items[::-1]
    auth = {"Authorization": f"Bearer {key}"}
    page = (await api.get(url, params={"limit": 1}, headers=auth)).json()
    crossed = await api.get(
        url, params={"cursor": page["next_cursor"], "order": "desc"}, headers=auth
    )
    assert crossed.status_code == 400 and crossed.json()["error"] == "invalid_cursor"

    one = (await api.get("/v1/invoices/in_t", headers=auth)).json()
    assert one["status"] == "recovered"
    assert one["recovery"]["state"] == "recovered" and one["recovery"]["rule"] == VISA.model_dump()
    assert one["recovery"]["closed_at"] is not None

    assert (await api.get(url)).status_code == 401
    for ref, who in [("in_t", key_other), ("in_other", key), ("in_nothing", key)]:
        r = await api.get(
            f"/v1/invoices/{ref}/timeline", headers={"Authorization": f"Bearer {who}"}
        )
        assert r.status_code == 404, (ref, r.text)
        assert r.json()["error"] == "not_found"
    spec = (await api.get("/openapi.json")).json()
    answer = spec["paths"]["/v1/invoices/{invoice_ref}/timeline"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/Timeline")
