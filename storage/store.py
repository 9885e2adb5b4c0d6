"""Durable writes with group commit, and the reads the pipeline needs.

Every state change the pipeline makes goes through one writer that gathers the calls made
within a few milliseconds (or up to ``max_batch`` of them) into one transaction, then
resolves their futures once it committed. A partner's submit_sm_resp and our
deliver_sm_resp to an upstream are sent only after that: acknowledge after commit, with
the fsync paid once per batch rather than once per message.

Receipt correlation happens inside the same transaction as its consequences (part and
message state, the partner's receipt in the outbox, the early-receipt table), so a crash
can never leave a receipt half applied: either the upstream's receipt was acknowledged and
everything it caused is stored, or it was not and the upstream sends it again.

How a batch runs. The whole transaction is one synchronous function (``_apply``) on a
SQLAlchemy Connection: bulk statements (``executemany`` of Core statements; on SQLite
multi-row statements straight to the driver, see ``Bulk``), one joined select per kind of
look-up, no per-row round trips. On a
SQLite file it runs on a dedicated writer thread with its own synchronous engine (WAL,
``synchronous=FULL``, ``BEGIN IMMEDIATE``; see ``db.writer_engine``): one hand-off to that
thread per commit instead of a thread hop and an event-loop turn per statement. Elsewhere
(PostgreSQL, in-memory SQLite) the same function runs through ``AsyncConnection.run_sync``.
Futures are resolved on the event loop, after the commit returned. The receipt builder and
the early-receipt decoder are called inside the transaction, so on the writer thread: what
they touch must be thread-safe (``IdGenerator`` holds a lock; ``FieldCipher`` is safe).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import Connection, and_, bindparam, delete, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from protocol.constants import MessageState

from . import db
from .bulk import BulkById, BulkInsert, BulkUpdate, Many, quote
from .schema import (
    PART_PENDING_STATES,
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    audit_log,
    early_receipts,
    messages,
    mo_messages,
    outbox,
    parts,
)

FINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
    }
)
_FINAL_INTS = frozenset(int(s) for s in FINAL_STATES)
#: When parts end differently, the message takes the worst outcome.
_SEVERITY = {
    MessageState.DELIVERED: 0,
    MessageState.DELETED: 1,
    MessageState.EXPIRED: 2,
    MessageState.UNDELIVERABLE: 3,
    MessageState.REJECTED: 4,
}


def message_state(part_states: Iterable[int]) -> MessageState | None:
    """The message's final state from its parts' states, or None while any is pending."""
    worst = None
    for state in part_states:
        if state not in FINAL_STATES:
            return None
        s = MessageState(state)
        if worst is None or _SEVERITY[s] > _SEVERITY[worst]:
            worst = s
    return worst


@dataclass(slots=True)
class SubmitResult:
    """What happened to one part we handed to a connector."""

    message_id: int
    part_no: int
    state: int  # PART_SUBMITTED, PART_QUEUED (retry later) or a final MessageState
    connector: str | None
    upstream_id: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    error: int = 0


@dataclass(slots=True)
class UpstreamReceipt:
    """A receipt from an upstream, already parsed and its id normalised."""

    connector: str
    upstream_id: str
    state: int  # MessageState
    error: int
    # The upstream's deliver_sm (encrypted), kept if it arrives early. May be a callable
    # that makes it: it is then called (on the writer) only for a receipt kept as early, so
    # the common case never pays for encoding and encrypting a copy nobody reads.
    pdu_enc: bytes | Callable[[], bytes]
    done_at: float


@dataclass(slots=True)
class Finished:
    """A message (or, with per-part receipts, a part) that reached a final state in this
    transaction; the receipt builder turns it into an outbox row."""

    message: dict
    part_no: int | None
    state: MessageState
    error: int
    done_at: float


ReceiptBuilder = Callable[[Finished], "dict | None"]


@dataclass
class _Batch:
    futures: list[asyncio.Future] = field(default_factory=list)
    new_messages: list[dict] = field(default_factory=list)
    new_parts: list[dict] = field(default_factory=list)
    results: list[tuple[SubmitResult, asyncio.Future]] = field(default_factory=list)
    receipts: list[tuple[UpstreamReceipt, asyncio.Future]] = field(default_factory=list)
    new_outbox: list[dict] = field(default_factory=list)
    acked_outbox: list[int] = field(default_factory=list)
    failed_outbox: list[tuple[int, float]] = field(default_factory=list)
    message_updates: list[dict] = field(default_factory=list)
    started: float = 0.0  # loop time of its first call

    def __len__(self) -> int:
        return len(self.futures)


_INS_MESSAGES = BulkInsert(messages)
_INS_PARTS = BulkInsert(parts)
_INS_OUTBOX = BulkInsert(outbox)
_INS_EARLY = BulkInsert(early_receipts, skip_conflicts_on=("connector", "upstream_id"))
_UPD_PART_RESULT = BulkUpdate(
    parts, ("state", "connector", "upstream_id", "attempts", "next_attempt_at", "updated_at"), ("message_id", "part_no")
)
_UPD_PART_STATE = BulkUpdate(parts, ("state", "updated_at"), ("message_id", "part_no"))
_UPD_MESSAGE_FINAL = BulkUpdate(messages, ("state", "done_at", "error"), ("id",))
_UPD_MESSAGE_ERROR = BulkUpdate(messages, ("error",), ("id",))
_DEL_OUTBOX = BulkById(outbox, outbox.delete().where(outbox.c.id == bindparam("k_id")))
_RETRY_OUTBOX = BulkById(
    outbox,
    update(outbox).where(outbox.c.id == bindparam("k_id")).values(attempts=outbox.c.attempts + literal_column("1")),
    set_sql=f"{quote('attempts')} = {quote('attempts')} + 1",
)
_DEL_EARLY = Many(
    early_receipts.delete().where(
        and_(early_receipts.c.connector == bindparam("k_connector"),
             early_receipts.c.upstream_id == bindparam("k_upstream_id"))
    ),
    ("k_connector", "k_upstream_id"),
)

#: Message columns, then the matched part's: one select finds a receipt's part and the
#: message it settles.
_MSG_COLS = tuple(c.name for c in messages.columns)
_N_MSG = len(_MSG_COLS)
_PART_MSG_COLS = (
    *messages.columns,
    parts.c.message_id.label("p_message_id"),
    parts.c.part_no.label("p_part_no"),
    parts.c.state.label("p_state"),
    parts.c.upstream_id.label("p_upstream_id"),
)
_PART_JOIN = parts.join(messages, messages.c.id == parts.c.message_id)
#: Positions of the part's columns in such a row.
_P_MESSAGE_ID, _P_PART_NO, _P_STATE, _P_UPSTREAM_ID = range(_N_MSG, _N_MSG + 4)
#: The same select as plain SQL for SQLite, where the writer runs it straight on the driver
#: (tuples, no per-row SQLAlchemy processing: none is needed for the types read here).
_SQLITE_PART_MSG = (
    "SELECT " + ", ".join(f"messages.{quote(c)}" for c in _MSG_COLS)
    + ", parts.message_id, parts.part_no, parts.state, parts.upstream_id"
    " FROM parts JOIN messages ON messages.id = parts.message_id WHERE "
)
_EARLY_COLS = tuple(c.name for c in early_receipts.columns)
_SQLITE_EARLY = (
    f"SELECT {', '.join(quote(c) for c in _EARLY_COLS)} FROM {quote(early_receipts.name)}"
    f" WHERE {quote('connector')} = ? AND {quote('upstream_id')} IN ("
)
_CHUNK = 5000  # ids per IN list (SQLite and asyncpg both take 32766 parameters at most)


def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i : i + size]


class Store:
    def __init__(
        self,
        engine: AsyncEngine,
        receipt_builder: ReceiptBuilder,
        *,
        per_part_receipts: Callable[[str], bool] = lambda account: False,
        max_batch: int = 2000,
        max_delay: float = 0.002,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.receipt_builder = receipt_builder
        self.per_part_receipts = per_part_receipts
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.clock = clock
        self._batch = _Batch()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._closing = False
        self.commits = 0
        self.committed_ops = 0
        self._sync_engine = db.writer_engine(engine)
        self._executor: ThreadPoolExecutor | None = None

    # Installed by the pipeline: turns a stored early receipt back into an UpstreamReceipt
    # (called inside the transaction: on the writer thread on SQLite).
    early_decoder: Callable[[dict], UpstreamReceipt] | None = None
    #: Hears the new outbox rows (after the commit, on the event loop), so that they can be
    #: sent without being read back. Rows may carry, besides the table's columns, what their
    #: builder put there for the sender (e.g. ``pdu``).
    on_outbox_rows: Callable[[list[dict]], None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._sync_engine is not None and self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="store-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._sync_engine.dispose)
            executor.shutdown(wait=True)

    # --- batched writes ---------------------------------------------------------------------

    def _future(self) -> asyncio.Future:
        if self._closing:
            raise RuntimeError("store is closing")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        batch = self._batch
        futures = batch.futures
        futures.append(fut)
        n = len(futures)
        if n == 1:
            batch.started = loop.time()
            self._wakeup.set()
        elif n >= self.max_batch:
            self._wakeup.set()
        return fut

    def add_message(self, message: dict, message_parts: list[dict]) -> asyncio.Future:
        """Store a new message and its parts (queued). Resolves once committed."""
        fut = self._future()
        self._batch.new_messages.append(message)
        self._batch.new_parts.extend(message_parts)
        return fut

    def record_submit(self, result: SubmitResult) -> asyncio.Future:
        """Store a connector's answer for a part. Resolves to the list of ``Finished``
        caused (a permanent failure, or an early receipt now matched)."""
        fut = self._future()
        self._batch.results.append((result, fut))
        return fut

    def apply_receipt(self, receipt: UpstreamReceipt) -> asyncio.Future:
        """Correlate an upstream receipt. Resolves to True if it matched a part, False if it
        was kept as an early receipt; in both cases it is safe to acknowledge upstream."""
        fut = self._future()
        self._batch.receipts.append((receipt, fut))
        return fut

    def add_outbox(self, row: dict) -> asyncio.Future:
        fut = self._future()
        self._batch.new_outbox.append(row)
        return fut

    def ack_outbox(self, outbox_id: int) -> asyncio.Future:
        fut = self._future()
        self._batch.acked_outbox.append(outbox_id)
        return fut

    def retry_outbox(self, outbox_id: int) -> asyncio.Future:
        fut = self._future()
        self._batch.failed_outbox.append((outbox_id, self.clock()))
        return fut

    def update_message(self, message_id: int, **values: Any) -> asyncio.Future:
        fut = self._future()
        self._batch.message_updates.append({"_id": message_id, **values})
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._batch
            if batch and len(batch) < self.max_batch and not self._closing:
                # Let more work join this commit: one fsync for everything that arrives
                # within max_delay of the batch's first call. A batch that filled while the
                # previous commit ran has waited long enough.
                linger = self.max_delay - (loop.time() - batch.started)
                if linger > 0:
                    await asyncio.sleep(linger)
            batch, self._batch = self._batch, _Batch()
            if batch:
                await self._commit(batch)
            if self._closing and not self._batch:
                return
            if self._batch:
                self._wakeup.set()

    def _commit_sync(self, batch: _Batch) -> dict[int, Any]:
        """The whole transaction, on the writer thread."""
        with self._sync_engine.begin() as conn:
            return self._apply(conn, batch)

    async def _commit(self, batch: _Batch) -> None:
        try:
            if self._executor is not None:
                outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, self._commit_sync, batch)
            else:
                async with self.engine.begin() as conn:
                    outcomes = await conn.run_sync(self._apply, batch)
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for fut in batch.futures:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        self.committed_ops += len(batch)
        if batch.new_outbox and self.on_outbox_rows is not None:
            self.on_outbox_rows(batch.new_outbox)
        for fut in batch.futures:
            if not fut.done():
                fut.set_result(outcomes.get(id(fut)))

    # --- the transaction (synchronous: writer thread, or run_sync) -------------------------

    def _apply(self, conn: Connection, batch: _Batch) -> dict[int, Any]:
        outcomes: dict[int, Any] = {}
        now = self.clock()
        if batch.new_messages:
            _INS_MESSAGES.run(conn, _INS_MESSAGES.rows(batch.new_messages))
        if batch.new_parts:
            _INS_PARTS.run(conn, _INS_PARTS.rows(batch.new_parts))
        finished: list[Finished] = []
        if batch.results:
            self._apply_results(conn, batch.results, outcomes, finished, now)
        if batch.receipts:
            self._apply_receipts(conn, batch.receipts, outcomes, finished, now)
        for item in finished:
            row = self.receipt_builder(item)
            if row is not None:
                batch.new_outbox.append(row)
        if batch.message_updates:
            self._update_messages(conn, batch.message_updates)
        if batch.new_outbox:
            _INS_OUTBOX.run(conn, _INS_OUTBOX.rows(batch.new_outbox))
        if batch.acked_outbox:
            _DEL_OUTBOX.run(conn, [(i,) for i in batch.acked_outbox])
        if batch.failed_outbox:
            _RETRY_OUTBOX.run(conn, [(i,) for i, _ in batch.failed_outbox])
        return outcomes

    @staticmethod
    def _update_messages(conn: Connection, updates: list[dict]) -> None:
        by_columns: dict[tuple[str, ...], list[tuple]] = {}
        for upd in updates:
            cols = tuple(sorted(k for k in upd if k != "_id"))
            if cols:
                by_columns.setdefault(cols, []).append((*(upd[c] for c in cols), upd["_id"]))
        for cols, rows in by_columns.items():
            BulkUpdate(messages, cols, ("id",)).run(conn, rows)

    def _apply_results(self, conn: Connection, results, outcomes: dict, finished: list[Finished], now: float) -> None:
        _UPD_PART_RESULT.run(
            conn,
            [(r.state, r.connector, r.upstream_id, r.attempts, r.next_attempt_at, now, r.message_id, r.part_no)
             for r, _ in results],
        )
        # Parts that ended here (permanent failure) may finish their message.
        failed: dict[int, list[tuple[int, int]]] = {}
        early_keys: dict[str, list[str]] = {}
        for r, _ in results:
            if r.state in _FINAL_INTS:
                failed.setdefault(r.message_id, []).append((r.part_no, r.error))
            elif r.state == PART_SUBMITTED and r.upstream_id:
                early_keys.setdefault(r.connector, []).append(r.upstream_id)
        if failed:
            finished.extend(self._settle(conn, failed, now))
        # Receipts that arrived before this submit_sm_resp are applied now.
        if early_keys:
            early: list[dict] = []
            sqlite = conn.dialect.name == "sqlite"
            for connector, ids in early_keys.items():
                for chunk in _chunks(ids):
                    if sqlite:
                        found = conn.exec_driver_sql(
                            f"{_SQLITE_EARLY}{', '.join('?' * len(chunk))})", (connector, *chunk)
                        ).fetchall()
                        early.extend(dict(zip(_EARLY_COLS, row)) for row in found)
                        continue
                    found = conn.execute(
                        select(early_receipts).where(
                            early_receipts.c.connector == connector, early_receipts.c.upstream_id.in_(chunk)
                        )
                    )
                    early.extend(dict(m) for m in found.mappings())
            if early:
                _DEL_EARLY.run(conn, [(e["connector"], e["upstream_id"]) for e in early])
                matched = [(self._early_to_receipt(e), None) for e in early]
                self._apply_receipts(conn, matched, outcomes, finished, now)
        for _, fut in results:
            outcomes[id(fut)] = finished

    def _early_to_receipt(self, row: dict) -> UpstreamReceipt:
        if self.early_decoder is None:
            raise RuntimeError("Store.early_decoder is not set")
        return self.early_decoder(row)

    def _apply_receipts(self, conn: Connection, items, outcomes: dict, finished: list[Finished], now: float) -> None:
        wanted: dict[str, set[str]] = {}
        for r, _ in items:
            wanted.setdefault(r.connector, set()).add(r.upstream_id)
        # One joined select per connector: each matched part with its message row.
        by_key: dict[tuple[str, str], list] = {}
        msgs: dict[int, dict] = {}
        sqlite = conn.dialect.name == "sqlite"
        for connector, ids in wanted.items():
            for chunk in _chunks(list(ids)):
                if sqlite:
                    found = conn.exec_driver_sql(
                        f"{_SQLITE_PART_MSG}parts.connector = ? AND parts.upstream_id IN ({', '.join('?' * len(chunk))})",
                        (connector, *chunk),
                    ).fetchall()
                else:
                    found = conn.execute(
                        select(*_PART_MSG_COLS)
                        .select_from(_PART_JOIN)
                        .where(parts.c.connector == connector, parts.c.upstream_id.in_(chunk))
                    )
                for row in found:
                    key = (connector, row[_P_UPSTREAM_ID])
                    hit = by_key.get(key)
                    if hit is None:
                        by_key[key] = [row]
                    else:
                        hit.append(row)
                    message_id = row[_P_MESSAGE_ID]
                    if message_id not in msgs:
                        msgs[message_id] = dict(zip(_MSG_COLS, row[:_N_MSG]))
        settle: dict[int, list[tuple[int, int]]] = {}
        new_states: dict[int, dict[int, int]] = {}  # message id -> part no -> state set here
        part_updates: list[tuple] = []
        early_rows: list[tuple] = []
        for receipt, fut in items:
            rows = by_key.get((receipt.connector, receipt.upstream_id))
            if not rows:
                # Kept until its submit_sm_resp comes — final states only: an intermediate
                # notification would settle nothing, and keeping it (first one wins) would
                # shadow the final receipt that follows.
                if receipt.state in _FINAL_INTS:
                    pdu_enc = receipt.pdu_enc() if callable(receipt.pdu_enc) else receipt.pdu_enc
                    early_rows.append((receipt.connector, receipt.upstream_id, pdu_enc, now))
                if fut is not None:
                    outcomes[id(fut)] = False
                continue
            if fut is not None:
                outcomes[id(fut)] = True
            if receipt.state not in _FINAL_INTS:
                continue  # ENROUTE/ACCEPTED notifications: nothing to settle
            for row in rows:
                message_id, part_no = row[_P_MESSAGE_ID], row[_P_PART_NO]
                done = new_states.setdefault(message_id, {})
                if row[_P_STATE] in _FINAL_INTS or part_no in done:
                    continue  # a duplicate receipt: already applied (earlier, or in this batch)
                done[part_no] = receipt.state
                part_updates.append((receipt.state, now, message_id, part_no))
                settle.setdefault(message_id, []).append((part_no, receipt.error))
        _UPD_PART_STATE.run(conn, part_updates)
        if early_rows:
            _INS_EARLY.run(conn, early_rows)
        if settle:
            finished.extend(self._settle(conn, settle, now, msgs, new_states))

    def _settle(
        self,
        conn: Connection,
        changed: dict[int, list[tuple[int, int]]],
        now: float,
        msgs: dict[int, dict] | None = None,
        new_states: dict[int, dict[int, int]] | None = None,
    ) -> list[Finished]:
        """Recompute the state of messages whose parts changed; return what finished.

        ``msgs`` and ``new_states`` are what the caller already read and wrote in this
        transaction: a one-part message whose row is known needs no further read.
        """
        states: dict[int, dict[int, int]] = {}
        to_read: list[int] = []
        for message_id in changed:
            msg = msgs.get(message_id) if msgs else None
            known = new_states.get(message_id) if new_states else None
            if msg is not None and msg["parts_total"] == 1 and known and len(known) == 1:
                states[message_id] = known
            else:
                to_read.append(message_id)
        if to_read:
            if msgs is None:
                msgs = {}
            for chunk in _chunks(to_read):
                found = conn.execute(
                    select(*_PART_MSG_COLS).select_from(_PART_JOIN).where(parts.c.message_id.in_(chunk))
                )
                for row in found:
                    states.setdefault(row.p_message_id, {})[row.p_part_no] = row.p_state
                    if row.p_message_id not in msgs:
                        msgs[row.p_message_id] = dict(zip(_MSG_COLS, row[:_N_MSG]))
        out: list[Finished] = []
        finals: list[tuple] = []
        errors: list[tuple] = []
        for message_id, changes in changed.items():
            msg = msgs.get(message_id) if msgs is not None else None
            if msg is None or msg["state"] in _FINAL_INTS:
                continue
            part_states = states.get(message_id, {})
            # The error of the latest failed part; parts that failed in earlier transactions
            # left theirs on the message row.
            error = msg["error"]
            for _, e in reversed(changes):
                if e:
                    error = e
                    break
            # An upstream's err: field can hold any number; one that overflows the column
            # would fail the whole group commit (and come back with every resend), so it is
            # capped at the widest value SMPP itself carries (a 32-bit command_status).
            error = min(max(error, 0), 0xFFFFFFFF)
            per_part = self.per_part_receipts(msg["account"])
            if per_part:
                for part_no, part_error in changes:
                    out.append(Finished(msg, part_no, MessageState(part_states[part_no]), part_error, now))
            final = message_state(part_states.values())
            if final is None:
                if error != msg["error"]:
                    errors.append((error, message_id))
                    msg["error"] = error
                continue
            finals.append((int(final), now, error, message_id))
            msg.update(state=int(final), done_at=now, error=error)
            if not per_part:
                out.append(Finished(msg, None, final, error, now))
        _UPD_MESSAGE_ERROR.run(conn, errors)
        _UPD_MESSAGE_FINAL.run(conn, finals)
        return out

    # --- reads ------------------------------------------------------------------------------

    async def pending_parts(self) -> list[dict]:
        """Parts still to send (queued, or sending when we stopped): the queue to rebuild at
        start. A part that was being sent at a crash is sent again (at-least-once)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(parts, messages.c.account, messages.c.dest_hash, messages.c.category,
                       messages.c.expires_at, messages.c.not_before, messages.c.priority, messages.c.dest_enc)
                .join(messages, messages.c.id == parts.c.message_id)
                .where(parts.c.state.in_(PART_PENDING_STATES))
                .order_by(parts.c.message_id, parts.c.part_no)
            )
            return [dict(r) for r in rows.mappings()]

    async def stale_parts(self, expired_before: float, limit: int = 10_000) -> list[tuple[str, str]]:
        """(connector, upstream id) of parts the upstream accepted but never sent a receipt
        for, whose message's validity ended before ``expired_before``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(parts.c.connector, parts.c.upstream_id)
                .join(messages, messages.c.id == parts.c.message_id)
                .where(
                    and_(
                        parts.c.state == PART_SUBMITTED,
                        parts.c.upstream_id.is_not(None),
                        messages.c.expires_at < expired_before,
                    )
                )
                .limit(limit)
            )
            return [(r.connector, r.upstream_id) for r in rows]

    async def purge_early_receipts(self, received_before: float) -> int:
        """Drop early receipts that never found their message (e.g. the first copy of a
        message sent twice around a crash): they hold an encrypted number, kept no longer
        than needed."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(early_receipts).where(early_receipts.c.received_at < received_before))
            return result.rowcount or 0

    async def outbox_for(self, account: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox)
                .where(and_(outbox.c.account == account, outbox.c.id > after_id))
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]

    async def max_ids(self) -> dict[str, int]:
        """The largest id in each table whose ids come from ``ids.IdGenerator`` (0 when
        empty): the daemon seeds its generator past them, so ids never go back across a
        restart, whatever the clock did meanwhile."""
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for table in (messages, outbox, mo_messages, audit_log):
                out[table.name] = (await conn.execute(select(func.max(table.c.id)))).scalar() or 0
        return out

    async def message(self, message_id: int) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(messages).where(messages.c.id == message_id))).mappings().first()
            return dict(row) if row else None

    async def cancel(self, message_id: int, account: str) -> bool:
        """Cancel a message none of whose parts left yet (cancel_sm). True if cancelled."""
        now = self.clock()
        async with self.engine.begin() as conn:
            msg = (
                await conn.execute(select(messages.c.state, messages.c.account).where(messages.c.id == message_id))
            ).first()
            if msg is None or msg.account != account or msg.state in FINAL_STATES:
                return False
            states = [r.state for r in await conn.execute(select(parts.c.state).where(parts.c.message_id == message_id))]
            if any(s != PART_QUEUED for s in states):
                return False
            await conn.execute(
                update(parts).where(parts.c.message_id == message_id).values(state=int(MessageState.DELETED), updated_at=now)
            )
            await conn.execute(
                update(messages).where(messages.c.id == message_id).values(state=int(MessageState.DELETED), done_at=now)
            )
            return True


__all__ = [
    "FINAL_STATES",
    "Finished",
    "PART_QUEUED",
    "PART_SENDING",
    "PART_SUBMITTED",
    "Store",
    "SubmitResult",
    "UpstreamReceipt",
    "message_state",
]
