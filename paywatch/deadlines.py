"""Deadlines of one fixed length for many short awaits, without a timer per await.

``asyncio.timeout`` schedules a timer handle, keeps a heap entry and re-reads the task's
cancellation state on every use: ~4 µs on this machine, twice per webhook on ingest's hot
path (the body read and the broker ack), where nearly every await finishes in
milliseconds. ``Deadlines`` keeps the armed deadlines in arrival order (all of one length,
so that is also due order) and one timer sweeps them every ``tick`` seconds while any is
armed; arming and disarming are a deque append and an attribute write. A deadline fires at
most ``tick`` late.

Use::

    deadline = deadlines.arm()
    try:
        result = await work()
    except asyncio.CancelledError:
        if deadline.caused_cancel():
            raise TimeoutError from None
        raise
    finally:
        deadline.disarm()

Like ``asyncio.timeout``, the firing cancels the task: a cancellation from elsewhere stays
a CancelledError, only the deadline's own becomes a TimeoutError.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

_ARMED, _FIRED, _DONE = 0, 1, 2


class Deadline:
    """One armed deadline of a task."""

    __slots__ = ("due", "state", "task")

    def __init__(self, due: float, task: asyncio.Task[object]) -> None:
        self.due = due
        self.task = task
        self.state = _ARMED

    def caused_cancel(self) -> bool:
        """In an ``except CancelledError``: True when this deadline cancelled the task (its
        cancellation request is then withdrawn: the caller turns it into a timeout)."""
        if self.state != _FIRED:
            return False
        self.state = _DONE
        self.task.uncancel()
        return True

    def disarm(self) -> None:
        """The guarded await is over: the deadline will not fire any more.

        A deadline that fired into an await which swallowed the cancellation and returned
        takes its cancellation request back, so the task is not left "cancelling".
        """
        if self.state == _FIRED:
            self.task.uncancel()
        self.state = _DONE


class Deadlines:
    """Deadlines ``seconds`` long for awaits of the running loop's tasks."""

    def __init__(self, seconds: float, tick: float = 0.1) -> None:
        if seconds <= 0 or tick <= 0:
            raise ValueError("deadline and tick must be positive")
        self.seconds = seconds
        self._tick = min(tick, seconds)
        self._armed: deque[Deadline] = deque()
        self._sweep_handle: asyncio.TimerHandle | None = None

    def arm(self) -> Deadline:
        """A deadline ``seconds`` from now for the current task (call inside a task)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.arm() outside a task")
        deadline = Deadline(time.monotonic() + self.seconds, task)
        self._armed.append(deadline)
        if self._sweep_handle is None:
            self._sweep_handle = task.get_loop().call_later(self._tick, self._sweep)
        return deadline

    def _sweep(self) -> None:
        armed = self._armed
        now = time.monotonic()
        while armed and armed[0].due <= now:
            deadline = armed.popleft()
            if deadline.state == _ARMED and not deadline.task.done():
                deadline.state = _FIRED
                deadline.task.cancel()
        # Disarmed deadlines at the front are dropped now; the rest wait for their turn.
        while armed and armed[0].state == _DONE:
            armed.popleft()
        self._sweep_handle = (
            asyncio.get_running_loop().call_later(self._tick, self._sweep) if armed else None
        )
