"""STOP replies, the blacklist and MO routing, end to end (issue 5).

The real ``Daemon`` runs in-process on a temp SQLite file, between peers we did not write:
partners bound with ``smpplib`` (and ``smpp34.Client``), and ``smpp34.Server`` as the upstream
SMSC, whose ``Esme.deliver_sm`` injects the MO. Everything on 127.0.0.1. What is proved:

1. the issue's scenario: marketing from an alphanumeric sender, "Stop" to the shared short
   code, the blacklist entry (a keyed hash, no number), the confirmation SMS upstream, the STOP
   MO at the partner (service_type "STOP"), 0x400 for the next marketing while an alert goes
   through; a second STOP the same day sends no second confirmation; nothing of the number in
   clear in the logs;
2. attribution: a dedicated short code's owner; both accounts that sent marketing through the
   shared code (one confirmation, both partners get the MO); nobody → a platform-level entry
   ("sc:36180") that blocks every account's marketing from alphanumeric senders, not from
   their own short codes, nor alerts;
3. MO routing by first keyword on a shared code, by owner on a dedicated code, held while the
   partner is unbound and delivered when it binds;
4. a 3-part concatenated MO sent in reverse order arrives whole, and each part's
   deliver_sm_resp waits until the whole message is stored;
5. bad input (unknown short code, binary data_coding, empty text, a source that does not
   parse, STOP to an unknown short code): stored as unroutable with its reason, answered
   ESME_ROK, masked in the logs, listed by ``smscenter mo list``;
6. a number the upstream refuses with RINVDSTADR is refused at submit next time; opt-outs and
   the invalid list survive a daemon restart.
"""

from __future__ import annotations

import asyncio

import pytest

from smscenter.config import load_settings
from smscenter.runtime.timers import FakeTimers
from storage.schema import blacklist, invalid_numbers, messages, mo_messages, outbox
from tests.integration.mt_fixtures import (  # noqa: F401 - mt is a fixture
    TUESDAY_MORNING,
    Harness,
    count_rows,
    mt,
    port_of,
    rows,
    wait_for,
)
from tests.integration.optout_fixtures import (  # noqa: F401 - captured_logs is a fixture
    BE_CONFIRMATION,
    SHARED,
    STOP_CONFIRMATION,
    SmpplibPartner,
    captured_logs,
    config_data,
    inject_mo,
    log_events,
    run_cli,
    upstream_esme,
    write_config,
)
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(60)

NUMBER = "+33612345678"
DIGITS = "33612345678"
OPTED_OUT = 0x400
RINVDSTADR = 0x0B


async def start(mt: Harness, tmp_path, password_hashes, timers=None, **config):
    """Upstream peer + config file + daemon (on ``timers`` if given: virtual time).
    Returns (upstream, daemon, settings, config path)."""
    up = await mt.upstream()
    path = write_config(tmp_path, config_data(password_hashes, up.port, **config))
    settings = load_settings(path)
    d = await mt.daemon(settings, timers=timers)
    return up, d, settings, path


async def smpplib_partner(mt: Harness, d, system_id: str = "acme") -> SmpplibPartner:
    p = await SmpplibPartner(port_of(d), system_id).connect()
    mt.partners.append(p)
    return p


def confirmations(up, short_code: str = SHARED) -> list:
    return [s for s in up.submits if s.source_addr == short_code]


def entries(settings) -> set[tuple[str, bytes]]:
    return {(r["scope"], r["dest_hash"]) for r in rows(settings, blacklist)}


# --------------------------------------------------------------------------- 1. the scenario


