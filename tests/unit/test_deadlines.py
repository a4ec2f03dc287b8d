"""Deadlines: a late await times out, a prompt one is left alone, other cancellations stay."""

from __future__ import annotations

import asyncio
import time

import pytest

from paywatch.deadlines import Deadlines


async def guarded(deadlines: Deadlines, awaitable: asyncio.Future[str]) -> str:
    deadline = deadlines.arm()
    try:
        return await awaitable
    except asyncio.CancelledError:
        if deadline.caused_cancel():
            raise TimeoutError from None
        raise
    finally:
        deadline.disarm()


async def test_an_await_past_its_deadline_times_out_within_a_tick() -> None:
    deadlines = Deadlines(0.2, tick=0.05)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(deadlines, never)
    took = time.monotonic() - started
    assert 0.2 <= took < 1.0  # fired, no earlier than due (a tick late at most, plus noise)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # its request was withdrawn


async def test_a_prompt_await_is_never_cancelled_afterwards() -> None:
    deadlines = Deadlines(0.1, tick=0.02)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("ok")
    assert await guarded(deadlines, done) == "ok"
    # Well past the deadline and several sweeps: the task goes on uncancelled.
    await asyncio.sleep(0.3)  # the time that passes, not a wait for a condition
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_many_tasks_each_get_their_own_answer() -> None:
    deadlines = Deadlines(0.15, tick=0.02)
    loop = asyncio.get_running_loop()
    prompt = [loop.create_future() for _ in range(50)]
    stuck = [loop.create_future() for _ in range(50)]
    tasks = [asyncio.create_task(guarded(deadlines, f)) for f in prompt + stuck]
    await asyncio.sleep(0)  # let every task arm its deadline
    for i, future in enumerate(prompt):
        future.set_result(str(i))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[:50] == [str(i) for i in range(50)]
    assert all(isinstance(r, TimeoutError) for r in results[50:])


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(guarded(deadlines, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(0)
