"""The saga agent and its timer loop: the I/O around ``shell.step`` (ARCHITECTURE §8).

Agent ``recovery-saga`` reads ``payments.events`` and ``recovery.timers`` (co-partitioned,
keyed ``tenant/invoice_ref``) in batches (``SagaStage``): one decision per record in offset
order (a saga's later records in a batch see the entry its earlier ones decided), every
command to ``recovery.commands``, transition to ``recovery.transitions`` and card record
sent, the broker acks awaited once for the batch (``batches.Stage.deliver``), then the saga
table written (changelogged by Faust) and the offsets finished for ``commits.Committer``:
the stage commits its own offsets, as normalize does, never Faust. Any failure of one
record (decode, decision, an output or entry too large for Kafka) dead-letters that record
to ``payments.events.dlq`` with its coordinates and the stage goes on. Retries and the
attempts a saga sees go to the card's ledger (``recovery.cards``, agent ``card-ledger`` in
:mod:`paywatch.streams.card_ledger`), which forwards a granted retry to
``recovery.commands`` or refuses it back to the saga (``PermitDenied``). At-least-once: a crash
before the offset commit replays the records; decisions are deterministic and a saga that
already saw the event id or fired the timer emits nothing again. Each decision also reads
three views the worker follows in memory, loaded before the first decision: the tenant's
policy (``policy_view``), its providers' open outage alerts (``alert_view``) and, for a
PaymentEvent, its customer's band if HIGH or CRITICAL (``risk_view``).

The timer loop (every ``TICK_S``) fires due timers of the partitions this worker actively
owns (never standbys) by sending a tick to ``recovery.timers`` on the saga's partition: a
table can only change inside the agent. The index is rebuilt after every rebalance or
table recovery from the headers of the entries in the store of the active partitions
(:mod:`paywatch.streams.saga_store`: raw bytes, no saga parsed), in slices that yield to the
event loop, so pending timers survive ``kill -9`` and move with their partition. Decisions
taken while it runs index their saga themselves (the rebuild skips those keys).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from paywatch.errors import PayloadError
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.shell import Entry, entry_next, fired_for, read_tick, step, tick
from paywatch.recovery.state import SagaInput
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.recovery.timer_index import TimerIndex
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import PaymentEvent, RiskBand
from paywatch.schemas.topics import invoice_key
from paywatch.streams import saga_store
from paywatch.streams.batches import (
    MAX_RECORD_BYTES,
    Pacer,
    Record,
    Stage,
    acting_as,
    bounded,
    encode,
    record_time,
)
from paywatch.streams.settled import Settled

log = logging.getLogger(__name__)

TICK_S = 0.5
"""How often due timers are looked for: a timer fires within about this of its due time."""
BATCH_MAX = 500
"""Records per batch: one wait for the broker's acks per this many decisions."""
BATCH_WITHIN_S = 0.05
"""How long a batch waits to fill: the latency a quiet stream adds, at most."""
SLICE_S = 0.05
"""The longest the index rebuild holds the event loop before yielding."""


class PolicySource(Protocol):
    """Tenant recovery policies as the saga agent needs them."""

    def get(self, tenant: str) -> TenantPolicy:
        """The tenant's policy (the defaults when it stored none)."""
        ...

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Return once every stored policy is known (before the first decision)."""
        ...


class DefaultPolicies:
    """Every tenant runs the default policy (tests, and until policies are stored)."""

    def __init__(self, policy: TenantPolicy | None = None) -> None:
        self._policy = policy or TenantPolicy()

    def get(self, tenant: str) -> TenantPolicy:
        """The one policy."""
        return self._policy

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Always ready."""
        return None


class OutageSource(Protocol):
    """Each tenant's providers with an open outage alert (``alert_view.AlertView``)."""

    def get(self, tenant: str) -> frozenset[str]:
        """The tenant's providers whose paywatch retries wait."""
        ...

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Return once every alert already logged is known."""
        ...


class NoOutages:
    """No provider ever has an outage (tests, and a worker without the alert view)."""

    def get(self, tenant: str) -> frozenset[str]:
        """Nothing held."""
        return frozenset()

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Always ready."""
        return None


