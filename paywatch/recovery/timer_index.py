"""The in-memory index of pending saga timers: which saga has a timer due, and when.

The timers themselves are durable: they live in each saga's state (``Saga.pending``) in
the Faust table, whose changelog survives a ``kill -9``. This index is only a cache to
find due timers without scanning every saga each tick: the agent updates it after each
decision, and it is rebuilt from the table whenever the worker's active partitions change
(start, rebalance). Standby partitions are never indexed, so a standby never fires.

Firing sends a tick to ``recovery.timers`` on the saga's partition; the saga agent then
calls ``decide`` with ``TimerFired``, which emits the command once (a timer already fired
or superseded does nothing). Until the tick's effect shows in the state, the timer is
not sent again for ``resend_after`` seconds, so a lost tick is retried without flooding.

Only each saga's next timer is held (with the count of its pending ones): its tick makes
the saga fire every timer then due, and the decision re-indexes the saga's next one. With
a million open sagas that is one small entry per saga, not one per timer.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, order=True, slots=True)
class Due:
    """A timer that came due: fire it by sending a tick for ``key`` on ``partition``."""

    due_at: datetime
    key: str
    timer_id: str
    partition: int


@dataclass
class TimerIndex:
    """Pending timers by saga key, with a heap ordered by due time (lazy deletion)."""

    resend_after: float = 30.0
    _by_key: dict[str, tuple[Due, int]] = field(default_factory=dict)
    _heap: list[Due] = field(default_factory=list)
    _sent: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _count: int = 0
    _heaped: bool = True

    def __len__(self) -> int:
        """Pending timers of the indexed sagas."""
        return self._count

    def put(
        self,
        key: str,
        partition: int,
        timers: Iterable[tuple[str, datetime]],
        count: int | None = None,
    ) -> None:
        """Replace the pending timers of one saga (after a decision or on rebuild).

        Only the earliest of ``timers`` is kept; ``count`` says how many the saga has when
        ``timers`` holds just its first (a rebuild from entry headers).
        """
        pending = list(timers)
        old = self._by_key.pop(key, None)
        if old is not None:
            self._count -= old[1]
        if not pending:
            return
        timer_id, due_at = min(pending, key=lambda t: (t[1], t[0]))
        item = Due(due_at, key, timer_id, partition)
        total = len(pending) if count is None else count
        self._by_key[key] = (item, total)
        self._count += total
        self._order()
        heapq.heappush(self._heap, item)

    def add(self, key: str, partition: int, timer_id: str, due_at: datetime, count: int) -> None:
        """Index a saga not indexed yet by its next timer (a rebuild: no heap order kept
        until the next ``due``/``next_due``, so a million adds stay linear)."""
        item = Due(due_at, key, timer_id, partition)
        old = self._by_key.get(key)
        self._by_key[key] = (item, count)
        self._count += count - (old[1] if old else 0)
        self._heap.append(item)
        self._heaped = False

    def _order(self) -> None:
        if not self._heaped:
            heapq.heapify(self._heap)
            self._heaped = True

    def drop_partitions(self, keep: set[int]) -> None:
        """Forget the sagas of partitions no longer actively owned."""
        for key in [k for k, (d, _) in self._by_key.items() if d.partition not in keep]:
            self._count -= self._by_key.pop(key)[1]
        self._heap = [d for d in self._heap if d.partition in keep]
        heapq.heapify(self._heap)
        self._heaped = True

    def clear(self) -> None:
        """Forget everything (before a rebuild)."""
        self._by_key.clear()
        self._heap.clear()
        self._sent.clear()
        self._count = 0
        self._heaped = True

    def next_due(self) -> datetime | None:
        """The earliest pending due time (stale heap entries skipped)."""
        self._order()
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0].due_at if self._heap else None

    def due(self, now: datetime) -> list[Due]:
        """Timers due at ``now`` that were not sent within ``resend_after`` seconds."""
        self._order()
        out: list[Due] = []
        deferred: list[Due] = []
        while self._heap and self._heap[0].due_at <= now:
            item = heapq.heappop(self._heap)
            if not self._live(item):
                continue
            sent = self._sent.get((item.key, item.timer_id))
            if sent is not None and (now - sent).total_seconds() < self.resend_after:
                deferred.append(item)
                continue
            self._sent[(item.key, item.timer_id)] = now
            out.append(item)
            deferred.append(item)  # stays pending until the saga says it fired
        for item in deferred:
            heapq.heappush(self._heap, item)
        return out

    def _live(self, item: Due) -> bool:
        entry = self._by_key.get(item.key)
        live = entry is not None and entry[0] == item
        if not live:
            self._sent.pop((item.key, item.timer_id), None)
        return live
