"""submit_multi end to end over real sockets: the real ``Daemon`` in-process, the upstream an
``smpp34.Server`` (``mt_fixtures.SmscPeer``), the partner a bare socket whose PDUs are packed
and read by hand from SMPP 3.4 §4.5 (``RawPartner``: not our codec).

Proved: a submit_multi to three numbers of which one opted out is answered ESME_ROK with one
multi id and that number in unsuccess_sme (SMSC_ROPTEDOUT); two messages go upstream, each
stored with the multi id; two receipts come back carrying the multi id, told apart by their
source_addr; query_sm / cancel_sm on the multi id answer ESME_RQUERYFAIL / ESME_RCANCELFAIL.
All refused: the first destination's status, nothing stored. number_of_dests 0 or 255:
ESME_RINVNUMDESTS. A distribution list: ESME_RINVDLNAME under its name.
"""

from __future__ import annotations

import struct

from sqlalchemy import create_engine, select

from protocol.constants import CommandStatus as S
from storage.schema import messages
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings are fixtures
    RawPartner,
    connector_entry,
    count_rows,
    cstr,
    db_path,
    mt,
    mt_settings,
    wait_for,
)

A, B, OPTED = "33612345678", "33698765432", "33611111111"
SUBMIT_MULTI_RESP, DELIVER_SM = 0x80000021, 0x00000005


def multi_body(dests: list[tuple[int, str]], text: bytes = b"hello all", registered_delivery: int = 1) -> bytes:
    """A submit_multi body: each destination as (dest_flag, address): 1 SME (TON 1, NPI 1), 2 a list."""
    body = cstr("") + bytes([5, 0]) + cstr("ACME") + bytes([len(dests)])
    for flag, address in dests:
        body += bytes([1, 1, 1]) + cstr(address) if flag == 1 else bytes([2]) + cstr(address)
    return body + bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([registered_delivery, 0, 0, 0, len(text)]) + text


def read_multi_resp(body: bytes) -> tuple[str, list[tuple[int, int, str, int]]]:
    """(message_id, [(ton, npi, address, error_status_code)]) of a submit_multi_resp body."""
    end = body.index(b"\0")
    message_id, off = body[:end].decode(), end + 1
    count, off = body[off], off + 1
    smes = []
    for _ in range(count):
        ton, npi = body[off], body[off + 1]
        end = body.index(b"\0", off + 2)
        address = body[off + 2 : end].decode()
        (error,) = struct.unpack(">I", body[end + 1 : end + 5])
        smes.append((ton, npi, address, error))
        off = end + 5
    return message_id, smes


def read_deliver_sm(body: bytes) -> tuple[str, bytes]:
    """(source_addr, short_message) of a deliver_sm body."""
    off = body.index(b"\0") + 1 + 2  # service_type, source TON/NPI
    end = body.index(b"\0", off)
    source = body[off:end].decode()
    off = body.index(b"\0", end + 1 + 2) + 1  # dest TON/NPI, destination_addr
    off += 3  # esm_class, protocol_id, priority_flag
    off = body.index(b"\0", off) + 1
    off = body.index(b"\0", off) + 1  # schedule, validity
    off += 4  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    length = body[off]
    return source, body[off + 1 : off + 1 + length]


def stored(settings) -> list[dict]:
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(messages.c.id, messages.c.multi_id))]
    finally:
        engine.dispose()


async def test_a_submit_multi_with_one_opted_out_number(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)],
                           accounts=[{"system_id": "acme", "blacklist_alerts": True}, {"system_id": "beta"}])
    d = await mt.daemon(settings)
    opted = d.cipher.lookup_hash("+" + OPTED)
    await d.optouts.add("acme", opted, "stop", "test")
    d.blacklist.added("acme", opted)
    raw = await mt.raw(d, "acme", RawPartner.BIND_TRX)

    resp = await raw.request(RawPartner.SUBMIT_MULTI, multi_body([(1, A), (1, OPTED), (1, B)]))
    assert (resp.command_id, resp.status) == (SUBMIT_MULTI_RESP, S.ESME_ROK)
    multi_id, unsuccess = read_multi_resp(resp.body)
    assert multi_id.isdigit() and unsuccess == [(1, 1, OPTED, S.SMSC_ROPTEDOUT)]

    await wait_for(lambda: len(up.accepted) == 2, what="two messages upstream")
    assert sorted(s.destination_addr for s in up.submits) == sorted([A, B])
    rows = stored(settings)
    assert len(rows) == 2 and {r["multi_id"] for r in rows} == {int(multi_id)}
    assert int(multi_id) not in {r["id"] for r in rows}

    receipts = []
    for _ in range(2):
        cid, seq, body = await raw.read_request()
        assert cid == DELIVER_SM
        raw.answer(cid, seq)
        receipts.append(read_deliver_sm(body))
    assert sorted(source for source, _ in receipts) == sorted([A, B])  # told apart by the address
    assert all(text.startswith(f"id:{multi_id} ".encode()) and b"stat:DELIVRD" in text for _, text in receipts)
    assert await raw.quiet() == []  # exactly two

    # query_sm addresses one message: a multi id is none of ours.
    assert (await raw.query(multi_id)).status == S.ESME_RQUERYFAIL
    assert (await raw.cancel(multi_id)).status == S.ESME_RCANCELFAIL
    assert (await raw.query(str(rows[0]["id"]))).status == S.ESME_ROK


async def test_refused_submit_multis_store_nothing(mt, mt_settings):
    up = await mt.upstream(stat=None)
    settings = mt_settings([connector_entry("op", up.port)],
                           accounts=[{"system_id": "acme", "blacklist_alerts": True}, {"system_id": "beta"}])
    d = await mt.daemon(settings)
    opted = d.cipher.lookup_hash("+" + OPTED)
    await d.optouts.add("acme", opted, "stop", "test")
    d.blacklist.added("acme", opted)
    raw = await mt.raw(d, "acme")

    all_refused = await raw.request(RawPartner.SUBMIT_MULTI, multi_body([(1, OPTED), (1, "123")]))
    assert (all_refused.command_id, all_refused.status) == (SUBMIT_MULTI_RESP, S.SMSC_ROPTEDOUT)
    only_a_list = await raw.request(RawPartner.SUBMIT_MULTI, multi_body([(2, "staff")]))
    assert only_a_list.status == S.ESME_RINVDLNAME
    # number_of_dests 0, and 255 (one over §4.5.1's 254): the codec's answer.
    for count in (0, 255):
        body = cstr("") + bytes([5, 0]) + cstr("ACME") + bytes([count])
        body += (bytes([1, 1, 1]) + cstr(A)) * count + bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, 0, 0, 2]) + b"hi"
        assert (await raw.request(RawPartner.SUBMIT_MULTI, body)).status == S.ESME_RINVNUMDESTS, count
    assert count_rows(settings, messages) == 0 and up.submits == []

    # A list beside a number: the number goes, the list is named in unsuccess_sme.
    mixed = await raw.request(RawPartner.SUBMIT_MULTI, multi_body([(2, "staff"), (1, A)]))
    assert mixed.status == S.ESME_ROK
    assert read_multi_resp(mixed.body)[1] == [(0, 0, "staff", S.ESME_RINVDLNAME)]
    await wait_for(lambda: len(up.submits) == 1, what="the number upstream")
    assert count_rows(settings, messages) == 1
