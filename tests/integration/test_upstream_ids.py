"""``message_id = "auto"`` end to end (issue 17, item 5): upstream ids without guesswork.

The real ``Daemon`` on a SQLite file, between the scriptable upstream (``upstream.py``: its
submit_sm_resp ids written in hex, decimal or zero-padded, its receipts pushed by the test with
the id written another way) and a partner bound as a transceiver (``RawPartner``, PDUs packed
by hand). No connector sets ``message_id``: every receipt must reach the partner with our id,
the convention is learnt from unambiguous matches only, kept across a restart, and an
upstream whose receipts never match shows up (metric, warning, ``id_convention``).
"""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from protocol import pdu as P
from protocol.constants import MessageState, Tag
from smscenter.app.metrics import registry_for
from storage.schema import meta
from tests.integration.mt_fixtures import (  # noqa: F401 - fixtures
    RawPartner,
    connector_entry,
    mt,
    mt_settings,
    rows,
)
from tests.integration.upstream import Upstream, wait_for

pytestmark = pytest.mark.timeout(120)

FIRST = 0xA1B2C0  # the upstream's numbers: hex ids that begin with a letter, 8-digit decimals
N = 5  # messages per case

WRITERS = {
    "hex": lambda n: format(n, "X"),
    "decimal": str,
    "padded-decimal": lambda n: str(n).zfill(12),
    "padded-hex": lambda n: format(n, "x").zfill(10),
}


def auto_connector(port: int, **overrides) -> dict:
    entry = connector_entry("op", port, **overrides)
    if "message_id" not in overrides:
        del entry["message_id"]  # the default: auto
    return entry


async def start(mt, mt_settings, upstream: Upstream, **connector):
    settings = mt_settings([auto_connector(upstream.port, **connector)])
    daemon = await mt.daemon(settings)
    partner = await mt.raw(daemon, command_id=RawPartner.BIND_TRX)
    return settings, daemon, partner


async def submit(daemon, partner: RawPartner, upstream: Upstream, count: int = N) -> list[str]:
    """``count`` messages wanting receipts; our ids, once the upstream answered them all."""
    before = daemon.dispatcher.stats["sent"]
    resps = await partner.submit_pipelined([(f"336123456{i:02d}", b"id test %d" % i) for i in range(count)],
                                           registered_delivery=1)
    assert all(r.status == 0 for r in resps)
    await wait_for(lambda: daemon.dispatcher.stats["sent"] == before + count)
    return [r.cstrings()[0].decode() for r in resps]


def receipt(receipt_id: str, state: MessageState = MessageState.DELIVERED) -> P.DeliverSm:
    stat = "DELIVRD" if state == MessageState.DELIVERED else "UNDELIV"
    text = (f"id:{receipt_id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 "
            f"stat:{stat} err:000 text:").encode()
    return P.DeliverSm(source_addr="33612345678", destination_addr="ACME", esm_class=4, short_message=text,
                       tlvs=((Tag.RECEIPTED_MESSAGE_ID, receipt_id), (Tag.MESSAGE_STATE, int(state))))


async def send_receipts(upstream: Upstream, numbers, write) -> None:
    for n in numbers:
        resp = await upstream.send_deliver(receipt(write(n)))
        assert resp.command_status == 0


async def receipts_at(partner: RawPartner, count: int) -> list[str]:
    """The ids in the next ``count`` receipts the partner gets (each acknowledged)."""
    ids = []
    for _ in range(count):
        cid, seq, body = await partner.read_request()
        assert cid == 0x00000005  # deliver_sm
        partner.answer(cid, seq)
        ids.append(re.search(rb"id:(\S+)", body).group(1).decode())
    return ids


CASES = [
    # (submit_sm_resp ids, receipt ids, the reading learnt)
    ("hex", "decimal", "hex-to-decimal"),
    ("decimal", "decimal", "as-is"),
    ("hex", "hex", "as-is"),
    ("decimal", "hex", "decimal-to-hex"),
    ("padded-decimal", "decimal", "as-is"),
    ("hex", "padded-decimal", "hex-to-decimal"),
    ("padded-hex", "hex", "as-is"),
]


@pytest.mark.parametrize(("resp_ids", "receipt_ids", "learnt"), CASES)
async def test_every_receipt_reaches_the_partner_with_our_id(mt, mt_settings, resp_ids, receipt_ids, learnt):
    upstream = await Upstream().start()
    try:
        upstream.first_number, upstream.message_ids = FIRST, WRITERS[resp_ids]
        _, daemon, partner = await start(mt, mt_settings, upstream)
        connector = daemon.connectors["op"]
        assert connector.id_convention == "auto"
        with capture_logs() as logs:
            ours = await submit(daemon, partner, upstream)
            await send_receipts(upstream, range(FIRST + 1, FIRST + N + 1), WRITERS[receipt_ids])
            assert sorted(await receipts_at(partner, N)) == sorted(ours)
        assert connector.id_convention == learnt
        assert [e for e in logs if e["event"] == "receipt_id_convention_learnt"] == [
            {"event": "receipt_id_convention_learnt", "log_level": "info", "connector": "op", "convention": learnt}
        ]
        assert daemon.deliveries.unmatched.get("op", 0) == 0
        metrics = _metrics(daemon)
        assert f'smscenter_connector_id_convention{{connector="op",convention="{learnt}"}} 1.0' in metrics

        # Learnt: the next ones go by that reading alone.
        more = await submit(daemon, partner, upstream, 2)
        await send_receipts(upstream, range(FIRST + N + 1, FIRST + N + 3), WRITERS[receipt_ids])
        assert sorted(await receipts_at(partner, 2)) == sorted(more)
    finally:
        await upstream.close()


