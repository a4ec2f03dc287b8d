"""The worker alone on a backlog: how many webhooks/s one worker process turns into decisions.

Run: ``.venv/bin/python bench/bench_worker.py [--events 30000] [--partitions 12] [--profile]``.
Starts its own Kafka (``.paywatch/bench-<pid>``, free ports; no Postgres: Stripe webhooks
need none), appends ``--events`` Stripe ``invoice.payment_failed`` deliveries to
``webhooks.raw`` exactly as ingest does (``tests/fault_worker.append_failures``), then starts
``paywatch run worker`` (rocksdb tables, as in production) and times it until every raw
record has its canonical event on ``payments.events`` and every invoice its saga transition
on ``recovery.transitions``. Reports webhooks/s through each stage and the worker's CPU
seconds per webhook (user + system of the process, from start to the last transition, so
start-up is included and the figure is pessimistic). ``--profile`` runs the worker under
``py-spy record`` (if installed) and writes a speedscope profile next to the report.
PAYWATCH_* variables of the shell are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _repo  # noqa: F401  (puts the repository root on sys.path)
import psutil
from bench_ingest import own_kafka, progress
from fault_worker import UNUSED_DSN
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from tests.fault_worker import EventsTail, TransitionsTail, append_failures
from tests.procs import settings_env, stop

DRIFT = re.compile(r"woke up too late, with a drift of \+([0-9.]+)")
"""Faust's Monitor.sampler logs when the event loop let it run late (only past 0.3 s)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000, help="webhooks in the backlog")
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker")
    args = parser.parse_args(argv)
    if args.events < 100 or args.partitions < 1:
        parser.error("--events >= 100, --partitions >= 1")
    return args


def _cpu(proc: psutil.Process, profiled: bool) -> float:
    """User + system CPU seconds of the worker so far (under py-spy: its child, not py-spy)."""
    try:
        target = proc.children()[0] if profiled else proc
    except IndexError:
        return 0.0
    t = target.cpu_times()
    return float(t.user + t.system)


async def measure(args: argparse.Namespace, settings: Settings, out: Path) -> list[str]:
    """Append the backlog, run the worker through it; the report lines."""
    ensure_topics(settings.kafka_bootstrap or "", topic_specs(settings), timeout=60.0)
    progress(f"appending {args.events} webhooks")
    await append_failures(settings, settings.kafka_bootstrap or "", "bench", args.events)
    command = [sys.executable, "-m", "paywatch", "run", "worker"]
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    profile = out / "worker-profile.json"
    profiled = bool(args.profile and spy)
    if profiled and spy is not None:
        command = [spy, "record", "-f", "speedscope", "-o", str(profile), "-r", "50", "--"]
        command += [sys.executable, "-m", "paywatch", "run", "worker"]
    log = out / "worker.log"
    bootstrap = settings.kafka_bootstrap or ""
    async with (
        EventsTail(settings, bootstrap) as events,
        TransitionsTail(settings, bootstrap) as decisions,
    ):
        progress("running the worker")
        with log.open("ab") as sink:
            proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                command, stdout=sink, stderr=subprocess.STDOUT, env=settings_env(settings)
            )
        started = time.monotonic()
        ps = psutil.Process(proc.pid)
        first_event = normalized_at = decided_at = None
        cpu = 0.0
        try:
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                covered = await events.poll()
                decided = await decisions.poll()
                cpu = max(cpu, _cpu(ps, profiled))
                now = time.monotonic()
                if covered and first_event is None:
                    first_event = now
                if covered >= args.events and normalized_at is None:
                    normalized_at = now
                if decided >= args.events:
                    decided_at = now
                    break
        finally:
            if profiled:  # py-spy writes its profile on SIGINT, then stops the worker
                proc.send_signal(signal.SIGINT)
                proc.wait(120)
            stop(proc)
    if decided_at is None or normalized_at is None or first_event is None:
        return [f"**Did not finish within {args.timeout:.0f} s.**"]
    ready = first_event - started
    lines = [
        "# The worker on a backlog",
        "",
        f"{args.events} Stripe failures in webhooks.raw ({args.partitions} partitions); one"
        " `paywatch run worker` (rocksdb tables) from start until every invoice had its saga"
        " transition.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| start to first canonical event (s) | {ready:.1f} |",
        f"| canonical events/s (first event to the last) | "
        f"{args.events / max(normalized_at - first_event, 1e-9):.0f} |",
        f"| webhooks decided/s (first event to the last transition) | "
        f"{args.events / max(decided_at - first_event, 1e-9):.0f} |",
        f"| worker CPU s, start to last transition | {cpu:.1f} |",
        f"| **worker CPU ms per webhook** (start-up included) | "
        f"**{cpu * 1000 / args.events:.2f}** |",
    ]
    drifts = [float(d) for d in DRIFT.findall(log.read_text(errors="replace"))]
    lines.append(
        f"| event loop: Faust's 1 s sampler late by more than 0.3 s (times; worst s) | "
        f"{len(drifts)}; {max(drifts, default=0.0):.2f} |"
    )
    if args.profile:
        lines.append(f"\nProfile: {profile}" if spy else "\npy-spy not installed: no profile")
    return lines


def main(argv: list[str]) -> int:
    """Run the measurement; print the report; always stop what it started."""
    args = parse_args(argv)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-worker-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    with own_kafka() as (state, kafka):
        settings = Settings(
            env="dev",
            state_dir=state / "run",
            kafka_bootstrap=kafka.bootstrap,
            database_url=SecretStr(UNUSED_DSN),
            topic_prefix="bw.",
            app_id="paywatch-bench-worker",
            topic_partitions=args.partitions,
            table_store="rocksdb://",
            worker_metrics_port=0,
        )
        print("\n".join(asyncio.run(measure(args, settings, out))))
        print(f"\nWorker log: {out / 'worker.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
