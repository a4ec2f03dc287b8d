"""Recovery analytics on real Kafka + Postgres: the real projector writes recovery_facts and
metrics_daily, the query API (in process, as paywatch_api) reads them.

One tenant's history: five invoices of an old cohort recovered by each of the five paths, one
old invoice still open, and a young cohort in two currencies. Records arrive in three rounds
(failures and sagas, then the outcomes, then every record again), so the incremental build
sees out-of-order and repeated records; a replay from offset 0 by a fresh projector must
then give the same rows, in the facts and in every aggregate table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.api.query.app import create_app
from paywatch.kafka.codec import make_codec
from paywatch.projections.metrics_daily import TABLES
from paywatch.projections.runner import PROJECTION, Projector
from paywatch.providers.base import event_id
from paywatch.recovery.analytics import RecoveryPath, split
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RuleRef,
    SagaState,
    SagaTransition,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.store import create_tenant
from tests.integration.test_recovery_projection import Record, publish
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OLD = (NOW - timedelta(days=100)).replace(hour=10, minute=0, second=0, microsecond=0)
NEW = (NOW - timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
RULE = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
LATE = RuleRef(id="paywatch.paid_after_exhaustion", edition="1", source="paywatch")
S = SagaState
F, OK, PM = EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_METHOD_UPDATED
READ_MODELS = ("event_log", "failures", "invoices", "recovery_workflows", "recovery_log", *TABLES)


def ev(
    tenant: str,
    ref: str,
    kind: EventType,
    at: datetime,
    *,
    n: int = 1,
    amount: int = 1000,
    currency: str = "USD",
    provider: str = "stripe",
    category: DeclineCategory = DeclineCategory.SOFT,
    **extra: Any,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id(tenant, provider, f"evt_{ref}_{kind.value}_{n}"),
        type=kind,
        tenant=tenant,
        provider=provider,
        source_type="test",
        occurred_at=at,
        customer_ref=f"cus_{ref}",
        invoice_ref=ref,
        amount_minor=amount,
        currency=currency,
        attempt=n if kind is F else None,
        decline=Decline(code="declined", category=category) if kind is F else None,
        **extra,
    )


def move(
    tenant: str, ref: str, src: SagaState | None, dst: SagaState, at: datetime, rule: RuleRef = RULE
) -> SagaTransition:
    return SagaTransition(
        tenant=tenant,
        invoice_ref=ref,
        from_state=src,
        to_state=dst,
        cause_event_id=f"cause_{ref}_{dst.value}",
        at=at,
        rule=rule,
    )


def history(t: str) -> tuple[list[Record], list[Record]]:
    """(failures and sagas opening, outcomes) of tenant ``t``."""
    h = timedelta(hours=1)
    opened: list[Record] = [
        ev(t, "in_pw", F, OLD, amount=1000),
        ev(t, "in_pw", F, OLD + h, n=2, amount=1000),
        move(t, "in_pw", None, S.failed, OLD),
        move(t, "in_pw", S.failed, S.retrying, OLD + timedelta(minutes=1)),
        ev(t, "in_pm", F, OLD, amount=2000, category=DeclineCategory.ACTION),
        move(t, "in_pm", None, S.awaiting_customer, OLD),
        ev(t, "in_prov", F, OLD, amount=3000, provider="paypal", provider_retry_at=OLD + 24 * h),
        ev(t, "in_oob", F, OLD, amount=4000, category=DeclineCategory.HARD),
        ev(t, "in_late", F, OLD, amount=5000),
        move(t, "in_late", None, S.failed, OLD),
        move(t, "in_late", S.failed, S.exhausted, OLD + timedelta(minutes=1)),
        ev(t, "in_open", F, OLD, amount=6000),
        ev(t, "in_eur", F, NEW, amount=700, currency="EUR"),
        move(t, "in_eur", None, S.retrying, NEW),
        ev(t, "in_new", F, NEW, amount=800),
    ]
    outcomes: list[Record] = [
        move(t, "in_pw", S.retrying, S.recovered, OLD + 2.5 * h),  # before its event: fine
        ev(t, "in_pw", OK, OLD + 2.5 * h, paywatch_retry=True, payment_ref="ch_pw"),
        ev(t, "in_pm", PM, OLD + h, amount=None),
        ev(t, "in_pm", OK, OLD + 3 * h, paywatch_retry=True, payment_ref="ch_pm", amount=2000),
        move(t, "in_pm", S.awaiting_customer, S.recovered, OLD + 3 * h),
        ev(t, "in_prov", OK, OLD + 24 * h, provider="paypal", payment_ref="pp_1", amount=3000),
        ev(t, "in_oob", OK, OLD + 50 * h, amount=4000),  # no payment_ref: marked paid
        ev(t, "in_late", OK, OLD + timedelta(days=40), payment_ref="ch_late", amount=5000),
        move(t, "in_late", S.exhausted, S.recovered, OLD + timedelta(days=40), LATE),
    ]
    return opened, outcomes


async def rows_of(pool: asyncpg.Pool, table: str, tenant: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` for ``tenant`` but its write time, in a fixed order."""
    found = await pool.fetch(f'SELECT * FROM "{table}" WHERE tenant = $1', tenant)
    return sorted(tuple(v for k, v in r.items() if k != "updated_at") for r in found)


