"""Data-subject requests: what is held about one number, and its erasure, in bounded batches.

A number is found by its keyed hash (``FieldCipher.lookup_hash``): ``messages.dest_hash``
(``ix_messages_dest``), ``mo_messages.source_hash`` (``ix_mo_source``, migration 0012),
``blacklist`` and ``invalid_numbers`` (both keyed by it). The partner's copy of an MO waiting
in the outbox carries no hash: the caller, who holds the keys, picks those rows by decrypting
them (``mo_outbox_page``, through ``ix_outbox_mo``; they are few: the outbox holds only what
is not yet delivered).

Each function runs on a synchronous ``Connection`` inside one transaction its caller opens,
like ``purge.py``: one erase call handles at most ``limit`` messages (with their parts and
receipts) or MO, so a transaction is short beside a running daemon, and a run stopped
anywhere leaves whole messages or none.

What an erase keeps, on purpose:

- the opt-outs (``blacklist``): keyed hashes only, and erasing them would expose the person
  to marketing again;
- the billing aggregates: the messages deleted are first counted into ``billing_days``
  (``purge.py``'s ``_add_billing``, in the same transaction), so billing totals do not move;
- a message not yet ended (queued, being sent, or out upstream awaiting its receipt), unless
  the caller asks to cancel it: then it ends DELETED, its partner's failure receipt is
  written to the outbox (the daemon's ``ReceiptBuilder``; the daemon's outbox sender finds
  the row on its next read of the table), and the message goes like the others. That
  receipt names the number (encrypted) until the partner takes it or its retention ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import Connection, and_, delete, select

from protocol.constants import MessageState

from .purge import CountryOf, _add_billing
from .schema import (
    OUTBOX_MO,
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    WEBHOOK_MO,
    blacklist,
    invalid_numbers,
    messages,
    mo_messages,
    outbox,
    parts,
    webhook_backlog,
)
from .transaction import FINAL_STATES, Finished

_FINAL = frozenset(int(s) for s in FINAL_STATES)
_UNFINISHED_PARTS = frozenset((PART_QUEUED, PART_SENDING, PART_SUBMITTED))

#: Builds the partner's receipt (an outbox row, or None: none wanted) for a message that
#: ended here: ``smscenter.pipeline.receipts.ReceiptBuilder``.
ReceiptFor = Callable[[Finished], "dict | None"]


def ended(message: dict, part_states: list[int]) -> bool:
    """A message that will change no more: final state, no part still waiting."""
    return message["state"] in _FINAL and not any(s in _UNFINISHED_PARTS for s in part_states)


# --- export ------------------------------------------------------------------------------


def _messages_of(dest_hash: bytes, account: str | None):
    cond = [messages.c.dest_hash == dest_hash]
    if account is not None:
        cond.append(messages.c.account == account)
    return and_(*cond)


def _mo_of(source_hash: bytes, account: str | None):
    cond = [mo_messages.c.source_hash == source_hash]
    if account is not None:
        cond.append(mo_messages.c.account == account)
    return and_(*cond)


def messages_page(conn: Connection, dest_hash: bytes, account: str | None, after_id: int, limit: int) -> list[dict]:
    """Up to ``limit`` messages to this number (of ``account``, when given) with an id above
    ``after_id``, in id order, each with ``parts`` and ``receipts`` (its outbox rows)."""
    rows = [
        dict(r)
        for r in conn.execute(
            select(messages)
            .where(_messages_of(dest_hash, account), messages.c.id > after_id)
            .order_by(messages.c.id)
            .limit(limit)
        ).mappings()
    ]
    if not rows:
        return rows
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        r["parts"], r["receipts"] = [], []
    ids = list(by_id)
    for p in conn.execute(select(parts).where(parts.c.message_id.in_(ids)).order_by(parts.c.message_id, parts.c.part_no)).mappings():
        by_id[p["message_id"]]["parts"].append(dict(p))
    for o in conn.execute(select(outbox).where(outbox.c.message_id.in_(ids)).order_by(outbox.c.id)).mappings():
        by_id[o["message_id"]]["receipts"].append(dict(o))
    return rows


def mo_page(conn: Connection, source_hash: bytes, account: str | None, after_id: int, limit: int) -> list[dict]:
    """Up to ``limit`` MO from this number (routed to ``account``, when given) above ``after_id``."""
    return [
        dict(r)
        for r in conn.execute(
            select(mo_messages)
            .where(_mo_of(source_hash, account), mo_messages.c.id > after_id)
            .order_by(mo_messages.c.id)
            .limit(limit)
        ).mappings()
    ]


def mo_outbox_page(conn: Connection, after_id: int, limit: int) -> list[dict]:
    """Partners' copies of MO waiting in the outbox above ``after_id`` (any number and any
    account: the caller decrypts and picks), through ``ix_outbox_mo``."""
    cond = [outbox.c.message_id.is_(None), outbox.c.kind == OUTBOX_MO, outbox.c.id > after_id]
    return [
        dict(r)
        for r in conn.execute(select(outbox).where(*cond).order_by(outbox.c.id).limit(limit)).mappings()
    ]


def mo_webhook_page(conn: Connection, after_id: int, limit: int) -> list[dict]:
    """MO waiting in the webhook backlog above ``after_id`` (any number and any account:
    the caller decrypts and picks, as for the outbox's MO copies; the backlog holds only what
    a receiver has not acknowledged yet)."""
    cond = [webhook_backlog.c.kind == WEBHOOK_MO, webhook_backlog.c.id > after_id]
    query = select(webhook_backlog).where(*cond).order_by(webhook_backlog.c.id).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def delete_webhooks(conn: Connection, ids: list[int]) -> int:
    """Webhook backlog rows, by id (an erased number's MO)."""
    return conn.execute(delete(webhook_backlog).where(webhook_backlog.c.id.in_(ids))).rowcount


def optouts_of(conn: Connection, dest_hash: bytes, account: str | None) -> list[dict]:
    """Blacklist entries for this number (with ``account``: its own scope and the platform
    scopes, which apply to every account)."""
    cond = [blacklist.c.dest_hash == dest_hash]
    if account is not None:
        cond.append((blacklist.c.scope == account) | blacklist.c.scope.like("sc:%"))
    return [dict(r) for r in conn.execute(select(blacklist).where(*cond).order_by(blacklist.c.scope)).mappings()]


def invalid_entry(conn: Connection, dest_hash: bytes) -> dict | None:
    row = conn.execute(select(invalid_numbers).where(invalid_numbers.c.dest_hash == dest_hash)).mappings().first()
    return dict(row) if row else None


# --- erase -------------------------------------------------------------------------------


@dataclass(slots=True)
class Erased:
    """What erase calls did, added up: rows deleted per table, messages left (not ended, not
    cancelled) and cancelled, receipts owed to partners, the last id seen (the next page)."""

    rows: Counter = field(default_factory=Counter)  # table -> rows
    by_account: Counter = field(default_factory=Counter)  # account -> messages deleted
    left: list[int] = field(default_factory=list)  # ids of messages not ended, kept
    cancelled: int = 0
    receipts_queued: int = 0
    selected: int = 0  # rows of the call's own kind: below ``limit`` means done
    last_id: int = 0

    def add(self, other: Erased) -> None:
        self.rows.update(other.rows)
        self.by_account.update(other.by_account)
        self.left.extend(other.left)
        self.cancelled += other.cancelled
        self.receipts_queued += other.receipts_queued


def erase_messages(
    conn: Connection,
    where,
    after_id: int,
    limit: int,
    now: float,
    *,
    unfinished: str = "keep",
    receipt_for: ReceiptFor | None = None,
    country_of: CountryOf | None = None,
) -> Erased:
    """Delete up to ``limit`` of the messages matching ``where`` above ``after_id`` (id
    order), with their parts and outbox rows, after counting them into ``billing_days``.

    A message not ended: with ``unfinished="keep"`` it stays, listed in ``left``; with
    ``"cancel"`` it ends DELETED first (``receipt_for`` writes its partner's failure receipt,
    kept in the outbox after the message is gone); with ``"drop"`` (an account gone: nobody
    to send it for, nobody to tell) it goes with the others, counted as it stood."""
    if unfinished not in ("keep", "cancel", "drop"):
        raise ValueError(f"unfinished={unfinished!r}: keep, cancel or drop")
    rows = [
        dict(r)
        for r in conn.execute(
            select(messages).where(where, messages.c.id > after_id).order_by(messages.c.id).limit(limit)
        ).mappings()
    ]
    out = Erased(selected=len(rows), last_id=rows[-1]["id"] if rows else after_id)
    if not rows:
        return out
    states: dict[int, list[int]] = {r["id"]: [] for r in rows}
    for mid, state in conn.execute(select(parts.c.message_id, parts.c.state).where(parts.c.message_id.in_(list(states)))):
        states[mid].append(state)
    going, receipts = [], []
    for r in rows:
        if not ended(r, states[r["id"]]):
            if unfinished == "keep":
                out.left.append(r["id"])
                continue
            if unfinished == "drop":
                going.append(r)
                continue
            r.update(state=int(MessageState.DELETED), done_at=now)
            out.cancelled += 1
            made = receipt_for(Finished(r, None, MessageState.DELETED, int(r["error"] or 0), now)) if receipt_for else None
            if made is not None:
                receipts.append({k: v for k, v in made.items() if k in outbox.c})
        going.append(r)
    if going:
        _add_billing(conn, going, country_of)
        ids = [r["id"] for r in going]
        accounts = Counter(r["account"] for r in going)
        for table, key in ((outbox, outbox.c.message_id), (webhook_backlog, webhook_backlog.c.message_id),
                           (parts, parts.c.message_id), (messages, messages.c.id)):
            n = conn.execute(delete(table).where(key.in_(ids))).rowcount
            if n:
                out.rows[table.name] += n
        out.by_account.update(accounts)
    if receipts:
        conn.execute(outbox.insert(), receipts)
        out.receipts_queued = len(receipts)
    return out


def erase_mo(conn: Connection, where, limit: int) -> Erased:
    """Delete up to ``limit`` MO rows matching ``where``."""
    ids = [r[0] for r in conn.execute(select(mo_messages.c.id).where(where).order_by(mo_messages.c.id).limit(limit))]
    out = Erased(selected=len(ids))
    if ids:
        out.rows["mo_messages"] += conn.execute(delete(mo_messages).where(mo_messages.c.id.in_(ids))).rowcount
    return out


def delete_outbox(conn: Connection, ids: list[int]) -> int:
    if not ids:
        return 0
    return conn.execute(delete(outbox).where(outbox.c.id.in_(ids))).rowcount


def erase_invalid(conn: Connection, dest_hash: bytes) -> int:
    return conn.execute(delete(invalid_numbers).where(invalid_numbers.c.dest_hash == dest_hash)).rowcount


def number_messages(dest_hash: bytes, account: str | None):
    """``erase_messages``' ``where`` for a number."""
    return _messages_of(dest_hash, account)


def number_mo(source_hash: bytes, account: str | None):
    """``erase_mo``'s ``where`` for a number."""
    return _mo_of(source_hash, account)


# --- an account gone from the config ------------------------------------------------------


def account_messages(account: str):
    return messages.c.account == account


def account_mo(account: str):
    return mo_messages.c.account == account


def erase_account_outbox(conn: Connection, account: str, limit: int) -> Erased:
    """Up to ``limit`` of the account's remaining outbox rows (MO copies, receipts of
    messages already gone)."""
    ids = [r[0] for r in conn.execute(select(outbox.c.id).where(outbox.c.account == account).limit(limit))]
    out = Erased(selected=len(ids))
    if ids:
        out.rows["outbox"] += delete_outbox(conn, ids)
    return out


def erase_account_webhooks(conn: Connection, account: str, limit: int) -> Erased:
    """Up to ``limit`` of the account's remaining webhook backlog rows."""
    ids = [r[0] for r in conn.execute(select(webhook_backlog.c.id).where(webhook_backlog.c.account == account)
                                      .limit(limit))]
    out = Erased(selected=len(ids))
    if ids:
        out.rows["webhook_backlog"] += delete_webhooks(conn, ids)
    return out


def erase_account_optouts(conn: Connection, account: str, limit: int) -> Erased:
    """Up to ``limit`` blacklist entries of the account's own scope (platform scopes are not
    the account's: they stay)."""
    keys = [r[0] for r in conn.execute(select(blacklist.c.dest_hash).where(blacklist.c.scope == account).limit(limit))]
    out = Erased(selected=len(keys))
    if keys:
        out.rows["blacklist"] += conn.execute(
            delete(blacklist).where(blacklist.c.scope == account, blacklist.c.dest_hash.in_(keys))
        ).rowcount
    return out


def account_held(conn: Connection, account: str, optouts: bool = True) -> bool:
    """Does anything but billing (and, with ``optouts`` false, its blacklist) still name the
    account?"""
    queries = [
        select(messages.c.id).where(messages.c.account == account),
        select(mo_messages.c.id).where(mo_messages.c.account == account),
        select(outbox.c.id).where(outbox.c.account == account),
        select(webhook_backlog.c.id).where(webhook_backlog.c.account == account),
    ]
    if optouts:
        queries.append(select(blacklist.c.dest_hash).where(blacklist.c.scope == account))
    for query in queries:
        if conn.execute(query.limit(1)).first() is not None:
            return True
    return False


__all__ = [
    "Erased", "ReceiptFor", "account_held", "account_messages", "account_mo", "delete_outbox", "delete_webhooks",
    "ended", "erase_account_optouts", "erase_account_outbox", "erase_account_webhooks", "erase_invalid",
    "erase_messages", "erase_mo", "invalid_entry", "messages_page", "mo_outbox_page", "mo_page", "mo_webhook_page",
    "number_messages", "number_mo", "optouts_of",
]
