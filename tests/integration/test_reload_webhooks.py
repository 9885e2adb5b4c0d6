"""Webhook settings reloaded live: the daemon as a process (``python -m smscenter run``),
SIGHUP, an upstream (``smpp34``) that sends receipts, a partner on a raw socket, and two
HTTPS receivers (``webhook_receiver.Receiver``).

Receipts before the reload reach the old URL signed with the old secret; after it, the new
URL with the new secret's signature; with the URL removed, the receipts' rows wait in the
backlog (nothing is sent; receipts meanwhile make none: nobody subscribes, they still wait
for the partner in the SMPP outbox), and once the URL is back they go out. Every receipt is
acknowledged exactly once somewhere, none is lost.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.integration import mt_fixtures
from tests.integration.mt_fixtures import free_port, wait_for
from tests.integration.test_reload import bind, config_toml
from tests.integration.test_reload import daemon_proc, hashes  # noqa: F401 - fixtures
from tests.integration.webhook_receiver import SECRET, Receiver, self_signed

pytestmark = pytest.mark.timeout(180)
mt = mt_fixtures.mt  # the fixture, for pytest to find

FR = "33612345678"
NEW_SECRET = "whsec-reloaded-0123456789"


def with_webhooks(text: str, url: str | None, secret: str, ca) -> str:
    """``config_toml``'s text with acme's webhook keys (none when ``url`` is None)."""
    limits = '\n[webhooks]\nretry_min = "100ms"\nretry_max = "200ms"\n'
    if url is None:
        return text + limits
    keys = f'receipt_url = "{url}"\nwebhook_secret = "{secret}"\nwebhook_ca = "{ca}"\n'
    return text.replace('system_id = "acme"\n', 'system_id = "acme"\n' + keys, 1) + limits


def table_rows(tmp_path, table: str) -> int:
    with sqlite3.connect(tmp_path / "var" / "smscenter.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def backlog_rows(tmp_path) -> int:
    return table_rows(tmp_path, "webhook_backlog")


async def test_a_reload_moves_webhooks_to_the_new_url_and_secret_and_a_removed_url_keeps_the_rows(
        mt, daemon_proc, hashes, tmp_path):  # noqa: F811 - fixtures
    cert, key = self_signed(tmp_path)
    old_rcv, new_rcv = await Receiver(cert, key).start(), await Receiver(cert, key).start()
    try:
        up = await mt.upstream("b")  # receipts DELIVRD after each submit
        port = free_port()
        config = tmp_path / "smscenter.toml"

        def write(url: str | None, secret: str) -> None:
            base = config_toml(port, hashes, {"b": up.port}, accounts=["acme", "beta"], route=["b"], be_rule="always")
            config.write_text(with_webhooks(base, url, secret, cert))

        write(old_rcv.url("/receipts"), SECRET)
        d = daemon_proc(config)
        await d.start()
        await wait_for(lambda: up.binds, what="the connector bound")
        acme, status = await bind(mt, port, "acme")
        assert status == 0
        submitted: list[str] = []

        async def send(n: int) -> None:
            answers = await acme.submit_pipelined([(FR, b"recu %d" % len(submitted))] * n, registered_delivery=1)
            assert [a.status for a in answers] == [0] * n
            submitted.extend(a.cstrings()[0].decode() for a in answers)

        await send(2)
        before = await old_rcv.wait_hits(2)
        assert all(h.signed_by(SECRET) for h in before)

        write(new_rcv.url("/hooks/receipts"), NEW_SECRET)
        outcome, _ = await d.reload()
        assert outcome["event"] == "reload_done", outcome
        assert outcome["changes"] == ["account acme: receipt_url, webhook_secret changed"]
        await send(2)
        after = await new_rcv.wait_hits(2)
        assert all(h.signed_by(NEW_SECRET) and not h.signed_by(SECRET) for h in after)
        assert {h.path for h in after} == {"/hooks/receipts"}

        # The receiver refuses: two rows wait in the backlog, tried again every 100-200 ms.
        new_rcv.answers = [503] * 10_000
        await send(2)
        await wait_for(lambda: backlog_rows(tmp_path) == 2 and len(new_rcv.hits) >= 5, what="two rows refused")
        write(None, NEW_SECRET)  # the URL removed: deliveries stop, the rows stay
        outcome, _ = await d.reload()
        assert outcome["event"] == "reload_done", outcome
        hits_then = len(new_rcv.hits)
        # Receipts while no URL is set make no row (nobody subscribes); they still wait for
        # the partner in the SMPP outbox. By the time they are there (many retries' worth),
        # the two rows are still in the backlog and at most one request was under way.
        await send(2)
        await wait_for(lambda: table_rows(tmp_path, "outbox") == 8, what="the receipts in the outbox")
        assert backlog_rows(tmp_path) == 2 and len(new_rcv.hits) <= hits_then + 1

        new_rcv.answers = []
        write(new_rcv.url("/hooks/receipts"), NEW_SECRET)  # back: what waited goes out
        outcome, _ = await d.reload()
        assert outcome["event"] == "reload_done", outcome
        await wait_for(lambda: backlog_rows(tmp_path) == 0, what="the backlog emptied")
        got = [h.json["message_id"] for h in old_rcv.acknowledged() + new_rcv.acknowledged()]
        assert sorted(got) == sorted(submitted[:6]) and len(set(got)) == 6  # each once, none lost
        log = d.log.read_text(encoding="utf-8")
        assert FR not in log and NEW_SECRET not in log and SECRET not in log and "/hooks" not in log
    finally:
        await old_rcv.stop()
        await new_rcv.stop()
