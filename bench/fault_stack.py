"""kill -9 of worker, projector and executor together through a full-size stream: lost? twice?

Run: ``.venv/bin/python bench/fault_stack.py [--events 100000] [--rate 100] [--partitions 6]
[--batch 5000] [--logs DIR]``. Starts its own Kafka and Postgres (``.paywatch/bench-<pid>``,
free ports), then runs the ``tests/fault_stack.py`` harness: ``--events`` Stripe failures
appended to ``webhooks.raw`` as ingest does, at ``--rate`` per second, while ``paywatch run
worker`` (rocksdb tables), ``projector`` (batches of ``--batch``) and ``executor`` run on it
with the saga clock at one day per second (dunning, escalation and the 30-day deadline of
every saga fall inside the run, so the executor has commands and the timer loop fires). All
three are SIGKILLed when the canonical events cover 20 %, 40 % (and the restarted worker
again as it asks to join the group) and 60 % of the input, each restarted at once. Once
every saga closed and every group is at its end it prints a Markdown report: raw records
without an event, invoices without a decision or never closed, records without their read-
model rows, commands never journaled; duplicated effects (two event ids for one record,
two transitions for one cause from one state, one step under two command ids, a command
executed twice, duplicated rows); ``invoices`` and ``recovery_workflows`` against the
projector harness's pure folds of the topics; dead letters; partitions left behind. Exit
status 1 when anything is wrong. PAYWATCH_* variables are ignored. The short version runs in
``make test`` (tests/integration/test_fault_stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import _repo  # noqa: F401  (puts the repository root on sys.path)
from bench_ingest import own_stack, progress
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from tests.fault_stack import DEFAULT_KILLS, StackReport, run_with_kills, stack_settings

SHOWN = 20
"""Findings listed per check (the counts are complete)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="Stripe failures fed")
    parser.add_argument("--rate", type=float, default=100.0, help="failures fed per second")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--batch", type=int, default=5_000, help="the projector's batch size")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    args = parser.parse_args(argv)
    if args.events < 100 or args.rate <= 0 or args.partitions < 1:
        parser.error("--events >= 100, --rate > 0, --partitions >= 1")
    if not 1 <= args.batch <= 10_000:
        parser.error("1 <= --batch <= 10000")
    return args


def report(args: argparse.Namespace, result: StackReport, settings: Settings) -> str:
    """The Markdown report."""
    problems = result.problems()
    rows = [
        ("webhooks.raw records without a canonical event (lost)", len(result.lost_raw)),
        ("invoices without a saga transition (lost decision)", len(result.undecided)),
        ("sagas never closed (a lost timer)", len(result.unclosed)),
        ("records without their read-model row (lost)", len(result.lost_rows)),
        ("commands on recovery.commands never journaled (lost)", len(result.lost_commands)),
        ("raw records with two different event ids", len(result.split_effects)),
        ("event ids on two raw records", result.shared_ids),
        ("causes moving one saga from one state to two states", len(result.split_decisions)),
        ("one invoice's step issued under two command ids", len(result.double_commands)),
        ("commands the executor carried out twice", len(result.executed_twice)),
        ("events with two rows or a row from a re-sent copy", len(result.duplicated_rows)),
        ("rows (read models, journal) no record explains", len(result.unexplained)),
        ("`invoices` columns differing from the fold", len(result.invoice_mismatches)),
        ("`recovery_workflows` columns differing from the fold", len(result.workflow_mismatches)),
        ("dead letters (the input has no poison)", sum(result.dead_letters.values())),
        ("partitions not at their end (all three groups)", len(result.behind)),
    ]
    lines = [
        "# Whole-stack kill -9 fault run (worker, projector, executor)",
        "",
        f"Command: `.venv/bin/python bench/fault_stack.py --events {args.events}"
        f" --rate {args.rate:g} --partitions {args.partitions} --batch {args.batch}`",
        "",
        f"{result.events:,} Stripe failures fed at {args.rate:g}/s ({args.partitions} partitions"
        f" per topic), saga clock x{settings.time_scale:g} from {settings.time_anchor};"
        f" run, settle and checks in {result.seconds:.0f} s.",
        "",
        *(f"* {kill}" for kill in result.kills),
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {text} | {count} |" for text, count in rows),
        "",
        "Produced: "
        + ", ".join(f"{name.replace('_', ' ')} {n:,}" for name, n in result.volume.items())
        + ". Re-sent after the kills (same event id, move or command id; idempotent): "
        + ", ".join(f"{topic} {n:,}" for topic, n in result.resent.items())
        + ".",
        "",
        f"**{'PASS' if not problems else 'FAIL'}**",
    ]
    for finding in result.findings(SHOWN):
        lines += ["", f"* {finding}"]
    if result.log_notes:
        lines += ["", f"Worker log, hole refills ({len(result.log_notes)} lines):", ""]
        lines += [f"    {line}" for line in result.log_notes[:SHOWN]]
    return "\n".join(lines)


async def measure(args: argparse.Namespace, settings: Settings, logs: Path) -> StackReport:
    """Run the harness on the bench's stack."""
    bootstrap = str(settings.kafka_bootstrap)
    ensure_topics(bootstrap, topic_specs(settings), timeout=60.0)
    progress(
        f"feeding {args.events:,} failures at {args.rate:g}/s through worker, projector and"
        f" executor; {len(DEFAULT_KILLS)} kills; logs in {logs}"
    )
    return await run_with_kills(
        settings, bootstrap, "fault", args.events, args.rate, logs, timeout=args.timeout
    )


def main(argv: list[str]) -> int:
    """Run the fault run; print the report; always stop what it started."""
    args = parse_args(argv)
    started = time.monotonic()
    with own_stack() as (state, base, ends):
        logs = (args.logs or state / "logs").resolve()
        settings = stack_settings(
            base.model_copy(
                update={
                    "kafka_bootstrap": ends.bootstrap,
                    "database_url": SecretStr(ends.dsn),
                    "topic_prefix": "fault.",
                    "app_id": "paywatch-fault",
                    "topic_partitions": args.partitions,
                    "projector_batch": args.batch,
                    "state_dir": state / "run",
                }
            )
        )
        result = asyncio.run(measure(args, settings, logs))
        print(report(args, result, settings))
        progress(f"done in {time.monotonic() - started:.0f} s")
        return 0 if result.ok else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