async def test_early_receipts_find_their_message_in_another_notation(mt, mt_settings):
    """Receipts (decimal) that come before the submit_sm_resp (hex): kept, then applied."""
    upstream = await Upstream().start()
    try:
        upstream.first_number, upstream.message_ids = FIRST, WRITERS["hex"]
        upstream.never_answer = True  # the test answers, after the receipts
        _, daemon, partner = await start(mt, mt_settings, upstream, response_timeout="60s")
        # Three numbers: one number's messages go one after the other (its line).
        resps = await partner.submit_pipelined([(f"3361234567{i}", b"early %d" % i) for i in range(3)],
                                               registered_delivery=1)
        ours = [r.cstrings()[0].decode() for r in resps]
        await wait_for(lambda: len(upstream.submits) == 3)
        await send_receipts(upstream, range(FIRST + 1, FIRST + 4), str)  # acknowledged: kept early
        assert daemon.deliveries.unmatched["op"] == 3
        session = upstream.bound_sessions[0]
        for i, pdu in enumerate(upstream.submits):
            session.answer(pdu.sequence_number, pdu.response(message_id=format(FIRST + 1 + i, "X")))
        assert sorted(await receipts_at(partner, 3)) == sorted(ours)
    finally:
        await upstream.close()


async def test_the_learnt_convention_survives_a_restart(mt, mt_settings):
    upstream = await Upstream().start()
    try:
        upstream.first_number, upstream.message_ids = FIRST, WRITERS["hex"]
        settings, daemon, partner = await start(mt, mt_settings, upstream)
        ours = await submit(daemon, partner, upstream)
        await send_receipts(upstream, range(FIRST + 1, FIRST + N + 1), str)
        assert sorted(await receipts_at(partner, N)) == sorted(ours)
        assert daemon.connectors["op"].id_convention == "hex-to-decimal"
        await wait_for(lambda: {r["key"]: r["value"] for r in rows(settings, meta)}.get("idconv:op"))
        await partner.close()
        await mt.stop_daemon(daemon)

        again = await mt.daemon(settings)
        assert again.connectors["op"].id_convention == "hex-to-decimal"  # before any receipt
        partner = await mt.raw(again, command_id=RawPartner.BIND_TRX)
        upstream.first_number = FIRST + 100 - len(upstream.submits)  # numbers FIRST+101...
        ours = await submit(again, partner, upstream, 2)
        await send_receipts(upstream, (FIRST + 101, FIRST + 102), str)
        assert sorted(await receipts_at(partner, 2)) == sorted(ours)
        await partner.close()
        await mt.stop_daemon(again)

        # A configured convention wins over the learnt one.
        configured = mt_settings([auto_connector(upstream.port, message_id="as-is")])
        third = await mt.daemon(configured)
        assert third.connectors["op"].id_convention == "as-is"
        assert third.connectors["op"].id_learner is None
    finally:
        await upstream.close()


async def test_ambiguous_ids_never_teach(mt, mt_settings):
    """Ids 1 to 9 read the same in hex and in decimal: they match (as-is) and teach nothing."""
    upstream = await Upstream().start()
    try:
        upstream.message_ids = str  # 1, 2, 3 ...
        _, daemon, partner = await start(mt, mt_settings, upstream)
        ours = await submit(daemon, partner, upstream, 6)
        await send_receipts(upstream, range(1, 7), str)
        assert sorted(await receipts_at(partner, 6)) == sorted(ours)
        assert daemon.connectors["op"].id_convention == "auto"
        assert daemon.connectors["op"].id_learner.learnt is None
    finally:
        await upstream.close()


async def test_an_upstream_whose_receipts_never_match_shows_up(mt, mt_settings):
    upstream = await Upstream().start()
    try:
        upstream.first_number, upstream.message_ids = FIRST, WRITERS["hex"]
        _, daemon, partner = await start(mt, mt_settings, upstream)
        await submit(daemon, partner, upstream, 3)
        with capture_logs() as logs:
            await send_receipts(upstream, range(3), lambda n: f"other-{n}")  # acknowledged all the same
        assert daemon.deliveries.unmatched == {"op": 3}
        assert daemon.connectors["op"].id_convention == "auto"
        warnings = [e for e in logs if e["event"] == "receipts_unmatched"]
        assert warnings == [{"event": "receipts_unmatched", "log_level": "warning", "count": 1,
                             "connector": "op", "convention": "auto"}]  # the rest: once per interval
        assert 'smscenter_receipts_unmatched_total{connector="op"} 3.0' in _metrics(daemon)
        assert 'smscenter_connector_id_convention{connector="op",convention="auto"} 1.0' in _metrics(daemon)
    finally:
        await upstream.close()


def _metrics(daemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry_for(daemon)).decode()
