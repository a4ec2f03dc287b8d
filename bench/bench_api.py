"""Query API: what row-level security and the role checks cost a read, shipped vs pre-RLS.

Run: ``.venv/bin/python bench/bench_api.py [--tenants 20] [--invoices 5000] [--clients 16]
[--seconds 2.5] [--rounds 8] [--arms shipped,shipped-ov,baseline,noroles]``.

1. Starts its own embedded Postgres (``.paywatch/bench-api-<pid>``, a free port), migrates
   it, and seeds a read model as the owner, by COPY: ``--tenants`` tenants of ``--invoices``
   invoices each, failing 1-4 times (Stripe-like declines), a third recovered; one
   ``invoices`` and ``recovery_workflows`` row per invoice, a ``failures`` row per failed
   attempt, an ``event_log`` row per event and a ``recovery_log`` row per transition and
   command (these three by the projector's own row functions), then one analyst API key
   per tenant (``create_api_key``). No Kafka.
2. Builds one app per arm with ``create_app`` (its lifespan entered in this process; rate
   limits off, ``api_rate=0``) and calls it through ``httpx.ASGITransport``:
   shipped: the app as it is, logged in as ``paywatch_api``, every statement in a
   ``TenantPool`` transaction that first binds ``paywatch.tenant`` (RLS policies of migration
   014 on every table); baseline: logged in as the owner (``api_database_url`` = the owner's
   DSN) with ``app.dependency_overrides[deps.get_pool]`` handing the routes the plain pool:
   the pre-RLS behaviour, one round trip per statement, no policies; noroles: the baseline
   with ``deps.authorize`` overridden too (no permission matrix): baseline/noroles is what
   the role checks cost. Any ``dependency_overrides`` entry makes FastAPI rebuild every
   dependency of every request (``build_app``), so shipped-ov, the shipped app with
   ``get_pool`` overridden by itself, pays the same: shipped-ov/baseline is RLS alone.
   Authentication (``paywatch_authenticate``, last use) is the same in every arm.
3. Each round runs every arm for ``--seconds`` with ``--clients`` concurrent clients, each
   sending an even mix of GET /v1/invoices?limit=50, GET /v1/invoices/{ref},
   GET /v1/failures?limit=50 and GET /v1/invoices/{ref}/timeline for random tenants and
   invoices; every arm sends the same seeded sequence. The arms' order rotates every round,
   so all see the same noise. Measured per round: requests/s, latency per route, CPU of this
   process (client, app and driver together) and of every Postgres server process per
   request. The report gives medians over the rounds and the ratios shipped/baseline
   (and the other pairs), each the median of the ratios within a round.
4. A correctness guard first sends a seeded sample of the same requests (plus requests for
   other tenants' invoices, answered 404) to every arm and compares status and JSON, and
   checks that the shipped pool is paywatch_api and sees no row without a tenant bound.
About 2 minutes with the defaults on 2 cores (20-30 s of it seeding); exits 1 when a guard
fails or a request of a round is not answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from fastapi import FastAPI, Request
from pydantic import SecretStr

from paywatch.api.query import deps
from paywatch.api.query.app import create_app
from paywatch.db import migrate
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.projections import event_log, failures, recovery_log, recovery_workflows
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RawRef,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
)
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_COMMANDS, RECOVERY_TRANSITIONS
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.store import create_tenant

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SPAN_S = 30 * 86_400
PARTITIONS = 12
NAMESPACE = uuid.UUID("5d0f5a52-6c1e-4c0b-9a57-2f3f4d1b6a01")
VISA = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
DECLINES = [("insufficient_funds", DeclineCategory.SOFT, "51")] * 6 + [
    ("do_not_honor", DeclineCategory.SOFT, "05"),
    ("expired_card", DeclineCategory.HARD, "54"),
    ("fraudulent", DeclineCategory.FRAUD, "59"),
]
INVOICE_COLUMNS = (
    "tenant invoice_ref provider customer_ref subscription_ref status amount_minor currency"
    " attempts last_decline_code last_decline_category last_decline_message last_decline_at"
    " first_failed_at last_failed_at recovered_at canceled_at last_event_at last_event_id"
).split()
ROUTES = (
    "GET /v1/invoices",
    "GET /v1/invoices/{ref}",
    "GET /v1/failures",
    "GET /v1/invoices/{ref}/timeline",
)
ARMS = {
    "shipped": "shipped (paywatch_api, TenantPool, RLS)",
    "shipped-ov": "shipped, get_pool overridden by itself",
    "baseline": "baseline (owner, plain pool, no RLS)",
    "noroles": "baseline without the role checks",
}


# -- the read model -------------------------------------------------------------------------


@dataclass
class Rows:
    """Rows of one tenant per table, in each table's COPY column order."""

    invoices: list[tuple[Any, ...]] = field(default_factory=list)
    recovery_workflows: list[tuple[Any, ...]] = field(default_factory=list)
    failures: list[tuple[Any, ...]] = field(default_factory=list)
    event_log: list[tuple[Any, ...]] = field(default_factory=list)
    recovery_log: list[tuple[Any, ...]] = field(default_factory=list)


