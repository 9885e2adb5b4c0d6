"""Delivering what partners are owed (receipts, MO) from the outbox table.

One pump per account with something to deliver. It reads the account's rows in id order,
sends each as deliver_sm on one of the account's RX/TRX binds — many in flight at once, up
to each bind's window, because a partner whose TCP stack delays its acks would otherwise cap
receipts near 20 per second — and deletes a row only once the partner answered ESME_ROK.
While the account has no receiving bind, rows simply stay in the table: a partner offline
for hours gets everything when it binds again. Rows past their retention are dropped.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from protocol import codec
from protocol.constants import CommandStatus
from storage.crypto import FieldCipher
from storage.store import Store

from .accounts import AccountRegistry, AccountState
from .link import LinkClosed, ResponseTimeout

log = structlog.get_logger("smscenter.outbox")

BATCH = 1000  # rows read per query
RETRY_DELAY = 5.0  # after a refused or unanswered deliver_sm


class OutboxSender:
    def __init__(self, store: Store, registry: AccountRegistry, cipher: FieldCipher, clock=time.time) -> None:
        self.store = store
        self.registry = registry
        self.cipher = cipher
        self.clock = clock
        self._pumps: dict[str, asyncio.Task] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._rescan: set[str] = set()  # accounts whose rows must be read again from the top
        self._stopping = False
        self.stats = {"delivered": 0, "refused": 0, "expired": 0}

    def notify(self, accounts) -> None:
        """New rows for these accounts, or a new receiving bind: make sure a pump runs."""
        if self._stopping:
            return
        for system_id in accounts:
            state = self.registry.get(system_id)
            if state is None:
                continue
            self._wake.setdefault(system_id, asyncio.Event()).set()
            task = self._pumps.get(system_id)
            if task is None or task.done():
                self._pumps[system_id] = asyncio.get_running_loop().create_task(
                    self._pump(state), name=f"outbox-{system_id}"
                )

    async def start(self) -> None:
        """Pumps start for accounts with rows as soon as they have a receiving bind."""

    async def stop(self) -> None:
        self._stopping = True
        for task in self._pumps.values():
            task.cancel()
        await asyncio.gather(*self._pumps.values(), return_exceptions=True)

    async def _pump(self, account: AccountState) -> None:
        wake = self._wake[account.system_id]
        pending = _Pending()
        cursor = 0
        while not self._stopping:
            wake.clear()
            if not account.receivers():
                cursor = 0  # the next bind gets everything, from the oldest row
                await wake.wait()  # a bind (or new rows) will wake us
                continue
            if account.system_id in self._rescan:
                self._rescan.discard(account.system_id)
                cursor = 0
            read_no = pending.begin_read()
            batch = await self.store.outbox_for(account.system_id, after_id=cursor, limit=BATCH)
            if not batch:
                # End of the table. New rows come after the cursor (ids are time-ordered), so
                # a wake-up for them reads on from here; rows behind it are read again from the
                # top when a refused row's wait is over (or every RETRY_DELAY), or when a bind
                # was lost with receipts in flight.
                try:
                    async with asyncio.timeout(pending.next_wait(self.clock(), RETRY_DELAY)):
                        await wake.wait()
                except TimeoutError:
                    cursor = 0
                continue
            cursor = batch[-1]["id"]
            now = self.clock()
            for row in pending.fresh(batch, read_no, now):
                if row["expires_at"] <= now:
                    self.stats["expired"] += 1
                    pending.in_flight.add(row["id"])
                    self.store.ack_outbox(row["id"]).add_done_callback(pending.on_deleted(row["id"]))
                    continue
                bind = account.next_receiver()
                if bind is None:
                    cursor = 0
                    break
                link = bind.link
                pdu = codec.decode(self.cipher.decrypt(row["pdu_enc"], b"outbox:%d" % row["id"]))
                try:
                    # Waits for a window slot: this is where the partner's speed paces us.
                    await link.wait_window()
                    fut = link.request_nowait(pdu)
                except LinkClosed:
                    cursor = 0
                    break
                pending.in_flight.add(row["id"])
                fut.add_done_callback(self._answered(row["id"], pending, account))

    def _answered(self, row_id: int, pending: "_Pending", account: AccountState):
        def done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                pending.in_flight.discard(row_id)
                return
            exc = fut.exception()
            if exc is None and fut.result().command_status == CommandStatus.ESME_ROK:
                self.stats["delivered"] += 1
                # The row counts as in flight until its delete is committed, and a read that
                # began before that commit may still return it: never send it again.
                self.store.ack_outbox(row_id).add_done_callback(pending.on_deleted(row_id))
                return
            pending.in_flight.discard(row_id)
            if exc is None or isinstance(exc, ResponseTimeout):
                # Refused or unanswered: the partner gets it again after RETRY_DELAY, not at
                # once (a partner refusing everything would otherwise be flooded).
                self.stats["refused"] += 1
                pending.held[row_id] = self.clock() + RETRY_DELAY
                self.store.retry_outbox(row_id)
                return
            # Closed link: the row stays; the pump reads it again (on another bind, or when
            # one is back).
            self._rescan.add(account.system_id)
            self._wake.setdefault(account.system_id, asyncio.Event()).set()

        return done


class _Pending:
    """One pump's rows that must not be sent now: those in flight (answer or delete not yet
    committed), those whose delete committed while a read may have been under way (that
    read's snapshot can still hold them), and refused ones waiting for their retry time."""

    __slots__ = ("in_flight", "acked", "held", "reads")

    def __init__(self) -> None:
        self.in_flight: set[int] = set()
        self.acked: dict[int, int] = {}  # row id -> number of reads begun when its delete committed
        self.held: dict[int, float] = {}  # row id -> when it may be sent again
        self.reads = 0

    def begin_read(self) -> int:
        self.reads += 1
        return self.reads

    def fresh(self, rows: list[dict], read_no: int, now: float) -> list[dict]:
        """The rows of read ``read_no`` that may be sent now."""
        # Deletes committed before this read began are visible to it: forget them.
        self.acked = {i: n for i, n in self.acked.items() if n >= read_no}
        self.held = {i: t for i, t in self.held.items() if t > now}
        return [
            r for r in rows
            if r["id"] not in self.in_flight and r["id"] not in self.acked and r["id"] not in self.held
        ]

    def next_wait(self, now: float, longest: float) -> float:
        """How long the pump may sleep at the end of the table."""
        if not self.held:
            return longest
        return min(longest, max(0.01, min(self.held.values()) - now))

    def on_deleted(self, row_id: int):
        """A done-callback for the commit that deletes ``row_id``."""

        def done(fut: asyncio.Future) -> None:
            self.in_flight.discard(row_id)
            if not fut.cancelled() and fut.exception() is None:
                self.acked[row_id] = self.reads

        return done
