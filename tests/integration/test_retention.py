"""The retention purge on both backends, with an injected clock (``FakeTimers``): what is past
its retention is gone — messages with parts, receipts and outbox rows, MO, invalid numbers,
early receipts — and nothing else: opt-outs, queued and awaiting-receipt messages, younger
data, per-account overrides. A dry run changes nothing; billing totals are the same before
and after."""

from __future__ import annotations

from sqlalchemy import func, select

from protocol.constants import MessageState
from smscenter.config import settings_from_dict
from smscenter.app.retention import Purger, latest_slot, next_slot
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.purge import billing_rows
from storage.schema import (
    PART_QUEUED,
    billing_days,
    blacklist,
    early_receipts,
    invalid_numbers,
    messages,
    mo_messages,
    outbox,
    parts,
)
from tests.retention_fixtures import DAY, NOW, Seeder

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"


def settings(url: str, **retention):
    return settings_from_dict({
        "storage": {"url": url},
        "retention": {"purge_batch": 10, "purge_pause": "0s", **retention},
        "account": [
            {"system_id": "acme", "password": HASH},
            {"system_id": "short", "password": HASH, "retention": {"message_details": "30d", "contact_data": "1y"}},
        ],
    })


async def seed(engine, fn):
    async with engine.begin() as conn:
        return await conn.run_sync(lambda c: fn(Seeder(c)))


async def count(engine, table, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def ids(engine, table, col) -> set:
    async with engine.connect() as conn:
        return {r[0] for r in await conn.execute(select(col))}


async def report(engine, account="acme", month=(NOW - 400 * DAY, NOW + DAY)):
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: billing_rows(c, account, *month))


def totals(rows) -> tuple[int, int]:
    return sum(r["messages"] for r in rows), sum(r["segments"] for r in rows)


async def test_purge_removes_what_is_past_retention_and_nothing_else(engine, db_url):
    def fill(s: Seeder):
        made = {}
        made["old"] = [s.message(ended_days_ago=200 + i) for i in range(25)]  # > 6 months: go
        made["young"] = s.message(ended_days_ago=100)  # stays
        made["queued"] = s.message(ended_days_ago=None, part_state=PART_QUEUED,
                                   submitted_at=NOW - 400 * DAY)  # scheduled long ago, still queued
        made["awaiting"] = s.message(ended_days_ago=None, submitted_at=NOW - 300 * DAY)  # awaiting its receipt
        made["short_old"] = s.message(account="short", ended_days_ago=40)  # its account keeps 30 days
        made["short_young"] = s.message(account="short", ended_days_ago=20)
        made["gone_account"] = s.message(account="former", ended_days_ago=365)  # not in config: default
        made["mo_old"] = s.mo(days_ago=800, with_outbox=True)
        made["mo_young"] = s.mo(days_ago=700)
        made["mo_short"] = s.mo(account="short", days_ago=400)  # its account keeps 1 year
        made["mo_unroutable"] = s.mo(account=None, days_ago=800)
        s.invalid("+33600000001", reported_days_ago=450)  # expired (14 months): goes
        s.invalid("+33600000002", reported_days_ago=100)
        s.optout("+33600000003", days_ago=5000)  # never purged
        s.early_receipt("e-old", days_ago=200)
        s.early_receipt("e-young", days_ago=1)
        return made

    made = await seed(engine, fill)
    before = await report(engine)
    s = settings(db_url)
    purger = Purger(engine, s, timers=FakeTimers(NOW))

    dry = await purger.run(dry_run=True)
    assert dry.rows[("message_details", "messages", "acme")] == 25
    assert dry.rows[("message_details", "messages", "short")] == 1
    assert dry.rows[("message_details", "messages", "former")] == 1
    assert dry.rows[("message_details", "parts", "acme")] == 50
    assert dry.rows[("contact_data", "mo_messages", "acme")] == 1
    assert await count(engine, messages) == 31  # a dry run changes nothing
    assert await purger.last_run() is None

    done = await purger.run()
    await purger.close()
    assert done.rows[("message_details", "messages", "acme")] == 25
    assert done.rows[("message_details", "parts", "acme")] == 50
    assert done.rows[("message_details", "outbox", "acme")] == 25 + 1  # 25 receipts + the MO delivery
    assert done.rows[("message_details", "early_receipts", "-")] == 1
    assert done.rows[("contact_data", "mo_messages", "acme")] == 1
    assert done.rows[("contact_data", "mo_messages", "short")] == 1
    assert done.rows[("contact_data", "mo_messages", "-")] == 1
    assert done.rows[("lookups", "invalid_numbers", "-")] == 1

    left = await ids(engine, messages, messages.c.id)
    assert left == {made["young"], made["queued"], made["awaiting"], made["short_young"]}
    assert await ids(engine, parts, parts.c.message_id) == left
    assert await ids(engine, outbox, outbox.c.message_id) == left
    assert await ids(engine, mo_messages, mo_messages.c.id) == {made["mo_young"]}
    assert await count(engine, invalid_numbers) == 1
    assert await count(engine, blacklist) == 1
    assert await ids(engine, early_receipts, early_receipts.c.upstream_id) == {"e-young"}
    assert await purger.last_run() == NOW

    # Billing: the same month, the same totals, now from billing_days for what went.
    after = await report(engine)
    assert after == before
    assert totals(after) == (25 + 1 + 2, 50 + 2 + 4)  # acme: 25 old + young + queued + awaiting
    assert await count(engine, billing_days) > 0
    # Another run finds nothing more.
    again = await Purger(engine, s, timers=FakeTimers(NOW)).run()
    assert again.total == 0


