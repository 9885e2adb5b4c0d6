"""Durable writes with group commit, and the reads the pipeline needs.

Every state change the pipeline makes goes through one writer that gathers the calls made
while the previous transaction commits (with nothing committing, those of the next
``max_delay``; at most ``max_batch``) into one transaction, then resolves their outcomes
once it committed. A partner's submit_sm_resp and our deliver_sm_resp to an upstream are
sent only after that: acknowledge after commit, with the fsync paid once per batch rather
than once per message.

What a batch does inside the database is ``transaction.py`` (one synchronous function on a
SQLAlchemy Connection: bulk statements, one joined select per kind of look-up, no per-row
round trips). Where it runs:

- a SQLite file, with a transaction *factory*: in a writer process of its own
  (``writer.py``), so that the transaction's Python half never competes with the event
  loop for the GIL — the daemon's way;
- a SQLite file, with a ``Transaction``: on a dedicated writer thread with its own
  synchronous engine (``db.sync_writer_engine``: WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE``), one hand-off to that thread per commit;
- elsewhere (PostgreSQL, in-memory SQLite): through ``AsyncConnection.run_sync``.

Outcomes (``Outcome``: an awaitable whose callbacks run at once) are resolved on the event
loop, after the commit returned.

Background transactions (``background``: the retention purge's batches) run on the same
writer, one at a time, interleaved with the batches: a job waiting goes after the batch being
committed, and the batch that gathers while it runs goes next — one job between two batches
at most. Only while no batch is waiting would that starve the job: at 200 submits/s there is
always one (bench_purge: 60 purge batches in 73 s). On a SQLite file there is then one
writer, and a purge batch delays a commit by its own length at most, instead of SQLite's lock
being contended (``writer.py`` says what that cost).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from sqlalchemy import and_, case, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from protocol.constants import MessageState

from . import db
from .schema import (
    PART_PENDING_STATES,
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    audit_log,
    early_receipts,
    messages,
    meta,
    mo_messages,
    outbox,
    parts,
)
from .transaction import (
    Backlog,
    FINAL_STATES,
    Finished,
    ReceiptBuilder,
    SubmitResult,
    Transaction,
    UpstreamReceipt,
    Work,
    message_state,
    take_new_messages,
)
from .writer import STORED, Job, WriterProcess, run_job

#: Batches a writer process may hold at once. One: what gathers while it commits goes as
#: soon as it answers (``_answered``). More measured worse in bench_mt: two (the next batch
#: waiting in the socket) made a call wait for up to three commits instead of two; sixteen,
#: with the child merging the batches that had arrived into one transaction, made commits
#: smaller and the writer ~15 % more costly per message, at no gain in throughput; sending
#: the next batch as soon as the writer said ``STORED`` (its messages committed, the rest
#: still to apply) did no better than waiting for its whole answer.
PIPELINE = 1


class Outcome:
    """What a store call resolves to once its batch committed (or failed).

    Used like an ``asyncio.Future`` (``await``, ``add_done_callback``, ``result()``,
    ``exception()``), with one difference that matters under load: callbacks run at once,
    in the loop iteration that read the commit's answer. An asyncio future runs them one
    iteration later, and a busy iteration (hundreds of submits planned) is milliseconds:
    every acknowledgement behind a commit (submit_sm_resp, an upstream receipt's
    deliver_sm_resp) would wait that long again. A callback that raises is reported to the
    loop's exception handler; the others still run.
    """

    __slots__ = ("_callbacks", "_result", "_exception", "_done")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Outcome], None]] = []
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def result(self) -> Any:
        if not self._done:
            raise asyncio.InvalidStateError("result is not ready")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("result is not ready")
        return self._exception

    def add_done_callback(self, fn: Callable[[Outcome], None]) -> None:
        if self._done:
            self._call(fn)
        else:
            self._callbacks.append(fn)

    def set_result(self, result: Any) -> None:
        self._result = result
        self._finish()

    def set_exception(self, exc: BaseException) -> None:
        self._exception = exc
        self._finish()

    def _finish(self) -> None:
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._call(fn)

    def _call(self, fn: Callable[[Outcome], None]) -> None:
        try:
            fn(self)
        except Exception as exc:  # noqa: BLE001 - one caller's bug must not skip the others
            asyncio.get_running_loop().call_exception_handler(
                {"message": "exception in a store callback", "exception": exc}
            )

    def __await__(self):
        if not self._done:
            fut = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: fut.done() or fut.set_result(None))
            yield from fut.__await__()
        return self.result()


class _Pending:
    """The batch being gathered: its calls' outcomes and the work they asked for."""

    __slots__ = ("outcomes", "work", "started", "messages")

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.messages: list[Outcome] = []  # add_message's: resolved once their own commit is done
        self.work = Work()
        self.started = 0.0  # linger-clock time of its first call

    def __len__(self) -> int:
        return len(self.outcomes)


