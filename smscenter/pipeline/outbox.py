"""Delivering what partners are owed (receipts, MO) from the outbox table.

One pump per account with something to deliver. It sends each row as deliver_sm on one of
the account's RX/TRX binds — many in flight at once, up to each bind's window, because a
partner whose TCP stack delays its acks would otherwise cap receipts near 20 per second —
and deletes a row only once the partner answered ESME_ROK. While the account has no
receiving bind, rows simply stay in the table: a partner offline for hours gets everything
when it binds again. Rows past their retention are dropped.

Where rows come from. The table is the truth, but reading back every row we just wrote
(and decrypting and decoding it) would cost more than sending it. So the store hands each
commit's new rows over in memory (``handoff``, with the deliver_sm already built), and the
pump reads the table only when it may hold rows it was not handed: on a bind (``notify``),
for rows written elsewhere (MO), after more rows came than it keeps in memory, and from the
top now and then when idle (a row whose id sorts before others committed after them).
Whatever the source, a row is never sent twice at once: not while it is in flight, nor
while its delete is not yet committed (or committed after a table read began: that read
may still return it), nor before its retry time after a refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import structlog

from protocol import codec
from protocol.constants import CommandStatus
from storage.crypto import FieldCipher
from storage.store import Store

from smscenter.pipeline.accounts import AccountRegistry, AccountState
from smscenter.pipeline.ports import AnswerTimeout, SessionClosed
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.outbox")

BATCH = 1000  # rows read per query
RETRY_DELAY = 5.0  # after a refused or unanswered deliver_sm
MEMORY_LIMIT = 20_000  # rows queued in memory per account; past it, the table is read later


class OutboxSender:
    def __init__(self, store: Store, registry: AccountRegistry, cipher: FieldCipher, clock=time.time,
                 timers: Timers | None = None) -> None:
        self.store = store
        self.registry = registry
        self.cipher = cipher
        #: Retry waits, expiry and the idle re-read run on these (virtual time in tests).
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = self.timers.now
        self._pumps: dict[str, asyncio.Task] = {}
        self._accounts: dict[str, _Account] = {}
        self._stopping = False
        self.stats = {"delivered": 0, "refused": 0, "expired": 0}
        # Committed rows come straight from the store, without a read back.
        store.on_outbox_rows = self.handoff

    def notify(self, accounts) -> None:
        """The table may hold rows for these accounts that we were not handed (a new
        receiving bind, rows written elsewhere): read it, and make sure a pump runs."""
        if self._stopping:
            return
        for system_id in accounts:
            acc = self._account(system_id)
            if acc is None:
                continue
            acc.need_read = True
            self._wake(acc)

    def handoff(self, rows: list[dict]) -> None:
        """Rows just committed (called by the store on the event loop): queue them."""
        if self._stopping:
            return
        by_account: dict[str, list[dict]] = {}
        for row in rows:
            by_account.setdefault(row["account"], []).append(row)
        for system_id, new in by_account.items():
            acc = self._account(system_id)
            if acc is None:
                continue
            if not acc.state.receivers():
                # Nobody to send to: they wait in the table for the next bind, which reads it.
                acc.need_read = True
                continue
            for row in new:
                if len(acc.queue) >= MEMORY_LIMIT:
                    acc.need_read = True  # the rest is read from the table when we get there
                    break
                acc.add(row)
            self._wake(acc)

    def _account(self, system_id: str) -> "_Account | None":
        acc = self._accounts.get(system_id)
        if acc is None:
            state = self.registry.get(system_id)
            if state is None:
                return None
            acc = self._accounts[system_id] = _Account(state)
        return acc

    def _wake(self, acc: "_Account") -> None:
        acc.wake.set()
        system_id = acc.state.system_id
        task = self._pumps.get(system_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._pump(acc), name=f"outbox-{system_id}")
            task.add_done_callback(_pump_ended)
            self._pumps[system_id] = task

    def forget(self, system_id: str) -> None:
        """An account removed by a reload: its pump stops and its state is dropped. Its rows
        stay in the table (what was in flight too: not acknowledged, not deleted) for the
        account's return, whose first receiving bind reads them from the top."""
        self._accounts.pop(system_id, None)
        task = self._pumps.pop(system_id, None)
        if task is not None:
            task.cancel()

    async def start(self) -> None:
        """Pumps start for accounts with rows as soon as they have a receiving bind."""

    async def stop(self) -> None:
        self._stopping = True
        for task in self._pumps.values():
            task.cancel()
        await asyncio.gather(*self._pumps.values(), return_exceptions=True)

    async def _pump(self, acc: "_Account") -> None:
        account = acc.state
        pending = acc.pending
        while not self._stopping:
            acc.wake.clear()
            if not account.receivers():
                # The next bind gets everything, from the oldest row in the table.
                acc.forget_queue()
                acc.cursor = 0
                acc.need_read = True
                await acc.wake.wait()  # a bind will wake us
                continue
            now = self.clock()
            acc.release_held(now)
            if acc.need_read:
                pending.begin_read()
                try:
                    batch = await self.store.outbox_for(account.system_id, after_id=acc.cursor, limit=BATCH)
                except Exception:  # noqa: BLE001 - a failed read must not stop deliveries
                    pending.end_read([])
                    log.exception("outbox_read_failed", account=account.system_id)
                    await self.timers.sleep(1.0)
                    continue
                for row in pending.end_read(batch):
                    acc.add(row)
                if batch:
                    acc.cursor = batch[-1]["id"]
                if len(batch) < BATCH:
                    # The end of the table as of this read; rows committed since are handed
                    # over (or notified).
                    acc.need_read = False
            if acc.queue:
                await self._send_queued(acc)
                continue
            if acc.need_read:
                continue
            # Nothing to do. New rows are handed over (or notified); a refused row's wait
            # ends; or, every RETRY_DELAY, the table is read again from the top.
            try:
                async with self.timers.timeout(pending.next_wait(self.clock(), RETRY_DELAY)):
                    await acc.wake.wait()
            except TimeoutError:
                acc.cursor = 0
                acc.need_read = True

    async def _send_queued(self, acc: "_Account") -> None:
        account = acc.state
        pending = acc.pending
        queue = acc.queue
        # At most BATCH at a time, so that a table read that is due is not put off forever
        # by a steady stream of handed-over rows.
        for _ in range(BATCH):
            if not queue or self._stopping:
                return
            row = queue.popleft()
            row_id = row["id"]
            acc.queued.discard(row_id)
            if row_id in pending.in_flight or row_id in pending.held:
                continue
            now = self.clock()
            if row["expires_at"] <= now:
                self.stats["expired"] += 1
                pending.in_flight.add(row_id)
                try:
                    self.store.ack_outbox(row_id).add_done_callback(pending.on_deleted(row_id))
                except RuntimeError:  # the store is closing
                    pending.in_flight.discard(row_id)
                    return
                continue
            bind = account.next_receiver()
            if bind is None:
                acc.add(row, front=True)
                return
            sink = bind.link  # a DeliverySink (pipeline/ports.py): for SMPP, the bind's link
            pdu = row.get("pdu")
            if pdu is None:
                pdu = codec.decode(self.cipher.decrypt(row["pdu_enc"], b"outbox:%d" % row_id))
            try:
                # Waits for a window slot: this is where the partner's speed paces us.
                await sink.wait_window()
                fut = sink.request_nowait(pdu)
            except SessionClosed:
                acc.add(row, front=True)
                return
            pending.in_flight.add(row_id)
            fut.add_done_callback(self._answered(row, acc))

    def _answered(self, row: dict, acc: "_Account"):
        row_id = row["id"]
        pending = acc.pending

        def done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                pending.in_flight.discard(row_id)
                return
            exc = fut.exception()
            if exc is None and fut.result().command_status == CommandStatus.ESME_ROK:
                self.stats["delivered"] += 1
                # The row counts as in flight until its delete is committed, and a read that
                # began before that commit may still return it: never send it again.
                try:
                    self.store.ack_outbox(row_id).add_done_callback(pending.on_deleted(row_id))
                except RuntimeError:  # the store is closing: the row stays, sent again later
                    pending.in_flight.discard(row_id)
                return
            pending.in_flight.discard(row_id)
            if exc is None or isinstance(exc, AnswerTimeout):
                # Refused or unanswered: the partner gets it again after RETRY_DELAY, not at
                # once (a partner refusing everything would otherwise be flooded).
                self.stats["refused"] += 1
                pending.held[row_id] = self.clock() + RETRY_DELAY
                try:
                    self.store.retry_outbox(row_id)
                except RuntimeError:
                    pass
                self._wake(acc)  # so the pump's wait ends in time for the retry
                return
            # Closed session: the row stays; it goes out again on another bind, or from the
            # table when one is back.
            if not self._stopping:
                acc.add(row)
                self._wake(acc)

        return done