class RiskSource(Protocol):
    """Each customer's band when it is a high one (``risk_view.RiskView``)."""

    def get(self, tenant: str, customer_ref: str) -> RiskBand | None:
        """The customer's band if HIGH or CRITICAL, else None."""
        ...

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Return once every score already logged is known."""
        ...


class NoRisk:
    """No customer is ever high-risk (tests, and a worker without the risk view)."""

    def get(self, tenant: str, customer_ref: str) -> RiskBand | None:
        """Nobody."""
        return None

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Always ready."""
        return None


@dataclass
class SagaRuntime:
    """What the agent and the timer loop share inside one worker."""

    codec: Codec
    clock: SagaClock
    policies: PolicySource
    sagas: Any  # Faust table: tenant/invoice_ref -> entry
    cards: Any  # recovery.cards topic: attempts and retry permit requests, key = card key
    commands: Any  # recovery.commands topic
    transitions: Any  # recovery.transitions topic
    timers: Any  # recovery.timers topic
    events_topic: str
    timers_topic: str
    index: TimerIndex = field(default_factory=TimerIndex)
    indexed: frozenset[int] | None = None
    building: frozenset[int] | None = None
    """Partitions whose index a rebuild is filling (decisions there index themselves)."""
    touched: set[str] = field(default_factory=set)
    ready: bool = False
    outages: OutageSource = field(default_factory=NoOutages)
    risk: RiskSource = field(default_factory=NoRisk)
    _lock: asyncio.Lock | None = None

    def band(self, event: SagaInput) -> RiskBand | None:
        """The band ``decide`` gets: a PaymentEvent's customer's (timers and permit answers
        carry none; the saga keeps what it knows)."""
        if isinstance(event, PaymentEvent) and event.customer_ref is not None:
            return self.risk.get(event.tenant, event.customer_ref)
        return None

    def decode(self, msg: Any) -> SagaInput:
        """A payments.events record or a recovery.timers tick."""
        if msg.topic == self.timers_topic:
            return read_tick(msg.value)
        event: PaymentEvent = self.codec.decode(msg.value, PaymentEvent, topic=msg.topic)
        return event

    async def policies_ready(self) -> None:
        """Start the policy, outage and risk sources once; wait until they know what is
        logged (a saga never decides with a view behind its log)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.ready:
                return
            views = (
                (self.policies, "recovery policies"),
                (self.outages, "outage alerts"),
                (self.risk, "risk scores"),
            )
            for source, _ in views:
                start = getattr(source, "start", None)
                if start is not None:
                    await start()
            for source, what in views:
                while True:
                    try:
                        await source.wait_ready(timeout=60.0)
                        break
                    except TimeoutError:  # never decide with a view behind its log
                        log.warning("%s not loaded after 60 s; still waiting", what)
            self.ready = True

    def store(
        self, key: str, entry: Entry | None, partition: int, timers: list[tuple[str, datetime]]
    ) -> None:
        """A decision's acked effects reach the table (when the entry changed) and the index."""
        if entry is not None:
            self.sagas[key] = entry
        if self.building is not None and partition in self.building:
            self.touched.add(key)  # newer than what the rebuild may still read
            self.index.put(key, partition, timers)
        elif self.indexed is not None and partition in self.indexed:
            self.index.put(key, partition, timers)

    async def rebuild(self, actives: frozenset[int], current: Callable[[], bool]) -> bool:
        """Index the next timer of every saga of the actively owned partitions.

        Reads the entries' headers from the store (no saga parsed), yielding to the event
        loop every ``SLICE_S``; gives up (False) once ``current()`` says the assignment moved.
        """
        begin = time.monotonic()
        self.index.clear()
        self.indexed, self.building, self.touched = None, actives, set()
        count = 0
        collecting = gc.isenabled()
        gc.disable()  # a million new index entries would trigger collection after collection
        try:
            slice_end = begin + SLICE_S
            for n, (key, entry) in enumerate(saga_store.entries(self.sagas, actives)):
                if n % 256 == 0 and time.monotonic() > slice_end:
                    await asyncio.sleep(0)
                    if not current():
                        log.info("timer index rebuild abandoned: the assignment changed")
                        return False
                    slice_end = time.monotonic() + SLICE_S
                nxt = entry_next(entry) if entry else None
                if nxt is None or nxt.partition not in actives or key in self.touched:
                    continue
                self.index.add(key, nxt.partition, nxt.timer_id, nxt.due, nxt.pending)
                count += 1
        finally:
            self.building = None
            if collecting:
                gc.freeze()  # the index lives long: full collections never scan it again
                gc.enable()
        self.indexed = actives
        log.info(
            "timer index rebuilt: %d sagas with timers on partitions %s in %.1f s",
            count,
            sorted(actives),
            time.monotonic() - begin,
        )
        return True

    async def fire_due(
        self, actives: frozenset[int], current: Callable[[], bool] = lambda: True
    ) -> int:
        """Send a tick for every due timer of the active partitions; returns how many."""
        if actives != self.indexed and not await self.rebuild(actives, current):
            return 0
        sent = 0
        for due in self.index.due(datetime.now(UTC)):
            fired = fired_for(due.key, due.timer_id, self.sagas.get(due.key))
            if fired is None:
                continue
            await self.timers.send(key=due.key.encode(), value=tick(fired), partition=due.partition)
            sent += 1
        return sent


