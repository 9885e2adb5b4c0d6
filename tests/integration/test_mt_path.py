"""The durable MT path, end to end, with the real ``Daemon`` in-process on a temp SQLite file.

On the wire, peers we did not write: ``smpp34.Client`` and ``smpplib`` as partners,
``smpp34.Server`` as the upstream SMSC (see ``mt_fixtures.py``), and hand-packed bytes for
query_sm / cancel_sm / replace_sm / submit_multi. What is proved:

1. hex/decimal id mix-ups upstream (both ways) still bring the partner a receipt with our
   decimal id in the text ``id:`` and in ``receipted_message_id``;
2. a receipt arriving before its submit_sm_resp still reaches the partner;
3. an offline partner gets every held receipt when it binds, also across a daemon restart
   and hours later (the outbox's clock moved on);
4. a 400-character message_payload goes upstream as 3 UDH parts; one receipt once all parts
   are final, or one per part when the account asks;
5. query_sm / cancel_sm on our ids, with their error statuses;
6. bad input gets its status and nothing is stored;
7. no phone number or message text in clear in the database files; keys are 0600;
8. one account's messages to one number keep their order, other numbers go meanwhile;
9. failover to the next connector when one is down or answers a temporary error;
10. temporary upstream errors are retried, permanent ones end in a REJECTD receipt, and a
    message that cannot be sent before its validity ends gets an EXPIRED receipt.

Also: data_sm, a too-long short_message split (not truncated), a scheduled message keeping
its validity, refused receipts retried after a pause (not in a loop), receipts in flight on
a lost bind re-sent on the other bind, and a control showing the id mode matters. Receipt
counts are exact: a duplicate receipt fails the test.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path

import pytest
import smpp34

from protocol.constants import CommandStatus as S
from protocol.constants import MessageState
from protocol.text import UnsupportedDataCoding
import smscenter.pipeline.dispatch as dispatch
from smscenter.smpp.connector import CONGESTION_RETRIES
from smscenter.runtime.timers import FakeTimers
from storage.crypto import KEY_CHECK_INTERVAL
from storage.schema import early_receipts, messages, outbox, parts
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings are fixtures
    HOST,
    PARTNER_PASSWORDS,
    TUESDAY_MORNING,
    RawPartner,
    Submitted,
    connector_entry,
    count_rows,
    db_path,
    free_port,
    mt,
    mt_settings,
    port_of,
    query_resp_fields,
    rows,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
DEST = "+33612345678"
DEST_DIGITS = "33612345678"


def tlv(tag: int, value: bytes) -> smpp34.Tlv:
    return smpp34.Tlv(tag, value)


def message_row(settings, message_id: str) -> dict:
    found = [r for r in rows(settings, messages) if r["id"] == int(message_id)]
    assert found, f"message {message_id} not stored"
    return found[0]


def assert_our_id(message_id: str | None) -> str:
    assert message_id and message_id.isdigit() and len(message_id) <= 20, message_id
    assert int(message_id) < 2**63
    return message_id


# --------------------------------------------------------------------------- 1. end to end


@pytest.mark.parametrize(
    "resp_ids, receipt_ids, mode, stat_sent, receipt_tlvs",
    [
        ("hex", "decimal", "hex-to-decimal", "DELIVRD", False),
        ("decimal", "hex", "decimal-to-hex", "UNDELIV", True),
    ],
    ids=["hex-resp-decimal-receipt", "decimal-resp-hex-receipt"],
)
async def test_end_to_end_receipt_carries_our_id(mt, mt_settings, resp_ids, receipt_ids, mode, stat_sent,
                                                 receipt_tlvs):
    up = await mt.upstream(resp_ids=resp_ids, receipt_ids=receipt_ids, stat=stat_sent, receipt_tlvs=receipt_tlvs)
    settings = mt_settings([connector_entry("op", up.port, mode)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d, "acme", "TRX")

    sent = []
    for i in range(3):
        resp = await partner.submit(DEST, b"Hello %d" % i)
        assert resp.command_status == S.ESME_ROK
        sent.append(assert_our_id(resp.message_id))
    got = await partner.receipts(3)

    # Upstream saw our messages, with the number in international form.
    assert [s.destination_addr for s in up.submits] == [DEST_DIGITS] * 3
    assert [s.short_message for s in up.submits] == [b"Hello 0", b"Hello 1", b"Hello 2"]
    assert {(s.source_ton_npi, s.dest_ton_npi) for s in up.submits} == {((5, 0), (1, 1))}  # alphanumeric sender
    # The hex/decimal mix-up is real on the wire: the two ids differ as strings.
    for sub in up.submits:
        assert sub.upstream_id is not None
        if resp_ids == "hex":
            assert sub.upstream_id == format(sub.number, "X") and not sub.upstream_id.isdigit()
        else:
            assert sub.upstream_id == str(sub.number)
    assert await up.receipt_answers(3) == [S.ESME_ROK] * 3

    assert sorted(r.id for r in got) == sorted(sent)
    for r in got:
        assert r.esm_class == 0x04
        assert r.tlv_id == r.id  # text id: and receipted_message_id agree
        assert r.stat == stat_sent
    expected_state = MessageState.DELIVERED if stat_sent == "DELIVRD" else MessageState.UNDELIVERABLE
    for message_id in sent:
        assert message_row(settings, message_id)["state"] == expected_state
    await wait_for(lambda: count_rows(settings, outbox) == 0, what="outbox emptied after the partner's acks")
    assert count_rows(settings, early_receipts) == 0


async def test_end_to_end_with_smpplib_partner(mt, mt_settings):
    """smpplib (the library many partners use), blocking, in a thread: TRX bind, submit,
    receipt with our id."""
    smpplib_client = pytest.importorskip("smpplib.client")
    import smpplib.consts

    up = await mt.upstream(resp_ids="hex", receipt_ids="decimal", stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port, "hex-to-decimal")])
    d = await mt.daemon(settings)
    port = port_of(d)

    def run() -> tuple[str, list]:
        client = smpplib_client.Client(HOST, port, timeout=5)
        sent_ids: list[str] = []
        receipts: list = []
        client.set_message_sent_handler(lambda pdu: sent_ids.append(pdu.message_id.decode()))
        client.set_message_received_handler(lambda pdu: receipts.append(pdu))
        client.connect()
        try:
            client.bind_transceiver(system_id="acme", password=PARTNER_PASSWORDS["acme"])
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="ACME",
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr=DEST_DIGITS,
                short_message=b"Hello smpplib", registered_delivery=1,
            )
            deadline = time.monotonic() + 10
            while (not sent_ids or not receipts) and time.monotonic() < deadline:
                client.read_once()
            client.unbind()
        finally:
            client.disconnect()
        return sent_ids[0], receipts

    our_id, receipts = await asyncio.to_thread(run)
    assert_our_id(our_id)
    assert len(receipts) == 1
    pdu = receipts[0]
    assert pdu.esm_class & 0x04
    assert f"id:{our_id} ".encode() in pdu.short_message
    assert b"stat:DELIVRD" in pdu.short_message
    assert pdu.receipted_message_id.rstrip(b"\0").decode() == our_id
    assert await up.receipt_answers(1) == [S.ESME_ROK]


async def test_wrong_id_mode_would_lose_the_receipt(mt, mt_settings):
    """Control for test 1: with ``as-is`` ids a hex/decimal mix-up does not correlate (the
    receipt is kept as unmatched, acknowledged upstream), so test 1 proves the mode works."""
    up = await mt.upstream(resp_ids="hex", receipt_ids="decimal", stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port, "as-is")])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    assert (await partner.submit(DEST)).command_status == S.ESME_ROK
    await wait_for(lambda: up.receipt_results == [S.ESME_ROK])
    await asyncio.sleep(0.2)
    assert partner.received == []
    assert count_rows(settings, early_receipts) == 1


async def test_data_sm_is_accepted_like_submit_sm(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    rx = await mt.partner(d, "acme", "RX")
    raw = await mt.raw(d, "acme")
    resp = await raw.data_sm(DEST_DIGITS, b"Hello by data_sm")
    assert resp.command_id == 0x80000103 and resp.status == S.ESME_ROK
    our_id = assert_our_id(resp.cstrings()[0].decode())
    got = await rx.receipts(1)
    assert got[0].id == our_id and got[0].stat == "DELIVRD"
    assert [s.short_message for s in up.submits] == [b"Hello by data_sm"]


# --------------------------------------------------------------------------- 2. early receipts


async def test_receipt_before_submit_resp_reaches_partner(mt, mt_settings):
    up = await mt.upstream(resp_ids="hex", receipt_ids="decimal", stat="DELIVRD", early=True)
    settings = mt_settings([connector_entry("op", up.port, "hex-to-decimal")])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    ids = []
    for i in range(3):
        resp = await partner.submit(DEST, b"early %d" % i)
        ids.append(assert_our_id(resp.message_id))
    got = await partner.receipts(3)
    assert sorted(r.id for r in got) == sorted(ids)
    assert all(r.tlv_id == r.id and r.stat == "DELIVRD" and r.esm_class == 0x04 for r in got)
    # The receipts really came first: each was acknowledged before its submit was answered.
    assert up.receipt_results == [S.ESME_ROK] * 3
    assert d.deliveries.stats["early"] == 3
    assert count_rows(settings, early_receipts) == 0  # matched and removed
    for message_id in ids:
        assert message_row(settings, message_id)["state"] == MessageState.DELIVERED


# --------------------------------------------------------------------------- 3. offline partner


async def test_offline_partner_gets_held_receipts_when_it_binds(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    tx = await mt.partner(d, "acme", "TX")
    ids = [assert_our_id((await tx.submit(DEST, b"held %d" % i)).message_id) for i in range(5)]
    await wait_for(lambda: len(up.receipt_results) == 5, what="upstream receipts acknowledged")
    assert up.receipt_results == [S.ESME_ROK] * 5
    # Stored, waiting: nobody can receive them.
    await wait_for(lambda: count_rows(settings, outbox) == 5, what="5 receipts in the outbox")
    await asyncio.sleep(0.3)
    assert count_rows(settings, outbox) == 5
    assert tx.received == []
    assert {r["message_id"] for r in rows(settings, outbox)} == {int(i) for i in ids}

    rx = await mt.partner(d, "acme", "RX")
    got = await rx.receipts(5)
    assert sorted(r.id for r in got) == sorted(ids)
    assert all(r.stat == "DELIVRD" and r.tlv_id == r.id for r in got)
    await wait_for(lambda: count_rows(settings, outbox) == 0, what="outbox emptied")
    await asyncio.sleep(0.2)
    assert len(rx.received) == 5  # each once


async def test_held_receipts_survive_a_restart_and_hours(mt, mt_settings):
    up = await mt.upstream(stat="UNDELIV")
    settings = mt_settings([connector_entry("op", up.port)])
    timers = FakeTimers(TUESDAY_MORNING)
    d1 = await mt.daemon(settings, timers=timers)
    tx = await mt.partner(d1, "acme", "TX")
    ids = [assert_our_id((await tx.submit(DEST, b"restart %d" % i)).message_id) for i in range(4)]
    await wait_for(lambda: count_rows(settings, outbox) == 4, what="4 receipts held")
    await tx.close()
    await mt.stop_daemon(d1)
    assert count_rows(settings, outbox) == 4

    d2 = await mt.daemon(settings, timers=timers)
    # Five hours later: nothing in the outbox depends on time but its retention expiry.
    await timers.jump(5 * 3600)
    assert count_rows(settings, outbox) == 4
    rx = await mt.partner(d2, "acme", "RX")
    got = await rx.receipts(4)
    assert sorted(r.id for r in got) == sorted(ids)
    assert all(r.stat == "UNDELIV" for r in got)
    await wait_for(lambda: count_rows(settings, outbox) == 0, what="outbox emptied after restart")


async def test_refused_receipt_is_retried_later_not_at_once(mt, mt_settings):
    """A partner answering a receipt with an error gets it again after RETRY_DELAY — not in
    a tight loop — and it leaves the outbox only once acknowledged. On virtual time."""
    from smscenter.pipeline.outbox import RETRY_DELAY

    timers = FakeTimers(TUESDAY_MORNING)
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings, timers=timers)
    tx = await mt.partner(d, "acme", "TX")
    our_id = assert_our_id((await tx.submit(DEST, b"refuse the receipt")).message_id)
    await wait_for(lambda: count_rows(settings, outbox) == 1, what="receipt held")
    rx = await mt.raw(d, "acme", command_id=RawPartner.BIND_RX)
    cid, seq, body = await rx.read_request()
    assert cid == 0x00000005 and f"id:{our_id} ".encode() in body
    rx.answer(cid, seq, S.ESME_RX_T_APPN)
    await wait_for(lambda: d.outbox.stats["refused"] == 1, what="the refusal read")
    await timers.advance(RETRY_DELAY - 0.5)
    assert await rx.quiet() == [], "resent before RETRY_DELAY"
    await timers.advance(1.0)
    cid, seq, body = await rx.read_request(timeout=5)
    assert cid == 0x00000005 and f"id:{our_id} ".encode() in body
    rx.answer(cid, seq, S.ESME_ROK)
    await wait_for(lambda: count_rows(settings, outbox) == 0, what="acknowledged receipt deleted")
    await timers.advance(3 * RETRY_DELAY)
    assert await rx.quiet() == []  # and not sent a third time


async def test_receipt_in_flight_on_a_lost_bind_goes_to_the_other_bind(mt, mt_settings, monkeypatch):
    import smscenter.pipeline.outbox as outbox_module

    monkeypatch.setattr(outbox_module, "RETRY_DELAY", 30.0)  # so only the rescan can explain it
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    tx = await mt.partner(d, "acme", "TX")
    our_id = assert_our_id((await tx.submit(DEST, b"lost in flight")).message_id)
    await wait_for(lambda: count_rows(settings, outbox) == 1, what="receipt held")
    first = await mt.raw(d, "acme", command_id=RawPartner.BIND_RX)
    cid, _, body = await first.read_request()
    assert cid == 0x00000005 and f"id:{our_id} ".encode() in body
    second = await mt.partner(d, "acme", "RX")
    await asyncio.sleep(0.1)
    assert second.received == []
    await first.close()  # never answered: the receipt was in flight on this bind
    got = await second.receipts(1, timeout=3)
    assert got[0].id == our_id
    await wait_for(lambda: count_rows(settings, outbox) == 0, what="acknowledged on the second bind")


# --------------------------------------------------------------------------- 4. long messages

LONG_TEXT = ("Bonjour, ceci est un long message de test qui doit partir en trois parties. " * 6)[:400]


def udh_parts(up, dest: str) -> list:
    return [s for s in up.submits if s.destination_addr == dest]


@pytest.mark.parametrize("per_part", [False, True], ids=["one-receipt", "per-part-receipts"])
async def test_long_message_payload_three_parts(mt, mt_settings, per_part):
    assert len(LONG_TEXT) == 400
    up = await mt.upstream(stat=None)  # receipts sent by hand, part by part
    settings = mt_settings([connector_entry("op", up.port)],
                           accounts=[{"system_id": "acme", "per_part_receipts": per_part}, {"system_id": "beta"}])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    resp = await partner.submit(DEST, b"", tlvs=[tlv(smpp34.TLV_MESSAGE_PAYLOAD, LONG_TEXT.encode())])
    assert resp.command_status == S.ESME_ROK
    our_id = assert_our_id(resp.message_id)

    subs = await wait_for(lambda: len(up.accepted) == 3 and up.accepted, what="3 parts upstream")
    assert message_row(settings, our_id)["parts_total"] == 3
    bodies = []
    refs = set()
    for number, sub in enumerate(subs, start=1):
        assert sub.esm_class & 0x40, "UDHI set"
        udh = sub.short_message[:6]
        assert udh[:3] == b"\x05\x00\x03" and udh[4] == 3 and udh[5] == number
        refs.add(udh[3])
        bodies.append(sub.short_message[6:])
        assert not sub.tlvs.get(smpp34.TLV_MESSAGE_PAYLOAD)
    assert len(refs) == 1
    assert b"".join(bodies).decode("ascii") == LONG_TEXT

    # Parts 1 and 2 final.
    for sub in subs[:2]:
        assert await up.send_receipt(sub, "DELIVRD") == S.ESME_ROK
    if per_part:
        got = await partner.receipts(2)
        assert [r.part for r in got] == [1, 2]
        assert all(r.id == our_id == r.tlv_id and r.stat == "DELIVRD" for r in got)
    else:
        await asyncio.sleep(0.4)
        assert partner.received == []
        assert message_row(settings, our_id)["state"] == MessageState.ENROUTE
    # Part 3 final.
    assert await up.send_receipt(subs[2], "UNDELIV") == S.ESME_ROK
    if per_part:
        got = await partner.receipts(3)
        assert got[2].part == 3 and got[2].stat == "UNDELIV" and got[2].id == our_id
    else:
        got = await partner.receipts(1)
        assert len(got) == 1
        assert got[0].id == our_id == got[0].tlv_id
        assert got[0].stat == "UNDELIV"  # the worst outcome of the parts
    await asyncio.sleep(0.2)
    assert len(partner.received) == (3 if per_part else 1)
    assert message_row(settings, our_id)["state"] == MessageState.UNDELIVERABLE


async def test_long_short_message_is_split_not_truncated(mt, mt_settings):
    """A short_message of 200 GSM characters without UDH does not fit one SMS: it is split
    into UDH parts here rather than left for the upstream to refuse or truncate."""
    text = LONG_TEXT[:200].encode("ascii")
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    our_id = assert_our_id((await partner.submit(DEST, text)).message_id)
    got = await partner.receipts(1)
    assert got[0].id == our_id and got[0].stat == "DELIVRD"
    assert len(up.submits) == 2
    assert all(s.esm_class & 0x40 and s.short_message[:3] == b"\x05\x00\x03" for s in up.submits)
    assert b"".join(s.short_message[6:] for s in up.submits) == text


# --------------------------------------------------------------------------- 5. query / cancel


async def test_query_and_cancel(mt, mt_settings):
    up = await mt.upstream(stat=None)
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    raw = await mt.raw(d, "acme")
    other = await mt.raw(d, "beta")

    our_id = assert_our_id((await partner.submit(DEST, b"query me")).message_id)
    await wait_for(lambda: up.accepted, what="submitted upstream")
    q = await raw.query(our_id)
    assert q.status == S.ESME_ROK
    mid, final_date, state, _ = query_resp_fields(q)
    assert (mid, final_date, state) == (our_id, "", MessageState.ENROUTE)

    await up.send_receipt(up.accepted[0], "DELIVRD")
    await partner.receipts(1)
    q = await raw.query(our_id)
    mid, final_date, state, error = query_resp_fields(q)
    assert q.status == S.ESME_ROK and mid == our_id
    assert state == MessageState.DELIVERED and error == 0
    assert len(final_date) == 16 and final_date.endswith("+")

    # cancel_sm of a delivered message fails; of a scheduled one (+1 minute) succeeds.
    assert (await raw.cancel(our_id)).status == S.ESME_RCANCELFAIL
    scheduled = assert_our_id((await partner.submit(DEST, b"later", schedule_delivery_time="000000000100000R")).message_id)
    kept = assert_our_id((await partner.submit("+33698765432", b"later too",
                                               schedule_delivery_time="000000000100000R")).message_id)
    assert (await raw.cancel(scheduled)).status == S.ESME_ROK
    q = await raw.query(scheduled)
    assert q.status == S.ESME_ROK and query_resp_fields(q)[2] == MessageState.DELETED
    assert (await raw.cancel(scheduled)).status == S.ESME_RCANCELFAIL  # already cancelled
    # Two minutes later for the queue: the kept one goes, the cancelled one never does.
    d.dispatcher.clock = lambda: time.time() + 120
    d.dispatcher.poke()
    await wait_for(lambda: len(up.submits) == 2, what="the kept scheduled message sent")
    await asyncio.sleep(0.2)
    assert [s.short_message for s in up.submits] == [b"query me", b"later too"]
    q = await raw.query(kept)
    assert query_resp_fields(q)[2] == MessageState.ENROUTE

    # Ids that do not parse, unknown ids, another account's ids.
    assert (await raw.query("not-a-number")).status == S.ESME_RINVMSGID
    assert (await raw.query("1A2B")).status == S.ESME_RINVMSGID
    assert (await raw.query("")).status == S.ESME_RINVMSGID
    assert (await raw.cancel("xyz")).status == S.ESME_RINVMSGID
    assert (await raw.query("99999999999999999999")).status == S.ESME_RINVMSGID  # > 2**63
    assert (await raw.query("123456789012345678901")).status == S.ESME_RINVMSGID  # 21 digits
    assert (await raw.query("12345")).status == S.ESME_RQUERYFAIL
    assert (await other.query(our_id, source_addr="BETA")).status == S.ESME_RQUERYFAIL
    assert (await other.cancel(kept, source_addr="BETA")).status == S.ESME_RCANCELFAIL


async def test_scheduled_message_keeps_its_full_validity(mt, mt_settings):
    """No validity_period: the default validity counts from the scheduled time, so a message
    scheduled 3 days ahead does not expire before it could leave."""
    up = await mt.upstream(stat=None)
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    before = time.time()
    our_id = assert_our_id((await partner.submit(DEST, b"in 3 days", schedule_delivery_time="000003000000000R")).message_id)
    row = message_row(settings, our_id)
    assert row["not_before"] >= before + 3 * 86400 - 5
    assert row["expires_at"] > row["not_before"] + 24 * 3600
    # Three days later for the queue: it leaves, it does not expire.
    d.dispatcher.clock = lambda: time.time() + 3 * 86400 + 60
    d.dispatcher.poke()
    await wait_for(lambda: up.accepted, what="the scheduled message sent")
    assert message_row(settings, our_id)["state"] == MessageState.ENROUTE


# --------------------------------------------------------------------------- 6. bad input


async def test_bad_input_gets_its_status_and_nothing_is_stored(mt, mt_settings):
    up = await mt.upstream(stat=None)
    settings = mt_settings(
        [connector_entry("op", up.port)],
        routes=[
            {"destinations": ["+32"], "connectors": ["op"]},
            {"destinations": ["+33"], "connectors": ["op"], "accounts": ["acme"]},
        ],
    )
    d = await mt.daemon(settings)
    acme = await mt.partner(d, "acme")
    beta = await mt.partner(d, "beta")
    raw = await mt.raw(d, "acme")

    payload = tlv(smpp34.TLV_MESSAGE_PAYLOAD, b"payload text")
    cases = {
        "unknown data_coding 0x05": dict(data_coding=0x05),
        "UDHI with a UDH longer than the message": dict(esm_class=0x40, text=b"\x05\x00\x03\x01"),
        "UDHI with an IE overrunning the UDH": dict(esm_class=0x40, text=b"\x03\x00\x05\x01abc"),
        "UDH concatenation part 3 of 2": dict(esm_class=0x40, text=b"\x05\x00\x03\x07\x02\x03abc"),
        "SAR segment 3 of 2": dict(tlvs=[tlv(smpp34.TLV_SAR_MSG_REF_NUM, b"\x00\x01"),
                                         tlv(smpp34.TLV_SAR_TOTAL_SEGMENTS, b"\x02"),
                                         tlv(smpp34.TLV_SAR_SEGMENT_SEQNUM, b"\x03")]),
        "SAR total 0": dict(tlvs=[tlv(smpp34.TLV_SAR_MSG_REF_NUM, b"\x00\x01"),
                                  tlv(smpp34.TLV_SAR_TOTAL_SEGMENTS, b"\x00"),
                                  tlv(smpp34.TLV_SAR_SEGMENT_SEQNUM, b"\x01")]),
        "SAR without its segment number": dict(tlvs=[tlv(smpp34.TLV_SAR_MSG_REF_NUM, b"\x00\x01"),
                                                     tlv(smpp34.TLV_SAR_TOTAL_SEGMENTS, b"\x02")]),
        "short_message and message_payload": dict(tlvs=[payload]),
        "message_payload with UDHI": dict(esm_class=0x40, text=b"", tlvs=[
            tlv(smpp34.TLV_MESSAGE_PAYLOAD, b"\x05\x00\x03\x01\x02\x01payload with a UDH")]),
        "UCS-2 text of odd length": dict(data_coding=0x08, text=b"\x00A\x00"),
        "validity in the past": dict(validity_period="200101000000000+"),
        "validity malformed": dict(validity_period="not a time at all"),
        "schedule in the past": dict(schedule_delivery_time="200101000000000+"),
        "schedule 2 months ahead": dict(schedule_delivery_time="000200000000000R"),
        "schedule years ahead": dict(schedule_delivery_time="050000000000000R"),
        "schedule malformed": dict(schedule_delivery_time="2601011200000000"),
        "invalid destination": dict(dest="123"),
        "destination with letters": dict(dest="+33 6 CALL ME"),
        "sender not allowed": dict(source_addr="EVIL"),
        "short code not the account's": dict(source_addr="36999"),
        "unknown service_type": dict(service_type="XYZ"),
    }
    expected = {
        "unknown data_coding 0x05": UnsupportedDataCoding.status,
        "UDHI with a UDH longer than the message": S.ESME_RINVESMCLASS,
        "UDHI with an IE overrunning the UDH": S.ESME_RINVESMCLASS,
        "UDH concatenation part 3 of 2": S.ESME_RINVESMCLASS,
        "SAR segment 3 of 2": S.ESME_RINVOPTPARAMVAL,
        "SAR total 0": S.ESME_RINVOPTPARAMVAL,
        "SAR without its segment number": S.ESME_RMISSINGOPTPARAM,
        "short_message and message_payload": S.ESME_ROPTPARNOTALLWD,
        "message_payload with UDHI": S.ESME_ROPTPARNOTALLWD,
        "UCS-2 text of odd length": S.ESME_RINVMSGLEN,
        "validity in the past": S.ESME_RINVEXPIRY,
        "validity malformed": S.ESME_RINVEXPIRY,
        "schedule in the past": S.ESME_RINVSCHED,
        "schedule 2 months ahead": S.ESME_RINVSCHED,
        "schedule years ahead": S.ESME_RINVSCHED,
        "schedule malformed": S.ESME_RINVSCHED,
        "invalid destination": S.ESME_RINVDSTADR,
        "destination with letters": S.ESME_RINVDSTADR,
        "sender not allowed": S.ESME_RINVSRCADR,
        "short code not the account's": S.ESME_RINVSRCADR,
        "unknown service_type": S.ESME_RINVSERTYP,
    }
    got = {}
    for name, case in cases.items():
        case = dict(case)
        dest = case.pop("dest", DEST)
        text = case.pop("text", b"some text")
        resp = await acme.submit(dest, text, **case)
        got[name] = resp.command_status
    got["no route (+33 for beta)"] = (await beta.submit(DEST, b"hi", source_addr="BETA")).command_status
    expected["no route (+33 for beta)"] = S.ESME_RSUBMITFAIL
    got["submit_multi to invalid numbers only"] = (await raw.submit_multi(["123", "456"])).status
    expected["submit_multi to invalid numbers only"] = S.ESME_RINVDSTADR
    got["replace_sm"] = (await raw.replace("12345")).status
    expected["replace_sm"] = S.ESME_RREPLACEFAIL

    assert {k: hex(v) for k, v in got.items()} == {k: hex(v) for k, v in expected.items()}
    assert count_rows(settings, messages) == 0
    assert count_rows(settings, parts) == 0
    assert count_rows(settings, outbox) == 0
    assert up.submits == []
    # The sessions survived every refusal, and a good message is then stored and sent.
    ok = await acme.submit(DEST, b"fine")
    assert ok.command_status == S.ESME_ROK
    beta_ok = await beta.submit("+32470123456", b"fine", source_addr="BETA")
    assert beta_ok.command_status == S.ESME_ROK
    assert count_rows(settings, messages) == 2
    await wait_for(lambda: len(up.submits) == 2, what="good messages sent")


# --------------------------------------------------------------------------- 7. privacy


async def test_database_files_hold_no_number_or_text_in_clear(mt, mt_settings):
    text = b"Rendez-vous chez le Dr Martin mardi"
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    tx = await mt.partner(d, "acme", "TX")  # receipts stay in the outbox
    trx = await mt.partner(d, "beta", "TRX")
    for _ in range(3):
        assert (await tx.submit(DEST, text)).command_status == S.ESME_ROK
    national = await trx.submit("0612345678", text, source_addr="BETA", dest_addr_ton=2, dest_addr_npi=1)
    assert national.command_status == S.ESME_ROK
    long_resp = await tx.submit(DEST, b"", tlvs=[tlv(smpp34.TLV_MESSAGE_PAYLOAD, text * 8)])
    assert long_resp.command_status == S.ESME_ROK
    await trx.receipts(1)
    await wait_for(lambda: count_rows(settings, outbox) == 4, what="acme's receipts held")
    # An upstream receipt nobody asked for is kept as unmatched (encrypted too).
    stray = Submitted(next(iter(up.esmes)), "33687654321", "ACME", b"", 0, 0, 1, {}, 0x777777)
    await up.send_receipt(stray, "DELIVRD")
    assert count_rows(settings, early_receipts) == 1
    await mt.stop_daemon(d)

    path = db_path(settings)
    blobs = {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}
    assert path.name in blobs
    # The scan reads the real data: what is stored in clear (the sender ID) is found.
    assert any(b"ACME" in blob for blob in blobs.values())
    needles = [b"612345678", b"687654321", DEST.encode(), b"0612345678", text, b"Rendez-vous",
               b"Dr Martin", text.decode().encode("utf-16-be")]
    for name, blob in blobs.items():
        for needle in needles:
            assert needle not in blob, f"{needle!r} in clear in {name}"

    keys = settings.storage.keys
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = [p for p in keys.iterdir() if p.is_file()]
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


async def test_a_key_rotated_beside_the_running_daemon_is_used_without_restart(mt, mt_settings):
    """``smscenter keys rotate`` while the daemon runs: within a second, new messages (the
    event loop encrypts them) and new receipts (the writer process does) use the new key;
    what the old key encrypted still decrypts, so the held receipts of both keys reach the
    partner when it binds."""
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    tx = await mt.partner(d, "acme", "TX")  # receipts stay in the outbox, to read their key id
    before = (await tx.submit(DEST, b"before the rotation")).message_id
    await wait_for(lambda: count_rows(settings, outbox) == 1, what="the first receipt held")

    rotate = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from storage.crypto import Keyring; print(Keyring.load(sys.argv[1]).rotate())",
        str(settings.storage.keys), stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert (await rotate.communicate())[0].strip() == b"2"
    await asyncio.sleep(KEY_CHECK_INTERVAL + 0.3)  # both processes' next look at the folder
    after = (await tx.submit(DEST, b"after the rotation")).message_id
    await wait_for(lambda: count_rows(settings, outbox) == 2, what="the second receipt held")

    def key_ids(message_id: str) -> tuple[int, int, int]:
        msg = message_row(settings, message_id)
        part = next(p for p in rows(settings, parts) if p["message_id"] == msg["id"])
        receipt = next(r for r in rows(settings, outbox) if r["message_id"] == msg["id"])
        return tuple(int.from_bytes(bytes(v)[1:3], "big") for v in (msg["dest_enc"], part["pdu_enc"], receipt["pdu_enc"]))

    assert key_ids(before) == (1, 1, 1)
    assert key_ids(after) == (2, 2, 2)  # dest and part: event loop; receipt: writer process
    rx = await mt.partner(d, "acme", "RX")
    got = await rx.receipts(2)
    assert sorted(r.id for r in got) == sorted([before, after]) and all(r.stat == "DELIVRD" for r in got)


# --------------------------------------------------------------------------- 8. ordering


async def test_order_per_number_kept_others_interleave(mt, mt_settings):
    """The partner writes 40 submit_sm back to back (one connection, a defined order): 20 to
    one number interleaved with 20 to other numbers. The upstream answers each after 20 ms."""
    up = await mt.upstream(stat=None, answer_delay=0.02)
    settings = mt_settings([connector_entry("op", up.port, window=10)])
    d = await mt.daemon(settings)
    raw = await mt.raw(d, "acme")
    batch = []
    for i in range(20):
        batch.append((DEST_DIGITS, b"same-%02d" % i))
        batch.append((f"336000000{i:02d}", b"other-%02d" % i))
    answers = await raw.submit_pipelined(batch)
    assert [a.status for a in answers] == [S.ESME_ROK] * 40
    await wait_for(lambda: len(up.accepted) == 40, timeout=10, what="40 submits upstream")

    same = [s.short_message for s in up.submits if s.destination_addr == DEST_DIGITS]
    assert same == [b"same-%02d" % i for i in range(20)]
    # Meanwhile the other numbers did not wait behind that line: the number's 20 messages
    # go one after the other (each waits for the previous answer), the others in parallel.
    order = [s.destination_addr for s in up.submits]
    last_same = max(i for i, dest in enumerate(order) if dest == DEST_DIGITS)
    others_before = sum(1 for dest in order[:last_same] if dest != DEST_DIGITS)
    assert others_before >= 15, order


async def test_a_queue_deeper_than_the_working_set_waits_in_the_database(mt, mt_settings):
    """``[queue] working_set = 100`` and 400 messages written at once (20 numbers × 20)
    faster than the upstream takes them: memory never holds more than the working set (the
    rest spills to the database and is loaded as it drains), each is sent once, and every
    number's messages go in the order written, across load boundaries."""
    from smscenter.config.sections import Queue

    up = await mt.upstream(stat=None, answer_delay=0.02)
    settings = mt_settings([connector_entry("op", up.port, window=5)])
    settings = settings.model_copy(update={"queue": Queue(working_set=100)})
    d = await mt.daemon(settings)
    raw = await mt.raw(d, "acme")
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, d.dispatcher.resident)
            await asyncio.sleep(0.001)

    sampler = asyncio.get_running_loop().create_task(sample())
    numbers = [f"3361{i:07d}" for i in range(20)]
    batch = [(number, b"%s-%02d" % (number.encode(), n)) for n in range(20) for number in numbers]
    answers = []
    for start in range(0, 400, 50):  # within the session's window
        answers += await raw.submit_pipelined(batch[start : start + 50])
    assert [a.status for a in answers] == [S.ESME_ROK] * 400
    await wait_for(lambda: len(up.accepted) == 400, timeout=20, what="400 submits upstream")
    sampling = False
    await sampler
    assert d.dispatcher.stats["spilled"] > 0
    assert d.dispatcher.stats["loaded"] > 0
    assert peak <= 100, peak
    for number in numbers:
        got = [s.short_message for s in up.submits if s.destination_addr == number]
        assert got == [b"%s-%02d" % (number.encode(), n) for n in range(20)], number
    await wait_for(lambda: d.dispatcher.queued == 0, what="the queue counted empty")