def _pump_ended(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The next hand-over or notify starts a new pump; rows wait in the table meanwhile.
        log.error("outbox_pump_failed", pump=task.get_name(), error=repr(task.exception()))


class _Account:
    """One account's delivery state: the rows queued in memory, the table cursor, and the
    rows that must not be sent now."""

    __slots__ = ("state", "queue", "queued", "pending", "need_read", "cursor", "wake")

    def __init__(self, state: AccountState) -> None:
        self.state = state
        self.queue: deque[dict] = deque()
        self.queued: set[int] = set()
        self.pending = _Pending()
        self.need_read = True
        self.cursor = 0
        self.wake = asyncio.Event()

    def add(self, row: dict, front: bool = False) -> None:
        """Queue a row unless it is queued, in flight or waiting for its retry."""
        row_id = row["id"]
        if row_id in self.queued or row_id in self.pending.in_flight or row_id in self.pending.held:
            return
        self.queued.add(row_id)
        if front:
            self.queue.appendleft(row)
        else:
            self.queue.append(row)

    def forget_queue(self) -> None:
        self.queue.clear()
        self.queued.clear()

    def release_held(self, now: float) -> None:
        """Refused rows whose wait is over are read again from the table (only their ids
        are kept meanwhile: a partner refusing everything must not fill our memory)."""
        held = self.pending.held
        due = [i for i, t in held.items() if t <= now]
        if due:
            for i in due:
                del held[i]
            self.cursor = 0
            self.need_read = True


class _Pending:
    """One account's rows that must not be sent now: those in flight (answer or delete not
    yet committed), those whose delete committed while a table read was under way (that
    read's snapshot can still hold them), and refused ones waiting for their retry time."""

    __slots__ = ("in_flight", "acked", "held", "reading")

    def __init__(self) -> None:
        self.in_flight: set[int] = set()
        self.acked: set[int] = set()  # deleted while the current read was under way
        self.held: dict[int, float] = {}  # row id -> when it may be sent again
        self.reading = False

    def begin_read(self) -> None:
        # Deletes committed before this read began are visible to it: forget them.
        self.acked.clear()
        self.reading = True

    def end_read(self, rows: list[dict]) -> list[dict]:
        """The rows of the read that just ended that may be queued."""
        self.reading = False
        acked, self.acked = self.acked, set()
        return [
            r for r in rows
            if r["id"] not in self.in_flight and r["id"] not in acked and r["id"] not in self.held
        ]

    def next_wait(self, now: float, longest: float) -> float:
        """How long the pump may sleep when idle."""
        if not self.held:
            return longest
        return min(longest, max(0.01, min(self.held.values()) - now))

    def on_deleted(self, row_id: int):
        """A done-callback for the commit that deletes ``row_id``."""

        def done(fut: asyncio.Future) -> None:
            self.in_flight.discard(row_id)
            if self.reading and not fut.cancelled() and fut.exception() is None:
                self.acked.add(row_id)

        return done