@dataclass
class SagaStage:
    """The saga agent's batch step (payments.events and recovery.timers -> decisions)."""

    stage: Stage
    runtime: SagaRuntime

    async def run(self, batch: Sequence[Any]) -> None:
        """Decide every record in order (a saga's later records see its earlier entries),
        then deliver the batch: outputs acked once, then entries written, then finished."""
        runtime = self.runtime
        if not runtime.ready:
            await runtime.policies_ready()
        decided: dict[str, Entry | None] = {}
        records = []
        wall_now = datetime.now(UTC)
        pace = Pacer()
        for event in batch:
            await pace()
            record = self.stage.start(event, "saga")
            records.append(record)
            self._decide(record, decided, wall_now)
        await self.stage.deliver(records)

    def _decide(self, record: Record, decided: dict[str, Entry | None], now: datetime) -> None:
        runtime, msg = self.runtime, record.message
        codec = self.stage.codec
        try:
            event = runtime.decode(msg)
            key = invoice_key(event.tenant, event.invoice_ref)
            if key in decided:
                entry = decided[key]
            else:
                with acting_as(record.event):  # rocksdb: read the record's partition
                    entry = runtime.sagas.get(key)
            out = step(
                entry,
                event,
                partition=msg.partition,
                wall_now=record_time(msg, now),
                clock=runtime.clock,
                policy=runtime.policies.get(event.tenant),
                outages=runtime.outages.get(event.tenant),
                risk=runtime.band(event),
            )
            rkey = key.encode()
            record.outputs = [
                *(encode(codec, runtime.commands, rkey, c) for c in out.commands),
                *(encode(codec, runtime.transitions, rkey, t) for t in out.transitions),
                *(bounded(runtime.cards, card.encode(), v) for card, v in out.card_messages),
            ]
            changed = out.entry if out.entry is not None and out.entry != entry else None
            if changed is not None and len(rkey) + len(changed) > MAX_RECORD_BYTES:
                raise PayloadError(f"saga entry of {len(changed)} bytes exceeds a Kafka record")
        except Exception as exc:  # any failure of one record is that record's dead letter
            record.error = exc
            return
        if changed is not None:
            decided[key] = changed
        partition, timers = msg.partition, out.timers
        record.after = lambda: runtime.store(key, changed, partition, timers)


def install(app: Any, runtime: SagaRuntime, source: Any, stage: Stage) -> None:
    """Register the saga agent on ``source`` (both topics) and the timer loop on ``app``."""
    step_ = SagaStage(stage, runtime)

    @app.agent(source, name="recovery-saga")  # type: ignore[untyped-decorator]
    async def recovery_saga(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await step_.run(batch)

    settled = Settled(app)

    @app.timer(interval=TICK_S, name="recovery-timers")  # type: ignore[untyped-decorator]
    async def recovery_timers() -> None:
        actives = settled.actives(runtime.events_topic)
        if actives is None:
            runtime.indexed = None  # never fire from a half-restored table
            return
        current = settled.still()
        try:
            await runtime.fire_due(actives, current)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must survive one bad send; it retries next tick
            log.exception("recovery timers: firing failed")
