"""Key retirement: every value under an old data-encryption key re-encrypted with the current
one, in bounded batches beside the running daemon, then the old key file removed.

Where values are: ``ENCRYPTED`` lists every encrypted column of ``schema.py`` with the AAD
its writer binds it to (``submit.py``, ``receipts.py``, ``mo.py``); the other binary columns
are keyed hashes (``HASHES``), which the look-up key makes and no rotation touches. A test
holds the two lists to the schema, so a new encrypted column cannot be forgotten here.

Finding a key's values: the key id is in a token's first bytes (``crypto.py``: version, then
the id, big-endian), so ``substr(column, 1, 3)`` names it in SQL, the same on SQLite (bytes
of a BLOB) and PostgreSQL (``substr(bytea, …)``). ``count_by_key`` groups a column by it:
one read-only pass over each table, no index (one on the header would cost every insert of
the hot path for a verb run a few times a year), no lock in the writer's way (WAL readers on
SQLite, MVCC on PostgreSQL). The tables are as big as retention lets them be, no bigger.

Re-encrypting (``Retirement.run``): each column is walked in primary-key order, ``batch`` rows
at a time — one short read, then, for the rows still under the old key, decrypt and encrypt
outside any transaction, then one short write transaction of compare-and-set updates::

    UPDATE … SET col = :new WHERE <primary key> AND col = :old

A row the daemon changed or deleted meanwhile is left as the daemon made it (the update
matches nothing), never overwritten with what was read before; only the token column is
written, so nothing else of the row can go stale either. A pass ends with a count; rows
still under the old key (changed meanwhile by a process that had not yet seen the new key)
are taken by the next pass. Killed anywhere, a run loses nothing — a batch is committed
whole or not at all, and both keys still decrypt — and the next run finds what is left.

Removing the key: only when a count finds no value under it, and only once the current
key has been in the folder ``SETTLE`` seconds: every process encrypting with the folder's
keys (the daemon, its writer process, other nodes) looks at it each
``crypto.KEY_CHECK_INTERVAL``, so after that none is still encrypting with an older key.
Then a last count, the unlink, and the folder fsynced so the removal survives a crash.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from sqlalchemy import Connection, Table, and_, event, func, select, tuple_, update

from . import db
from .crypto import HEADER_SIZE, KEY_CHECK_INTERVAL, VERSION, FieldCipher, _fsync_dir, dek_filename
from .schema import early_receipts, messages, mo_messages, outbox, parts, webhook_backlog

#: Rows read per batch (and so, at most, rows rewritten per write transaction): 100 holds
#: SQLite's write lock ~10 ms (p99 16 ms, the commit's fsync included; 500: ~48 ms) for
#: about the same values/s (measured on 20,000 messages, 60,000 values; on 100,000: median
#: 11.6 ms, p99 38 ms, 5,500 values/s, a loaded shared machine).
DEFAULT_BATCH = 100
#: Seconds the current key must have been in the folder before an older one is removed:
#: a few of the ``KEY_CHECK_INTERVAL`` after which every process encrypts with it.
SETTLE = 5 * KEY_CHECK_INTERVAL
#: Passes over the tables before giving up on values that keep coming back under the old
#: key (a process that cannot see the keys folder and goes on encrypting with it).
MAX_PASSES = 10


@dataclass(frozen=True, slots=True)
class Encrypted:
    """One encrypted column and the AAD (``crypto.FieldCipher``) its values are bound to."""

    table: Table
    column: str
    aad: Callable[[dict], bytes]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"

    @property
    def col(self):
        return self.table.c[self.column]

    @property
    def keys(self) -> tuple:
        return tuple(self.table.primary_key.columns)


#: Every encrypted column, with the AAD its writer uses.
ENCRYPTED: tuple[Encrypted, ...] = (
    Encrypted(messages, "dest_enc", lambda r: b"dest:%d" % r["id"]),
    Encrypted(parts, "pdu_enc", lambda r: b"part:%d:%d" % (r["message_id"], r["part_no"])),
    Encrypted(outbox, "pdu_enc", lambda r: b"outbox:%d" % r["id"]),
    Encrypted(early_receipts, "pdu_enc", lambda r: b"early:" + r["connector"].encode()),
    Encrypted(mo_messages, "source_enc", lambda r: b"mo-source:%d" % r["id"]),
    Encrypted(mo_messages, "text_enc", lambda r: b"mo-text:%d" % r["id"]),
    Encrypted(webhook_backlog, "payload_enc", lambda r: b"webhook:%d" % r["id"]),
)
#: The binary columns that are not encrypted: keyed hashes (``lookup.key``) of numbers, and of
#: the HTTPS API's idempotency keys and request bodies.
HASHES = frozenset({
    "messages.dest_hash", "mo_messages.source_hash", "blacklist.dest_hash", "invalid_numbers.dest_hash",
    "audit_log.dest_hash", "api_idempotency.key_hash", "api_idempotency.request_hash",
})


def header(key_id: int) -> bytes:
    """A token's first bytes under ``key_id``."""
    return bytes((VERSION,)) + key_id.to_bytes(HEADER_SIZE - 1, "big")


