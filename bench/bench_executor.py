"""Executor on real Kafka + Postgres: commands/s of the batched executor vs two loops.

Run: ``.venv/bin/python bench/bench_executor.py [--commands 20000] [--legacy-commands 3000]
[--rounds 3]``. Starts its own Kafka and Postgres (``.paywatch/bench-<pid>``, free
ports), then per round, each on fresh topics and its own tenant, pre-produces a seeded
mix of due commands (90 % RETRY_PAYMENT over ~3 commands per invoice, half without
``first_failed_at`` so the journal is asked for day 0, 10 % NOTIFY_CUSTOMER) and runs, in
this process, one after the other:

* ``batched``: ``paywatch.executor.runner.Executor`` as ``paywatch run executor`` runs it
  (INFO log of every command, here to a file);
* ``plain``: ``executor_loops.plain_batches``, the least work the same effects need;
* ``one-at-a-time``: ``executor_loops.one_at_a_time``, the executor before the engine
  issue without its per-command log line (so the ratio is conservative), once after the
  rounds on ``--legacy-commands`` (it is slow).

Commands/s = commands after the first batch / (last - first ``executed_at`` in the
journal; a batch shares one ``executed_at``), so the consumer group join is not counted.
CPU ms per command = this process's CPU time over the run / commands (the executor's own
work: Kafka and Postgres run in their own processes). Prints a Markdown report with the
ratios of the same run; stops what it started by pid. About 2 minutes by default.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import executor_loops
from bench_ingest import BENCH_ROOT, bench_settings, cpu_model, progress, seed_jars, sweep_stale

from paywatch.executor.runner import Executor
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.kafka.codec import make_codec
from paywatch.ops.infra import Endpoints, start_infra, stop_infra
from paywatch.schemas.models import CommandType, DeclineCategory, RecoveryCommand, RuleRef
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_COMMANDS, topic_specs
from paywatch.settings import Settings

RULE = RuleRef(id="bench", edition="2026-01", source="bench")
CATEGORIES = (DeclineCategory.SOFT,) * 6 + (DeclineCategory.HARD, DeclineCategory.FRAUD)


SPAN = (
    "WITH j AS (SELECT executed_at FROM executed_commands WHERE tenant = $1)"
    " SELECT count(*) AS n, count(*) FILTER (WHERE executed_at = (SELECT min(executed_at) FROM j))"
    " AS first, extract(epoch FROM max(executed_at) - min(executed_at)) AS s FROM j"
)


@dataclass
class Run:
    """One variant's run: commands, journal span, CPU seconds."""

    name: str
    commands: int
    timed: int
    span_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.timed / self.span_s if self.span_s > 0 else float("nan")


