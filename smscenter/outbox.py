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
        in_flight: set[int] = set()
        cursor = 0
        while not self._stopping:
            wake.clear()
            if not account.receivers():
                await wake.wait()  # a bind (or new rows) will wake us
                continue
            rows = await self.store.outbox_for(account.system_id, after_id=cursor, limit=BATCH)
            rows = [r for r in rows if r["id"] not in in_flight]
            if not rows:
                if in_flight:
                    await asyncio.sleep(0.05)
                    continue
                cursor = 0
                try:
                    async with asyncio.timeout(RETRY_DELAY):
                        await wake.wait()
                except TimeoutError:
                    pass
                continue
            cursor = rows[-1]["id"]
            now = self.clock()
            for row in rows:
                if row["expires_at"] <= now:
                    self.stats["expired"] += 1
                    self.store.ack_outbox(row["id"])
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
                in_flight.add(row["id"])
                fut.add_done_callback(self._answered(row["id"], in_flight, account))

    def _answered(self, row_id: int, in_flight: set[int], account: AccountState):
        def done(fut: asyncio.Future) -> None:
            in_flight.discard(row_id)
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None and fut.result().command_status == CommandStatus.ESME_ROK:
                self.stats["delivered"] += 1
                self.store.ack_outbox(row_id)
                return
            self.stats["refused"] += 1
            if exc is None or isinstance(exc, ResponseTimeout):
                self.store.retry_outbox(row_id)
            # Closed link: the row stays; the pump re-reads it when a bind is back.
            self._wake.setdefault(account.system_id, asyncio.Event()).set()

        return done
