"""Login throttling of the HTTP API over real loopback sockets (issue 14 item 4, for the API).

The door (``ApiDoor``) serves on 127.0.0.1 with its login guard on virtual time
(``FakeTimers``): a penalty delay is a virtual sleep, moved on by the test, so "answered 2 s
after it arrived" is read on the virtual clock, never measured. The client is aiohttp; a
second address (127.0.0.2) is another client. Then a daemon on real time shows one guard for
both doors: guesses through the API count against an SMPP bind of the same account, and the
failures are in ``/metrics`` with their door.
"""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from smscenter.app.metrics import registry_for
from smscenter.config.sections import Api
from smscenter.http.api import ApiDoor
from smscenter.pipeline.accounts import AccountRegistry
from smscenter.runtime.loginguard import GUESS_WINDOW, LoginGuard
from smscenter.runtime.passwords import hash_token
from smscenter.runtime.timers import FakeTimers
from tests.integration.conftest import HOST, PASSWORDS
from tests.integration.mt_fixtures import connector_entry, mt  # noqa: F401 - mt is a fixture
from tests.integration.test_bind_guard import smpplib_bind_status
from tests.integration.test_http_api import build  # noqa: F401 - a fixture
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(120)

TOKEN = "acme-token-" + "0123456789abcdef" * 2
OTHER = "127.0.0.2"


class NoMessages:
    """The door's message store: no message at all, so an authenticated ``GET
    /v1/messages/1`` is 404 and a refused one 401/403/429/503 (the login is all we test)."""

    async def message(self, message_id):
        return None


