"""The message pipeline behind the partner server (its ``MessageHandler``).

submit_sm / data_sm: planned (``submit.py``), stored with group commit, answered ESME_ROK
with our id only after the commit, then queued for dispatch. submit_multi: one message per
destination, as a submit_sm to each, and one submit_multi_resp once all are committed: the
request's one id (the ``multi_id`` of each of its messages, what its receipts carry) and the
refused destinations with their statuses. query_sm and cancel_sm work on our message ids
(a multi id is none: ESME_RQUERYFAIL / ESME_RCANCELFAIL, since query_sm reads one message's
state and a multi's messages each have their own), each through the storage gate (``max_storage_reads`` at the database at once,
over all sessions; beyond it ESME_RTHROTTLED at once, never a waiting task). A storage that
is busy (connection pool exhausted, database locked) answers ESME_RTHROTTLED too: the
partner retries later, and the cause is logged once, not one traceback per PDU. Requests we
do not serve get a precise status, never a dropped session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone

import structlog

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus, MessageState
from protocol.errors import RemoteProtocolError
from protocol.smpptime import format_smpp_time
from routing.routes import RouteTable
from storage.crypto import FieldCipher
from storage.store import FINAL_STATES, Store

from smscenter.pipeline.accounts import PartnerBind
from smscenter.smpp.budgets import SessionBudgets, StorageGate
from smscenter.pipeline.dispatch import Dispatcher, QueuedMessage
from smscenter.runtime.floodlog import ErrorLog
from smscenter.pipeline.outbox import OutboxSender
from smscenter.pipeline.request import Accepted, Refusal, Refused, SubmitRequest, SubmitResult
from smscenter.smpp.submit import multi_answer, smpp_status, submit_request
from smscenter.pipeline.submit import PlannedMessage, SubmitPlanner

log = structlog.get_logger("smscenter.pipeline")

_NOT_SERVED = {
    CommandId.REPLACE_SM: CommandStatus.ESME_RREPLACEFAIL,
}

#: Enum members read once: a member looked up on its class costs ~1,000 instructions a time.
_SUBMIT_SM, _DATA_SM, _SUBMIT_MULTI = CommandId.SUBMIT_SM, CommandId.DATA_SM, CommandId.SUBMIT_MULTI
_QUERY_SM, _CANCEL_SM = CommandId.QUERY_SM, CommandId.CANCEL_SM

#: Refusals of a message that could not be stored: counted and logged by ``_storage_failed``.
_STORED_NOT = frozenset({Refusal.STORAGE_BUSY, Refusal.SYSTEM_ERROR})


class Pipeline:
    def __init__(
        self,
        planner: SubmitPlanner,
        store: Store,
        dispatcher: Dispatcher,
        outbox: OutboxSender,
        routes: RouteTable,
        cipher: FieldCipher,
        *,
        budgets: SessionBudgets | None = None,
        max_storage_reads: int = 8,
    ) -> None:
        self.planner = planner
        self.store = store
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.routes = routes
        self.cipher = cipher
        self._tasks: set[asyncio.Task] = set()
        self.budgets = budgets
        self.reads = StorageGate(max_storage_reads)
        self.errors = ErrorLog(budgets.timers, budgets.config.refusal_log_interval) if budgets else None
        self.stats = {"accepted": 0, "refused": 0, "storage_busy": 0, "storage_errors": 0}

    # --- MessageHandler ---------------------------------------------------------------------

    def handle(self, bind: PartnerBind, pdu: P.Pdu) -> None:
        cid = pdu.command_id
        if cid == _SUBMIT_SM or cid == _DATA_SM or cid == _SUBMIT_MULTI:
            self._submit_pdu(bind, pdu)
        elif cid == _QUERY_SM:
            self._read(bind, pdu, self._query)
        elif cid == _CANCEL_SM:
            self._read(bind, pdu, self._cancel)
        else:
            self._refuse(bind, pdu, _NOT_SERVED.get(cid, CommandStatus.ESME_RINVCMDID))

    def _refuse(self, bind: PartnerBind, pdu: P.Pdu, status: int) -> None:
        """Answer ``status`` at once; counted and logged aggregated (and a strike on the
        session's flood meter)."""
        self.stats["refused"] += 1
        self._answer_refused(bind, pdu, status)

    def _answer_refused(self, bind: PartnerBind, pdu: P.Pdu, status: int) -> None:
        """Answer ``status`` (already counted): logged aggregated, a strike on the session's
        flood meter."""
        if self.budgets is not None:
            self.budgets.refused(bind.link, bind.account.system_id, status)
        bind.respond(pdu.response(status))

    def _read(self, bind: PartnerBind, pdu: P.Pdu, work) -> None:
        """Run a storage-reading request on one of our ids if the gate has room, else
        ESME_RTHROTTLED now. An id that cannot be ours is ESME_RINVMSGID without a look."""
        message_id = parse_message_id(pdu.message_id)  # type: ignore[attr-defined]
        if message_id is None:
            self._refuse(bind, pdu, CommandStatus.ESME_RINVMSGID)
            return
        if not self.reads.try_enter():
            self._refuse(bind, pdu, CommandStatus.ESME_RTHROTTLED)
            return
        # Left when the task is done (after it left ``_tasks``): tasks ≤ max_storage_reads.
        self._spawn(work(bind, pdu, message_id)).add_done_callback(self._left)

    def _left(self, _task: asyncio.Task) -> None:
        self.reads.leave()

    def _storage_failed(self, event: str, who, exc: BaseException) -> Refused:
        """The refusal for a storage failure of ``who``'s request (a bind or a
        ``SubmitRequest``), logged once per cause: temporary (pool exhausted, database
        locked) → STORAGE_BUSY (ESME_RTHROTTLED), anything else → SYSTEM_ERROR
        (ESME_RSYSERR)."""
        busy = storage_busy(exc)
        self.stats["storage_busy" if busy else "storage_errors"] += 1
        account = who.account.system_id
        if self.errors is not None:
            self.errors.exception(event, exc, with_traceback=not busy, account=account)
        else:
            log.error(event, account=account, error=type(exc).__name__)
        if busy:
            return Refused(Refusal.STORAGE_BUSY, "storage busy")
        return Refused(Refusal.SYSTEM_ERROR, "storage failed")

    def bound(self, bind: PartnerBind) -> None:
        """A partner bound: if it can receive, deliver what it is owed."""
        if bind.receives:
            self.outbox.notify([bind.account.system_id])

    # --- submit -----------------------------------------------------------------------------

    def _submit_pdu(self, bind: PartnerBind, pdu: P.Pdu) -> None:
        """The SMPP door: the PDU as a ``SubmitRequest`` (or its own fault answered now),
        submitted, and the result answered as submit_sm_resp / data_sm_resp, or as one
        submit_multi_resp for all of a submit_multi's destinations."""
        try:
            request = submit_request(bind.account, pdu, self.planner.wall_clock)
        except RemoteProtocolError as exc:
            self._refuse(bind, pdu, exc.status)  # aggregated: requests_refused per account and status
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the session
            self.stats["refused"] += 1
            bind.respond(pdu.response(smpp_status(self._storage_failed("submit_failed", bind, exc))))
            return
        if request.multi:
            self.submit(request, lambda result: self._answer_multi(bind, pdu, request, result))
        else:
            self.submit(request, lambda result: self._answer(bind, pdu, result))

    def _answer_multi(self, bind: PartnerBind, pdu: P.SubmitMulti, request: SubmitRequest,
                      result: SubmitResult) -> None:
        resp = multi_answer(pdu, request, result)
        if resp.command_status and result.refused[0][1].refusal not in _STORED_NOT:
            self._answer_refused(bind, pdu, resp.command_status)  # counted where refused
            return
        bind.respond(resp)

    def _answer(self, bind: PartnerBind, pdu: P.Pdu, result: SubmitResult) -> None:
        if result.accepted:
            bind.respond(pdu.response_with_id(str(result.accepted[0].message_id)))
            return
        refused = result.refused[0][1]
        status = smpp_status(refused)
        if refused.refusal in _STORED_NOT:  # counted and logged where storing failed
            bind.respond(pdu.response(status))
            return
        self._answer_refused(bind, pdu, status)

    def submit(self, request: SubmitRequest, done: Callable[[SubmitResult], None],
               keep: Callable[[SubmitResult], dict | None] | None = None) -> None:
        """The neutral submit, for every door (which admitted the request first, through
        ``submit.admit``): the policies per destination, then each accepted message stored
        (group commit) and queued. ``done`` gets the result once every stored message is
        committed: an id is never given out before its commit.

        ``keep`` (an ``Idempotency-Key``'s door) gets the result the request will have if
        its messages commit, and may return a row (``api_idempotency``) to store in the same
        transaction: a crash leaves both or neither, so a retry with the key after a crash
        finds the messages' ids instead of sending them again. A commit that fails takes
        the row with it (the request is then refused whole, and that answer is not kept)."""
        try:
            plans = self.planner.plan(request)
        except Refused as exc:
            self.stats["refused"] += 1
            done(SubmitResult.refusing(request, exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the session
            self.stats["refused"] += 1
            done(SubmitResult.refusing(request, self._storage_failed("submit_failed", request, exc)))
            return
        if len(plans) == 1 and keep is None and not request.multi:  # the common case, without a gathering
            plan = plans[0]
            if isinstance(plan, Refused):
                self.stats["refused"] += 1
                done(SubmitResult((), ((request.destinations[0], plan),)))
                return
            fut = self._store(plan, request)
            if isinstance(fut, Refused):
                done(SubmitResult((), ((request.destinations[0], fut),)))
                return
            fut.add_done_callback(lambda f: done(self._committed(f, request, request.destinations[0], plan)))
            return
        self._submit_many(request, plans, done, keep)

    def _submit_many(self, request: SubmitRequest, plans: list, done: Callable[[SubmitResult], None],
                     keep: Callable[[SubmitResult], dict | None] | None = None) -> None:
        outcomes: list[Accepted | Refused | None] = [None] * len(plans)
        stored: list[tuple[int, object, PlannedMessage]] = []

        multi_id = next((p.multi_id for p in plans if not isinstance(p, Refused)), None)

        def finish() -> None:
            accepted = tuple(o for o in outcomes if isinstance(o, Accepted))
            refused = tuple((d, o) for d, o in zip(request.destinations, outcomes) if isinstance(o, Refused))
            done(SubmitResult(accepted, refused, multi_id))

        def settle(index: int, fut, plan: PlannedMessage) -> None:
            outcome = self._committed(fut, request, request.destinations[index], plan)
            outcomes[index] = outcome.accepted[0] if outcome.accepted else outcome.refused[0][1]
            waiting[0] -= 1
            if not waiting[0]:
                finish()

        for index, plan in enumerate(plans):
            if isinstance(plan, Refused):
                self.stats["refused"] += 1
                outcomes[index] = plan
                continue
            fut = self._store(plan, request)
            if isinstance(fut, Refused):
                outcomes[index] = fut
                continue
            stored.append((index, fut, plan))
        if stored and keep is not None:
            # The result as it will be once committed, for the row that commits with it (no
            # wait since the add_message calls: the same batch, the same transaction).
            for index, _, plan in stored:
                outcomes[index] = _accepted(request.destinations[index], plan)
            row = keep(SubmitResult(tuple(o for o in outcomes if isinstance(o, Accepted)),
                                    tuple((d, o) for d, o in zip(request.destinations, outcomes)
                                          if isinstance(o, Refused))))
            if row is not None:
                self.store.add_answer(row)  # the store cannot start closing since add_message
        waiting = [len(stored)]
        for index, fut, plan in stored:
            fut.add_done_callback(lambda f, i=index, p=plan: settle(i, f, p))
        if not stored:
            finish()

    def _store(self, plan: PlannedMessage, request: SubmitRequest) -> asyncio.Future | Refused:
        try:
            return self.store.add_message(plan.row, plan.part_rows)
        except Exception as exc:  # noqa: BLE001 - a closing store must not kill the session
            self.stats["refused"] += 1
            return self._storage_failed("submit_failed", request, exc)

    def _committed(
        self, fut: asyncio.Future, request: SubmitRequest, destination, plan: PlannedMessage
    ) -> SubmitResult:
        if fut.cancelled():
            log.error("submit_not_stored", account=plan.account, error="cancelled")
            return SubmitResult((), ((destination, Refused(Refusal.SYSTEM_ERROR, "not stored: cancelled")),))
        if fut.exception() is not None:  # once per cause, not per message; busy → STORAGE_BUSY
            return SubmitResult((), ((destination, self._storage_failed("submit_not_stored", request, fut.exception())),))
        self.stats["accepted"] += 1
        self.dispatcher.enqueue(QueuedMessage.from_plan(plan))
        return SubmitResult((_accepted(destination, plan),))

    async def load(self) -> int:
        """At start: the queue stays in the database; the dispatcher learns to read it (its
        loader decodes rows here), hears of cancels, and begins loading what is due."""
        self.dispatcher.decode = self._queued_message
        self.store.on_cancelled = self.dispatcher.cancelled
        waiting = await self.dispatcher.resume()
        if waiting:
            log.info("queue_restored", messages=waiting)
        return waiting

    def _queued_message(self, rows: list[dict]) -> QueuedMessage:
        """One message's waiting parts (rows of ``Store.due_messages``) as a queue entry."""
        row = rows[0]
        message_id = row["message_id"]
        dest = self.cipher.decrypt(row["dest_enc"], b"dest:%d" % message_id).decode()
        connectors = self.routes.connectors_for(dest, row["account"], row["category"])
        return QueuedMessage(
            message_id, row["account"], row["dest_hash"], connectors,
            max(row["not_before"], row["next_attempt_at"]), row["expires_at"],
            [(r["part_no"], codec.decode(self.cipher.decrypt(r["pdu_enc"], b"part:%d:%d" % (message_id, r["part_no"]))))
             for r in rows],
            attempts=max(r["attempts"] for r in rows), dest=dest, marketing=row["category"] == "marketing",
        )

    # --- query_sm / cancel_sm ---------------------------------------------------------------

    async def _own_message(self, bind: PartnerBind, message_id: int) -> dict | None:
        msg = await self.store.message(message_id)
        if msg is None or msg["account"] != bind.account.system_id:
            return None
        return msg

    async def _query(self, bind: PartnerBind, pdu: P.QuerySm, message_id: int) -> None:
        try:
            msg = await self._own_message(bind, message_id)
        except Exception as exc:  # noqa: BLE001 - answer, whatever happened
            bind.respond(pdu.response(smpp_status(self._storage_failed("query_failed", bind, exc))))
            return
        if msg is None:
            bind.respond(pdu.response(CommandStatus.ESME_RQUERYFAIL))
            return
        final = msg["state"] in FINAL_STATES and msg["done_at"] is not None
        bind.respond(
            pdu.response(
                message_id=pdu.message_id,
                final_date=format_smpp_time(datetime.fromtimestamp(msg["done_at"], timezone.utc)) if final else "",
                message_state=msg["state"],
                error_code=min(msg["error"], 255),
            )
        )

    async def _cancel(self, bind: PartnerBind, pdu: P.CancelSm, message_id: int) -> None:
        account = bind.account.system_id
        try:
            msg = await self._own_message(bind, message_id)
        except Exception as exc:  # noqa: BLE001
            bind.respond(pdu.response(smpp_status(self._storage_failed("cancel_failed", bind, exc))))
            return
        if msg is None or msg["state"] in FINAL_STATES:
            bind.respond(pdu.response(CommandStatus.ESME_RCANCELFAIL))
            return
        # Out of the queue first, so it cannot leave while the cancel is stored; back in if
        # the store says no.
        queued = self.dispatcher.cancel(message_id)
        if queued is None:
            bind.respond(pdu.response(CommandStatus.ESME_RCANCELFAIL))
            return
        failed: CommandStatus | None = None
        try:
            cancelled = await self.store.cancel(message_id, account)
        except Exception as exc:  # noqa: BLE001
            failed = smpp_status(self._storage_failed("cancel_failed", bind, exc))
            cancelled = False
        if cancelled:
            log.info("cancelled", account=account, message_id=message_id)
            bind.respond(pdu.response())
            return
        self.dispatcher.restore(queued)
        bind.respond(pdu.response(failed if failed is not None else CommandStatus.ESME_RCANCELFAIL))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def storage_busy(exc: BaseException) -> bool:
    """A temporary storage failure, worth a retry (ESME_RTHROTTLED) rather than a system
    error: SQLAlchemy's pool timeout ("QueuePool limit of size … reached"), a database that is
    locked or busy, a connection lost or refused, a server with too many connections."""
    from sqlalchemy import exc as sa

    if isinstance(exc, (sa.TimeoutError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated or type(exc.orig).__name__ in _BUSY_DRIVER_ERRORS:
            return True
        if isinstance(exc, sa.OperationalError):
            text = str(exc.orig).lower()
            return any(word in text for word in ("locked", "busy", "too many connections", "could not connect"))
        return False
    return type(exc).__name__ in _BUSY_DRIVER_ERRORS


#: asyncpg's names for a server that cannot take one more connection now.
_BUSY_DRIVER_ERRORS = frozenset({"TooManyConnectionsError", "CannotConnectNowError"})


def parse_message_id(text: str) -> int | None:
    """One of our ids (ASCII decimal, 64-bit signed) or None: anything else cannot be ours
    and is answered ESME_RINVMSGID."""
    if not text or len(text) > 20 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value < 1 << 63 else None


__all__ = ["Pipeline", "MessageState", "parse_message_id", "storage_busy"]


def _accepted(destination, plan: PlannedMessage) -> Accepted:
    """A stored message as its submitter hears of it: our id, its parts, and when it may go
    if it is held."""
    held = plan.not_before if plan.not_before > plan.submitted_at else None
    return Accepted(destination, plan.id, len(plan.parts), held)
