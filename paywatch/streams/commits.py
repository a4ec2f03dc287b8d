"""Source offsets the normalize and fetch stages commit themselves (engine issue, item 1).

Faust's own commit rule is not safe for these stages (read in faust-streaming 0.15.3:
``transport/consumer.py``, ``streams.py``), which is how a run of 6,000 webhooks under
``kill -9`` left ranges of ``webhooks.raw`` committed with no ``payments.events`` record:

* when a rebalance starts, Faust suspends flow control and its stream iterator *skips and
  acks* every record still buffered (``not flow_control.is_active()`` or a stale
  ``generation_id``): skipped records count as done;
* the consumer forgot the partition's committed offset when it was revoked, and with no
  committed offset ``_new_offset`` commits the first consecutive run of acked offsets
  whatever lies below it (faust-streaming #606: committing across gaps in acks);
* ``wait_empty`` commits those acks during the rebalance, so the next owner starts after
  records nobody processed; a ``kill -9`` then makes the loss permanent.

So the stages' source topics are declared with ``acks=False`` (Faust never tracks, acks or
commits them) and the stages commit through this module instead. The rule:

    offset ``c`` of a partition is committed only when every record below ``c`` has had its
    effects acknowledged by the broker.

``OffsetLedger`` keeps, per partition and consumer generation, the records a stage started
and has not finished (a thin webhook stays started until the fetch agent finished it) and
the offset after the last record delivered. Its committable offset is the lowest unfinished
record, or the next offset when none is unfinished. Records are delivered in offset order
within a generation, starting at the group's committed offset (Faust seeks there after
every assignment), so everything below that offset was finished by someone. A record of an
older generation is processed (effects are idempotent) but never counts, and a partition is
only committed while its ledger belongs to the consumer's current generation: what Faust
skipped in a rebalance comes again from the committed offset. ``Committer`` commits the
ledger's offsets every ``COMMIT_INTERVAL_S`` through the consumer (which drops partitions
no longer assigned). Two guards keep "in offset order" honest: a generation whose first
record lies past the committed offset, and a hole inside a generation (a record started
past one that never reached the stage), are both never committed over but sought back
to. A crash between effects and commit replays records; their effects are idempotent
(deterministic event ids, the dedupe table).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from faust.types import TP as FaustTP

from paywatch.kafka.health import tracker

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
"""How often finished offsets are committed: the most a crash replays, in time."""
MAX_REFILLS = 10
"""Seeks back to one hole (one per commit interval) before its offsets count as absent."""


class TP(NamedTuple):
    """A topic partition (Faust's ``TP`` has the same shape)."""

    topic: str
    partition: int


@dataclass
class _Partition:
    generation: int
    next: int | None = None
    """The offset after the last record started in this generation."""
    unfinished: dict[int, int] = field(default_factory=dict)
    """Offset -> how many times it was started and not yet finished."""
    committed: int | None = None
    low: int | None = None
    """The lowest offset started in this generation."""
    frontier: int | None = None
    """Every offset from ``low`` up to (excluding) this one was started in this generation."""
    ahead: set[int] = field(default_factory=set)
    """Offsets started past a hole at ``frontier`` (records that never reached the stage)."""

    def committable(self) -> int | None:
        if self.next is None:
            return None
        safe = min(self.unfinished) if self.unfinished else self.next
        if self.ahead and self.frontier is not None:
            safe = min(safe, self.frontier)  # never commit over a hole
        return safe

    def started(self, offset: int) -> None:
        if self.frontier is None or offset == self.frontier:
            self.frontier = offset + 1
            self._absorb()
        elif offset > self.frontier:
            self.ahead.add(offset)

    def skip_hole(self) -> tuple[int, int] | None:
        """Give up on the hole at ``frontier`` (its offsets are not in the log); its range."""
        if not self.ahead or self.frontier is None:
            return None
        hole = (self.frontier, min(self.ahead))
        self.frontier = hole[1]
        self._absorb()
        return hole

    def _absorb(self) -> None:
        assert self.frontier is not None
        while self.frontier in self.ahead:
            self.ahead.discard(self.frontier)
            self.frontier += 1


class OffsetLedger:
    """Started and finished records per partition; the offsets safe to commit."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], _Partition] = {}

    def start(self, tp: tuple[str, int], offset: int, generation: int) -> bool:
        """A record's processing starts; False when it belongs to an older generation."""
        part = self._parts.get(tp)
        if part is None or generation > part.generation:
            part = self._parts[tp] = _Partition(generation)
        elif generation < part.generation:
            return False
        part.unfinished[offset] = part.unfinished.get(offset, 0) + 1
        part.next = offset + 1 if part.next is None else max(part.next, offset + 1)
        part.low = offset if part.low is None else min(part.low, offset)
        part.started(offset)
        return True

    def finish(self, tp: tuple[str, int], offset: int, generation: int) -> None:
        """Every effect of a started record is durable (ignored for an older generation)."""
        part = self._parts.get(tp)
        if part is None or part.generation != generation or offset not in part.unfinished:
            return
        left = part.unfinished[offset] - 1
        if left:
            part.unfinished[offset] = left
        else:
            del part.unfinished[offset]

    def committable(self, generation: int) -> dict[TP, int]:
        """Partitions of ``generation`` whose safe offset moved past their last commit."""
        out: dict[TP, int] = {}
        for (topic, partition), part in self._parts.items():
            offset = part.committable()
            if part.generation != generation or offset is None:
                continue
            if part.committed is None or offset > part.committed:
                out[TP(topic, partition)] = offset
        return out

    def committed(self, offsets: dict[TP, int], generation: int) -> None:
        """Remember what was committed (so it is not committed again)."""
        for tp, offset in offsets.items():
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None and part.generation == generation:
                part.committed = offset

    def holes(self, generation: int) -> dict[TP, int]:
        """Partitions of ``generation`` where records were skipped: the first missing offset."""
        return {
            TP(topic, partition): part.frontier
            for (topic, partition), part in self._parts.items()
            if part.generation == generation and part.ahead and part.frontier is not None
        }

    def skip_hole(self, tp: tuple[str, int], generation: int) -> tuple[int, int] | None:
        """Accept the first hole of ``tp`` as offsets the log does not hold; its range."""
        part = self._parts.get(tp)
        if part is None or part.generation != generation:
            return None
        return part.skip_hole()

    def low(self, tp: tuple[str, int], generation: int) -> int | None:
        """The lowest offset started for ``tp`` in ``generation`` (None: none or another)."""
        part = self._parts.get(tp)
        return part.low if part is not None and part.generation == generation else None

    def unfinished(self) -> int:
        """Records started and not finished, all partitions (for health and tests)."""
        return sum(sum(p.unfinished.values()) for p in self._parts.values())


class Committer:
    """Commits the ledger's offsets through the Faust app's consumer.

    Guard against a gap at the start of a generation: a partition kept across a rebalance is
    not always rewound to its committed offset (faust rewinds only once table recovery
    completes, and skips that when recovery is cut short by another rebalance), so the first
    records of a new generation may start past records the old one fetched and never
    finished. A partition whose lowest record in this generation lies above the offset last
    known committed is not committed; it is sought back there (its records come again; their
    effects are idempotent) and committed once that run is contiguous.
    """

    def __init__(self, app: Any, ledger: OffsetLedger) -> None:
        self.app = app
        self.ledger = ledger
        self._lock = asyncio.Lock()
        self._known: dict[TP, int] = {}
        """Offsets this worker committed or saw committed, per partition (all generations)."""
        self._sought: dict[TP, tuple[int, int, int]] = {}
        """Partition -> (generation, hole offset, seeks back to it so far)."""

    async def commit(self) -> bool:
        """Commit what is safe now; True when something was committed."""
        async with self._lock:
            generation = int(self.app.consumer_generation_id)
            await self._refill(generation)
            offsets = {
                tp: offset
                for tp, offset in self.ledger.committable(generation).items()
                if await self._contiguous(tp, generation)
            }
            if not offsets:
                return False
            # Faust's public commit() only commits its own acks; _commit is the driver's
            # commit of explicit offsets, filtered to the current assignment.
            done = bool(await self.app.consumer._commit(offsets))
            if done:
                self.ledger.committed(offsets, generation)
                self._known.update(offsets)
            return done

    async def _refill(self, generation: int) -> None:
        """Seek back to every hole inside this generation's records.

        Within a generation a partition's records reach the stages in offset order, so a
        record started past an offset never started means records were dropped on the way
        (Faust's stream skips records while its flow control is suspended, and the stage
        never sees them). The partition is not committed past the hole and is sought back
        to it; the records come again (their effects are idempotent). A hole still there
        after ``MAX_REFILLS`` seeks is offsets the log does not hold (deleted by retention,
        or markers of a transactional producer): it is skipped, loudly.
        """
        for tp, hole in self.ledger.holes(generation).items():
            gen, at, tries = self._sought.get(tp, (generation, hole, 0))
            if gen != generation or at != hole:
                tries = 0
            if tries >= MAX_REFILLS:
                skipped = self.ledger.skip_hole((tp.topic, tp.partition), generation)
                text = (
                    f"{tp.topic}[{tp.partition}]: offsets {skipped} never arrived after"
                    f" {tries} seeks: skipped as not in the log"
                )
                log.error("%s", text)
                tracker.dead_letter("commit", text)  # health says degraded, with this reason
                self._sought.pop(tp, None)
                continue
            log.warning(
                "%s[%s]: records from %s never reached the stage (generation %s): seeking back",
                tp.topic, tp.partition, hole, generation,
            )  # fmt: skip
            self._sought[tp] = (generation, hole, tries + 1)
            await self._seek_back(tp, hole)

    async def _contiguous(self, tp: TP, generation: int) -> bool:
        """False (and a seek back) when this generation's records start past the committed
        offset: committing would skip what lies between."""
        known = [self._known.get(tp), self.app.consumer._committed_offset.get(tp)]
        base = max((k for k in known if k is not None), default=None)
        low = self.ledger.low((tp.topic, tp.partition), generation)
        if base is None or low is None or low <= base:
            return True
        log.warning(
            "%s[%s]: generation %s starts at %s past the committed offset %s: seeking back",
            tp.topic, tp.partition, generation, low, base,
        )  # fmt: skip
        await self._seek_back(tp, base)
        return False

    async def _seek_back(self, tp: TP, offset: int) -> None:
        """Make ``tp``'s records come again from ``offset``.

        Faust's fetch loop drops every record below the last offset it delivered, and keeps
        delivering a batch it fetched before a seek: a bare seek during a backlog is undone
        by the rest of that batch. Pausing the partition first stops that batch (the loop
        checks the active partitions per record); the seek then holds. A record stuck in
        delivery at that moment can still undo it: the hole stays and the next commit
        interval seeks again.
        """
        consumer = self.app.consumer
        ftp = FaustTP(tp.topic, tp.partition)  # Faust asserts its own type in its sets
        consumer.pause_partitions([ftp])
        try:
            await consumer.seek(ftp, offset)
        except Exception:  # e.g. no longer assigned: the next owner starts from the commit
            log.warning("%s[%s]: seek back failed", tp.topic, tp.partition, exc_info=True)
        finally:
            consumer.resume_partitions([ftp])

    def install(self, interval: float = COMMIT_INTERVAL_S) -> None:
        """Commit every ``interval`` seconds while the worker runs."""

        @self.app.timer(interval, name="stage-commits")  # type: ignore[untyped-decorator]
        async def commit_finished() -> None:
            await self.commit()
