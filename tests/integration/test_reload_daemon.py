"""``Daemon.reload()`` in this process (real ``Daemon`` on a SQLite file with its writer
process, and on PostgreSQL with the transaction in this process; ``smpp34`` upstreams and
partners), for what the process test does not look into: connectors
changed (re-bound with the new settings), removed (unbound upstream) and added (bound), a
retention override reaching the receipts the writer process builds, the purge's new time,
an account removed with a receipt waiting and added back (it gets the receipt), and the
outcome dict that the control socket returns."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from smscenter.config import load_settings
from smscenter.app.daemon import Daemon
from storage.schema import outbox
from tests.integration import mt_fixtures
from tests.integration.mt_fixtures import GW_PASSWORD, HOST, wait_for
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(120)
mt = mt_fixtures.mt  # the fixture, for pytest to find

DEST = "+33612345678"
DAY = 86400.0


def config_toml(url: str, hashes: dict[str, str], connectors: dict[str, tuple[int, int]], route: list[str], *,
                details: str, purge_at: str, beta: bool) -> str:
    """``connectors``: name -> (port, window)."""
    text = f"""
[server]
listen = ["{HOST}:0"]
shutdown_grace = "500ms"
response_timeout = "2s"

[storage]
url = "{url}"
keys = "var/keys"

[retention]
purge_at = "{purge_at}"

[[account]]
system_id = "acme"
password = "{hashes['acme']}"
sender_ids = ["ACME"]
category = "alert"
throughput = 10000
retention = {{ message_details = "{details}" }}
"""
    if beta:
        text += f"""
[[account]]
system_id = "beta"
password = "{hashes['beta']}"
sender_ids = ["BETA"]
category = "alert"
"""
    for name, (port, window) in connectors.items():
        text += f"""
[[connector]]
name = "{name}"
host = "{HOST}"
port = {port}
system_id = "gw"
password = "{GW_PASSWORD}"
window = {window}
message_id = "hex-to-decimal"
response_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "300ms"
"""
    return text + f'\n[[route]]\ndestinations = ["*"]\nconnectors = {route!r}\n'.replace("'", '"')


async def outbox_rows(d: Daemon) -> list[dict]:
    async with d.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(outbox))).mappings()]


async def until_rows(d: Daemon, count: int, what: str) -> list[dict]:
    """The outbox once it holds ``count`` rows (read through the daemon's engine: either backend)."""
    try:
        async with asyncio.timeout(PATIENCE):
            while len(found := await outbox_rows(d)) != count:
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not {count} rows in the outbox within {PATIENCE}s") from None
    return found


async def test_reload_connectors_and_retention(mt, password_hashes, tmp_path, db_url):
    up_a, up_b, up_c = await mt.upstream("a"), await mt.upstream("b"), await mt.upstream("c")
    config = tmp_path / "smscenter.toml"
    config.write_text(config_toml(db_url, password_hashes, {"a": (up_a.port, 10), "b": (up_b.port, 10)}, ["a"],
                                  details="30d", purge_at="03:30", beta=True))
    settings = load_settings(config)
    d = Daemon(settings, config_path=config)
    await d.start()
    mt.daemons.append(d)
    for name in d.connectors:
        await d.connectors[name].wait_up(5)
    tx = await mt.partner(d, "acme", "TX")  # receipts wait in the outbox: their expiry is read there
    beta = await mt.partner(d, "beta", "TX")

    await tx.submit(DEST, b"avant")
    await beta.submit(DEST, b"beta avant", source_addr="BETA")
    first = next(r for r in await until_rows(d, 2, "the first receipts") if r["account"] == "acme")
    assert first["expires_at"] - first["created_at"] == pytest.approx(30 * DAY, abs=60)
    old_a = d.connectors["a"]

    config.write_text(config_toml(db_url, password_hashes, {"a": (up_a.port, 5), "c": (up_c.port, 10)}, ["c", "a"],
                                  details="10d", purge_at="04:15", beta=False))
    outcome = await d.reload()
    assert outcome["ok"] and outcome["errors"] == [] and outcome["restart_needed"] == []
    assert set(outcome["changes"]) == {
        "connector a: window changed", "connector b: removed", "connector c: added",
        "account acme: retention changed", "account beta: removed", "route[0]: connectors changed",
        "retention.purge_at: changed",
    }
    # Connectors: b unbound and gone, a re-bound with its new window, c bound.
    assert set(d.connectors) == {"a", "c"}
    assert d.connectors["a"] is not old_a and d.connectors["a"].config.window == 5
    assert old_a.links == [] and not old_a.is_up
    await d.connectors["a"].wait_up(5)
    await d.connectors["c"].wait_up(5)
    await wait_for(lambda: not up_b.esmes, what="connector b unbound upstream")
    await wait_for(lambda: up_a.binds == 2 and up_c.binds == 1, what="a bound again, c bound (as the peers saw it)")
    assert d.retention.purge_at == "04:15"

    # New traffic through c; its receipt, built in the writer process, waits 10 days now.
    sent = time.time()
    await tx.submit(DEST, b"apres")
    await wait_for(lambda: any(s.short_message == b"apres" for s in up_c.submits), what="the submit at c")
    second = max((r for r in await until_rows(d, 3, "the second receipt") if r["account"] == "acme"),
                 key=lambda r: r["id"])
    assert second["created_at"] >= sent - 1
    assert second["expires_at"] - second["created_at"] == pytest.approx(10 * DAY, abs=60)

    # beta back: its receipt waited in the outbox, its new bind gets it.
    assert d.server.registry.get("beta") is None
    config.write_text(config_toml(db_url, password_hashes, {"a": (up_a.port, 5), "c": (up_c.port, 10)}, ["c", "a"],
                                  details="10d", purge_at="04:15", beta=True))
    assert (await d.reload())["changes"] == ["account beta: added"]
    rx = await mt.partner(d, "beta", "RX")
    (got,) = await rx.receipts(1)
    assert got.stat == "DELIVRD"

    # Nothing changed: ok, no changes.
    assert await d.reload() == {"ok": True, "changes": [], "errors": [], "restart_needed": []}
