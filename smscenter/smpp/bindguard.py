"""Bind throttling: password guessing costs the guesser, never the other partners.

The rules, and why each one:

- **Penalty per IP, for every bind.** Failed binds from an IP add to its score, which decays
  (halves every ``failed_bind_half_life``). While the score is up, *every* bind from that IP —
  right password or not — is answered ``failed_bind_delay × 2^(score−1)`` (capped at
  ``max_failed_bind_delay``) after it arrived. The delay is fixed when the bind arrives, before
  the password is checked, so the answer's timing says nothing about the password, and pacing
  guesses slowly does not get a quick answer for the right one.
- **A cap of guesses per (IP, system_id)** that holds however the guesses are paced or
  overlapped: at most ``bind_guesses_per_minute`` password checks in any 60 seconds. A check is
  counted when it *starts* (so concurrent binds cannot all slip in before the first one fails);
  beyond the cap the bind gets ESME_RBINDFAIL, after the penalty delay, without a check.
- **A success clears only its own (IP, system_id) entry**, never the IP's score nor another
  account's guesses (so guessing ``victim`` while binding ``own-account`` does not reset
  anything).
- **A client that hangs up** before its answer counts as a failure: leaving early saves the
  guesser nothing.
- **Concurrent checks are capped** per IP (``bind_checks_per_ip``: binds being checked or
  waiting for their answer) and in total (``bind_checks``: password checks queued or running).
  Beyond either: ESME_RBINDFAIL at once, without spending scrypt on it.
- **scrypt runs on its own small thread pool** (``bind_check_threads``), never the loop's
  default executor (which storage uses), and checks waiting for a thread are served
  fairly by IP: one IP's checks run on at most half the threads, and the IP with the fewest
  checks running goes next. 300 checks queued from one address leave a thread free for
  another address's check.

Every failure is counted by reason (``smscenter_binds_failed_total{reason}``) and logged
aggregated (one line per IP, reason and known account per interval). All tables are bounded
(LRU), so a flood of addresses or system_ids cannot grow them without limit.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, TypeVar

import structlog

from protocol.constants import CommandStatus

from smscenter.runtime.floodlog import Tally
from smscenter.runtime.timers import Timers

log = structlog.get_logger("smscenter.server")

__all__ = ["BindGuard", "FairExecutor", "REASONS", "GUESS_WINDOW"]

T = TypeVar("T")

#: The window of ``bind_guesses_per_minute``.
GUESS_WINDOW = 60.0

#: Why a bind failed, as labelled in ``smscenter_binds_failed_total``.
REASONS = (
    "unknown_system_id",  # answered ESME_RINVPASWD, like a wrong password
    "invalid_password",
    "ip_not_allowed",
    "bind_type_not_allowed",
    "max_binds",
    "guess_limit",  # bind_guesses_per_minute reached for this (IP, system_id)
    "checks_per_ip",  # bind_checks_per_ip reached: refused at once
    "checks_total",  # bind_checks reached: refused at once
    "hung_up",  # the client left before its answer
)

#: Reasons that prove the password right: not guesses, no penalty.
_PASSWORD_RIGHT = frozenset({"bind_type_not_allowed", "max_binds"})
#: Refused at once, before any work: no penalty either (the caps are the protection).
_AT_ONCE = frozenset({"checks_per_ip", "checks_total"})


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


class BindGuard:
    """Decides when (and whether) a bind's password is checked and its answer sent."""

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
        self.executor = FairExecutor(threads)
        self._scores: _Lru = _Lru(size)  # ip -> [score, at]
        self._guesses: _Lru = _Lru(size)  # (ip, system_id) -> deque of check start times
        self._in_progress: dict[str, int] = {}  # ip -> binds being checked or waiting
        self.checking = 0  # password checks queued or running
        self.failed: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self._tally = Tally(log, "bind_refused", timers, interval=log_interval)

    # --- the rules ---------------------------------------------------------------------------

    def score(self, ip: str, now: float | None = None) -> float:
        """The IP's failures, decayed."""
        entry = self._scores.get(ip)
        if entry is None:
            return 0.0
        now = self.timers.now() if now is None else now
        return entry[0] * 0.5 ** (max(0.0, now - entry[1]) / self.half_life)

    def delay(self, ip: str, now: float | None = None) -> float:
        """How long after it arrives a bind from ``ip`` is answered (0: not in penalty)."""
        failures = math.floor(self.score(ip, now) + 0.5)
        if failures <= 0 or self.base_delay <= 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, 32))

    def guesses(self, ip: str, system_id: str, now: float | None = None) -> int:
        """Password checks for (ip, system_id) in the last ``GUESS_WINDOW`` seconds."""
        starts = self._guesses.get((ip, system_id))
        if not starts:
            return 0
        now = self.timers.now() if now is None else now
        while starts and starts[0] <= now - GUESS_WINDOW:
            starts.popleft()
        return len(starts)

    def in_progress(self, ip: str) -> int:
        return self._in_progress.get(ip, 0)

    # --- one bind ----------------------------------------------------------------------------

    async def bind(
        self,
        ip: str,
        system_id: str,
        check: Callable[[Callable[..., Awaitable]], Awaitable[tuple[Any, CommandStatus, str | None]]],
        still_there: Callable[[], bool],
        *,
        account: str | None = None,
    ) -> tuple[Any, CommandStatus]:
        """Run one bind through the rules.

        ``check(run)`` decides the bind, running its password check with ``await run(fn,
        *args)`` (on the guard's pool); it returns ``(result, status, reason)`` — ``reason`` one
        of ``REASONS`` when status is not ESME_ROK. ``still_there()`` says whether the client
        is still connected. ``account`` labels the log line (a known system_id, never the
        peer's free text). Returns ``(result, status)``; ``result`` is ``None`` on failure.
        """
        if self._in_progress.get(ip, 0) >= self.checks_per_ip:
            return self._refused(ip, system_id, "checks_per_ip", account)
        if self.checking >= self.checks:
            return self._refused(ip, system_id, "checks_total", account)
        now = self.timers.now()
        answer_at = now + self.delay(ip, now)
        self._in_progress[ip] = self._in_progress.get(ip, 0) + 1
        result: Any = None
        status = CommandStatus.ESME_RBINDFAIL
        reason: str | None = None
        try:
            if self.guesses(ip, system_id, now) >= self.guesses_per_minute:
                reason = "guess_limit"
            else:
                starts = self._guesses.touch((ip, system_id), lambda: deque(maxlen=self.guesses_per_minute))
                starts.append(now)
                self.checking += 1
                try:
                    result, status, reason = await check(lambda fn, *args: self.executor.run(ip, fn, *args))
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
        if reason is None and status == CommandStatus.ESME_ROK:
            self._guesses.pop((ip, system_id), None)  # its own entry only
            return result, status
        reason = reason or "invalid_password"
        self._failure(ip, system_id, reason, account)
        if reason in _PASSWORD_RIGHT:
            self._guesses.pop((ip, system_id), None)
        return None, (CommandStatus.ESME_RBINDFAIL if status == CommandStatus.ESME_ROK else status)

    def _refused(self, ip: str, system_id: str, reason: str, account: str | None) -> tuple[None, CommandStatus]:
        self._failure(ip, system_id, reason, account)
        return None, CommandStatus.ESME_RBINDFAIL

    def _failure(self, ip: str, system_id: str, reason: str, account: str | None) -> None:
        self.failed[reason] += 1
        self._tally.add(peer=ip, reason=reason, account=account or "<unknown>")
        if reason in _PASSWORD_RIGHT or reason in _AT_ONCE:
            return
        now = self.timers.now()
        entry = self._scores.touch(ip, lambda: [0.0, now])
        entry[0] = self.score(ip, now) + 1.0
        entry[1] = now

    def close(self) -> None:
        self.executor.close()
        self._tally.close()