async def test_billing_aggregates_expire_after_their_own_retention(engine, db_url):
    await seed(engine, lambda s: [s.message(ended_days_ago=200) for _ in range(3)])
    s = settings(db_url, billing="1y")
    await Purger(engine, s, timers=FakeTimers(NOW)).run()
    assert await count(engine, billing_days) == 1
    later = await Purger(engine, s, timers=FakeTimers(NOW + 200 * DAY)).run()
    assert later.rows[("billing", "billing_days", "acme")] == 1
    assert await count(engine, billing_days) == 0


async def test_billing_counts_by_day_country_sender_and_state(engine, db_url):
    def fill(s: Seeder):
        t = NOW - 300 * DAY
        s.message(ended_days_ago=299, submitted_at=t, country="FR", parts_total=1)
        s.message(ended_days_ago=299, submitted_at=t + 10, country="FR", parts_total=3)
        s.message(ended_days_ago=299, submitted_at=t + 20, country="BE", parts_total=1,
                  state=MessageState.UNDELIVERABLE)
        s.message(ended_days_ago=299, submitted_at=t + 30, country="FR", sender="36180", parts_total=1)

    await seed(engine, fill)
    s = settings(db_url)
    await Purger(engine, s, timers=FakeTimers(NOW)).run()
    rows = await report(engine)
    by = {(r["country"], r["sender"], r["state"]): (r["messages"], r["segments"]) for r in rows}
    delivered, undeliverable = int(MessageState.DELIVERED), int(MessageState.UNDELIVERABLE)
    assert by == {("FR", "ACME", delivered): (2, 4), ("BE", "ACME", undeliverable): (1, 1),
                  ("FR", "36180", delivered): (1, 1)}
    assert {r["day"] for r in rows} == {"2026-03-21"}


def test_purge_slots_are_utc():
    t = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert latest_slot(t, "03:30") == t - 86400 + 3.5 * 3600
    assert next_slot(t, "03:30") == t + 3.5 * 3600
    assert latest_slot(t + 3.5 * 3600, "03:30") == t + 3.5 * 3600


async def test_sqlite_file_does_not_grow_at_steady_state(tmp_path, monkeypatch):
    """Fill, purge, fill again as much: the file is no larger than after the first fill (plus
    a margin), the second fill's rows going into the pages the purge freed."""
    import sqlite3

    import tests.retention_fixtures as fx
    from sqlalchemy import create_engine

    path = tmp_path / "steady.db"
    url = f"sqlite:///{path}"
    engine = db.create_engine(url)
    await db.upgrade(engine)
    sync = create_engine(url)

    def fill(n: int) -> int:
        with sync.begin() as conn:
            s = Seeder(conn)
            for i in range(n):
                s.message(ended_days_ago=200, parts_total=2, text=fx.TEXT * 6)
        raw = sqlite3.connect(path)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        return path.stat().st_size

    monkeypatch.setattr(fx, "NOW", NOW - 400 * DAY)
    first = fill(3000)
    s = settings(url)
    purger = Purger(engine, s.model_copy(update={"retention": s.retention.model_copy(update={"purge_batch": 1000})}),
                    timers=FakeTimers(NOW))
    assert (await purger.run()).rows[("message_details", "messages", "acme")] == 3000
    await purger.close()
    second = fill(3000)
    sync.dispose()
    await engine.dispose()
    assert second <= first * 1.05, (first, second)


async def test_webhook_events_never_acknowledged_go_with_message_details(engine, db_url):
    """A webhook row the sender could not deliver (an account whose URL was removed, a daemon
    that was down) is purged by its creation time, with the account's override."""
    from storage.schema import webhook_backlog
    from tests.retention_fixtures import next_id

    def row(account: str, days_ago: float) -> dict:
        at = NOW - days_ago * DAY
        return {"id": next_id(at), "account": account, "kind": 1, "message_id": None, "payload_enc": b"x",
                "created_at": at, "expires_at": at + 180 * DAY, "attempts": 3, "next_attempt_at": at}

    old, young, short_old = row("acme", 200), row("acme", 10), row("short", 40)
    async with engine.begin() as conn:
        await conn.execute(webhook_backlog.insert(), [old, young, short_old])
    purger = Purger(engine, settings(db_url), timers=FakeTimers(NOW))
    done = await purger.run()
    await purger.close()
    assert done.rows[("message_details", "webhook_backlog", "acme")] == 1
    assert done.rows[("message_details", "webhook_backlog", "short")] == 1  # its 30 days
    assert await ids(engine, webhook_backlog, webhook_backlog.c.id) == {young["id"]}