class Log:
    """Kafka coordinates for the seeded records: partition by key, offsets in order."""

    def __init__(self) -> None:
        self.next: Counter[tuple[str, int]] = Counter()

    def at(self, topic: str, key: str) -> Coords:
        """The coordinates of the next record of ``key`` on ``topic``."""
        partition = zlib.crc32(key.encode()) % PARTITIONS
        offset = self.next[(topic, partition)]
        self.next[(topic, partition)] += 1
        return Coords(topic, partition, offset)


@dataclass
class Invoice:
    """One invoice's story as it is being written: its facts and the records so far."""

    tenant: str
    ref: str
    customer: str
    amount: int
    card: PaymentMethod
    rows: Rows
    log: Log
    events: list[PaymentEvent] = field(default_factory=list)
    moves: list[tuple[SagaTransition, Coords]] = field(default_factory=list)

    def event(self, n: int, at: datetime, decline: Decline | None) -> PaymentEvent:
        """Record a failed (with ``decline``) or successful attempt ``n`` at ``at``."""
        key = f"{self.tenant}/{self.ref}"
        raw = self.log.at("webhooks.raw", key)
        event = PaymentEvent(
            event_id=str(uuid.uuid5(NAMESPACE, f"{key}/{n}/{decline is None}")),
            type=EventType.PAYMENT_FAILED if decline else EventType.PAYMENT_SUCCEEDED,
            tenant=self.tenant, provider="stripe",
            source_type="invoice.payment_failed" if decline else "invoice.paid",
            occurred_at=at, customer_ref=self.customer, subscription_ref=f"sub_{self.ref[3:]}",
            invoice_ref=self.ref, payment_ref=f"pi_{self.ref[3:]}_{n}",
            amount_minor=self.amount, currency="USD", decline=decline, attempt=n,
            payment_method=self.card, paywatch_retry=n > 1,
            raw=RawRef(topic=raw.topic, partition=raw.partition, offset=raw.offset,
                       provider_event_id=f"evt_{self.ref[3:]}_{n}_{decline is None}"),
        )  # fmt: skip
        coords = self.log.at(PAYMENTS_EVENTS, key)
        self.rows.event_log.append(event_log.row(event, coords))
        failure = failures.row(event, coords)
        if failure is not None:
            self.rows.failures.append(failure)
        self.events.append(event)
        return event

    def move(
        self, to: SagaState, cause: PaymentEvent, used: int, action: CommandType | None
    ) -> None:
        """Record the saga's transition to ``to`` and, with ``action``, its command."""
        key = f"{self.tenant}/{self.ref}"
        at = cause.occurred_at + timedelta(seconds=1)
        due = at + DAY if action is CommandType.RETRY_PAYMENT else at
        move = SagaTransition(
            tenant=self.tenant, invoice_ref=self.ref,
            from_state=self.moves[-1][0].to_state if self.moves else None, to_state=to,
            cause_event_id=cause.event_id, at=at, rule=VISA, reason=f"{cause.type} -> {to}",
            attempts_used=used, attempts_allowed=4, next_action=action,
            next_action_at=due if action else None,
        )  # fmt: skip
        coords = self.log.at(RECOVERY_TRANSITIONS, key)
        self.rows.recovery_log.append(recovery_log.row(move, coords))
        self.moves.append((move, coords))
        if action is not None:
            command = RecoveryCommand(
                command_id=str(uuid.uuid5(NAMESPACE, f"{key}/cmd/{used}")), type=action,
                tenant=self.tenant, invoice_ref=self.ref, due_at=due, attempt=used + 1,
                reason=move.reason or "", rule=VISA, cause_event_id=cause.event_id,
                issued_at=at,
            )  # fmt: skip
            coords = self.log.at(RECOVERY_COMMANDS, key)
            self.rows.recovery_log.append(recovery_log.row(command, coords))

    def close(self) -> None:
        """Write the invoice's ``invoices`` and ``recovery_workflows`` rows."""
        failed = [e for e in self.events if e.decline is not None]
        last, final = failed[-1], self.events[-1]
        decline = last.decline or Decline()
        move, coords = self.moves[-1]
        state = move.to_state
        recovered = final.occurred_at if final.decline is None else None
        self.rows.invoices.append((
            self.tenant, self.ref, "stripe", self.customer, final.subscription_ref, state.value,
            self.amount, "USD", len(failed), decline.code, decline.category.value,
            decline.message, last.occurred_at, failed[0].occurred_at, last.occurred_at,
            recovered, None, final.occurred_at, final.event_id,
        ))  # fmt: skip
        terminal = state in recovery_workflows.TERMINAL
        self.rows.recovery_workflows.append(recovery_workflows.WorkflowRow(
            self.tenant, self.ref, state, move.next_action, move.next_action_at,
            move.attempts_used, move.attempts_allowed, VISA.id, VISA.edition, VISA.source,
            move.reason, move.cause_event_id, move.at, *coords, self.moves[0][0].at,
            move.at if terminal else None,
        ).values())  # fmt: skip


