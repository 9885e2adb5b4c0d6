"""The retention purge's statements: what is old enough to go, deleted in bounded batches.

Each function here runs on a synchronous SQLAlchemy ``Connection`` inside one transaction
that its caller opens (``smscenter/app/retention.py`` decides when, how often and on which
connection). One call deletes at most ``limit`` rows of its kind (messages count as one row
each, with their parts and receipts), so a transaction is short whatever the backlog: the
next batch is another call, and a purge stopped anywhere — SIGKILL included — leaves whole
messages or none, and resumes where it was on its next run.

A batch is also *time-boxed*: given a ``budget``, it works through its rows ``step`` at a
time and stops after the chunk during which ``budget`` seconds (on the ``clock`` given, from
the batch's start) ran out, committing what it did — ``Batch.cut`` says more may follow. A
bigger database, a colder cache or a busier machine make batches smaller, not longer: on
SQLite a batch holds the one write lock, and a submit's commit waits behind it.

What is never selected: a message that has not ended (state not final, or a part still
queued, being sent or awaiting its receipt); anything on the blacklist (the ``blacklist``
table is not touched here at all).

Billing: the messages of a batch are counted into ``billing_days`` (per account, UTC day of
submission, destination country, category, sender, final state — message and segment
counts) in the same transaction that deletes them, so a total is never lost nor counted
twice. ``billing_rows`` reads a month back, from ``billing_days`` for what was purged and
from ``messages`` for what was not yet: the same figures whenever it is asked.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, literal_column, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from .ids import EPOCH_MS
from .schema import (
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    billing_days,
    connection_log,
    early_receipts,
    invalid_numbers,
    jobs,
    messages,
    mo_messages,
    outbox,
    parts,
    webhook_backlog,
)
from .transaction import FINAL_STATES

_FINAL = sorted(int(s) for s in FINAL_STATES)
_UNFINISHED_PARTS = (PART_QUEUED, PART_SENDING, PART_SUBMITTED)
#: Ids are time-ordered (``ids.py``): an id made before ``t`` is below ``id_floor(t)``. A
#: day's slack covers a generator seeded ahead of its clock.
_ID_SLACK = 86400.0


def id_floor(t: float) -> int:
    """The smallest id made at ``t`` or later (ids before it are older)."""
    ms = max(0, int(t * 1000) - EPOCH_MS)
    return ms << 22


@dataclass(frozen=True, slots=True)
class Cutoff:
    """How long one category of data is kept: ``default`` seconds, ``by_account`` overrides."""

    default: float
    by_account: dict[str, float] = field(default_factory=dict)

    def older(self, now: float, account_col, time_col):
        """The SQL condition "older than its account's retention"; rows without an account
        (unroutable MO) and accounts without an override use ``default``."""
        special = {a: s for a, s in self.by_account.items() if s != self.default}
        others = time_col < now - self.default
        if not special:
            return others
        clauses = [and_(account_col == a, time_col < now - s) for a, s in sorted(special.items())]
        clauses.append(and_(or_(account_col.is_(None), account_col.notin_(sorted(special))), others))
        return or_(*clauses)


# --- messages ----------------------------------------------------------------------------


def _ended_messages(now: float, cutoff: Cutoff):
    """Messages that ended longer ago than their account keeps them, and none of whose parts
    is still waiting (a belt to the braces of the final state)."""
    p = parts.alias("unfinished")
    waiting = exists().where(and_(p.c.message_id == messages.c.id, p.c.state.in_(_UNFINISHED_PARTS)))
    return and_(
        messages.c.done_at.is_not(None),
        cutoff.older(now, messages.c.account, messages.c.done_at),
        messages.c.state.in_(_FINAL),
        ~waiting,
    )


@dataclass(slots=True)
class Batch:
    """What one batch removed (or, dry, would remove): rows per (table, account)."""

    rows: Counter = field(default_factory=Counter)  # (table, account) -> rows
    selected: int = 0  # rows of the batch's own kind: below ``limit`` (and not cut) means done
    cut: bool = False  # stopped by its time box: more may follow
    chunks: int = 0  # chunks of ``step`` rows it worked through

    def add(self, table: str, account: str | None, n: int) -> None:
        if n:
            self.rows[(table, account or "-")] += n


#: Rows per chunk of a time-boxed batch: the box is looked at between two chunks.
STEP = 20


@dataclass(frozen=True, slots=True)
class TimeBox:
    """How long a batch may work: ``budget`` seconds on ``clock`` (None: no limit), looked at
    every ``step`` rows. ``clock`` must pickle (a batch may run in the writer process)."""

    budget: float | None = None
    step: int = STEP
    clock: Callable[[], float] = time.perf_counter


NO_BOX = TimeBox()


def _chunks(rows: Sequence, box: TimeBox, started: float, batch: Batch) -> Iterator[Sequence]:
    """``rows`` ``box.step`` at a time, the first always; after that, none once the budget
    is spent (``batch.cut``). ``batch.selected`` counts the rows handed out."""
    for i in range(0, len(rows), box.step):
        if i and box.budget is not None and box.clock() - started >= box.budget:
            batch.cut = True
            return
        chunk = rows[i : i + box.step]
        batch.selected += len(chunk)
        batch.chunks += 1
        yield chunk


def utc_day(t: float) -> str:
    return _day_name(int(t // 86400))


@lru_cache(maxsize=1024)
def _day_name(day: int) -> str:
    """``YYYY-MM-DD`` of a day number since the epoch (UTC): a batch's messages share a few
    days, and formatting each one's date was a tenth of the batch's CPU."""
    return datetime.fromtimestamp(day * 86400, timezone.utc).strftime("%Y-%m-%d")


#: A message row's destination country when the row predates ``dest_country`` (decrypts the
#: number): given by the caller, who holds the keys. None: counted under "".
CountryOf = Callable[[dict], "str | None"]


def purge_messages(
    conn: Connection, now: float, cutoff: Cutoff, limit: int, country_of: CountryOf | None = None,
    box: TimeBox = NO_BOX,
) -> Batch:
    """Delete up to ``limit`` ended messages past retention, oldest end first, with their
    parts and outbox rows, after counting them into ``billing_days``; within ``box``."""
    started = box.clock()
    rows = conn.execute(
        select(
            messages.c.id, messages.c.account, messages.c.submitted_at, messages.c.dest_country,
            messages.c.dest_enc, messages.c.category, messages.c.source_addr, messages.c.state,
            messages.c.parts_total,
        )
        .where(_ended_messages(now, cutoff))
        .order_by(messages.c.done_at)
        .limit(limit)
    ).mappings().all()
    batch = Batch()
    for chunk in _chunks(rows, box, started, batch):
        _add_billing(conn, chunk, country_of)
        by_account: dict[str, list[int]] = defaultdict(list)
        for r in chunk:
            by_account[r["account"]].append(r["id"])
        for account, ids in by_account.items():  # usually one: counts per account from rowcount
            for table, key in _MESSAGE_ROWS:
                batch.add(table.name, account, _delete_ids(conn, table, key, ids))
    return batch


#: A message's rows, deleted by message id.
_MESSAGE_ROWS = ((outbox, outbox.c.message_id), (parts, parts.c.message_id), (messages, messages.c.id))
_DELETE_STATEMENTS: dict[object, object] = {}


def _delete_ids(conn: Connection, table, key, ids: list) -> int:
    """Delete ``table``'s rows whose ``key`` is one of ``ids``: how many went.

    Cheap in CPU, because a batch holds the write lock meanwhile with a submit's commit
    waiting behind it: built per chunk with SQLAlchemy (``key.in_(ids)``), the statements'
    construction, cache key, literal coercion and parameter processing were 90 % of a
    batch's CPU, the database's own work 10 %. So on SQLite the DBAPI connection, inside the
    transaction SQLAlchemy began (the writer's, the CLI's), runs one prepared ``DELETE … WHERE key = ?`` for every id
    (``executemany``, in C: its rowcount is the sum); elsewhere an expanding ``IN`` built
    once."""
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):  # not aiosqlite's: its calls are coroutines
        return raw.executemany(f"DELETE FROM {table.name} WHERE {key.name} = ?", [(i,) for i in ids]).rowcount
    stmt = _DELETE_STATEMENTS.get(key)
    if stmt is None:
        stmt = _DELETE_STATEMENTS[key] = delete(table).where(key.in_(bindparam("k", expanding=True)))
    return conn.execute(stmt, {"k": ids}).rowcount


def count_messages(conn: Connection, now: float, cutoff: Cutoff) -> Batch:
    """What ``purge_messages`` would remove, all batches together (for ``--dry-run``)."""
    batch = Batch()
    ended = _ended_messages(now, cutoff)
    for account, n in conn.execute(
        select(messages.c.account, func.count()).where(ended).group_by(messages.c.account)
    ):
        batch.add("messages", account, n)
    for table, key in ((parts, parts.c.message_id), (outbox, outbox.c.message_id)):
        query = (
            select(messages.c.account, func.count())
            .select_from(table.join(messages, messages.c.id == key))
            .where(ended)
            .group_by(messages.c.account)
        )
        for account, n in conn.execute(query):
            batch.add(table.name, account, n)
    return batch


def _add_billing(conn: Connection, rows, country_of: CountryOf | None) -> None:
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        country = r["dest_country"]
        if country is None and country_of is not None:
            country = country_of(dict(r))
        key = (r["account"], utc_day(r["submitted_at"]), country or "", r["category"], r["source_addr"], r["state"])
        t = totals[key]
        t[0] += 1
        t[1] += r["parts_total"]
    conn.execute(_billing_upsert(conn.dialect.name),
                 [{**dict(zip(_BILLING_KEY, k)), "messages": v[0], "segments": v[1]} for k, v in sorted(totals.items())])


_BILLING_KEY = ("account", "day", "country", "category", "sender", "state")
_BILLING_UPSERTS: dict[str, object] = {}


def _billing_upsert(dialect: str):
    """The upsert adding a chunk's counts to ``billing_days``, built once per dialect (as
    ``_delete_ids``'s statements, for the CPU a batch spends holding the write lock)."""
    stmt = _BILLING_UPSERTS.get(dialect)
    if stmt is None:
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(billing_days)
        stmt = _BILLING_UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=list(_BILLING_KEY),
            set_={
                "messages": billing_days.c.messages + insert.excluded.messages,
                "segments": billing_days.c.segments + insert.excluded.segments,
            },
        )
    return stmt