async def caught_up(pool: asyncpg.Pool, projection: str, prefix: str, records: int) -> bool:
    """Has ``projection`` checkpointed every record of the test's topics?"""
    done = await pool.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints"
        " WHERE projection = $1 AND starts_with(topic, $2)",
        projection,
        prefix,
    )
    return int(done) == records


@dataclass
class Stack:
    """The tenant with its history projected, and the query API with its keys."""

    tenant: str
    api: httpx.AsyncClient
    keys: dict[str, str]

    async def get(self, url: str, role: str = "analyst", ok: int = 200) -> Any:
        r = await self.api.get(url, headers={"Authorization": f"Bearer {self.keys[role]}"})
        assert r.status_code == ok, (url, r.text)
        return r.json()


async def project(
    settings: Settings,
    bootstrap: str,
    pool: asyncpg.Pool,
    rounds: Sequence[list[Record]],
    projection: str = PROJECTION,
    already: int = 0,
) -> None:
    """Run a projector over the rounds, each fully checkpointed before the next is sent
    (``already``: records in the topics it must read first)."""
    projector = Projector(settings, bootstrap, pool, make_codec(settings), projection)
    task = asyncio.create_task(projector.run())
    sent = already
    try:
        for records in rounds:
            await publish(settings, bootstrap, records)
            sent += len(records)

            async def done(total: int = sent) -> bool:
                if task.done():
                    task.result()  # a crash surfaces at once, not as a timeout
                return await caught_up(pool, projection, settings.topic_prefix, total)

            await eventually(done, timeout=120, what=f"{sent} records projected")
    finally:
        projector.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def stack(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, pg_dsn: str, unique: str
) -> AsyncIterator[Stack]:
    opened, outcomes = history(unique)
    await project(test_settings, kafka_bootstrap, pool, [opened, outcomes])
    async with pool.acquire() as conn:
        await create_tenant(conn, unique)
        keys = {role: await create_api_key(conn, unique, role) for role in ("viewer", "analyst")}
    app = create_app(test_settings, pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Stack(unique, client, keys)


def _by(data: list[dict[str, Any]], field: str) -> dict[Any, dict[str, Any]]:
    return {item[field]: item for item in data}


async def test_each_recovery_is_credited_to_its_path(stack: Stack, pool: asyncpg.Pool) -> None:
    facts = await pool.fetch(
        "SELECT invoice_ref, path, day, currency FROM recovery_facts WHERE tenant = $1",
        stack.tenant,
    )
    paths = {r["invoice_ref"]: r["path"] for r in facts}
    assert paths == {
        "in_pw": RecoveryPath.paywatch_retry,
        "in_pm": RecoveryPath.payment_method_updated,
        "in_prov": RecoveryPath.provider_retry,
        "in_oob": RecoveryPath.out_of_band,
        "in_late": RecoveryPath.late_payment,
        "in_open": "none",
        "in_eur": "none",
        "in_new": "none",
    }
    got = await stack.get(f"/v1/metrics/recovery?group_by=path&from={OLD.date()}")
    assert (got["currency"], got["currencies"]) == ("USD", ["EUR", "USD"])
    by_path = _by(got["data"], "key")
    assert set(by_path) == {p.value for p in RecoveryPath}
    for item in by_path.values():  # each path's share of all seven USD failures
        assert (item["failures"], item["failed_amount_minor"], item["recovered"]) == (7, 21800, 1)
        assert item["recovery_rate"] == round(1 / 7, 4) and item["period"] is None
    assert by_path["provider_retry"]["recovered_amount_minor"] == 3000
    assert by_path["late_payment"]["median_hours_to_recover"] >= 40 * 24


async def test_cohorts_by_day_are_final_only_after_the_window(stack: Stack) -> None:
    got = await stack.get(f"/v1/metrics/recovery?from={OLD.date()}&to={NOW.date()}")
    assert got["window_days"] == 30 and got["group_by"] == "day"
    old, new = got["data"]
    assert old["period"] == str(OLD.date()) and new["period"] == str(NEW.date())
    assert (old["failures"], old["failed_amount_minor"]) == (6, 21000)
    assert (old["recovered"], old["recovered_amount_minor"]) == (5, 15000)
    assert old["recovery_rate"] == 0.8333 and old["provisional"] is False
    assert 24 <= old["median_hours_to_recover"] < 27  # 2.5, 3, 24, 50, 960 h: the 24 h bucket
    assert old["attempts_per_recovery"] == 1.2  # in_pw took two attempts, the others one
    assert (new["failures"], new["recovered"], new["provisional"]) == (1, 0, True)
    assert new["recovery_rate"] == 0 and new["median_hours_to_recover"] is None

    eur = await stack.get(f"/v1/metrics/recovery?from={OLD.date()}&currency=eur")
    assert eur["currency"] == "EUR"
    assert [(d["period"], d["failures"], d["failed_amount_minor"]) for d in eur["data"]] == [
        (str(NEW.date()), 1, 700)
    ]
    default = await stack.get("/v1/metrics/recovery")  # the last 90 days: the young cohort
    assert [d["period"] for d in default["data"]] == [str(NEW.date())]
    nothing = await stack.get("/v1/metrics/recovery?currency=JPY")
    assert nothing["data"] == [] and nothing["currency"] == "JPY"


async def test_periods_and_keys_sum_to_the_same_totals(stack: Stack) -> None:
    since = f"from={OLD.date()}"
    for group_by in ("week", "month", "provider", "decline_category"):
        got = await stack.get(f"/v1/metrics/recovery?{since}&group_by={group_by}")
        totals = [sum(d[f] for d in got["data"]) for f in ("failures", "recovered")]
        assert totals == [7, 5], group_by
    providers = _by(
        (await stack.get(f"/v1/metrics/recovery?{since}&group_by=provider"))["data"], "key"
    )
    assert {k: (v["failures"], v["recovered"]) for k, v in providers.items()} == {
        "paypal": (1, 1),
        "stripe": (6, 4),
    }
    categories = await stack.get(f"/v1/metrics/recovery?{since}&group_by=decline_category")
    assert {d["key"]: d["failures"] for d in categories["data"]} == {
        "ACTION": 1,
        "HARD": 1,
        "SOFT": 5,
    }


_SUMS = "sum(failures), sum(failed_amount_minor), sum(attempts), sum(recovered),"
_SUMS += " sum(recovered_amount_minor), sum(recovered_attempts)"
ROLLED_UP = {
    "metrics_monthly": (
        "date_trunc('month', day)::date, provider, decline_category, path, ttr_bucket",
        "month, provider, decline_category, path, ttr_bucket",
    ),
    "metrics_daily_ttr": ("day, ttr_bucket", "day, ttr_bucket"),
}


async def test_each_rollup_holds_exactly_the_sums_of_the_daily_rows(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    for table, (from_daily, key) in ROLLED_UP.items():
        ordinals = ", ".join(str(i + 1) for i in range(key.count(",") + 2))
        summed = await pool.fetch(
            f"SELECT currency, {from_daily}, {_SUMS} FROM metrics_daily WHERE tenant = $1"
            f" GROUP BY {ordinals} ORDER BY {ordinals}",
            stack.tenant,
        )
        stored = await pool.fetch(
            f"SELECT currency, {key}, {_SUMS} FROM {table} WHERE tenant = $1"
            f" GROUP BY {ordinals} ORDER BY {ordinals}",
            stack.tenant,
        )
        assert [tuple(r) for r in stored] == [tuple(r) for r in summed] and stored, table


async def test_whole_months_answer_as_their_days_do(stack: Stack) -> None:
    month = OLD.date().replace(day=1)
    parts = split(month, NOW.date(), 30, NOW)  # 30: the tenant's window (default policy)
    assert parts.head is None and parts.months and parts.months[0] == month, "monthly rows"
    for group_by in ("provider", "decline_category", "path"):
        whole = await stack.get(f"/v1/metrics/recovery?from={month}&group_by={group_by}")
        days = await stack.get(f"/v1/metrics/recovery?from={OLD.date()}&group_by={group_by}")
        assert whole["data"] == days["data"] and whole["data"], group_by
    by_path = _by(whole["data"], "key")
    assert by_path["late_payment"]["provisional"] is False
    assert by_path["late_payment"]["median_hours_to_recover"] >= 40 * 24


async def test_at_risk_is_the_open_amount_by_state_and_age(stack: Stack) -> None:
    got = await stack.get("/v1/metrics/at-risk", role="viewer")
    assert (got["currency"], got["currencies"]) == ("USD", ["EUR", "USD"])
    assert got["data"] == [
        {"state": "failed", "age": "0-3d", "invoices": 1, "amount_minor": 800},
        {"state": "failed", "age": "60d+", "invoices": 1, "amount_minor": 6000},
    ]
    eur = await stack.get("/v1/metrics/at-risk?currency=EUR", role="viewer")
    assert eur["data"] == [{"state": "retrying", "age": "0-3d", "invoices": 1, "amount_minor": 700}]


async def test_invoices_filter_by_category_amount_and_failure_date(stack: Stack) -> None:
    async def refs(query: str) -> list[str]:
        return sorted(i["invoice_ref"] for i in (await stack.get(f"/v1/invoices?{query}"))["data"])

    assert await refs("decline_category=ACTION") == ["in_pm"]
    assert await refs("amount_min=2500&amount_max=4000") == ["in_oob", "in_prov"]
    cut = (NEW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await refs(f"from={cut}") == ["in_eur", "in_new"]
    assert await refs(f"to={cut}&decline_category=SOFT&amount_max=1000") == ["in_pw"]
    page = await stack.get("/v1/invoices?decline_category=SOFT&limit=2")
    rest = await stack.get(
        f"/v1/invoices?decline_category=SOFT&limit=2&cursor={page['next_cursor']}"
    )
    assert len({i["invoice_ref"] for i in page["data"] + rest["data"]}) == 4


BAD = (
    "/v1/metrics/recovery?group_by=year",
    "/v1/metrics/recovery?from=2026-13-01",
    "/v1/metrics/recovery?from=1700000000",
    "/v1/metrics/recovery?from=2026-05-02&to=2026-05-01",
    "/v1/metrics/recovery?from=2000-01-01&to=2026-01-01",
    "/v1/metrics/recovery?currency=US",
    "/v1/metrics/at-risk?currency=EURO",
    "/v1/invoices?amount_min=10&amount_max=9",
    "/v1/invoices?from=2026-05-02T00:00:00Z&to=2026-05-01T00:00:00Z",
    "/v1/invoices?from=yesterday",
    "/v1/invoices?decline_category=SOMETIMES",
    "/v1/invoices?amount_min=1e3",
)


async def test_every_bad_parameter_is_a_precise_400(stack: Stack) -> None:
    for url in BAD:
        body = await stack.get(url, ok=400)
        assert body["error"] == "invalid_request" and body["detail"], body


async def test_a_replay_from_offset_zero_gives_the_same_rows(
    stack: Stack, test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool
) -> None:
    tenant = stack.tenant
    built = {t: await rows_of(pool, t, tenant) for t in TABLES}
    assert len(built["recovery_facts"]) == 8 and built["metrics_daily"]
    opened, outcomes = history(tenant)
    # Every record once more (redeliveries): nothing changes.
    await project(
        test_settings,
        kafka_bootstrap,
        pool,
        [opened + outcomes],
        already=len(opened) + len(outcomes),
    )
    assert {t: await rows_of(pool, t, tenant) for t in TABLES} == built

    for table in READ_MODELS:  # a rebuild: the read models from nothing
        await pool.execute(f'DELETE FROM "{table}" WHERE tenant = $1', tenant)
    records = 2 * (len(opened) + len(outcomes))
    await project(
        test_settings, kafka_bootstrap, pool, [[]], projection=f"replay-{tenant}", already=records
    )
    assert {t: await rows_of(pool, t, tenant) for t in TABLES} == built
