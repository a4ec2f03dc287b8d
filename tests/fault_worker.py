"""Kill -9 harness for the worker's normalize stage (engine issue, item 11, worker part).

Shared by ``tests/integration/test_fault_worker.py`` (a few thousand events, in ``make
test``) and ``bench/fault_worker.py`` (100k events, prints a report):

1. ``append_failures`` writes N Stripe ``invoice.payment_failed`` deliveries to
   ``webhooks.raw`` exactly as ingest does (one invoice each, spread over the partitions);
2. ``run_with_kills`` runs ``paywatch run worker`` and SIGKILLs it when the canonical events
   cover given fractions of the input (``Kill``), restarting it each time, including
   workers killed as they ask to join the consumer group, before they joined;
3. after the last restart it waits until every raw record has its ``payments.events``
   record and the group's committed offsets reached the end of every ``webhooks.raw``
   partition, and returns a ``FaultReport``: lost raw records, duplicated effects (two
   different event ids for one raw record, or an event id on two raw records), re-sent
   records (the same event sent again after a kill: expected, at-least-once), and the
   partitions whose committed offset stayed behind.
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
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import PaymentEvent, RawWebhook
from paywatch.schemas.topics import PAYMENTS_EVENTS, WEBHOOKS_RAW, raw_key
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
    behind: dict[int, tuple[int, int]] = field(default_factory=dict)
    """webhooks.raw partition -> (committed offset, end offset) where they differ."""
    kills: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, no duplicated effect, no partition left behind."""
        return not (self.lost or self.split_effects or self.shared_ids or self.behind)


async def append_failures(
    settings: Settings, bootstrap: str, tenant: str, n: int, *, first: int = 0
) -> set[Coord]:
    """Append ``n`` verified Stripe failures (numbered from ``first``); their coordinates."""
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
            invoice = f"in_fault_{i:07d}"
            doc = samples.stripe_event(
                "invoice.payment_failed",
                samples.stripe_invoice(basil=True, invoice_id=invoice, created=now),
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


class EventsTail:
    """Reads payments.events incrementally: raw coordinate -> event ids seen for it."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = settings.topic(PAYMENTS_EVENTS)
        self.codec = make_codec(settings)
        self.by_raw: dict[Coord, set[str]] = {}
        self.raws_of: dict[str, set[Coord]] = {}
        self.records = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> EventsTail:
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

    async def poll(self) -> int:
        """Read what arrived since the last poll; the number of raw records covered."""
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=500, max_records=20_000)
        for records in batch.values():
            for record in records:
                event = self.codec.decode(record.value, PaymentEvent, topic=self.topic)
                coord = (event.raw.partition, event.raw.offset)
                self.records += 1
                self.by_raw.setdefault(coord, set()).add(event.event_id)
                self.raws_of.setdefault(event.event_id, set()).add(coord)
        return len(self.by_raw)


async def committed_offsets(settings: Settings, bootstrap: str) -> dict[int, tuple[int, int]]:
    """webhooks.raw partition -> (the worker group's committed offset, end offset)."""
    topic = settings.topic(WEBHOOKS_RAW)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        out = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            out[tp.partition] = (committed if committed is not None else -1, ends[tp])
        return out
    finally:
        await consumer.stop()


async def behind(settings: Settings, bootstrap: str) -> dict[int, tuple[int, int]]:
    """webhooks.raw partitions whose committed offset is not their end offset."""
    offsets = await committed_offsets(settings, bootstrap)
    return {p: co for p, co in offsets.items() if co[0] != co[1]}


QUIET_S = 15.0
"""The last run is over once every partition is committed and no event came for this long."""


async def settle(
    settings: Settings, bootstrap: str, tail: EventsTail, total: int, deadline: float
) -> dict[int, tuple[int, int]]:
    """Wait for full coverage and commits, or commits and quiet (what is missing is lost)."""
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        covered = await tail.poll()
        if covered != seen:
            seen, quiet_since = covered, time.monotonic()
        left = await behind(settings, bootstrap)
        if not left and (covered >= total or time.monotonic() - quiet_since > QUIET_S):
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
    """Run the worker through ``kills``; then report what the normalize stage lost."""
    started = time.monotonic()
    deadline = started + timeout
    report = FaultReport(events=len(expected))
    async with EventsTail(settings, bootstrap) as tail:
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
            report.behind = await settle(settings, bootstrap, tail, len(expected), deadline)
            assert worker.poll() is None, log_tail(log)
            await tail.poll()
    report.lost = sorted(expected - set(tail.by_raw))
    report.split_effects = sorted(c for c, ids in tail.by_raw.items() if len(ids) > 1)
    report.shared_ids = sum(1 for raws in tail.raws_of.values() if len(raws) > 1)
    report.resent = tail.records - sum(len(ids) for ids in tail.by_raw.values())
    report.seconds = time.monotonic() - started
    return report


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _joiner(settings: Settings, log: Path) -> Settings:
    """A second worker of the same group, with its own table state."""
    return settings.model_copy(update={"state_dir": log.parent / "joiner-state"})


async def _kill_joining(settings: Settings, log: Path, deadline: float) -> None:
    """Start a worker and SIGKILL it as it asks to join the group (before it joined)."""
    start = log.stat().st_size if log.exists() else 0
    with paywatch_process(settings, "run", "worker", log=log) as proc:
        await _wait_logged(log, start, JOINING, deadline)
        _kill(proc)
