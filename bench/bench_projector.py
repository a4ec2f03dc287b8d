"""Projector throughput: the real read-model writes vs a plain hand-written COPY-merge.

Run: ``.venv/bin/python bench/bench_projector.py [--invoices 6000] [--batch 5000] [--rounds 3]``.

1. Starts its own embedded Postgres (``.paywatch/bench-projector-<pid>``, a free port) and
   migrates it. No Kafka: the records are fed to the projector's write path directly as
   decoded records with Kafka coordinates (what the runner hands it after ``getmany`` and
   decoding), so the figure is the Postgres side of the projector.
2. Builds a realistic mix on 12 partitions per topic: invoices failing 1-4 times (Stripe-like
   declines and cards), a saga transition and a retry command per failure, a third of them
   recovered (success event + transition), 5 % duplicate deliveries.
3. Each round, from empty read-model tables: (a) paywatch: every batch through
   ``BatchWriter.write`` (one transaction per batch: advisory locks, each read model's rows
   with its lookups and folds, the checkpoints); (b) baseline: the exact rows paywatch wrote
   per batch (captured once beforehand), written by a minimal hand-written COPY-merge per
   table plus the checkpoints, one transaction per batch, no lookups and no Python fold.
   Rounds alternate, so both see the same noise; the report gives the medians, the ratio
   and whether both left byte-identical read models.

Falls back to the sink alone (``PostgresSink.write``) on trees without
``projections/writer.py``, so the same command measures an older checkout (the "before").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from paywatch.db import create_pool, migrate
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.projections.registry import READ_MODELS
from paywatch.projections.sink import PostgresSink
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    Frozen,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
)
from paywatch.settings import Settings

try:
    from paywatch.projections.writer import BatchWriter, Entry
except ImportError:  # a checkout before the poison-proof writer: the sink alone
    BatchWriter = None  # type: ignore[assignment,misc]

T0 = datetime(2026, 11, 2, tzinfo=UTC)
PARTITIONS = 12
PROJECTION = "bench"
TABLES = ("event_log", "failures", "invoices", "recovery_workflows", "recovery_log")
VISA = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
DECLINES = [("insufficient_funds", DeclineCategory.SOFT, "51")] * 6 + [
    ("do_not_honor", DeclineCategory.SOFT, "05"),
    ("expired_card", DeclineCategory.HARD, "54"),
    ("fraudulent", DeclineCategory.FRAUD, "59"),
]
Item = tuple[Frozen, Coords]

# The baseline: table -> (columns, key, conflict action); hand-written, independent of
# paywatch's CopyMerge. jsonb columns are staged as text and cast, as any binary COPY must.
_INVOICE = (
    "tenant invoice_ref provider customer_ref subscription_ref status amount_minor currency"
    " attempts last_decline_code last_decline_category last_decline_message last_decline_at"
    " first_failed_at last_failed_at recovered_at canceled_at last_event_at last_event_id"
).split()
_WORKFLOW = (
    "tenant invoice_ref state next_action next_action_at attempts_used attempts_allowed"
    " last_rule_id last_rule_edition last_rule_source last_reason last_cause_event_id"
    " last_transition_at last_topic last_partition last_offset started_at closed_at"
).split()
BASELINE: dict[str, tuple[list[str], str, str]] = {
    "event_log": (
        "event_id tenant type provider source_type invoice_ref customer_ref occurred_at topic"
        " partition offset payload".split(),
        "event_id",
        "DO NOTHING",
    ),
    "failures": (
        "event_id tenant invoice_ref provider customer_ref payment_ref occurred_at amount_minor"
        " currency attempt decline_code decline_category decline_network network_code"
        " advice_code decline_message card_brand card_last4 topic partition offset".split(),
        "event_id",
        "DO NOTHING",
    ),
    "recovery_log": (
        "topic partition offset tenant invoice_ref kind at from_state to_state command_id"
        " command_type due_at rule_id rule_edition rule_source reason cause_event_id"
        " payload".split(),
        'topic, partition, "offset"',
        "DO NOTHING",
    ),
    "recovery_workflows": (
        _WORKFLOW,
        "tenant, invoice_ref",
        "DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in _WORKFLOW[2:])
        + " WHERE (t.last_transition_at, t.last_topic, t.last_partition, t.last_offset)"
        " < (EXCLUDED.last_transition_at, EXCLUDED.last_topic, EXCLUDED.last_partition,"
        " EXCLUDED.last_offset)",
    ),
    "invoices": (
        _INVOICE,
        "tenant, invoice_ref",
        "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _INVOICE[2:]),
    ),
}
CHECKPOINT = (
    "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset)"
)


def q(column: str) -> str:
    """Quote a column name ("offset" is a keyword)."""
    return f'"{column}"'


# -- the workload -------------------------------------------------------------------------


class Log:
    """Assigns Kafka coordinates: partition by key, offsets in order per partition."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = defaultdict(int)

    def at(self, topic: str, key: str) -> Coords:
        """The coordinates of the next record of `key` on `topic`."""
        partition = zlib.crc32(key.encode()) % PARTITIONS
        offset = self.next[(topic, partition)]
        self.next[(topic, partition)] += 1
        return Coords(topic, partition, offset)


