"""The MT queue: stored messages go upstream through their route's connectors.

The queue is the database (the ``parts`` table, in the due order of ``ix_parts_due``):
memory holds only a bounded *working set* of due messages (``[queue] working_set``), so the
daemon's size does not follow the queue's depth. What it guarantees:

- order per (account, destination): a number's messages from one account go out one after
  the other, while different numbers go in parallel (as many as the connectors' windows);
- failover: a connector that is down, times out, or answers with a temporary error hands
  the part to the next connector of the route; when all fail, the message waits (with
  exponential backoff) and keeps its place in its number's line;
- permanent upstream errors end the message (REJECTED) and the partner gets its receipt;
- a message whose validity ends before it could be sent ends EXPIRED and is never sent;
- scheduled, held (send window) and backed-off messages wait in the database, their next
  due time in ``parts.next_attempt_at``; one timer, for the earliest, wakes the loader;
- marketing goes only inside its send window (``windows``): checked when it is loaded and
  again by the connector right before its first part is written, so a window that closes
  while the queue drains sends the rest back to the database until the next opening.
  ``poke()`` re-reads the timer after the clock jumped.

How the working set is fed (``_load_pass``): a cursor walks the waiting parts in
``(next_attempt_at, message_id)`` order, one page at a time, as the working set drains or
when the timer fires. New submits go straight into the working set while it has room and
nothing due is left behind the cursor; otherwise they stay in the database ("spill") until
the loader reaches them. Any write that moves a message's due time (retry, window, a line
closed behind a retry) moves the cursor back to it once committed, and the loader skips the
messages whose writes are still in flight, so nothing is loaded twice or left behind.

Order across a retry: a message that backs off closes its line until it comes back. The
line's other resident messages leave memory with their due time moved to the retry's (so
they sort right after it), and ``_blocked`` remembers the line (bounded; rebuilt from the
database at start) so that later messages to it — new submits or loaded ones — wait behind
it in the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime, timezone
from dataclasses import dataclass, field

import structlog

from protocol import pdu as P
from protocol.constants import CommandStatus, MessageState
from protocol.idreadings import read_resp_id
from protocol.receipt import MessageIdError, normalize_resp_id
from storage.schema import PART_QUEUED, PART_SUBMITTED
from storage.store import Store, SubmitResult

from smscenter.pipeline.ports import AnswerTimeout, NotWanted, SessionClosed, Upstream, UpstreamDown
from smscenter.pipeline.submit import PlannedMessage, with_source
from smscenter.runtime.floodlog import Tally
from smscenter.runtime.timers import RealTimers, Timers

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


_START = (float("-inf"), 0)  # the due order's beginning
_NEVER = (float("inf"), 0)
_LAST_ID = (1 << 63) - 1  # every message id is at most this (64-bit signed)
_INF = float("inf")


class Dispatcher:
    def __init__(
        self,
        connectors: dict[str, Upstream],
        store: Store,
        *,
        workers: int | None = None,
        clock=time.time,
        timers: Timers | None = None,
        response_timeout: float = 30.0,
        working_set: int = 10_000,
        page: int = 1_000,
    ) -> None:
        self.connectors = connectors
        self.store = store
        self.clock = clock
        self.timers = timers if timers is not None else RealTimers(clock)
        self._tallies: dict[str, Tally] = {}
        self.response_timeout = response_timeout
        capacity = sum(c.config.window * c.config.binds for c in connectors.values()) or 1
        self.worker_count = workers or min(1024, max(16, 2 * capacity))
        self.working_set = max(1, working_set)
        self.page = max(1, min(page, self.working_set))
        #: Loaded again once this many places are free (not one page per message sent).
        self._refill_step = max(1, min(self.page, self.working_set // 4))
        self._lines: dict[tuple[str, bytes], _Line] = {}
        self._ready: deque[tuple[str, bytes]] = deque()
        # Idle workers, each waiting on its own future: a line that becomes ready wakes one
        # of them. (One shared Event woke every idle worker for each line — a hundred task
        # switches to hand out one message.)
        self._idle: deque[asyncio.Future] = deque()
        self._tasks: list[asyncio.Task] = []
        #: The working set: messages in memory (in a line, or being sent), by id.
        self._resident: dict[int, QueuedMessage] = {}
        #: Messages that left memory with a write not committed yet (count of writes): the
        #: loader must not read their old rows.
        self._writing: dict[int, int] = {}
        self._written_while_loading: set[int] = set()
        #: cancel_sm under way: the message (None when it was not in memory), until the store
        #: said (``cancelled``) or the pipeline gave it back (``restore``).
        self._cancelling: dict[int, QueuedMessage | None] = {}
        self._cancel_skipped: set[int] = set()
        #: Lines closed behind a retry: key -> (id of the message retrying, its due time).
        self._blocked: dict[tuple[str, bytes], tuple[int, float]] = {}
        self._blockers: dict[int, tuple[str, bytes]] = {}
        self.blocked_cap = max(1_000, 4 * self.working_set)
        # Beyond the cap the oldest closed lines are forgotten: until every forgotten retry
        # came due and the loader caught up past it, the database is asked instead (each
        # page's lines) and submits go through the loader.
        self._forgotten_until = float("-inf")
        self._caught_up_at = float("-inf")
        # The loader: its cursor in the due order, whether due rows may lie after it, the
        # earliest known due time after it and the one timer set for it.
        self._cursor = _START
        self._more = True  # until the first pass caught up: the database may hold due rows
        self._loading = False
        self._rewound = _NEVER
        self._load_event = asyncio.Event()
        self._resumed = False
        self._wake_at = _INF
        self._wake_handle = None
        #: Turns rows of ``Store.due_messages`` (one message's parts, in order) into a
        #: ``QueuedMessage`` (decryption and routing are the pipeline's: set by its ``load``).
        self.decode = None
        self._queued = 0
        self._held = 0
        self._counted_at = float("-inf")
        #: The gauges are counted as messages come and go, and read again from the database
        #: this often (they may drift: a retry that then waits for its window, say).
        self.recount_interval = 300.0
        self.stats = {"sent": 0, "failed": 0, "expired": 0, "retried": 0, "window_deferred": 0,
                      "spilled": 0, "loaded": 0, "load_pages": 0, "blocked_lines_dropped": 0}
        self.windows = None  # routing.windows.SendWindows: marketing re-checked at send time
        #: Called with the destination's hash when an upstream says the number is invalid.
        self.on_invalid_number = None

    # --- feeding ----------------------------------------------------------------------------

    def enqueue(self, msg: QueuedMessage) -> None:
        """A message just stored: into the working set if it is due and may go now, else it
        waits in the database (its row already says when it is due)."""
        self._queued += 1
        self._offer(msg)

    def _offer(self, msg: QueuedMessage) -> None:
        due = min(msg.not_before, msg.expires_at)
        if due > self.clock():
            if msg.marketing:
                self._held += 1
            self._schedule(due)
            return
        if self._more or len(self._resident) >= self.working_set or self._closed_for(msg) or self._forgetful:
            # The loader reaches it in its turn: behind what is due before it, and behind
            # its line's retry.
            self.stats["spilled"] += 1
            self._rewind((due, msg.id - 1))
            return
        self._admit(msg)

    @property
    def _forgetful(self) -> bool:
        """Some closed lines were forgotten (the cap) and may still be closed."""
        return self._forgotten_until > self._caught_up_at

    def _closed_for(self, msg: QueuedMessage) -> bool:
        entry = self._blocked.get(msg.key)
        return entry is not None and msg.id > entry[0]

    def _admit(self, msg: QueuedMessage) -> None:
        """Into the working set, at the end of its line."""
        self._resident[msg.id] = msg
        line = self._lines.get(msg.key)
        if line is None:
            line = self._lines[msg.key] = _Line()
        line.queue.append(msg)
        if not line.busy and len(line.queue) == 1:
            self._mark_ready(msg.key)

    def cancel(self, message_id: int) -> QueuedMessage | None:
        """Take a message out of the queue if none of it left yet (cancel_sm). Returns it
        (for ``restore``), or None when it cannot be cancelled here. A message that waits
        in the database is kept from the loader until the store answered."""
        msg = self._resident.get(message_id)
        if msg is not None:
            line = self._lines.get(msg.key)
            if msg.next_index or line is None or (line.busy and line.queue and line.queue[0] is msg):
                return None
            line.queue.remove(msg)
            if not line.queue and not line.busy:
                del self._lines[msg.key]
            del self._resident[message_id]
            self._cancelling[message_id] = msg
            return msg
        if message_id in self._writing or message_id in self._cancelling:
            return None  # leaving the queue, or a cancel already under way
        self._cancelling[message_id] = None
        return QueuedMessage(message_id, "", b"", (), 0.0, 0.0, [])

    def restore(self, msg: QueuedMessage) -> None:
        """Undo ``cancel`` (the stored cancel did not happen): the message waits again (at
        the end of its number's line if it was in memory)."""
        held = self._cancelling.pop(msg.id, None)
        if held is not None:
            self._offer(held)
            self._rewind(_START)  # in case it spilled: its row may lie behind the cursor
        elif msg.id in self._cancel_skipped:
            self._cancel_skipped.discard(msg.id)
            self._rewind(_START)  # the loader passed it meanwhile

    def cancelled(self, message_id: int, row: dict) -> None:
        """The store cancelled a message (``Store.on_cancelled``): out of the counts."""
        self._cancelling.pop(message_id, None)
        self._cancel_skipped.discard(message_id)
        self._queued = max(0, self._queued - 1)
        if row.get("category") == "marketing" and not row.get("attempts") and row.get("due", 0) > self.clock():
            self._held = max(0, self._held - 1)
        key = self._blockers.pop(message_id, None)
        if key is not None:
            self._blocked.pop(key, None)

    def reroute(self, connectors_for) -> int:
        """A reloaded route table: each message in memory takes the connectors
        ``connectors_for(msg)`` gives it (those waiting in the database are routed when they
        are loaded). A message already handed to a connector finishes there. Returns how many
        changed."""
        changed = 0
        for msg in self._resident.values():
            if msg.dest:  # "" only for a cancel's placeholder
                route = connectors_for(msg)
                if route != msg.connectors:
                    msg.connectors = route
                    changed += 1
        return changed

    def connectors_changed(self) -> None:
        """Connectors were added, removed or replaced (``self.connectors`` is the shared
        dict): enough workers for the new windows, and a look at what may go now."""
        capacity = sum(c.config.window * c.config.binds for c in self.connectors.values()) or 1
        wanted = min(1024, max(16, 2 * capacity))
        if self._tasks and wanted > self.worker_count:
            loop = asyncio.get_running_loop()
            self._tasks += [loop.create_task(self._worker(), name=f"dispatch-{i}")
                            for i in range(self.worker_count, wanted)]
            self.worker_count = wanted
        self._kick()

    def poke(self) -> None:
        """Look at the timer again now: for a clock that jumped (tests, or an operator's
        correction), rather than wait for the delay computed before the jump."""
        when, self._wake_at = self._wake_at, _INF
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        if when < _INF:
            self._schedule(when)
        self._kick()

    def held(self) -> int:
        """Marketing messages waiting for their send window (or schedule): counted as they
        come and go, read from the database at start and every ``recount_interval``."""
        return self._held

    @property
    def queued(self) -> int:
        """Messages waiting in the queue (in memory or in the database)."""
        return max(self._queued, len(self._resident))

    @property
    def resident(self) -> int:
        """Messages in the working set."""
        return len(self._resident)

    def resident_by_connector(self) -> dict[str, int]:
        """Working-set messages per connector they go to first (their route's head). Those
        still in the database have no connector yet: their route is decided from the
        number, decrypted only when they are loaded."""
        counts: dict[str, int] = {}
        for msg in self._resident.values():
            if msg.connectors:
                counts[msg.connectors[0]] = counts.get(msg.connectors[0], 0) + 1
        return counts

    def _mark_ready(self, key) -> None:
        """Queue a line for a worker and wake one idle worker, if any."""
        self._ready.append(key)
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():  # a worker cancelled at stop leaves its future behind
                waiter.set_result(None)
                return

    # --- the database side: writes, cursor, timer ---------------------------------------------

    def _write(self, msg: QueuedMessage, result: SubmitResult, due: float | None = None) -> None:
        """Store ``result``; the loader skips the message until it is committed, then (for a
        new due time) finds it again from there."""
        try:
            outcome = self.store.record_submit(result)
        except Exception as exc:  # noqa: BLE001 - a closing store: the row stays as it was
            log.error("store_write_failed", error=str(exc))
            return
        self._writing[msg.id] = self._writing.get(msg.id, 0) + 1
        outcome.add_done_callback(lambda fut: self._written(msg.id, due, fut))

    def _written(self, message_id: int, due: float | None, fut) -> None:
        left = self._writing.get(message_id, 1) - 1
        if left:
            self._writing[message_id] = left
        else:
            self._writing.pop(message_id, None)
        if self._loading:
            self._written_while_loading.add(message_id)  # the page in flight may hold its old row
        if fut.exception() is not None:
            log.error("store_write_failed", error=str(fut.exception()))
            self._rewind(_START)  # its row is as it was: let the loader see it again
        elif due is not None:
            self._rewind((due, message_id - 1))

    def _rewind(self, key: tuple[float, int]) -> None:
        """A waiting row at ``key`` in the due order: the cursor goes back to it if it had
        passed it, and the loader looks (now, or when it comes due)."""
        if key < self._cursor:
            self._cursor = key
        if self._loading and key < self._rewound:
            self._rewound = key
        if key[0] <= self.clock():
            self._more = True
            self._kick()
        else:
            self._schedule(key[0])

    def _schedule(self, due: float) -> None:
        """The one timer: for the earliest due time known after the cursor."""
        if due >= self._wake_at:
            return
        self._wake_at = due
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        self._wake_handle = self.timers.call_later(max(0.0, due - self.clock()), self._wake)

    def _wake(self) -> None:
        self._wake_handle = None
        self._wake_at = _INF
        self._more = True
        self._kick()

    def _kick(self) -> None:
        """Wake the loader if due rows may wait and the working set has room for a page."""
        if self._more and (self.working_set - len(self._resident) >= self._refill_step or not self._resident):
            self._load_event.set()

    def _leave(self, msg: QueuedMessage) -> None:
        self._resident.pop(msg.id, None)
        if self._more:
            self._kick()

    # --- the loader -----------------------------------------------------------------------

    async def resume(self) -> int:
        """At start: the counts and the lines closed behind a retry, from the database; then
        the loader begins from the start of the due order. Returns the messages waiting."""
        now = self.clock()
        queued, held = await self.store.queue_counts(now)
        self._queued += queued
        self._held += held
        self._counted_at = now
        closed = await self.store.blocking_lines(self.blocked_cap + 1)
        for account, dest_hash, message_id, due in closed[: self.blocked_cap]:
            self._close_line((account, dest_hash), message_id, due)
        if len(closed) > self.blocked_cap:  # more than we keep: as if forgotten
            self._forgotten_until = _INF
            self.stats["blocked_lines_dropped"] += 1
            self._note("queue_blocked_lines_full", level="warning", cap=self.blocked_cap)
        self._resumed = True
        self._rewind(_START)
        return queued

    def _close_line(self, key, message_id: int, due: float) -> None:
        old = self._blocked.get(key)
        if old is not None and old[0] > message_id:
            return  # a later message of the line already closes it for more
        if old is not None:
            self._blockers.pop(old[0], None)
        elif len(self._blocked) >= self.blocked_cap:
            dropped, (blocker, until) = next(iter(self._blocked.items()))
            del self._blocked[dropped]
            self._blockers.pop(blocker, None)
            self._forgotten_until = max(self._forgotten_until, until)
            self.stats["blocked_lines_dropped"] += 1
            self._note("queue_blocked_lines_full", level="warning", cap=self.blocked_cap)
        self._blocked[key] = (message_id, due)
        self._blockers[message_id] = key

    async def _loader(self) -> None:
        while True:
            await self._load_event.wait()
            self._load_event.clear()
            if not self._resumed:
                continue
            try:
                await self._load_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the queue must go on: try again shortly
                log.exception("queue_load_failed")
                await self.timers.sleep(1.0)
                self._more = True
                self._load_event.set()

    async def _load_pass(self) -> None:
        while self._more:
            room = self.working_set - len(self._resident)
            if room < self._refill_step and self._resident:
                return  # full: the drain wakes us
            now = self.clock()
            after = self._cursor
            self._loading, self._rewound = True, _NEVER
            self._written_while_loading = set()
            forgetful = self._forgetful
            try:
                rows, more = await self.store.due_messages(now, min(room, self.page), after)
                # Lines closed that memory forgot: the database says which.
                closed = await self.store.blockers_of({(r["account"], r["dest_hash"]) for r in rows}) \
                    if forgetful and rows else None
            finally:
                self._loading = False
            self.stats["load_pages"] += 1
            if rows:
                after = max(after, (rows[-1]["next_attempt_at"], rows[-1]["message_id"]))
            self._cursor = min(after, self._rewound)
            self._take(rows, now, closed)
            if not more and self._rewound == _NEVER:
                # Caught up: whatever comes due by ``now`` from here on is a submit (in memory,
                # or spilled: it rewinds), or a row a write moved (it rewinds once committed).
                self._more = False
                self._cursor = max(self._cursor, (now, _LAST_ID))
                self._caught_up_at = now
        if not self._more and self._caught_up_at - self._counted_at >= self.recount_interval:
            await self._recount()
        # The timer for the next one due.
        due = await self.store.next_due(self._cursor)
        if due is None:
            return
        if due <= self.clock():
            self._more = True  # came due (or was stored) meanwhile
            self._kick()
        else:
            self._schedule(due)

    async def _recount(self) -> None:
        """The gauges from the database; what changed while it counted is kept on top."""
        now = self.clock()
        queued0, held0 = self._queued, self._held
        queued, held = await self.store.queue_counts(now)
        self._queued = max(0, queued + self._queued - queued0)
        self._held = max(0, held + self._held - held0)
        self._counted_at = now

    def _take(self, rows: list[dict], now: float, closed: dict | None = None) -> None:
        """A page's messages into the working set, but those already here, being written or
        cancelled; those whose line is closed behind a retry move behind it. ``closed``
        (line -> [(id, due)] of its messages waiting for a retry, from the database) is
        given when memory may have forgotten some closed lines."""
        skip = self._resident.keys() | self._writing.keys() | self._written_while_loading
        by_id: dict[int, list[dict]] = {}
        for row in rows:
            message_id = row["message_id"]
            if message_id in skip:
                continue
            if message_id in self._cancelling:
                self._cancel_skipped.add(message_id)
                continue
            by_id.setdefault(message_id, []).append(row)
        for message_id, parts in by_id.items():
            msg = self.decode(parts)
            first = parts[0]
            self.stats["loaded"] += 1
            if msg.marketing and not msg.attempts and first["next_attempt_at"] > first["submitted_at"]:
                self._held = max(0, self._held - 1)  # held until now
            entry = self._blocked.get(msg.key)
            if entry is not None:
                blocker, until = entry
                if message_id == blocker:
                    del self._blocked[msg.key]
                    self._blockers.pop(message_id, None)
                elif message_id > blocker:
                    self._move_behind(msg, max(until, first["next_attempt_at"]))
                    continue
            if closed:
                waits = [due for blocker, due in closed.get(msg.key, ())
                         if blocker < message_id and blocker not in self._resident]
                if waits:
                    self._move_behind(msg, max(max(waits), first["next_attempt_at"]))
                    continue
            self._admit(msg)

    def _move_behind(self, msg: QueuedMessage, due: float) -> None:
        """Back to the database, due with the retry that closes its line (and after it: the
        due order breaks ties by id)."""
        for part_no, _ in msg.parts[msg.next_index :]:
            self._write(msg, SubmitResult(msg.id, part_no, PART_QUEUED, None, None, msg.attempts, due), due)

    # --- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"dispatch-{i}") for i in range(self.worker_count)]
        self._tasks.append(loop.create_task(self._loader(), name="dispatch-loader"))

    async def stop(self) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
            if done is True:
                self._queued = max(0, self._queued - 1)
            self._leave(msg)
            if done is False:
                # Its line is closed until it comes back: the rest waits behind it, in the
                # database.
                self._lines.pop(key, None)
                for later in line.queue:
                    self._resident.pop(later.id, None)
                    self._move_behind(later, msg.not_before)
                line.queue.clear()
                continue
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
            status, connector, upstream_id, early = outcome
            if status == CommandStatus.ESME_ROK:
                self._write(msg, SubmitResult(msg.id, part_no, PART_SUBMITTED, connector, upstream_id,
                                              msg.attempts + 1, now, early_keys=early))
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
        """Back to the database until the next opening (set in ``msg.not_before`` by
        ``_window_open``), or its validity's end if sooner: alerts and this number's later
        messages are not held behind it."""
        self.stats["window_deferred"] += 1
        due = min(msg.not_before, msg.expires_at)
        for part_no, _ in msg.parts[msg.next_index :]:
            self._write(msg, SubmitResult(msg.id, part_no, PART_QUEUED, None, None, msg.attempts, due), due)
        if msg.marketing:
            self._held += 1
        return DEFERRED

    async def _send_part(
        self, msg: QueuedMessage, pdu: P.SubmitSm, still_wanted=None
    ) -> tuple[int, str, str | None, tuple[str, ...]] | str | None:
        """Try the route's connectors in failover order: (status, connector, upstream id,
        early receipts' keys) for the first answer that is not temporary, None if all failed for now, or
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
            except (UpstreamDown, AnswerTimeout, SessionClosed) as exc:
                self._note("submit_retry_elsewhere", connector=connector.name, reason=type(exc).__name__)
                continue
            status = resp.command_status
            if status == CommandStatus.ESME_ROK:
                learner = connector.id_learner
                early: tuple[str, ...] = ()
                try:
                    if learner is None:
                        upstream_id = normalize_resp_id(resp.message_id, cfg.message_id)
                    else:  # auto: its key, and where an early receipt for it may wait
                        upstream_id, early = read_resp_id(resp.message_id, learner.readings)
                except (MessageIdError, AttributeError):
                    self._note("upstream_id_unparsable", level="warning", connector=connector.name)
                    upstream_id = getattr(resp, "message_id", "") or None
                return status, connector.name, upstream_id, early
            if status in TEMPORARY:
                self._note("submit_temporary_error", connector=connector.name, status=CommandStatus.name_of(status))
                continue
            self._note("submit_refused", connector=connector.name, status=CommandStatus.name_of(status))
            return status, connector.name, None, ()
        return None

    def _note(self, event: str, level: str = "info", **labels) -> None:
        """An upstream answer or a limit worth a log line, aggregated: the first of each
        (event, labels) at once, then one line per interval with the count. An upstream that
        refuses a campaign must not write a line per message; each message's outcome is in
        its row."""
        tally = self._tallies.get(event)
        if tally is None:
            tally = self._tallies[event] = Tally(log, event, self.timers, level=level)
        tally.add(**labels)

    def _retry_later(self, msg: QueuedMessage) -> None:
        msg.attempts += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(msg.attempts - 1, 16))
        when = self.clock() + delay
        if when >= msg.expires_at:
            when = msg.expires_at  # comes back once more, to end EXPIRED
        self.stats["retried"] += 1
        msg.not_before = when
        # It waits in the database; its line stays closed meanwhile, so later messages to the
        # number cannot overtake it.
        self._close_line(msg.key, msg.id, when)
        for part_no, _ in msg.parts[msg.next_index :]:
            self._write(msg, SubmitResult(msg.id, part_no, PART_QUEUED, None, None, msg.attempts, when), when)

    def _finish(self, msg: QueuedMessage, state: MessageState, error: int, connector: str | None) -> None:
        """End the message's remaining parts in ``state`` (the store settles the message and
        queues the partner's receipt in the same transaction)."""
        now = self.clock()
        for part_no, _ in msg.parts[msg.next_index :]:
            self._write(msg, SubmitResult(msg.id, part_no, int(state), connector, None, msg.attempts, now, error))
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


__all__ = ["Dispatcher", "QueuedMessage", "PART_QUEUED"]