async def test_stop_end_to_end(mt, tmp_path, password_hashes, captured_logs):
    up, d, settings, _ = await start(mt, tmp_path, password_hashes)
    acme = await smpplib_partner(mt, d)
    number_hash = d.cipher.lookup_hash(NUMBER)

    # Marketing from the alphanumeric sender (the account's default category).
    status, message_id = await acme.submit(DIGITS, b"Soldes: -20% ce week-end", source="ACME")
    assert status == 0 and message_id.isdigit()

    # The subscriber answers "Stop" to the shared short code; we acknowledge once stored.
    assert await inject_mo(up, b"Stop", source=DIGITS, short_code=SHARED) == 0

    # The blacklist: acme's entry, a 16-byte keyed hash, nothing of the number.
    [entry] = rows(settings, blacklist)
    assert (entry["scope"], entry["dest_hash"]) == ("acme", number_hash)
    assert entry["source"] == "stop" and len(entry["dest_hash"]) == 16
    assert not any(DIGITS in str(v) or DIGITS.encode() in (v if isinstance(v, bytes) else b"") for v in entry.values())
    [mo] = rows(settings, mo_messages)
    assert (mo["status"], mo["account"], mo["short_code"], mo["reason"]) == ("optout", "acme", SHARED, "STOP")

    # The confirmation SMS goes upstream from the short code, once.
    [conf] = await wait_for(lambda: confirmations(up), 5, what="confirmation upstream")
    assert conf.destination_addr == DIGITS
    assert conf.short_message == STOP_CONFIRMATION.encode()
    assert conf.registered_delivery == 1  # we always track delivery upstream
    assert conf.source_ton_npi == (3, 0)  # the connector's default for short codes
    [conf_row] = [m for m in rows(settings, messages) if m["source_addr"] == SHARED]
    # Not billed to the partner (the platform's own account), an alert, no partner receipt.
    assert (conf_row["account"], conf_row["category"], conf_row["registered_delivery"]) == ("", "alert", 0)

    # The partner receives the STOP MO, marked as an opt-out.
    [got] = await acme.mos(1)
    assert (got.service_type, got.source_addr, got.destination_addr, got.text) == ("STOP", DIGITS, SHARED, b"Stop")

    # Marketing to that number is refused with 0x400; an alert goes through.
    assert (await acme.submit(DIGITS, b"Derniers jours!", source="ACME"))[0] == OPTED_OUT
    status, _ = await acme.submit(DIGITS, b"Votre colis arrive demain", source="ACME", service_type="ALERT")
    assert status == 0
    await wait_for(lambda: any(s.short_message == b"Votre colis arrive demain" for s in up.submits), 5,
                   what="the alert upstream")
    assert not any(s.short_message == b"Derniers jours!" for s in up.submits)

    # A second STOP the same day: stored and forwarded, no second confirmation.
    assert await inject_mo(up, b" stop sms ", source=DIGITS, short_code=SHARED) == 0
    second = (await acme.mos(2))[1]
    assert second.service_type == "STOP"
    await asyncio.sleep(0.5)
    assert len(confirmations(up)) == 1
    assert count_rows(settings, mo_messages) == 2 and count_rows(settings, blacklist) == 1

    # The logs show the number masked, never whole (nor its national digits).
    text = captured_logs.getvalue()
    assert DIGITS not in text and "612345678" not in text
    stored = [e for e in log_events(captured_logs) if e.get("event") == "mo_stored"]
    assert len(stored) == 2 and all(e["msisdn"] == "+336****78" for e in stored)


# --------------------------------------------------------------------------- 2. attribution


