"""kill -9 of the worker through a full-size backlog: do its stages lose anything?

Run: ``.venv/bin/python bench/fault_worker.py [--events 100000] [--partitions 6]``.
Starts its own Kafka (``.paywatch/bench-<pid>``, free ports; no Postgres: Stripe webhooks
need none), appends ``--events`` Stripe failures to ``webhooks.raw`` as ingest does, then
runs ``paywatch run worker`` (rocksdb tables) through the kills of ``tests/fault_worker.py``:
SIGKILL at 20 %, a second worker killed as it joins at 40 % (the running worker rebalances
with records buffered), SIGKILL at 60 % plus a kill of the restarted worker before it
joined. Prints a Markdown report: lost raw records and saga decisions, duplicated effects,
records re-sent after a kill (expected: at-least-once), partitions whose commit stayed
behind. Exit
status 1 when anything was lost or left behind. PAYWATCH_* variables are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import _repo  # noqa: F401  (puts the repository root on sys.path)
from bench_ingest import own_kafka, progress
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from tests.fault_worker import DEFAULT_KILLS, FaultReport, append_failures, run_with_kills

UNUSED_DSN = "postgresql://paywatch@127.0.0.1:9/unused"  # required by `run`, never connected


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="webhooks in the backlog")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    args = parser.parse_args(argv)
    if args.events < 100 or args.partitions < 1:
        parser.error("--events >= 100, --partitions >= 1")
    return args


def report(args: argparse.Namespace, result: FaultReport, appended_s: float) -> str:
    """The Markdown report."""
    lines = [
        "# Worker kill -9 fault run (normalize, saga and card-ledger stages)",
        "",
        f"{result.events} Stripe failures in webhooks.raw ({args.partitions} partitions,"
        f" appended in {appended_s:.0f} s); worker run with kills in {result.seconds:.0f} s.",
        "",
        *(f"* {kill}" for kill in result.kills),
        "",
        "| check | result |",
        "|---|---|",
        f"| raw records without their payments.events record (lost) | {len(result.lost)} |",
        f"| raw records with two different event ids | {len(result.split_effects)} |",
        f"| event ids on two raw records | {result.shared_ids} |",
        f"| records re-sent after a kill (same event id; idempotent) | {result.resent} |",
        f"| invoices without their saga transition (lost decision) | {len(result.undecided)} |",
        f"| events that caused two different transitions | {len(result.split_decisions)} |",
        f"| transitions re-sent after a kill (identical; idempotent) | "
        f"{result.transitions_resent} |",
        f"| partitions the worker reads not committed to their end | {len(result.behind)} |",
        "",
        f"**{'PASS' if result.ok else 'FAIL'}**",
    ]
    if result.lost:
        lines.append(f"\nFirst lost (partition, offset): {result.lost[:20]}")
    if result.undecided:
        lines.append(f"\nFirst undecided invoices: {result.undecided[:20]}")
    if result.behind:
        lines.append(f"\nBehind (topic[partition]: committed, end): {result.behind}")
    return "\n".join(lines)


async def measure(
    args: argparse.Namespace, settings: Settings, bootstrap: str
) -> tuple[FaultReport, float]:
    """Append the backlog, then run the worker through the kills; (report, append seconds)."""
    ensure_topics(bootstrap, topic_specs(settings), timeout=60.0)
    progress(f"appending {args.events} webhooks")
    start = time.monotonic()
    expected = await append_failures(settings, bootstrap, "bench", args.events)
    appended_s = time.monotonic() - start
    progress(f"running the worker through {len(DEFAULT_KILLS)} kills")
    log = settings.state_path / "worker.log"
    result = await run_with_kills(settings, bootstrap, expected, log, timeout=args.timeout)
    return result, appended_s


def main(argv: list[str]) -> int:
    """Run the fault run; print the report; always stop what it started."""
    args = parse_args(argv)
    with own_kafka() as (state, kafka):
        settings = Settings(
            env="dev",
            state_dir=state / "run",
            kafka_bootstrap=kafka.bootstrap,
            database_url=SecretStr(UNUSED_DSN),
            topic_prefix="fault.",
            app_id="paywatch-bench-fault",
            topic_partitions=args.partitions,
        )
        result, appended_s = asyncio.run(measure(args, settings, kafka.bootstrap))
        print(report(args, result, appended_s))
        return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
