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

How it runs: ``Purger.run`` takes each category's tables in bounded batches, one
transaction each: ``purge_batch`` rows at most, and time-boxed — a batch stops after the
chunk of ``storage.purge.STEP`` rows during which ``BATCH_BUDGET`` of work ran out, and
commits what it did — with ``purge_pause`` between two. In the daemon on a SQLite file a
batch is a job on the store's own writer (``Store.background``; in the writer process): it
goes between two commits of the traffic, and the submits gathered while it ran are the
writer's next commit. A batch commits without an fsync of its own (``writer.Job``'s
``durable=False``): the next commit of the traffic makes it durable, and a power cut can only
undo a whole batch, done again at the next run. There is one writer: no second connection
contending for SQLite's write lock, whose busy handler sleeps up to 100 ms between two tries,
and none of the purge's Python beside the daemon's event loop. Elsewhere — the CLI (no
writer there) — a batch runs on a thread of its own with a synchronous connection that
begins with ``BEGIN IMMEDIATE``, taking turns with any other writer through the lock. On
PostgreSQL row locks do not conflict with inserts: the batch runs through the async engine.

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
from functools import partial
from typing import Any, Callable, ClassVar

import structlog
from sqlalchemy import event

from storage import db, purge
from storage.purge import NO_BOX, Batch, Cutoff, TimeBox
from storage.writer import Job, run_job

from smscenter.config import Settings
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.retention")

