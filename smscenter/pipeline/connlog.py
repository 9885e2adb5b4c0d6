"""The connection log: every bind attempt on the partner listener, written in batches.

What a row says (``storage/schema.py`` ``connection_log``): when, the system_id as sent (cut
to its SMPP maximum), the account when that system_id is one, the peer's IP and port, the bind
type, TLS or not, and the command_status answered — None when the peer hung up before its
answer. A bind the session refused before it reached the server (a second bind on a bound
session, a bind that does not decode) has an empty system_id: what it said is not known.
Never the password: ``record`` is not given it.

Why a buffer and not a write per bind: a bind is answered without waiting for the database,
and a bind flood (thousands of sockets a second, each sending a wrong bind) must neither slow
the answers nor grow memory. So ``record`` only appends to a bounded buffer (``capacity``
rows); a background task writes what is buffered in one transaction every ``interval`` (or as
soon as ``batch`` rows wait), at most ``batch`` rows per transaction. Beyond ``capacity`` a row
is not kept: it is counted in ``dropped`` (``smscenter_connection_log_dropped_total``) and
logged aggregated (one ``connection_log_dropped`` line per interval with the count, the
``floodlog.Tally`` way). The bind guard's own counters still count every failed bind.

A write that fails (the database away) keeps its rows in the buffer and is tried again after
``interval``; the failure is logged once per cause (``floodlog.ErrorLog``). ``stop()`` writes
what is left: an acknowledged bind's row is not lost on a clean stop.

The rows' ids come from a generator of its own on the log's wall clock, seeded past the
largest stored id: time-ordered like the ``at`` they stand beside, so the retention purge
can bound its scan by id (``storage/purge.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
import structlog

from storage import connections as rows_sql
from storage.ids import IdGenerator

from smscenter.runtime.floodlog import ErrorLog, Tally
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.connlog")

__all__ = ["ConnectionLog"]


class ConnectionLog:
    """Bounded buffer of bind attempts and the task that writes them to ``engine``."""

    def __init__(
        self,
        engine,
        *,
        timers: Timers | None = None,
        capacity: int = 10_000,
        batch: int = 500,
        interval: float = 1.0,
        log_interval: float = 10.0,
    ) -> None:
        self.engine = engine
        #: The wall clock (epoch seconds) that stamps ``at``, and the flush's waits.
        self.timers: Timers = timers if timers is not None else RealTimers(time.time)
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self._ids = IdGenerator(clock=self.timers.now)
        self._rows: deque[dict] = deque()
        self._full = asyncio.Event()  # a whole batch waits
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        #: Rows written since start, and rows not kept because the buffer was full.
        self.written = 0
        self.dropped = 0
        self._dropped_log = Tally(log, "connection_log_dropped", self.timers, interval=log_interval)
        self._errors = ErrorLog(self.timers, log_interval)

    @property
    def buffered(self) -> int:
        return len(self._rows)

    # --- from the server (the event loop, per bind) ------------------------------------------

    def record(
        self, *, system_id: str, account: str | None, peer: tuple, bind_type: str, tls: bool, status: int | None
    ) -> None:
        """One bind attempt, answered ``status`` (None: not answered, the peer left). O(1):
        the row is written later, or counted as dropped when the buffer is full."""
        if len(self._rows) >= self.capacity:
            self.dropped += 1
            self._dropped_log.add(reason="buffer_full")
            return
        host = str(peer[0]) if peer else "?"
        port = peer[1] if peer and len(peer) > 1 and isinstance(peer[1], int) else 0
        self._rows.append({
            "id": self._ids.next(), "at": self.timers.now(),
            "system_id": (system_id or "")[: rows_sql.SYSTEM_ID_MAX],
            "account": account, "peer_ip": host[: rows_sql.PEER_IP_MAX], "peer_port": port,
            "bind_type": bind_type, "tls": bool(tls), "status": None if status is None else int(status),
        })
        if len(self._rows) >= self.batch:
            self._full.set()

    # --- the writer -----------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.engine.connect() as conn:
            self._ids.seed(await conn.run_sync(rows_sql.max_id) + 1)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="connection-log")

    async def stop(self) -> None:
        """Let the task finish the write it may be in (never cancelled mid-commit: a commit
        that landed while its task was cancelled would be written twice), then write
        everything still buffered (a failure is logged: the process is stopping)."""
        self._stopping = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._rows:
            if not await self.flush():
                log.warning("connection_log_lost", rows=len(self._rows))
                self._rows.clear()
        self._dropped_log.close()

    async def flush(self) -> bool:
        """Write up to ``batch`` buffered rows in one transaction; False if it failed (the
        rows stay buffered)."""
        if not self._rows:
            return True
        rows = [self._rows[i] for i in range(min(self.batch, len(self._rows)))]
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(lambda c: rows_sql.insert_rows(c, rows))
        except Exception as exc:  # noqa: BLE001 - the database away: retried after interval
            self._errors.exception("connection_log_write_failed", exc, with_traceback=False, rows=len(rows))
            return False
        for _ in rows:
            self._rows.popleft()
        self.written += len(rows)
        return True

    async def _loop(self) -> None:
        failed = False
        while True:
            if not failed:
                await self._wait(self.interval, self._full)
            if self._stopping:
                return  # stop() writes the rest
            failed = not await self.flush()
            if failed:
                await self._wait(self.interval)  # the database away: the same rows again later

    async def _wait(self, seconds: float, full: asyncio.Event | None = None) -> None:
        """``seconds`` on the log's timers; cut short at stop, and when ``full`` is given,
        as soon as a whole batch waits."""
        events = [self._stop] + ([full] if full is not None else [])
        if full is not None:
            full.clear()
            if len(self._rows) >= self.batch:
                return
        if self._stopping:
            return
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        waits.append(asyncio.ensure_future(self.timers.sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


def bind_type_of(command_id: int) -> str:
    from smscenter.pipeline.accounts import BIND_TYPE

    return BIND_TYPE.get(command_id & 0x7FFFFFFF, "?")  # type: ignore[call-overload]