# --- other tables, by age -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgedTable:
    """A table whose rows go once older than a retention: ``time_col`` against the account's
    cutoff (``account_col``, or the default for all), deleted by key (``keys``). ``id_col``:
    a time-ordered id column that bounds the scan to a primary-key range."""

    table: object
    time_col: object
    keys: tuple
    account_col: object = None
    id_col: object = None

    @property
    def name(self) -> str:
        return self.table.name

    def _where(self, now: float, cutoff: Cutoff):
        if self.account_col is not None:
            cond = cutoff.older(now, self.account_col, self.time_col)
        else:
            cond = self.time_col < now - cutoff.default
        conds = [cond]
        if self.id_col is not None:
            # Older than the shortest retention at least: a primary-key range to scan.
            shortest = min([cutoff.default, *cutoff.by_account.values()])
            conds.append(self.id_col < id_floor(now - shortest + _ID_SLACK))
        return and_(*conds)

    def _account(self):
        return self.account_col if self.account_col is not None else literal_column("NULL")

    def purge(self, conn: Connection, now: float, cutoff: Cutoff, limit: int, box: TimeBox = NO_BOX) -> Batch:
        started = box.clock()
        found = conn.execute(
            select(self._account(), *self.keys).where(self._where(now, cutoff)).limit(limit)
        ).all()
        batch = Batch()
        for chunk in _chunks(found, box, started, batch):
            if len(self.keys) == 1:
                _delete_ids(conn, self.table, self.keys[0], [r[1] for r in chunk])
            else:
                for r in chunk:  # composite keys (few rows: early receipts, billing days)
                    conn.execute(delete(self.table).where(and_(*(k == v for k, v in zip(self.keys, r[1:])))))
            for account, n in Counter(r[0] for r in chunk).items():
                batch.add(self.name, account, n)
        return batch

    def count(self, conn: Connection, now: float, cutoff: Cutoff) -> Batch:
        batch = Batch()
        where = self._where(now, cutoff)
        if self.account_col is None:
            batch.add(self.name, None, conn.execute(select(func.count()).select_from(self.table).where(where)).scalar())
            return batch
        account = self.account_col
        for acc, n in conn.execute(select(account, func.count()).where(where).group_by(account)):
            batch.add(self.name, acc, n)
        return batch


