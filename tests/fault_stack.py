"""Kill -9 harness for the whole pipeline at once (engine issue, item 11, combined run).

Shared by ``tests/integration/test_fault_stack.py`` (a few thousand events, in ``make test``)
and ``bench/fault_stack.py`` (100k events, prints a report). It reuses the per-process
harnesses (``tests/fault_worker.py``, ``tests/fault_projector.py``, the executor's test
helpers) and runs all three processes together on one Kafka and one Postgres:

1. ``feed`` appends N Stripe failures to ``webhooks.raw`` as ingest does
   (:func:`tests.fault_worker.append_failures`) in chunks at a steady rate, so sagas keep
   opening while the processes die. The saga clock runs at ``SCALE`` (one saga day per wall
   second) from an anchor every process shares: each saga's dunning (days 0, 3, 7), its
   escalation (day 14) and its deadline (day 30) fall inside the run, so the timer loop fires
   across the kills and the executor has commands to run. Stripe owns its own retries and
   these failures carry no card, so no RETRY_PAYMENT is issued and the card ledger stays idle.
2. ``run_with_kills`` runs ``paywatch run worker`` (rocksdb tables), ``projector`` and
   ``executor`` as real processes; when the canonical events cover each ``Kill.at`` of the
   input it SIGKILLs all three and restarts each at once, once also killing the restarted
   worker as it asks to join the group (before it joined).
3. It waits, with a deadline, until every raw record has its event and every saga closed and
   every consumer group is at the end of what it reads (the worker group on ``webhooks.raw``,
   ``payments.events``, ``recovery.timers``, ``recovery.cards``; the projector's Postgres
   checkpoints; the executor group on ``recovery.commands``), or until nothing moved for
   ``QUIET_S`` (what is missing then is lost), stops the processes, reads the topics whole
   and returns a ``StackReport``: what was lost, what took effect twice, the read models
   against the projector harness's pure folds of what the topics hold, partitions behind.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from paywatch.kafka.codec import make_codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RecoveryCommand, SagaState, SagaTransition
from paywatch.schemas.topics import (
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_TIMERS,
    RECOVERY_TRANSITIONS,
    WEBHOOKS_RAW,
    dlq_name,
)
from paywatch.settings import Settings
from tests import fault_projector as projector_harness
from tests import fault_worker as worker_harness
from tests.fault_worker import Coord, EventsTail, TransitionsTail, append_failures
from tests.integration.test_executor import executor_process
from tests.kafka_helpers import topic_records
from tests.procs import log_tail, paywatch_process

SCALE = 86_400.0
"""Saga seconds per wall second: a saga's 30-day window passes in 30 s (ARCHITECTURE §4)."""
STRIPE_RETRY_DAYS = 3
"""Stripe's next automatic attempt, saga days after each failure (as Stripe announces it)."""
QUIET_S = 45.0
"""Nothing moved for this long with every group at its end: the run is over. Longer than
the 16 saga days between a saga's escalation and its deadline at ``SCALE``."""
POLL_S = 0.25
TERMINAL = frozenset({SagaState.recovered, SagaState.exhausted, SagaState.canceled})
PROCESSES = ("worker", "projector", "executor")
DLQS = (WEBHOOKS_RAW, PAYMENTS_EVENTS, RECOVERY_COMMANDS)
EXECUTED = re.compile(r"(?:recorded|succeeded|failed) \w+ command (\S+) \(invoice ([^/\s]+)/")
"""The executor's line for a command it carried out (paywatch/executor/runner.py ``_done``)."""
WORKER_NOTES = (b"seeking back", b"never arrived")
"""What the worker logs when it refills a hole in its commits (paywatch/streams/commits.py)."""


@dataclass(frozen=True)
class Kill:
    """SIGKILL of all three processes once the canonical events cover the fraction ``at``.

    ``restarted``: the restarted worker is killed too as it asks to join the group.
    """

    at: float
    restarted: bool = False


DEFAULT_KILLS = (Kill(0.2), Kill(0.4, restarted=True), Kill(0.6))


