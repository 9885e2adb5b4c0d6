"""Our message ids: 64-bit, time-ordered, printed in decimal.

Layout (like Twitter's Snowflake): 41 bits of milliseconds since 2024-01-01 (good until
2093), 10 bits of node id (for several nodes sharing one database), 12 bits of sequence
within the millisecond. Printed in decimal they have at most 19 digits, so partners that
store ids as signed 64-bit integers are safe, and they sort in time order — handy in SQL
and when reading logs. No hex anywhere: the hex/decimal mix-up is a classic Kannel/Jasmin
receipt-correlation bug.

A generator may be shared by the event loop and the store's writer thread (receipts built
inside the group commit), so ``next()`` holds a lock; the daemon's writer process has its
own, with another node id (``receipts.TRANSACTION_NODE``). ``seed()`` makes ids
keep increasing across restarts even when the clock went back while we were down: the
daemon seeds it with the largest id found in storage.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQ_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_SEQ_MASK = (1 << SEQ_BITS) - 1
_MS_SHIFT = NODE_BITS + SEQ_BITS


class IdGenerator:
    """Monotonic id source for one node. If the clock steps back, ids keep increasing.
    Thread-safe."""

    __slots__ = ("node", "_clock", "_last_ms", "_seq", "_lock")

    def __init__(self, node: int = 0, clock: Callable[[], float] = time.time) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node id must be within 0..{MAX_NODE}")
        self.node = node
        self._clock = clock
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            ms = int(self._clock() * 1000) - EPOCH_MS
            if ms <= self._last_ms:
                # Same millisecond (or clock went back): count on; borrow the next
                # millisecond when 4096 ids were handed out in this one.
                self._seq = (self._seq + 1) & _SEQ_MASK
                if self._seq == 0:
                    self._last_ms += 1
                ms = self._last_ms
            else:
                self._seq = 0
                self._last_ms = ms
            return (ms << _MS_SHIFT) | (self.node << SEQ_BITS) | self._seq

    def seed(self, min_next: int) -> None:
        """Make every later ``next()`` return at least ``min_next`` (e.g. one more than the
        largest id in storage, whichever node made it). Never moves the generator back."""
        if min_next <= 0:
            return
        floor = min_next - 1  # the largest id that must not be handed out again
        ms, node, seq = floor >> _MS_SHIFT, (floor >> SEQ_BITS) & MAX_NODE, floor & _SEQ_MASK
        if node > self.node:
            # Our ids in that millisecond all sort below it: start at the next one.
            ms, seq = ms + 1, 0
        with self._lock:
            # State (ms, seq) means "the last id handed out": next() gives a larger one.
            if (ms, seq) > (self._last_ms, self._seq):
                self._last_ms, self._seq = ms, seq


def id_time(message_id: int) -> float:
    """The UNIX time (seconds) encoded in an id."""
    return ((message_id >> _MS_SHIFT) + EPOCH_MS) / 1000