def invoice_story(rng: random.Random, invoice: Invoice) -> None:
    """1-4 failures a day apart, each decided by the saga; a third end recovered."""
    start = T0 + timedelta(seconds=rng.uniform(0, SPAN_S))
    code, category, network = rng.choice(DECLINES)
    decline = Decline(code=code, category=category, network_code=network, message="declined")
    hard = category is not DeclineCategory.SOFT
    tries = 1 if hard else rng.choices([1, 2, 3, 4], weights=[45, 30, 15, 10])[0]
    recovered = rng.random() < 1 / 3
    for n in range(1, tries + 1):
        failed = invoice.event(n, start + (n - 1) * DAY, decline)
        if hard:
            invoice.move(SagaState.awaiting_customer, failed, n, CommandType.NOTIFY_CUSTOMER)
        elif n < tries or (not recovered and n < 4):
            invoice.move(SagaState.retrying, failed, n, CommandType.RETRY_PAYMENT)
        else:
            invoice.move(SagaState.exhausted, failed, n, None)
    if recovered:
        paid = invoice.event(tries + 1, start + (tries - 1) * DAY + timedelta(hours=20), None)
        invoice.move(SagaState.recovered, paid, tries, None)
    invoice.close()


def tenant_rows(t: int, tenant: str, invoices: int, log: Log, seed: int) -> tuple[Rows, list[str]]:
    """Every row of one tenant's read model, and its invoice refs."""
    rng = random.Random(seed * 1_000 + t)
    rows, refs = Rows(), []
    for n in range(invoices):
        ref = f"in_{t:02d}{n:06d}"
        card = PaymentMethod(brand=rng.choice(["visa", "mastercard"]), last4=f"{n % 10_000:04d}")
        customer = f"cus_{t:02d}{n % max(1, invoices // 3):06d}"  # ~3 invoices per customer
        amount = rng.randrange(500, 50_000)
        invoice_story(rng, Invoice(tenant, ref, customer, amount, card, rows, log))
        refs.append(ref)
    return rows, refs