JOB_NAME = "retention"
#: How long one batch may work (seconds of statements, its commit aside): a submit whose
#: commit comes behind it waits that long, plus the commit (an fsync, the floor). At 100
#: messages with parts and receipts a batch is ~7 ms of statements on a quiet machine; the
#: box keeps it short on a busy one, or in a bigger database with a colder cache.
BATCH_BUDGET = 0.008


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
    held: list[float] = field(default_factory=list)  # seconds each batch held its transaction

    def batch_times(self) -> dict[str, float]:
        """The batches' count and hold times (ms: p50, p99, longest), for the run's log event."""
        if not self.held:
            return {"batches": 0}
        xs = sorted(self.held)
        return {"batches": len(xs), "batch_p50_ms": round(xs[len(xs) // 2] * 1000, 1),
                "batch_p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 1),
                "batch_longest_ms": round(xs[-1] * 1000, 1)}

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
    holds the keys), None to count them under "". ``store``: the daemon's, whose writer
    runs the batches on a SQLite file (then ``country_of`` must pickle: ``KeysCountry``).
    ``box``: each batch's time box (``BATCH_BUDGET`` on the performance counter)."""

    def __init__(
        self,
        engine,
        settings: Settings,
        *,
        timers: Timers | None = None,
        country_of: Callable[[dict], str | None] | None = None,
        checkpoint: str = "TRUNCATE",
        store=None,
        box: TimeBox | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.timers: Timers = timers if timers is not None else RealTimers(time.time)
        self.country_of = country_of
        self.batch = settings.retention.purge_batch
        self.box = box if box is not None else TimeBox(BATCH_BUDGET)
        #: After a run: TRUNCATE empties the WAL (the CLI); the daemon's PASSIVE never waits
        #: on its own traffic, and copies what it can now.
        self.checkpoint_mode = checkpoint
        self.pause = settings.retention.purge_pause
        self._url = db.writer_url(engine)
        #: The store's writer runs the batches (SQLite file only: elsewhere the engine does).
        self._store = store if store is not None and self._url is not None else None
        self._sync = None
        self._executor: ThreadPoolExecutor | None = None
        #: Rows purged since start, by category (the metrics' counters).
        self.purged: Counter = Counter()
        self.last_run_at: float | None = None
        self.held = 0.0  # seconds the last batch held its transaction, commit included
        #: Batches since start, and the longest one's hold (the metrics': what a submit
        #: committing behind a batch may have waited).
        self.batches = 0
        self.longest = 0.0

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded config: the next run purges with its periods, batch and pause."""
        self.settings = settings
        self.batch = settings.retention.purge_batch
        self.pause = settings.retention.purge_pause

    async def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._sync.dispose)
            executor.shutdown(wait=True)

    async def _transaction(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(conn)`` in one transaction: on the store's writer (low priority), on the
        SQLite file's own thread and connection (``BEGIN IMMEDIATE``), or through the async
        engine. ``self.held``: how long it held the transaction."""
        if self._store is not None:
            result, self.held = await self._store.background(partial(_for_purge, fn), durable=False)
            return result
        if self._url is not None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")
                self._sync = db.sync_writer_engine(self._url)
                event.listen(self._sync, "connect", _secure_delete)

            def run():
                with self._sync.connect() as conn:
                    return run_job(conn, Job(fn, durable=False))

            result, self.held = await asyncio.get_running_loop().run_in_executor(self._executor, run)
            return result
        async with self.engine.begin() as conn:
            started = time.perf_counter()
            result = await conn.run_sync(fn)
            self.held = time.perf_counter() - started
            return result

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the file and empty it (``TRUNCATE``), so the pages the
        purge zeroed (``secure_delete``) replace the old ones on disk. Best effort: with
        readers in the way SQLite does what it can now, and the next checkpoint the rest."""
        if self._url is None:
            return
        if self._store is not None:
            await self._store.background(partial(_wal_checkpoint, mode=self.checkpoint_mode), transaction=False)
            return
        if self._executor is None:
            return

        def run():
            raw = self._sync.raw_connection()
            try:
                raw.cursor().execute(f"PRAGMA wal_checkpoint({self.checkpoint_mode})").fetchall()
            finally:
                raw.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def last_run(self) -> float | None:
        return await self._transaction(partial(purge.last_run, name=JOB_NAME))

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
                    report.add(category.name, await self._transaction(partial(_count, table=table, now=now,
                                                                              cutoff=cutoff)))
                    continue
                limit = self.batch
                job = partial(_purge, table=table, now=now, cutoff=cutoff, limit=limit,
                              country_of=self.country_of, box=self.box)
                while True:
                    batch = await self._transaction(job)
                    self.batches += 1
                    self.longest = max(self.longest, self.held)
                    report.held.append(self.held)
                    report.add(category.name, batch)
                    self.purged[category.name] += sum(batch.rows.values())
                    if batch.selected < limit and not batch.cut:
                        break
                    if self.pause > 0:
                        await self.timers.sleep(self.pause)
                    else:
                        await asyncio.sleep(0)
        report.seconds = time.monotonic() - started
        if not dry_run:
            detail = " ".join(f"{k}={v}" for k, v in sorted(report.by_category().items()))
            await self._transaction(partial(purge.record_run, name=JOB_NAME, at=now, detail=detail))
            self.last_run_at = now
            if report.total:
                await self.checkpoint()
            for (category, table, account), n in sorted(report.rows.items()):
                log.info("retention_purged", category=category, table=table, account=account, rows=n)
            log.info("retention_run", rows=report.total, seconds=round(report.seconds, 3),
                     **report.batch_times(), **{k: v for k, v in report.by_category().items()})
        return report


def _for_purge(fn: Callable[[Any], Any], conn) -> Any:
    """``fn(conn)`` on the store writer's connection, with ``secure_delete`` on while it runs
    (as on the purge's own connection, ``_secure_delete``), and the writer's page cache
    raised to 64 MB for the rest of its life: a batch's deletes touch pages all over the
    indexes, and a cold page is a read from disk inside the write lock."""
    raw = conn.connection.driver_connection
    raw.execute("PRAGMA secure_delete = ON")
    raw.execute("PRAGMA cache_size = -65536")
    try:
        return fn(conn)
    finally:
        raw.execute("PRAGMA secure_delete = OFF")


def _wal_checkpoint(conn, mode: str) -> None:
    """``PRAGMA wal_checkpoint(mode)`` outside a transaction (a writer job with none)."""
    conn.connection.driver_connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()


def _secure_delete(dbapi_connection, _record) -> None:
    """Deleted rows are overwritten with zeros, not left in free pages until reused: purged
    means gone from the file, not only from the tables. A 64 MB page cache: a batch's
    deletes touch pages all over the indexes (numbers' hashes are random)."""
    dbapi_connection.execute("PRAGMA secure_delete = ON")
    dbapi_connection.execute("PRAGMA cache_size = -65536")


_AGED = {"outbox": purge.OUTBOX, "early_receipts": purge.EARLY_RECEIPTS, "mo_messages": purge.MO,
         "webhook_backlog": purge.WEBHOOKS,
         "invalid_numbers": purge.INVALID_NUMBERS, "connection_log": purge.CONNECTIONS}


def _purge(conn, table: str, now: float, cutoff: Cutoff, limit: int, country_of, box: TimeBox = NO_BOX) -> Batch:
    """One batch of ``table`` (module-level with plain arguments: it pickles, to run in the
    store's writer process)."""
    if table == "messages":
        return purge.purge_messages(conn, now, cutoff, limit, country_of, box)
    if table == "billing_days":
        return purge.purge_billing(conn, now, cutoff.default, limit, box)
    if table == "invalid_numbers":
        return purge.INVALID_NUMBERS.purge(conn, now, Cutoff(0.0), limit, box)  # their own expiry
    return _AGED[table].purge(conn, now, cutoff, limit, box)


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


class KeysCountry:
    """``cipher_country`` that pickles: it holds the keys folder and opens the keys where it
    is first called (the store's writer process), once per process."""

    _ciphers: ClassVar[dict[str, Any]] = {}

    def __init__(self, keys: str) -> None:
        self.keys = keys

    def __call__(self, row: dict) -> str | None:
        of = self._ciphers.get(self.keys)
        if of is None:
            from storage.crypto import FieldCipher, Keyring

            of = self._ciphers[self.keys] = cipher_country(FieldCipher(Keyring.open(self.keys, database_has_data=True)))
        return of(row)


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
        self._wake: asyncio.Future | None = None  # the wait for the next run, while it lasts
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
            if await self._sleep_unless_rescheduled(next_slot(now, self.purge_at) - now):
                await self._run_once()

    def reschedule(self, purge_at: str) -> None:
        """A reloaded ``purge_at``: the wait for the next run starts again from it (a run
        under way finishes first)."""
        if purge_at != self.purge_at:
            self.purge_at = purge_at
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(False)

    async def _sleep_unless_rescheduled(self, delay: float) -> bool:
        """Sleep ``delay``; True when it passed, False when ``reschedule`` came first. The
        timer is set before the first await, as ``timers.sleep`` does: on virtual time a
        clock moved meanwhile must not push it back."""
        self._wake = wake = asyncio.get_running_loop().create_future()
        handle = self.timers.call_later(delay, _set_result, wake, True)
        try:
            return await wake
        finally:
            handle.cancel()
            self._wake = None

    async def _run_once(self) -> None:
        try:
            await self.purger.run()
        except Exception as exc:  # noqa: BLE001 - tried again at the next purge_at
            log.warning("retention_failed", error=f"{type(exc).__name__}: {exc}")
        self.runs += 1
        self.ran.set()


def _set_result(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)
