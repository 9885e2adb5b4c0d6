"""The connection log's storage on both backends (SQLite and PostgreSQL): the retention purge
removes bind attempts older than ``[retention] connections`` (12 months) with a per-account
override, on an injected clock, and nothing younger; the CLI's queries filter by account, IP,
time and failure, newest first; the accounts' last connection and last SMS; the writer itself, and
its ids across a restart."""

from __future__ import annotations

from sqlalchemy import func, select

from protocol.constants import CommandStatus as S
from smscenter.config import settings_from_dict
from smscenter.pipeline.connlog import ConnectionLog
from smscenter.app.retention import Purger
from smscenter.runtime.timers import FakeTimers
from storage import connections as sql
from storage.schema import connection_log
from tests.retention_fixtures import DAY, NOW, Seeder, next_id

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"


def row(account: str | None, days_ago: float, *, system_id: str | None = None, ip: str = "192.0.2.1",
        status: int | None = 0, port: int = 40000) -> dict:
    at = NOW - days_ago * DAY
    return {"id": next_id(at), "at": at, "system_id": system_id or account or "nobody", "account": account,
            "peer_ip": ip, "peer_port": port, "bind_type": "transceiver", "tls": False, "status": status}


async def insert(engine, rows: list[dict]) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: sql.insert_rows(c, rows))


async def system_ids(engine) -> list[str]:
    async with engine.connect() as conn:
        return sorted(r[0] for r in await conn.execute(select(connection_log.c.system_id)))


async def test_purge_removes_connections_past_12_months_with_per_account_override(engine, db_url):
    await insert(engine, [
        row("acme", 400, system_id="acme-old"),  # > 12 months: goes
        row("acme", 300, system_id="acme-young"),  # stays
        row("short", 40, system_id="short-old"),  # its account keeps 30 days: goes
        row("short", 20, system_id="short-young"),
        row(None, 400, system_id="nobody-old", status=S.ESME_RINVPASWD),  # unknown system_id: default
        row(None, 100, system_id="nobody-young", status=S.ESME_RINVPASWD),
        row("former", 370, system_id="former-old"),  # an account gone from the config: default
    ])
    settings = settings_from_dict({
        "storage": {"url": db_url},
        "retention": {"purge_batch": 10, "purge_pause": "0s"},
        "account": [
            {"system_id": "acme", "password": HASH},
            {"system_id": "short", "password": HASH, "retention": {"connections": "30d"}},
        ],
    })
    assert settings.retention.connections == 360 * DAY  # "12mo": months of 30 days
    purger = Purger(engine, settings, timers=FakeTimers(NOW))
    try:
        dry = await purger.run(dry_run=True)
        assert {k: v for k, v in dry.rows.items() if k[0] == "connections"} == {
            ("connections", "connection_log", "acme"): 1, ("connections", "connection_log", "short"): 1,
            ("connections", "connection_log", "-"): 1, ("connections", "connection_log", "former"): 1,
        }
        assert len(await system_ids(engine)) == 7  # a dry run changes nothing

        done = await purger.run()
    finally:
        await purger.close()
    assert done.by_category()["connections"] == 4
    assert purger.purged["connections"] == 4
    assert await system_ids(engine) == ["acme-young", "nobody-young", "short-young"]


async def test_many_old_connections_go_in_bounded_batches(engine, db_url):
    await insert(engine, [row("acme", 400 + i / 100, port=i) for i in range(95)] + [row("acme", 1)])
    settings = settings_from_dict({"storage": {"url": db_url}, "retention": {"purge_batch": 10, "purge_pause": "0s"},
                                   "account": [{"system_id": "acme", "password": HASH}]})
    purger = Purger(engine, settings, timers=FakeTimers(NOW))
    try:
        done = await purger.run()
    finally:
        await purger.close()
    assert done.rows[("connections", "connection_log", "acme")] == 95
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(connection_log))).scalar_one() == 1


async def test_queries_filter_newest_first_and_know_the_last_connection_and_sms(engine):
    await insert(engine, [
        row("acme", 10, ip="192.0.2.1"),
        row("acme", 5, ip="198.51.100.7", status=S.ESME_RINVPASWD),
        row("acme", 2, ip="2001:db8::1", status=None),  # hung up
        row(None, 3, system_id="nobody", ip="198.51.100.7", status=S.ESME_RINVPASWD),
        row("beta", 1, ip="192.0.2.9"),
    ])

    async def listed(**filters) -> list[tuple]:
        async with engine.connect() as conn:
            rows = await conn.run_sync(lambda c: sql.list_rows(c, sql.Filters(**filters)))
        return [(r["system_id"], round((NOW - r["at"]) / DAY)) for r in rows]

    assert await listed() == [("beta", 1), ("acme", 2), ("nobody", 3), ("acme", 5), ("acme", 10)]
    assert await listed(account="acme") == [("acme", 2), ("acme", 5), ("acme", 10)]
    assert await listed(ip="198.51.100.7") == [("nobody", 3), ("acme", 5)]
    assert await listed(failed=True) == [("acme", 2), ("nobody", 3), ("acme", 5)]  # NULL (hung up) included
    assert await listed(since=NOW - 4 * DAY) == [("beta", 1), ("acme", 2), ("nobody", 3)]
    assert await listed(account="acme", failed=True, since=NOW - 4 * DAY) == [("acme", 2)]
    assert await listed(limit=2) == [("beta", 1), ("acme", 2)]

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: (Seeder(c).message(ended_days_ago=30), Seeder(c).message(ended_days_ago=3)))
    async with engine.connect() as conn:
        last = await conn.run_sync(lambda c: sql.last_connection(c, "acme"))
        assert (last["peer_ip"], last["status"], last["at"]) == ("2001:db8::1", None, NOW - 2 * DAY)
        assert await conn.run_sync(lambda c: sql.last_connection(c, "gamma")) is None
        assert await conn.run_sync(lambda c: sql.last_submit(c, "acme")) == NOW - 3 * DAY - 60.0
        assert await conn.run_sync(lambda c: sql.last_submit(c, "beta")) is None
        assert await conn.run_sync(sql.max_id) == max(r[0] for r in await conn.execute(select(connection_log.c.id)))


async def test_the_writer_on_this_backend_and_its_ids_after_a_restart(engine):
    """The daemon's writer (``connlog.ConnectionLog``) through the async engine; a second one
    (a restart, its clock gone back a day) goes on above the stored ids."""
    timers = FakeTimers(NOW)
    first = ConnectionLog(engine, timers=timers)
    await first.start()
    for n in range(3):
        first.record(system_id="acme", account="acme", peer=("192.0.2.1", 40000 + n), bind_type="transmitter",
                     tls=False, status=0)
    await first.stop()
    again = ConnectionLog(engine, timers=FakeTimers(NOW - DAY))
    await again.start()
    again.record(system_id="nobody", account=None, peer=("2001:db8::7", 1, 0, 0), bind_type="receiver",
                 tls=True, status=None)
    await again.stop()
    async with engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(select(connection_log).order_by(connection_log.c.id))).mappings()]
    assert [(r["system_id"], r["peer_port"], r["tls"], r["status"]) for r in rows] == [
        ("acme", 40000, False, 0), ("acme", 40001, False, 0), ("acme", 40002, False, 0), ("nobody", 1, True, None),
    ]
    assert rows[-1]["at"] == NOW - DAY and first.written == 3 and again.written == 1