COPIES: Sequence[tuple[str, Sequence[str]]] = (
    ("invoices", INVOICE_COLUMNS),
    ("recovery_workflows", recovery_workflows.COLUMNS),
    ("failures", failures.WRITE.columns),
    ("event_log", event_log.WRITE.columns),
    ("recovery_log", recovery_log.WRITE.columns),
)


@dataclass(frozen=True)
class Tenant:
    """A seeded tenant: its analyst key and its invoice refs."""

    name: str
    key: str
    refs: list[str]


async def seed(dsn: str, args: argparse.Namespace) -> tuple[list[Tenant], Counter[str]]:
    """Migrate, then write every tenant's read model and analyst key as the owner."""
    conn: Any = await asyncpg.connect(dsn)  # no jsonb codec: payloads go in as JSON text
    try:
        await migrate(conn)
        log, tenants, counts = Log(), list[Tenant](), Counter[str]()
        for t in range(args.tenants):
            name = f"bench{t:02d}"
            rows, refs = tenant_rows(t, name, args.invoices, log, args.seed)
            async with conn.transaction():
                await create_tenant(conn, name)
                for table, columns in COPIES:
                    records = getattr(rows, table)
                    await conn.copy_records_to_table(table, records=records, columns=columns)
                    counts[table] += len(records)
                tenants.append(Tenant(name, await create_api_key(conn, name, "analyst"), refs))
        await conn.execute("VACUUM ANALYZE")
        return tenants, counts
    finally:
        await conn.close()


# -- the arms -------------------------------------------------------------------------------


async def plain_pool(pool: deps.AppPool, caller: deps.Authenticated) -> asyncpg.Pool:
    """The pre-RLS ``get_pool``: the app's own pool, one round trip per statement (the same
    dependencies as ``get_pool``, so FastAPI resolves the same tree)."""
    return pool


async def unchecked(request: Request, caller: deps.Authenticated) -> deps.Principal:
    """``authorize`` without the permission matrix: every authenticated caller passes."""
    return caller


def build_app(arm: str, settings: Settings, owner_dsn: str) -> FastAPI:
    """The query API of ``arm``: shipped as is, or with its ``dependency_overrides``.

    With any override set, FastAPI rebuilds every dependency of every request from its
    signature (``solve_dependencies`` calls ``get_dependant``): CPU the shipped app never
    spends. So "shipped-ov" is the shipped app with ``get_pool`` overridden by itself,
    paying that same price: shipped-ov / baseline is RLS alone, shipped-ov / shipped the
    price of the override mechanism.
    """
    if arm in ("shipped", "shipped-ov"):
        app = create_app(settings, owner_dsn)
        if arm == "shipped-ov":
            app.dependency_overrides[deps.get_pool] = deps.get_pool
        return app
    owner = settings.model_copy(update={"api_database_url": SecretStr(owner_dsn)})
    app = create_app(owner, owner_dsn)
    app.dependency_overrides[deps.get_pool] = plain_pool
    if arm == "noroles":
        app.dependency_overrides[deps.authorize] = unchecked
    return app


@dataclass
class Arm:
    """One arm: its app and a client calling it in this process."""

    name: str
    app: FastAPI
    client: httpx.AsyncClient


Ask = tuple[str, str, str]
"""(route, path and query, API key)."""


def request_for(route: str, caller: Tenant, ref: str) -> Ask:
    """``route`` called with ``caller``'s key; a list asks for 50 items, the others for ``ref``."""
    path = route.removeprefix("GET ").replace("{ref}", ref)
    return route, path if "{ref}" in route else f"{path}?limit=50", caller.key


def pick(rng: random.Random, tenants: Sequence[Tenant]) -> Ask:
    """One request of the mix: a random route of a random tenant's random invoice."""
    tenant = rng.choice(tenants)
    return request_for(rng.choice(ROUTES), tenant, rng.choice(tenant.refs))


async def call(arm: Arm, request: Ask) -> httpx.Response:
    """Send ``request`` to ``arm``'s app."""
    _, path, key = request
    return await arm.client.get(path, headers={"Authorization": f"Bearer {key}"})


