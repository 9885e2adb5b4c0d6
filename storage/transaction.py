"""One group commit's transaction: a batch of writes, and what it does inside the database.

``Work`` holds everything a batch asks for, as plain picklable values; ``Transaction.apply``
runs it on a synchronous SQLAlchemy Connection inside one transaction and returns what each
call gets back, by the call's position in the batch. The store runs it on its writer thread,
through ``AsyncConnection.run_sync`` (PostgreSQL), or in a writer process of its own
(``writer.py``, SQLite files): the same code in the three places.

Receipt correlation happens inside the same transaction as its consequences (part and
message state, the partner's receipt in the outbox, the early-receipt table), so a crash
can never leave a receipt half applied: either the upstream's receipt was acknowledged and
everything it caused is stored, or it was not and the upstream sends it again. The hooks
(receipt builder, early-receipt decoder, per-part receipts) are called inside the
transaction for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Callable, Iterable

from sqlalchemy import Connection, and_, bindparam, literal_column, select, update

from protocol.constants import MessageState

from .bulk import BulkById, BulkInsert, BulkUpdate, Many, quote
from .idempotency import KEEP
from .schema import PART_SUBMITTED, api_idempotency, early_receipts, messages, outbox, parts, webhook_backlog

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


def _pickled_by_fields(cls):
    """Pickle as (class, field values): a slots dataclass's own pickling calls ``fields()``
    for every object both ways, four times slower; these cross to the writer process by the
    thousand."""
    values = attrgetter(*(f.name for f in fields(cls)))

    def __reduce__(self):
        return cls, values(self)

    cls.__reduce__ = __reduce__
    return cls


@_pickled_by_fields
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
    #: ``message_id = "auto"``: the keys an early receipt for this part may wait under
    #: (``protocol.idreadings.early_keys``), in order of preference; empty: ``upstream_id``.
    early_keys: tuple[str, ...] = ()


@_pickled_by_fields
@dataclass(slots=True)
class UpstreamReceipt:
    """A receipt from an upstream, already parsed and its id normalised (``upstream_id``:
    what it is kept under if it arrived early)."""

    connector: str
    upstream_id: str
    state: int  # MessageState
    error: int
    done_at: float
    #: ``message_id = "auto"``: the parts' keys it may name (``protocol.idreadings.
    #: receipt_keys``), in order of preference; empty: ``upstream_id`` alone. Its outcome is
    #: then (index of the key that matched, how many of its keys found a part), or False.
    keys: tuple[str, ...] = ()


@_pickled_by_fields
@dataclass(slots=True)
class Finished:
    """A message (or, with per-part receipts, a part) that reached a final state in this
    transaction; the receipt builder turns it into an outbox row."""

    message: dict
    part_no: int | None
    state: MessageState
    error: int
    done_at: float


@dataclass(slots=True)
class Backlog:
    """The rows the durable subscribers of one event write in the event's transaction, by
    backlog table: the SMPP outbox's (``outbox``) and the webhooks' (``webhook_backlog``)."""

    outbox: list[dict] = field(default_factory=list)
    webhooks: list[dict] = field(default_factory=list)


#: Turns a finished message into what its subscribers are owed: the partner's outbox row (the
#: SMPP outbox alone), a ``Backlog`` (every subscriber, ``smscenter.pipeline.events``), or None.
ReceiptBuilder = Callable[[Finished], "dict | Backlog | None"]



@dataclass(slots=True)
class Work:
    """What one batch asks for. Calls that get an answer carry their position in the batch
    (``outcomes`` is keyed by it); early receipts matched inside the transaction carry None."""

    new_messages: list[dict] = field(default_factory=list)
    new_parts: list[dict] = field(default_factory=list)
    #: Idempotency keys with the answer they get (``api_idempotency`` rows), committed with
    #: the new messages of the request they answer: a key is never kept without its
    #: messages, nor its messages without the key (``storage.idempotency``).
    new_answers: list[dict] = field(default_factory=list)
    results: list[tuple[SubmitResult, int]] = field(default_factory=list)
    receipts: list[tuple[UpstreamReceipt, int | None]] = field(default_factory=list)
    new_outbox: list[dict] = field(default_factory=list)
    new_webhooks: list[dict] = field(default_factory=list)
    acked_outbox: list[int] = field(default_factory=list)
    failed_outbox: list[tuple[int, float]] = field(default_factory=list)
    message_updates: list[dict] = field(default_factory=list)
    now: float = 0.0  # the store's clock when the batch was handed to the transaction
    #: Plain values for the transaction's ``reconfigure`` hook (a config reload), applied
    #: before the batch: they ride with a batch to reach a writer process.
    reconfigure: Any = None


_OTHER_WORK = tuple(f.name for f in fields(Work)
                    if f.name not in ("new_messages", "new_parts", "new_answers", "now", "reconfigure"))


def take_new_messages(work: Work) -> Work | None:
    """The batch's new messages (and their parts, and the idempotency keys answered by
    them) as a batch of their own, taken out of ``work``, when it also asks for anything
    else; else None.

    The store commits them first and answers their submitters before it applies the rest:
    a partner's submit_sm_resp waits for that commit, and the rest of a busy batch —
    receipts settled, the partners' receipts built and encrypted, parts updated — is about
    four times the messages' share of the work. Nothing in the rest waits for them: its
    calls concern messages already stored (a part reaches a connector after its commit).
    """
    if not work.new_messages or not any(getattr(work, name) for name in _OTHER_WORK):
        return None
    first = Work(work.new_messages, work.new_parts, work.new_answers, now=work.now)
    work.new_messages, work.new_parts, work.new_answers = [], [], []
    return first


_INS_MESSAGES = BulkInsert(messages)
_INS_PARTS = BulkInsert(parts)
_INS_OUTBOX = BulkInsert(outbox)
_INS_WEBHOOKS = BulkInsert(webhook_backlog)
#: A key's first answer stays (a conflict is one answered already), once an expired answer
#: of the same key is removed (housekeeping expires the others).
_INS_ANSWERS = BulkInsert(api_idempotency, skip_conflicts_on=("account", "key_hash"))
_DEL_EXPIRED_ANSWER = Many(
    api_idempotency.delete().where(
        and_(api_idempotency.c.account == bindparam("k_account"),
             api_idempotency.c.key_hash == bindparam("k_key_hash"),
             api_idempotency.c.created_at <= bindparam("k_before"))
    ),
    ("k_account", "k_key_hash", "k_before"),
)
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


def _capped(error: int) -> int:
    """An upstream's err: field can hold any number; one that overflows its column would fail
    the whole group commit (and come back with every resend), so it is capped at the widest
    value SMPP itself carries (a 32-bit command_status)."""
    return min(max(error, 0), 0xFFFFFFFF)


def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i : i + size]



class Transaction:
    """Applies a ``Work`` inside a transaction (see the module docstring).

    ``receipt_builder`` turns a ``Finished`` into the partner's outbox row (or None);
    ``per_part_receipts(account)`` says whether that account gets one receipt per part;
    ``early_decoder(row)`` reads an early receipt kept by a version before schema 0006 (the
    upstream's deliver_sm, encrypted) back into a receipt; later ones keep their state and
    error in columns and need no hook. ``reconfigure(values)`` takes a batch's
    ``Work.reconfigure`` (new per-account policies after a config reload) before it runs.
    """

    def __init__(
        self,
        receipt_builder: ReceiptBuilder,
        *,
        per_part_receipts: Callable[[str], bool] = lambda account: False,
        early_decoder: Callable[[dict], UpstreamReceipt] | None = None,
        reconfigure: Callable[[Any], None] | None = None,
    ) -> None:
        self.receipt_builder = receipt_builder
        self.per_part_receipts = per_part_receipts
        self.early_decoder = early_decoder
        self.reconfigure = reconfigure

    def apply(self, conn: Connection, batch: Work) -> dict[int, Any]:
        """Run the batch on ``conn`` (inside its transaction). New backlog rows made by the
        receipt builder are appended to ``batch.new_outbox`` and ``batch.new_webhooks``."""
        outcomes: dict[int, Any] = {}
        now = batch.now
        if batch.reconfigure is not None and self.reconfigure is not None:
            self.reconfigure(batch.reconfigure)
        if batch.new_messages:
            _INS_MESSAGES.run(conn, _INS_MESSAGES.rows(batch.new_messages))
        if batch.new_parts:
            _INS_PARTS.run(conn, _INS_PARTS.rows(batch.new_parts))
        if batch.new_answers:
            _DEL_EXPIRED_ANSWER.run(conn, [(r["account"], r["key_hash"], r["created_at"] - KEEP)
                                           for r in batch.new_answers])
            _INS_ANSWERS.run(conn, _INS_ANSWERS.rows(batch.new_answers))
        finished: list[Finished] = []
        if batch.results:
            self._apply_results(conn, batch.results, outcomes, finished, now)
        if batch.receipts:
            self._apply_receipts(conn, batch.receipts, outcomes, finished, now)
        for item in finished:
            made = self.receipt_builder(item)
            if type(made) is Backlog:
                batch.new_outbox.extend(made.outbox)
                batch.new_webhooks.extend(made.webhooks)
            elif made is not None:
                batch.new_outbox.append(made)
        if batch.message_updates:
            self._update_messages(conn, batch.message_updates)
        if batch.new_outbox:
            _INS_OUTBOX.run(conn, _INS_OUTBOX.rows(batch.new_outbox))
        if batch.new_webhooks:
            _INS_WEBHOOKS.run(conn, _INS_WEBHOOKS.rows(batch.new_webhooks))
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
        #: (connector, early key) -> the part's key, where they differ (message_id = "auto")
        part_key: dict[tuple[str, str], str] = {}
        for r, _ in results:
            if r.state in _FINAL_INTS:
                failed.setdefault(r.message_id, []).append((r.part_no, r.error))
            elif r.state == PART_SUBMITTED and r.upstream_id:
                early_keys.setdefault(r.connector, []).append(r.upstream_id)
                for key in r.early_keys:
                    if key != r.upstream_id:
                        part_key.setdefault((r.connector, key), r.upstream_id)
                        early_keys[r.connector].append(key)
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
                matched = []
                for e in early:
                    receipt = self._early_to_receipt(e)
                    key = part_key.get((receipt.connector, receipt.upstream_id))
                    if key is not None:  # kept under another reading of the part's id
                        receipt.keys = (key,)
                    matched.append((receipt, None))
                self._apply_receipts(conn, matched, outcomes, finished, now)
        for _, pos in results:
            outcomes[pos] = finished

    def _early_to_receipt(self, row: dict) -> UpstreamReceipt:
        if row["state"] is not None:
            return UpstreamReceipt(row["connector"], row["upstream_id"], row["state"], row["error"], row["received_at"])
        if self.early_decoder is None:  # a row from before schema 0006
            raise RuntimeError("Transaction.early_decoder is not set")
        return self.early_decoder(row)

    def _apply_receipts(self, conn: Connection, items, outcomes: dict, finished: list[Finished], now: float) -> None:
        wanted: dict[str, set[str]] = {}
        for r, _ in items:
            if r.keys:
                wanted.setdefault(r.connector, set()).update(r.keys)
            else:
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
        for receipt, pos in items:
            matched: Any = True
            if receipt.keys:  # the first of its keys that found a part
                hits = [i for i, key in enumerate(receipt.keys) if (receipt.connector, key) in by_key]
                rows = by_key[(receipt.connector, receipt.keys[hits[0]])] if hits else None
                matched = (hits[0], len(hits)) if hits else False
            else:
                rows = by_key.get((receipt.connector, receipt.upstream_id))
            if not rows:
                # Kept until its submit_sm_resp comes — final states only: an intermediate
                # notification would settle nothing, and keeping it (first one wins) would
                # shadow the final receipt that follows. What it said is kept, not the
                # upstream's PDU: nothing personal waits for the message.
                if receipt.state in _FINAL_INTS:
                    early_rows.append(
                        (receipt.connector, receipt.upstream_id, None, now, receipt.state, _capped(receipt.error))
                    )
                if pos is not None:
                    outcomes[pos] = False
                continue
            if pos is not None:
                outcomes[pos] = matched
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
            error = _capped(error)
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

