"""The retention purge beside the traffic, on a SQLite file: its batches are low-priority work
on the store's own writer (``Store.background``), so a submit never contends with it for
SQLite's write lock, and each batch is time-boxed.

- Submits issued while a purge batch holds the writer (a gate holds it in its transaction)
  are committed once it is released, all of them, before the next purge batch runs.
- A purge batch is not starved by the traffic: queued while a batch commits and another
  waits, it runs between the two.
- A purge batch commits without an fsync of its own (``synchronous=NORMAL`` for its
  transaction only); the traffic's commits keep theirs.
- Beside a purge that holds SQLite's write lock on a connection of its own (the CLI's way),
  the store's commits wait for the lock and none is lost.
- A batch stops after the chunk during which its time box ran out, counted on a fake clock
  (one tick per look), not measured: the box is respected, what it did is whole (messages
  with their parts, receipts and billing), and the run goes on until nothing is left.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from sqlalchemy import create_engine, func, select, text

from protocol.constants import MessageState as M
from smscenter.config import settings_from_dict
from smscenter.app.retention import Purger, _purge
from smscenter.runtime.timers import FakeTimers
from storage import purge
from storage.crypto import FieldCipher, Keyring
from storage.purge import Cutoff, TimeBox
from storage.schema import PART_SUBMITTED, billing_days, messages, outbox, parts
from storage.store import SubmitResult
from tests.integration.conftest import until
from tests.integration.test_writer_process import (
    _gated_store,
    factory,
    new_message,
    upstream_receipt,
)
from tests.patience import PATIENCE
from tests.retention_fixtures import DAY, NOW, Seeder
from tests.store_helpers import count_rows, gated_job, synchronous

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
SIX_MONTHS = 180 * DAY


@pytest.fixture
def keys(tmp_path):
    Keyring.create(tmp_path / "keys")
    return tmp_path / "keys"


def sync_url(engine) -> str:
    return engine.url.set(drivername="sqlite").render_as_string(hide_password=False)


def seed_old(engine, n: int) -> None:
    """``n`` messages ended 200 days ago (two parts and a receipt each)."""
    sync = create_engine(sync_url(engine))
    with sync.begin() as conn:
        s = Seeder(conn)
        for _ in range(n):
            s.message(ended_days_ago=200)
    sync.dispose()


def table_rows(engine, table) -> int:
    sync = create_engine(sync_url(engine))
    with sync.connect() as conn:
        n = conn.execute(select(func.count()).select_from(table)).scalar_one()
    sync.dispose()
    return n


async def test_submits_behind_a_purge_batch_commit_when_it_ends_and_go_before_the_next(
    sqlite_engine, keys, tmp_path
):
    from storage.store import Store

    seed_old(sqlite_engine, 30)
    store = Store(sqlite_engine, factory(keys), clock=lambda: NOW)
    await store.start()
    gate, started = tmp_path / "gate", tmp_path / "started"
    try:
        batch = partial(_purge, table="messages", now=NOW, cutoff=Cutoff(SIX_MONTHS), limit=100, country_of=None)
        first = store.background(partial(gated_job, batch, str(gate), str(started)))
        await until(started.exists, what="the purge batch holding the writer")
        cipher = FieldCipher(Keyring.load(keys))
        submitted = [new_message(cipher) for _ in range(25)]
        stored = [store.add_message(row, parts_) for row, parts_ in submitted]
        after = store.background(partial(count_rows, "messages"))  # queued behind the submits
        await asyncio.sleep(0)
        assert not any(s.done() for s in stored) and not first.done()
        gate.touch()
        async with asyncio.timeout(PATIENCE):
            result, held = await first
            await asyncio.gather(*stored)
            seen, _ = await after
        assert result.rows[("messages", "acme")] == 30 and held > 0
        assert seen == 25  # the submits' commit came before the next job: all of them, none lost
        for row, _ in submitted:
            assert (await store.message(row["id"]))["state"] == int(M.ENROUTE)
    finally:
        gate.touch()
        await store.stop()
    assert table_rows(sqlite_engine, messages) == 25


async def test_a_job_runs_between_two_batches_whatever_the_load(sqlite_engine, keys, tmp_path):
    gate = tmp_path / "gate"  # the receipt builder waits there: a batch held in its commit
    async with _gated_store(sqlite_engine, keys, gate) as store:
        cipher = FieldCipher(Keyring.load(keys))
        earlier, parts_ = new_message(cipher)
        await store.add_message(earlier, parts_)
        await store.record_submit(SubmitResult(earlier["id"], 1, PART_SUBMITTED, "op", "j1", 1, NOW))
        receipt = store.apply_receipt(upstream_receipt("j1"))
        await until(lambda: store._in_flight == 1, what="the receipt's batch in the writer, held at the gate")
        job = store.background(partial(count_rows, "messages"))
        row, parts_ = new_message(cipher)
        waiting = store.add_message(row, parts_)  # a batch waiting behind it
        gate.touch()
        async with asyncio.timeout(PATIENCE):
            seen, _ = await job
            await asyncio.gather(receipt, waiting)
        assert seen == 1  # the job ran before the waiting batch: only the earlier message


async def test_a_purge_batch_commits_without_its_own_fsync_and_the_traffic_keeps_its_own(sqlite_engine, keys):
    from storage.store import Store

    store = Store(sqlite_engine, factory(keys), clock=lambda: NOW)
    await store.start()
    try:
        async with asyncio.timeout(PATIENCE):
            (batch, _), (after, _) = await asyncio.gather(store.background(synchronous, durable=False),
                                                          store.background(synchronous))
            row, parts_ = new_message(FieldCipher(Keyring.load(keys)))
            await store.add_message(row, parts_)
            (last, _) = await store.background(synchronous)
    finally:
        await store.stop()
    assert (batch, after, last) == (1, 2, 2)  # NORMAL for the batch only, FULL again after it


async def test_commits_wait_for_a_purge_holding_sqlites_lock_and_none_is_lost(sqlite_engine, keys):
    """The CLI's purge (a connection of its own, ``BEGIN IMMEDIATE``) beside the daemon."""
    from storage.store import Store

    seed_old(sqlite_engine, 10)
    store = Store(sqlite_engine, factory(keys), clock=lambda: NOW)
    await store.start()
    lock = create_engine(sync_url(sqlite_engine), connect_args={"isolation_level": None})
    try:
        with lock.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            purge.purge_messages(conn, NOW, Cutoff(SIX_MONTHS), 100)
            cipher = FieldCipher(Keyring.load(keys))
            submitted = [new_message(cipher) for _ in range(20)]
            stored = [store.add_message(row, parts_) for row, parts_ in submitted]
            # The writer is inside its commit, waiting for the lock (an enquiry through the
            # writer would wait too): nothing is answered while the purge holds it.
            await asyncio.sleep(0)
            assert not any(s.done() for s in stored)
            conn.exec_driver_sql("COMMIT")
        async with asyncio.timeout(PATIENCE):
            await asyncio.gather(*stored)
    finally:
        lock.dispose()
        await store.stop()
    assert table_rows(sqlite_engine, messages) == 20


