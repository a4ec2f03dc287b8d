"""A batch inside an agent: decide every record, send every output, wait for the acks once.

A stage (normalize, normalize-fetched, fetch) takes records in offset order, decides each
one into a ``Record`` (outputs, a table write to make once they are acked, or the error
that makes it poison), and hands the batch to ``Stage.deliver``:

1. every output of every record is queued to the producer, then all broker acks are
   awaited together (one wait per batch, not one per record);
2. a record whose send fails because of the record (over Kafka's size limit, refused by
   the broker) or whose decision failed is dead-lettered *alone*, with its source
   topic/partition/offset, the stage and the error; the other records go on. A send that
   fails for the broker's sake (unreachable, timed out) is retried with backoff and never
   dead-letters anything, unless one record keeps failing while the others succeed: that
   record is the poison (the batch is narrowed down to it);
3. only then the records' table writes are made (and flushed), and the records are
   finished in the ``OffsetLedger``, which lets their offsets be committed. A record whose
   consumer generation ended meanwhile (a rebalance) gets no table write: it comes again
   from the committed offset, and a late write could overwrite what its partition's new
   owner wrote.

So nothing is committed before its effects are durable, and no single record can stop a
stage: every exception of a record's decision or encoding is that record's dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from faust import streams as faust_streams

from paywatch.errors import PayloadError
from paywatch.kafka.health import tracker
from paywatch.recovery.clock import SagaClock
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import Frozen
from paywatch.streams.commits import OffsetLedger
from paywatch.streams.normalize import dead_letter

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_000_000 - 8 * 1024
"""Largest key + value sent: Faust's producer_max_request_size, less batch framing."""
RECORD_FAULTS = (MessageSizeTooLargeError, RecordTooLargeError, CorruptRecordException)
"""Send failures caused by the record itself (anything else from Kafka is the broker's)."""
BACKOFF_S, BACKOFF_MAX_S = 0.5, 10.0
HOLD_S = 0.01
"""The longest a batch's loop over its records holds the event loop before yielding."""


class Pacer:
    """Yields to the event loop whenever a loop over a batch has held it for ``HOLD_S``.

    A batch of 500 saga decisions is ~150 ms of Python; without yielding, the commit
    timer, the timer loop, heartbeats and the other agents would wait for all of it.
    """

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self._hold_s = hold_s
        self._until = time.monotonic() + hold_s

    async def __call__(self) -> None:
        """Yield if the slice is used up (cheap otherwise: one clock read)."""
        if time.monotonic() >= self._until:
            await asyncio.sleep(0)
            self._until = time.monotonic() + self._hold_s


@dataclass(frozen=True)
class Output:
    """One encoded record to send: (Faust topic, key, value)."""

    topic: Any
    key: bytes
    value: bytes


@dataclass(eq=False)
class Record:
    """One source record of a batch and what its stage decided for it."""

    event: Any
    tracked: bool = True
    """Counted in the ledger (False for a record of an older consumer generation)."""
    stage: str = "normalize"
    outputs: list[Output] = field(default_factory=list)
    after: Callable[[], None] | None = None
    """Table writes, made once the outputs are acked."""
    error: BaseException | None = None
    """Set when the record is poison: it is dead-lettered instead of sent."""
    handed_off: bool = False
    """Another agent finishes it (a thin webhook goes to the fetch agent)."""
    sent: bool = False

    @property
    def message(self) -> Any:
        """The Kafka message (topic, partition, offset, key, value)."""
        return self.event.message


class LastWrites:
    """Per table key, only the batch's last record that folded it writes the table: its
    value already holds the earlier records' changes. A tenant's alert state is written (and
    changelogged) once per batch instead of once per signal. A record that fails after its
    fold (dead-lettered at send) loses its write with its outputs, as any record does."""

    def __init__(self) -> None:
        self._last: dict[Any, Record] = {}

    def set(self, key: Any, record: Record, write: Callable[[], None]) -> None:
        """``record`` writes ``key`` now; an earlier record of the batch no longer does."""
        earlier = self._last.get(key)
        if earlier is not None:
            earlier.after = None
        self._last[key] = record
        record.after = write