def _key_id(head: bytes | None) -> int | None:
    """The key id of a token's first bytes; None for a value that is not a token."""
    head = bytes(head) if head is not None else b""
    if len(head) != HEADER_SIZE or head[0] != VERSION:
        return None
    return int.from_bytes(head[1:], "big")


# --- counting ----------------------------------------------------------------------------


def count_by_key(conn: Connection, columns: tuple[Encrypted, ...] = ENCRYPTED) -> Counter:
    """Values per (column name, key id) — key id None for a value that is not a token."""
    found: Counter = Counter()
    for enc in columns:
        head = func.substr(enc.col, 1, HEADER_SIZE).label("head")
        rows = conn.execute(select(head, func.count()).where(enc.col.is_not(None)).group_by(head))
        for value, n in rows:
            found[(enc.name, _key_id(value))] += n
    return found


def count_under(conn: Connection, key_id: int, columns: tuple[Encrypted, ...] = ENCRYPTED) -> int:
    """Values still encrypted with ``key_id``, in all columns."""
    head = header(key_id)
    return sum(
        conn.execute(select(func.count()).select_from(enc.table)
                     .where(func.substr(enc.col, 1, HEADER_SIZE) == head)).scalar_one()
        for enc in columns
    )


# --- one batch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """A row read by ``scan``: its primary key, the whole row's key columns, its token."""

    key: tuple
    row: dict
    token: bytes


def scan(conn: Connection, enc: Encrypted, after: tuple | None, limit: int) -> list[Found]:
    """The next ``limit`` rows of ``enc``'s table after primary key ``after`` (in key order),
    with a value in the column. Bounded: one index range, ``limit`` rows."""
    keys = enc.keys
    query = select(*keys, enc.col).where(enc.col.is_not(None))
    if after is not None:
        query = query.where(tuple_(*keys) > tuple_(*after) if len(keys) > 1 else keys[0] > after[0])
    rows = conn.execute(query.order_by(*keys).limit(limit)).all()
    found = []
    for r in rows:
        key = tuple(r[: len(keys)])
        found.append(Found(key, {k.name: v for k, v in zip(keys, key)}, bytes(r[-1])))
    return found


def rewrite(conn: Connection, enc: Encrypted, changes: list[tuple[Found, bytes]]) -> tuple[int, int]:
    """Compare-and-set each (row, new token): written only where the column still holds the
    token read. (written, skipped: changed or deleted meanwhile)."""
    written = 0
    for found, new in changes:
        match = and_(*(k == v for k, v in zip(enc.keys, found.key)), enc.col == found.token)
        written += conn.execute(update(enc.table).where(match).values({enc.column: new})).rowcount
    return written, len(changes) - written


# --- a whole retirement ------------------------------------------------------------------


@dataclass(slots=True)
class Progress:
    """What a retirement did: values re-encrypted and skipped per column, passes, and
    whether the key file is gone."""

    key_id: int
    rewritten: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # changed by someone else meanwhile
    failed: Counter = field(default_factory=Counter)  # under the key, but do not decrypt
    passes: int = 0
    left: int = 0  # values under the key at the last count
    removed: bool = False
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())


class RetireError(Exception):
    """Values are still under the key after the run; the message says how many and why."""


