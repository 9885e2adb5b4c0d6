"""Webhooks end to end over real sockets (issue 16, items 2 and 3): a partner submits over
SMPP, the upstream (``SmscPeer``, smpp34) sends receipts and an MO, and the partner's HTTPS
receiver (``webhook_receiver.Receiver``, self-signed certificate trusted through the
account's ``webhook_ca``) gets them as signed JSON — while the SMPP outbox, the other
subscriber, still delivers the same receipts and MO to the bound partner.
"""

from __future__ import annotations

import pytest

from smscenter.config import ConfigError, settings_from_dict
from storage.schema import WEBHOOK_MO, WEBHOOK_RECEIPT, webhook_backlog
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings are fixtures
    connector_entry,
    mt,
    mt_settings,
    rows,
    wait_for,
)
from tests.integration.optout_fixtures import inject_mo, run_cli_here
from tests.integration.webhook_receiver import SECRET, Receiver, self_signed

SHORT_CODE = "38100"
DEST = "33612345678"


@pytest.fixture
async def receiver(tmp_path):
    cert, key = self_signed(tmp_path)
    rcv = await Receiver(cert, key).start()
    rcv.ca = cert  # type: ignore[attr-defined]
    try:
        yield rcv
    finally:
        await rcv.stop()


def webhook_account(rcv: Receiver, **extra) -> dict:
    return {
        "system_id": "acme", "short_codes": [SHORT_CODE],
        "receipt_url": rcv.url("/receipts"), "mo_url": rcv.url("/mo"),
        "webhook_secret": SECRET, "webhook_ca": str(rcv.ca), **extra,  # type: ignore[attr-defined]
    }


async def test_receipts_and_mo_reach_the_https_receiver_signed(mt, mt_settings, receiver, tmp_path):
    up = await mt.upstream(resp_ids="hex", receipt_ids="decimal")
    settings = mt_settings([connector_entry("up", up.port)], accounts=[webhook_account(receiver), {"system_id": "beta"}])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)

    ours = [(await partner.submit(DEST, b"Hello %d" % i)).message_id for i in range(2)]
    hits = await receiver.wait_hits(2)
    assert {h.path for h in hits} == {"/receipts"}
    assert all(h.signed_by(SECRET) for h in hits), [h.headers for h in hits]
    assert not any(h.signed_by("another-secret-xx") for h in hits)
    events = [h.json for h in hits]
    assert sorted(e["message_id"] for e in events) == sorted(ours)
    assert {(e["event"], e["state"], e["error"], e["part"]) for e in events} == {("receipt", "delivered", 0, None)}
    assert all(e["submitted_at"].endswith("Z") and e["done_at"].endswith("Z") for e in events)
    assert len({e["event_id"] for e in events}) == 2
    assert {h.headers["X-Smscenter-Event-Id"] for h in hits} == {e["event_id"] for e in events}
    # The SMPP outbox, the other subscriber, delivered the same receipts to the bound partner.
    got = await partner.receipts(2)
    assert sorted(r.id for r in got) == sorted(ours)
    # Acknowledged (200): nothing left in the backlog.
    await wait_for(lambda: not rows(settings, webhook_backlog), what="the backlog emptied")

    # An MO to the account's short code reaches its mo_url (and the bound partner).
    assert await inject_mo(up, b"Bonjour acme", source=DEST, short_code=SHORT_CODE) == 0
    [*_, mo] = await receiver.wait_hits(3)
    assert mo.path == "/mo" and mo.signed_by(SECRET)
    body = mo.json
    assert (body["event"], body["account"], body["short_code"], body["from"], body["text"], body["optout"]) == (
        "mo", "acme", SHORT_CODE, "+" + DEST, "Bonjour acme", False)
    await partner.receipts(3)  # the MO's deliver_sm, through the SMPP outbox
    assert d.webhooks.stats["delivered"] == 3
    await wait_for(lambda: not rows(settings, webhook_backlog), what="the backlog emptied")


