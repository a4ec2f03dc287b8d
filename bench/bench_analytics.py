"""Analytics API latency on 1M invoices: p50/p95 of every analytics query for one tenant.

Run: ``.venv/bin/python bench/bench_analytics.py [--invoices 1000000] [--tenants 5]
[--days 365] [--requests 200] [--seed 7]``.

1. Starts its own embedded Postgres (``.paywatch/bench-analytics-<pid>``, a free port) and
   migrates it. No Kafka.
2. Fills the read models by COPY, as the owner: ``--invoices`` invoices spread evenly over
   ``--tenants`` tenants and ``--days`` days of failures (3 providers, 5 decline
   categories, 80 % USD and 20 % EUR, 1-4 attempts; older invoices mostly closed: about 55 %
   recovered by one of the five paths, the rest exhausted or canceled; the last 60 days
   partly open), one ``invoices`` row and one ``recovery_facts`` row each, and the rows of
   every aggregate table (``metrics_daily``, ``metrics_monthly``, ``metrics_daily_ttr``)
   the projector's own ``differences`` and ``Rollup.roll_up`` make of those facts; then
   VACUUM ANALYZE. Every tenant gets an analyst key.
3. Builds the query API with ``create_app`` (logged in as ``paywatch_api``, row-level
   security on, rate limit off) and calls it in process through ``httpx.ASGITransport``, one
   request at a time: after 20 unmeasured requests, ``--requests`` of each analytics request
   for the first tenant. Reports p50, p95 and max per request (the whole request: key lookup,
   tenant binding, queries, JSON).
4. Guards: the month totals (from metrics_daily_ttr) and the provider totals (whole months
   from metrics_monthly, edge days from metrics_daily) of a year each equal ``count(*)`` of
   that tenant's invoices (so the aggregates are complete), every request answers 200, and
   EXPLAIN of each analytics query shows no sequential scan. Exits 1 when a guard fails.

About 3-5 minutes on 2 busy cores, most of it the fill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, like every bench)
import asyncpg
import httpx

from paywatch.api.query.app import create_app
from paywatch.api.query.routes import metrics
from paywatch.db import TenantPool, create_pool, migrate
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.projections.metrics_daily import COLUMNS, ROLLUPS, SUMS, Fact, differences
from paywatch.recovery.analytics import NO_BUCKET, NOT_RECOVERED, RecoveryPath, bucket
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.store import create_tenant

PROVIDERS = ("stripe", "paypal", "braintree")
CATEGORIES = (("SOFT", 60), ("HARD", 15), ("ACTION", 15), ("FRAUD", 3), ("UNKNOWN", 7))
PATHS = (
    (RecoveryPath.paywatch_retry, 45),
    (RecoveryPath.provider_retry, 20),
    (RecoveryPath.payment_method_updated, 20),
    (RecoveryPath.out_of_band, 10),
    (RecoveryPath.late_payment, 5),
)
INVOICE_COLUMNS = (
    "tenant", "invoice_ref", "provider", "customer_ref", "subscription_ref", "status",
    "amount_minor", "currency", "attempts", "last_decline_code", "last_decline_category",
    "last_decline_message", "last_decline_at", "first_failed_at", "last_failed_at",
    "recovered_at", "canceled_at", "last_event_at", "last_event_id",
)  # fmt: skip
CHUNK = 50_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _weighted(rng: random.Random, choices: Any) -> Any:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights)[0]


def invoice(rng: random.Random, tenant: str, n: int, now: datetime, days: int) -> tuple[Any, Fact]:
    """One invoices row and its fact, as the projector would have left them."""
    failed = now - timedelta(days=rng.uniform(0, days))
    category = _weighted(rng, CATEGORIES)
    amount = rng.choice((900, 1900, 4900, 9900, 19900, 49900))
    currency = "USD" if rng.random() < 0.8 else "EUR"
    attempts = rng.randint(1, 4)
    age = (now - failed).days
    roll = rng.random()
    recovered_at = canceled_at = None
    if age < 60 and roll < 0.4 * (60 - age) / 60:
        status = rng.choice(("failed", "retrying", "awaiting_customer"))
    elif roll < 0.55 or age < 3:
        status = "recovered"
        recovered_at = min(failed + timedelta(hours=rng.expovariate(1 / 60)), now)
    else:
        status = rng.choice(("exhausted", "exhausted", "canceled"))
        canceled_at = failed + timedelta(days=rng.uniform(1, 30))
    last = max(t for t in (failed, recovered_at, canceled_at) if t is not None)
    ref = f"in_{n:08d}"
    row = (
        tenant, ref, rng.choice(PROVIDERS), f"cus_{n % 50_000}", None, status, amount,
        currency, attempts, "declined", category, None, failed, failed, failed, recovered_at,
        canceled_at, min(last, now), uuid.UUID(int=n),
    )  # fmt: skip
    fact = Fact(
        tenant=tenant,
        invoice_ref=ref,
        day=failed.date(),
        provider=row[2],
        decline_category=category,
        currency=currency,
        path=_weighted(rng, PATHS).value if recovered_at else NOT_RECOVERED,
        ttr_bucket=bucket((recovered_at - failed).total_seconds() / 3600)
        if recovered_at
        else NO_BUCKET,
        failed_amount_minor=amount,
        attempts=attempts,
        recovered_at=recovered_at,
        recovered_amount_minor=amount if recovered_at else 0,
    )
    return row, fact


def chunks(args: argparse.Namespace, tenants: list[str], now: datetime) -> Iterator[list[Any]]:
    rng = random.Random(args.seed)
    batch: list[Any] = []
    for n in range(args.invoices):
        batch.append(invoice(rng, tenants[n % len(tenants)], n, now, args.days))
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


async def fill(
    dsn: str, args: argparse.Namespace, now: datetime
) -> tuple[list[str], dict[str, str]]:
    """COPY the read models; returns the tenants and an analyst key of each."""
    tenants = [f"bench{i}" for i in range(args.tenants)]
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        keys = {}
        for tenant in tenants:
            await create_tenant(conn, tenant)
            keys[tenant] = await create_api_key(conn, tenant, "analyst")
        sums: dict[Any, list[int]] = {}
        for batch in chunks(args, tenants, now):
            await conn.copy_records_to_table(
                "invoices", records=[r for r, _ in batch], columns=INVOICE_COLUMNS
            )
            facts = [f for _, f in batch]
            await conn.copy_records_to_table(
                "recovery_facts", records=[f.values() for f in facts], columns=COLUMNS
            )
            for key, moved in differences((None, f) for f in facts).items():
                total = sums.setdefault(key, [0] * len(SUMS))
                for i, v in enumerate(moved):
                    total[i] += v
            print(f"  {len(batch):,} invoices copied", end="\r", flush=True)
        for rollup in ROLLUPS:
            rows = rollup.roll_up(sums)
            await conn.copy_records_to_table(
                rollup.table, records=rows, columns=(*rollup.columns, *SUMS)
            )
            print(f"  {rollup.table}: {len(rows):,} rows" + " " * 20)
        tables = ", ".join(("invoices", "recovery_facts", *(r.table for r in ROLLUPS)))
        await conn.execute(f"VACUUM ANALYZE {tables}")
        return tenants, keys
    finally:
        await conn.close()


def requests(now: datetime) -> dict[str, str]:
    year = (now - timedelta(days=364)).date()
    month = (now - timedelta(days=120)).isoformat().replace("+00:00", "Z")
    month_end = (now - timedelta(days=90)).isoformat().replace("+00:00", "Z")
    recovery = "/v1/metrics/recovery"
    return {
        "recovery day (90 d)": recovery,
        "recovery day (365 d)": f"{recovery}?from={year}",
        "recovery week (365 d)": f"{recovery}?from={year}&group_by=week",
        "recovery month (365 d)": f"{recovery}?from={year}&group_by=month",
        "recovery provider (365 d)": f"{recovery}?from={year}&group_by=provider",
        "recovery decline_category (365 d)": f"{recovery}?from={year}&group_by=decline_category",
        "recovery path (365 d)": f"{recovery}?from={year}&group_by=path",
        "recovery month EUR (365 d)": f"{recovery}?from={year}&group_by=month&currency=EUR",
        "at-risk": "/v1/metrics/at-risk",
        "invoices decline_category=FRAUD": "/v1/invoices?decline_category=FRAUD",
        "invoices amount 4900-9900": "/v1/invoices?amount_min=4900&amount_max=9900",
        "invoices from/to (30 d)": f"/v1/invoices?from={month}&to={month_end}",
        "invoices all filters": f"/v1/invoices?decline_category=HARD&amount_min=1900"
        f"&from={month}&to={month_end}",
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(client: httpx.AsyncClient, key: str, url: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    timings = []
    for i in range(n + 20):
        started = time.perf_counter()
        r = await client.get(url, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text}")
        if i >= 20:
            timings.append(elapsed)
    return timings


async def seq_scans(
    dsn: str, settings: Settings, tenant: str, now: datetime
) -> dict[str, list[str]]:
    """EXPLAIN of each analytics query as paywatch_api bound to ``tenant``: any Seq Scan."""
    year = (now - timedelta(days=364)).date()
    window = metrics.DEFAULT_WINDOW_DAYS
    by_month, by_provider = metrics.GroupBy.month, metrics.GroupBy.provider
    queries: dict[str, tuple[str, tuple[Any, ...]]] = {
        "currencies": (metrics._PRESENT, (tenant, year, now.date())),
        "figures month": (
            metrics.FIGURES[by_month],
            (tenant, ["EUR", "USD"], *metrics.ranges(by_month, year, now.date(), window, now)),
        ),
        "figures provider": (
            metrics.FIGURES[by_provider],
            (tenant, ["EUR", "USD"], *metrics.ranges(by_provider, year, now.date(), window, now)),
        ),
        "at-risk": (metrics._AT_RISK, (tenant, now, [3.0, 7.0, 14.0, 30.0, 60.0])),
    }
    pool = await create_pool(settings.role_dsn("api", dsn), min_size=1, max_size=1)
    found = {}
    try:
        for name, (sql, params) in queries.items():
            plan = await TenantPool(pool, tenant).fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
            text = json.dumps(plan)
            found[name] = sorted({n for n in ("Seq Scan", "Index Only Scan", "Index Scan",
                                              "Bitmap Heap Scan") if n in text})  # fmt: skip
    finally:
        await pool.close()
    return found


async def bench(pg: EmbeddedPostgres, settings: Settings, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    started = time.perf_counter()
    tenants, keys = await fill(pg.dsn, args, now)
    print(f"filled {args.invoices:,} invoices in {time.perf_counter() - started:.0f} s")
    tenant = tenants[0]
    failures = 0
    app = create_app(settings, pg.dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            year = (now - timedelta(days=364)).date()
            counted = {}
            for by in ("month", "provider"):
                got = await client.get(
                    f"/v1/metrics/recovery?from={year}&group_by={by}&currency=USD",
                    headers={"Authorization": f"Bearer {keys[tenant]}"},
                )
                counted[by] = sum(d["failures"] for d in got.json()["data"])
            owner = await asyncpg.connect(pg.dsn)
            truth = await owner.fetchval(
                "SELECT count(*) FROM invoices WHERE tenant = $1 AND currency = 'USD'"
                " AND first_failed_at >= $2",
                tenant,
                datetime.combine(year, datetime.min.time(), UTC),
            )
            per_tenant = await owner.fetchval(
                "SELECT count(*) FROM invoices WHERE tenant = $1", tenant
            )
            await owner.close()
            for by, total in counted.items():
                ok = total == truth
                failures += not ok
                print(
                    f"guard: {by} totals {total:,} vs count(*) {truth:,}: {'ok' if ok else 'FAIL'}"
                )
            print(f"\n{per_tenant:,} invoices of tenant {tenant}, {args.requests} requests each\n")
            print("| request | p50 ms | p95 ms | max ms |")
            print("|---|---:|---:|---:|")
            for name, url in requests(now).items():
                t = await measure(client, keys[tenant], url, args.requests)
                print(
                    f"| {name} | {statistics.median(t):.1f} | {percentile(t, 0.95):.1f}"
                    f" | {max(t):.1f} |",
                    flush=True,
                )
    plans = await seq_scans(pg.dsn, settings, tenant, now)
    print(
        "\nplans (as paywatch_api): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in plans.items())
    )
    failures += sum("Seq Scan" in v for v in plans.values())
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    state = Path.cwd() / ".paywatch" / f"bench-analytics-{os.getpid()}"
    settings = Settings(
        state_dir=state,
        embedded_pg_port=free_port(),
        kafka_bootstrap=None,
        database_url=None,
        api_rate=0,
    )
    pg = EmbeddedPostgres(settings)
    pg.start()
    try:
        return asyncio.run(bench(pg, settings, args))
    finally:
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
