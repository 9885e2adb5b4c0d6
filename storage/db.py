"""Engine creation and schema migrations.

SQLite is the embedded default: WAL journal so readers never block the writer, and
``synchronous=FULL`` so a committed transaction survives a power cut, not only a crash —
acknowledging a message means it is on disk. Group commit (``store.py``) pays for the
fsync once per batch instead of once per message. PostgreSQL is reached with asyncpg.

The group commit itself does not go through aiosqlite on SQLite: every awaited statement
there crosses to aiosqlite's thread and back through an event-loop turn. ``sync_writer_engine``
gives the store a plain synchronous engine on the same file (same pragmas), used only by the
store's one writer (a thread, or a process of its own), where a whole batch runs as one
synchronous function. Its
transactions start with ``BEGIN IMMEDIATE``: the write lock is taken before the first read,
so the reads a batch bases its updates on cannot be overtaken by another writer.

Migrations are Alembic's, run in-process on the already-open async connection (the
``connection`` attribute cookbook recipe), so start-up and the ``db upgrade`` verb share one
code path.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .schema import messages, outbox

MIGRATIONS = Path(__file__).with_name("migrations")


def async_url(url: str) -> str:
    """Map the config's URL to an async driver (``sqlite://`` → aiosqlite, ``postgresql://``
    → asyncpg); URLs that already name a driver are kept."""
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite" + url[len("sqlite") :]
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def writer_url(engine: AsyncEngine) -> str | None:
    """The URL (plain ``sqlite``, as a string) of the synchronous engine the store's writer
    uses on the same SQLite file; None for other databases and for in-memory SQLite (a
    second engine would see another database), where the store runs its batch through
    ``AsyncConnection.run_sync``."""
    if not is_sqlite(engine):
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return engine.url.set(drivername="sqlite").render_as_string(hide_password=False)


def sync_writer_engine(url: str) -> Engine:
    """The writer's synchronous engine on ``url`` (from ``writer_url``): one connection,
    the same pragmas as the async engine, transactions begun with ``BEGIN IMMEDIATE``."""
    sync = create_sync_engine(
        url,
        # Connections are made and used on the writer thread; disposing of them at stop
        # happens there too, check_same_thread=False only spares a spurious error if not.
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
    )
    event.listen(sync, "connect", _sqlite_writer_connect)
    event.listen(sync, "begin", _begin_immediate)
    return sync


def _sqlite_writer_connect(dbapi_connection, record) -> None:
    # Transactions are ours to begin (BEGIN IMMEDIATE below), not the sqlite3 module's
    # implicit deferred BEGIN before the first write.
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection, record)


def _begin_immediate(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # Switching a new file to WAL needs its lock and does not wait on the busy handler: nodes
    # starting together on a new database (one of them creating the schema) would get
    # "database is locked" here. Tried again for up to 30 s, as the busy timeout would.
    for attempt in range(600):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 599:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


#: PostgreSQL advisory lock key held while the schema is upgraded ("smsc").
UPGRADE_LOCK = 0x736D7363


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer smscenter: this one does not know its schema."""

    def __init__(self, current: str, head: str | None) -> None:
        super().__init__(
            f"the database schema is at revision {current!r}, which this smscenter (schema "
            f"{head!r}) does not know: a newer smscenter upgraded it. Run that version, or "
            "restore the database from before the upgrade"
        )
        self.current, self.head = current, head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Create or upgrade the schema to ``revision``: (revision before, revision after).

    Serialised across processes: nodes sharing a database may start at the same moment (or
    ``db upgrade`` may run beside a starting daemon). The first takes a lock — an advisory
    lock on PostgreSQL, SQLite's write lock (``BEGIN IMMEDIATE``, others wait up to the busy
    timeout) — and upgrades in one transaction; the others then find the schema current.
    A schema this code does not know (a newer smscenter's) is never touched: ``SchemaTooNew``.
    """
    async with engine.connect() as conn:
        if is_sqlite(engine):
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})

        def run(sync) -> tuple[str | None, str | None]:
            before = MigrationContext.configure(sync).get_current_revision()
            if before is not None and not known_revision(before):
                raise SchemaTooNew(before, head_revision())
            command.upgrade(_alembic_config(sync), revision)
            return before, MigrationContext.configure(sync).get_current_revision()

        result = await conn.run_sync(run)
        await conn.commit()
        return result


def known_revision(revision: str) -> bool:
    """True when this code's migrations include ``revision``."""
    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises for an unknown id
        return False


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def has_data(engine: AsyncEngine) -> bool:
    """True when the database holds messages or owed deliveries (so its keys must exist)."""
    if await current_revision(engine) is None:
        return False
    async with engine.connect() as conn:
        for table in (messages, outbox):
            if (await conn.execute(select(func.count()).select_from(table))).scalar_one():
                return True
    return False