def invoice_story(rng: random.Random, n: int) -> list[tuple[float, Frozen]]:
    """One invoice's records, each with when it happens (seconds after T0)."""
    tenant, ref = f"tenant{n % 20}", f"in_{n:07d}"
    start = rng.uniform(0, 86_400)
    failures = rng.choices([1, 2, 3, 4], weights=[45, 30, 15, 10])[0]
    code, category, network = rng.choice(DECLINES)
    card = PaymentMethod(brand=rng.choice(["visa", "mastercard"]), last4=f"{n % 10_000:04d}")
    out: list[tuple[float, Frozen]] = []
    state: SagaState | None = None
    for attempt in range(1, failures + 1):
        t = start + (attempt - 1) * 86_400
        out.append((t, _payment(tenant, ref, n, attempt, t, code, category, network, card)))
        to = SagaState.retrying if attempt < failures else SagaState.exhausted
        out.append((t + 0.5, _move(tenant, ref, state, to, t + 0.5, attempt)))
        if attempt < failures:
            out.append((t + 0.6, _retry(tenant, ref, attempt, t + 0.6)))
        state = to
    if rng.random() < 1 / 3:
        t = start + failures * 86_400 - 3_600
        out.append((t, _payment(tenant, ref, n, 0, t, None, None, None, card)))
        out.append((t + 0.5, _move(tenant, ref, state, SagaState.recovered, t + 0.5, failures)))
    return out


def _payment(
    tenant: str, ref: str, n: int, attempt: int, t: float, code: str | None,
    category: DeclineCategory | None, network: str | None, card: PaymentMethod,
) -> PaymentEvent:  # fmt: skip
    failed = code is not None
    return PaymentEvent(
        event_id=f"{n:08d}-0000-4000-8000-{attempt:012d}",
        type=EventType.PAYMENT_FAILED if failed else EventType.PAYMENT_SUCCEEDED,
        tenant=tenant,
        provider="stripe",
        source_type="invoice.payment_failed" if failed else "invoice.paid",
        occurred_at=T0 + timedelta(seconds=t),
        customer_ref=f"cus_{n % 5000}",
        subscription_ref=f"sub_{n}",
        invoice_ref=ref,
        payment_ref=f"pi_{n}_{attempt}",
        amount_minor=1000 + n % 9000,
        currency="USD",
        attempt=attempt or None,
        decline=Decline(code=code, category=category, network_code=network, message="declined")
        if failed and category is not None
        else None,
        payment_method=card,
        paywatch_retry=attempt > 1,
    )


def _move(
    tenant: str, ref: str, src: SagaState | None, dst: SagaState, t: float, used: int
) -> SagaTransition:
    action = CommandType.RETRY_PAYMENT if dst is SagaState.retrying else None
    return SagaTransition(
        tenant=tenant,
        invoice_ref=ref,
        from_state=src,
        to_state=dst,
        cause_event_id=f"cause_{ref}_{used}",
        at=T0 + timedelta(seconds=t),
        rule=VISA,
        reason=f"{src} -> {dst}",
        attempts_used=used,
        attempts_allowed=4,
        next_action=action,
        next_action_at=T0 + timedelta(seconds=t + 86_400) if action else None,
    )


