"""The bind guard's rules on virtual time: pacing, penalty for every bind, success that clears
only its own entry, hang-ups, caps, bounded tables, and the fair scrypt pool."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from protocol.constants import CommandStatus as S
from smscenter.smpp.bindguard import GUESS_WINDOW, BindGuard, FairExecutor
from smscenter.runtime.timers import FakeTimers

IP = "192.0.2.7"
RIGHT = "right"


def make_guard(timers: FakeTimers, **kwargs) -> BindGuard:
    options = dict(base_delay=1.0, max_delay=30.0, half_life=300.0, guesses_per_minute=5, checks_per_ip=4, checks=32)
    options.update(kwargs)
    return BindGuard(timers, **options)


class Checks:
    """A stand-in for the registry: records when each password check ran (virtual time)."""

    def __init__(self, timers: FakeTimers) -> None:
        self.timers = timers
        self.started: list[tuple[str, float]] = []

    def __call__(self, system_id: str, password: str):
        async def check(run):
            self.started.append((system_id, self.timers.now()))
            if password == RIGHT:
                return "state", S.ESME_ROK, None
            return None, S.ESME_RINVPASWD, "invalid_password"

        return check


async def bind(guard, timers, system_id="acme", password="guess", ip=IP, still_there=lambda: True, checks=None):
    """One bind, virtual time moved on until it is answered; returns (status, answered_after)."""
    checks = checks or Checks(timers)
    start = timers.now()
    task = asyncio.create_task(guard.bind(ip, system_id, checks(system_id, password), still_there))
    await timers.settle()
    while not task.done():
        due = timers.next_due()
        assert due is not None, "the bind waits for nothing"
        await timers.advance(due - timers.now())
    _, status = task.result()
    return status, timers.now() - start


def max_in_window(times: list[float], window: float = GUESS_WINDOW) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


@pytest.mark.parametrize("pace", [0.05, 0.4, 3.0, 11.9, 12.0, 12.1, 30.0])
async def test_guesses_per_minute_capped_however_paced(pace):
    """Without any penalty delay (base 0), only the cap holds the guesser: at most 5 checks
    in any 60 s, whatever the pace, over 5 virtual minutes."""
    timers = FakeTimers()
    guard = make_guard(timers, base_delay=0.0)
    checks = Checks(timers)
    end = timers.now() + 300
    statuses = []
    while timers.now() < end:
        status, _ = await bind(guard, timers, checks=checks)
        statuses.append(status)
        await timers.advance(pace)
    times = [t for _, t in checks.started]
    assert max_in_window(times) <= 5
    assert len(times) <= 5 * 6
    assert set(statuses) <= {S.ESME_RINVPASWD, S.ESME_RBINDFAIL}
    if pace < 12.0:  # faster than 5 a minute: some were refused without a check
        assert guard.failed["guess_limit"] > 0
        assert S.ESME_RBINDFAIL in statuses


async def test_guesses_overlapping_cannot_slip_past_the_cap():
    """Checks are counted when they start: 4 concurrent binds, then 4 more, for one account."""
    timers = FakeTimers()
    guard = make_guard(timers, base_delay=0.0, checks_per_ip=100)
    release = asyncio.Event()
    started = []

    async def check(run):
        started.append(timers.now())
        await release.wait()
        return None, S.ESME_RINVPASWD, "invalid_password"

    tasks = [asyncio.create_task(guard.bind(IP, "acme", check, lambda: True)) for _ in range(8)]
    await timers.settle()
    assert len(started) == 5
    release.set()
    results = [status for _, status in await asyncio.gather(*tasks)]
    assert sorted(results) == sorted([S.ESME_RINVPASWD] * 5 + [S.ESME_RBINDFAIL] * 3)


async def test_every_bind_from_an_ip_in_penalty_waits_right_password_or_not():
    timers = FakeTimers()
    guard = make_guard(timers)
    checks = Checks(timers)
    first, after = await bind(guard, timers, checks=checks)
    assert (first, after) == (S.ESME_RINVPASWD, 0.0)  # no failure yet: no delay
    wrong, wrong_after = await bind(guard, timers, system_id="acme", checks=checks)
    # The right password from the same IP: the same delay (one more failure since).
    right, right_after = await bind(guard, timers, system_id="other", password=RIGHT, checks=checks)
    assert wrong == S.ESME_RINVPASWD and right == S.ESME_ROK
    assert wrong_after == 1.0 and right_after == 2.0
    assert guard.delay(IP) == 2.0  # the success did not lower the IP's penalty

    # The delay is fixed on arrival: it does not depend on the outcome of the check.
    before = guard.delay(IP)
    _, wrong_after = await bind(guard, timers, system_id="b", checks=checks)
    assert wrong_after == before


async def test_the_penalty_decays_and_is_capped():
    timers = FakeTimers()
    guard = make_guard(timers, guesses_per_minute=1000)
    for _ in range(12):
        await bind(guard, timers)
    assert guard.delay(IP) == 30.0
    await timers.advance(300 * 6)  # six half-lives: 12 failures → under 0.5
    assert guard.delay(IP) == 0.0
    assert guard.delay("198.51.100.1") == 0.0  # another IP was never in penalty


async def test_a_success_clears_only_its_own_account_entry():
    timers = FakeTimers()
    guard = make_guard(timers, base_delay=0.0)
    checks = Checks(timers)
    for _ in range(3):
        await bind(guard, timers, system_id="victim", checks=checks)
    await bind(guard, timers, system_id="own", password="typo", checks=checks)
    score = guard.score(IP)
    status, _ = await bind(guard, timers, system_id="own", password=RIGHT, checks=checks)
    assert status == S.ESME_ROK
    assert guard.guesses(IP, "victim") == 3
    assert guard.guesses(IP, "own") == 0
    assert guard.score(IP) == pytest.approx(score)


async def test_a_hang_up_during_the_check_counts_as_a_failure():
    timers = FakeTimers()
    guard = make_guard(timers)
    connected = [True]

    async def check(run):
        connected[0] = False  # the client leaves while its password is checked
        return "state", S.ESME_ROK, None

    _, status = await guard.bind(IP, "acme", check, lambda: connected[0])
    assert status != S.ESME_ROK
    assert guard.failed["hung_up"] == 1
    assert guard.delay(IP) == 1.0
    assert guard.guesses(IP, "acme") == 1  # the check it started still counts


async def test_concurrent_checks_capped_per_ip_and_in_total_refused_at_once():
    timers = FakeTimers()
    guard = make_guard(timers, checks_per_ip=2, checks=3, guesses_per_minute=100)
    release = asyncio.Event()
    ran = []

    async def slow(run):
        ran.append(1)
        await release.wait()
        return None, S.ESME_RINVPASWD, "invalid_password"

    async def never(run):  # pragma: no cover - must not be called
        raise AssertionError("checked beyond a cap")

    held = [asyncio.create_task(guard.bind(IP, "acme", slow, lambda: True)) for _ in range(2)]
    await timers.settle()
    # A third from the same IP: refused at once, without a check.
    assert await guard.bind(IP, "acme", never, lambda: True) == (None, S.ESME_RBINDFAIL)
    held.append(asyncio.create_task(guard.bind("198.51.100.1", "acme", slow, lambda: True)))
    await timers.settle()
    # The total is reached: another IP is refused at once too.
    assert await guard.bind("198.51.100.2", "acme", never, lambda: True) == (None, S.ESME_RBINDFAIL)
    assert (guard.failed["checks_per_ip"], guard.failed["checks_total"]) == (1, 1)
    assert guard.delay("198.51.100.2") == 0.0  # refusals at once add no penalty
    release.set()
    await asyncio.gather(*held)
    assert len(ran) == 3 and guard.checking == 0 and guard.in_progress(IP) == 0


async def test_binds_waiting_their_penalty_hold_their_ips_slots():
    """A penalised IP cannot pile up binds while they wait: the per-IP cap covers the wait."""
    timers = FakeTimers()
    guard = make_guard(timers, checks_per_ip=2, guesses_per_minute=100)
    await bind(guard, timers)  # one failure: 1 s penalty from now on
    checks = Checks(timers)
    waiting = [asyncio.create_task(guard.bind(IP, "acme", checks("acme", "x"), lambda: True)) for _ in range(2)]
    await timers.settle()
    assert len(checks.started) == 2 and not any(t.done() for t in waiting)
    assert (await guard.bind(IP, "acme", checks("acme", "x"), lambda: True))[1] == S.ESME_RBINDFAIL
    await timers.advance(1.0)
    assert all(t.done() for t in waiting)


async def test_tables_are_bounded():
    timers = FakeTimers()
    guard = make_guard(timers, base_delay=0.0, size=10)
    for n in range(100):
        await bind(guard, timers, ip=f"10.0.0.{n}", system_id=f"id{n}")
    assert len(guard._scores) <= 10 and len(guard._guesses) <= 10
    assert guard.in_progress("10.0.0.1") == 0


async def test_failures_are_logged_aggregated_per_ip_and_reason():
    timers = FakeTimers()
    guard = make_guard(timers, base_delay=0.0, guesses_per_minute=1000)
    with capture_logs() as logs:
        for _ in range(50):
            await bind(guard, timers, system_id="nobody")
        await timers.advance(10)
    lines = [e for e in logs if e["event"] == "bind_refused"]
    assert [e["count"] for e in lines] == [1, 49]
    assert all(e["peer"] == IP and e["reason"] == "invalid_password" for e in lines)
    assert guard.failed["invalid_password"] == 50


async def test_fair_executor_serves_ips_round_robin():
    """One worker, a queue of 5 checks from one IP: a check from another IP goes next."""
    pool = FairExecutor(1)
    gate = threading.Event()
    order = []

    def job(name):
        if name == "a0":
            gate.wait(5)
        order.append(name)
        return name

    try:
        flood = [asyncio.create_task(pool.run("a", job, f"a{i}")) for i in range(5)]
        await asyncio.sleep(0)
        other = asyncio.create_task(pool.run("b", job, "b0"))
        await asyncio.sleep(0)
        assert pool.running == 1 and pool.queued == 5
        gate.set()
        assert await other == "b0"
        await asyncio.gather(*flood)
        assert order[:2] == ["a0", "b0"]
    finally:
        pool.close()


async def test_fair_executor_skips_checks_whose_bind_was_cancelled():
    pool = FairExecutor(1)
    gate = threading.Event()
    ran = []

    def job(name):
        if name == "first":
            gate.wait(5)
        ran.append(name)

    try:
        first = asyncio.create_task(pool.run("a", job, "first"))
        await asyncio.sleep(0)
        dropped = asyncio.create_task(pool.run("a", job, "dropped"))
        await asyncio.sleep(0)
        dropped.cancel()
        gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert ran == ["first"] and pool.running == 0
    finally:
        pool.close()


async def test_one_ip_never_holds_all_the_check_threads():
    """Two threads, five blocked checks from one IP: one of them runs, and another IP's check
    starts at once on the other thread, while the flood still waits."""
    pool = FairExecutor(2)
    gate = threading.Event()

    def blocked(name):
        gate.wait(5)
        return name

    try:
        flood = [asyncio.create_task(pool.run("a", blocked, f"a{i}")) for i in range(5)]
        await asyncio.sleep(0)
        assert (pool.running, pool.queued) == (1, 4)
        other = asyncio.create_task(pool.run("b", lambda: "b"))
        assert await other == "b"
        assert not any(t.done() for t in flood) and pool.queued == 4
        gate.set()
        await asyncio.gather(*flood)
    finally:
        gate.set()
        pool.close()
