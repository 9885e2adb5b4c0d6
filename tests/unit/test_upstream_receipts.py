"""``protocol.receipt.fast_receipt_fields``: reading an upstream's receipt quickly gives what the full reading
(``protocol.receipt.receipt_from_tlvs``) gives, or defers to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import pdu as P
from protocol.constants import MessageState as M
from protocol.constants import Tag
from protocol.receipt import receipt_from_tlvs
import protocol.receipt as receipts
from protocol.receipt import fast_receipt_fields as _fast_receipt

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


_TOKEN = st.text(alphabet="abcertxXYZ0189 _:;-", max_size=8)
_CANONICAL_PIECES = st.tuples(
    st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=12), st.integers(0, 999), st.integers(0, 1),
    st.text(alphabet="0123456789", max_size=12), st.sampled_from(["DELIVRD", "UNDELIV", "Expired", "x"]),
    st.text(alphabet="0123456789AF", max_size=4), _TOKEN, _TOKEN,
)


@settings(max_examples=1500, deadline=None)
@given(_CANONICAL_PIECES, st.booleans())
def test_the_canonical_text_reads_as_the_key_by_key_reading(pieces, mangle):
    """The one-match reading of the usual text gives what the key-by-key reading gives (or
    steps aside): a differential test over texts in and near the canonical shape."""
    ident, sub, dlvrd, date, stat, err, noise, tail = pieces
    text = (f"id:{ident} sub:{sub:03d} dlvrd:{dlvrd:03d} submit date:{date} done date:{date} "
            f"stat:{stat} err:{err} text:{tail}").encode()
    if mangle:  # near misses: noise glued somewhere inside
        at = len(ident) + len(noise) % 40
        text = text[:at] + noise.encode() + text[at:]
    pdu = P.DeliverSm(esm_class=4, short_message=text,
                      tlvs=((Tag.RECEIPTED_MESSAGE_ID, ident), (Tag.MESSAGE_STATE, int(M.DELIVERED))))
    with pytest.MonkeyPatch.context() as mp:
        key_by_key = _fast_receipt_without_the_canonical_match(mp, pdu)
    assert _fast_receipt(pdu) == key_by_key


def _fast_receipt_without_the_canonical_match(mp: pytest.MonkeyPatch, pdu):
    class NeverMatches:
        @staticmethod
        def match(_text):
            return None

    mp.setattr(receipts, "_CANONICAL_TEXT", NeverMatches)
    return _fast_receipt(pdu)


NEAR_MISSES = [
    b"id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD err:000text:x",
    b"id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD err:0 0 text:x",
    b"id:7;err:5 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD err:000 text:x",
    b"id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIV-RD err:000 text:x",
    b"id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD err:000  text:x",
    b"Id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD ERR:5 text:x",
    b"id:7 sub:001 dlvrd:001 submit date:1 done date:2 stat:DELIVRD err: text:",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_of_the_canonical_text_read_as_key_by_key(text):
    pdu = P.DeliverSm(esm_class=4, short_message=text,
                      tlvs=((Tag.RECEIPTED_MESSAGE_ID, "7"), (Tag.MESSAGE_STATE, int(M.DELIVERED))))
    with pytest.MonkeyPatch.context() as mp:
        key_by_key = _fast_receipt_without_the_canonical_match(mp, pdu)
    assert _fast_receipt(pdu) == key_by_key


def test_the_usual_text_is_read_in_one_match():
    text = b"id:77 sub:001 dlvrd:001 submit date:2611282130 done date:2611282131 stat:DELIVRD err:000 text:"
    assert receipts._CANONICAL_TEXT.match(text).group(1) == b"000"
