"""Fetched commands waiting for their due time, and the offsets that are safe to commit. Pure.

Commands are executed in ``due_at`` order across every assigned partition, not in
offset order: a command due next week never holds back one due now, on any partition.
The price is that a partition's committed offset can only advance to its lowest
unfinished offset (the low watermark); after a restart the commands above it that were
already executed are read again and skipped by the executor's journal.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class Slot(Generic[P, T]):
    """One fetched record: its partition, offset, due time and payload."""

    partition: P
    offset: int
    due_at: datetime
    item: T


@dataclass
class Schedule(Generic[P, T]):
    """Pending records per partition, a due-time heap over all of them, and watermarks."""

    _heap: list[tuple[datetime, int, Slot[P, T]]] = field(default_factory=list)
    _pending: dict[P, set[int]] = field(default_factory=dict)
    _next: dict[P, int] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, partition: P, offset: int, due_at: datetime, item: T) -> None:
        """A record to execute at `due_at`; it holds the partition's watermark until done."""
        slot = Slot(partition, offset, due_at, item)
        heapq.heappush(self._heap, (due_at, next(self._seq), slot))
        self._pending.setdefault(partition, set()).add(offset)
        self._seen(partition, offset)

    def hold(self, partition: P, offset: int) -> None:
        """A record handled outside the heap (e.g. being dead-lettered): holds the watermark
        until `done`, like a pending command, but is never returned by `due`."""
        self._pending.setdefault(partition, set()).add(offset)
        self._seen(partition, offset)

    def skip(self, partition: P, offset: int) -> None:
        """A record handled on arrival (e.g. dead-lettered): only moves the watermark."""
        self._pending.setdefault(partition, set())
        self._seen(partition, offset)

    def _seen(self, partition: P, offset: int) -> None:
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def due(self, now: datetime) -> list[Slot[P, T]]:
        """Records due at `now`, earliest first; they stay pending until `done`."""
        out: list[Slot[P, T]] = []
        while self._heap and self._heap[0][0] <= now:
            slot = heapq.heappop(self._heap)[2]
            if self.holds(slot.partition, slot.offset):
                out.append(slot)
        return out

    def holds(self, partition: P, offset: int) -> bool:
        """True while the record is pending (not done, partition not dropped)."""
        return offset in self._pending.get(partition, ())

    def done(self, partition: P, offset: int) -> None:
        """The record is handled (a dropped partition is ignored)."""
        self._pending.get(partition, set()).discard(offset)

    def drop(self, partitions: Iterable[P]) -> None:
        """Forget revoked partitions; their heap entries are discarded lazily."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)

    def backlog(self, partition: P) -> int:
        """How many records of the partition are pending."""
        return len(self._pending.get(partition, ()))

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._pending.values())

    def next_due(self) -> datetime | None:
        """Due time of the earliest pending record, if any."""
        while self._heap and not self.holds(self._heap[0][2].partition, self._heap[0][2].offset):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def watermarks(self) -> dict[P, int]:
        """Per partition, the offset to commit: lowest pending, else after the last seen."""
        return {
            p: min(pending) if pending else self._next[p]
            for p, pending in self._pending.items()
            if p in self._next
        }
