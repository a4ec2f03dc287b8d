"""Rebuild of every read model from the log vs a plain COPY of the same rows (issue 10).

Run: ``.venv/bin/python bench/bench_replay.py [--events 1000000] [--profile]``.

1. Starts its own embedded Kafka and Postgres (``.paywatch/bench-replay``, free ports; the
   directory is kept, so the events are generated and appended once: a later run finds
   them in the topics and skips straight to 2; ``--fresh`` starts over).
2. Appends ``--events`` records to ``bench.payments.events``, ``bench.recovery.transitions``
   and ``bench.recovery.commands`` (12 partitions each), the projector bench's mix
   (bench_projector.py ``invoice_story``: invoices failing 1-4 times, a transition and a
   retry per failure, a third recovered, 5 % duplicate deliveries), produced as the worker
   produces them (Avro, keyed tenant/invoice).
3. Times ``paywatch replay --projection all``'s code (``rebuild.run_job``: Kafka reads,
   decoding, the projector's sink into a new generation, the swap) from empty tables.
4. Baseline: the rows the rebuild left in every read-model table, COPYed (binary, one
   ``copy_records_to_table`` per table) into empty copies of those tables (``LIKE ...
   INCLUDING ALL``: same indexes). Reported: events/s of both, the ratio (goal >= 0.5), the
   rebuild's total time (goal <= 60 s), and with ``--profile`` where the rebuild's time goes
   (cProfile of the same run, top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_projector import PARTITIONS, invoice_story

from paywatch.db import create_pool, migrate
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.codec import make_codec
from paywatch.ops.infra import start_infra, stop_infra
from paywatch.projections import rebuild
from paywatch.schemas.models import PaymentEvent, RecoveryCommand, SagaTransition
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings

STATE = Path.cwd() / ".paywatch" / "bench-replay"
TOPICS = {
    PaymentEvent: "payments.events",
    SagaTransition: "recovery.transitions",
    RecoveryCommand: "recovery.commands",
}


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def infra_settings() -> Settings:
    """The bench's own embedded servers (ports kept with the state directory)."""
    ports = STATE / "ports"
    if ports.exists():
        kafka, controller, pg = map(int, ports.read_text().split())
    else:
        STATE.mkdir(parents=True, exist_ok=True)
        kafka, controller, pg = _port(), _port(), _port()
        ports.write_text(f"{kafka} {controller} {pg}")
    return Settings(
        state_dir=STATE, embedded_kafka_port=kafka, embedded_kafka_controller_port=controller,
        embedded_pg_port=pg, kafka_bootstrap=None, database_url=None, kafka_heap="1g",
    )  # fmt: skip


async def stored(bootstrap: str, settings: Settings) -> int:
    """Records already in the bench topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t), p) for t in TOPICS.values() for p in range(PARTITIONS)
        ]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def append(bootstrap: str, settings: Settings, events: int) -> float:
    """Produce about `events` records, invoice by invoice; seconds taken."""
    codec = make_codec(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
        max_batch_size=256 * 1024, compression_type=None,
    )  # fmt: skip
    await producer.start()
    rng, sent, n, started = random.Random(7), 0, 0, time.perf_counter()
    try:
        while sent < events:
            chunk = [pair for k in range(n, n + 2000) for pair in invoice_story(rng, k)]
            n += 2000
            chunk.sort(key=lambda pair: pair[0])
            for _, record in chunk:
                topic = settings.topic(TOPICS[type(record)])
                key = f"{record.tenant}/{record.invoice_ref}".encode()  # type: ignore[attr-defined]
                copies = 2 if isinstance(record, PaymentEvent) and rng.random() < 0.05 else 1
                value = codec.encode(record, topic=topic)
                for _ in range(copies):
                    await producer.send(topic, key=key, value=value)
                    sent += 1
            print(f"\rappended {sent:,} records", end="", file=sys.stderr, flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    print(file=sys.stderr)
    return time.perf_counter() - started


async def run_rebuild(settings: Settings, bootstrap: str, dsn: str) -> rebuild.Progress:
    """One full rebuild, as `paywatch replay --projection all` runs it."""
    pool = await create_pool(dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            job = await rebuild.open_job(conn, ["all"], None, "bench")
    finally:
        await pool.close()
    last: list[rebuild.Progress] = []

    def report(p: rebuild.Progress) -> None:
        last.append(p)
        print("\r" + p.line(job.job_id), end="", file=sys.stderr, flush=True)

    runner = rebuild.Rebuild(settings, bootstrap, dsn, make_codec(settings), job, report)
    await rebuild.run_job(runner)
    print(file=sys.stderr)
    return last[-1]


async def reset(dsn: str, tables: tuple[str, ...]) -> None:
    """Empty read models, no checkpoints, no jobs, no archives: every run from scratch."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        for schema in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pw_archive_%'"
            " OR nspname LIKE 'pw_rebuild_%' OR nspname = 'bench_copy'"
        ):
            await conn.execute(f'DROP SCHEMA "{schema[0]}" CASCADE')
        await conn.execute("DELETE FROM replay_jobs")
        await conn.execute("TRUNCATE projection_checkpoints, " + ", ".join(tables))
    finally:
        await conn.close()