#: The partial index's own predicate, as literal SQL: SQLite uses a partial index only for a
#: query whose WHERE holds its predicate as written, not with bound parameters.
_WAITING = text("parts.state IN (0, 1)")
_SUBMITTED = text("parts.state = 10")  # ix_parts_submitted's
assert PART_PENDING_STATES == (0, 1) and PART_SUBMITTED == 10


class Store:
    """``transaction`` is a ``Transaction``, run in this process, or a picklable
    zero-argument factory of one (e.g. a ``functools.partial`` of a module-level function),
    which on a SQLite file runs it in a writer process (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        transaction: Transaction | Callable[[], Transaction],
        *,
        max_batch: int = 2000,
        max_delay: float = 0.002,
        clock: Callable[[], float] = time.time,
        timers: Any = None,
    ) -> None:
        self.engine = engine
        if isinstance(transaction, Transaction):
            self.transaction: Transaction | None = transaction
            self._factory = None
        else:
            self.transaction = None
            self._factory = transaction
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.clock = clock
        #: The group commit's linger (``max_delay``) on a ``smscenter.runtime.timers.Timers`` (virtual
        #: time in tests); without one, on the monotonic clock and the loop's own sleep.
        self.timers = timers
        self._linger_clock: Callable[[], float] = time.monotonic if timers is None else timers.now
        self._linger = asyncio.sleep if timers is None else timers.sleep
        self._batch = _Pending()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._closing = False
        self.commits = 0
        self.committed_ops = 0
        self._writer_url = db.writer_url(engine)
        self._sync_engine = None
        self._process: WriterProcess | None = None
        self._in_flight = 0  # batches the writer process holds
        self._executor: ThreadPoolExecutor | None = None
        self._reconfigure: Any = None  # for the writer process: values for its next batch
        self._jobs: deque[tuple[Job, Outcome]] = deque()  # background(): one between two batches
        self._job_last = False  # the writer's last transaction was a job: a batch goes next

    #: Hears the new outbox rows (after the commit, on the event loop), so that they can be
    #: sent without being read back. Rows may carry, besides the table's columns, what their
    #: builder put there for the sender (e.g. ``pdu``).
    on_outbox_rows: Callable[[list[dict]], None] | None = None
    #: Called after each commit that wrote webhook backlog rows, with their (id, account):
    #: the webhook sender reads the rows themselves from the table.
    on_webhook_rows: Callable[[list[tuple[int, str]]], None] | None = None

    #: Hears each message cancelled (after its commit): the dispatcher, whose queue is mostly
    #: in the database, counts it out and stops guarding it from its loader.
    on_cancelled: Callable[[int, dict], None] | None = None

    #: Told once when the writer process dies (SIGKILL, a crash), with its pid and how many
    #: batches and jobs it held: each of their calls failed with ``WriterDied``, and what
    #: gathered meanwhile goes to the writer started next. The daemon's one log line.
    on_writer_died: Callable[[int | None, int], None] | None = None

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid, when the transaction runs in one."""
        return self._process.pid if self._process is not None else None

    @property
    def writer_restarts(self) -> int:
        """Writer processes started again after one died (0 without a writer process)."""
        return max(0, self._process.starts - 1) if self._process is not None else 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writer_url is not None and self._factory is not None:
            self._process = WriterProcess(self._writer_url, self._factory, on_died=self._writer_died)
            await self._process.start()
        elif self._writer_url is not None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
            self._sync_engine = db.sync_writer_engine(self._writer_url)
        elif self.transaction is None:
            self.transaction = self._factory()
        self._writer = loop.create_task(self._write_loop(), name="store-writer")

    def _writer_died(self, pid: int | None, held: int) -> None:
        if self.on_writer_died is not None:
            self.on_writer_died(pid, held)

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
        if self._process is not None:
            await self._process.close()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._sync_engine.dispose)
            executor.shutdown(wait=True)

    def reconfigure(self, factory: Callable[[], Transaction] | None, values: Any) -> None:
        """New plain values for the transaction's ``reconfigure`` hook (a config reload):
        applied here at once, or, with a writer process, before the next batch it commits.
        ``factory`` (built with the same values) replaces the one a writer process is started
        again with, should it die."""
        if self._factory is not None and factory is not None:
            self._factory = factory
            if self._process is not None:
                self._process.factory = factory
        if self._process is not None:
            self._reconfigure = values  # sent with the next batch (an empty one is not sent)
        elif self.transaction is not None and self.transaction.reconfigure is not None:
            self.transaction.reconfigure(values)

    # --- batched writes ---------------------------------------------------------------------

    def _join(self) -> tuple[Outcome, Work, int]:
        """An outcome for one more call in the batch, the batch's work, and the call's
        position in it."""
        if self._closing:
            raise RuntimeError("store is closing")
        fut = Outcome()
        batch = self._batch
        outcomes = batch.outcomes
        pos = len(outcomes)
        outcomes.append(fut)
        if pos == 0:
            batch.started = self._linger_clock()
            self._wakeup.set()
        elif pos + 1 >= self.max_batch:
            self._wakeup.set()
        return fut, batch.work, pos

    def add_message(self, message: dict, message_parts: list[dict]) -> Outcome:
        """Store a new message and its parts (queued). Resolves once committed."""
        fut, work, _ = self._join()
        self._batch.messages.append(fut)
        work.new_messages.append(message)
        work.new_parts.extend(message_parts)
        return fut

    def add_answer(self, row: dict) -> Outcome:
        """Store an idempotency key with its answer (an ``api_idempotency`` row) in the
        transaction of the messages added before it in the same batch — the request's, when
        called right after their ``add_message`` with no wait between (one batch gathers
        every call made until the writer's next turn). Resolves with them."""
        fut, work, _ = self._join()
        self._batch.messages.append(fut)
        work.new_answers.append(row)
        return fut

    def record_submit(self, result: SubmitResult) -> Outcome:
        """Store a connector's answer for a part. Resolves to the list of ``Finished``
        caused (a permanent failure, or an early receipt now matched)."""
        fut, work, pos = self._join()
        work.results.append((result, pos))
        return fut

    def apply_receipt(self, receipt: UpstreamReceipt) -> Outcome:
        """Correlate an upstream receipt. Resolves to True if it matched a part, False if it
        was kept as an early receipt; in both cases it is safe to acknowledge upstream."""
        fut, work, pos = self._join()
        work.receipts.append((receipt, pos))
        return fut

    def add_outbox(self, row: dict) -> Outcome:
        fut, work, _ = self._join()
        work.new_outbox.append(row)
        return fut

    def ack_outbox(self, outbox_id: int) -> Outcome:
        fut, work, _ = self._join()
        work.acked_outbox.append(outbox_id)
        return fut

    def retry_outbox(self, outbox_id: int) -> Outcome:
        fut, work, _ = self._join()
        work.failed_outbox.append((outbox_id, self.clock()))
        return fut

    def update_message(self, message_id: int, **values: Any) -> Outcome:
        fut, work, _ = self._join()
        work.message_updates.append({"_id": message_id, **values})
        return fut

    def background(self, fn: Callable[[Any], Any], *, transaction: bool = True, durable: bool = True) -> Outcome:
        """Run ``fn(conn)`` in a transaction of its own on the store's writer, after the
        batch being committed (if any) and before the next, which goes right after it: one
        job between two batches at most, whatever the load. Resolves to
        (its result, seconds the transaction held the writer, commit included). With a
        writer process, ``fn`` must pickle (``writer.Job``; ``transaction=False``: none
        around it; ``durable=False``: no fsync of its own)."""
        if self._closing:
            raise RuntimeError("store is closing")
        fut = Outcome()
        self._jobs.append((Job(fn, transaction, durable), fut))
        self._wakeup.set()
        return fut

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._in_flight >= PIPELINE:
                continue  # woken again when the writer process answers
            if self._jobs and not (self._batch and self._job_last):
                self._job_last = True
                await self._run_job(*self._jobs.popleft())
                if self._batch or self._jobs or self._closing:
                    self._wakeup.set()
                continue
            batch = self._batch
            if batch and len(batch) < self.max_batch and not self._closing and self._process is None:
                # Let more work join this commit: one fsync for everything that arrives
                # within max_delay of the batch's first call. A batch that filled while the
                # previous commit ran has waited long enough. (A writer process needs no
                # such wait: what arrives while it commits is sent as soon as it answers.)
                linger = self.max_delay - (self._linger_clock() - batch.started)
                if linger > 0:
                    await self._linger(linger)
            batch, self._batch = self._batch, _Pending()
            if batch:
                self._job_last = False
                if self._process is not None:
                    await self._send(batch)
                else:
                    await self._commit(batch)
            if self._closing and not self._batch and not self._in_flight:
                self._fail_jobs()
                return
            if self._batch or self._jobs:
                self._wakeup.set()

    async def _run_job(self, job: Job, fut: Outcome) -> None:
        """One background job: sent to the writer process (answered in ``_job_answered``),
        or run here on the writer thread or through ``run_sync``."""
        if self._process is not None:
            try:
                if not self._process.running:
                    await self._process.start()
            except Exception as exc:  # noqa: BLE001 - its caller learns of it
                fut.set_exception(exc)
                return
            self._send_job(job, fut)
            return
        try:
            if self._executor is not None:
                done = await asyncio.get_running_loop().run_in_executor(
                    self._executor, lambda: _run_sync_job(self._sync_engine, job))
            else:
                async with self.engine.connect() as conn:
                    done = await conn.run_sync(run_job, job)
        except Exception as exc:  # noqa: BLE001 - its caller learns of it
            fut.set_exception(exc)
            return
        fut.set_result(done)

    def _send_job(self, job: Job, fut: Outcome) -> None:
        try:
            self._process.submit(job, lambda reply: self._job_answered(fut, reply))
        except Exception as exc:  # noqa: BLE001 - its caller learns of it
            fut.set_exception(exc)
            return
        self._in_flight += 1

    def _job_answered(self, fut: Outcome, reply) -> None:
        """A job's reply: the batch that gathered while it ran goes to the writer first."""
        self._in_flight -= 1
        waiting = self._batch
        if waiting and self._process.running:
            self._batch = _Pending()
            self._job_last = False
            self._submit(waiting)
        self._wakeup.set()
        if reply[0]:
            fut.set_result(reply[1])
        else:
            fut.set_exception(reply[1])

    def _fail_jobs(self) -> None:
        while self._jobs:
            _, fut = self._jobs.popleft()
            fut.set_exception(RuntimeError("store is closing"))

    async def _send(self, batch: _Pending) -> None:
        """Hand the batch to the writer process (started again if it died)."""
        try:
            if not self._process.running:
                await self._process.start()
        except Exception as exc:  # noqa: BLE001 - the batch's callers learn of it
            self._fail(batch, exc)
            return
        self._submit(batch)

    def _submit(self, batch: _Pending) -> None:
        batch.work.now = self.clock()
        if self._reconfigure is not None:
            batch.work.reconfigure, self._reconfigure = self._reconfigure, None
        try:
            self._process.submit(batch.work, lambda reply: self._answered(batch, reply))
        except Exception as exc:  # noqa: BLE001
            self._fail(batch, exc)
            return
        self._in_flight += 1

    def _answered(self, batch: _Pending, reply) -> None:
        """A batch's reply, in the loop iteration that read it. What gathered meanwhile goes
        to the writer at once: waiting for the write loop's next turn (behind a busy loop)
        would leave the writer idle. ``STORED`` comes first when the writer committed the
        batch's new messages on their own: their submitters are answered now."""
        if reply == STORED:
            for fut in batch.messages:
                fut.set_result(None)
            return
        self._in_flight -= 1
        waiting = self._batch
        if self._jobs and self._process.running:
            self._job_last = True
            self._send_job(*self._jobs.popleft())  # its turn: the waiting batch goes after it
        elif waiting and self._process.running:
            self._batch = _Pending()
            self._job_last = False
            self._submit(waiting)
        self._wakeup.set()
        if reply[0]:
            batch.work.new_outbox.extend(reply[2])
            batch.work.new_webhooks.extend(reply[3])
            self._resolve(batch, reply[1])
        else:
            self._fail(batch, reply[1])

    def _commit_sync(self, work: Work) -> dict[int, Any]:
        """One transaction, on the writer thread."""
        with self._sync_engine.begin() as conn:
            return self.transaction.apply(conn, work)

    async def _commit(self, batch: _Pending) -> None:
        """Run the batch here: on the writer thread, or through ``run_sync``; its new
        messages first, in a transaction of their own (``take_new_messages``)."""
        work = batch.work
        work.now = self.clock()
        try:
            first = take_new_messages(work)
            if first is not None:
                await self._apply(first)
                for fut in batch.messages:
                    fut.set_result(None)
            outcomes = await self._apply(work)
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn of the failure
            self._fail(batch, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        self._resolve(batch, outcomes)

    async def _apply(self, work: Work) -> dict[int, Any]:
        """One transaction: on the writer thread, or through ``run_sync``."""
        if self._executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._commit_sync, work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(self.transaction.apply, work)

    def _resolve(self, batch: _Pending, outcomes: dict[int, Any]) -> None:
        self.commits += 1
        self.committed_ops += len(batch)
        work = batch.work
        if work.new_outbox and self.on_outbox_rows is not None:
            try:
                self.on_outbox_rows(work.new_outbox)
            except Exception as exc:  # noqa: BLE001 - committed is committed: the callers hear so
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "exception in Store.on_outbox_rows", "exception": exc}
                )
        if work.new_webhooks and self.on_webhook_rows is not None:
            try:
                self.on_webhook_rows([(row["id"], row["account"]) for row in work.new_webhooks])
            except Exception as exc:  # noqa: BLE001 - committed is committed
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "exception in Store.on_webhook_rows", "exception": exc}
                )
        get = outcomes.get
        for pos, fut in enumerate(batch.outcomes):
            if not fut.done():
                fut.set_result(get(pos))

    @staticmethod
    def _fail(batch: _Pending, exc: Exception) -> None:
        for fut in batch.outcomes:
            if not fut.done():
                fut.set_exception(exc)

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

    async def due_messages(
        self, now: float, limit: int, after: tuple[float, int] = (float("-inf"), 0)
    ) -> tuple[list[dict], bool]:
        """The waiting parts of the next messages due by ``now``, in the queue's due order
        ``(next_attempt_at, message_id)`` strictly after ``after``: whole messages, at most
        ``limit`` parts unless one message alone has more (ix_parts_due makes it a range
        scan); and whether more may follow."""
        query = (
            select(parts, messages.c.account, messages.c.dest_hash, messages.c.category,
                   messages.c.expires_at, messages.c.not_before, messages.c.submitted_at, messages.c.dest_enc)
            .join(messages, messages.c.id == parts.c.message_id)
            .where(_WAITING, parts.c.next_attempt_at <= now, *_after(after))
            .order_by(parts.c.next_attempt_at, parts.c.message_id, parts.c.part_no)
        )
        async with self.engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(query.limit(limit + 1))).mappings()]
            more = len(rows) > limit
            if more:
                # The page ends inside a message: drop it (it comes whole in the next page),
                # unless it is the only one (then read the rest of it).
                last = rows[-1]["message_id"]
                first = rows[0]["message_id"]
                if first != last:
                    rows = [r for r in rows if r["message_id"] != last]
                else:
                    rest = await conn.execute(
                        query.where(parts.c.message_id == last, parts.c.part_no > rows[-1]["part_no"])
                    )
                    rows.extend(dict(r) for r in rest.mappings())
            return rows, more

    async def next_due(self, after: tuple[float, int] = (float("-inf"), 0)) -> float | None:
        """When the first waiting part after ``after`` in the due order comes due (None: the
        queue holds nothing after it)."""
        query = select(parts.c.next_attempt_at).where(_WAITING, *_after(after))
        query = query.order_by(parts.c.next_attempt_at, parts.c.message_id).limit(1)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def queue_counts(self, now: float) -> tuple[int, int]:
        """(messages waiting in the queue, marketing ones among them held for later — their
        window or schedule, not a retry): the dispatcher's gauges, read at start and after
        each of its timer passes rather than counted per message in memory."""
        waiting = (
            select(parts.c.message_id, func.max(parts.c.next_attempt_at).label("due"),
                   func.max(parts.c.attempts).label("attempts"))
            .where(_WAITING)
            .group_by(parts.c.message_id)
            .subquery()
        )
        held = and_(messages.c.category == "marketing", waiting.c.due > now, waiting.c.attempts == 0)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(case((held, 1), else_=0)), 0))
                    .select_from(waiting.join(messages, messages.c.id == waiting.c.message_id))
                )
            ).first()
            return int(row[0]), int(row[1])

    async def held_by_country(self, now: float) -> dict[str | None, tuple[int, float]]:
        """Per destination country (``messages.dest_country``; None before schema 0009):
        (marketing messages held for later, the earliest time one of them is due) — the
        ``queue_counts`` held ones (not yet tried, due ahead: their window's opening or their
        schedule), for ``smscenter status``. No number: countries only. Read from the parts
        due after ``now`` alone (a range of ``ix_parts_due``, not a pass over the table): a
        deep queue of messages due now costs nothing here."""
        query = (
            select(messages.c.dest_country, func.count(func.distinct(parts.c.message_id)),
                   func.min(parts.c.next_attempt_at))
            .select_from(parts.join(messages, messages.c.id == parts.c.message_id))
            .where(_WAITING, parts.c.next_attempt_at > now, parts.c.attempts == 0,
                   messages.c.category == "marketing")
            .group_by(messages.c.dest_country)
        )
        async with self.engine.connect() as conn:
            return {country: (int(n), float(due)) for country, n, due in await conn.execute(query)}

    async def outbox_counts(self) -> dict[str, int]:
        """Rows owed to each account (receipts and MO not yet acknowledged): its backlog."""
        query = select(outbox.c.account, func.count()).group_by(outbox.c.account)
        async with self.engine.connect() as conn:
            return {account: int(n) for account, n in await conn.execute(query)}

    async def blocking_lines(self, limit: int) -> list[tuple[str, bytes, int, float]]:
        """(account, dest_hash, message id, due) of messages waiting for a retry: each keeps
        its (account, destination) line closed behind it until it is sent. At most ``limit``
        rows, the latest ids first (a line's latest retry closes it for the most)."""
        query = (
            select(messages.c.account, messages.c.dest_hash, parts.c.message_id, func.max(parts.c.next_attempt_at))
            .join(messages, messages.c.id == parts.c.message_id)
            .where(_WAITING, parts.c.attempts > 0)
            .group_by(messages.c.account, messages.c.dest_hash, parts.c.message_id)
            .order_by(parts.c.message_id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(query)]

    async def blockers_of(self, lines: set[tuple[str, bytes]]) -> dict[tuple[str, bytes], list[tuple[int, float]]]:
        """For these (account, dest_hash) lines: [(message id, due)] of their messages
        waiting for a retry (each closes its line to later messages until it is sent)."""
        out: dict[tuple[str, bytes], list[tuple[int, float]]] = {}
        if not lines:
            return out
        hashes = sorted({dest_hash for _, dest_hash in lines})
        async with self.engine.connect() as conn:
            for i in range(0, len(hashes), 500):
                rows = await conn.execute(
                    select(messages.c.account, messages.c.dest_hash, parts.c.message_id,
                           func.max(parts.c.next_attempt_at))
                    .join(messages, messages.c.id == parts.c.message_id)
                    .where(_WAITING, parts.c.attempts > 0, messages.c.dest_hash.in_(hashes[i : i + 500]))
                    .group_by(messages.c.account, messages.c.dest_hash, parts.c.message_id)
                )
                for account, dest_hash, message_id, due in rows:
                    if (account, dest_hash) in lines:
                        out.setdefault((account, dest_hash), []).append((message_id, due))
        return out

    async def stale_parts(self, expired_before: float, limit: int = 10_000) -> list[tuple[str, str]]:
        """(connector, upstream id) of parts the upstream accepted but never sent a receipt
        for, whose message's validity ended before ``expired_before``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(parts.c.connector, parts.c.upstream_id)
                .join(messages, messages.c.id == parts.c.message_id)
                .where(
                    and_(
                        _SUBMITTED,
                        parts.c.upstream_id.is_not(None),
                        messages.c.expires_at < expired_before,
                    )
                )
                .limit(limit)
            )
            return [(r.connector, r.upstream_id) for r in rows]

    async def purge_early_receipts(self, received_before: float) -> int:
        """Drop early receipts that never found their message (e.g. the first copy of a
        message sent twice around a crash): kept no longer than needed (rows from before
        schema 0006 hold an encrypted number)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(early_receipts).where(early_receipts.c.received_at < received_before))
            return result.rowcount or 0

    async def meta_values(self, prefix: str) -> dict[str, str]:
        """The ``meta`` table's facts whose key starts with ``prefix``, by key."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.startswith(prefix, autoescape=True)))
            return {key: value for key, value in rows}

    async def set_meta(self, key: str, value: str) -> None:
        """Record a fact in the ``meta`` table (replacing its value), committed on return."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(meta).where(meta.c.key == key))
            await conn.execute(meta.insert().values(key=key, value=value))

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
        return await max_ids(self.engine)

    async def message(self, message_id: int) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(messages).where(messages.c.id == message_id))).mappings().first()
            return dict(row) if row else None

    async def cancel(self, message_id: int, account: str) -> bool:
        """Cancel a message none of whose parts left yet (cancel_sm). True if cancelled."""
        now = self.clock()
        async with self.engine.begin() as conn:
            msg = (
                await conn.execute(
                    select(messages.c.state, messages.c.account, messages.c.category).where(messages.c.id == message_id)
                )
            ).first()
            if msg is None or msg.account != account or msg.state in FINAL_STATES:
                return False
            found = (
                await conn.execute(
                    select(parts.c.state, parts.c.next_attempt_at, parts.c.attempts).where(parts.c.message_id == message_id)
                )
            ).all()
            if any(p.state != PART_QUEUED for p in found):
                return False
            await conn.execute(
                update(parts).where(parts.c.message_id == message_id).values(state=int(MessageState.DELETED), updated_at=now)
            )
            await conn.execute(
                update(messages).where(messages.c.id == message_id).values(state=int(MessageState.DELETED), done_at=now)
            )
        if self.on_cancelled is not None:
            self.on_cancelled(message_id, {
                "category": msg.category,
                "due": max((p.next_attempt_at for p in found), default=0.0),
                "attempts": max((p.attempts for p in found), default=0),
            })
        return True