class Door:
    """An ``ApiDoor`` on 127.0.0.1:0 whose guard runs on ``timers``, and clients to it."""

    def __init__(self, settings, timers: FakeTimers, guard: LoginGuard) -> None:
        self.timers = timers
        self.guard = guard
        registry = AccountRegistry(settings.accounts, timers.now)
        self.door = ApiDoor(Api(listen=f"{HOST}:0"), registry, timers=timers, guard=guard)
        self.door.store = NoMessages()
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        await self.door.bind()
        await self.door.serve()

    def session(self, ip: str) -> aiohttp.ClientSession:
        if ip not in self.sessions:
            connector = aiohttp.TCPConnector(local_addr=(ip, 0))
            self.sessions[ip] = aiohttp.ClientSession(connector=connector,
                                                      timeout=aiohttp.ClientTimeout(total=PATIENCE))
        return self.sessions[ip]

    async def get(self, *, basic: tuple[str, str] | None = None, token: str | None = None, ip: str = HOST):
        """(status, body, headers) of ``GET /v1/messages/1``."""
        headers = {}
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = f"http://{HOST}:{self.door.port}/v1/messages/1"
        async with self.session(ip).get(url, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers

    async def answered(self, **request):
        """The request's (status, body, headers, virtual seconds until its answer): virtual
        time is moved on whenever the guard sleeps (a penalty); while the request is on the
        wire or in scrypt, we wait for it (bounded)."""
        start = self.timers.now()
        task = asyncio.create_task(self.get(**request))
        deadline = time.monotonic() + PATIENCE
        while not task.done():
            due = self.timers.next_due()
            if due is not None and due - self.timers.now() <= self.guard.max_delay:
                await self.timers.advance(due - self.timers.now())
            else:
                await asyncio.wait({task}, timeout=0.01)  # on the socket or in scrypt
            assert time.monotonic() < deadline, "the request was never answered"
        status, body, headers = task.result()
        return status, body, headers, self.timers.now() - start

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        await self.door.stop()
        self.guard.close()


@pytest.fixture
async def door(make_settings):
    made: list[Door] = []

    async def make(**guard_options) -> Door:
        settings = make_settings(accounts=[
            {"system_id": "acme", "api_tokens": [hash_token(TOKEN)]},
            {"system_id": "beta"},
        ])
        timers = FakeTimers()
        options = dict(base_delay=1.0, max_delay=30.0, half_life=300.0, guesses_per_minute=5, checks_per_ip=4,
                       checks=32, log_interval=1e6)  # log lines' timers far away: not a penalty
        options.update(guard_options)
        d = Door(settings, timers, LoginGuard(timers, **options))
        await d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


ACME = ("acme", PASSWORDS["acme"])


def max_in_window(times: list[float], window: float = GUESS_WINDOW) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


@pytest.mark.parametrize("pace", [0.5, 11.9, 12.1, 30.0])
async def test_guesses_per_minute_per_account_capped_however_paced(door, pace):
    """No penalty delay (base 0): the cap alone holds. Over 3 virtual minutes, at most 5
    password checks for (127.0.0.1, acme) in any 60 s, whatever the pace; beyond, 429 with
    the Retry-After of the next free guess, without a check."""
    d = await door(base_delay=0.0)
    checked, statuses = [], []
    end = d.timers.now() + 180
    while d.timers.now() < end:
        status, body, headers, _ = await d.answered(basic=("acme", "guess"))
        statuses.append(status)
        if status == 401:
            checked.append(d.timers.now())
        else:
            assert (status, body["error"]["code"]) == (429, "too_many_logins")
            assert 1 <= int(headers["Retry-After"]) <= GUESS_WINDOW
        await d.timers.advance(pace)
    assert max_in_window(checked) <= 5 and len(checked) <= 5 * 3
    assert d.guard.failures["api"]["invalid_password"] == len(checked)
    if pace < 12.0:
        assert 429 in statuses and d.guard.failures["api"]["guess_limit"] == statuses.count(429)
    else:
        assert set(statuses) == {401}


async def test_the_right_password_from_a_penalised_address_waits_too(door):
    d = await door()
    first = await d.answered(basic=("beta", "wrong"))
    assert (first[0], first[3]) == (401, 0.0)  # no failure before it: no delay
    wrong = await d.answered(basic=("beta", "wrong again"))
    right = await d.answered(basic=ACME)
    token = await d.answered(token=TOKEN)
    assert (wrong[0], wrong[3]) == (401, 1.0)
    assert (right[0], right[3]) == (404, 2.0)  # authenticated (no such message), after the delay
    assert (token[0], token[3]) == (404, 2.0)  # a bearer token alike
    assert d.guard.delay(HOST) == 2.0  # the successes did not lower the address's penalty
    other = await d.answered(basic=ACME, ip=OTHER)
    assert (other[0], other[3]) == (404, 0.0)  # another address is not in penalty


async def test_a_success_does_not_clear_another_accounts_failures(door):
    d = await door(base_delay=0.0)
    for _ in range(3):
        assert (await d.answered(basic=("beta", "guess")))[0] == 401
    assert (await d.answered(basic=ACME))[0] == 404
    assert (await d.answered(token=TOKEN))[0] == 404
    assert d.guard.guesses(HOST, "beta") == 3
    for _ in range(2):
        assert (await d.answered(basic=("beta", "guess")))[0] == 401
    assert (await d.answered(basic=("beta", PASSWORDS["beta"])))[0] == 429  # the cap, right password or not


async def test_bearer_guesses_are_capped_per_address(door):
    d = await door(base_delay=0.0)
    for n in range(5):
        assert (await d.answered(token=f"guess-{n:034d}"))[0] == 401
    assert (await d.answered(token=TOKEN))[0] == 429  # the address's token guesses are spent
    assert (await d.answered(token=TOKEN, ip=OTHER))[0] == 404
    await d.timers.advance(GUESS_WINDOW)
    assert (await d.answered(token=TOKEN))[0] == 404
    for _ in range(20):  # its own valid token, often: neither capped nor a reset of the guesses
        assert (await d.answered(token=TOKEN))[0] == 404


async def test_unknown_account_wrong_password_and_unknown_token_are_indistinguishable(door):
    d = await door(base_delay=0.0)
    answers = [await d.answered(basic=("nobody", "secret1")), await d.answered(basic=("acme", "nope")),
               await d.answered(token="x" * 40)]
    assert [a[0] for a in answers] == [401, 401, 401]
    assert answers[0][1] == answers[1][1] == answers[2][1]
    keep = ("Content-Type", "WWW-Authenticate", "Cache-Control", "Retry-After")
    assert len({tuple(a[2].get(h) for h in keep) for a in answers}) == 1
    assert (d.guard.failures["api"]["unknown_system_id"], d.guard.failures["api"]["invalid_password"],
            d.guard.failures["api"]["invalid_token"]) == (1, 1, 1)


async def test_concurrent_checks_capped_per_address_and_in_total(door):
    d = await door(checks_per_ip=2, checks=2, guesses_per_minute=100)
    await d.answered(basic=("beta", "wrong"))  # 1 s penalty for 127.0.0.1 from now on
    waiting = [asyncio.create_task(d.get(basic=ACME)) for _ in range(2)]
    deadline = time.monotonic() + PATIENCE
    while d.guard.in_progress(HOST) < 2:  # both checked, waiting their penalty
        await asyncio.sleep(0.01)
        assert time.monotonic() < deadline
    status, body, headers = await d.get(basic=ACME)  # a third at once: refused without a check
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "too_many_logins", "1")
    await d.timers.advance(1.0)
    assert [(await t)[0] for t in waiting] == [404, 404]

    # Every check slot taken (the one scrypt thread held): another address gets 503 at once.
    d2 = await door(checks=1, threads=1)
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    held = asyncio.create_task(d2.guard.executor.run("x", lambda: asyncio.run_coroutine_threadsafe(
        gate.wait(), loop).result(PATIENCE)))
    queued = asyncio.create_task(d2.get(basic=ACME))
    while d2.guard.checking < 1:
        await asyncio.sleep(0.01)
        assert time.monotonic() < deadline
    status, body, headers = await d2.get(basic=ACME, ip=OTHER)
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "busy", "1")
    gate.set()
    await held
    assert (await queued)[0] == 404
    assert (d2.guard.failures["api"]["checks_total"], d.guard.failures["api"]["checks_per_ip"]) == (1, 1)


