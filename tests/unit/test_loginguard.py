"""The login guard shared by the doors, on virtual time: one score and one guess count per
(IP, login) whatever door the attempts come through, failures counted per door, a shared
login (the API's bearer tokens) whose successes remove only their own check."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from smscenter.runtime.floodlog import Tally
from smscenter.runtime.loginguard import GUESS_WINDOW, LoginGuard
from smscenter.runtime.timers import FakeTimers
from smscenter.smpp.bindguard import BindGuard

IP = "192.0.2.9"


def check_of(ok: bool):
    async def check(run):
        return ("state", None) if ok else (None, "invalid_password")

    return check


async def attempt(guard: LoginGuard, timers: FakeTimers, door: str, login: str = "acme", ok: bool = False,
                  shared: bool = False):
    task = asyncio.create_task(guard.attempt(door, IP, login, check_of(ok), lambda: True, shared_login=shared))
    await timers.settle()
    while not task.done():
        await timers.advance(timers.next_due() - timers.now())
    return task.result()


async def test_alternating_doors_shares_the_guess_cap_and_the_penalty():
    timers = FakeTimers()
    guard = BindGuard(timers, base_delay=0.0, guesses_per_minute=5)  # the daemon's: SMPP's, shared
    guard.door("api", Tally(structlog.get_logger("test"), "api_auth_failed", timers))
    reasons = [(await attempt(guard, timers, door))[1] for door in ["smpp", "api"] * 4]
    assert reasons == ["invalid_password"] * 5 + ["guess_limit"] * 3
    assert guard.failures["smpp"]["invalid_password"] == 3 and guard.failures["api"]["invalid_password"] == 2
    assert guard.failures["api"]["guess_limit"] == 2 and guard.failed["guess_limit"] == 1
    assert guard.score(IP) == pytest.approx(8.0)  # 8 failures from this IP, either door


async def test_a_shared_login_keeps_its_failures_over_successes():
    timers = FakeTimers()
    guard = LoginGuard(timers, base_delay=0.0, guesses_per_minute=3)
    guard.door("api", Tally(structlog.get_logger("test"), "api_auth_failed", timers))
    for _ in range(2):
        assert (await attempt(guard, timers, "api", "<bearer>", ok=False, shared=True))[1] == "invalid_password"
    for _ in range(10):  # a client's own valid token, many times: neither capped nor a reset
        assert (await attempt(guard, timers, "api", "<bearer>", ok=True, shared=True)) == ("state", None)
    assert guard.guesses(IP, "<bearer>") == 2
    assert (await attempt(guard, timers, "api", "<bearer>", ok=False, shared=True))[1] == "invalid_password"
    assert (await attempt(guard, timers, "api", "<bearer>", ok=True, shared=True))[1] == "guess_limit"
    assert guard.next_guess_in(IP, "<bearer>") == GUESS_WINDOW