#: MO (replies, survey answers): ``contact_data`` after reception.
MO = AgedTable(mo_messages, mo_messages.c.received_at, (mo_messages.c.id,), mo_messages.c.account, mo_messages.c.id)
#: Outbox rows left without their message (MO deliveries, receipts of messages gone).
OUTBOX = AgedTable(outbox, outbox.c.created_at, (outbox.c.id,), outbox.c.account, outbox.c.id)
#: Webhook events never acknowledged (their sender drops them at ``expires_at`` too; this
#: covers an account whose URL was removed, or a daemon that was down).
WEBHOOKS = AgedTable(
    webhook_backlog, webhook_backlog.c.created_at, (webhook_backlog.c.id,), webhook_backlog.c.account,
    webhook_backlog.c.id,
)
#: Upstream receipts that never found their message.
EARLY_RECEIPTS = AgedTable(
    early_receipts, early_receipts.c.received_at, (early_receipts.c.connector, early_receipts.c.upstream_id)
)
#: Invalid numbers: the entry's own end (``lookups`` after the upstream's last report).
INVALID_NUMBERS = AgedTable(invalid_numbers, invalid_numbers.c.expires_at, (invalid_numbers.c.dest_hash,))
#: Bind attempts (``connections``): by the time of the attempt; rows without an account (an
#: unknown system_id) use the default.
CONNECTIONS = AgedTable(
    connection_log, connection_log.c.at, (connection_log.c.id,), connection_log.c.account, connection_log.c.id
)


