"""The MT queue: stored messages go upstream through their route's connectors.

The durable queue is the ``parts`` table; this module keeps the working copy in memory and
rebuilds it from the table at start (``load``), so a restart loses nothing. What it
guarantees:

- order per (account, destination): a number's messages from one account go out one after
  the other, while different numbers go in parallel (as many as the connectors' windows);
- failover: a connector that is down, times out, or answers with a temporary error hands
  the part to the next connector of the route; when all fail, the message waits (with
  exponential backoff) and keeps its place in its number's line;
- permanent upstream errors end the message (REJECTED) and the partner gets its receipt;
- a message whose validity ends before it could be sent ends EXPIRED and is never sent;
- scheduled messages (``not_before``) wait in a timer heap, not in a worker;
- marketing goes only inside its send window (``windows``): checked when it leaves the
  heap and again by the connector right before its first part is written, so a window that
  closes while the queue drains (or while messages wait behind the connector's rate) sends
  the rest back to the heap until the next opening. ``poke()`` re-reads the timers after
  the clock jumped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from datetime import datetime, timezone
from dataclasses import dataclass, field

import structlog

from protocol import pdu as P
from protocol.constants import CommandStatus, MessageState
from protocol.receipt import MessageIdError, normalize_resp_id
from storage.schema import PART_QUEUED, PART_SUBMITTED
from storage.store import Store, SubmitResult

from .connector import Connector, ConnectorDown, NotWanted
from .link import LinkClosed, ResponseTimeout
from .submit import PlannedMessage, with_source

log = structlog.get_logger("smscenter.dispatch")

#: Upstream statuses worth another try (elsewhere or later); any other error is final.
TEMPORARY = frozenset(
    {
        CommandStatus.ESME_RSYSERR,
        CommandStatus.ESME_RMSGQFUL,
        CommandStatus.ESME_RTHROTTLED,
        CommandStatus.ESME_RSUBMITFAIL,
        CommandStatus.ESME_RX_T_APPN,
        CommandStatus.ESME_RUNKNOWNERR,
    }
)
DEFERRED = "deferred"  # _send's answer for a message put back to wait for its window
RETRY_MIN = 2.0
RETRY_MAX = 300.0


@dataclass(eq=False)
class QueuedMessage:
    id: int
    account: str
    dest_hash: bytes
    connectors: tuple[str, ...]
    not_before: float
    expires_at: float
    parts: list[tuple[int, P.SubmitSm]]  # (part_no, pdu) still to send, in order
    attempts: int = 0
    next_index: int = 0  # parts before this one are done (submitted or final)
    dest: str = ""  # E.164, in memory only: for the send-window check at send time
    marketing: bool = False

    @property
    def key(self) -> tuple[str, bytes]:
        return (self.account, self.dest_hash)

    @classmethod
    def from_plan(cls, plan: PlannedMessage) -> "QueuedMessage":
        """The queue entry of a message just stored."""
        return cls(
            plan.id, plan.account, plan.dest_hash, plan.connectors, plan.not_before, plan.expires_at,
            [(part.part_no, part.pdu) for part in plan.parts],
            dest=plan.dest, marketing=plan.category == "marketing",
        )


@dataclass(eq=False)
class _Line:
    """One (account, destination) line: its messages in order; busy while one is out."""

    queue: deque = field(default_factory=deque)
    busy: bool = False


class Dispatcher:
    def __init__(
        self,
        connectors: dict[str, Connector],
        store: Store,
        *,
        workers: int | None = None,
        clock=time.time,
        response_timeout: float = 30.0,
    ) -> None:
        self.connectors = connectors
        self.store = store
        self.clock = clock
        self.response_timeout = response_timeout
        capacity = sum(c.config.window * c.config.binds for c in connectors.values()) or 1
        self.worker_count = workers or min(1024, max(16, 2 * capacity))
        self._lines: dict[tuple[str, bytes], _Line] = {}
        self._ready: deque[tuple[str, bytes]] = deque()
        # Idle workers, each waiting on its own future: a line that becomes ready wakes one
        # of them. (One shared Event woke every idle worker for each line — a hundred task
        # switches to hand out one message.)
        self._idle: deque[asyncio.Future] = deque()
        self._timers: list[tuple[float, int, QueuedMessage, bool]] = []
        self._timer_seq = itertools.count()
        self._timer_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._cancelled: set[int] = set()
        self.stats = {"sent": 0, "failed": 0, "expired": 0, "retried": 0, "window_deferred": 0}
        self.windows = None  # routing.windows.SendWindows: marketing re-checked at send time
        #: Called with the destination's hash when an upstream says the number is invalid.
        self.on_invalid_number = None

    # --- feeding ----------------------------------------------------------------------------

    def enqueue(self, msg: QueuedMessage) -> None:
        """Add a stored message; it waits for its ``not_before`` and its line."""
        if msg.not_before > self.clock():
            # Comes back when it may go, or when its validity ends (to expire it) if sooner.
            self._at(min(msg.not_before, msg.expires_at), msg, head=False)
        else:
            self._append(msg, head=False)

    def cancel(self, message_id: int) -> QueuedMessage | None:
        """Take a message out of the queue if none of it left yet (cancel_sm). Returns it
        (for ``restore``), or None when it is not waiting here."""
        for key, line in self._lines.items():
            for msg in line.queue:
                if msg.id == message_id and msg.next_index == 0 and not (line.busy and line.queue[0] is msg):
                    line.queue.remove(msg)
                    if not line.queue and not line.busy:
                        del self._lines[key]
                    return msg
        for _, _, msg, _ in self._timers:
            if msg.id == message_id and msg.next_index == 0 and message_id not in self._cancelled:
                self._cancelled.add(message_id)
                return msg
        return None

    def restore(self, msg: QueuedMessage) -> None:
        """Undo ``cancel`` (the stored cancel did not happen): the message waits again (at
        the end of its number's line if it had left the timers)."""
        if msg.id in self._cancelled:
            self._cancelled.discard(msg.id)
        else:
            self.enqueue(msg)

    def poke(self) -> None:
        """Look at the timers again now: for a clock that jumped (tests, or an operator's
        correction), rather than wait for the delay computed before the jump."""
        self._timer_event.set()

    def held(self) -> int:
        """Marketing messages waiting for their send window (or schedule); not those
        cancelled meanwhile (they leave the timers only when their time comes)."""
        now = self.clock()
        return sum(
            1
            for when, _, msg, head in self._timers
            if not head and msg.marketing and when > now and msg.id not in self._cancelled
        )

    @property
    def queued(self) -> int:
        waiting = len(self._timers) - len(self._cancelled)  # cancelled ones are still in the heap
        return sum(len(line.queue) for line in self._lines.values()) + waiting

    def _append(self, msg: QueuedMessage, head: bool) -> None:
        line = self._lines.get(msg.key)
        if line is None:
            line = self._lines[msg.key] = _Line()
        if head:
            # A message back from its retry wait: it reopens its line, ahead of the rest.
            line.queue.appendleft(msg)
            line.busy = False
        else:
            line.queue.append(msg)
        if not line.busy and (head or len(line.queue) == 1):
            self._mark_ready(msg.key)

    def _reopen(self, key) -> None:
        line = self._lines.get(key)
        if line is None:
            return
        line.busy = False
        if line.queue:
            self._mark_ready(key)
        else:
            del self._lines[key]

    def _mark_ready(self, key) -> None:
        """Queue a line for a worker and wake one idle worker, if any."""
        self._ready.append(key)
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():  # a worker cancelled at stop leaves its future behind
                waiter.set_result(None)
                return

    def _at(self, when: float, msg: QueuedMessage, head: bool) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), msg, head))
        self._timer_event.set()

    # --- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"dispatch-{i}") for i in range(self.worker_count)]
        self._tasks.append(loop.create_task(self._timer_loop(), name="dispatch-timers"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, msg, head = heapq.heappop(self._timers)
                if msg.id in self._cancelled:
                    self._cancelled.discard(msg.id)
                    if head:  # it held its line closed while waiting: reopen it
                        self._reopen(msg.key)
                    continue
                self._append(msg, head)
            self._timer_event.clear()
            delay = self._timers[0][0] - now if self._timers else None
            try:
                async with asyncio.timeout(delay):
                    await self._timer_event.wait()
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._ready:  # another worker may have taken the line it was woken for
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
            key = self._ready.popleft()
            line = self._lines.get(key)
            if line is None or line.busy or not line.queue:
                continue
            line.busy = True
            msg = line.queue[0]
            try:
                done = await self._send(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug must not stop the queue
                log.exception("dispatch_failed", message_id=msg.id)
                done = False
                self._retry_later(msg)
            if line.queue and line.queue[0] is msg:
                line.queue.popleft()
            if done is False:
                continue  # the line stays busy until the message is back from its wait
            line.busy = False
            if line.queue:
                self._ready.append(key)  # this worker goes on with the ready lines: none to wake
            else:
                self._lines.pop(key, None)

    async def _send(self, msg: QueuedMessage) -> bool | str:
        """Send the message's remaining parts. True when it left the queue (all parts
        submitted or the message ended); False when it was put back for a retry (its line
        stays closed behind it); ``DEFERRED`` when it went back to wait for its send window
        (its line goes on)."""
        now = self.clock()
        if now >= msg.expires_at:
            self._finish(msg, MessageState.EXPIRED, 0, None)
            self.stats["expired"] += 1
            return True
        windowed = msg.marketing and self.windows is not None and bool(msg.dest)
        if windowed and msg.next_index == 0 and not self._window_open(msg):
            return self._defer(msg)
        while msg.next_index < len(msg.parts):
            part_no, pdu = msg.parts[msg.next_index]
            # The window may also close while the message waits behind the connector's rate:
            # the connector asks again right before writing the first part (the later parts
            # of a message that started follow it).
            check = (lambda: self._window_open(msg)) if windowed and msg.next_index == 0 else None
            outcome = await self._send_part(msg, pdu, check)
            if outcome is DEFERRED:
                return self._defer(msg)
            if outcome is None:  # every connector failed for now
                self._retry_later(msg)
                return False
            status, connector, upstream_id = outcome
            if status == CommandStatus.ESME_ROK:
                self.store.record_submit(
                    SubmitResult(msg.id, part_no, PART_SUBMITTED, connector, upstream_id, msg.attempts + 1, now)
                ).add_done_callback(_log_failure)
                msg.next_index += 1
                self.stats["sent"] += 1
                continue
            self._finish(msg, MessageState.REJECTED, status, connector)
            self.stats["failed"] += 1
            if status == CommandStatus.ESME_RINVDSTADR and self.on_invalid_number is not None:
                self.on_invalid_number(msg.dest_hash)
            return True
        return True

    def _window_open(self, msg: QueuedMessage) -> bool:
        decision = self.windows.decide(msg.dest, datetime.fromtimestamp(self.clock(), timezone.utc))
        if not decision.open:
            msg.not_before = decision.next_open.timestamp()
        return decision.open

    def _defer(self, msg: QueuedMessage) -> str:
        """Back to wait for the next opening (set in ``msg.not_before`` by ``_window_open``):
        alerts and this number's later messages are not held behind it."""
        self.stats["window_deferred"] += 1
        self.enqueue(msg)
        return DEFERRED

    async def _send_part(
        self, msg: QueuedMessage, pdu: P.SubmitSm, still_wanted=None
    ) -> tuple[int, str, str | None] | str | None:
        """Try the route's connectors in failover order: (status, connector, upstream id)
        for the first answer that is not temporary, None if all failed for now, or
        ``DEFERRED`` if ``still_wanted`` said no when the part's turn came."""
        candidates = [self.connectors[n] for n in msg.connectors if n in self.connectors]
        up = [c for c in candidates if c.is_up] or candidates[:1]
        for connector in up:
            cfg = connector.config
            ton, npi = _source_ton_npi(pdu, cfg)
            try:
                remaining = max(0.1, msg.expires_at - self.clock())
                part = with_source(pdu, ton, npi, cfg.dest_ton_npi)
                resp = await connector.submit(
                    part, timeout=min(remaining, self.response_timeout), still_wanted=still_wanted
                )
            except NotWanted:
                return DEFERRED
            except (ConnectorDown, ResponseTimeout, LinkClosed) as exc:
                log.info("submit_retry_elsewhere", message_id=msg.id, connector=connector.name, reason=type(exc).__name__)
                continue
            status = resp.command_status
            if status == CommandStatus.ESME_ROK:
                try:
                    upstream_id = normalize_resp_id(resp.message_id, cfg.message_id)
                except (MessageIdError, AttributeError):
                    log.warning("upstream_id_unparsable", connector=connector.name, message_id=msg.id)
                    upstream_id = getattr(resp, "message_id", "") or None
                return status, connector.name, upstream_id
            if status in TEMPORARY:
                log.info("submit_temporary_error", message_id=msg.id, connector=connector.name,
                         status=CommandStatus.name_of(status))
                continue
            log.info("submit_refused", message_id=msg.id, connector=connector.name, status=CommandStatus.name_of(status))
            return status, connector.name, None
        return None

    def _retry_later(self, msg: QueuedMessage) -> None:
        msg.attempts += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(msg.attempts - 1, 16))
        when = self.clock() + delay
        if when >= msg.expires_at:
            when = msg.expires_at  # comes back once more, to end EXPIRED
        self.stats["retried"] += 1
        # Its line stays busy meanwhile, so later messages to the number cannot overtake it.
        self._at(when, msg, head=True)

    def _finish(self, msg: QueuedMessage, state: MessageState, error: int, connector: str | None) -> None:
        """End the message's remaining parts in ``state`` (the store settles the message and
        queues the partner's receipt in the same transaction)."""
        now = self.clock()
        for part_no, _ in msg.parts[msg.next_index :]:
            self.store.record_submit(
                SubmitResult(msg.id, part_no, int(state), connector, None, msg.attempts, now, error)
            ).add_done_callback(_log_failure)
        msg.next_index = len(msg.parts)


def _source_ton_npi(pdu: P.SubmitSm, cfg) -> tuple[int, int]:
    """TON/NPI for the sender as this connector wants it (aggregators disagree)."""
    setting = cfg.source_ton_npi
    addr = pdu.source_addr
    if addr.isdigit():
        pair = setting.short_code if len(addr) <= 6 else setting.international
    else:
        pair = setting.alphanumeric
    return pair[0], pair[1]


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("store_write_failed", error=str(fut.exception()))


__all__ = ["Dispatcher", "QueuedMessage", "PART_QUEUED"]
