"""Kill -9 harness for the projector (engine issue, item 11, projector part).

Shared by ``tests/integration/test_fault_projector.py`` (a few thousand events, in ``make
test``) and ``bench/fault_projector.py`` (100k events, prints a report):

1. ``append_input`` appends N PaymentEvents to ``payments.events`` as the worker does: four
   tenants, invoices failing 1-4 times with increasing attempts and varied declines, 40 %
   then recovered (PAYMENT_SUCCEEDED) and 10 % canceled, in time order so that an invoice's
   history spans many batches; the saga's transition of each event on
   ``recovery.transitions`` for two invoices in three (the rest have no saga, so their
   status comes from their events); one record in 50 appended twice, as the worker's
   at-least-once stages do after a kill. One acks=all idempotent producer; every record's
   coordinates are kept.
2. ``run_with_kills`` runs ``paywatch run projector`` and SIGKILLs it when ``event_log``
   holds given fractions of the events (``Kill``), restarting it each time, and once also
   kills the restarted projector as it asks to join the group: before it was assigned a
   partition, so before it could write anything (its checkpoints are compared to tell).
3. After the last restart it waits until ``projection_checkpoints`` reach the end offset of
   every partition the projector reads, stops it, and returns a ``FaultReport`` of the read
   models against the input: records without their rows (lost), event ids with two rows or
   a row at the coordinates of a re-sent copy instead of the first (duplicated effects),
   rows no input record explains, and ``invoices`` and ``recovery_workflows`` compared row
   by row, column by column, with the project's own pure folds
   (:func:`paywatch.projections.invoice_fold.evolve`, ``recovery_workflows.evolve``) run
   over the input in log order, one record at a time.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, Self

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka.admin import AdminClient

from paywatch.db import create_pool
from paywatch.kafka.codec import make_codec
from paywatch.projections import recovery_workflows as workflows
from paywatch.projections.invoice_fold import COLUMNS, SUCCESS_TYPES, InvoiceRow, evolve
from paywatch.projections.invoices import decide_status
from paywatch.projections.runner import PROJECTION, SOURCES
from paywatch.providers.base import event_id
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RuleRef,
    SagaState,
    SagaTransition,
)
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_TRANSITIONS, invoice_key
from paywatch.settings import Settings
from tests.procs import log_tail, paywatch_process, settings_env

Key = tuple[str, str]
"""(tenant, invoice_ref)"""
Record = PaymentEvent | SagaTransition
T0 = datetime(2026, 11, 2, tzinfo=UTC)
TENANTS = 4
RESEND_EVERY = 50
DECLINES = (
    Decline(code="insufficient_funds", category=DeclineCategory.SOFT, network="visa"),
    Decline(code="do_not_honor", category=DeclineCategory.HARD, network="mastercard"),
    Decline(code="expired_card", category=DeclineCategory.ACTION, message="card expired"),
    Decline(code="fraudulent", category=DeclineCategory.FRAUD),
    Decline(code="processing_error"),  # UNKNOWN: ranks below every classified decline
)
RULE = RuleRef(id="fault.saga", edition="2026-11", source="tests/fault_projector.py")
JOINING = b"(Re-)joining group"
"""What aiokafka logs as it sends JoinGroup: nothing is assigned yet (the early kill)."""
POLL_S = 0.05


@dataclass(frozen=True)
class Kill:
    """A SIGKILL once ``event_log`` holds the fraction ``at`` of the events.

    ``restarted`` also kills the restarted projector as it asks to join the group (the
    group still waits for the killed member's session to expire), then restarts it again.
    """

    at: float
    how: Literal["projector", "restarted"] = "projector"


DEFAULT_KILLS = (Kill(0.2), Kill(0.4, "restarted"), Kill(0.6))


@dataclass(frozen=True)
class Input:
    """What was appended, as the projector decodes it, with coordinates, in append order."""

    tenants: tuple[str, ...]
    events: list[tuple[PaymentEvent, Coords]]
    transitions: list[tuple[SagaTransition, Coords]]

    @property
    def distinct_events(self) -> int:
        """Events once each (re-sent copies not counted)."""
        return len({e.event_id for e, _ in self.events})


@dataclass
class FaultReport:
    """What a kill -9 run left behind (every list and dict empty when nothing went wrong)."""

    events: int
    records: int
    invoices: int
    lost: list[str] = field(default_factory=list)
    """Input records without their row (``topic[partition]@offset table``)."""
    duplicated: list[str] = field(default_factory=list)
    """Two rows for one event, or a row written from a re-sent copy instead of the first."""
    unexplained: list[str] = field(default_factory=list)
    """Rows of the run's tenants or topic that no input record explains."""
    invoice_mismatches: list[str] = field(default_factory=list)
    """``tenant/invoice column: stored != fold`` (missing and extra rows included)."""
    workflow_mismatches: list[str] = field(default_factory=list)
    behind: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``topic[partition]`` -> (checkpoint, end offset) where they differ."""
    kills: list[str] = field(default_factory=list)
    killed_at: list[int] = field(default_factory=list)
    """Events in ``event_log`` when each mid-run SIGKILL landed."""
    early_writes: int = 0
    """Records the projectors killed as they joined checkpointed (0: they wrote nothing)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or unexplained, folds equal, no partition left behind."""
        return not (
            self.lost
            or self.duplicated
            or self.unexplained
            or self.invoice_mismatches
            or self.workflow_mismatches
            or self.behind
        )


def _history(tenant: str, j: int) -> Iterator[PaymentEvent]:
    """Invoice ``j``'s events: 1-4 failures a day apart, then maybe a success or a cancel."""
    rng = random.Random(j)  # seeded per invoice: the same history whatever N is
    failures, ending = rng.randint(1, 4), rng.random()
    start = T0 + timedelta(seconds=j)
    common: dict[str, Any] = dict(
        tenant=tenant, provider="stripe", source_type="fault", customer_ref=f"cus_{j % 997}",
        subscription_ref=f"sub_{j}", invoice_ref=f"in_{j:07d}", amount_minor=500 + j % 5000,
        currency=rng.choice(("USD", "EUR")),
    )  # fmt: skip
    for a in range(1, failures + 1):
        yield PaymentEvent(
            event_id=event_id(tenant, "stripe", f"evt_{j}_{a}"),
            type=EventType.PAYMENT_FAILED,
            occurred_at=start + timedelta(days=a),
            payment_ref=f"pi_{j}_{a}",
            attempt=a,
            decline=rng.choice(DECLINES),
            payment_method=PaymentMethod(brand="visa", last4=f"{j % 10_000:04d}"),
            **common,
        )
    if ending < 0.5:
        yield PaymentEvent(
            event_id=event_id(tenant, "stripe", f"evt_{j}_end"),
            type=EventType.PAYMENT_SUCCEEDED if ending < 0.4 else EventType.SUBSCRIPTION_CANCELED,
            occurred_at=start + timedelta(days=failures + 1, hours=1),
            **common,
        )


def _transition(event: PaymentEvent, previous: SagaState | None) -> SagaTransition:
    """The saga's transition for ``event`` (a second after it), moving from ``previous``."""
    to = {
        EventType.PAYMENT_SUCCEEDED: SagaState.recovered,
        EventType.SUBSCRIPTION_CANCELED: SagaState.canceled,
    }.get(event.type, SagaState.exhausted if event.attempt == 4 else SagaState.retrying)
    retry = to is SagaState.retrying
    return SagaTransition(
        tenant=event.tenant,
        invoice_ref=event.invoice_ref,
        from_state=previous,
        to_state=to,
        cause_event_id=event.event_id,
        at=event.occurred_at + timedelta(seconds=1),
        rule=RULE,
        reason=f"{event.type.value} attempt {event.attempt}",
        attempts_used=event.attempt,
        attempts_allowed=4,
        next_action=CommandType.RETRY_PAYMENT if retry else None,
        next_action_at=event.occurred_at + timedelta(days=1) if retry else None,
    )


def build(prefix: str, n: int) -> list[tuple[str, Record]]:
    """(logical topic, record) of ``n`` events and their transitions, in time order."""
    timed: list[tuple[datetime, int, str, Record]] = []
    tenants = [f"{prefix}-{k}" for k in range(TENANTS)]
    events, j = 0, 0
    while events < n:
        state: SagaState | None = None
        for event in _history(tenants[j % TENANTS], j):
            if events == n:
                break
            events += 1
            timed.append((event.occurred_at, len(timed), PAYMENTS_EVENTS, event))
            if j % 3 != 2:  # two invoices in three have a saga
                move = _transition(event, state)
                state = move.to_state
                timed.append((move.at, len(timed), RECOVERY_TRANSITIONS, move))
        j += 1
    timed.sort(key=lambda item: item[:2])
    out: list[tuple[str, Record]] = []
    for i, (_, _, topic, record) in enumerate(timed):
        out.append((topic, record))
        if i % RESEND_EVERY == RESEND_EVERY - 1:
            out.append((topic, record))  # re-sent after a kill upstream: a later offset
    return out


async def append_input(settings: Settings, bootstrap: str, prefix: str, n: int) -> Input:
    """Append ``n`` events (and transitions, re-sent copies) of tenants ``<prefix>-<k>``."""
    codec = make_codec(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20
    )
    await producer.start()
    try:
        sent, futures = [], []
        for logical, record in build(prefix, n):
            topic = settings.topic(logical)
            value = codec.encode(record, topic=topic)
            sent.append(codec.decode(value, type(record), topic=topic))  # what the projector sees
            key = invoice_key(record.tenant, record.invoice_ref).encode()
            futures.append(await producer.send(topic, value=value, key=key))
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    given = Input(tuple(f"{prefix}-{k}" for k in range(TENANTS)), [], [])
    for record, m in zip(sent, metas, strict=True):
        at = Coords(m.topic, m.partition, m.offset)
        if isinstance(record, PaymentEvent):
            given.events.append((record, at))
        else:
            assert isinstance(record, SagaTransition)
            given.transitions.append((record, at))
    return given


def fold_workflows(given: Input) -> dict[Key, workflows.WorkflowRow]:
    """The recovery_workflows rows the transitions imply (the projector's own pure fold)."""
    rows: dict[Key, workflows.WorkflowRow] = {}
    for t, at in given.transitions:
        key = (t.tenant, t.invoice_ref)
        rows[key] = workflows.evolve(rows.get(key), t, at)
    return rows


_newest = attrgetter("occurred_at", "event_id")


def fold_invoices(given: Input) -> dict[Key, InvoiceRow]:
    """The invoices rows the input implies: events folded one by one in log order, the
    newest success so far handed to each, and the status the saga's, when it has one."""
    rows: dict[Key, InvoiceRow] = {}
    success: dict[Key, PaymentEvent] = {}
    for event, _ in given.events:
        key = (event.tenant, event.invoice_ref)
        best = success.get(key)
        if event.type in SUCCESS_TYPES and (best is None or _newest(event) > _newest(best)):
            success[key] = event  # the projector's lookup: ORDER BY occurred_at, event_id DESC
        row = evolve(rows.get(key), event, success.get(key))
        if row is not None:
            rows[key] = row
    sagas = fold_workflows(given)
    return {
        key: row.but(status=decide_status(sagas[key].state if key in sagas else None, row.status))
        for key, row in rows.items()
    }


class Watch:
    """The run's view of Postgres and of the end offsets of the topics the projector reads."""

    def __init__(self, settings: Settings, bootstrap: str, given: Input) -> None:
        assert settings.database_url is not None
        self.dsn = settings.database_url.get_secret_value()
        self.bootstrap, self.given, self.tenants = bootstrap, given, list(given.tenants)
        self.topics = [settings.topic(name) for name in SOURCES]
        self.transitions_topic = settings.topic(RECOVERY_TRANSITIONS)

    async def __aenter__(self) -> Self:
        meta = await asyncio.to_thread(
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics, timeout=30
        )  # the broker's word: partition counts differ by topic (recovery.policies has fewer)
        self.tps = [TopicPartition(t, p) for t in self.topics for p in meta.topics[t].partitions]
        self.pool: asyncpg.Pool = await create_pool(self.dsn, min_size=1, max_size=2)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.pool.close()

    async def covered(self) -> int:
        """Events in event_log (cheap: the tenants' index)."""
        sql = "SELECT count(*) FROM event_log WHERE tenant = ANY($1)"
        return int(await self.pool.fetchval(sql, self.tenants))

    async def checkpoints(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the projection's stored next offset."""
        rows = await self.pool.fetch(
            "SELECT topic, partition, next_offset FROM projection_checkpoints"
            " WHERE projection = $1 AND topic = ANY($2)",
            PROJECTION,
            self.topics,
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def behind(self) -> dict[str, tuple[int, int]]:
        """Partitions whose checkpoint is not their end offset."""
        ends = await self.consumer.end_offsets(self.tps)
        stored = await self.checkpoints()
        return {
            f"{tp.topic}[{tp.partition}]": (stored.get((tp.topic, tp.partition), 0), ends[tp])
            for tp in self.tps
            if stored.get((tp.topic, tp.partition), 0) != ends[tp]
        }

    async def settle(self, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
        """Wait until every partition is checkpointed to its end (or the deadline)."""
        while await self.behind() and time.monotonic() < deadline:
            assert proc.poll() is None, log_tail(log)
            await asyncio.sleep(0.25)  # poll interval of a deadline-bound wait


def _at(at: Coords) -> str:
    return f"{at.topic}[{at.partition}]@{at.offset}"


async def _check_event_rows(
    watch: Watch, table: str, expected: Sequence[tuple[PaymentEvent, Coords]], report: FaultReport
) -> None:
    """One row per event id in ``table``, written from the event's first copy."""
    first: dict[str, Coords] = {}
    for event, at in expected:
        first.setdefault(event.event_id, at)
    rows = await watch.pool.fetch(
        f'SELECT event_id::text AS id, topic, partition, "offset" FROM {table}'
        " WHERE tenant = ANY($1)",
        watch.tenants,
    )
    seen: dict[str, list[Coords]] = {}
    for r in rows:
        seen.setdefault(r["id"], []).append(Coords(r["topic"], r["partition"], r["offset"]))
    for id_, at in first.items():
        got = seen.get(id_, [])
        if not got:
            report.lost.append(f"{_at(at)} {table} (event {id_})")
        elif len(got) > 1 or got[0] != at:
            where = ", ".join(map(_at, got))
            report.duplicated.append(f"{table}: event {id_} of {_at(at)} has rows at {where}")
    for id_ in seen.keys() - first.keys():
        report.unexplained.append(f"{table}: event {id_} at {', '.join(map(_at, seen[id_]))}")


async def _check_recovery_log(watch: Watch, report: FaultReport) -> None:
    """One row per transition record, at its coordinates, saying what it says."""
    rows = await watch.pool.fetch(
        'SELECT partition, "offset", cause_event_id, to_state FROM recovery_log WHERE topic = $1',
        watch.transitions_topic,
    )
    got = {(r["partition"], r["offset"]): (r["cause_event_id"], r["to_state"]) for r in rows}
    for t, at in watch.given.transitions:
        row = got.pop((at.partition, at.offset), None)
        if row is None:
            report.lost.append(f"{_at(at)} recovery_log (caused by {t.cause_event_id})")
        elif row != (t.cause_event_id, t.to_state.value):
            report.unexplained.append(f"recovery_log: {_at(at)} holds {row}")
    for p, o in got:
        report.unexplained.append(f"recovery_log: {_at(Coords(watch.transitions_topic, p, o))}")


def _diff(got: dict[Key, Any], want: dict[Key, Any], columns: Sequence[str]) -> list[str]:
    """Every difference between stored rows and folded rows, column by column."""
    out = []
    for key in sorted(want.keys() | got.keys()):
        name = "/".join(key)
        if key not in got:
            out.append(f"{name}: no row (the fold has one)")
        elif key not in want:
            out.append(f"{name}: a row the input does not imply")
        else:
            out.extend(
                f"{name} {c}: stored {getattr(got[key], c)!r} != fold {getattr(want[key], c)!r}"
                for c in columns
                if getattr(got[key], c) != getattr(want[key], c)
            )
    return out


async def check(watch: Watch, report: FaultReport) -> None:
    """Compare every read model the input touches with the input (fills ``report``)."""
    given, pool, tenants = watch.given, watch.pool, watch.tenants
    await _check_event_rows(watch, "event_log", given.events, report)
    failed = [(e, at) for e, at in given.events if e.type is EventType.PAYMENT_FAILED]
    await _check_event_rows(watch, "failures", failed, report)
    await _check_recovery_log(watch, report)
    select = "SELECT {} FROM {} WHERE tenant = ANY($1)"
    invoices = await pool.fetch(select.format(", ".join(COLUMNS), "invoices"), tenants)
    got = {(r["tenant"], r["invoice_ref"]): InvoiceRow.from_record(r) for r in invoices}
    report.invoice_mismatches = _diff(got, fold_invoices(given), COLUMNS)
    flows = await pool.fetch(
        select.format(", ".join(workflows.COLUMNS), "recovery_workflows"), tenants
    )
    stored = {(r["tenant"], r["invoice_ref"]): workflows.WorkflowRow.from_record(r) for r in flows}
    report.workflow_mismatches = _diff(stored, fold_workflows(given), workflows.COLUMNS)


@contextmanager
def projector(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``paywatch run projector`` with the settings' batch size and no metrics port."""
    env = settings_env(settings)
    env.update(
        PAYWATCH_PROJECTOR_BATCH=str(settings.projector_batch), PAYWATCH_PROJECTOR_METRICS_PORT="0"
    )
    with paywatch_process(settings, "run", "projector", log=log, env=env) as proc:
        yield proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


async def _kill_joining(settings: Settings, log: Path, deadline: float) -> None:
    """Start a projector and SIGKILL it as it asks to join the group (before assignment)."""
    start = log.stat().st_size if log.exists() else 0
    with projector(settings, log) as proc:
        while JOINING not in log.read_bytes()[start:]:
            assert proc.poll() is None, log_tail(log)
            if time.monotonic() > deadline:
                raise AssertionError(f"the projector never logged {JOINING!r}: {log_tail(log)}")
            await asyncio.sleep(POLL_S)  # poll interval of a deadline-bound wait
        _kill(proc)


async def run_with_kills(
    settings: Settings,
    bootstrap: str,
    given: Input,
    log: Path,
    kills: Sequence[Kill] = DEFAULT_KILLS,
    timeout: float = 600.0,  # noqa: ASYNC109 (a deadline for the whole run)
) -> FaultReport:
    """Run the projector through ``kills``, let it finish, and report what it left behind."""
    started = time.monotonic()
    deadline = started + timeout
    events = given.distinct_events
    report = FaultReport(
        events=events,
        records=len(given.events) + len(given.transitions),
        invoices=len({(e.tenant, e.invoice_ref) for e, _ in given.events}),
    )
    async with Watch(settings, bootstrap, given) as watch:
        with ExitStack() as running:
            proc = running.enter_context(projector(settings, log))
            for kill in kills:
                while await watch.covered() < math.ceil(kill.at * events):
                    assert proc.poll() is None, log_tail(log)
                    if time.monotonic() > deadline:
                        raise AssertionError(f"stuck before {kill.at:.0%}: {log_tail(log)}")
                    await asyncio.sleep(POLL_S)  # poll interval of a deadline-bound wait
                _kill(proc)
                covered = await watch.covered()
                report.killed_at.append(covered)
                report.kills.append(
                    f"kill -9 of the projector at {covered:,}/{events:,} events in event_log"
                    f" ({covered / events:.0%})"
                )
                if kill.how == "restarted":
                    before = sum((await watch.checkpoints()).values())
                    await _kill_joining(settings, log, deadline)
                    report.early_writes += sum((await watch.checkpoints()).values()) - before
                    report.kills.append(
                        "kill -9 of the restarted projector as it asked to join the group"
                        f" ({report.early_writes} records checkpointed by it)"
                    )
                proc = running.enter_context(projector(settings, log))
            await watch.settle(proc, log, deadline)
            assert proc.poll() is None, log_tail(log)
        report.behind = await watch.behind()
        await check(watch, report)
    report.seconds = time.monotonic() - started
    return report
