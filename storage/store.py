"""Durable writes with group commit, and the reads the pipeline needs.

Every state change the pipeline makes goes through one writer task that gathers the calls
made within a few milliseconds (or up to ``max_batch`` of them) into one transaction, then
resolves their futures once it committed. A partner's submit_sm_resp and our
deliver_sm_resp to an upstream are sent only after that: acknowledge after commit, with
the fsync paid once per batch rather than once per message.

Receipt correlation happens inside the same transaction as its consequences (part and
message state, the partner's receipt in the outbox, the early-receipt table), so a crash
can never leave a receipt half applied: either the upstream's receipt was acknowledged and
everything it caused is stored, or it was not and the upstream sends it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import and_, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from protocol.constants import MessageState

from .schema import (
    PART_PENDING_STATES,
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    early_receipts,
    messages,
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
    pdu_enc: bytes  # the upstream's deliver_sm (encrypted), kept if it arrives early
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

    def __len__(self) -> int:
        return len(self.futures)


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
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="store-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer

    # --- batched writes ---------------------------------------------------------------------

    def _future(self) -> asyncio.Future:
        if self._closing:
            raise RuntimeError("store is closing")
        fut = asyncio.get_running_loop().create_future()
        self._batch.futures.append(fut)
        if len(self._batch) >= self.max_batch or len(self._batch) == 1:
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
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._batch and len(self._batch) < self.max_batch and not self._closing:
                # Let more work join this commit: one fsync for everything that arrives
                # within max_delay.
                await asyncio.sleep(self.max_delay)
            batch, self._batch = self._batch, _Batch()
            if batch:
                await self._commit(batch)
            if self._closing and not self._batch:
                return
            if self._batch:
                self._wakeup.set()

    async def _commit(self, batch: _Batch) -> None:
        try:
            async with self.engine.begin() as conn:
                outcomes = await self._apply(conn, batch)
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for fut in batch.futures:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        self.committed_ops += len(batch)
        if batch.new_outbox and self.on_outbox is not None:
            self.on_outbox({row["account"] for row in batch.new_outbox})
        for fut in batch.futures:
            if not fut.done():
                fut.set_result(outcomes.get(id(fut)))

    async def _apply(self, conn: AsyncConnection, batch: _Batch) -> dict[int, Any]:
        outcomes: dict[int, Any] = {}
        if batch.new_messages:
            await conn.execute(messages.insert(), batch.new_messages)
        if batch.new_parts:
            await conn.execute(parts.insert(), batch.new_parts)
        finished: list[Finished] = []
        if batch.results:
            await self._apply_results(conn, batch, outcomes, finished)
        if batch.receipts:
            await self._apply_receipts(conn, batch.receipts, outcomes, finished)
        for item in finished:
            row = self.receipt_builder(item)
            if row is not None:
                batch.new_outbox.append(row)
        if batch.message_updates:
            for upd in batch.message_updates:
                values = {k: v for k, v in upd.items() if k != "_id"}
                await conn.execute(update(messages).where(messages.c.id == upd["_id"]).values(**values))
        if batch.new_outbox:
            await conn.execute(outbox.insert(), batch.new_outbox)
        if batch.acked_outbox:
            await conn.execute(delete(outbox).where(outbox.c.id.in_(batch.acked_outbox)))
        for outbox_id, _ in batch.failed_outbox:
            await conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(attempts=outbox.c.attempts + 1))
        return outcomes

    async def _apply_results(self, conn, batch: _Batch, outcomes: dict, finished: list[Finished]) -> None:
        now = self.clock()
        rows = [
            {
                "b_message_id": r.message_id,
                "b_part_no": r.part_no,
                "state": r.state,
                "connector": r.connector,
                "upstream_id": r.upstream_id,
                "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at,
                "updated_at": now,
            }
            for r, _ in batch.results
        ]
        from sqlalchemy import bindparam

        stmt = (
            update(parts)
            .where(and_(parts.c.message_id == bindparam("b_message_id"), parts.c.part_no == bindparam("b_part_no")))
            .values(
                state=bindparam("state"),
                connector=bindparam("connector"),
                upstream_id=bindparam("upstream_id"),
                attempts=bindparam("attempts"),
                next_attempt_at=bindparam("next_attempt_at"),
                updated_at=bindparam("updated_at"),
            )
        )
        await conn.execute(stmt, rows)
        # Parts that ended here (permanent failure) may finish their message.
        failed: dict[int, list[tuple[int, int]]] = {}
        for r, _ in batch.results:
            if r.state in FINAL_STATES:
                failed.setdefault(r.message_id, []).append((r.part_no, r.error))
        if failed:
            finished.extend(await self._settle_messages(conn, failed, now))
        # Receipts that arrived before this submit_sm_resp are applied now.
        keys = [(r.connector, r.upstream_id) for r, _ in batch.results if r.state == PART_SUBMITTED and r.upstream_id]
        if keys:
            early = (
                await conn.execute(
                    select(early_receipts).where(tuple_(early_receipts.c.connector, early_receipts.c.upstream_id).in_(keys))
                )
            ).mappings().all()
            if early:
                await conn.execute(
                    delete(early_receipts).where(
                        tuple_(early_receipts.c.connector, early_receipts.c.upstream_id).in_(
                            [(e["connector"], e["upstream_id"]) for e in early]
                        )
                    )
                )
                matched = [(self._early_to_receipt(e), None) for e in early]
                await self._apply_receipts(conn, matched, outcomes, finished)
        for r, fut in batch.results:
            outcomes[id(fut)] = finished

    # Installed by the pipeline: turns a stored early receipt back into an UpstreamReceipt,
    # and hears which accounts got new outbox rows (after the commit).
    early_decoder: Callable[[dict], UpstreamReceipt] | None = None
    on_outbox: Callable[[set[str]], None] | None = None

    def _early_to_receipt(self, row) -> UpstreamReceipt:
        if self.early_decoder is None:
            raise RuntimeError("Store.early_decoder is not set")
        return self.early_decoder(dict(row))

    async def _apply_receipts(self, conn, items, outcomes: dict, finished: list[Finished]) -> None:
        now = self.clock()
        keys = list({(r.connector, r.upstream_id) for r, _ in items})
        found = (
            await conn.execute(
                select(parts.c.message_id, parts.c.part_no, parts.c.state, parts.c.connector, parts.c.upstream_id).where(
                    tuple_(parts.c.connector, parts.c.upstream_id).in_(keys)
                )
            )
        ).all()
        by_key: dict[tuple[str, str], list] = {}
        for row in found:
            by_key.setdefault((row.connector, row.upstream_id), []).append(row)
        settle: dict[int, list[tuple[int, int]]] = {}
        applied: set[tuple[int, int]] = set()
        early_rows = []
        for receipt, fut in items:
            rows = by_key.get((receipt.connector, receipt.upstream_id))
            if not rows:
                # Kept until its submit_sm_resp comes — final states only: an intermediate
                # notification would settle nothing, and keeping it (first one wins) would
                # shadow the final receipt that follows.
                if receipt.state in FINAL_STATES:
                    early_rows.append(
                        {
                            "connector": receipt.connector,
                            "upstream_id": receipt.upstream_id,
                            "pdu_enc": receipt.pdu_enc,
                            "received_at": now,
                        }
                    )
                if fut is not None:
                    outcomes[id(fut)] = False
                continue
            if fut is not None:
                outcomes[id(fut)] = True
            if receipt.state not in FINAL_STATES:
                continue  # ENROUTE/ACCEPTED notifications: nothing to settle
            for row in rows:
                if row.state in FINAL_STATES or (row.message_id, row.part_no) in applied:
                    continue  # a duplicate receipt: already applied (earlier, or in this batch)
                applied.add((row.message_id, row.part_no))
                await conn.execute(
                    update(parts)
                    .where(and_(parts.c.message_id == row.message_id, parts.c.part_no == row.part_no))
                    .values(state=receipt.state, updated_at=now)
                )
                settle.setdefault(row.message_id, []).append((row.part_no, receipt.error))
        if early_rows:
            stmt = self._insert(early_receipts).values(early_rows)
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["connector", "upstream_id"]))
        if settle:
            finished.extend(await self._settle_messages(conn, settle, now))

    async def _settle_messages(self, conn, changed: dict[int, list[tuple[int, int]]], now: float) -> list[Finished]:
        """Recompute the state of messages whose parts changed; return what finished."""
        rows = (
            await conn.execute(
                select(parts.c.message_id, parts.c.part_no, parts.c.state).where(parts.c.message_id.in_(list(changed)))
            )
        ).all()
        states: dict[int, dict[int, int]] = {}
        for r in rows:
            states.setdefault(r.message_id, {})[r.part_no] = r.state
        msgs = {
            m["id"]: dict(m)
            for m in (await conn.execute(select(messages).where(messages.c.id.in_(list(changed))))).mappings()
        }
        out: list[Finished] = []
        for message_id, changes in changed.items():
            msg = msgs.get(message_id)
            if msg is None or msg["state"] in FINAL_STATES:
                continue
            part_states = states.get(message_id, {})
            # The error of the latest failed part; parts that failed in earlier transactions
            # left theirs on the message row.
            error = next((e for _, e in reversed(changes) if e), msg["error"])
            # An upstream's err: field can hold any number; one that overflows the column
            # would fail the whole group commit (and come back with every resend), so it is
            # capped at the widest value SMPP itself carries (a 32-bit command_status).
            error = min(max(error, 0), 0xFFFFFFFF)
            if self.per_part_receipts(msg["account"]):
                for part_no, part_error in changes:
                    out.append(Finished(msg, part_no, MessageState(part_states[part_no]), part_error, now))
            final = message_state(part_states.values())
            if final is None:
                if error != msg["error"]:
                    await conn.execute(update(messages).where(messages.c.id == message_id).values(error=error))
                continue
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(state=int(final), done_at=now, error=error)
            )
            msg.update(state=int(final), done_at=now, error=error)
            if not self.per_part_receipts(msg["account"]):
                out.append(Finished(msg, None, final, error, now))
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

    async def outbox_for(self, account: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox)
                .where(and_(outbox.c.account == account, outbox.c.id > after_id))
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]

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