Fold = Callable[[Record, datetime], None]
"""A stage's step for one record as of a time: it sets the record's outputs, ``after`` (its
table writes) or ``error`` (its dead letter)."""


def encode(codec: Codec, topic: Any, key: bytes, model: Frozen) -> Output:
    """Encode one output; PayloadError when it cannot fit in a Kafka record."""
    value = codec.encode(model, topic=topic.get_topic_name())
    return bounded(topic, key, value, type(model).__name__)


def bounded(topic: Any, key: bytes, value: bytes, what: str = "record") -> Output:
    """An output already encoded; PayloadError when it cannot fit in a Kafka record."""
    if len(key) + len(value) > MAX_RECORD_BYTES:
        raise PayloadError(
            f"{what} of {len(value)} bytes exceeds the {MAX_RECORD_BYTES}-byte Kafka record limit"
        )
    return Output(topic, key, value)


@contextmanager
def acting_as(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event: table reads and writes use its partition.

    Faust finds a table's partition through a context variable its stream iterator sets;
    a batch is processed after the iterator moved on, so the stage sets it per record.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def _write_tables(record: Record) -> None:
    """The record's table writes; a failure costs only dedupe (a replay is idempotent)."""
    assert record.after is not None
    try:
        with acting_as(record.event):
            record.after()
    except Exception:  # the outputs are acked: never let the table stop the stage
        msg = record.message
        log.exception("table write of %s[%s]@%s failed", msg.topic, msg.partition, msg.offset)


def record_time(msg: Any, default: datetime) -> datetime:
    """The time a record was appended (its Kafka timestamp), else ``default``.

    Decisions are taken "as of" their record, not as of whenever it is processed: a record
    replayed after a crash (its effects acked, its table write lost) is decided again with
    the same time, so it yields the same decision and its re-sent outputs are identical
    (a second, different decision for one event is a duplicated effect). It also makes a
    backlog and a replay of the log decide as they did live.
    """
    stamp = getattr(msg, "timestamp", None)
    if not stamp or stamp <= 0:
        return default
    return datetime.fromtimestamp(stamp, UTC)


def _generation_of(msg: Any) -> int:
    """The consumer generation that fetched ``msg`` (Faust stamps every message)."""
    return int(getattr(msg, "generation_id", 0) or 0)


def broker_fault(exc: BaseException) -> bool:
    """A Kafka failure that is the broker's, not the record's: retry, never dead-letter."""
    return isinstance(exc, KafkaError) and not isinstance(exc, RECORD_FAULTS)


class BrokerUnavailable(Exception):
    """Every send of an attempt failed for the broker's sake (retried with backoff)."""


@dataclass
class Stage:
    """The I/O every batching stage shares: sends, dead letters, table writes, the ledger."""

    app: Any
    codec: Codec
    dlq: Any
    ledger: OffsetLedger
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def start(self, event: Any, stage: str = "normalize") -> Record:
        """Begin one source record (it now holds back its partition's commit)."""
        msg = event.message
        gen = _generation_of(msg)
        tracked = self.ledger.start((msg.topic, msg.partition), msg.offset, gen)
        return Record(event, tracked=tracked, stage=stage)

    async def fold_all(
        self, batch: Sequence[Any], stage: str, clock: SagaClock, fold: Fold
    ) -> None:
        """Start every record of ``batch`` and ``fold`` each in offset order, as of its Kafka
        time on ``clock`` (``record_time``), then deliver them together."""
        wall_now = datetime.now(UTC)
        records = []
        pace = Pacer()
        for event in batch:
            await pace()
            record = self.start(event, stage)
            records.append(record)
            fold(record, clock.to_saga(record_time(record.message, wall_now)))
        await self.deliver(records)

    async def deliver(self, records: list[Record]) -> None:
        """Send, dead-letter, write tables, finish: the batch's effects, then its commit."""
        backoff = BACKOFF_S
        while True:
            try:
                await self._attempt(records)
                break
            except BrokerUnavailable as exc:
                log.warning("broker unavailable, retrying a batch of %d: %s", len(records), exc)
                await asyncio.sleep(backoff)  # backoff while the broker is away
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        current = getattr(self.app, "consumer_generation_id", None)
        pace = Pacer()
        for record in records:
            await pace()
            if record.after is None or record.error is not None or record.handed_off:
                continue
            if record.tracked and current is not None and _generation_of(record.message) != current:
                # Its partition moved on in a rebalance: the record comes again from the
                # committed offset; a late write could overwrite the new owner's entry.
                continue
            _write_tables(record)
        if any(r.after is not None for r in records):
            await self.app.producer.flush()  # the table changelog records are acked too
        for record in records:
            if not record.handed_off:
                self.finish(record)
        if records:
            tracker.batch(records[0].stage, len(records))

    def finish(self, record: Record) -> None:
        """Every effect of the record is durable: its offset may be committed."""
        if record.tracked:
            msg = record.message
            self.ledger.finish((msg.topic, msg.partition), msg.offset, _generation_of(msg))

    async def _attempt(self, records: list[Record]) -> None:
        todo = [r for r in records if not r.sent and r.error is None and not r.handed_off]
        failed = await _send(todo)
        waiting = []
        for record, exc in failed:
            if broker_fault(exc):
                waiting.append(exc)
            else:
                record.error = exc
        await self._dead_letter_all(records)
        if waiting:
            raise BrokerUnavailable(f"{len(waiting)} records not acked: {waiting[0]!r}")

    async def _dead_letter_all(self, records: list[Record]) -> None:
        letters = [r for r in records if r.error is not None and not r.sent]
        if not letters:
            return
        failed = await _send_each(letters, [[self._letter(r, lean=False)] for r in letters])
        too_large = []
        for record, exc in failed:
            if broker_fault(exc):
                raise BrokerUnavailable(f"dead letter not acked: {exc!r}")
            too_large.append(record)
        # A letter too large with its payload goes without it: the coordinates remain.
        for _record, exc in await _send_each(
            too_large, [[self._letter(r, lean=True)] for r in too_large]
        ):
            raise BrokerUnavailable(f"dead letter not acked: {exc!r}")
        for record in letters:
            record.sent = True

    def _letter(self, record: Record, *, lean: bool) -> Output:
        msg, exc = record.message, record.error
        assert exc is not None
        error = f"{type(exc).__name__}: {exc}" + (" (payload omitted: too large)" if lean else "")
        log.warning(
            "dead letter (%s) %s[%s]@%s: %s",
            record.stage,
            msg.topic,
            msg.partition,
            msg.offset,
            error,
        )
        letter = dead_letter(
            stage=record.stage,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=b"" if lean else msg.value,
            error=error,
            now=self.now(),
        )
        value = self.codec.encode(letter, topic=self.dlq.get_topic_name())
        return Output(self.dlq, msg.key or b"", value)


async def _send(records: list[Record]) -> list[tuple[Record, BaseException]]:
    """Send every record's outputs, await all acks once; the records that failed."""
    return await _send_each(records, [r.outputs for r in records], mark=True)


async def _send_each(
    records: list[Record], outputs: list[list[Output]], *, mark: bool = False
) -> list[tuple[Record, BaseException]]:
    """Send ``outputs[i]`` for ``records[i]``, all queued first, then every ack awaited."""
    failed: dict[int, tuple[Record, BaseException]] = {}
    pending: list[tuple[Record, Any]] = []
    pace = Pacer()
    for record, outs in zip(records, outputs, strict=True):
        await pace()
        for out in outs:
            try:
                fut = await out.topic.send(key=out.key, value=out.value, force=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a send refused at once (e.g. too large): this record
                failed[id(record)] = (record, exc)
                break
            pending.append((record, fut))
    results = await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
    for (record, _), result in zip(pending, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException) and id(record) not in failed:
            failed[id(record)] = (record, result)
    if mark:
        for record in records:
            record.sent = id(record) not in failed
    return list(failed.values())
