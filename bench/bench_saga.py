"""Saga agent on real Kafka: events/s vs a plain aiokafka loop, memory, restart-to-ready.

Run: ``.venv/bin/python bench/bench_saga.py [--events 20000] [--rounds 3] [--sagas 1000000]``.
Starts its own Kafka (``.paywatch/bench-<pid>``, free ports; no Postgres: the worker
never opens its pool without thin webhooks), then:

1. Throughput, ``--rounds`` alternating rounds. Each pre-produces ``--events`` payment
   events (``saga_workload.events``) to fresh topics and runs either a real
   ``python -m paywatch run worker`` (rocksdb tables, as in production) until its group
   committed them all, or the loop of ``saga_baseline`` in this process. Events/s =
   events / (last - first output record timestamp), the decisions' own send times.
2. Memory: RSS of an idle worker, of each worker after its round (open sagas counted
   in the saga table's changelog), and of the worker holding the synthetic sagas of 3.
3. Restart: ``--sagas`` open sagas (``saga_workload.changelog``) written to the saga
   table's changelog; a worker with an empty state dir (cold), then again on the same
   state dir (warm), each timed from process start to its ``timer index rebuilt`` line.

Prints a Markdown report on stdout (progress on stderr); stops what it started by pid and
deletes its state. About 15 minutes by default (part 3 at 1M sagas: about 8); ``--sagas 0``
skips part 3. PAYWATCH_* variables of the shell are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import saga_baseline
import saga_workload
from bench_ingest import (
    BENCH_ROOT,
    REPO,
    cpu_model,
    free_port,
    kafka_version,
    progress,
    seed_jars,
    stop,
    sweep_stale,
)
from pydantic import SecretStr
from saga_report import Restarts, Round, Start, report
from saga_worker import Worker, committed, dir_size, records

from paywatch.kafka.admin import admin_client, ensure_topics
from paywatch.kafka.codec import make_codec
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.recovery.shell import saga_of
from paywatch.schemas import topics
from paywatch.schemas.topics import (
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_TIMERS,
    RECOVERY_TRANSITIONS,
    TopicSpec,
    topic_specs,
)
from paywatch.settings import Settings

UNUSED_DSN = "postgresql://paywatch@127.0.0.1:9/unused"  # required by `run`, never connected
OPEN = saga_baseline.OPEN_STATES
TABLES = topics.TABLES  # the changelogs the worker keeps
SEED = 7


@dataclass
class Bench:
    """The bench's Kafka and the worker processes it started."""

    state: Path
    settings: Settings
    bootstrap: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


# -- stack and settings ----------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3, help="faust+plain rounds")
    parser.add_argument("--sagas", type=int, default=1_000_000,
                        help="open sagas for the restart test (0: skip it)")
    parser.add_argument("--ready-timeout", type=float, default=900.0,
                        help="seconds a worker may take to be ready on the synthetic state")
    args = parser.parse_args(argv)
    if args.events < 100 or args.rounds < 1 or args.sagas < 0:
        parser.error("--events >= 100, --rounds >= 1, --sagas >= 0")
    return args


def start_kafka(bench: Bench) -> None:
    """The bench's own broker (its jars hard-linked from the dev stack or the tests)."""
    seed_jars(bench.settings)
    kafka = EmbeddedKafka(bench.settings)
    kafka.start()
    bench.bootstrap = kafka.bootstrap


def run_settings(bench: Bench, kind: str) -> Settings:
    """Settings of one run: its own topic prefix, app id and state dir."""
    tag = f"{kind}{uuid.uuid4().hex[:6]}"
    return Settings(
        env="dev", state_dir=bench.state / tag, kafka_bootstrap=bench.bootstrap,
        database_url=SecretStr(UNUSED_DSN), topic_prefix=f"{tag}.",
        app_id=f"paywatch-bench-{tag}",
    )


def sagas_changelog(s: Settings) -> str:
    """The saga table's changelog topic, as Faust names it."""
    return f"{s.app_id}-{s.topic_prefix}recovery-sagas-changelog"


def create_topics(bench: Bench, s: Settings) -> None:
    """The run's topics, and the worker's table changelogs as Faust creates them.

    Pre-creating the changelogs works around a start-up race of a worker's very first
    start: Faust creates them a few ms before its consumer joins the group, the consumer's
    metadata may not list the last one yet ("Ignoring missing topic"), and then every
    write to that table crashes the agent with PartitionsMismatch (0 partitions) until a
    metadata refresh. See bench/README.md.
    """
    ensure_topics(bench.bootstrap, topic_specs(s), timeout=60.0)
    changelogs = [
        TopicSpec(f"{s.app_id}-{s.topic_prefix}{table}-changelog", s.topic_partitions,
                  {"cleanup.policy": "compact"})
        for table in TABLES
    ]
    ensure_topics(bench.bootstrap, changelogs, timeout=60.0)


