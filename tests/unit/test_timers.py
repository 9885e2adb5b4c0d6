"""The injected timers: virtual time fires what is due, in order, and nothing else."""

import asyncio

import pytest

from smscenter.runtime.timers import FakeTimers, RealTimers
from tests.patience import PATIENCE


async def test_fake_timers_fire_in_order_when_advanced():
    timers = FakeTimers(start=100.0)
    fired = []
    timers.call_later(5, fired.append, "b")
    timers.call_later(1, fired.append, "a")
    cancelled = timers.call_later(2, fired.append, "never")
    cancelled.cancel()
    await timers.advance(0.5)
    assert fired == [] and timers.now() == 100.5
    await timers.advance(10)
    assert fired == ["a", "b"] and timers.now() == 110.5
    assert timers.pending == 0


async def test_fake_sleep_and_timeout_follow_the_clock():
    timers = FakeTimers()
    order = []

    async def sleeper():
        await timers.sleep(60)
        order.append(timers.now())

    async def waiter():
        with pytest.raises(TimeoutError):
            async with timers.timeout(30):
                await asyncio.Event().wait()
        order.append("timed out")

    start = timers.now()
    tasks = [asyncio.create_task(sleeper()), asyncio.create_task(waiter())]
    await timers.advance(29)
    assert order == []
    await timers.advance(31)
    await asyncio.gather(*tasks)
    assert order == ["timed out", start + 60]


async def test_fake_timeout_lets_an_outer_cancel_through():
    timers = FakeTimers()

    async def body():
        async with timers.timeout(30):
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await timers.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_real_timers_use_the_loop():
    timers = RealTimers(clock=lambda: 42.0)
    assert timers.now() == 42.0
    fired = asyncio.Event()
    timers.call_later(0, fired.set)
    await asyncio.wait_for(fired.wait(), PATIENCE)
    with pytest.raises(TimeoutError):
        async with timers.timeout(0):
            await asyncio.Event().wait()


async def test_fake_jump_fires_what_fell_due_once_at_the_new_time():
    timers = FakeTimers(start=0.0)
    fired: list[tuple[str, float]] = []

    def periodic() -> None:  # re-arms itself every second, as a keep-alive would
        fired.append(("tick", timers.now()))
        timers.call_later(1.0, periodic)

    timers.call_later(1.0, periodic)
    timers.call_later(5.0, lambda: fired.append(("once", timers.now())))
    await timers.jump(3600)
    assert fired == [("tick", 3600.0), ("once", 3600.0)]
    assert timers.now() == 3600.0 and timers.next_due() == 3601.0
    await timers.advance(1.0)
    assert fired[-1] == ("tick", 3601.0)
