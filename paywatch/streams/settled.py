"""When a worker's timer loops may act on their tables: once the assignment has settled.

The saga timers and the renewal watch both fire from an index built over a table; an index
built while a rebalance or a table recovery is under way would miss entries or see another
worker's. Both wait for the same thing: no rebalance or recovery in progress, at least one
completed rebalance, and one whole tick since the latest one (the tables' own recovery
callbacks run right after the signal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Settled:
    """Tracks completed rebalances of ``app`` for the timer loops (connect once, at install)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._count = 0
        self._seen = 0

        @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
        async def on_restored(sender: Any, **kwargs: Any) -> None:
            self._count += 1  # tables of the new assignment are being made visible

    def _settling(self) -> bool:
        return bool(self._app.rebalancing or getattr(self._app, "in_recovery", False))

    def actives(self, topic: str) -> frozenset[int] | None:
        """The active partitions of ``topic`` to fire for on this tick, or None when the loop
        must not act yet (its index must then be dropped and rebuilt on a later tick)."""
        if self._settling() or self._count == 0:
            return None
        if self._seen != self._count:
            self._seen = self._count  # seen restored on this tick: act on the next one
            return None
        return frozenset(
            tp.partition for tp in self._app.assignor.assigned_actives() if tp.topic == topic
        )

    def still(self) -> Callable[[], bool]:
        """A check that stays True while the assignment acted on now has not moved."""
        seen = self._count
        return lambda: not self._settling() and self._count == seen
