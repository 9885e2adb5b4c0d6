"""The retention job inside the real daemon, on virtual time (``FakeTimers``): it runs at start
when overdue (no run recorded since the latest ``purge_at``), then daily at ``purge_at``
(UTC), not before; a restart after a run does not run it again; /metrics counts what it
removed."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, func, select

import tests.retention_fixtures as fx
from smscenter.config import load_settings
from smscenter.app.metrics import registry_for
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.crypto import Keyring
from storage.schema import jobs, messages
from tests.integration.mt_fixtures import TUESDAY_MORNING, db_path, mt  # noqa: F401 - mt: fixture
from tests.integration.optout_fixtures import config_data, write_config

pytestmark = pytest.mark.timeout(90)


def seed_old(settings, n: int) -> None:
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    with engine.begin() as conn:
        s = fx.Seeder(conn)
        for _ in range(n):
            s.message(ended_days_ago=200)
        s.message(ended_days_ago=10)  # young: stays
    engine.dispose()


def rows(settings, table=messages) -> int:
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(table)).scalar_one()
    engine.dispose()
    return n


async def wait_run(d, runs: int) -> None:
    async with asyncio.timeout(10):  # real time: the purge's own I/O
        while d.retention.runs < runs:
            d.retention.ran.clear()
            await d.retention.ran.wait()


def metric(d, name: str, **labels) -> float:
    return registry_for(d).get_sample_value(name, labels or None)


async def test_runs_at_start_when_overdue_then_daily_at_purge_at(mt, tmp_path, password_hashes, monkeypatch):
    monkeypatch.setattr(fx, "NOW", TUESDAY_MORNING)  # 2026-06-02 08:00 UTC
    up = await mt.upstream()
    data = config_data(password_hashes, up.port)
    data["retention"] = {"purge_at": "03:30"}
    path = write_config(tmp_path, data)
    settings = load_settings(path)
    engine = db.create_engine(settings.storage.url)
    await db.upgrade(engine)
    await engine.dispose()
    Keyring.create(settings.storage.keys)
    seed_old(settings, 7)

    timers = FakeTimers(TUESDAY_MORNING)
    d = await mt.daemon(settings, timers=timers)
    await wait_run(d, 1)  # never ran: overdue
    assert rows(settings) == 1
    assert metric(d, "smscenter_retention_purged_rows_total", category="message_details") == 7 * 4  # + parts, receipts
    assert metric(d, "smscenter_retention_last_run_timestamp_seconds") == TUESDAY_MORNING

    monkeypatch.setattr(fx, "NOW", TUESDAY_MORNING + 19 * 3600)
    seed_old(settings, 3)
    await timers.jump(19 * 3600)  # 03:00 the next day: not yet
    assert d.retention.runs == 1 and rows(settings) == 5
    await timers.jump(3600)  # 04:00: 03:30 passed
    await wait_run(d, 2)
    assert rows(settings) == 2
    assert metric(d, "smscenter_retention_purged_rows_total", category="message_details") == 10 * 4
    await mt.stop_daemon(d)

    # A restart after today's run: nothing overdue, the job waits for tomorrow's 03:30.
    seed_old(settings, 2)
    again = await mt.daemon(settings, timers=FakeTimers(TUESDAY_MORNING + 21 * 3600))
    await asyncio.sleep(0.2)  # real time for the start-up's database reads
    assert again.retention.runs == 0 and rows(settings) == 5
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    with engine.connect() as conn:
        last = conn.execute(select(jobs.c.last_run_at)).scalar_one()
    engine.dispose()
    assert last == TUESDAY_MORNING + 20 * 3600
