"""kill -9 of the projector through a full-size backlog: is the effect in Postgres exactly once?

Run: ``.venv/bin/python bench/fault_projector.py [--events 100000] [--partitions 12]
[--batch 5000]``. Starts its own Kafka and Postgres (``.paywatch/bench-<pid>``, free ports),
appends ``--events`` payment events of four tenants with the saga's transitions and a few
re-sent copies (``tests/fault_projector.py``), then runs ``paywatch run projector`` (batches
of ``--batch``) through that harness's kills: SIGKILL when event_log holds 20 %, 40 % (and
the restarted projector killed as it asks to join the group, before it could write) and 60 %
of the events, each followed by a restart. Once every partition the projector reads is
checkpointed to its end it prints a Markdown report: input records without their rows, events
with two rows or a row written from a re-sent copy, rows no input explains, ``invoices`` and
``recovery_workflows`` against the project's pure folds of the input, column by column, and
partitions left behind. Exit status 1 when anything is wrong. PAYWATCH_* variables are
ignored. The short version runs in ``make test`` (tests/integration/test_fault_projector.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import _repo  # noqa: F401  (puts the repository root on sys.path)
from bench_ingest import own_stack, progress
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from tests.fault_projector import DEFAULT_KILLS, FaultReport, append_input, run_with_kills

SHOWN = 20
"""Findings listed per check (the counts are complete)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="payment events appended")
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument("--batch", type=int, default=5_000, help="the projector's batch size")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    args = parser.parse_args(argv)
    if args.events < 100 or args.partitions < 1 or not 1 <= args.batch <= 10_000:
        parser.error("--events >= 100, --partitions >= 1, 1 <= --batch <= 10000")
    return args


def report(args: argparse.Namespace, result: FaultReport, appended_s: float) -> str:
    """The Markdown report."""
    lines = [
        "# Projector kill -9 fault run (read models, exactly-once effect)",
        "",
        f"Command: `.venv/bin/python bench/fault_projector.py --events {args.events}"
        f" --partitions {args.partitions} --batch {args.batch}`",
        "",
        f"{result.events:,} payment events of {result.invoices:,} invoices (4 tenants) and"
        f" the saga's transitions, {result.records:,} records with the re-sent copies"
        f" ({args.partitions} partitions per topic, appended in {appended_s:.0f} s); the"
        f" projector run through the kills, then to every partition checkpointed, and the"
        f" checks done in {result.seconds:.0f} s.",
        "",
        *(f"* {kill}" for kill in result.kills),
        "",
        "| check | result |",
        "|---|---|",
        f"| input records without their row (lost) | {len(result.lost)} |",
        "| events with two rows, or a row written from a re-sent copy (duplicated effect) |"
        f" {len(result.duplicated)} |",
        f"| rows no input record explains | {len(result.unexplained)} |",
        f"| `invoices` columns differing from the fold of the input | "
        f"{len(result.invoice_mismatches)} |",
        f"| `recovery_workflows` columns differing from the fold of the input | "
        f"{len(result.workflow_mismatches)} |",
        f"| records checkpointed by the projector killed as it joined | {result.early_writes} |",
        f"| partitions not checkpointed to their end offset | {len(result.behind)} |",
        "",
        f"**{'PASS' if result.ok else 'FAIL'}**",
    ]
    for title, found in (
        ("Lost", result.lost),
        ("Duplicated", result.duplicated),
        ("Unexplained rows", result.unexplained),
        ("invoices vs fold", result.invoice_mismatches),
        ("recovery_workflows vs fold", result.workflow_mismatches),
        (
            "Behind (topic[partition]: checkpoint, end)",
            [f"{k}: {v}" for k, v in result.behind.items()],
        ),
    ):
        if found:
            lines += ["", f"{title} (first {min(SHOWN, len(found))} of {len(found)}):"]
            lines += [f"* {item}" for item in found[:SHOWN]]
    return "\n".join(lines)


async def measure(args: argparse.Namespace, settings: Settings) -> tuple[FaultReport, float]:
    """Append the backlog, then run the projector through the kills; (report, append s)."""
    bootstrap = str(settings.kafka_bootstrap)
    ensure_topics(bootstrap, topic_specs(settings), timeout=60.0)
    progress(f"appending {args.events} events and their transitions")
    start = time.monotonic()
    given = await append_input(settings, bootstrap, "fault", args.events)
    appended_s = time.monotonic() - start
    progress(f"running the projector through {len(DEFAULT_KILLS)} kills")
    log = settings.state_path / "projector.log"
    result = await run_with_kills(settings, bootstrap, given, log, timeout=args.timeout)
    return result, appended_s


def main(argv: list[str]) -> int:
    """Run the fault run; print the report; always stop what it started."""
    args = parse_args(argv)
    with own_stack() as (_state, base, ends):
        settings = base.model_copy(
            update={
                "kafka_bootstrap": ends.bootstrap,
                "database_url": SecretStr(ends.dsn),
                "topic_prefix": "fault.",
                "app_id": "paywatch-fault",
                "topic_partitions": args.partitions,
                "projector_batch": args.batch,
            }
        )
        result, appended_s = asyncio.run(measure(args, settings))
        print(report(args, result, appended_s))
        return 0 if result.ok else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