async def copy_baseline(dsn: str, tables: tuple[str, ...]) -> tuple[float, int]:
    """Seconds to COPY every table's rows into empty copies of it; the rows copied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA bench_copy")
        data = {}
        for table in tables:
            await conn.execute(
                f'CREATE TABLE bench_copy."{table}" (LIKE public."{table}" INCLUDING ALL)'
            )
            data[table] = [tuple(r) for r in await conn.fetch(f'SELECT * FROM public."{table}"')]
        rows = sum(len(v) for v in data.values())
        started = time.perf_counter()
        for table, records in data.items():
            if records:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        table, records=records, schema_name="bench_copy"
                    )
        return time.perf_counter() - started, rows
    finally:
        await conn.close()


def profiled(settings: Settings, bootstrap: str, dsn: str) -> str:
    """The rebuild again under cProfile: the top functions by own time."""
    profile = cProfile.Profile()
    profile.enable()
    asyncio.run(run_rebuild(settings, bootstrap, dsn))
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main(argv: list[str]) -> int:
    """Start Kafka and Postgres, append once, rebuild, COPY, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="delete the kept state first")
    parser.add_argument("--profile", action="store_true", help="also profile one rebuild")
    args = parser.parse_args(argv)
    if args.fresh:
        shutil.rmtree(STATE, ignore_errors=True)
    infra = infra_settings()
    ends = start_infra(infra)
    try:
        settings = Settings(
            kafka_bootstrap=ends.bootstrap, database_url=ends.dsn, topic_prefix="bench.",
            topic_partitions=PARTITIONS, app_id="paywatch-bench-replay",
        )  # fmt: skip
        ensure_topics(ends.bootstrap, topic_specs(settings), timeout=60.0)
        tables = rebuild.plan(["all"]).tables
        asyncio.run(reset(ends.dsn, tables))
        have = asyncio.run(stored(ends.bootstrap, settings))
        appended = None
        if have < args.events:
            appended = asyncio.run(append(ends.bootstrap, settings, args.events - have))
        events = asyncio.run(stored(ends.bootstrap, settings))
        started = time.perf_counter()
        last = asyncio.run(run_rebuild(settings, ends.bootstrap, ends.dsn))
        total = time.perf_counter() - started
        copy_s, rows = asyncio.run(copy_baseline(ends.dsn, tables))
        report(events, appended, total, last, copy_s, rows, settings)
        if args.profile:
            asyncio.run(reset(ends.dsn, tables))
            print("\n## cProfile of one more rebuild (top 25 by own time)\n")
            print("```\n" + profiled(settings, ends.bootstrap, ends.dsn) + "```")
    finally:
        stop_infra(infra)
    return 0


def report(
    events: int, appended: float | None, total: float, last: Any, copy_s: float, rows: int,
    settings: Settings,
) -> None:  # fmt: skip
    """The figures, as markdown for bench/RESULTS.md."""
    mine, base = events / total, events / copy_s
    print(f"\n## bench_replay ({platform.node()}, {os.cpu_count()} cores, {time.ctime()})\n")
    if appended is not None:
        print(f"appended {events:,} records in {appended:.1f} s (once; kept in {STATE})")
    print(f"projector_batch: {settings.projector_batch}; rows written: {rows:,}\n")
    print("| path | events | seconds | events/s |")
    print("|---|---:|---:|---:|")
    print(
        f"| rebuild (`paywatch replay --projection all`) | {events:,} | {total:.1f} | {mine:,.0f} |"
    )
    print(f"| plain COPY of the same {rows:,} rows | {events:,} | {copy_s:.1f} | {base:,.0f} |")
    print(f"\nratio rebuild / COPY: **{mine / base:.2f}** (goal >= 0.5)")
    print(f"total rebuild time: **{total:.1f} s** (goal <= 60 s); last report: {last}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