class Ticks:
    """A clock that moves ``tick`` seconds each time it is read: a batch's time box counted
    in looks, not measured."""

    def __init__(self, tick: float) -> None:
        self.tick, self.now, self.reads = tick, 0.0, 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.tick
        return self.now


def settings(url: str, batch: int):
    return settings_from_dict({
        "storage": {"url": url},
        "retention": {"purge_batch": batch, "purge_pause": "0s"},
        "account": [{"system_id": "acme", "password": HASH}],
    })


async def test_a_batch_stops_after_the_chunk_in_which_its_time_box_ran_out(sqlite_engine):
    seed_old(sqlite_engine, 100)
    sync = create_engine(sync_url(sqlite_engine))
    # 1 ms per look, 2.5 ms of budget, 10 messages a chunk: the looks after chunks 1 and 2
    # find time left, the one after chunk 3 none.
    box = TimeBox(budget=0.0025, step=10, clock=Ticks(0.001))
    with sync.begin() as conn:
        batch = purge.purge_messages(conn, NOW, Cutoff(SIX_MONTHS), 100, box=box)
    assert (batch.selected, batch.chunks, batch.cut) == (30, 3, True)
    assert batch.rows[("messages", "acme")] == 30
    assert batch.rows[("parts", "acme")] == 60 and batch.rows[("outbox", "acme")] == 30
    with sync.connect() as conn:
        assert conn.execute(select(func.sum(billing_days.c.messages))).scalar() == 30
        # Whole messages: no part or receipt left without its message.
        orphans = text("SELECT count(*) FROM parts WHERE message_id NOT IN (SELECT id FROM messages)")
        assert conn.execute(orphans).scalar() == 0
    sync.dispose()
    assert table_rows(sqlite_engine, messages) == 70
    assert table_rows(sqlite_engine, outbox) == 70


async def test_a_run_goes_on_batch_after_batch_until_nothing_is_left(sqlite_engine):
    seed_old(sqlite_engine, 95)
    url = sync_url(sqlite_engine)
    box = TimeBox(budget=0.0025, step=10, clock=Ticks(0.001))
    purger = Purger(sqlite_engine, settings(url, batch=40), timers=FakeTimers(NOW), box=box)
    try:
        report = await purger.run()
    finally:
        await purger.close()
    assert report.rows[("message_details", "messages", "acme")] == 95
    # 95 messages, 30 a batch (the box), the last one 5: four batches of messages; then one
    # each for the seven other tables (the webhook backlog's among them), none of which holds
    # anything to purge.
    assert purger.batches == 4 + 7
    assert table_rows(sqlite_engine, messages) == table_rows(sqlite_engine, parts) == 0
    assert purger.longest >= purger.held > 0