def _retry(tenant: str, ref: str, attempt: int, t: float) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"cmd_{ref}_{attempt}",
        type=CommandType.RETRY_PAYMENT,
        tenant=tenant,
        invoice_ref=ref,
        due_at=T0 + timedelta(seconds=t + 86_400),
        attempt=attempt + 1,
        reason="soft decline: retry in a day",
        rule=VISA,
        cause_event_id=f"cause_{ref}_{attempt}",
        issued_at=T0 + timedelta(seconds=t),
    )


def workload(invoices: int, seed: int) -> list[Item]:
    """Every record in time order with its coordinates; 5 % of events delivered twice."""
    rng = random.Random(seed)
    timed = [pair for n in range(invoices) for pair in invoice_story(rng, n)]
    timed.sort(key=lambda pair: pair[0])
    topics = {
        PaymentEvent: "payments.events",
        SagaTransition: "recovery.transitions",
        RecoveryCommand: "recovery.commands",
    }
    log, items = Log(), []
    for _, record in timed:
        key = f"{record.tenant}/{record.invoice_ref}"  # type: ignore[attr-defined]
        copies = 2 if isinstance(record, PaymentEvent) and rng.random() < 0.05 else 1
        for _ in range(copies):
            items.append((record, log.at(topics[type(record)], key)))
    return items


# -- the two writers ----------------------------------------------------------------------


async def _fail(entry: Any, exc: BaseException) -> None:
    raise RuntimeError(f"the bench workload must not dead-letter: {exc}") from exc


async def paywatch_round(
    pool: asyncpg.Pool, batches: Sequence[Sequence[Item]], models: Sequence[Any]
) -> None:
    """Every batch through the projector's write path (the writer, else the sink)."""
    if BatchWriter is not None:
        writer = BatchWriter(pool, PROJECTION, _fail, models=models)
        for batch in batches:
            await writer.write([Entry(record, at) for record, at in batch])
        return
    for batch in batches:
        sink = PostgresSink(PROJECTION, models)
        for record, at in batch:
            sink.add(record, at)
        async with pool.acquire() as conn:
            await sink.write(conn)


Captured = list[tuple[dict[str, list[tuple[Any, ...]]], list[tuple[str, str, int, int]]]]


async def capture(pool: asyncpg.Pool, batches: Sequence[Sequence[Item]]) -> Captured:
    """The rows each model writes per batch (one paywatch run), and each batch's checkpoints."""
    current: dict[str, list[tuple[Any, ...]]] = {}

    def recording(model: Any) -> Any:
        async def write(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
            current.setdefault(model.name, []).extend(rows)
            await model.write(conn, rows)

        return replace(model, write=write)

    models = [recording(m) for m in READ_MODELS]
    captured: Captured = []
    for batch in batches:
        current = {}
        await paywatch_round(pool, [batch], models)
        positions: dict[tuple[str, int], int] = {}
        for _, at in batch:
            positions[(at.topic, at.partition)] = at.offset + 1
        stage = {name: [_jsonable(row) for row in rows] for name, rows in current.items()}
        captured.append((stage, [(PROJECTION, t, p, o) for (t, p), o in positions.items()]))
    return captured


def _jsonable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(json.dumps(v) if isinstance(v, dict) else v for v in row)


async def baseline_round(pool: asyncpg.Pool, captured: Captured) -> None:
    """The captured rows by a plain COPY-merge per table, one transaction per batch."""
    async with pool.acquire() as conn:
        for name, (columns, _, _) in BASELINE.items():
            staged = ", ".join(
                f"{q(c)}::text AS {q(c)}" if c == "payload" else q(c) for c in columns
            )
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS base_{name} ON COMMIT DELETE ROWS AS"
                f" SELECT {staged}, 0::bigint AS ord FROM {name} WITH NO DATA"
            )
        for tables, checkpoints in captured:
            async with conn.transaction():
                for name, rows in tables.items():
                    await _baseline_merge(conn, name, rows)
                await conn.executemany(CHECKPOINT, checkpoints)


async def _baseline_merge(conn: asyncpg.Connection, name: str, rows: list[Any]) -> None:
    columns, key, action = BASELINE[name]
    staged = [(*row, i) for i, row in enumerate(rows)]  # a key twice: keep as executemany did
    await conn.copy_records_to_table(f"base_{name}", records=staged, columns=[*columns, "ord"])
    keep = "ord DESC" if action.startswith("DO UPDATE") else "ord"
    picked = ", ".join(f"{q(c)}::jsonb" if c == "payload" else q(c) for c in columns)
    await conn.execute(
        f"INSERT INTO {name} AS t ({', '.join(map(q, columns))})"
        f" SELECT DISTINCT ON ({key}) {picked} FROM base_{name} ORDER BY {key}, {keep}"
        f" ON CONFLICT ({key}) {action}"
    )


