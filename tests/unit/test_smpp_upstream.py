"""``smscenter.smpp.upstream``: the SMPP door reads an upstream's deliver_sm into the core's
``InboundReceipt`` / ``InboundMo``, and their ``Reply`` answers on the link (end to end over
sockets: tests/integration/test_upstream_ids.py, test_optout_e2e.py, test_mt_path.py)."""

from __future__ import annotations

from types import SimpleNamespace

from protocol import pdu as P
from protocol.constants import CommandId, EsmClass, MessageState, Tag
from protocol.segments import Concat
from smscenter.pipeline.ports import InboundMo, InboundReceipt
from smscenter.smpp.upstream import UpstreamDoor


class FakeLink:
    def __init__(self, short_code=None) -> None:
        self.short_code = short_code
        self.responses: list[P.Pdu] = []
        self.closed = False

    def respond(self, pdu: P.Pdu) -> None:
        self.responses.append(pdu)

    def close(self, exc=None) -> None:
        self.closed = True


class Core:
    """The core's side: receipts, unreadable receipts and MO as the door hands them over."""

    def __init__(self) -> None:
        self.receipts: list[InboundReceipt] = []
        self.mos: list[InboundMo] = []
        self.unreadable: list[tuple[str, str]] = []

    def on_receipt(self, receipt: InboundReceipt) -> None:
        self.receipts.append(receipt)

    def unparsable(self, connector: str, error: str) -> None:
        self.unreadable.append((connector, error))

    def on_mo(self, mo: InboundMo) -> None:
        self.mos.append(mo)


def connector(message_id: str = "decimal", short_codes=("38100",)):
    return SimpleNamespace(name="op", config=SimpleNamespace(message_id=message_id, short_codes=short_codes),
                           id_learner=None)


def test_a_receipt_becomes_an_inbound_receipt_answered_only_by_its_reply():
    core, link = Core(), FakeLink()
    door = UpstreamDoor(core)
    pdu = P.DeliverSm(sequence_number=9, source_addr="33612345678", esm_class=EsmClass.DELIVERY_RECEIPT,
                      short_message=b"id:00123 sub:001 dlvrd:000 submit date:2611282130 done date:2611282131"
                                    b" stat:UNDELIV err:0A3 text:",
                      tlvs=((Tag.RECEIPTED_MESSAGE_ID, "00123"), (Tag.MESSAGE_STATE, int(MessageState.UNDELIVERABLE))))
    up = connector()
    door.on_deliver(up, link, pdu)
    [receipt] = core.receipts
    assert (receipt.upstream, receipt.connector, receipt.upstream_id, receipt.state, receipt.error, receipt.readings) == (
        up, "op", "123", int(MessageState.UNDELIVERABLE), 0xA3, ())
    assert link.responses == []  # not before the core stored it
    receipt.reply.ack()
    [resp] = link.responses
    assert (resp.command_id, resp.sequence_number, resp.command_status) == (CommandId.DELIVER_SM_RESP, 9, 0)
    receipt.reply.abandon()
    assert link.closed


def test_an_unreadable_receipt_is_counted_and_acknowledged_at_once():
    core, link = Core(), FakeLink()
    pdu = P.DeliverSm(sequence_number=4, esm_class=EsmClass.DELIVERY_RECEIPT, short_message=b"no receipt here")
    UpstreamDoor(core).on_deliver(connector(), link, pdu)
    assert core.receipts == [] and [name for name, _ in core.unreadable] == ["op"]
    assert [r.sequence_number for r in link.responses] == [4]


def test_an_mo_with_a_udh_becomes_an_inbound_mo_on_the_binds_short_code():
    core, link = Core(), FakeLink(short_code="38200")
    door = UpstreamDoor(core, mo=core)
    udh = bytes([5, 0, 3, 0x2A, 2, 1])
    pdu = P.DeliverSm(sequence_number=3, source_addr="33612345678", source_addr_ton=1, source_addr_npi=1,
                      destination_addr="", esm_class=EsmClass.UDHI, data_coding=0, short_message=udh + b"STOP ")
    door.on_deliver(connector(short_codes=("38100", "38200")), link, pdu)
    [mo] = core.mos
    assert (mo.connector, mo.source_addr, mo.source_ton, mo.source_npi, mo.short_code, mo.data_coding, mo.body) == (
        "op", "33612345678", 1, 1, "38200", 0, b"STOP ")
    assert mo.concat == Concat(0x2A, 2, 1)
    assert link.responses == []
    mo.reply.ack()
    assert [r.sequence_number for r in link.responses] == [3]


def test_an_mo_with_sar_tlvs_to_its_destination_short_code():
    core, link = Core(), FakeLink()
    pdu = P.DeliverSm(sequence_number=5, source_addr="33612345678", destination_addr="+38100", short_message=b"hi",
                      tlvs=((Tag.SAR_MSG_REF_NUM, 7), (Tag.SAR_TOTAL_SEGMENTS, 3), (Tag.SAR_SEGMENT_SEQNUM, 2)))
    UpstreamDoor(core, mo=core).on_deliver(connector(short_codes=()), link, pdu)
    [mo] = core.mos
    assert (mo.short_code, mo.body, mo.concat) == ("38100", b"hi", Concat(7, 3, 2))


def test_a_broken_udh_keeps_the_message_as_it_came():
    core, link = Core(), FakeLink()
    pdu = P.DeliverSm(source_addr="33612345678", destination_addr="38100", esm_class=EsmClass.UDHI,
                      short_message=b"\x09\x00")
    UpstreamDoor(core, mo=core).on_deliver(connector(), link, pdu)
    [mo] = core.mos
    assert mo.concat is None and mo.body == b"\x09\x00"


def test_without_an_mo_handler_mo_is_acknowledged_at_once():
    core, link = Core(), FakeLink()
    pdu = P.DeliverSm(sequence_number=8, source_addr="33612345678", destination_addr="38100", short_message=b"hi")
    UpstreamDoor(core).on_deliver(connector(), link, pdu)
    assert core.mos == [] and [r.sequence_number for r in link.responses] == [8]