async def test_backlog_rows_are_encrypted_and_wait_while_the_receiver_is_down(mt, mt_settings, receiver, tmp_path):
    """Rows commit with their cause, encrypted (no number, no text in the table); a receiver
    that refuses keeps them there; a receipt not asked for (registered_delivery 0) makes none."""
    up = await mt.upstream()
    receiver.answers = [503] * 50
    settings = mt_settings([connector_entry("up", up.port)], accounts=[
        webhook_account(receiver), {"system_id": "beta"}],
    )
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    [ours] = [(await partner.submit(DEST, b"secret text")).message_id]
    await partner.submit(DEST, b"no receipt wanted", registered_delivery=0)
    assert await inject_mo(up, b"Bonjour acme", source=DEST, short_code=SHORT_CODE) == 0
    await receiver.wait_hits(1)
    await wait_for(lambda: len(rows(settings, webhook_backlog)) == 2, what="two rows")
    stored = rows(settings, webhook_backlog)
    assert sorted(r["kind"] for r in stored) == [WEBHOOK_RECEIPT, WEBHOOK_MO]
    assert [r["message_id"] for r in stored if r["kind"] == WEBHOOK_RECEIPT] == [int(ours)]
    for row in stored:
        blob = row["payload_enc"]
        assert DEST.encode() not in blob and b"Bonjour" not in blob and b"receipt" not in blob
        assert d.cipher.decrypt(blob, b"webhook:%d" % row["id"]).startswith(b"{")
    await wait_for(lambda: d.webhooks.stats["refused"] >= 1, what="a refusal counted")
    assert d.webhooks.depth["acme"] == 2


async def test_non_https_url_is_refused_naming_the_key(password_hashes, tmp_path):
    base = {"system_id": "acme", "password": password_hashes["acme"], "webhook_secret": SECRET}
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"account": [
            {**base, "receipt_url": "https://hooks.example/r"},
            {**base, "system_id": "beta", "password": password_hashes["beta"]},
            {**base, "system_id": "gamma", "password": password_hashes["acme"], "mo_url": "http://hooks.example/mo"},
        ]}, base_dir=tmp_path)
    assert any(e.startswith("account[2].mo_url: must be an https:// URL") for e in err.value.errors), err.value.errors
    # http is for a loopback receiver only; and a URL needs a secret to sign with.
    settings_from_dict({"account": [{**base, "receipt_url": "http://127.0.0.1:8080/r"}]}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"account": [{"system_id": "acme", "password": password_hashes["acme"],
                                         "receipt_url": "https://hooks.example/r"}]}, base_dir=tmp_path)
    assert err.value.errors == ["account[0].webhook_secret: required when receipt_url is set (webhooks are signed)"]
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"account": [{**base, "receipt_url": "https://hooks.example/r", "webhook_secret": "short"}]},
                           base_dir=tmp_path)
    assert err.value.errors == ["account[0].webhook_secret: a webhook secret is a string of at least 16 characters"]


async def test_check_config_names_the_key(password_hashes, tmp_path):
    """``smscenter check-config`` on a file with a plain-http webhook URL: exit 1, the key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[storage]\nurl = "sqlite:///var/db.sqlite"\nkeys = "var/keys"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{password_hashes["acme"]}"\n'
        f'receipt_url = "http://hooks.example/receipts"\nwebhook_secret = "{SECRET}"\n'
    )
    done = await run_cli_here("check-config", "-c", str(cfg))  # check-config as a process: tests/unit/test_cli.py
    assert done.returncode != 0
    assert "account[0].receipt_url: must be an https:// URL" in done.stdout + done.stderr, done


async def test_a_stop_reaches_mo_url_flagged_and_leaves_as_an_opt_out_event(mt, mt_settings, receiver):
    up = await mt.upstream()
    settings = mt_settings([connector_entry("up", up.port)], accounts=[webhook_account(receiver), {"system_id": "beta"}])
    d = await mt.daemon(settings)
    seen = []

    class Recording:
        def take(self, event, backlog) -> None:
            seen.append(event)

    d.mo.events.subscribers += (Recording(),)
    assert await inject_mo(up, b"STOP", source=DEST, short_code=SHORT_CODE) == 0
    hits = {hit.json["event"]: hit for hit in await receiver.wait_hits(2)}
    body = hits["mo"].json
    assert (hits["mo"].path, body["optout"], body["text"], body["account"]) == ("/mo", True, "STOP", "acme")
    # The opt-out as its own event, to the same mo_url: the number, to suppress it.
    optout_body = hits["optout"].json
    assert hits["optout"].path == "/mo" and hits["optout"].signed_by()
    assert (optout_body["number"], optout_body["scope"], optout_body["source"]) == ("+" + DEST, "acme", "stop")
    [mo, optout] = seen
    assert type(mo).__name__ == "MoEvent" and mo.optout
    assert type(optout).__name__ == "OptOutEvent"
    assert (optout.account, optout.scope, optout.source, optout.number) == ("acme", "acme", "stop", "+" + DEST)