async def test_dedicated_short_code_goes_to_its_owner(mt, tmp_path, password_hashes):
    accounts = [
        {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": ["38100"]},
        {"system_id": "beta", "sender_ids": ["BETA"], "short_codes": [SHARED]},
    ]
    up, d, settings, _ = await start(mt, tmp_path, password_hashes, accounts=accounts)
    acme = await smpplib_partner(mt, d)
    beta = await smpplib_partner(mt, d, "beta")
    # beta sent marketing to the number, acme never did: a STOP on acme's own code is acme's.
    assert (await beta.submit(DIGITS, b"Promo beta", source="BETA"))[0] == 0

    assert await inject_mo(up, b"ARRET svp", source=DIGITS, short_code="38100") == 0
    assert entries(settings) == {("acme", d.cipher.lookup_hash(NUMBER))}
    [conf] = await wait_for(lambda: confirmations(up, "38100"), 5, what="confirmation from 38100")
    assert conf.destination_addr == DIGITS
    [got] = await acme.mos(1)
    assert (got.service_type, got.destination_addr) == ("STOP", "38100")

    # acme may no longer send it marketing (from any sender); beta still may.
    assert (await acme.submit(DIGITS, b"Promo", source="38100"))[0] == OPTED_OUT
    assert (await acme.submit(DIGITS, b"Promo", source="ACME"))[0] == OPTED_OUT
    assert (await beta.submit(DIGITS, b"Promo beta 2", source="BETA"))[0] == 0
    assert beta.received == []


async def test_shared_short_code_goes_to_every_recent_marketing_sender(mt, tmp_path, password_hashes):
    up, d, settings, _ = await start(mt, tmp_path, password_hashes)
    acme = await smpplib_partner(mt, d)
    beta = await smpplib_partner(mt, d, "beta")
    assert (await acme.submit(DIGITS, b"Promo acme", source="ACME"))[0] == 0
    assert (await beta.submit(DIGITS, b"Promo beta", source="BETA"))[0] == 0

    assert await inject_mo(up, "Désinscription".encode("latin-1"), source=DIGITS, data_coding=3) == 0
    number_hash = d.cipher.lookup_hash(NUMBER)
    assert entries(settings) == {("acme", number_hash), ("beta", number_hash)}
    # Both CRMs hear of it; the subscriber gets one confirmation, not one per account.
    [a] = await acme.mos(1)
    [b] = await beta.mos(1)
    assert a.service_type == b.service_type == "STOP"
    await wait_for(lambda: confirmations(up), 5, what="confirmation")
    await asyncio.sleep(0.3)
    assert len(confirmations(up)) == 1
    assert (await acme.submit(DIGITS, b"Promo", source="ACME"))[0] == OPTED_OUT
    assert (await beta.submit(DIGITS, b"Promo", source="BETA"))[0] == OPTED_OUT


async def test_shared_short_code_with_nobody_recent_is_platform_level(mt, tmp_path, password_hashes):
    accounts = [
        {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": [SHARED, "38100"]},
        {"system_id": "beta", "sender_ids": ["BETA"], "short_codes": [SHARED]},
    ]
    up, d, settings, _ = await start(mt, tmp_path, password_hashes, accounts=accounts)
    acme = await smpplib_partner(mt, d)
    beta = await smpplib_partner(mt, d, "beta")
    belgian, belgian_digits = "+32470123456", "32470123456"

    assert await inject_mo(up, b"STOP", source=belgian_digits) == 0
    assert entries(settings) == {(f"sc:{SHARED}", d.cipher.lookup_hash(belgian))}
    [mo] = rows(settings, mo_messages)
    assert (mo["status"], mo["account"]) == ("optout", None)
    [conf] = await wait_for(lambda: confirmations(up), 5, what="confirmation")
    assert conf.short_message == BE_CONFIRMATION.encode()  # the per-country text

    # Every account's marketing from alphanumeric senders or the shared code respects it …
    assert (await acme.submit(belgian_digits, b"Promo", source="ACME"))[0] == OPTED_OUT
    assert (await beta.submit(belgian_digits, b"Promo", source="BETA"))[0] == OPTED_OUT
    assert (await beta.submit(belgian_digits, b"Promo", source=SHARED))[0] == OPTED_OUT
    # … not acme's own short code (the STOP was not sent to it), nor alerts.
    assert (await acme.submit(belgian_digits, b"Promo", source="38100"))[0] == 0
    assert (await beta.submit(belgian_digits, b"Code: 1234", source="BETA", service_type="ALERT"))[0] == 0
    # Nobody's MO: no partner gets it.
    await asyncio.sleep(0.3)
    assert acme.received == [] and beta.received == []


# --------------------------------------------------------------------------- 3. MO routing


async def test_mo_routing_by_keyword_and_owner_held_while_unbound(mt, tmp_path, password_hashes):
    accounts = [
        {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": [SHARED, "38100"], "keywords": ["PIZZA"]},
        {"system_id": "beta", "sender_ids": ["BETA"], "short_codes": [SHARED], "keywords": ["METEO"]},
    ]
    up, d, settings, _ = await start(mt, tmp_path, password_hashes, accounts=accounts)
    acme = await smpplib_partner(mt, d)  # beta is not bound yet

    assert await inject_mo(up, "Météo Nice".encode("latin-1"), source=DIGITS, data_coding=3) == 0
    assert await inject_mo(up, b"pizza 2 margherita", source=DIGITS) == 0
    assert await inject_mo(up, b"Bonjour", source="33698765432", short_code="38100") == 0
    assert await inject_mo(up, b"Bonjour", source=DIGITS) == 0  # no account has that keyword

    got = await acme.mos(2)
    assert sorted((m.destination_addr, m.text, m.service_type) for m in got) == [
        ("36180", b"pizza 2 margherita", ""),
        ("38100", b"Bonjour", ""),
    ]
    by_status = sorted((r["status"], r["account"] or "", r["reason"]) for r in rows(settings, mo_messages))
    assert by_status == [
        ("routed", "acme", "keyword"),
        ("routed", "acme", "short code"),
        ("routed", "beta", "keyword"),
        ("unroutable", "", "no account for this keyword"),
    ]

    # beta's MO waited in its outbox; it arrives when beta binds.
    assert count_rows(settings, outbox) == 1
    beta = await smpplib_partner(mt, d, "beta")
    [m] = await beta.mos(1)
    assert (m.source_addr, m.destination_addr, m.data_coding, m.text) == (
        DIGITS, SHARED, 3, "Météo Nice".encode("latin-1"))
    await wait_for(lambda: count_rows(settings, outbox) == 0, 5, what="outbox emptied")


# --------------------------------------------------------------------------- 4. concatenated MO


async def test_concatenated_mo_in_reverse_order_arrives_whole(mt, tmp_path, password_hashes):
    up, d, settings, _ = await start(mt, tmp_path, password_hashes,
                                     accounts=[{"system_id": "acme", "sender_ids": ["ACME"], "short_codes": ["38100"]}])
    acme = await smpplib_partner(mt, d)
    texts = [bytes([ord("a") + i]) * 120 for i in range(3)]  # 360 octets in all: message_payload

    def part(seq: int) -> bytes:
        return bytes([0x05, 0x00, 0x03, 0x2A, 0x03, seq]) + texts[seq - 1]

    esme = await upstream_esme(up)

    def send(seq: int):
        return asyncio.ensure_future(esme.deliver_sm(
            "38100", part(seq), source_addr=DIGITS, source_addr_ton=1, source_addr_npi=1,
            dest_addr_ton=3, esm_class=0x40, data_coding=0x00))

    third, second = send(3), send(2)
    await asyncio.sleep(0.5)
    # Not acknowledged, nothing stored, nothing delivered while parts are missing.
    assert not third.done() and not second.done()
    assert count_rows(settings, mo_messages) == 0 and acme.received == []

    first = send(1)
    results = await asyncio.wait_for(asyncio.gather(third, second, first), PATIENCE)
    assert [r.command_status for r in results] == [0, 0, 0]
    # Acknowledged after the commit: the row is there by the time the acks arrived.
    [mo] = rows(settings, mo_messages)
    assert (mo["status"], mo["account"]) == ("routed", "acme")

    [got] = await acme.mos(1)
    assert got.text == b"".join(texts)
    assert got.esm_class & 0x40 == 0  # delivered whole, without a UDH


async def test_incomplete_concatenated_mo_is_stored_and_acknowledged_after_the_timeout(mt, tmp_path, password_hashes):
    """On virtual time: held (unanswered) until mo_reassembly_timeout, then stored as
    incomplete and both parts acknowledged."""
    timers = FakeTimers(TUESDAY_MORNING)
    up, d, settings, _ = await start(mt, tmp_path, password_hashes, timers=timers,
                                     optout={"mo_reassembly_timeout": "30s"},
                                     accounts=[{"system_id": "acme", "sender_ids": ["ACME"], "short_codes": ["38100"]}])
    esme = await upstream_esme(up)
    parts = [
        asyncio.ensure_future(esme.deliver_sm(
            "38100", bytes([0x05, 0x00, 0x03, 0x2B, 0x03, seq]) + b"x" * 50, source_addr=DIGITS,
            source_addr_ton=1, source_addr_npi=1, dest_addr_ton=3, esm_class=0x40, data_coding=0x00))
        for seq in (1, 3)  # part 2 never comes
    ]
    await wait_for(lambda: sum(len(h) for h in d.mo._held.values()) == 2, 5, what="both parts held")
    await timers.advance(29)
    assert not any(p.done() for p in parts), "answered before the reassembly timeout"
    assert rows(settings, mo_messages) == []
    await timers.advance(2)
    results = await asyncio.wait_for(asyncio.gather(*parts), PATIENCE)
    assert [r.command_status for r in results] == [0, 0]  # answered once stored, not left hanging
    [mo] = rows(settings, mo_messages)
    assert (mo["status"], mo["reason"]) == ("unroutable", "incomplete concatenated message")


# --------------------------------------------------------------------------- 5. bad input


async def test_bad_mo_is_stored_acknowledged_masked_and_listed(mt, tmp_path, password_hashes, captured_logs):
    up, d, settings, path = await start(mt, tmp_path, password_hashes)
    acme = await smpplib_partner(mt, d)

    assert await inject_mo(up, b"Hello", source=DIGITS, short_code="39999") == 0
    assert await inject_mo(up, b"STOP", source=DIGITS, short_code="39999") == 0
    assert await inject_mo(up, b"\x01\x02\xff", source=DIGITS, data_coding=0x04) == 0
    assert await inject_mo(up, b"", source=DIGITS) == 0
    assert await inject_mo(up, b"  ", source=DIGITS) == 0
    assert await inject_mo(up, b"STOP", source="123", source_ton=1) == 0

    reasons = sorted((r["status"], r["reason"]) for r in rows(settings, mo_messages))
    assert reasons == sorted([
        ("unroutable", "unknown short code"),
        ("unroutable", "unknown short code"),
        ("unroutable", "binary data_coding"),
        ("unroutable", "empty text"),
        ("unroutable", "empty text"),
        ("unroutable", "source number does not parse"),
    ])
    # No opt-out from any of them, no confirmation, nothing for the partner.
    await asyncio.sleep(0.3)
    assert count_rows(settings, blacklist) == 0 and confirmations(up, "39999") == [] and confirmations(up) == []
    assert acme.received == []

    text = captured_logs.getvalue()
    assert DIGITS not in text and "612345678" not in text
    logged = [e for e in log_events(captured_logs) if e.get("event") == "mo_stored"]
    assert len(logged) == 6 and all(e["status"] == "unroutable" for e in logged)

    # The administrator sees them: senders by hash prefix (support), in clear when asked (dpo).
    listed = await run_cli("mo", "list", "-c", str(path))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[-1] == "6 MO (unroutable)"
    for reason in ("unknown short code", "binary data_coding", "empty text", "source number does not parse"):
        assert any(line.endswith(reason) for line in lines), (reason, lines)
    hashes = {bytes(r["source_hash"]).hex()[:12] for r in rows(settings, mo_messages) if r["source_hash"]}
    assert DIGITS not in listed.stdout and hashes and all(h in listed.stdout for h in hashes)
    clear = await run_cli("mo", "list", "-c", str(path), "--show-numbers", "--limit", "2")
    assert clear.returncode == 0, clear.stderr
    assert clear.stdout.splitlines()[-1] == "2 MO (unroutable)"
    assert "123" in clear.stdout or DIGITS in clear.stdout


# --------------------------------------------------------------------------- 6. invalid, restart


async def test_invalid_numbers_and_optouts_survive_restart(mt, tmp_path, password_hashes):
    up, d, settings, _ = await start(mt, tmp_path, password_hashes)
    acme = await smpplib_partner(mt, d)
    invalid_digits = "33698765432"

    # The upstream says the number does not exist: next submits to it get RINVDSTADR.
    up.statuses = [RINVDSTADR]
    assert (await acme.submit(invalid_digits, b"Code 1234", source="ACME", service_type="ALERT"))[0] == 0
    await wait_for(lambda: any(s.status == RINVDSTADR for s in up.submits), 5, what="upstream refusal")
    await wait_for(lambda: count_rows(settings, invalid_numbers) == 1, 5, what="invalid_numbers row")
    assert (await acme.submit(invalid_digits, b"Code 5678", source="ACME", service_type="ALERT"))[0] == RINVDSTADR

    assert await inject_mo(up, b"STOP", source=DIGITS) == 0
    assert (await acme.submit(DIGITS, b"Promo", source="ACME"))[0] == OPTED_OUT

    await acme.close()
    await mt.stop_daemon(d)
    d2 = await mt.daemon(settings)
    acme2 = await smpplib_partner(mt, d2)
    assert (await acme2.submit(DIGITS, b"Promo", source="ACME"))[0] == OPTED_OUT
    assert (await acme2.submit(DIGITS, b"Info", source="ACME", service_type="ALERT"))[0] == 0
    assert (await acme2.submit(invalid_digits, b"Code", source="ACME", service_type="ALERT"))[0] == RINVDSTADR
