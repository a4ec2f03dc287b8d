"""The executor process's loops side by side: one ending or failing stops them all."""

from __future__ import annotations

import asyncio

import pytest

from paywatch.ops.runners import _side_by_side, _stop_all


class Loop:
    """Runs until stopped, or fails at once when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.stopped, self.finished = fail, asyncio.Event(), False
        self.started = asyncio.Event()

    async def run(self) -> None:
        self.started.set()
        if self.fail:
            raise RuntimeError("boom")
        await self.stopped.wait()
        self.finished = True  # ended its own way: nothing cut short

    def stop(self) -> None:
        self.stopped.set()


async def test_a_failing_loop_stops_the_others_cleanly_and_its_error_is_raised() -> None:
    executor, dispatcher, producer = Loop(), Loop(), Loop(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(_side_by_side([executor, producer, dispatcher]), 10)
    assert executor.finished and dispatcher.finished


async def test_one_stop_request_ends_every_loop() -> None:
    loops = [Loop(), Loop(), Loop()]
    running = asyncio.create_task(_side_by_side(loops))
    await asyncio.wait_for(asyncio.gather(*(loop.started.wait() for loop in loops)), 10)
    _stop_all(loops)
    await asyncio.wait_for(running, 10)
    assert all(loop.finished for loop in loops)