def _run_sync_job(engine, job: Job) -> tuple[Any, float]:
    with engine.connect() as conn:
        return run_job(conn, job)


def _after(after: tuple[float, int]) -> list:
    """Strictly after ``(due, message_id)`` in the queue's due order (nothing for the start)."""
    due, message_id = after
    if due == float("-inf"):
        return []
    return [or_(parts.c.next_attempt_at > due, and_(parts.c.next_attempt_at == due, parts.c.message_id > message_id))]


async def max_ids(engine: AsyncEngine) -> dict[str, int]:
    """The largest id in each table whose ids come from ``ids.IdGenerator`` (0 when empty):
    the daemon seeds its generators past them, so ids never go back across a restart,
    whatever the clock did meanwhile."""
    out: dict[str, int] = {}
    async with engine.connect() as conn:
        for table in (messages, outbox, mo_messages, audit_log):
            out[table.name] = (await conn.execute(select(func.max(table.c.id)))).scalar() or 0
    return out


__all__ = [
    "Backlog",
    "FINAL_STATES",
    "Finished",
    "Outcome",
    "ReceiptBuilder",
    "Transaction",
    "PART_QUEUED",
    "PART_SENDING",
    "PART_SUBMITTED",
    "Store",
    "SubmitResult",
    "UpstreamReceipt",
    "max_ids",
    "message_state",
]
