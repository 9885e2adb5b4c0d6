"""``smscenter.receipts``: reading an upstream's receipt quickly gives what the full reading
(``protocol.receipt.receipt_from_tlvs``) gives, or defers to it."""

from __future__ import annotations

import pytest

from protocol import pdu as P
from protocol.constants import MessageState as M
from protocol.constants import Tag
from protocol.receipt import receipt_from_tlvs
from smscenter.receipts import _fast_receipt

TEXTS = [
    b"id:123 sub:001 dlvrd:001 submit date:2611282130 done date:2611282130 stat:DELIVRD err:000 text:Hello err:5",
    b"id:123 sub:001 dlvrd:000 submit date:2611282130 done date:2611282130 stat:UNDELIV ERR:0A3 Text:x",
    b"ID:123 stat:DELIVRD err :12stat:x text:err:9",
    b"id:123 stat:DELIVRD err: text:",
    b"id:123 stat:DELIVRD text:hi",  # no err: field
    b"",
    b"err:7",  # not a receipt text
    b"id: sub:001 err:4",  # an empty id
    b"id:1 suberr:4 stat:DELIVRD",
    b"id:1 stat:DELIVRD err:3\x00\x00",
]
TLVS = [
    ((Tag.RECEIPTED_MESSAGE_ID, "00123"), (Tag.MESSAGE_STATE, int(M.DELIVERED))),
    ((Tag.RECEIPTED_MESSAGE_ID, " 00123\x00"), (Tag.MESSAGE_STATE, int(M.UNDELIVERABLE))),
    ((Tag.RECEIPTED_MESSAGE_ID, "00123"),),  # no message_state
    ((Tag.MESSAGE_STATE, int(M.DELIVERED)),),  # no receipted_message_id
    ((Tag.MESSAGE_STATE, int(M.REJECTED)), (Tag.RECEIPTED_MESSAGE_ID, "abc"),
     (Tag.NETWORK_ERROR_CODE, b"\x03\x00\x07")),
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("tlvs", TLVS)
def test_fast_reading_agrees_with_the_full_one_or_defers(text, tlvs):
    pdu = P.DeliverSm(esm_class=4, short_message=text, tlvs=tlvs)
    fast = _fast_receipt(pdu)
    if fast is None:
        return  # the caller reads it fully
    full = receipt_from_tlvs(pdu.tlv, pdu.short_message)
    assert fast == (full.message_id, int(full.state), full.err)


def test_the_usual_receipt_takes_the_fast_way():
    text = b"id:77 sub:001 dlvrd:001 submit date:2611282130 done date:2611282131 stat:DELIVRD err:000 text:"
    pdu = P.DeliverSm(esm_class=4, short_message=text,
                      tlvs=((Tag.RECEIPTED_MESSAGE_ID, "77"), (Tag.MESSAGE_STATE, int(M.DELIVERED))))
    assert _fast_receipt(pdu) == ("77", int(M.DELIVERED), "000")