# --------------------------------------------------------------------------- 9. failover


async def test_failover_to_next_connector_when_first_is_down(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    closed_port = free_port()  # nothing listens there
    settings = mt_settings(
        [connector_entry("down", closed_port), connector_entry("up", up.port, dest_ton_npi=[0, 1])],
        routes=[{"destinations": ["+33"], "connectors": ["down", "up"]}],
    )
    d = await mt.daemon(settings, wait_up=("up",))
    assert not d.connectors["down"].is_up
    partner = await mt.partner(d)
    ids = [assert_our_id((await partner.submit(DEST, b"via up %d" % i)).message_id) for i in range(5)]
    got = await partner.receipts(5)
    assert sorted(r.id for r in got) == sorted(ids)
    assert len(up.accepted) == 5
    assert {s.dest_ton_npi for s in up.submits} == {(0, 1)}  # that connector's dest_ton_npi
    assert {r["connector"] for r in rows(settings, parts)} == {"up"}


async def test_failover_on_temporary_error(mt, mt_settings):
    flaky = await mt.upstream("flaky", stat="DELIVRD", first_number=0x100)
    up = await mt.upstream("up", stat="DELIVRD", first_number=0x900)
    flaky.statuses = [S.ESME_RSYSERR] * 3
    settings = mt_settings(
        [connector_entry("flaky", flaky.port), connector_entry("up", up.port)],
        routes=[{"destinations": ["+33"], "connectors": ["flaky", "up"]}],
    )
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    ids = [assert_our_id((await partner.submit(DEST, b"m%d" % i)).message_id) for i in range(3)]
    got = await partner.receipts(3)
    assert sorted(r.id for r in got) == sorted(ids)
    assert [s.status for s in flaky.submits] == [S.ESME_RSYSERR] * 3
    assert len(up.accepted) == 3
    # Went to the next connector at once, not after a retry wait (RETRY_MIN): none retried.
    assert d.dispatcher.stats["retried"] == 0


async def test_failover_when_a_connector_keeps_throttling(mt, mt_settings):
    """A connector answering ESME_RTHROTTLED to everything hands the message to the next
    connector of the route after a few tries, instead of holding it (and its number's
    line) forever."""
    busy = await mt.upstream("busy", stat="DELIVRD", first_number=0x100)
    up = await mt.upstream("up", stat="DELIVRD", first_number=0x900)
    busy.statuses = [S.ESME_RTHROTTLED] * 1000
    settings = mt_settings(
        [connector_entry("busy", busy.port), connector_entry("up", up.port)],
        routes=[{"destinations": ["+33"], "connectors": ["busy", "up"]}],
    )
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    our_id = assert_our_id((await partner.submit(DEST, b"throttled elsewhere")).message_id)
    [got] = await partner.receipts(1, timeout=8)
    assert got.id == our_id and got.stat == "DELIVRD"
    assert [s.status for s in busy.submits] == [S.ESME_RTHROTTLED] * (1 + CONGESTION_RETRIES)
    assert len(up.accepted) == 1
    assert {r["connector"] for r in rows(settings, parts)} == {"up"}


# --------------------------------------------------------------------------- 10. upstream errors


@pytest.fixture
def fast_retry(monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_MIN", 0.2)


async def test_temporary_error_retried_then_delivered(mt, mt_settings, fast_retry):
    up = await mt.upstream(stat="DELIVRD")
    up.statuses = [S.ESME_RSYSERR, S.ESME_RSYSERR]
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    our_id = assert_our_id((await partner.submit(DEST, b"retry me")).message_id)
    got = await partner.receipts(1)
    assert got[0].id == our_id and got[0].stat == "DELIVRD"
    assert [s.status for s in up.submits] == [S.ESME_RSYSERR, S.ESME_RSYSERR, 0]
    assert all(s.short_message == b"retry me" for s in up.submits)
    assert d.dispatcher.stats["retried"] == 2
    assert message_row(settings, our_id)["state"] == MessageState.DELIVERED


async def test_permanent_error_gives_rejected_receipt(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    up.statuses = [S.ESME_RINVDSTADR]
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    our_id = assert_our_id((await partner.submit(DEST, b"refused upstream")).message_id)
    got = await partner.receipts(1)
    assert got[0].id == our_id == got[0].tlv_id
    assert got[0].stat == "REJECTD"
    assert b"err:011" in got[0].text  # the upstream's status, 0x0B
    await asyncio.sleep(0.3)
    assert len(up.submits) == 1  # not retried
    row = message_row(settings, our_id)
    assert row["state"] == MessageState.REJECTED and row["error"] == S.ESME_RINVDSTADR


async def test_temporary_errors_until_validity_ends_give_expired_receipt(mt, mt_settings, fast_retry):
    up = await mt.upstream(stat="DELIVRD")
    up.statuses = [S.ESME_RSYSERR] * 100
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    partner = await mt.partner(d)
    our_id = assert_our_id((await partner.submit(DEST, b"too late", validity_period="000000000002000R")).message_id)
    got = await partner.receipts(1, timeout=8)
    assert got[0].id == our_id and got[0].stat == "EXPIRED"
    assert len(up.submits) >= 2 and all(s.status == S.ESME_RSYSERR for s in up.submits)
    assert message_row(settings, our_id)["state"] == MessageState.EXPIRED