def clean_up(bench: Bench, s: Settings) -> None:
    """Delete a run's topics and state dir (keeps the broker and the disk small)."""
    admin = admin_client(bench.bootstrap)
    names = [n for n in admin.list_topics(timeout=30).topics
             if n.startswith((s.topic_prefix, f"{s.app_id}-"))]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=60).values():
            fut.result()
    shutil.rmtree(s.state_path, ignore_errors=True)


# -- part 1 and 2: throughput, memory ----------------------------------------------------


def prepare_round(bench: Bench, kind: str, count: int) -> Settings:
    """A run's topics with `count` events pre-produced to its payments.events."""
    s = run_settings(bench, kind)
    create_topics(bench, s)
    topic = s.topic(PAYMENTS_EVENTS)
    items = saga_workload.events(count, SEED, saga_workload.now())
    saga_workload.produce(bench.bootstrap, topic, saga_workload.event_records(
        items, make_codec(s), topic, s.topic_partitions))
    return s


def outputs(bench: Bench, s: Settings, kind: str, open_sagas: int, rss: int | None,
            count: int) -> Round:
    """The round's figures from the records its decisions sent."""
    counts: dict[str, int] = {}
    stamps: list[int] = []
    for name in (RECOVERY_TRANSITIONS, RECOVERY_COMMANDS):
        found = [ts for _, _, ts in records(bench.bootstrap, [s.topic(name)])]
        counts[name] = len(found)
        stamps += found
    seconds = (max(stamps) - min(stamps)) / 1000 if stamps else 0.0
    return Round(kind, count, seconds, counts[RECOVERY_TRANSITIONS], counts[RECOVERY_COMMANDS],
                 open_sagas, rss)


def open_in_changelog(bench: Bench, topic: str) -> int:
    """Saga entries whose last changelog value is an open saga."""
    last: dict[bytes, bytes] = {}
    for key, value, _ in records(bench.bootstrap, [topic]):
        last[key] = value
    sagas = (saga_of(v) for v in last.values() if v)
    return sum(1 for s in sagas if s is not None and s.status is not None and s.status in OPEN)


def faust_round(bench: Bench, count: int) -> Round:
    """Pre-produced events through a real worker, until its group committed them all."""
    s = prepare_round(bench, "f", count)
    worker = Worker(s, "worker", bench.procs)
    deadline = time.monotonic() + max(300.0, count / 20)
    topic, parts = s.topic(PAYMENTS_EVENTS), s.topic_partitions
    while committed(bench.bootstrap, s.app_id, topic, parts) < count:
        worker.alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not commit {count} events in time ({worker.log})")
        time.sleep(1.0)
    rss = worker.rss()
    worker.stop()
    result = outputs(bench, s, "faust", open_in_changelog(bench, sagas_changelog(s)), rss, count)
    clean_up(bench, s)
    return result


def plain_round(bench: Bench, count: int) -> Round:
    """The same events through the aiokafka baseline loop, in this process."""
    s = prepare_round(bench, "p", count)
    topics = saga_baseline.Topics(
        s.topic(PAYMENTS_EVENTS), s.topic(RECOVERY_TIMERS), s.topic(RECOVERY_COMMANDS),
        s.topic(RECOVERY_TRANSITIONS))
    open_sagas = asyncio.run(saga_baseline.run(
        bench.bootstrap, make_codec(s), topics, f"{s.app_id}-plain", count))
    result = outputs(bench, s, "plain", open_sagas, None, count)
    clean_up(bench, s)
    return result


def idle_rss(bench: Bench) -> int:
    """RSS of a worker with empty tables, 5 s after it is ready."""
    s = run_settings(bench, "i")
    create_topics(bench, s)
    worker = Worker(s, "worker", bench.procs)
    worker.wait_ready(0, 120.0)
    time.sleep(5.0)
    rss = worker.rss()
    worker.stop()
    clean_up(bench, s)
    return rss


# -- part 3: restart with many open sagas ------------------------------------------------