def workload(tenant: str, count: int) -> list[RecoveryCommand]:
    """A seeded mix of due commands of one tenant (see the module doc)."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        notice = i % 10 == 9
        out.append(
            RecoveryCommand(
                command_id=f"{tenant}-c{i}",
                tenant=tenant,
                invoice_ref=f"in_{i // 3}",
                type=CommandType.NOTIFY_CUSTOMER if notice else CommandType.RETRY_PAYMENT,
                channel="email" if notice else None,
                due_at=now - timedelta(hours=3 - i % 3),
                attempt=1 + i % 3,
                reason="bench",
                rule=RULE,
                provider="stripe",
                customer_ref=f"cus_{i // 3}",
                amount_minor=4900,
                currency="USD",
                decline_category=CATEGORIES[i % len(CATEGORIES)],
                first_failed_at=now - timedelta(days=2) if i % 2 else None,
            )
        )
    return out


async def produce(ends: Endpoints, settings: Settings, commands: list[RecoveryCommand]) -> None:
    codec, topic = make_codec(settings), settings.topic(RECOVERY_COMMANDS)
    producer = reliable_producer(ends.bootstrap, client_id="bench-executor")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, codec.encode(c, topic), f"{c.tenant}/{c.invoice_ref}".encode()
            )
            for c in commands
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def span(pool: asyncpg.Pool, tenant: str, count: int, deadline: float) -> tuple[int, float]:
    """Wait until the tenant's `count` commands are journaled; (commands after the first
    batch, seconds from the first batch's executed_at to the last's). A batch shares one
    executed_at, so the first batch is not counted: the rate is per interval."""
    while time.monotonic() < deadline:
        row = await pool.fetchrow(SPAN, tenant)
        if row["n"] >= count:
            return int(row["n"] - row["first"]), float(row["s"])
        await asyncio.sleep(0.2)  # poll interval of a deadline-bound wait
    raise TimeoutError(f"{tenant}: {count} commands not journaled in time")


async def run_variant(name: str, ends: Endpoints, base: Settings, tag: str, count: int) -> Run:
    settings = base.model_copy(update={"topic_prefix": f"{tag}.", "app_id": f"bench-{tag}"})
    await asyncio.to_thread(ensure_topics, ends.bootstrap, topic_specs(settings), 60.0)
    await produce(ends, settings, workload(tag, count))
    config = SimulatorConfig.parse(7, "")
    pool = await asyncpg.create_pool(ends.dsn, min_size=1, max_size=2)
    cpu = time.process_time()
    try:
        if name == "batched":
            executor = Executor(settings, ends.bootstrap, pool, make_codec(settings), config)
            task, stop = asyncio.create_task(executor.run()), executor.stop
        else:
            task, stop = await start_loop(name, ends, settings, pool, config)
        try:
            timed, seconds = await span(pool, tag, count, time.monotonic() + 900)
        finally:
            stop()
            await asyncio.wait_for(task, 60)
        return Run(name, count, timed, seconds, time.process_time() - cpu)
    finally:
        await pool.close()


async def start_loop(
    name: str, ends: Endpoints, settings: Settings, pool: asyncpg.Pool, config: SimulatorConfig
) -> tuple[asyncio.Task[None], Callable[[], None]]:
    env = executor_loops.Env(
        make_codec(settings),
        settings.topic(RECOVERY_COMMANDS),
        settings.topic(PAYMENTS_EVENTS),
        config,
    )
    loop = executor_loops.plain_batches if name == "plain" else executor_loops.one_at_a_time
    consumer = group_consumer(ends.bootstrap, group_id=f"{settings.app_id}-loop", client_id="bench")
    producer = reliable_producer(ends.bootstrap, client_id="bench-loop")

    async def main() -> None:
        await producer.start()
        await consumer.start()
        consumer.subscribe([env.commands])
        try:
            await loop(consumer, producer, pool, env)
        finally:
            await consumer.stop()
            await producer.stop()

    return asyncio.create_task(main()), env.stopping.set


def report(args: argparse.Namespace, runs: list[Run], pg: str) -> str:
    lines = [
        "## Executor (engine issue): batched vs one at a time vs a plain batching loop",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/bench_executor.py', *sys.argv[1:]])}`",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()},"
        f" PostgreSQL {pg}; Kafka and Postgres embedded, 12 partitions.",
        "",
        "| variant | run | commands | commands/s | CPU ms per command (executor process) |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs):
        lines.append(
            f"| {r.name} | {i} | {r.commands:,} | {r.rate:,.0f}"
            f" | {1000 * r.cpu_s / r.commands:.2f} |"
        )
    med = {
        n: statistics.median(r.rate for r in runs if r.name == n) for n in {r.name for r in runs}
    }
    lines += [
        "",
        "Median commands/s: " + ", ".join(f"{n} {v:,.0f}" for n, v in sorted(med.items())),
        "",
    ]
    if "one-at-a-time" in med:
        lines.append(
            "* batched / one at a time (same run):"
            f" **{med['batched'] / med['one-at-a-time']:.1f}x**"
        )
    lines.append(
        f"* batched / plain batching loop (same run): **{med['batched'] / med['plain']:.2f}x**"
    )
    return "\n".join(lines)


async def measure(args: argparse.Namespace, ends: Endpoints, base: Settings) -> list[Run]:
    runs = []
    for r in range(args.rounds):
        for name in ("batched", "plain"):
            progress(f"round {r}: {name}, {args.commands} commands")
            runs.append(
                await run_variant(name, ends, base, f"b{os.getpid()}{name[0]}{r}", args.commands)
            )
            progress(f"  {runs[-1].rate:,.0f} commands/s")
    if args.legacy_commands:
        progress(f"one-at-a-time, {args.legacy_commands} commands")
        runs.append(
            await run_variant("one-at-a-time", ends, base, f"b{os.getpid()}o", args.legacy_commands)
        )
        progress(f"  {runs[-1].rate:,.0f} commands/s")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--legacy-commands", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sweep_stale()
    state = BENCH_ROOT / f"bench-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=state / "executor.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    settings = bench_settings(state, set())
    try:
        seed_jars(settings)
        ends = start_infra(settings)
        pg = asyncio.run(_pg_version(ends.dsn))
        runs = asyncio.run(measure(args, ends, settings))
        print(report(args, runs, pg))
    finally:
        stop_infra(settings)
        shutil.rmtree(state, ignore_errors=True)
    return 0


async def _pg_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
