"""A batch's loop yields to the event loop every HOLD_S (engine issue, item 4: nothing holds
the loop for more than 100 ms; a 500-decision saga batch is ~150 ms of Python)."""

from __future__ import annotations

import asyncio
import time

from paywatch.streams.batches import Pacer

STEPS, STEP_S, HOLD_S = 40, 0.002, 0.01


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def _turns_of_others(pace: Pacer | None) -> int:
    """Run STEPS busy steps of STEP_S; how often another task ran in between."""
    turns = 0
    running = True

    async def other() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # let it start
    before = turns
    for _ in range(STEPS):
        if pace is not None:
            await pace()
        _busy(STEP_S)
    during = turns - before
    running = False
    await task
    return during


async def test_a_paced_loop_lets_other_tasks_run_every_slice() -> None:
    # 80 ms of busy steps in 10 ms slices: the other task runs about 8 times (the clock
    # only moves on, so a descheduled process makes the pacer yield more, never less).
    assert await _turns_of_others(Pacer(HOLD_S)) >= (STEPS * STEP_S) / HOLD_S - 2


async def test_an_unpaced_loop_holds_the_event_loop_throughout() -> None:
    assert await _turns_of_others(None) == 0