async def test_refused_logins_are_logged_aggregated_without_password_or_token(door):
    d = await door(base_delay=0.0, guesses_per_minute=100)
    with capture_logs() as logs:
        for _ in range(3):
            await d.answered(basic=("acme", "hunter2-secret"))
        await d.answered(token="tok-" + "9" * 36)
        await d.answered(basic=("s3cret-login-typed", "x"))
    lines = [e for e in logs if e["event"] == "api_auth_failed"]
    assert [(e["reason"], e["account"], e["count"]) for e in lines] == [
        ("invalid_password", "acme", 1), ("invalid_token", "<unknown>", 1), ("unknown_system_id", "<unknown>", 1)]
    text = repr(logs)
    assert "hunter2" not in text and "9" * 36 not in text and "s3cret-login-typed" not in text


async def test_one_guard_for_both_doors_in_the_daemon(mt, build):  # noqa: F811 - fixtures
    """Real time (failed_bind_delay 50 ms): five wrong API passwords for acme from
    127.0.0.1, then an SMPP bind of acme with its right password from the same address is
    refused — the guesses were the account's, whatever door they came through; /metrics has
    both doors' failures."""
    up = await mt.upstream(stat=None)
    d = await mt.daemon(build([connector_entry("op", up.port)], tls=False))
    assert d.api.guard is d.server.guard
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session:
        auth = {"Authorization": "Basic " + base64.b64encode(b"acme:wrong").decode()}
        for _ in range(5):
            async with session.get(f"http://{HOST}:{d.api.port}/v1/messages/1", headers=auth) as resp:
                assert resp.status == 401
    port = d.server.addresses[0][1]
    status = await asyncio.to_thread(smpplib_bind_status, port, "acme", PASSWORDS["acme"])
    assert status == 0x0D  # ESME_RBINDFAIL: the guess limit, right password or not
    text = generate_latest(registry_for(d)).decode()
    assert 'smscenter_logins_failed_total{door="api",reason="invalid_password"} 5.0' in text
    assert 'smscenter_logins_failed_total{door="smpp",reason="guess_limit"} 1.0' in text
    assert 'smscenter_binds_failed_total{reason="guess_limit"} 1.0' in text