# -- rounds and report --------------------------------------------------------------------


async def empty(pool: asyncpg.Pool) -> None:
    """Empty the read models and the bench's checkpoints."""
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
    await pool.execute("DELETE FROM projection_checkpoints WHERE projection = $1", PROJECTION)


async def checksum(pool: asyncpg.Pool) -> str:
    """One md5 over every read-model row (timestamps of the write itself left out)."""
    parts = []
    for table in TABLES:
        parts.append(
            await pool.fetchval(
                f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
                f" FROM (SELECT to_jsonb(x) - 'updated_at' - 'recorded_at' AS r FROM {table} x) s"
            )
        )
    return ",".join(parts)


async def timed(label: str, run: Any, pool: asyncpg.Pool, records: int) -> tuple[float, str]:
    """Run one round from empty tables; (records/s, checksum)."""
    await empty(pool)
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    print(f"  {label:9} {records / seconds:>9,.0f} records/s ({seconds:.2f} s)", flush=True)
    return records / seconds, await checksum(pool)


async def bench(dsn: str, args: argparse.Namespace) -> None:
    """Build the workload, capture the baseline's rows, alternate the rounds, report."""
    items = workload(args.invoices, args.seed)
    batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
    pool = await create_pool(dsn, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn)
    await empty(pool)
    captured = await capture(pool, batches)
    rows = sum(len(r) for tables, _ in captured for r in tables.values())
    # The whole workload stays alive here, unlike in a projector that holds one batch: keep
    # the collector from rescanning it on every cycle (it would bill paywatch, which
    # allocates more, for objects the real process does not hold).
    gc.collect()
    gc.freeze()
    print(f"{len(items):,} records in {len(batches)} batches of {args.batch}; {rows:,} rows")
    ours, theirs, same = [], [], set()
    for n in range(args.rounds):
        print(f"round {n + 1}", flush=True)
        a = await timed(
            "paywatch", lambda: paywatch_round(pool, batches, READ_MODELS), pool, len(items)
        )
        b = await timed("baseline", lambda: baseline_round(pool, captured), pool, len(items))
        ours.append(a[0])
        theirs.append(b[0])
        same.add(a[1] == b[1])
    await pool.close()
    report(args, len(items), rows, ours, theirs, same == {True})


def report(
    args: argparse.Namespace, records: int, rows: int, ours: list[float], theirs: list[float],
    same: bool,
) -> None:  # fmt: skip
    """Print the Markdown report."""
    mine, base = statistics.median(ours), statistics.median(theirs)
    path = "BatchWriter.write" if BatchWriter is not None else "PostgresSink.write (before)"
    print(f"\n### Projector: {path} vs a plain COPY-merge of the same rows\n")
    print(f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()};")
    print(f"{records:,} records ({rows:,} rows) in batches of {args.batch}, {args.rounds} rounds")
    print("alternated, medians; Postgres embedded on this machine; no Kafka (decoded records);")
    print("the workload's objects frozen out of the garbage collector (gc.freeze()).\n")
    print("| writer | records/s | rows/s |\n|---|---:|---:|")
    print(f"| paywatch projector | {mine:,.0f} | {mine * rows / records:,.0f} |")
    print(f"| plain COPY-merge (baseline) | {base:,.0f} | {base * rows / records:,.0f} |")
    print(f"\nratio paywatch / baseline: **{mine / base:.2f}** (goal >= 0.5)")
    print(f"read models identical after both: {'yes' if same else 'NO'}")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str]) -> int:
    """Start Postgres, run the bench, stop Postgres."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    state = Path.cwd() / ".paywatch" / f"bench-projector-{os.getpid()}"
    settings = Settings(
        state_dir=state, embedded_pg_port=free_port(), kafka_bootstrap=None, database_url=None
    )
    pg = EmbeddedPostgres(settings)
    pg.start()
    try:
        asyncio.run(bench(pg.dsn, args))
    finally:
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
