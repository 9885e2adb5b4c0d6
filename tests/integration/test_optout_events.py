"""Opt-out events from every source, end to end over real sockets (issue 16, item 2).

The real ``Daemon`` on a temp SQLite file, an ``smpp34`` upstream that injects the STOP, a
partner bound over SMPP, the unsubscribe link's POST over HTTP, and ``smscenter blacklist
add|import`` run as processes (without the daemon's help: they write the events' rows in
their own transactions). Each new blacklist entry of an account with an ``mo_url`` reaches
the local HTTPS receiver once, signed, as ``{"event": "optout", "number", "scope",
"source", "at"}``; a platform-level entry reaches nobody; an event written while the daemon
is down is delivered after it starts; no number is in the daemon's log.
"""

from __future__ import annotations

import aiohttp
import pytest

from smscenter.config import load_settings
from storage.schema import blacklist, messages, webhook_backlog
from tests.integration.mt_fixtures import HOST, count_rows, mt, rows, wait_for  # noqa: F401 - mt is a fixture
from tests.integration.optout_fixtures import (  # noqa: F401 - captured_logs is a fixture
    SHARED,
    captured_logs,
    config_data,
    inject_mo,
    log_events,
    run_cli,
    write_config,
)
from tests.integration.test_webhooks_e2e import SECRET, receiver  # noqa: F401 - receiver is a fixture

pytestmark = pytest.mark.timeout(120)

SHORT_CODE = "38100"  # acme's own: a STOP there is acme's
STOPPED, CLICKED, TYPED, IMPORTED, LATER = "+33612345601", "+41791234567", "+33612345603", "+33612345604", "+33612345605"
PLATFORM = "+33612345606"


def optouts(rcv) -> list[dict]:
    return [h.json for h in rcv.hits if h.path == "/mo" and h.json["event"] == "optout"]


async def test_every_source_emits_one_durable_optout_event(mt, tmp_path, password_hashes, receiver,  # noqa: F811
                                                          captured_logs):  # noqa: F811 - fixtures
    up = await mt.upstream()
    accounts = [
        {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": [SHORT_CODE, SHARED],
         "mo_url": receiver.url("/mo"), "webhook_secret": SECRET, "webhook_ca": str(receiver.ca)},
        {"system_id": "beta", "sender_ids": ["BETA"], "short_codes": [SHARED]},
    ]
    data = config_data(password_hashes, up.port, accounts=accounts, optout={"unsubscribe_url": "https://x.fr"})
    data["http"] = {"listen": f"{HOST}:0"}
    path = write_config(tmp_path, data)
    settings = load_settings(path)
    d = await mt.daemon(settings)

    # 1. A STOP reply: the MO (flagged) and the opt-out event, both to the mo_url.
    assert await inject_mo(up, b"STOP", source=STOPPED[1:], short_code=SHORT_CODE) == 0
    await wait_for(lambda: len(optouts(receiver)) == 1, what="the STOP's opt-out event")
    assert await inject_mo(up, b"STOP", source=STOPPED[1:], short_code=SHORT_CODE) == 0  # again: listed already
    await wait_for(lambda: sum(h.json["event"] == "mo" for h in receiver.hits) == 2, what="the second STOP's MO")

    # 2. The unsubscribe link of a marketing message to Switzerland, where the mention is a
    # link (its token read from the database).
    partner = await mt.partner(d)
    assert (await partner.submit(CLICKED[1:], b"Soldes")).command_status == 0
    await wait_for(lambda: any(r["unsub_token"] for r in rows(settings, messages)), what="the message stored")
    [token] = [r["unsub_token"] for r in rows(settings, messages) if r["unsub_token"]]
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # twice: one entry, one event
            async with session.post(f"http://{HOST}:{d.web.port}/u/{token}") as done:
                assert done.status == 200
    await wait_for(lambda: len(optouts(receiver)) == 2, what="the link's opt-out event")

    # 3. An administrator, without the daemon's help: add, then an import (one already listed),
    # then a platform-level entry (no account: nobody's webhook) before one more of acme's.
    added = await run_cli("blacklist", "add", "-c", str(path), "--account", "acme", "--number", TYPED)
    assert added.returncode == 0, added.stderr
    await wait_for(lambda: len(optouts(receiver)) == 3, what="the CLI's opt-out event")
    csv = tmp_path / "list.csv"
    csv.write_text(f"number\n{IMPORTED}\n{TYPED}\n", encoding="utf-8")
    imported = await run_cli("blacklist", "import", "-c", str(path), "--account", "acme", str(csv))
    assert imported.returncode == 0, imported.stderr
    await wait_for(lambda: len(optouts(receiver)) == 4, what="the import's opt-out event")
    await wait_for(lambda: count_rows(settings, webhook_backlog) == 0, what="the backlog acknowledged")
    platform = await run_cli("blacklist", "add", "-c", str(path), "--account", f"platform:{SHARED}",
                             "--number", PLATFORM)
    assert platform.returncode == 0, platform.stderr
    assert count_rows(settings, webhook_backlog) == 0  # it wrote none

    # 4. Written while the daemon is down: delivered once it is up again.
    await mt.stop_daemon(d)
    later = await run_cli("blacklist", "add", "-c", str(path), "--account", "acme", "--number", LATER)
    assert later.returncode == 0, later.stderr
    assert count_rows(settings, webhook_backlog) == 1
    await mt.daemon(settings)
    await wait_for(lambda: len(optouts(receiver)) == 5, what="the opt-out written while the daemon was down")
    await wait_for(lambda: count_rows(settings, webhook_backlog) == 0, what="the backlog acknowledged")

    events = optouts(receiver)
    assert [(e["number"], e["source"]) for e in events] == [
        (STOPPED, "stop"), (CLICKED, "link"), (TYPED, "manual"), (IMPORTED, "import"), (LATER, "manual")]
    assert {(e["account"], e["scope"]) for e in events} == {("acme", "acme")}
    assert all(e["at"].endswith("Z") for e in events) and len({e["event_id"] for e in events}) == 5
    assert all(h.signed_by(SECRET) for h in receiver.hits)
    assert {(r["scope"], r["source"]) for r in rows(settings, blacklist)} == {
        ("acme", "stop"), ("acme", "link"), ("acme", "manual"), ("acme", "import"), (f"sc:{SHARED}", "manual")}
    logged = captured_logs.getvalue()
    for number in (STOPPED, CLICKED, TYPED, IMPORTED, LATER, PLATFORM):
        assert number[1:] not in logged
    assert any(e.get("event") == "webhook_retry" for e in log_events(captured_logs)) is False
