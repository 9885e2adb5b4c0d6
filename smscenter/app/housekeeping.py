"""Periodic housekeeping on the message store.

- A message whose upstream accepted it but never sent a receipt would stay ENROUTE for ever,
  and its partner would never get a final receipt. Once its validity has ended, plus
  ``receipt_grace`` for late receipts, it is settled EXPIRED through the normal receipt path
  (same transaction rules, same partner receipt).
- Early receipts that never found their message are dropped after ``early_ttl``.
- The HTTPS API's idempotency keys go after their 24 hours (``storage.idempotency``).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from protocol.constants import MessageState
from storage.store import Store, UpstreamReceipt

from smscenter.runtime.timers import Every, RealTimers, Timers, every

log = structlog.get_logger("smscenter.housekeeping")


class Housekeeping:
    def __init__(
        self,
        store: Store,
        *,
        interval: float = 300.0,
        receipt_grace: float = 24 * 3600.0,
        early_ttl: float = 7 * 24 * 3600.0,
        clock=time.time,
        timers: Timers | None = None,
        idempotency=None,
    ) -> None:
        self.store = store
        self.idempotency = idempotency  # storage.idempotency.IdempotencyKeys, or None
        self.interval = interval
        self.receipt_grace = receipt_grace
        self.early_ttl = early_ttl
        #: The interval between runs is on these (virtual time in tests); ``clock`` is now().
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = self.timers.now
        self._loop: Every | None = None
        self.stats = {"expired_without_receipt": 0, "early_receipts_purged": 0, "idempotency_keys_expired": 0}

    async def start(self) -> None:
        # A failed run (the database away) is tried again next time.
        self._loop = every(self.interval, self.run_once, self.timers, "housekeeping_failed",
                           name="housekeeping", with_traceback=False)

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def run_once(self) -> None:
        now = self.clock()
        stale = await self.store.stale_parts(now - self.receipt_grace)
        if stale:
            futures = [
                self.store.apply_receipt(
                    UpstreamReceipt(connector, upstream_id, int(MessageState.EXPIRED), 0, now)
                )
                for connector, upstream_id in stale
            ]
            await asyncio.gather(*futures)
            self.stats["expired_without_receipt"] += len(stale)
            log.info("expired_without_receipt", parts=len(stale))
        if self.idempotency is not None:
            self.stats["idempotency_keys_expired"] += await self.idempotency.expire(now)
        purged = await self.store.purge_early_receipts(now - self.early_ttl)
        if purged:
            self.stats["early_receipts_purged"] += purged
            log.info("early_receipts_purged", rows=purged)
