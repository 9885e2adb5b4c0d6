"""Login throttling for every door: password guessing costs the guesser, never the other
partners, and a guesser gets no more tries by alternating doors (an SMPP bind, the API's HTTP
Basic or bearer token): the daemon keeps one ``LoginGuard`` for all of them.

The rules, and why each one:

- **Penalty per IP, for every attempt.** Failed logins from an IP add to its score, which
  decays (halves every ``half_life``). While the score is up, *every* attempt from that IP —
  right password or not, whatever the door — is answered ``base_delay × 2^(score−1)``
  (capped at ``max_delay``) after it arrived. The delay is fixed when the attempt arrives,
  before the password is checked, so the answer's timing says nothing about the password,
  and pacing guesses slowly does not get a quick answer for the right one.
- **A cap of guesses per (IP, login)** that holds however the guesses are paced or
  overlapped: at most ``guesses_per_minute`` checks in any 60 seconds. A check is counted
  when it *starts* (so concurrent attempts cannot all slip in before the first one fails);
  beyond the cap the attempt fails (``guess_limit``), after the penalty delay, without a
  check. A login shared by many credentials (``shared_login``: the API's bearer tokens, one
  key per IP) has only its failed checks kept: a success removes its own check only.
- **A success clears only its own (IP, login) entry**, never the IP's score nor another
  login's guesses (so guessing ``victim`` while logging in as ``own-account`` resets
  nothing).
- **A client that hangs up** before its answer counts as a failure (``hung_up``): leaving
  early saves the guesser nothing.
- **Concurrent checks are capped** per IP (``checks_per_ip``: attempts being checked or
  waiting for their answer) and in total (``checks``: checks queued or running). Beyond
  either: refused at once (``checks_per_ip``, ``checks_total``), without spending scrypt.
- **scrypt runs on its own small thread pool** (``FairExecutor``), never the loop's default
  executor (which storage uses), served fairly by IP: one IP's checks run on at most half
  the threads, and the IP with the fewest checks running goes next.

Each door maps the outcome to its own answer (``smpp/bindguard.py``: SMPP statuses;
``http/api.py``: 401/429/503) and registers its log event (``door``): every failure is
counted per door and reason (``failures``, the metric ``smscenter_logins_failed_total``) and
logged aggregated (one line per IP, reason and known account per interval; never the password,
token or the login as typed). All tables are bounded (LRU), so a flood of addresses or logins
cannot grow them without limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, TypeVar

from smscenter.runtime.floodlog import Tally
from smscenter.runtime.timers import Timers

__all__ = ["AT_ONCE", "FairExecutor", "GUESS_WINDOW", "LoginGuard", "PASSWORD_RIGHT", "REASONS", "address_key"]

T = TypeVar("T")

#: The window of ``guesses_per_minute``.
GUESS_WINDOW = 60.0

#: Why a login failed, whatever the door (a door may add its own, e.g. the API's
#: ``invalid_token``), as labelled in ``smscenter_logins_failed_total``.
REASONS = (
    "unknown_system_id",  # answered as a wrong password
    "invalid_password",
    "ip_not_allowed",
    "guess_limit",  # guesses_per_minute reached for this (IP, login)
    "checks_per_ip",  # checks_per_ip reached: refused at once
    "checks_total",  # checks reached: refused at once
    "hung_up",  # the client left before its answer
)

#: Reasons that prove the password right (the door's own limits said no): not guesses, no
#: penalty.
PASSWORD_RIGHT = frozenset({"bind_type_not_allowed", "max_binds"})
#: Refused at once, before any work, or not an attempt at a password at all: no penalty
#: (the caps are the protection).
AT_ONCE = frozenset({"checks_per_ip", "checks_total", "no_credentials", "malformed_credentials"})

#: A check: ``check(run)`` runs its password check with ``await run(fn, *args)`` (on the
#: guard's pool) and returns ``(result, reason)``: ``reason`` None on success.
Check = Callable[[Callable[..., Awaitable]], Awaitable[tuple[Any, str | None]]]


def address_key(ip: str) -> str:
    """The unit the per-IP limits count by (connection slots, login throttling): an IPv4
    address (also when IPv4-mapped), or an IPv6 /64 — one subscriber's allocation, whose 2^64
    addresses would otherwise each get their own share."""
    ip = ip.split("%")[0]
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FairExecutor:
    """A bounded thread pool whose queue is served fairly by key (the peer IP): one key runs
    on at most half the threads, and the next check to start is from the key with the fewest
    checks running, so a key that floods the queue does not delay another key's check."""

    def __init__(self, workers: int, name: str = "bind-check") -> None:
        self.workers = workers
        #: Threads one key may use at once: at most half, so another key's check can start
        #: at once however many checks one key queued.
        self.per_key = max(1, workers // 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._queues: OrderedDict[str, deque[tuple[Callable, tuple, asyncio.Future]]] = OrderedDict()
        self.running = 0
        self._running_by: dict[str, int] = {}
        self._last: dict[str, int] = {}  # key -> when its last check started (queued or running keys)
        self.queued = 0
        #: Checks started so far (tests read it to see who went before whom).
        self.started = 0

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append((fn, args, fut))
        self.queued += 1
        self._pump()
        return await fut

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running < self.workers and self._queues:
            # The key with the fewest checks running goes next; among those, the one whose
            # last check started longest ago. No key holds more than half the threads.
            ready = [k for k in self._queues if self._running_by.get(k, 0) < self.per_key]
            if not ready:
                break
            key = min(ready, key=lambda k: (self._running_by.get(k, 0), self._last.get(k, -1)))
            queue = self._queues[key]
            fn, args, fut = queue.popleft()
            self.queued -= 1
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            if fut.done():  # its bind was cancelled while it waited
                if key not in self._queues and key not in self._running_by:
                    self._last.pop(key, None)
                continue
            self.running += 1
            self._running_by[key] = self._running_by.get(key, 0) + 1
            self.started += 1
            self._last[key] = self.started
            job = loop.run_in_executor(self._pool, fn, *args)
            job.add_done_callback(lambda job, fut=fut, key=key: self._done(job, fut, key))

    def _done(self, job: asyncio.Future, fut: asyncio.Future, key: str) -> None:
        self.running -= 1
        left = self._running_by[key] - 1
        if left:
            self._running_by[key] = left
        else:
            del self._running_by[key]
            if key not in self._queues:
                self._last.pop(key, None)
        if not fut.done():
            if job.cancelled():
                fut.cancel()
            elif job.exception() is not None:
                fut.set_exception(job.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(job.result())
        self._pump()

    def close(self) -> None:
        for queue in self._queues.values():
            for _, _, fut in queue:
                fut.cancel()
        self._queues.clear()
        self.queued = 0
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Lru(OrderedDict):
    """A dict that forgets its least recently used entries past ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def touch(self, key, default_factory):
        value = self.get(key)
        if value is None:
            value = default_factory()
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


class LoginGuard:
    """Decides when (and whether) a login's password is checked and its answer given."""

    def __init__(
        self,
        timers: Timers,
        *,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        half_life: float = 300.0,
        guesses_per_minute: int = 5,
        checks_per_ip: int = 4,
        checks: int = 32,
        threads: int = 2,
        size: int = 10_000,
        log_interval: float = 10.0,
    ) -> None:
        self.timers = timers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.half_life = half_life
        self.guesses_per_minute = guesses_per_minute
        self.checks_per_ip = checks_per_ip
        self.checks = checks
        self.log_interval = log_interval
        self.executor = FairExecutor(threads)
        self._scores: _Lru = _Lru(size)  # ip -> [score, at]
        self._guesses: _Lru = _Lru(size)  # (ip, login) -> deque of check start times
        self._in_progress: dict[str, int] = {}  # ip -> attempts being checked or waiting
        self.checking = 0  # password checks queued or running
        #: Failures per door, by reason (every reason the door registered starts at 0).
        self.failures: dict[str, Counter[str]] = {}
        self._tallies: dict[str, Tally] = {}

    @classmethod
    def from_settings(cls, server, timers: Timers) -> LoginGuard:
        """The guard ``[server]``'s bind-throttling keys describe (they hold for every door)."""
        return cls(
            timers,
            base_delay=server.failed_bind_delay,
            max_delay=server.max_failed_bind_delay,
            half_life=server.failed_bind_half_life,
            guesses_per_minute=server.bind_guesses_per_minute,
            checks_per_ip=server.bind_checks_per_ip,
            checks=server.bind_checks,
            threads=server.bind_check_threads,
        )

    def door(self, name: str, tally: Tally, reasons: tuple[str, ...] = ()) -> None:
        """Register a door: its failures are counted under ``name`` and logged by ``tally``
        (the door's log event, on ``self.timers`` every ``self.log_interval``); ``reasons``
        the door adds to ``REASONS``. A door registered twice keeps its first tally."""
        if name in self.failures:
            tally.close()
            return
        self.failures[name] = Counter({reason: 0 for reason in (*REASONS, *reasons)})
        self._tallies[name] = tally

    # --- the rules ---------------------------------------------------------------------------

    def score(self, ip: str, now: float | None = None) -> float:
        """The IP's failures, decayed."""
        entry = self._scores.get(ip)
        if entry is None:
            return 0.0
        now = self.timers.now() if now is None else now
        return entry[0] * 0.5 ** (max(0.0, now - entry[1]) / self.half_life)

    def delay(self, ip: str, now: float | None = None) -> float:
        """How long after it arrives an attempt from ``ip`` is answered (0: not in penalty)."""
        failures = math.floor(self.score(ip, now) + 0.5)
        if failures <= 0 or self.base_delay <= 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, 32))

    def guesses(self, ip: str, login: str, now: float | None = None) -> int:
        """Password checks for (ip, login) in the last ``GUESS_WINDOW`` seconds."""
        starts = self._guesses.get((ip, login))
        if not starts:
            return 0
        now = self.timers.now() if now is None else now
        while starts and starts[0] <= now - GUESS_WINDOW:
            starts.popleft()
        return len(starts)

    def next_guess_in(self, ip: str, login: str) -> float:
        """Seconds until (ip, login) may have a check again (0: now)."""
        now = self.timers.now()
        if self.guesses(ip, login, now) < self.guesses_per_minute:
            return 0.0
        return max(0.0, self._guesses[(ip, login)][0] + GUESS_WINDOW - now)

    def in_progress(self, ip: str) -> int:
        return self._in_progress.get(ip, 0)

    # --- one attempt -------------------------------------------------------------------------

    async def attempt(
        self,
        door: str,
        ip: str,
        login: str,
        check: Check,
        still_there: Callable[[], bool],
        *,
        account: str | None = None,
        shared_login: bool = False,
    ) -> tuple[Any, str | None]:
        """Run one login through the rules: ``(result, None)`` on success, else ``(None,
        reason)``.

        ``check`` decides the login (see ``Check``); ``still_there()`` says whether the
        client is still connected. ``account`` labels the log line (a known account, never
        the peer's free text). ``shared_login``: ``login`` stands for many credentials (see
        the module's notes).
        """
        if self._in_progress.get(ip, 0) >= self.checks_per_ip:
            return None, self.refuse(door, ip, "checks_per_ip", account)
        if self.checking >= self.checks:
            return None, self.refuse(door, ip, "checks_total", account)
        now = self.timers.now()
        answer_at = now + self.delay(ip, now)
        self._in_progress[ip] = self._in_progress.get(ip, 0) + 1
        result: Any = None
        reason: str | None = None
        try:
            if self.guesses(ip, login, now) >= self.guesses_per_minute:
                reason = "guess_limit"
            else:
                starts = self._guesses.touch((ip, login), lambda: deque(maxlen=self.guesses_per_minute))
                starts.append(now)
                self.checking += 1
                try:
                    result, reason = await check(lambda fn, *args: self.executor.run(ip, fn, *args))
                finally:
                    self.checking -= 1
            wait = answer_at - self.timers.now()
            if wait > 0:
                await self.timers.sleep(wait)
        finally:
            left = self._in_progress[ip] - 1
            if left:
                self._in_progress[ip] = left
            else:
                del self._in_progress[ip]
        if not still_there():
            reason = "hung_up"
        if reason is None:
            self._forget(ip, login, now, shared_login)  # its own entry only
            return result, None
        self._failure(door, ip, reason, account)
        if reason in PASSWORD_RIGHT:
            self._forget(ip, login, now, shared_login)
        return None, reason

    def _forget(self, ip: str, login: str, started: float, shared_login: bool) -> None:
        """A check that proved its credentials right is no guess: (ip, login)'s entry goes
        (only the check's own start when the login is shared)."""
        if not shared_login:
            self._guesses.pop((ip, login), None)
            return
        starts = self._guesses.get((ip, login))
        if starts is not None:
            try:
                starts.remove(started)
            except ValueError:
                pass

    def refuse(self, door: str, ip: str, reason: str, account: str | None = None) -> str:
        """Count and log a failure the door decided without an attempt (e.g. no credentials
        at all); returns ``reason``. Reasons of ``AT_ONCE`` add no penalty."""
        self._failure(door, ip, reason, account)
        return reason

    def _failure(self, door: str, ip: str, reason: str, account: str | None) -> None:
        self.failures[door][reason] += 1
        self._tallies[door].add(peer=ip, reason=reason, account=account or "<unknown>")
        if reason in PASSWORD_RIGHT or reason in AT_ONCE:
            return
        now = self.timers.now()
        entry = self._scores.touch(ip, lambda: [0.0, now])
        entry[0] = self.score(ip, now) + 1.0
        entry[1] = now

    def close(self) -> None:
        self.executor.close()
        for tally in self._tallies.values():
            tally.close()
