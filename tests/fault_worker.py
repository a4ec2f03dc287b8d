"""Kill -9 harness for the worker's stages (engine issue, item 11, worker part).

Shared by ``tests/integration/test_fault_worker.py`` (a few thousand events, in ``make
test``) and ``bench/fault_worker.py`` (100k events, prints a report):

1. ``append_failures`` writes N Stripe ``invoice.payment_failed`` deliveries to
   ``webhooks.raw`` exactly as ingest does (one invoice each, spread over the partitions);
2. ``run_with_kills`` runs ``paywatch run worker`` and SIGKILLs it when the canonical events
   cover given fractions of the input (``Kill``), restarting it each time, including
   workers killed as they ask to join the consumer group, before they joined;
3. after the last restart it waits until every raw record has its ``payments.events``
   record, every invoice its saga's first transition on ``recovery.transitions`` (the
   saga stage), and the group's committed offsets reached the end of every partition of
   the topics the worker reads (``webhooks.raw``, ``payments.events``, ``recovery.timers``,
   ``recovery.cards``), and returns a ``FaultReport``: lost raw records and lost saga
   decisions, duplicated effects (two different event ids for one raw record, an event id
   on two raw records, two different transitions caused by one event), re-sent records
   (the same record sent again after a kill: expected, at-least-once), and the partitions
   whose committed offset stayed behind.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import PaymentEvent, RawWebhook, SagaTransition
from paywatch.schemas.topics import (
    PAYMENTS_EVENTS,
    RECOVERY_CARDS,
    RECOVERY_TIMERS,
    RECOVERY_TRANSITIONS,
    WEBHOOKS_RAW,
    raw_key,
)
from paywatch.settings import Settings
from tests.builders import stripe as samples
from tests.procs import log_tail, paywatch_process

Coord = tuple[int, int]
"""(partition, offset) of a webhooks.raw record."""


@dataclass(frozen=True)
class Kill:
    """A SIGKILL once the canonical events cover the fraction ``at`` of the input.

    ``how``: ``worker`` kills the running worker and restarts it; ``restarted`` does that
    and also kills the restarted process as it asks to join the group (then restarts it
    again); ``joiner`` starts a second worker of the group and kills it as it asks to join,
    which makes the running worker give up and take back its partitions with records
    still buffered (the rebalance in which Faust committed records nobody processed).
    """

    at: float
    how: Literal["worker", "restarted", "joiner"] = "worker"


JOINING = b"Revoking previously assigned partitions"
"""What the worker logs as it sends its first JoinGroup (the moment of an early kill)."""
DEFAULT_KILLS = (Kill(0.2), Kill(0.4, "joiner"), Kill(0.6, "restarted"))


@dataclass
class FaultReport:
    """What a kill -9 run left behind (all empty/zero when nothing was lost)."""

    events: int
    lost: list[Coord] = field(default_factory=list)
    split_effects: list[Coord] = field(default_factory=list)
    """Raw records with more than one distinct event id (a duplicated effect)."""
    shared_ids: int = 0
    """Event ids carried by more than one raw record (a duplicated effect)."""
    resent: int = 0
    """Records of payments.events that repeat an event id already in the topic."""
    undecided: list[str] = field(default_factory=list)
    """Invoices whose failure never got its saga transition (a lost saga decision)."""
    split_decisions: list[str] = field(default_factory=list)
    """Events that caused two different transitions (a duplicated saga effect)."""
    transitions_resent: int = 0
    """Transition records repeating one already in the topic (at-least-once)."""
    behind: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``topic[partition]`` -> (committed offset, end offset) where they differ."""
    event_log_holes: dict[int, list[int]] = field(default_factory=dict)
    """payments.events partition -> offsets holding no data record (diagnostic only)."""
    kills: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, no duplicated effect, no partition left behind."""
        return not (
            self.lost
            or self.split_effects
            or self.shared_ids
            or self.undecided
            or self.split_decisions
            or self.behind
        )


def invoice_of(i: int) -> str:
    """The invoice id of failure number ``i``."""
    return f"in_fault_{i:07d}"


async def append_failures(
    settings: Settings,
    bootstrap: str,
    tenant: str,
    n: int,
    *,
    first: int = 0,
    retry_in_s: int | None = None,
) -> set[Coord]:
    """Append ``n`` verified Stripe failures (numbered from ``first``); their coordinates.

    ``retry_in_s``: Stripe's next automatic attempt that many seconds after each failure
    (None: the builder's fixed date in 2025, which a scaled saga clock cannot convert).
    """
    codec = make_codec(settings)
    topic = settings.topic(WEBHOOKS_RAW)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20
    )
    await producer.start()
    try:
        now = int(time.time())
        futures = []
        for i in range(first, first + n):
            invoice = invoice_of(i)
            invoice_doc = samples.stripe_invoice(basil=True, invoice_id=invoice, created=now)
            if retry_in_s is not None:
                invoice_doc["next_payment_attempt"] = now + retry_in_s
            doc = samples.stripe_event(
                "invoice.payment_failed",
                invoice_doc,
                event_id=f"evt_fault_{i:07d}",
                created=now,
            )
            raw = RawWebhook(
                ingest_id=f"fault-{i}",
                tenant=tenant,
                provider="stripe",
                received_at=datetime.now(UTC),
                body=samples.stripe_body(doc),
                subject=invoice,
            )
            key = raw_key(tenant, "stripe", invoice).encode()
            value = codec.encode(raw, topic=topic)
            futures.append(await producer.send(topic, value=value, key=key))
        return {(m.partition, m.offset) for m in await asyncio.gather(*futures)}
    finally:
        await producer.stop()


class _Tail:
    """Reads one topic's partitions incrementally from the start (no group)."""

    def __init__(self, settings: Settings, bootstrap: str, topic: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = settings.topic(topic)
        self.codec = make_codec(settings)
        self.records = 0
        self.offsets: dict[int, list[int]] = {}
        """Partition -> offsets of the data records read (to find offsets the log lacks)."""
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        parts = range(self.settings.topic_partitions)
        consumer.assign([TopicPartition(self.topic, p) for p in parts])
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=250, max_records=20_000)
        for tp, records in batch.items():
            seen = self.offsets.setdefault(tp.partition, [])
            for record in records:
                self.records += 1
                seen.append(record.offset)
                self.add(record.value)

    def log_holes(self) -> dict[int, list[int]]:
        """Partition -> offsets below the last one read that hold no data record."""
        out = {}
        for partition, offsets in self.offsets.items():
            present = set(offsets)
            missing = [o for o in range(min(present), max(present)) if o not in present]
            if missing:
                out[partition] = missing
        return out

    def add(self, value: bytes) -> None:
        """Take in one record."""
        raise NotImplementedError


class EventsTail(_Tail):
    """payments.events: raw coordinate -> event ids seen for it."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(settings, bootstrap, PAYMENTS_EVENTS)
        self.by_raw: dict[Coord, set[str]] = {}
        self.raws_of: dict[str, set[Coord]] = {}

    def add(self, value: bytes) -> None:
        """Take in one canonical event."""
        event = self.codec.decode(value, PaymentEvent, topic=self.topic)
        assert event.raw is not None  # every event normalize emits names its raw record
        coord = (event.raw.partition, event.raw.offset)
        self.by_raw.setdefault(coord, set()).add(event.event_id)
        self.raws_of.setdefault(event.event_id, set()).add(coord)

    async def poll(self) -> int:
        """Read what arrived since the last poll; the number of raw records covered."""
        await self._read()
        return len(self.by_raw)


class TransitionsTail(_Tail):
    """recovery.transitions: causing event id -> from state -> the target states seen.

    One event may move a saga several times (opened, then retrying); a replay re-sends the
    same moves. Two different targets from one state for one event is a decision taken
    twice on different state: a duplicated effect.
    """

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(settings, bootstrap, RECOVERY_TRANSITIONS)
        self.by_cause: dict[str, dict[str | None, set[str]]] = {}
        self.invoices: set[str] = set()
        self.moves: set[tuple[str, str | None, str]] = set()

    def add(self, value: bytes) -> None:
        """Take in one transition."""
        t = self.codec.decode(value, SagaTransition, topic=self.topic)
        start = None if t.from_state is None else str(t.from_state)
        targets = self.by_cause.setdefault(t.cause_event_id, {}).setdefault(start, set())
        targets.add(str(t.to_state))
        self.moves.add((t.cause_event_id, start, str(t.to_state)))
        self.invoices.add(t.invoice_ref)

    async def poll(self) -> int:
        """Read what arrived since the last poll; the number of invoices with a transition."""
        await self._read()
        return len(self.invoices)

    def split(self) -> list[str]:
        """Events that moved one saga from one state to two different states."""
        return sorted(
            cause
            for cause, starts in self.by_cause.items()
            if any(len(targets) > 1 for targets in starts.values())
        )


WORKER_SOURCES = (WEBHOOKS_RAW, PAYMENTS_EVENTS, RECOVERY_TIMERS, RECOVERY_CARDS)
"""The topics the worker's consumer group reads (and must commit to their end)."""


async def committed_offsets(
    settings: Settings, bootstrap: str, topics: Sequence[str] = (WEBHOOKS_RAW,)
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (the worker group's committed offset, end offset)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(topic), p)
            for topic in topics
            for p in range(settings.topic_partitions)
        ]
        ends = await consumer.end_offsets(tps)
        out = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            out[(tp.topic, tp.partition)] = (committed if committed is not None else 0, ends[tp])
        return out
    finally:
        await consumer.stop()


async def behind(settings: Settings, bootstrap: str) -> dict[str, tuple[int, int]]:
    """Partitions the worker reads whose committed offset is not their end offset."""
    offsets = await committed_offsets(settings, bootstrap, WORKER_SOURCES)
    return {f"{t}[{p}]": co for (t, p), co in offsets.items() if co[0] != co[1]}


QUIET_S = 15.0
"""The last run is over once every partition is committed and no event came for this long."""


async def settle(
    settings: Settings,
    bootstrap: str,
    tails: tuple[EventsTail, TransitionsTail],
    total: int,
    deadline: float,
) -> dict[str, tuple[int, int]]:
    """Wait for full coverage and commits, or commits and quiet (what is missing is lost)."""
    events, transitions = tails
    seen, quiet_since = (-1, -1), time.monotonic()
    while time.monotonic() < deadline:
        covered = (await events.poll(), await transitions.poll())
        if covered != seen:
            seen, quiet_since = covered, time.monotonic()
        left = await behind(settings, bootstrap)
        done = min(covered) >= total
        if not left and (done or time.monotonic() - quiet_since > QUIET_S):
            return left
    return await behind(settings, bootstrap)


async def _wait_logged(log: Path, start: int, line: bytes, deadline: float) -> None:
    """Wait until ``line`` appears in ``log`` after byte ``start``."""
    while line not in log.read_bytes()[start:]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker never logged {line!r}: {log_tail(log)}")
        await asyncio.sleep(0.05)  # poll interval of a deadline-bound wait


async def run_with_kills(
    settings: Settings,
    bootstrap: str,
    expected: set[Coord],
    log: Path,
    kills: Sequence[Kill] = DEFAULT_KILLS,
    timeout: float = 600.0,  # noqa: ASYNC109 (a deadline for the whole run)
) -> FaultReport:
    """Run the worker through ``kills``; then report what its stages lost.

    ``expected``: the coordinates ``append_failures`` returned (failures numbered from 0).
    """
    invoices = {invoice_of(i) for i in range(len(expected))}
    started = time.monotonic()
    deadline = started + timeout
    report = FaultReport(events=len(expected))
    async with (
        EventsTail(settings, bootstrap) as tail,
        TransitionsTail(settings, bootstrap) as decisions,
    ):
        with ExitStack() as running:
            worker = running.enter_context(paywatch_process(settings, "run", "worker", log=log))
            for kill in kills:
                target = int(kill.at * len(expected))
                while await tail.poll() < target:
                    assert worker.poll() is None, log_tail(log)
                    if time.monotonic() > deadline:
                        raise AssertionError(f"stuck before {kill.at:.0%}: {log_tail(log)}")
                progress = f"at {len(tail.by_raw)}/{len(expected)}"
                if kill.how == "joiner":
                    await _kill_joining(
                        _joiner(settings, log), log.with_name("joiner.log"), deadline
                    )
                    report.kills.append(f"kill -9 of a second worker as it joined, {progress}")
                    continue
                _kill(worker)
                report.kills.append(f"kill -9 of the worker {progress}")
                if kill.how == "restarted":
                    await _kill_joining(settings, log, deadline)
                    report.kills.append("kill -9 of the restarted worker before it joined")
                worker = running.enter_context(paywatch_process(settings, "run", "worker", log=log))
            tails = (tail, decisions)
            report.behind = await settle(settings, bootstrap, tails, len(expected), deadline)
            assert worker.poll() is None, log_tail(log)
            await tail.poll()
            await decisions.poll()
    report.lost = sorted(expected - set(tail.by_raw))
    report.split_effects = sorted(c for c, ids in tail.by_raw.items() if len(ids) > 1)
    report.shared_ids = sum(1 for raws in tail.raws_of.values() if len(raws) > 1)
    report.resent = tail.records - sum(len(ids) for ids in tail.by_raw.values())
    report.undecided = sorted(set(invoices) - decisions.invoices)
    report.split_decisions = decisions.split()
    report.event_log_holes = tail.log_holes()
    report.transitions_resent = decisions.records - len(decisions.moves)
    report.seconds = time.monotonic() - started
    return report


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _joiner(settings: Settings, log: Path) -> Settings:
    """A second worker of the same group, with its own table state.

    No bulk restore: it must ask to join at once (while the running worker still has
    records buffered), not after reading every changelog."""
    return settings.model_copy(
        update={"state_dir": log.parent / "joiner-state", "table_prerestore": False}
    )


async def _kill_joining(settings: Settings, log: Path, deadline: float) -> None:
    """Start a worker and SIGKILL it as it asks to join the group (before it joined)."""
    start = log.stat().st_size if log.exists() else 0
    with paywatch_process(settings, "run", "worker", log=log) as proc:
        await _wait_logged(log, start, JOINING, deadline)
        _kill(proc)
