"""Time for the components that wait: the clock and the timers, injected together.

Components that run timers (links, connectors, the dispatcher, the outbox, MO reassembly,
housekeeping, the store's linger) take a ``Timers`` instead of calling the event loop's timers
themselves, so that a test can run them on virtual time: ``FakeTimers.advance(3600)`` makes an
hour pass at once, firing every timer due meanwhile in order, instead of sleeping. The daemon
uses ``RealTimers`` (the loop's timers; ``now()`` is the wall clock it stamps messages with).

Both offer the same four things:

- ``now()``: seconds (epoch for ``RealTimers()``; any clock passed in);
- ``call_later(delay, callback, *args)``: a handle with ``cancel()``;
- ``await sleep(delay)``;
- ``async with timeout(delay)``: ``TimeoutError`` when the block runs past ``delay``.

On them, ``every(interval, fn, timers, failed)`` is the one periodic loop (housekeeping, the
blacklist refresh, MO reassembly expiry, the systemd watchdog): ``fn`` every ``interval``,
its failures logged once per cause, stopped by ``stop()``.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

from smscenter.runtime.floodlog import ErrorLog


class Handle(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Handle: ...

    async def sleep(self, delay: float) -> None: ...

    def timeout(self, delay: float | None): ...


class RealTimers:
    """The running event loop's timers, with ``clock`` as ``now()``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.now = clock

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))

    def timeout(self, delay: float | None):
        return asyncio.timeout(None if delay is None else max(0.0, delay))


class _FakeHandle:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _FakeTimeout:
    """``asyncio.timeout`` on virtual time: the block's task is cancelled when the clock
    passes the deadline, and the cancellation comes out as ``TimeoutError``."""

    def __init__(self, timers: "FakeTimers", delay: float | None) -> None:
        self._timers = timers
        self._delay = delay
        self._handle: _FakeHandle | None = None
        self._task: asyncio.Task | None = None
        self._expired = False

    async def __aenter__(self) -> "_FakeTimeout":
        self._task = asyncio.current_task()
        if self._delay is not None:
            self._handle = self._timers.call_later(self._delay, self._expire)
        return self

    def _expire(self) -> None:
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise TimeoutError from exc
        return False


class FakeTimers:
    """Virtual time for tests: nothing fires until ``advance`` moves the clock."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._heap: list[tuple[float, int, _FakeHandle]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        """Usable where a plain clock callable is expected."""
        return self._now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _FakeHandle:
        handle = _FakeHandle(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        return handle

    async def sleep(self, delay: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        handle = self.call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()

    def timeout(self, delay: float | None) -> _FakeTimeout:
        return _FakeTimeout(self, delay)

    @property
    def pending(self) -> int:
        """Timers still to fire (cancelled ones excluded)."""
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    def next_due(self) -> float | None:
        for when, _, handle in sorted(self._heap):
            if not handle.cancelled:
                return when
        return None

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move the clock ``seconds`` forward, firing every timer due on the way at its own
        time, in order, and letting the loop run what each one woke (``settle`` turns)."""
        target = self._now + max(0.0, seconds)
        await self.settle(settle)
        while self._heap and self._heap[0][0] <= target:
            when, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self._now = max(self._now, when)
            handle.callback(*handle.args)
            await self.settle(settle)
        self._now = target
        await self.settle(settle)

    async def jump(self, seconds: float, *, settle: int = 20) -> None:
        """Move the clock ``seconds`` forward at once, as a host that was suspended sees it,
        then fire what fell due meanwhile, in order, each once (a timer re-armed by one of
        them for a time already past fires too). Unlike ``advance``, what the timers start
        meanwhile (reconnects, keep-alives on real sockets) does not run once per period:
        for hours of nothing, where ``advance`` would replay every period of every timer."""
        self._now += max(0.0, seconds)
        await self.advance(0.0, settle=settle)

    @staticmethod
    async def settle(turns: int = 20) -> None:
        """Let the event loop run ready callbacks for a few turns (no real time passes)."""
        for _ in range(turns):
            await asyncio.sleep(0)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Every:
    """``fn()`` (plain or async) every ``interval`` seconds on ``timers``, from ``start()``
    until ``stop()`` (which cancels a run under way: the callers' runs are transactions or
    reads that a stop may cut). The wait starts when a run ends, so runs never overlap.

    - ``failed``: the event a failure of ``fn`` is logged under, once per cause (``ErrorLog``:
      the traceback the first time, or one warning line with ``with_traceback=False``; the
      same cause again only counted, in ``errors_repeated`` every ``log_interval``); the next
      run comes at its time. None: a failure ends the loop, as a bug should.
    - ``at_once``: run once at the start, before the first wait.
    - ``as_long_as``: checked before each wait; false ends the loop (``start()`` again
      restarts it), for work that exists only sometimes (MO parts waiting for the rest).
    """

    def __init__(self, interval: float, fn: Callable[[], Awaitable[Any] | Any], timers: Timers,
                 failed: str | None = None, *, name: str = "every", at_once: bool = False,
                 as_long_as: Callable[[], bool] | None = None, with_traceback: bool = True,
                 log_interval: float = 60.0) -> None:
        self.interval = interval
        self.fn = fn
        self.timers = timers
        self.failed = failed
        self.name = name
        self.at_once = at_once
        self.as_long_as = as_long_as
        self.with_traceback = with_traceback
        self._errors = ErrorLog(timers, log_interval) if failed is not None else None
        self._task: asyncio.Task | None = None

    def start(self) -> "Every":
        """Start the loop (in the running event loop) unless it runs already."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)
        return self

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        if self.at_once:
            await self._run()
        while self.as_long_as is None or self.as_long_as():
            await self.timers.sleep(self.interval)
            await self._run()

    async def _run(self) -> None:
        try:
            result = self.fn()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if self._errors is None or self.failed is None:
                raise
            self._errors.exception(self.failed, exc, with_traceback=self.with_traceback)


def every(interval: float, fn: Callable[[], Awaitable[Any] | Any], timers: Timers,
          failed: str | None = None, **options: Any) -> Every:
    """``Every(interval, fn, timers, failed, **options)``, started (see ``Every``)."""
    return Every(interval, fn, timers, failed, **options).start()


__all__ = ["Every", "FakeTimers", "RealTimers", "Timers", "every"]


def utc_stamp(ts: float | None) -> str:
    """A UNIX time as the verbs print it (UTC, to the second); ``-`` for none."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