def purge_billing(conn: Connection, now: float, keep: float, limit: int, box: TimeBox = NO_BOX) -> Batch:
    """Billing days older than ``keep`` (10 years by default)."""
    started = box.clock()
    first_kept = utc_day(now - keep)
    cols = (billing_days.c.account, billing_days.c.day, billing_days.c.country, billing_days.c.category,
            billing_days.c.sender, billing_days.c.state)
    found = conn.execute(select(*cols).where(billing_days.c.day < first_kept).limit(limit)).all()
    batch = Batch()
    for chunk in _chunks(found, box, started, batch):
        for r in chunk:
            conn.execute(delete(billing_days).where(and_(*(c == v for c, v in zip(cols, r)))))
            batch.add("billing_days", r[0], 1)
    return batch


def count_billing(conn: Connection, now: float, keep: float) -> Batch:
    batch = Batch()
    query = (
        select(billing_days.c.account, func.count())
        .where(billing_days.c.day < utc_day(now - keep))
        .group_by(billing_days.c.account)
    )
    for account, n in conn.execute(query):
        batch.add("billing_days", account, n)
    return batch


# --- billing report -----------------------------------------------------------------------

BILLING_KEYS = ("day", "country", "category", "sender", "state")


def _day_sql(conn: Connection):
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d", messages.c.submitted_at, "unixepoch")
    return func.to_char(func.timezone("UTC", func.to_timestamp(messages.c.submitted_at)), "YYYY-MM-DD")


def billing_rows(conn: Connection, account: str, start: float, end: float) -> list[dict]:
    """Per (day, country, category, sender, state) of ``account``'s messages submitted in
    [start, end) (UTC day bounds): message and segment counts, purged or not."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    first, last = utc_day(start), utc_day(end)
    aggregated = select(
        billing_days.c.day, billing_days.c.country, billing_days.c.category, billing_days.c.sender,
        billing_days.c.state, billing_days.c.messages, billing_days.c.segments,
    ).where(billing_days.c.account == account, billing_days.c.day >= first, billing_days.c.day < last)
    inner = (
        select(_day_sql(conn).label("day"), func.coalesce(messages.c.dest_country, "").label("country"),
               messages.c.category, messages.c.source_addr.label("sender"), messages.c.state, messages.c.parts_total)
        .where(messages.c.account == account, messages.c.submitted_at >= start, messages.c.submitted_at < end)
        .subquery()
    )
    keys = [inner.c[k] for k in BILLING_KEYS]
    live = select(*keys, func.count(), func.sum(inner.c.parts_total)).group_by(*keys)
    for query in (aggregated, live):
        for r in conn.execute(query):
            t = totals[tuple(r[:5])]
            t[0] += int(r[5])
            t[1] += int(r[6])
    return [
        {**dict(zip(BILLING_KEYS, k)), "messages": v[0], "segments": v[1]}
        for k, v in sorted(totals.items())
    ]


def billing_accounts(conn: Connection) -> set[str]:
    """Accounts with billing rows or messages (an account gone from the config still bills)."""
    found = {r[0] for r in conn.execute(select(billing_days.c.account).distinct())}
    found |= {r[0] for r in conn.execute(select(messages.c.account).distinct())}
    return found


# --- jobs ---------------------------------------------------------------------------------


def last_run(conn: Connection, name: str) -> float | None:
    return conn.execute(select(jobs.c.last_run_at).where(jobs.c.name == name)).scalar()


def record_run(conn: Connection, name: str, at: float, detail: str = "") -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(jobs).values(name=name, last_run_at=at, detail=detail[:512])
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"last_run_at": at, "detail": detail[:512]}))


__all__ = [
    "AgedTable", "Batch", "billing_rows", "CONNECTIONS", "count_billing", "count_messages",
    "Cutoff", "EARLY_RECEIPTS", "INVALID_NUMBERS", "last_run", "MO", "NO_BOX", "OUTBOX",
    "purge_billing", "purge_messages", "record_run", "STEP", "TimeBox", "utc_day", "WEBHOOKS",
]