def synthesize(bench: Bench, s: Settings, sagas: int) -> Restarts:
    """Write `sagas` open-saga entries to the saga table's changelog, as Faust would."""
    create_topics(bench, s)
    begin = time.monotonic()
    size = saga_workload.produce(bench.bootstrap, sagas_changelog(s), saga_workload.changelog(
        sagas, s.topic_partitions, saga_workload.now()))
    return Restarts(sagas, size, time.monotonic() - begin)


def timed_start(bench: Bench, s: Settings, name: str, sagas: int, timeout: float) -> Start:
    """Start a worker, time it to ready, sample its RSS, stop it."""
    worker = Worker(s, name, bench.procs)
    seconds, line, early = worker.wait_ready(int(sagas * 0.99), timeout)
    time.sleep(2.0)
    rss = worker.rss()
    return Start(seconds, line, rss, worker.stop(), dict(worker.phases), early)


def restarts(bench: Bench, args: argparse.Namespace) -> Restarts:
    """Part 3: cold start on an empty state dir, then a warm restart on the same one."""
    s = run_settings(bench, "s")
    progress(f"writing {args.sagas} open sagas to {sagas_changelog(s)}")
    result = synthesize(bench, s, args.sagas)
    progress(f"changelog written ({result.changelog_bytes / 1e6:.0f} MB); cold start")
    result.starts.append(timed_start(bench, s, "cold", args.sagas, args.ready_timeout))
    result.store_bytes = dir_size(s.state_path / "worker")
    progress("warm restart")
    result.starts.append(timed_start(bench, s, "warm", args.sagas, args.ready_timeout))
    clean_up(bench, s)
    return result


# -- report ------------------------------------------------------------------------------


def command_line(argv: list[str]) -> str:
    """How this bench was invoked, relative to the repo."""
    exe = Path(sys.executable)
    python = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else str(exe)
    return shlex.join([python, "bench/bench_saga.py", *argv])


def head(args: argparse.Namespace, argv: list[str], elapsed: float) -> list[str]:
    """The report's first lines: command, machine, workload, method."""
    return [
        "## Saga agent on real Kafka", "",
        f"Command: `{command_line(argv)}` (total {elapsed / 60:.1f} min)", "",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; Apache Kafka "
        f"{kafka_version()} (embedded KRaft, 1 broker, same machine); no CPU pinning.",
        f"- Workload per round: {args.events} pre-produced `payments.events` (seed {SEED}: "
        "~85 % PAYMENT_FAILED, soft/hard/fraud declines on Visa/Mastercard, ~35 % of invoices "
        "end PAYMENT_SUCCEEDED; ~2.4 events per invoice, 5 tenants, cards shared), 12 "
        "partitions, fresh topics and group per round; rounds alternate plain, saga agent.",
        "- Events/s = events / (last - first timestamp of the records the decisions sent to "
        "`recovery.transitions` and `recovery.commands`): first to last decision, start-up "
        "excluded. An agent round ends when the worker's group committed every event.",
    ]


# -- main --------------------------------------------------------------------------------


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def measure(bench: Bench, args: argparse.Namespace, argv: list[str]) -> str:
    """Start Kafka, run the three parts; the report."""
    begin = time.monotonic()
    progress(f"starting Kafka in {bench.state}")
    start_kafka(bench)
    progress("idle worker")
    idle = idle_rss(bench)
    rounds: list[Round] = []
    for i in range(args.rounds):
        for kind, run in (("plain", plain_round), ("faust", faust_round)):
            progress(f"round {i + 1}/{args.rounds}: {kind}")
            rounds.append(run(bench, args.events))
            progress(f"  {rounds[-1].rate:.0f} events/s")
    restart = restarts(bench, args) if args.sagas else None
    return report(head(args, argv, time.monotonic() - begin), rounds, idle, restart)


def main(argv: list[str]) -> int:
    """Run the bench; print the report; always stop what it started."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    for name in [k for k in os.environ if k.startswith("PAYWATCH_")]:
        del os.environ[name]  # the bench runs its own stack, whatever the shell says
    sweep_stale()
    state = BENCH_ROOT / f"bench-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    infra = Settings(env="dev", state_dir=state, kafka_bootstrap=None, database_url=None,
                     embedded_kafka_port=free_port(taken),
                     embedded_kafka_controller_port=free_port(taken), kafka_heap="512m")
    bench = Bench(state=state, settings=infra)
    try:
        print(measure(bench, args, argv))
    finally:
        progress("stopping")
        for proc in reversed(bench.procs):
            stop(proc)
        EmbeddedKafka(infra).stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
