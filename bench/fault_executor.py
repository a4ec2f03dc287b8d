"""Executor fault run, full size: kill -9 mid-stream, then check every effect against the input.

Run: ``.venv/bin/python bench/fault_executor.py [--commands 100000] [--rate 2000]``.
Starts its own Kafka and Postgres (``.paywatch/bench-<pid>``), feeds ``--commands`` due
commands (half soft declines that always recover, half hard that never do, plus a few
poison records: undecodable bytes) at ``--rate``/s into recovery.commands while
``python -m paywatch run executor`` runs, and kills it with SIGKILL at 20 %, 40 % and
60 % of the journal, and once more right after the 40 % restart (subscribed, not yet in
the group, which still waits for the killed member). Each kill is followed by a restart.
Then, once the group committed every offset, it checks: every command journaled once;
every retry's outcome in payments.events, any copy appended again (a kill between the
broker ack and the journal commit) identical to the first; journal outcome = event type;
every poison record in recovery.commands.dlq with its coordinates; no partition behind.
Prints a Markdown report; exit 1 if a check fails. The short version runs in ``make test``
(tests/integration/test_executor_batches.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import _repo  # noqa: F401 (puts the repository root on sys.path for tests.*)
import asyncpg
from bench_ingest import BENCH_ROOT, bench_settings, progress, seed_jars, sweep_stale
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.clients import reliable_producer
from paywatch.kafka.codec import make_codec
from paywatch.ops.infra import start_infra, stop_infra
from paywatch.schemas.models import DeadLetter, DeclineCategory, EventType, PaymentEvent
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from tests.integration.test_executor import SUCCESS, all_committed, command
from tests.kafka_helpers import topic_records
from tests.procs import settings_env
from tests.procs import stop as stop_proc

POISON_EVERY = 10_000
KILLS = (0.2, 0.4, 0.6)


def spawn(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = settings_env(settings)
    env.update(PAYWATCH_SIMULATOR_SEED="5", PAYWATCH_SIMULATOR_SUCCESS=SUCCESS)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "paywatch", "run", "executor"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


async def feed(
    settings: Settings, bootstrap: str, total: int, rate: int, tenant: str
) -> list[tuple[int, int]]:
    """Append the commands at `rate`/s; the coordinates of the poison records."""
    codec, topic = make_codec(settings), settings.topic("recovery.commands")
    producer = reliable_producer(bootstrap, client_id="fault-feed")
    await producer.start()
    poison = []
    try:
        started, chunk = time.monotonic(), max(1, rate // 10)
        for start in range(0, total, chunk):
            futures = []
            for i in range(start, min(total, start + chunk)):
                if i % POISON_EVERY == POISON_EVERY - 1:
                    poison.append(await producer.send(topic, b"\x00poison", b"poison"))
                c = command(
                    tenant,
                    f"k{i}",
                    due_at=datetime.now(UTC),
                    invoice=f"in_{i % 997}",
                    category=DeclineCategory.SOFT if i % 2 else DeclineCategory.HARD,
                )
                futures.append(
                    await producer.send(
                        topic, codec.encode(c, topic), f"{tenant}/{c.invoice_ref}".encode()
                    )
                )
            await asyncio.gather(*futures)
            ahead = started + (start + chunk) / rate - time.monotonic()
            await asyncio.sleep(max(0.0, ahead))  # pacing of the stream
        return [(m.partition, m.offset) for m in await asyncio.gather(*poison)]
    finally:
        await producer.stop()


async def journaled(pool: asyncpg.Pool, tenant: str) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM executed_commands WHERE tenant = $1", tenant)
    )


async def wait_for(probe: Callable[[], Awaitable[bool]], what: str, within: float = 600) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)  # poll interval of a deadline-bound wait


async def run(args: argparse.Namespace, settings: Settings, state: Path) -> tuple[list[str], bool]:
    tenant, log = "fault", state / "executor.log"
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(), min_size=1, max_size=2
    )
    bootstrap = str(settings.kafka_bootstrap)
    proc, spawned = spawn(settings, log), 1
    feeder = asyncio.create_task(feed(settings, bootstrap, args.commands, args.rate, tenant))
    notes, started = [], time.monotonic()

    async def kill(why: str) -> None:
        nonlocal proc, spawned
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        count = await journaled(pool, tenant)
        notes.append(f"SIGKILL {why} at {count:,} journaled, t={time.monotonic() - started:.0f} s")
        proc, spawned = spawn(settings, log), spawned + 1

    try:
        for share in KILLS:
            at_least = int(share * args.commands)
            probe = functools.partial(_count_at_least, pool, tenant, at_least)
            await wait_for(lambda: probe(proc), f"{share:.0%}")  # noqa: B023 (awaited here)
            await kill(f"at {share:.0%}")
            if share == KILLS[1]:  # the restart, before it joined the group
                await wait_for(lambda: _subscribed(log, proc, spawned), "restart subscribed")
                await kill("right after a restart (subscribed, not yet in the group)")
        poison = await feeder
        want = args.commands
        await wait_for(lambda: _done(pool, tenant, want, settings, bootstrap), "drained", 900)
        drained = time.monotonic() - started
        ok, checks = await verify(settings, bootstrap, pool, tenant, want, poison)
    finally:
        stop_proc(proc)
        await pool.close()
    return [
        *notes,
        f"all {args.commands:,} journaled and committed at t={drained:.0f} s",
        *checks,
    ], ok


async def _count_at_least(
    pool: asyncpg.Pool, tenant: str, n: int, proc: subprocess.Popen[bytes]
) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"executor exited with {proc.returncode}")
    return await journaled(pool, tenant) >= n


async def _subscribed(log: Path, proc: subprocess.Popen[bytes], spawned: int) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"executor exited with {proc.returncode}")
    text = await asyncio.to_thread(log.read_text)
    return text.count("executor consuming") >= spawned


async def _done(
    pool: asyncpg.Pool, tenant: str, want: int, settings: Settings, bootstrap: str
) -> bool:
    return await journaled(pool, tenant) >= want and await all_committed(settings, bootstrap)


async def verify(
    settings: Settings,
    bootstrap: str,
    pool: asyncpg.Pool,
    tenant: str,
    want: int,
    poison: list[tuple[int, int]],
) -> tuple[bool, list[str]]:
    codec = make_codec(settings)
    rows = {
        r["command_id"]: r["outcome"]
        for r in await pool.fetch(
            "SELECT command_id, outcome FROM executed_commands WHERE tenant = $1", tenant
        )
    }
    copies: dict[str, list[PaymentEvent]] = defaultdict(list)
    events_topic = settings.topic("payments.events")
    for r in await topic_records(bootstrap, events_topic):
        event = codec.decode(r.value, PaymentEvent, events_topic)
        copies[event.raw.provider_event_id if event.raw else ""].append(event)
    dlq = settings.topic("recovery.commands.dlq")
    letters = [codec.decode(r.value, DeadLetter, dlq) for r in await topic_records(bootstrap, dlq)]
    identical = all(all(e == v[0] for e in v) for v in copies.values())
    typed = all(
        (v[0].type is EventType.PAYMENT_SUCCEEDED) == (rows.get(k) == "succeeded")
        for k, v in copies.items()
    )
    twice = sum(len(v) - 1 for v in copies.values())
    dead = {(x.source_partition, x.source_offset) for x in letters}
    checks = {
        f"journal: {len(rows):,} rows for {want:,} commands": set(rows)
        == {f"k{i}" for i in range(want)},
        f"outcomes: {len(copies):,} commands with an outcome": set(copies) == set(rows),
        f"outcome records appended twice (identical): {twice}": identical,
        "journal outcome = event type for every command": typed,
        f"poison: {len(poison)} records, {len(letters)} dead letters, all found": dead
        >= set(poison),
        "every partition committed to its end": await all_committed(settings, bootstrap),
    }
    return all(checks.values()), [
        f"{'ok' if ok else 'FAILED'}: {text}" for text, ok in checks.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()
    sweep_stale()
    state = BENCH_ROOT / f"bench-{os.getpid()}"
    base = bench_settings(state, set())
    try:
        seed_jars(base)
        ends = start_infra(base)
        settings = base.model_copy(
            update={
                "kafka_bootstrap": ends.bootstrap,
                "database_url": SecretStr(ends.dsn),
                "topic_prefix": "fault.",
                "app_id": "paywatch-fault",
                "topic_partitions": 12,
            }
        )
        ensure_topics(ends.bootstrap, topic_specs(settings), timeout=60.0)
        progress(f"{args.commands:,} commands at {args.rate}/s, SIGKILL at 20/40/60 %")
        lines, ok = asyncio.run(run(args, settings, state))
    finally:
        stop_infra(base)
        shutil.rmtree(state, ignore_errors=True)
    print("## Executor fault run (kill -9)\n")
    print(
        "Command: `.venv/bin/python bench/fault_executor.py"
        f" --commands {args.commands} --rate {args.rate}`\n"
    )
    print("\n".join(f"* {line}" for line in lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
