"""Retention: personal data deleted once its time is up, by itself, and provably.

Categories (``[retention]``, each overridable per account in ``[account.retention]``):

- ``message_details`` (6 months after the message *ended*): messages, their parts, their
  receipts and other outbox rows, early receipts, webhook events never acknowledged;
- ``contact_data`` (26 months after reception): MO, i.e. replies and survey answers;
- ``lookups`` (14 months after an upstream's last report): invalid numbers (shared by all
  accounts, so the platform's value applies);
- ``billing`` (10 years after the day): the billing aggregates, which hold no number;
- ``connections`` (12 months after the attempt): the connection log (``connlog.py``), bind
  attempts with the peer's IP.

Opt-outs (the blacklist) are never purged: erasing one would expose the person to marketing
again; it holds only a keyed hash. A message still queued or awaiting its receipt is never
purged either (``storage/purge.py`` selects only ended messages). A new kind of data is one
more ``Category`` in ``CATEGORIES`` and one more key in ``[retention]`` (as the connection
log was).

How it runs: ``Purger.run`` takes each category's tables in bounded batches
(``purge_batch`` rows at most, one transaction each, ``purge_pause`` between two; the
batch shrinks while one holds the write lock longer than ``BATCH_TARGET``). On a SQLite file
a batch runs on a thread of its own with a synchronous connection that begins with
``BEGIN IMMEDIATE``: the purge *takes turns* with the store's writer through SQLite's write
lock, one short batch at a time, rather than joining the group commit — a purge batch
inside a commit would delay every submit_sm_resp waiting on that commit by the whole batch,
and the same code serves the CLI, where there is no writer. The batch's statements run on
that thread without an event-loop turn between them, so the lock is held only as long as
the statements take. On PostgreSQL, row locks do not conflict with inserts: the batch runs
through the async engine.

On SQLite the purge's connection deletes with ``secure_delete`` (deleted content is
overwritten with zeros) and, after a run that removed something, checkpoints the WAL
(``TRUNCATE`` from the CLI; ``PASSIVE`` in the daemon, which never waits on its own traffic):
the removed ciphertexts are gone from the file and the ``-wal``, not only from the tables.

The SQLite file stops growing at steady state by reuse of free pages: deleted rows' pages
go to SQLite's free list, and new rows are written there before the file is extended
(``auto_vacuum`` stays off: no page moves, no extra I/O; the file keeps the size of its
peak, it does not shrink).

``RetentionJob`` is the daemon's: daily at ``purge_at`` (UTC), and at start when the last
run recorded in the database (``jobs`` table) is older than the latest ``purge_at``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import structlog
from sqlalchemy import event

from storage import db, purge
from storage.purge import Batch, Cutoff

from smscenter.config import Settings
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.retention")

JOB_NAME = "retention"
#: How long one batch should hold the write lock at most (seconds), its commit included: a
#: submit committing meanwhile waits that long. The batch shrinks (to ``MIN_BATCH`` at least)
#: to stay under. Measured here (100,000 messages stored): 100 messages take ~7 ms of
#: statements and ~7 ms of commit (fsync), 500 take 25 + 20 ms; the commit is the floor.
BATCH_TARGET = 0.015
MIN_BATCH = 10


@dataclass(frozen=True, slots=True)
class Category:
    """One kind of data with one retention key; ``tables`` purge it, in order."""

    name: str  # the [retention] key
    tables: tuple[str, ...]


#: In order: a message's outbox rows go with it before the leftovers by age.
CATEGORIES = (
    Category("message_details", ("messages", "outbox", "early_receipts", "webhook_backlog")),
    Category("contact_data", ("mo_messages",)),
    Category("lookups", ("invalid_numbers",)),
    Category("billing", ("billing_days",)),
    Category("connections", ("connection_log",)),
)


def cutoffs(settings: Settings) -> dict[str, Cutoff]:
    """Each category's retention, with the accounts' overrides."""
    out = {}
    for category in CATEGORIES:
        default = getattr(settings.retention, category.name)
        by_account = {}
        for account in settings.accounts:
            value = getattr(settings.retention_for(account), category.name, default)
            if value != default:
                by_account[account.system_id] = value
        out[category.name] = Cutoff(default, by_account)
    return out


@dataclass(slots=True)
class Report:
    """What a run removed (or would): rows per (category, table, account)."""

    rows: Counter = field(default_factory=Counter)
    dry_run: bool = False
    started_at: float = 0.0
    seconds: float = 0.0

    def add(self, category: str, batch: Batch) -> None:
        for (table, account), n in batch.rows.items():
            self.rows[(category, table, account)] += n

    def by_category(self) -> dict[str, int]:
        out: Counter = Counter()
        for (category, _table, _account), n in self.rows.items():
            out[category] += n
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class Purger:
    """Runs the purge on ``engine`` with the settings' retention; ``country_of`` derives a
    destination country for rows stored before it was recorded (decrypting: the caller
    holds the keys), None to count them under ""."""

    def __init__(
        self,
        engine,
        settings: Settings,
        *,
        timers: Timers | None = None,
        country_of: Callable[[dict], str | None] | None = None,
        checkpoint: str = "TRUNCATE",
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.timers: Timers = timers if timers is not None else RealTimers(time.time)
        self.country_of = country_of
        self.batch = settings.retention.purge_batch
        #: The batch size in use: ``purge_batch`` at most, smaller while batches take longer
        #: than ``BATCH_TARGET`` (a bigger database, a colder cache, a busier machine).
        self.limit = self.batch
        #: After a run: TRUNCATE empties the WAL (the CLI); the daemon's PASSIVE never waits
        #: on its own traffic, and copies what it can now.
        self.checkpoint_mode = checkpoint
        self.pause = settings.retention.purge_pause
        self._url = db.writer_url(engine)
        self._sync = None
        self._executor: ThreadPoolExecutor | None = None
        #: Rows purged since start, by category (the metrics' counters).
        self.purged: Counter = Counter()
        self.last_run_at: float | None = None
        self.held = 0.0  # seconds the last batch held its transaction

    async def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._sync.dispose)
            executor.shutdown(wait=True)

    async def _transaction(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(conn)`` in one transaction: on the SQLite file's own thread and connection
        (``BEGIN IMMEDIATE``), else through the async engine."""
        if self._url is not None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")
                self._sync = db.sync_writer_engine(self._url)
                event.listen(self._sync, "connect", _secure_delete)

            def run():
                with self._sync.connect() as conn:
                    with conn.begin():  # BEGIN IMMEDIATE: the write lock is ours from here
                        started = time.perf_counter()
                        result = fn(conn)
                    self.held = time.perf_counter() - started  # the commit included
                    return result

            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        async with self.engine.begin() as conn:
            started = time.perf_counter()
            result = await conn.run_sync(fn)
            self.held = time.perf_counter() - started
            return result

    def _adapt(self) -> None:
        """Shrink the batch while one holds the write lock longer than ``BATCH_TARGET``, grow
        it back towards ``purge_batch`` while it is well under."""
        if self.held > BATCH_TARGET:
            self.limit = max(MIN_BATCH, int(self.limit * 0.7))
        elif self.held < BATCH_TARGET / 2:
            self.limit = min(self.batch, max(self.limit + 1, int(self.limit * 1.2)))

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the file and empty it (``TRUNCATE``), so the pages the
        purge zeroed (``secure_delete``) replace the old ones on disk. Best effort: with
        readers in the way SQLite does what it can now, and the next checkpoint the rest."""
        if self._url is None or self._executor is None:
            return

        def run():
            raw = self._sync.raw_connection()
            try:
                raw.cursor().execute(f"PRAGMA wal_checkpoint({self.checkpoint_mode})").fetchall()
            finally:
                raw.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def last_run(self) -> float | None:
        return await self._transaction(lambda conn: purge.last_run(conn, JOB_NAME))

    async def run(self, dry_run: bool = False) -> Report:
        """One purge of every category (or, dry, the counts it would remove)."""
        now = self.timers.now()
        report = Report(dry_run=dry_run, started_at=now)
        started = time.monotonic()
        limits = cutoffs(self.settings)
        for category in CATEGORIES:
            cutoff = limits[category.name]
            for table in category.tables:
                if dry_run:
                    report.add(category.name, await self._transaction(lambda c, t=table: _count(c, t, now, cutoff)))
                    continue
                while True:
                    limit = self.limit
                    batch = await self._transaction(
                        lambda c, t=table: _purge(c, t, now, cutoff, limit, self.country_of)
                    )
                    self._adapt()
                    report.add(category.name, batch)
                    self.purged[category.name] += sum(batch.rows.values())
                    if batch.selected < limit:
                        break
                    if self.pause > 0:
                        await self.timers.sleep(self.pause)
                    else:
                        await asyncio.sleep(0)
        report.seconds = time.monotonic() - started
        if not dry_run:
            detail = " ".join(f"{k}={v}" for k, v in sorted(report.by_category().items()))
            await self._transaction(lambda c: purge.record_run(c, JOB_NAME, now, detail))
            self.last_run_at = now
            if report.total:
                await self.checkpoint()
            for (category, table, account), n in sorted(report.rows.items()):
                log.info("retention_purged", category=category, table=table, account=account, rows=n)
            log.info("retention_run", rows=report.total, seconds=round(report.seconds, 3),
                     **{k: v for k, v in report.by_category().items()})
        return report


def _secure_delete(dbapi_connection, _record) -> None:
    """Deleted rows are overwritten with zeros, not left in free pages until reused: purged
    means gone from the file, not only from the tables. A 64 MB page cache: a batch's
    deletes touch pages all over the indexes (numbers' hashes are random)."""
    dbapi_connection.execute("PRAGMA secure_delete = ON")
    dbapi_connection.execute("PRAGMA cache_size = -65536")


_AGED = {"outbox": purge.OUTBOX, "early_receipts": purge.EARLY_RECEIPTS, "mo_messages": purge.MO,
         "webhook_backlog": purge.WEBHOOKS,
         "invalid_numbers": purge.INVALID_NUMBERS, "connection_log": purge.CONNECTIONS}


def _purge(conn, table: str, now: float, cutoff: Cutoff, limit: int, country_of) -> Batch:
    if table == "messages":
        return purge.purge_messages(conn, now, cutoff, limit, country_of)
    if table == "billing_days":
        return purge.purge_billing(conn, now, cutoff.default, limit)
    if table == "invalid_numbers":
        return purge.INVALID_NUMBERS.purge(conn, now, Cutoff(0.0), limit)  # their own expiry
    return _AGED[table].purge(conn, now, cutoff, limit)


def _count(conn, table: str, now: float, cutoff: Cutoff) -> Batch:
    if table == "messages":
        return purge.count_messages(conn, now, cutoff)
    if table == "billing_days":
        return purge.count_billing(conn, now, cutoff.default)
    if table == "invalid_numbers":
        return purge.INVALID_NUMBERS.count(conn, now, Cutoff(0.0))
    return _AGED[table].count(conn, now, cutoff)


def cipher_country(cipher) -> Callable[[dict], str | None]:
    """A ``country_of`` that decrypts the row's number (rows stored before 0009)."""
    from routing.numbers import country_of

    def of(row: dict) -> str | None:
        try:
            return country_of(cipher.decrypt(row["dest_enc"], b"dest:%d" % row["id"]).decode())
        except Exception:  # noqa: BLE001 - a key gone: counted under ""
            return None

    return of


# --- the daemon's job ---------------------------------------------------------------------


def latest_slot(now: float, purge_at: str) -> float:
    """The latest ``purge_at`` (UTC, "HH:MM") at or before ``now``."""
    hour, minute = (int(x) for x in purge_at.split(":"))
    day = datetime.fromtimestamp(now, timezone.utc)
    slot = day.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot.timestamp() > now:
        slot -= timedelta(days=1)
    return slot.timestamp()


def next_slot(now: float, purge_at: str) -> float:
    """The first ``purge_at`` after ``now``."""
    return latest_slot(now, purge_at) + 86400.0


class RetentionJob:
    """The purge in the daemon: at start when overdue, then daily at ``purge_at``."""

    def __init__(self, purger: Purger, purge_at: str, timers: Timers) -> None:
        self.purger = purger
        self.purge_at = purge_at
        self.timers = timers
        self.runs = 0
        self._task: asyncio.Task | None = None
        #: Set after each run (tests wait on it).
        self.ran = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.purger.close()

    async def _loop(self) -> None:
        try:
            last = await self.purger.last_run()
            self.purger.last_run_at = last
        except Exception as exc:  # noqa: BLE001 - then it runs now
            log.warning("retention_failed", error=f"{type(exc).__name__}: {exc}")
            last = None
        if last is None or last < latest_slot(self.timers.now(), self.purge_at):
            await self._run_once()
        while True:
            now = self.timers.now()
            await self.timers.sleep(next_slot(now, self.purge_at) - now)
            await self._run_once()

    async def _run_once(self) -> None:
        try:
            await self.purger.run()
        except Exception as exc:  # noqa: BLE001 - tried again at the next purge_at
            log.warning("retention_failed", error=f"{type(exc).__name__}: {exc}")
        self.runs += 1
        self.ran.set()