# -- measuring ------------------------------------------------------------------------------


class PostgresCpu:
    """CPU seconds of the postmaster and all its children (backends, walwriter, ...)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def snapshot(self) -> dict[int, float]:
        """CPU seconds (user + system) so far of every server process alive now."""
        spent = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            spent[proc.pid] = times.user + times.system
        return spent

    @staticmethod
    def between(
        before: dict[int, float], after: dict[int, float], pids: Collection[int] | None = None
    ) -> float:
        """CPU seconds spent between two snapshots by ``pids`` (default: all). A process that
        exited in between is lost; the app pools keep their connections, so only a
        short-lived backend would be."""
        return sum(
            cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pids is None or pid in pids
        )


@dataclass
class Round:
    """One arm's figures in one round."""

    requests: int
    seconds: float
    cpu_self: float
    cpu_pg: float
    cpu_backends: float
    latencies: dict[str, list[float]]
    errors: Counter[int]

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


async def load(arm: Arm, rng: random.Random, tenants: Sequence[Tenant], until: float,
               into: Round) -> None:  # fmt: skip
    """One client: requests back to back until ``until``, each timed."""
    while time.perf_counter() < until:
        request = pick(rng, tenants)
        started = time.perf_counter()
        response = await call(arm, request)
        into.latencies[request[0]].append(time.perf_counter() - started)
        into.requests += 1
        if response.status_code != 200:
            into.errors[response.status_code] += 1


async def run_round(arm: Arm, tenants: Sequence[Tenant], args: argparse.Namespace, seed: int,
                    seconds: float, pg: PostgresCpu, monitor: Any) -> Round:  # fmt: skip
    """``--clients`` clients against ``arm`` for ``seconds``; client c draws from seed+c.

    The arm's backends are told apart from the other arms' pools and the server's own
    processes by the application_name its pool connects with (``bench-<arm>``)."""
    result = Round(0, 0.0, 0.0, 0.0, 0.0, {route: [] for route in ROUTES}, Counter())
    cpu, server = time.process_time(), pg.snapshot()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(load(arm, random.Random(seed + c), tenants, until, result) for c in range(args.clients))
    )
    result.seconds = time.perf_counter() - started
    result.cpu_self = time.process_time() - cpu
    after = pg.snapshot()
    result.cpu_pg = PostgresCpu.between(server, after)
    backends = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"bench-{arm.name}"
    )
    result.cpu_backends = PostgresCpu.between(server, after, {r["pid"] for r in backends})
    return result


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (exclusive method); NaN for fewer than two values."""
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else float("nan")


# -- the correctness guard ------------------------------------------------------------------


async def guard(arms: Sequence[Arm], tenants: Sequence[Tenant], args: argparse.Namespace,
                owner_dsn: str) -> list[str]:  # fmt: skip
    """What differs between the arms on a sample of requests; empty when nothing does."""
    problems = await pools_as_intended(arms, owner_dsn)
    rng = random.Random(args.seed)
    for i in range(args.guard):
        t, route = rng.randrange(len(tenants)), rng.choice(ROUTES)
        # Every 10th by ref asks for another tenant's invoice: 404, never a leak.
        cross = i % 10 == 9 and "{ref}" in route and len(tenants) > 1
        holder = tenants[(t + 1) % len(tenants)] if cross else tenants[t]
        request = request_for(route, tenants[t], rng.choice(holder.refs))
        expected, path = 404 if cross else 200, request[1]
        answers = [await call(arm, request) for arm in arms]
        first = answers[0]
        if first.status_code != expected:
            problems.append(f"{path}: {arms[0].name} answered {first.status_code}")
        if expected == 200 and "{ref}" not in route and len(first.json()["data"]) != 50:
            problems.append(f"{path}: {len(first.json()['data'])} items, not 50")
        for arm, answer in zip(arms[1:], answers[1:], strict=True):
            if (answer.status_code, answer.json()) != (first.status_code, first.json()):
                problems.append(f"{path}: {arm.name} answered differently")
    return problems


async def pools_as_intended(arms: Sequence[Arm], owner_dsn: str) -> list[str]:
    """Each arm's pool logs in as its role; the shipped one sees nothing unbound."""
    owner = owner_dsn.split("//", 1)[1].split("@", 1)[0]
    problems = []
    for arm in arms:
        pool = arm.app.state.pool
        user = await pool.fetchval("SELECT current_user")
        want = "paywatch_api" if arm.name.startswith("shipped") else owner
        if user != want:
            problems.append(f"{arm.name}: the pool is {user}, not {want}")
        seen = await pool.fetchval("SELECT count(*) FROM invoices")
        if (seen == 0) != arm.name.startswith("shipped"):
            problems.append(f"{arm.name}: sees {seen} invoices with no tenant bound")
    return problems