class Retirement:
    """Re-encrypts every value under ``key_id`` with ``cipher``'s current key, then removes
    the key file. ``engine``: the async engine. ``report(line)`` is told of each column's
    pass. ``now``/``sleep``: the wall clock and a sleep, for ``SETTLE``."""

    def __init__(
        self,
        engine,
        cipher: FieldCipher,
        key_id: int,
        *,
        batch: int = DEFAULT_BATCH,
        report: Callable[[str], None] = lambda line: None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        columns: tuple[Encrypted, ...] = ENCRYPTED,
    ) -> None:
        if key_id == cipher.keyring.current_id:
            raise ValueError(f"key {key_id} is the current key: rotate first")
        self.engine = engine
        self.cipher = cipher
        self.key_id = key_id
        self.batch = batch
        self.report = report
        self.now = now
        self.sleep = sleep
        self.columns = columns
        self.progress = Progress(key_id)

        self._sync = None  # SQLite file: (executor, synchronous engine), made on first use

    def _sqlite(self):
        """On a SQLite file, a thread with a synchronous connection of its own (as the purge:
        ``smscenter/app/retention.py``): a write transaction begins with ``BEGIN IMMEDIATE`` and
        runs its statements with no event-loop turn between them, so the write lock is held
        for the statements only (500 updates took ~385 ms through aiosqlite, a thread hop
        each, and ~48 ms here, commit included). None on other databases."""
        if self._sync is None:
            url = db.writer_url(self.engine)
            if url is None:
                self._sync = ()
            else:
                engine = db.sync_writer_engine(url)
                event.listen(engine, "connect", _secure_delete)
                self._sync = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="rekey"), engine)
        return self._sync or None

    async def close(self) -> None:
        if self._sync:
            executor, engine = self._sync
            self._sync = None
            await asyncio.get_running_loop().run_in_executor(executor, engine.dispose)
            executor.shutdown(wait=True)

    async def _read(self, fn):
        sqlite = self._sqlite()
        if sqlite is not None:
            def run():
                with sqlite[1].connect() as conn:  # a plain read: no transaction begun
                    return fn(conn)
            return await asyncio.get_running_loop().run_in_executor(sqlite[0], run)
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def _write(self, fn):
        sqlite = self._sqlite()
        if sqlite is not None:
            def run():
                with sqlite[1].connect() as conn, conn.begin():  # BEGIN IMMEDIATE
                    return fn(conn)
            return await asyncio.get_running_loop().run_in_executor(sqlite[0], run)
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def count(self) -> int:
        return await self._read(lambda c: count_under(c, self.key_id, self.columns))

    async def one_pass(self) -> int:
        """Every column once, in batches; returns the values re-encrypted."""
        done = 0
        for enc in self.columns:
            after, written = None, 0
            while True:
                found = await self._read(lambda c, a=after: scan(c, enc, a, self.batch))
                if not found:
                    break
                after = found[-1].key
                changes = []
                for f in found:
                    if _key_id(f.token[:HEADER_SIZE]) != self.key_id:
                        continue
                    try:
                        plain = self.cipher.decrypt(f.token, enc.aad(f.row))
                    except Exception:  # noqa: BLE001 - DecryptError: reported, the key kept
                        self.progress.failed[enc.name] += 1
                        continue
                    changes.append((f, self.cipher.encrypt(plain, enc.aad(f.row))))
                if changes:
                    n, skipped = await self._write(lambda c, ch=changes: rewrite(c, enc, ch))
                    written += n
                    self.progress.skipped[enc.name] += skipped
                if len(found) < self.batch:
                    break
            self.progress.rewritten[enc.name] += written
            done += written
            self.report(f"pass {self.progress.passes + 1}: {enc.name}: {written} values re-encrypted")
        self.progress.passes += 1
        return done

    async def run(self) -> Progress:
        """Passes until no value is under the key, then (``SETTLE`` after the current key
        came) a last count and the key file removed. ``RetireError`` if values stay."""
        try:
            return await self._run()
        finally:
            await self.close()

    async def _run(self) -> Progress:
        started = self.now()
        while True:
            self.progress.failed.clear()
            await self.one_pass()
            self.progress.left = await self.count()
            if self.progress.left == 0:
                wait = self._settle_wait()
                if wait > 0:
                    self.report(f"waiting {wait:.1f} s for every process to use key {self.cipher.keyring.current_id}")
                    await self.sleep(wait)
                    self.progress.left = await self.count()
                if self.progress.left == 0:
                    break
            failed = sum(self.progress.failed.values())
            if failed and failed >= self.progress.left:
                raise RetireError(
                    f"{failed} values under key {self.key_id} do not decrypt (altered, or bound to "
                    "another row); the key is kept"
                )
            if self.progress.passes >= MAX_PASSES:
                raise RetireError(
                    f"{self.progress.left} values are still under key {self.key_id} after "
                    f"{self.progress.passes} passes (a process still encrypting with it? every one must "
                    "see the keys folder); the key is kept — run again"
                )
        self.progress.removed = remove_key(self.cipher.keyring.folder, self.key_id)
        self.progress.seconds = self.now() - started
        return self.progress

    def _settle_wait(self) -> float:
        current = self.cipher.keyring.folder / dek_filename(self.cipher.keyring.current_id)
        try:
            age = self.now() - current.stat().st_mtime
        except OSError:
            return SETTLE
        return max(0.0, SETTLE - age)


def _secure_delete(dbapi_connection, _record) -> None:
    """The old tokens' bytes are overwritten, not left in free pages (as the purge does)."""
    dbapi_connection.execute("PRAGMA secure_delete = ON")


def remove_key(folder: Path, key_id: int) -> bool:
    """Unlink the key file and fsync the folder; False if it was already gone."""
    try:
        os.unlink(Path(folder) / dek_filename(key_id))
    except FileNotFoundError:
        return False
    _fsync_dir(Path(folder))
    return True