@dataclass(frozen=True)
class KillPoint:
    """Where each process was when a kill landed."""

    events: int
    """Raw records with their canonical event (the worker's progress)."""
    event_log: int
    """Rows in event_log (the projector's progress)."""
    journaled: int
    """Commands in the executor's journal (the executor's progress)."""
    wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When it landed (to set against the records' times)."""


@dataclass
class StackReport:
    """What a combined kill -9 run left behind (every list and dict empty when all is well)."""

    events: int
    kills: list[str] = field(default_factory=list)
    points: list[KillPoint] = field(default_factory=list)
    # lost
    lost_raw: list[Coord] = field(default_factory=list)
    """webhooks.raw records without a canonical event."""
    undecided: list[str] = field(default_factory=list)
    """Input invoices without any saga transition."""
    unclosed: list[str] = field(default_factory=list)
    """Input invoices whose saga never reached a final state (a timer lost)."""
    lost_rows: list[str] = field(default_factory=list)
    """Records without their read-model row (event_log, failures, recovery_log)."""
    lost_commands: list[str] = field(default_factory=list)
    """Command ids on recovery.commands the executor never journaled."""
    # duplicated effects
    split_effects: list[Coord] = field(default_factory=list)
    """Raw records with two different event ids."""
    shared_ids: int = 0
    """Event ids carried by two raw records."""
    split_decisions: list[str] = field(default_factory=list)
    """Causes that moved one saga from one state to two different states."""
    double_commands: list[str] = field(default_factory=list)
    """One invoice's step (type, template, attempt) issued under two command ids."""
    executed_twice: list[str] = field(default_factory=list)
    """Command ids the executor logged as carried out more than once."""
    duplicated_rows: list[str] = field(default_factory=list)
    """Events with two rows, or a row written from a re-sent copy (projector harness)."""
    # read models vs the folds of the topics
    unexplained: list[str] = field(default_factory=list)
    """Rows (read models, journal) that no record explains."""
    invoice_mismatches: list[str] = field(default_factory=list)
    workflow_mismatches: list[str] = field(default_factory=list)
    behind: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``group topic[partition]`` -> (committed or checkpoint, end offset) where they differ."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """DLQ -> records (the input has no poison: any letter is a record not processed)."""
    # at-least-once, as expected (idempotent downstream); for the report
    resent: dict[str, int] = field(default_factory=dict)
    """Topic -> records repeating one already there (same event id, move or command id)."""
    volume: dict[str, int] = field(default_factory=dict)
    """What the run produced: events, transitions, commands, journaled, timer ticks."""
    log_notes: list[str] = field(default_factory=list)
    """The worker's "seeking back" / "never arrived" lines (commits.py refilling holes)."""
    seconds: float = 0.0

    def problems(self) -> dict[str, int]:
        """Check -> number of findings, for the checks that found something."""
        found = {
            "lost raw records": len(self.lost_raw),
            "undecided invoices": len(self.undecided),
            "sagas never closed": len(self.unclosed),
            "records without their row": len(self.lost_rows),
            "commands never journaled": len(self.lost_commands),
            "raw records with two event ids": len(self.split_effects),
            "event ids on two raw records": self.shared_ids,
            "causes with two different transitions": len(self.split_decisions),
            "steps issued under two command ids": len(self.double_commands),
            "commands executed twice": len(self.executed_twice),
            "duplicated rows": len(self.duplicated_rows),
            "unexplained rows": len(self.unexplained),
            "invoices differing from the fold": len(self.invoice_mismatches),
            "workflows differing from the fold": len(self.workflow_mismatches),
            "partitions behind": len(self.behind),
            "dead letters": sum(self.dead_letters.values()),
        }
        return {check: n for check, n in found.items() if n}

    @property
    def ok(self) -> bool:
        """Nothing lost, no duplicated effect, read models equal the folds, none behind."""
        return not self.problems()

    def findings(self, shown: int = 10) -> list[str]:
        """The first ``shown`` findings of every check that found something."""
        lists: dict[str, Sequence[object]] = {
            "lost raw records (partition, offset)": self.lost_raw,
            "undecided invoices": self.undecided,
            "sagas never closed": self.unclosed,
            "records without their row": self.lost_rows,
            "commands never journaled": self.lost_commands,
            "raw records with two event ids": self.split_effects,
            "causes with two different transitions": self.split_decisions,
            "steps issued under two command ids": self.double_commands,
            "commands executed twice": self.executed_twice,
            "duplicated rows": self.duplicated_rows,
            "unexplained rows": self.unexplained,
            "invoices vs fold": self.invoice_mismatches,
            "recovery_workflows vs fold": self.workflow_mismatches,
            "behind (committed or checkpoint, end)": [f"{k}: {v}" for k, v in self.behind.items()],
            "dead letters": [f"{k}: {v}" for k, v in self.dead_letters.items()],
        }
        return [
            f"{title} ({len(found)}): {', '.join(map(str, found[:shown]))}"
            for title, found in lists.items()
            if found
        ]


def stack_settings(settings: Settings, scale: float = SCALE) -> Settings:
    """The run's settings: rocksdb worker tables, a scaled saga clock every process shares."""
    anchor = datetime.now(UTC).replace(microsecond=0)  # shared: a joiner has its own state
    return settings.model_copy(
        update={"table_store": "rocksdb://", "time_scale": scale, "time_anchor": anchor}
    )


async def feed(settings: Settings, bootstrap: str, tenant: str, n: int, rate: float) -> set[Coord]:
    """Append ``n`` failures at about ``rate`` per second, a second's worth at a time."""
    retry_in = round(STRIPE_RETRY_DAYS * 86_400 / settings.time_scale)
    size, start, coords = max(1, round(rate)), time.monotonic(), set()
    for first in range(0, n, size):
        count = min(size, n - first)
        coords |= await append_failures(
            settings, bootstrap, tenant, count, first=first, retry_in_s=retry_in
        )
        ahead = start + (first + count) / rate - time.monotonic()
        await asyncio.sleep(max(0.0, ahead))  # pacing of the stream, not a wait for a condition
    return coords


class Stack:
    """The three processes on one Kafka and Postgres, each restarted after its kill."""

    def __init__(self, settings: Settings, logs: Path, running: ExitStack) -> None:
        self.settings, self.running = settings, running
        self.logs = {name: logs / f"{name}.log" for name in PROCESSES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _process(self, name: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
        log = self.logs[name]
        if name == "worker":
            return paywatch_process(self.settings, "run", "worker", log=log)
        if name == "projector":
            return projector_harness.projector(self.settings, log)
        return executor_process(self.settings, log)

    def start(self, name: str) -> None:
        """Start ``paywatch run <name>`` (stopped by pid when the run ends)."""
        self.procs[name] = self.running.enter_context(self._process(name))

    def kill(self, name: str) -> None:
        """SIGKILL a running process (it must still have been alive)."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, f"{name} had exited: {self.tail(name)}"

    def alive(self) -> None:
        """Fail with the log's tail when a process died by itself."""
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {self.tail(name)}"

    def tail(self, name: str) -> str:
        """The last lines of a process's log."""
        return log_tail(self.logs[name])


Tails = tuple[EventsTail, TransitionsTail]


class Run:
    """One combined fault run: its settings, progress probes and deadline."""

    def __init__(
        self, settings: Settings, bootstrap: str, tenant: str, n: int, deadline: float
    ) -> None:
        self.settings, self.bootstrap, self.tenant, self.n = settings, bootstrap, tenant, n
        self.deadline = deadline
        self.feeder: asyncio.Task[set[Coord]] | None = None

    async def journaled(self, watch: projector_harness.Watch) -> int:
        """Commands of the run's tenant in the executor's journal."""
        sql = "SELECT count(*) FROM executed_commands WHERE tenant = $1"
        return int(await watch.pool.fetchval(sql, self.tenant))

    def expired(self, what: str, stack: Stack) -> None:
        """Fail once the feed failed or the run's deadline passed."""
        if self.feeder is not None and self.feeder.done():
            self.feeder.result()  # surfaces the feed's error, if any
        if time.monotonic() > self.deadline:
            logs = "\n".join(f"--- {p}\n{stack.tail(p)}" for p in PROCESSES)
            raise AssertionError(f"timed out {what}\n{logs}")

    async def behind(self, watch: projector_harness.Watch) -> dict[str, tuple[int, int]]:
        """Every group's partitions that are not at their end offset."""
        worker = await worker_harness.behind(self.settings, self.bootstrap)
        # The executor's group is ``<app_id>-executor`` (paywatch/executor/runner.py).
        group = self.settings.model_copy(update={"app_id": f"{self.settings.app_id}-executor"})
        offsets = await worker_harness.committed_offsets(
            group, self.bootstrap, (RECOVERY_COMMANDS,)
        )
        executor = {f"{t}[{p}]": co for (t, p), co in offsets.items() if co[0] != co[1]}
        return {
            **{f"worker {k}": v for k, v in worker.items()},
            **{f"projector {k}": v for k, v in (await watch.behind()).items()},
            **{f"executor {k}": v for k, v in executor.items()},
        }

    async def progress(self, events: EventsTail, watch: projector_harness.Watch) -> KillPoint:
        """Where the three processes are now (the events tail read up to date first)."""
        while True:  # one poll reads what one fetch brings: poll until one brings nothing
            before = events.records
            await events.poll()
            if events.records == before:
                break
        return KillPoint(len(events.by_raw), await watch.covered(), await self.journaled(watch))

    async def kill_all(
        self,
        kill: Kill,
        stack: Stack,
        tails: Tails,
        watch: projector_harness.Watch,
        last: KillPoint,
    ) -> KillPoint:
        """SIGKILL all three once the events cover ``kill.at`` of the input and each process
        got further since the last kill (so none is still starting), then restart them."""
        events, transitions = tails
        target = math.ceil(kill.at * self.n)
        while True:
            stack.alive()
            self.expired(f"before {kill.at:.0%} ({last} at the last kill)", stack)
            await transitions.poll()  # keeps that tail current too
            now = await self.progress(events, watch)
            moved = (
                now.events > last.events,
                now.event_log > last.event_log,
                now.journaled > last.journaled,
            )
            if now.events >= target and all(moved):
                break
            if now.events >= self.n:
                raise AssertionError(
                    f"every event was covered before the kill at {kill.at:.0%} ({last} at the"
                    " last one): a longer stream (more events, a lower rate) is needed"
                )
        for name in PROCESSES:
            stack.kill(name)
        stack.start("projector")
        stack.start("executor")
        if kill.restarted:  # the worker harness's early kill: JoinGroup sent, not joined
            await worker_harness._kill_joining(self.settings, stack.logs["worker"], self.deadline)
        stack.start("worker")
        return now

    async def settle(
        self, stack: Stack, tails: Tails, watch: projector_harness.Watch
    ) -> dict[str, tuple[int, int]]:
        """Wait for every event and closed saga and every group at its end, or for quiet."""
        events, transitions = tails
        seen: tuple[int, ...] = ()
        quiet_since = time.monotonic()
        while time.monotonic() < self.deadline:
            stack.alive()
            covered = await events.poll()
            await transitions.poll()
            now = (covered, transitions.records, await self.journaled(watch), await watch.covered())
            if now != seen:
                seen, quiet_since = now, time.monotonic()
            done = covered >= self.n and _closed(transitions) >= self.n
            if done or time.monotonic() - quiet_since > QUIET_S:
                left = await self.behind(watch)
                if not left:
                    return left
            await asyncio.sleep(POLL_S)  # poll interval of a deadline-bound wait
        return await self.behind(watch)


def _closed(transitions: TransitionsTail) -> int:
    """Sagas seen reaching a final state (one closing cause each)."""
    return len({cause for cause, _, to in transitions.moves if to in TERMINAL})


async def run_with_kills(
    settings: Settings,
    bootstrap: str,
    tenant: str,
    n: int,
    rate: float,
    logs: Path,
    kills: Sequence[Kill] = DEFAULT_KILLS,
    timeout: float = 900.0,  # noqa: ASYNC109 (a deadline for the whole run)
) -> StackReport:
    """Feed ``n`` failures at ``rate``/s through the three processes and ``kills``; report.

    ``settings``: from :func:`stack_settings`, with the run's topics created.
    """
    started = time.monotonic()
    run = Run(settings, bootstrap, tenant, n, started + timeout)
    report = StackReport(events=n)
    empty = projector_harness.Input((tenant,), [], [])
    feeder = run.feeder = asyncio.create_task(feed(settings, bootstrap, tenant, n, rate))
    try:
        async with (
            EventsTail(settings, bootstrap) as events,
            TransitionsTail(settings, bootstrap) as transitions,
            projector_harness.Watch(settings, bootstrap, empty) as watch,
        ):
            with ExitStack() as running:
                stack = Stack(settings, logs, running)
                for name in PROCESSES:
                    stack.start(name)
                point = KillPoint(0, 0, 0)
                for kill in kills:
                    point = await run.kill_all(kill, stack, (events, transitions), watch, point)
                    report.points.append(point)
                    report.kills.append(_describe(kill, point, n))
                expected = await feeder
                report.behind = await run.settle(stack, (events, transitions), watch)
                stack.alive()
    finally:
        feeder.cancel()
    await check(settings, bootstrap, tenant, expected, stack.logs, report)
    report.seconds = time.monotonic() - started
    return report


def _describe(kill: Kill, at: KillPoint, n: int) -> str:
    text = (
        f"{at.wall:%H:%M:%S} kill -9 of worker, projector and executor at {at.events:,}/{n:,}"
        f" events ({at.events / n:.0%}); event_log {at.event_log:,} rows,"
        f" journal {at.journaled:,}"
    )
    return text + ("; the restarted worker killed as it asked to join" if kill.restarted else "")


def _reader(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def end_offsets(settings: Settings, bootstrap: str, logical: str) -> dict[int, int]:
    """Partition -> end offset of one of the run's topics."""
    consumer = _reader(bootstrap)
    await consumer.start()
    try:
        topic = settings.topic(logical)
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def scan(
    settings: Settings, bootstrap: str, logical: str, take: Callable[[Any], None]
) -> None:
    """Hand every record of a topic, up to its end offsets now, to ``take`` (offset order)."""
    topic = settings.topic(logical)
    consumer = _reader(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 600
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {ends}")
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        take(record)
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()


@dataclass
class Topics:
    """The run's records as the checks need them, read once the run is over."""

    events: EventsTail
    transitions: TransitionsTail
    given: projector_harness.Input
    commands: dict[str, tuple[str, str, str | None, int]] = field(default_factory=dict)
    """command id -> (invoice, type, template, attempt)."""
    command_records: int = 0


async def read_topics(settings: Settings, bootstrap: str, tenant: str) -> Topics:
    """payments.events, recovery.transitions and recovery.commands, whole."""
    codec = make_codec(settings)
    got = Topics(
        EventsTail(settings, bootstrap),  # fed by hand below: their consumers never start
        TransitionsTail(settings, bootstrap),
        projector_harness.Input((tenant,), [], []),
    )

    def event(record: Any) -> None:
        got.events.add(record.value)
        value = codec.decode(record.value, PaymentEvent, topic=record.topic)
        got.given.events.append((value, Coords(record.topic, record.partition, record.offset)))

    def transition(record: Any) -> None:
        got.transitions.add(record.value)
        got.transitions.records += 1
        value = codec.decode(record.value, SagaTransition, topic=record.topic)
        at = Coords(record.topic, record.partition, record.offset)
        got.given.transitions.append((value, at))

    def command(record: Any) -> None:
        c = codec.decode(record.value, RecoveryCommand, topic=record.topic)
        got.command_records += 1
        got.commands[c.command_id] = (c.invoice_ref, c.type.value, c.template, c.attempt)

    await scan(settings, bootstrap, PAYMENTS_EVENTS, event)
    await scan(settings, bootstrap, RECOVERY_TRANSITIONS, transition)
    await scan(settings, bootstrap, RECOVERY_COMMANDS, command)
    return got


async def check(
    settings: Settings,
    bootstrap: str,
    tenant: str,
    expected: set[Coord],
    logs: dict[str, Path],
    report: StackReport,
) -> None:
    """Fill ``report`` from the topics, the read models, the journal and the logs."""
    got = await read_topics(settings, bootstrap, tenant)
    _check_worker(got, expected, report)
    async with projector_harness.Watch(settings, bootstrap, got.given) as watch:
        rows = projector_harness.FaultReport(events=0, records=0, invoices=0)
        await projector_harness.check(watch, rows)
        journal = {
            r["command_id"]
            for r in await watch.pool.fetch(
                "SELECT command_id FROM executed_commands WHERE tenant = $1", tenant
            )
        }
    report.lost_rows, report.duplicated_rows = rows.lost, rows.duplicated
    report.unexplained = rows.unexplained
    report.invoice_mismatches = rows.invoice_mismatches
    report.workflow_mismatches = rows.workflow_mismatches
    _check_executor(got, journal, logs["executor"].read_text(errors="replace"), tenant, report)
    for source in DLQS:
        topic = settings.topic(dlq_name(source))
        report.dead_letters[topic] = len(await topic_records(bootstrap, topic))
    report.dead_letters = {t: n for t, n in report.dead_letters.items() if n}
    report.log_notes = list(_notes(logs["worker"]))
    ticks = await end_offsets(settings, bootstrap, RECOVERY_TIMERS)
    report.volume.update(timer_ticks=sum(ticks.values()), journaled=len(journal))


def _check_worker(got: Topics, expected: set[Coord], report: StackReport) -> None:
    events, transitions = got.events, got.transitions
    report.lost_raw = sorted(expected - set(events.by_raw))
    report.split_effects = sorted(c for c, ids in events.by_raw.items() if len(ids) > 1)
    report.shared_ids = sum(1 for raws in events.raws_of.values() if len(raws) > 1)
    invoices = {worker_harness.invoice_of(i) for i in range(report.events)}
    report.undecided = sorted(invoices - transitions.invoices)
    closed = {t.invoice_ref for t, _ in got.given.transitions if t.to_state in TERMINAL}
    report.unclosed = sorted(invoices - closed - set(report.undecided))
    report.split_decisions = _moves(transitions.split(), got.given)
    report.resent[PAYMENTS_EVENTS] = len(got.given.events) - len(events.raws_of)
    report.resent[RECOVERY_TRANSITIONS] = transitions.records - len(transitions.moves)
    report.volume.update(events=len(got.given.events), transitions=transitions.records)


def _moves(causes: Sequence[str], given: projector_harness.Input) -> list[str]:
    """Each cause with the payments.events copies of it and every transition it caused:
    invoice, move, coordinates, time (the decision's wall clock), reason."""
    found: dict[str, list[tuple[SagaTransition, Coords]]] = {cause: [] for cause in causes}
    for t, at in given.transitions:
        if t.cause_event_id in found:
            found[t.cause_event_id].append((t, at))
    copies: dict[str, list[str]] = {cause: [] for cause in causes}
    for e, at in given.events:
        if e.event_id in copies:
            copies[e.event_id].append(f"@{at.partition}:{at.offset}")
    return [
        f"{cause} ({moves[0][0].invoice_ref}; event at {', '.join(copies[cause]) or '-'}): "
        + "; ".join(
            f"{t.from_state}->{t.to_state} @{at.partition}:{at.offset} {t.at:%H:%M:%S.%f}"
            f" {t.reason!r}"
            for t, at in moves
        )
        for cause, moves in found.items()
    ]


def _check_executor(
    got: Topics, journal: set[str], log: str, tenant: str, report: StackReport
) -> None:
    issued = set(got.commands)
    report.lost_commands = sorted(issued - journal)
    report.unexplained += [
        f"executed_commands: {c} (on no command record)" for c in journal - issued
    ]
    steps: dict[tuple[str, str, str | None, int], list[str]] = {}
    for command_id, step in got.commands.items():
        steps.setdefault(step, []).append(command_id)
    report.double_commands = sorted(
        f"{step[0]} {step[1]} {step[2]} attempt {step[3]}: {sorted(ids)}"
        for step, ids in steps.items()
        if len(ids) > 1
    )
    logged = Counter(cid for cid, who in EXECUTED.findall(log) if who == tenant)
    report.executed_twice = sorted(cid for cid, times in logged.items() if times > 1)
    report.resent[RECOVERY_COMMANDS] = got.command_records - len(issued)
    report.volume.update(commands=len(issued))


def _notes(log: Path) -> Iterator[str]:
    """The worker's lines about refilling holes in its commits."""
    for line in log.read_bytes().splitlines():
        if any(note in line for note in WORKER_NOTES):
            yield line.decode(errors="replace")
