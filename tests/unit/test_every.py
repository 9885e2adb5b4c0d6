"""``runtime.timers.every``, the one periodic loop, on virtual time (``FakeTimers``): when it
runs, what a failure costs (one log line per cause, the loop goes on), how it stops."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from smscenter.runtime.timers import Every, FakeTimers, every


async def test_runs_every_interval_after_the_first_wait():
    timers = FakeTimers(start=0.0)
    runs: list[float] = []
    loop = every(10.0, lambda: runs.append(timers.now()), timers)
    await timers.advance(9.9)
    assert runs == []
    await timers.advance(25.1)
    assert runs == [10.0, 20.0, 30.0]
    await loop.stop()


async def test_an_async_run_is_awaited_and_the_wait_starts_when_it_ends():
    timers = FakeTimers(start=0.0)
    runs: list[tuple[float, float]] = []

    async def slow() -> None:
        began = timers.now()
        await timers.sleep(3.0)
        runs.append((began, timers.now()))

    loop = every(10.0, slow, timers)
    await timers.advance(40.0)
    assert runs == [(10.0, 13.0), (23.0, 26.0), (36.0, 39.0)]  # never two at once
    await loop.stop()


async def test_at_once_runs_before_the_first_wait():
    timers = FakeTimers(start=0.0)
    runs: list[float] = []
    loop = every(5.0, lambda: runs.append(timers.now()), timers, at_once=True)
    await timers.advance(0.0)
    assert runs == [0.0]
    await timers.advance(5.0)
    assert runs == [0.0, 5.0]
    await loop.stop()


async def test_a_failure_is_logged_once_per_cause_and_the_loop_goes_on():
    timers = FakeTimers(start=0.0)
    runs = []

    def flaky() -> None:
        runs.append(timers.now())
        if len(runs) <= 3:
            raise OSError("database away")
        if len(runs) == 4:
            raise KeyError("another cause")

    with capture_logs() as logs:
        loop = every(1.0, flaky, timers, "housekeeping_failed", with_traceback=False, log_interval=60.0)
        await timers.advance(5.0)
        await loop.stop()
    assert runs == [1.0, 2.0, 3.0, 4.0, 5.0]  # the failures did not stop it
    failed = [e for e in logs if e["event"] == "housekeeping_failed"]
    assert [(e["log_level"], e["error"]) for e in failed] == [("warning", "OSError"), ("warning", "KeyError")]
    assert all("where" in e and "exc_info" not in e for e in failed)


async def test_with_traceback_the_first_of_a_cause_is_an_error():
    timers = FakeTimers(start=0.0)

    def broken() -> None:
        raise ValueError("bug")

    with capture_logs() as logs:
        loop = every(1.0, broken, timers, "mo_expiry_failed")
        await timers.advance(3.0)
        await loop.stop()
    failed = [e for e in logs if e["event"] == "mo_expiry_failed"]
    assert [e["log_level"] for e in failed] == ["error"] and failed[0]["exc_info"] is not None


async def test_without_an_event_a_failure_ends_the_loop():
    timers = FakeTimers(start=0.0)
    runs = []

    def broken() -> None:
        runs.append(timers.now())
        raise ValueError("bug")

    loop = every(1.0, broken, timers)
    await timers.advance(5.0)
    assert runs == [1.0] and not loop.running
    await loop.stop()  # a loop that ended is stopped quietly


async def test_stop_cancels_a_run_under_way_and_nothing_runs_after():
    timers = FakeTimers(start=0.0)
    began, finished = [], []

    async def long_run() -> None:
        began.append(timers.now())
        await timers.sleep(100.0)
        finished.append(timers.now())

    loop = every(1.0, long_run, timers)
    await timers.advance(2.0)
    assert began == [1.0] and loop.running
    await loop.stop()
    assert not loop.running
    await timers.advance(500.0)
    assert began == [1.0] and finished == []
    assert timers.pending == 0


async def test_as_long_as_ends_the_loop_and_start_restarts_it():
    timers = FakeTimers(start=0.0)
    held = ["part"]
    runs: list[float] = []

    def expire() -> None:
        runs.append(timers.now())
        held.clear()

    loop = Every(1.0, expire, timers, as_long_as=lambda: bool(held))
    loop.start()
    await timers.advance(5.0)
    assert runs == [1.0] and not loop.running  # nothing held: no more wake-ups
    held.append("another")
    loop.start()
    loop.start()  # already running: one loop, not two
    await timers.advance(5.0)
    assert runs == [1.0, 6.0]
    await loop.stop()


async def test_stop_before_start_and_twice_is_harmless():
    timers = FakeTimers()
    loop = Every(1.0, lambda: None, timers)
    await loop.stop()
    loop.start()
    await asyncio.sleep(0)
    await loop.stop()
    await loop.stop()