# -- the run --------------------------------------------------------------------------------


async def bench(pg: EmbeddedPostgres, settings: Settings, args: argparse.Namespace) -> int:
    """Seed, open the arms, guard, warm up, alternate the rounds, report."""
    started = time.perf_counter()
    tenants, counts = await seed(pg.dsn, args)
    seeded = time.perf_counter() - started
    print(f"seeded in {seeded:.1f} s: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
    postmaster = pg.pid()
    if postmaster is None:
        raise RuntimeError("the embedded Postgres is not running")
    server = PostgresCpu(postmaster)
    async with AsyncExitStack() as stack:
        monitor: Any = await asyncpg.connect(pg.dsn)
        stack.push_async_callback(monitor.close)
        arms = []
        for name in args.arms:
            app = build_app(name, settings, f"{pg.dsn}?application_name=bench-{name}")
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://paywatch-api")
            arms.append(Arm(name, app, await stack.enter_async_context(client)))
        problems = await guard(arms, tenants, args, pg.dsn)
        print(f"guard: {args.guard} requests to each arm, {len(problems)} problems", flush=True)
        for arm in arms:  # open the pools' connections, fill the caches: not measured
            await run_round(arm, tenants, args, 0, args.warmup, server, monitor)
        results: dict[str, list[Round]] = {arm.name: [] for arm in arms}
        for n in range(args.rounds):
            print(f"round {n + 1}", flush=True)
            for arm in arms[n % len(arms) :] + arms[: n % len(arms)]:
                seed_of_round = args.seed * 1_000_000 + (n + 1) * 1_000
                result = await run_round(
                    arm, tenants, args, seed_of_round, args.seconds, server, monitor
                )
                results[arm.name].append(result)
                print(
                    f"  {arm.name:9} {result.rate:>7,.0f} requests/s"
                    f"  CPU/request: {1e3 * result.cpu_self / result.requests:.2f} ms here,"
                    f" {1e3 * result.cpu_pg / result.requests:.2f} ms Postgres"
                    f" ({1e3 * result.cpu_backends / result.requests:.2f} its backends)",
                    flush=True,
                )
        version = await arms[0].app.state.pool.fetchval("SHOW server_version")
    report(args, counts, results, problems, version)
    errors = sum(sum(r.errors.values()) for rounds in results.values() for r in rounds)
    return 1 if problems or errors else 0


def cpu_model() -> str:
    """The processor's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_of(rounds: Sequence[Round], figure: Callable[[Round], float]) -> float:
    """The median over the rounds of one figure."""
    return statistics.median(figure(r) for r in rounds)


def report(args: argparse.Namespace, counts: Counter[str], results: dict[str, list[Round]],
           problems: list[str], version: str) -> None:  # fmt: skip
    """Print the Markdown report."""
    print("\n### Query API: row-level security and role checks vs the pre-RLS baseline\n")
    print(
        f"{platform.node()}, {os.cpu_count()} x {cpu_model()}, Python {platform.python_version()},"
        f" PostgreSQL {version} (embedded, same machine), asyncio loop, in-process ASGI;"
    )
    print(
        f"{args.tenants} tenants x {args.invoices:,} invoices ("
        + ", ".join(f"{n:,} {t}" for t, n in counts.items())
        + ");"
    )
    print(
        f"{args.clients} concurrent clients, an even mix of the 4 routes over random tenants"
        f" and invoices; {args.rounds} rounds x {args.seconds:g} s per arm, order rotated,"
        " medians over the rounds. CPU 'here' is this process: client, app and driver."
        " Another engineer's tests share the machine: compare arms only within a run.\n"
    )
    print(
        "| arm | requests/s (min-max) | CPU ms/request here | Postgres, all processes"
        " | of which its backends | non-200 |\n|---|---:|---:|---:|---:|---:|"
    )
    for name, rounds in results.items():
        errors: Counter[int] = Counter()
        for r in rounds:
            errors.update(r.errors)
        rates = [r.rate for r in rounds]
        print(f"| {ARMS[name]} | {statistics.median(rates):,.0f}"
              f" ({min(rates):,.0f}-{max(rates):,.0f})"
              f" | {median_of(rounds, lambda r: 1e3 * r.cpu_self / r.requests):.3f}"
              f" | {median_of(rounds, lambda r: 1e3 * r.cpu_pg / r.requests):.3f}"
              f" | {median_of(rounds, lambda r: 1e3 * r.cpu_backends / r.requests):.3f}"
              f" | {dict(errors) or 0} |")  # fmt: skip
    print("\nLatency per route, ms (p50 / p95 / p99; each the median over the rounds):\n")
    print("| route | " + " | ".join(results) + " |\n|---|" + "---:|" * len(results))
    for route in ROUTES:
        cells = [latency_cell(rounds, route) for rounds in results.values()]
        print(f"| {route} | " + " | ".join(cells) + " |")
    ratios(results)
    verdict = "yes" if not problems else "NO: " + "; ".join(problems[:5])
    print(f"\nidentical status and JSON in every arm ({args.guard} sampled requests,"
          f" every 10th by-ref one for another tenant's invoice: 404): {verdict}")  # fmt: skip


def latency_cell(rounds: Sequence[Round], route: str) -> str:
    """p50 / p95 / p99 of ``route`` in ms, each the median over the rounds."""
    return " / ".join(
        f"{statistics.median(1e3 * percentile(r.latencies[route], p) for r in rounds):.1f}"
        for p in (50, 95, 99)
    )


def ratios(results: dict[str, list[Round]]) -> None:
    """Print each arm's ratio to the one it differs from by one thing, where both ran: the
    median over the rounds of the ratio within a round, so slow drift of the machine's load
    (other work on it) cancels out."""
    pairs = [
        ("shipped", "baseline", "RLS + TenantPool, as asked (only baseline pays the override)"),
        ("shipped-ov", "baseline", "RLS + TenantPool alone (both pay the override)"),
        ("baseline", "noroles", "the role checks (deps.authorize)"),
        ("shipped-ov", "shipped", "FastAPI's dependency_overrides"),
    ]
    figures: list[Callable[[Round], float]] = [
        lambda r: r.rate,
        lambda r: r.cpu_self / r.requests,
        lambda r: r.cpu_pg / r.requests,
        lambda r: statistics.median(t for times in r.latencies.values() for t in times),
    ]
    print(
        "\n| ratio (median of per-round ratios) | requests/s | CPU/request here"
        " | CPU/request Postgres | p50 latency |\n|---|---:|---:|---:|---:|"
    )
    for this, that, what in pairs:
        if this in results and that in results:
            rounds = list(zip(results[this], results[that], strict=True))
            cells = [statistics.median(f(a) / f(b) for a, b in rounds) for f in figures]
            print(f"| {this} / {that}: {what} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str]) -> int:
    """Start Postgres, run the bench, stop Postgres."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--invoices", type=int, default=5000, help="per tenant")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.5, help="per arm and round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per arm, unmeasured")
    parser.add_argument("--guard", type=int, default=200, help="requests compared across arms")
    parser.add_argument("--arms", type=lambda s: s.split(","), default=list(ARMS))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if unknown := set(args.arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}: choose from {', '.join(ARMS)}")
    state = Path.cwd() / ".paywatch" / f"bench-api-{os.getpid()}"
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
