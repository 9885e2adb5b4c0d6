"""The connection log's buffer and writer on virtual time (``FakeTimers``), on a real SQLite
file: rows wait for the interval (or a whole batch), are written at most ``batch`` per
transaction, a full buffer drops and counts (one aggregated log line per interval), a failed
write keeps its rows for the next try, and ``stop()`` writes what is left."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from smscenter.pipeline.connlog import ConnectionLog
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.schema import connection_log
from tests.integration.conftest import until

NOW = 1_800_000_000.0


@pytest.fixture
async def engine(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    await db.upgrade(engine)
    yield engine
    await engine.dispose()


async def stored(engine) -> list[dict]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(connection_log).order_by(connection_log.c.id))).mappings()]


def attempt(log: ConnectionLog, n: int = 0, status: int | None = 0, account: str | None = "acme") -> None:
    log.record(system_id=f"sys{n}", account=account, peer=("127.0.0.1", 40000 + n), bind_type="transceiver",
               tls=False, status=status)


async def test_rows_are_written_after_the_interval_or_when_a_batch_waits(engine):
    timers = FakeTimers(NOW)
    log = ConnectionLog(engine, timers=timers, batch=4, interval=1.0)
    await log.start()
    try:
        attempt(log, 1)
        await timers.settle()
        assert await stored(engine) == [] and log.buffered == 1  # not yet: the interval
        await timers.advance(1.0)
        await until(lambda: log.written == 1, what="the interval's write")
        [row] = await stored(engine)
        assert row["at"] == NOW and row["system_id"] == "sys1" and row["peer_port"] == 40001

        for n in range(9):  # two whole batches: written at once, without time passing
            attempt(log, 10 + n)
        await until(lambda: log.written == 1 + 8, what="two batches")
        await timers.settle()
        assert log.buffered == 1
    finally:
        await log.stop()
    assert log.written == 10 and len(await stored(engine)) == 10  # stop wrote the last one
    ids = [r["id"] for r in await stored(engine)]
    assert ids == sorted(set(ids))


async def test_a_full_buffer_drops_counts_and_logs_once_per_interval(engine):
    timers = FakeTimers(NOW)
    log = ConnectionLog(engine, timers=timers, capacity=3, batch=100, interval=1.0, log_interval=10.0)
    with capture_logs() as logs:
        for n in range(1000):  # no task running: nothing drains the buffer
            attempt(log, n)
        first = [e for e in logs if e["event"] == "connection_log_dropped"]
        await timers.advance(10.0)
    assert log.buffered == 3 and log.dropped == 997
    assert [e["count"] for e in first] == [1]
    assert [e["count"] for e in logs if e["event"] == "connection_log_dropped"] == [1, 996]
    await log.stop()
    assert [r["system_id"] for r in await stored(engine)] == ["sys0", "sys1", "sys2"]


async def test_a_failed_write_keeps_its_rows_for_the_next_try(tmp_path):
    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = db.create_engine(url)
    timers = FakeTimers(NOW)
    log = ConnectionLog(engine, timers=timers, interval=1.0)
    await db.upgrade(engine)
    await log.start()
    try:
        async with engine.begin() as conn:  # the table goes away: writes fail
            await conn.exec_driver_sql("ALTER TABLE connection_log RENAME TO connection_log_away")
        attempt(log, 1, status=0x0E)

        def failures() -> int:
            return sum(log._errors.totals.values())

        with capture_logs() as logs:
            for n in range(1, 4):  # tried again after each interval
                await timers.advance(1.0)
                await until(lambda: failures() == n, what=f"failure {n}")
        assert log.written == 0 and log.buffered == 1
        assert [e["event"] for e in logs].count("connection_log_write_failed") == 1  # logged once per cause
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE connection_log_away RENAME TO connection_log")
        await timers.advance(1.0)
        await until(lambda: log.written == 1, what="the retried write")
        assert log.buffered == 0
        await log.stop()
        assert [(r["system_id"], r["status"]) for r in await stored(engine)] == [("sys1", 0x0E)]
    finally:
        await engine.dispose()


async def test_system_id_and_address_are_cut_to_their_columns(engine):
    log = ConnectionLog(engine, timers=FakeTimers(NOW))
    await log.start()
    log.record(system_id="x" * 300, account=None, peer=("f" * 80, 1, 0, 0), bind_type="receiver", tls=True,
               status=None)
    await log.stop()
    [row] = await stored(engine)
    assert row["system_id"] == "x" * 15 and len(row["peer_ip"]) == 45
    assert (row["account"], row["tls"], row["status"], row["bind_type"]) == (None, True, None, "receiver")
