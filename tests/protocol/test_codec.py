"""The SMPP 3.4 codec and framer, proven byte for byte.

Golden vectors are written out by hand from the SMPP 3.4 specification's PDU layouts (§4 for
the bodies, §5.3 for TLVs), one field per line, *not* produced by our encoder. Each one must
decode to the expected dataclass and the dataclass must encode back to exactly those bytes.
The framer gets every vector whole, byte by byte, with trailing data and all in one chunk.

Then bad input, each case with the precise command_status it must carry, and hypothesis:
round trips for random valid PDUs of every class built from the ``BODY`` tables, and fuzzing
(random bytes, mutated and truncated PDUs) where only ``RemoteProtocolError`` may come out.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import pdu as P
from protocol import tlv as T
from protocol.codec import decode, encode
from protocol.constants import CommandId, CommandStatus as S, Tag
from protocol.errors import DecodeError, FramingError, LocalProtocolError, RemoteProtocolError
from protocol.framing import Framer


def unhex(text: str) -> bytes:
    """Hex with a ``# comment`` allowed at the end of each line, whitespace ignored."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in text.splitlines()))


# --- golden vectors -----------------------------------------------------------------------
#
# Shared pieces, spelled out once (ASCII: '0'=30 '3'=33 ... 'A'=41 ... 'a'=61 ...):
#   "ACME\0"          41 43 4d 45 00
#   "33612345678\0"   33 33 36 31 32 33 34 35 36 37 38 00
#   "SMSC\0"          53 4d 53 43 00
#   "42\0"            34 32 00

GOLDEN: list[tuple[str, P.Pdu, str]] = [
    (
        "bind_transmitter",
        P.BindTransmitter(
            sequence_number=1,
            system_id="SMPP3TEST",
            password="secret08",
            system_type="SUBMIT1",
            interface_version=0x34,
            addr_ton=1,
            addr_npi=1,
            address_range="",
        ),
        """
        0000002f                # command_length 47 = 16 + 31
        00000002                # command_id bind_transmitter
        00000000                # command_status
        00000001                # sequence_number 1
        534d50503354455354 00   # system_id "SMPP3TEST"
        7365637265743038 00     # password "secret08"
        5355424d495431 00       # system_type "SUBMIT1"
        34                      # interface_version 3.4
        01                      # addr_ton international
        01                      # addr_npi ISDN
        00                      # address_range ""
        """,
    ),
    (
        "bind_transmitter_resp",
        P.BindTransmitterResp(
            sequence_number=1, system_id="SMSC", tlvs=((Tag.SC_INTERFACE_VERSION, 0x34),)
        ),
        """
        0000001a                # command_length 26 = 16 + 5 + 5
        80000002                # command_id bind_transmitter_resp
        00000000                # command_status ESME_ROK
        00000001                # sequence_number 1
        534d5343 00             # system_id "SMSC"
        0210 0001 34            # TLV sc_interface_version, length 1, 0x34
        """,
    ),
    (
        "bind_receiver",
        P.BindReceiver(
            sequence_number=2, system_id="rx", password="pw", system_type="", address_range="^336"
        ),
        """
        0000001f                # command_length 31 = 16 + 15
        00000001                # command_id bind_receiver
        00000000
        00000002                # sequence_number 2
        7278 00                 # system_id "rx"
        7077 00                 # password "pw"
        00                      # system_type ""
        34                      # interface_version
        00 00                   # addr_ton, addr_npi
        5e333336 00             # address_range "^336"
        """,
    ),
    (
        "bind_receiver_resp",
        P.BindReceiverResp(sequence_number=2, system_id="SMSC"),
        """
        00000015 80000001 00000000 00000002   # 21 octets, bind_receiver_resp, ROK, seq 2
        534d5343 00                           # system_id "SMSC"
        """,
    ),
    (
        "bind_transceiver",
        P.BindTransceiver(
            sequence_number=3, system_id="trx", password="", system_type="VMS", addr_ton=5
        ),
        """
        0000001d                # command_length 29 = 16 + 13
        00000009                # command_id bind_transceiver
        00000000
        00000003
        747278 00               # system_id "trx"
        00                      # password ""
        564d53 00               # system_type "VMS"
        34                      # interface_version
        05                      # addr_ton alphanumeric
        00                      # addr_npi
        00                      # address_range ""
        """,
    ),
    (
        "bind_transceiver_resp",
        P.BindTransceiverResp(sequence_number=3, system_id="SMSC"),
        """
        00000015 80000009 00000000 00000003   # 21 octets, bind_transceiver_resp, seq 3
        534d5343 00                           # system_id "SMSC"
        """,
    ),
    (
        "outbind",
        P.Outbind(sequence_number=4, system_id="SMSC", password="pass"),
        """
        0000001a 0000000b 00000000 00000004   # 26 octets, outbind, seq 4
        534d5343 00                           # system_id "SMSC"
        70617373 00                           # password "pass"
        """,
    ),
    ("unbind", P.Unbind(sequence_number=5), "00000010 00000006 00000000 00000005"),
    ("unbind_resp", P.UnbindResp(sequence_number=5), "00000010 80000006 00000000 00000005"),
    ("enquire_link", P.EnquireLink(sequence_number=6), "00000010 00000015 00000000 00000006"),
    (
        "enquire_link_resp",
        P.EnquireLinkResp(sequence_number=6),
        "00000010 80000015 00000000 00000006",
    ),
    (
        "generic_nack",
        P.GenericNack(sequence_number=7, command_status=S.ESME_RINVCMDID),
        "00000010 80000000 00000003 00000007   # generic_nack, ESME_RINVCMDID, seq 7",
    ),
    (
        "submit_sm",
        P.SubmitSm(
            sequence_number=8,
            source_addr_ton=5,
            source_addr="ACME",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33612345678",
            validity_period="000001000000000R",
            registered_delivery=1,
            short_message=b"Hello",
        ),
        """
        00000045                # command_length 69 = 16 + 53
        00000004                # command_id submit_sm
        00000000
        00000008                # sequence_number 8
        00                      # service_type ""
        05 00                   # source_addr_ton alphanumeric, source_addr_npi unknown
        41434d45 00             # source_addr "ACME"
        01 01                   # dest_addr_ton international, dest_addr_npi ISDN
        3333363132333435363738 00  # destination_addr "33612345678"
        00                      # esm_class
        00                      # protocol_id
        00                      # priority_flag
        00                      # schedule_delivery_time "" (immediate)
        30303030303130303030303030303052 00  # validity_period "000001000000000R" (1 day, relative)
        01                      # registered_delivery: receipt on final outcome
        00                      # replace_if_present_flag
        00                      # data_coding SMSC default
        00                      # sm_default_msg_id
        05                      # sm_length 5
        48656c6c6f              # short_message "Hello"
        """,
    ),
    (
        "submit_sm_tlvs",
        P.SubmitSm(
            sequence_number=9,
            service_type="CMT",
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33600000000",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33700000001",
            priority_flag=1,
            registered_delivery=1,
            data_coding=8,
            short_message=b"",
            tlvs=(
                (Tag.USER_MESSAGE_REFERENCE, 0x1234),
                (Tag.SOURCE_PORT, 2948),
                (Tag.DESTINATION_PORT, 9200),
                (Tag.MESSAGE_PAYLOAD, "Hi".encode("utf-16-be")),
                (0x1400, b"\x01\x02\x03"),
            ),
        ),
        """
        0000005b                # command_length 91 = 16 + 42 + 33
        00000004                # submit_sm
        00000000
        00000009                # sequence_number 9
        434d54 00               # service_type "CMT"
        01 01                   # source ton/npi
        3333363030303030303030 00  # source_addr "33600000000"
        01 01                   # dest ton/npi
        3333373030303030303031 00  # destination_addr "33700000001"
        00 00 01                # esm_class, protocol_id, priority_flag 1
        00 00                   # schedule_delivery_time "", validity_period ""
        01 00                   # registered_delivery, replace_if_present_flag
        08                      # data_coding UCS-2
        00                      # sm_default_msg_id
        00                      # sm_length 0: the text is in message_payload
        0204 0002 1234          # user_message_reference 0x1234
        020a 0002 0b84          # source_port 2948 (WAP push)
        020b 0002 23f0          # destination_port 9200
        0424 0004 0048 0069     # message_payload "Hi" in UCS-2
        1400 0003 010203        # vendor TLV 0x1400, kept as raw octets
        """,
    ),
    (
        "submit_sm_resp",
        P.SubmitSmResp(sequence_number=8, message_id="1234567890"),
        """
        0000001b 80000004 00000000 00000008   # 27 octets, submit_sm_resp, ROK, seq 8
        31323334353637383930 00               # message_id "1234567890"
        """,
    ),
    (
        "deliver_sm_receipt",
        P.DeliverSm(
            sequence_number=10,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            dest_addr_ton=5,
            destination_addr="ACME",
            esm_class=0x04,
            short_message=b"id:42 stat:DELIVRD",
            tlvs=(
                (Tag.RECEIPTED_MESSAGE_ID, "42"),
                (Tag.MESSAGE_STATE, 2),
                (Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01"),
            ),
        ),
        """
        00000055                # command_length 85 = 16 + 50 + 19
        00000005                # deliver_sm
        00000000
        0000000a                # sequence_number 10
        00                      # service_type ""
        01 01                   # source ton/npi
        3333363132333435363738 00  # source_addr "33612345678"
        05 00                   # dest ton alphanumeric / npi unknown
        41434d45 00             # destination_addr "ACME"
        04                      # esm_class: SMSC delivery receipt
        00 00                   # protocol_id, priority_flag
        00 00                   # schedule_delivery_time, validity_period: both "" in deliver_sm
        00 00 00 00             # registered_delivery, replace_if_present, data_coding, default_msg_id
        12                      # sm_length 18
        69643a3432 20 737461743a44454c49565244  # "id:42 stat:DELIVRD"
        001e 0003 343200        # receipted_message_id "42" (C-octet string, NUL counted)
        0427 0001 02            # message_state DELIVERED
        0423 0003 030001        # network_error_code: type 3 (GSM), error 0x0001
        """,
    ),
    (
        "deliver_sm_mo_sar_ussd",
        P.DeliverSm(
            sequence_number=11,
            service_type="USSD",
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            destination_addr="36180",
            short_message=b"STOP",
            tlvs=(
                (Tag.SAR_MSG_REF_NUM, 0x42),
                (Tag.SAR_TOTAL_SEGMENTS, 2),
                (Tag.SAR_SEGMENT_SEQNUM, 1),
                (Tag.USSD_SERVICE_OP, 0x12),
            ),
        ),
        """
        0000004e                # command_length 78 = 16 + 41 + 21
        00000005                # deliver_sm
        00000000
        0000000b                # sequence_number 11
        55535344 00             # service_type "USSD"
        01 01                   # source ton/npi
        3333363132333435363738 00  # source_addr "33612345678"
        00 00                   # dest ton/npi
        3336313830 00           # destination_addr "36180"
        00 00 00                # esm_class, protocol_id, priority_flag
        00 00                   # schedule_delivery_time, validity_period
        00 00 00 00             # registered_delivery, replace, data_coding, sm_default_msg_id
        04 53544f50             # sm_length 4, "STOP"
        020c 0002 0042          # sar_msg_ref_num 0x42
        020e 0001 02            # sar_total_segments 2
        020f 0001 01            # sar_segment_seqnum 1
        0501 0001 12            # ussd_service_op 18 (USSR confirm)
        """,
    ),
    (
        "deliver_sm_resp",
        P.DeliverSmResp(sequence_number=10),
        """
        00000011 80000005 00000000 0000000a   # 17 octets, deliver_sm_resp, seq 10
        00                                    # message_id "" (unused, set to NULL)
        """,
    ),
    (
        "data_sm",
        P.DataSm(
            sequence_number=12,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            dest_addr_ton=5,
            destination_addr="ACME",
            data_coding=4,
            tlvs=(
                (Tag.MESSAGE_PAYLOAD, b"\xca\xfe"),
                (Tag.SOURCE_PORT, 8080),
                (Tag.DESTINATION_PORT, 80),
            ),
        ),
        """
        0000003b                # command_length 59 = 16 + 25 + 18
        00000103                # data_sm
        00000000
        0000000c                # sequence_number 12
        00                      # service_type ""
        01 01                   # source ton/npi
        3333363132333435363738 00  # source_addr "33612345678"
        05 00                   # dest ton/npi
        41434d45 00             # destination_addr "ACME"
        00                      # esm_class
        00                      # registered_delivery
        04                      # data_coding binary
        0424 0002 cafe          # message_payload
        020a 0002 1f90          # source_port 8080
        020b 0002 0050          # destination_port 80
        """,
    ),
    (
        "data_sm_resp",
        P.DataSmResp(
            sequence_number=12,
            message_id="abc",
            tlvs=((Tag.ADDITIONAL_STATUS_INFO_TEXT, "ok"),),
        ),
        """
        0000001b 80000103 00000000 0000000c   # 27 octets, data_sm_resp, seq 12
        616263 00                             # message_id "abc"
        001d 0003 6f6b00                      # additional_status_info_text "ok"
        """,
    ),
    (
        "query_sm",
        P.QuerySm(sequence_number=13, message_id="42", source_addr_ton=5, source_addr="ACME"),
        """
        0000001a 00000003 00000000 0000000d   # 26 octets, query_sm, seq 13
        3432 00                               # message_id "42"
        05 00                                 # source ton/npi
        41434d45 00                           # source_addr "ACME"
        """,
    ),
    (
        "query_sm_resp",
        P.QuerySmResp(
            sequence_number=13, message_id="42", final_date="240115123000004+", message_state=2
        ),
        """
        00000026 80000003 00000000 0000000d   # 38 octets, query_sm_resp, seq 13
        3432 00                               # message_id "42"
        3234303131353132333030303030342b 00   # final_date "240115123000004+" (UTC+1h)
        02                                    # message_state DELIVERED
        00                                    # error_code
        """,
    ),
    (
        "cancel_sm",
        P.CancelSm(
            sequence_number=14,
            message_id="42",
            source_addr_ton=5,
            source_addr="ACME",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33612345678",
        ),
        """
        00000029 00000008 00000000 0000000e   # 41 octets, cancel_sm, seq 14
        00                                    # service_type ""
        3432 00                               # message_id "42"
        05 00                                 # source ton/npi
        41434d45 00                           # source_addr "ACME"
        01 01                                 # dest ton/npi
        3333363132333435363738 00             # destination_addr "33612345678"
        """,
    ),
    (
        "cancel_sm_resp",
        P.CancelSmResp(sequence_number=14),
        "00000010 80000008 00000000 0000000e",
    ),
    (
        "replace_sm",
        P.ReplaceSm(
            sequence_number=15,
            message_id="42",
            source_addr_ton=5,
            source_addr="ACME",
            validity_period="000002000000000R",
            registered_delivery=1,
            short_message=b"New",
        ),
        """
        00000032 00000007 00000000 0000000f   # 50 octets, replace_sm, seq 15
        3432 00                               # message_id "42"
        05 00                                 # source ton/npi
        41434d45 00                           # source_addr "ACME"
        00                                    # schedule_delivery_time ""
        30303030303230303030303030303052 00   # validity_period "000002000000000R" (2 days)
        01                                    # registered_delivery
        00                                    # sm_default_msg_id
        03 4e6577                             # sm_length 3, "New"
        """,
    ),
    (
        "replace_sm_resp",
        P.ReplaceSmResp(sequence_number=15),
        "00000010 80000007 00000000 0000000f",
    ),
    (
        "submit_multi",
        P.SubmitMulti(
            sequence_number=16,
            source_addr_ton=5,
            source_addr="ACME",
            dest_addresses=(
                P.SmeAddress(1, 1, "33611111111"),
                P.DistributionList("friends"),
                P.SmeAddress(1, 1, "33622222222"),
            ),
            short_message=b"Hi",
        ),
        """
        0000004c                # command_length 76 = 16 + 60
        00000021                # submit_multi
        00000000
        00000010                # sequence_number 16
        00                      # service_type ""
        05 00                   # source ton/npi
        41434d45 00             # source_addr "ACME"
        03                      # number_of_dests 3
        01 01 01                # dest_flag 1 (SME address), ton, npi
        3333363131313131313131 00  # "33611111111"
        02                      # dest_flag 2 (distribution list)
        667269656e6473 00       # dl_name "friends"
        01 01 01                # dest_flag 1, ton, npi
        3333363232323232323232 00  # "33622222222"
        00 00 00                # esm_class, protocol_id, priority_flag
        00 00                   # schedule_delivery_time, validity_period
        00 00 00 00             # registered_delivery, replace, data_coding, sm_default_msg_id
        02 4869                 # sm_length 2, "Hi"
        """,
    ),
    (
        "submit_multi_resp",
        P.SubmitMultiResp(
            sequence_number=16,
            message_id="43",
            unsuccess_smes=(
                P.UnsuccessSme(1, 1, "33611111111", S.ESME_RINVDSTADR),
                P.UnsuccessSme(1, 1, "33622222222", S.ESME_RSUBMITFAIL),
            ),
        ),
        """
        00000038 80000021 00000000 00000010   # 56 octets, submit_multi_resp, seq 16
        3433 00                               # message_id "43"
        02                                    # no_unsuccess 2
        01 01 3333363131313131313131 00       # ton, npi, "33611111111"
        0000000b                              # error_status_code ESME_RINVDSTADR
        01 01 3333363232323232323232 00       # ton, npi, "33622222222"
        00000045                              # error_status_code ESME_RSUBMITFAIL
        """,
    ),
    (
        "submit_multi_resp_all_ok",
        P.SubmitMultiResp(sequence_number=17, message_id="44"),
        """
        00000014 80000021 00000000 00000011   # 20 octets, submit_multi_resp, seq 17
        3434 00                               # message_id "44"
        00                                    # no_unsuccess 0
        """,
    ),
    (
        "alert_notification",
        P.AlertNotification(
            sequence_number=18,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            esme_addr_ton=5,
            esme_addr="ACME",
            tlvs=((Tag.MS_AVAILABILITY_STATUS, 0),),
        ),
        """
        0000002a 00000102 00000000 00000012   # 42 octets, alert_notification, seq 18
        01 01                                 # source ton/npi
        3333363132333435363738 00             # source_addr "33612345678"
        05 00                                 # esme ton/npi
        41434d45 00                           # esme_addr "ACME"
        0422 0001 00                          # ms_availability_status available
        """,
    ),
]

GOLDEN_IDS = [name for name, _, _ in GOLDEN]
GOLDEN_BYTES = [unhex(text) for _, _, text in GOLDEN]


def test_goldens_cover_every_pdu_class():
    assert {type(p) for _, p, _ in GOLDEN} == set(P.ALL_PDUS)


def test_goldens_cover_the_required_tlvs():
    tags = {tag for _, p, _ in GOLDEN for tag, _ in p.tlvs}
    required = {
        Tag.MESSAGE_PAYLOAD,
        Tag.SAR_MSG_REF_NUM,
        Tag.SAR_TOTAL_SEGMENTS,
        Tag.SAR_SEGMENT_SEQNUM,
        Tag.RECEIPTED_MESSAGE_ID,
        Tag.MESSAGE_STATE,
        Tag.NETWORK_ERROR_CODE,
        Tag.USER_MESSAGE_REFERENCE,
        Tag.SOURCE_PORT,
        Tag.DESTINATION_PORT,
        Tag.USSD_SERVICE_OP,
        0x1400,
    }
    assert required <= tags


@pytest.mark.parametrize(("name", "expected", "text"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_decode(name, expected, text):
    raw = unhex(text)
    # The hand-written command_length must agree with the hand-written body.
    assert int.from_bytes(raw[:4], "big") == len(raw)
    got = decode(raw)
    assert type(got) is type(expected)
    assert got == expected
    assert got.tlvs == expected.tlvs  # wire order kept


@pytest.mark.parametrize(("name", "expected", "text"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_encode(name, expected, text):
    assert encode(expected).hex() == unhex(text).hex()


@pytest.mark.parametrize(("name", "expected", "text"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_encode_overrides_sequence(name, expected, text):
    raw = encode(expected, sequence_number=0x7FFFFFFF)
    assert raw[12:16] == b"\x7f\xff\xff\xff"
    assert raw[:12] + raw[16:] == unhex(text)[:12] + unhex(text)[16:]


def test_golden_typed_tlv_values():
    by_name = {name: p for name, p, _ in GOLDEN}
    dlr = decode(GOLDEN_BYTES[GOLDEN_IDS.index("deliver_sm_receipt")])
    assert dlr == by_name["deliver_sm_receipt"]
    assert dlr.tlv(Tag.RECEIPTED_MESSAGE_ID) == "42"  # C-string -> str without its NUL
    assert dlr.tlv(Tag.MESSAGE_STATE) == 2  # integer -> int
    assert dlr.tlv(Tag.NETWORK_ERROR_CODE) == b"\x03\x00\x01"  # 3 octets, raw
    sub = decode(GOLDEN_BYTES[GOLDEN_IDS.index("submit_sm_tlvs")])
    assert sub.tlv(0x1400) == b"\x01\x02\x03"  # vendor tag, byte for byte
    assert sub.tlv(Tag.MESSAGE_PAYLOAD) == b"\x00H\x00i"
    assert sub.tlv(Tag.SAR_MSG_REF_NUM, "absent") == "absent"


# --- the framer on every golden vector ----------------------------------------------------


@pytest.mark.parametrize("raw", GOLDEN_BYTES, ids=GOLDEN_IDS)
def test_framer_whole(raw):
    f = Framer()
    f.feed(raw)
    assert list(f.frames()) == [raw]
    assert f.buffered == 0
    assert f.next_frame() is None


@pytest.mark.parametrize("raw", GOLDEN_BYTES, ids=GOLDEN_IDS)
def test_framer_byte_by_byte(raw):
    f = Framer()
    out = []
    for i in range(len(raw)):
        f.feed(raw[i : i + 1])
        got = list(f.frames())
        if i < len(raw) - 1:
            assert got == []
            assert f.buffered == i + 1
        out += got
    assert out == [raw]
    assert decode(out[0]) == decode(raw)


@pytest.mark.parametrize("raw", GOLDEN_BYTES, ids=GOLDEN_IDS)
def test_framer_with_trailing_data(raw):
    nxt = GOLDEN_BYTES[0]
    for cut in (1, 3, 4, 15, 16, 20):
        f = Framer()
        f.feed(raw + nxt[:cut])
        assert list(f.frames()) == [raw]
        assert f.buffered == cut
        f.feed(nxt[cut:])
        assert list(f.frames()) == [nxt]
        assert f.buffered == 0


def test_framer_all_goldens_in_one_chunk():
    stream = b"".join(GOLDEN_BYTES)
    f = Framer()
    f.feed(stream)
    frames = list(f.frames())
    assert frames == GOLDEN_BYTES
    assert [decode(fr) for fr in frames] == [p for _, p, _ in GOLDEN]


@given(st.lists(st.integers(1, 64), min_size=1, max_size=200))
@settings(max_examples=50, deadline=None)
def test_framer_any_chunking(sizes):
    stream = b"".join(GOLDEN_BYTES)
    f = Framer()
    frames: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        f.feed(stream[pos : pos + n])
        pos += n
        i += 1
        frames += f.frames()
    assert frames == GOLDEN_BYTES
    assert f.buffered == 0


# --- bad input: framing -------------------------------------------------------------------


def hdr(length: int, cid: int = 0x15, status: int = 0, seq: int = 9) -> bytes:
    return struct.pack(">IIII", length, cid, status, seq)


@pytest.mark.parametrize("length", [0, 1, 15])
def test_framer_rejects_command_length_below_header(length):
    f = Framer()
    f.feed(hdr(length))
    with pytest.raises(FramingError) as e:
        f.next_frame()
    assert e.value.status == S.ESME_RINVCMDLEN
    assert e.value.sequence_number == 9


def test_framer_rejects_oversized_from_the_first_four_octets():
    f = Framer()
    f.feed(b"\x80\x00\x00\x00")  # command_length 2 GiB, nothing else
    with pytest.raises(FramingError) as e:
        f.next_frame()
    assert e.value.status == S.ESME_RINVCMDLEN
    assert f.buffered == 4  # the body was never waited for
    # After a framing error the stream is untrusted: nothing more is accepted.
    with pytest.raises(FramingError):
        f.feed(GOLDEN_BYTES[0])
    with pytest.raises(FramingError):
        list(f.frames())


def test_framer_limit_is_configurable_and_inclusive():
    f = Framer()
    f.feed(hdr(65536))  # exactly the default 64 KiB: allowed, waits for the body
    assert f.next_frame() is None
    f = Framer()
    f.feed(hdr(65537))
    with pytest.raises(FramingError):
        f.next_frame()
    f = Framer(max_pdu_size=100)
    f.feed(hdr(101))
    with pytest.raises(FramingError):
        f.next_frame()
    f = Framer(max_pdu_size=100)
    f.feed(hdr(100) + bytes(84))
    assert f.next_frame() == hdr(100) + bytes(84)


def test_framer_waits_for_a_whole_length_prefix():
    f = Framer()
    for b in b"\x80\x00\x00":
        f.feed(bytes([b]))
        assert f.next_frame() is None
    f.feed(b"\x00")
    with pytest.raises(FramingError):
        f.next_frame()


def test_framer_good_frames_before_a_bad_one_are_delivered():
    f = Framer()
    f.feed(GOLDEN_BYTES[0] + hdr(3))
    it = f.frames()
    assert next(it) == GOLDEN_BYTES[0]
    with pytest.raises(FramingError):
        next(it)


# --- bad input: decode --------------------------------------------------------------------


def frame(cid: int, body: bytes, seq: int = 77, status: int = 0) -> bytes:
    return hdr(16 + len(body), cid, status, seq) + body


def expect(raw: bytes, status: int, seq: int = 77) -> DecodeError:
    with pytest.raises(DecodeError) as e:
        decode(raw)
    assert e.value.status == status, (S.name_of(e.value.status), S.name_of(status))
    assert e.value.sequence_number == seq
    assert isinstance(e.value, RemoteProtocolError)
    return e.value


def sm_body(
    service_type=b"",
    source=b"ACME",
    dest=b"33612345678",
    sched=b"",
    validity=b"",
    sm_length=None,
    sm=b"Hi",
    tail=b"",
) -> bytes:
    """A submit_sm body with the chosen fields spelled raw (NULs added by the caller's choice)."""
    return (
        service_type + b"\0"
        + b"\x05\x00" + source + b"\0"
        + b"\x01\x01" + dest + b"\0"
        + b"\x00\x00\x00"
        + sched + b"\0"
        + validity + b"\0"
        + b"\x00\x00\x00\x00"
        + bytes([len(sm) if sm_length is None else sm_length])
        + sm
        + tail
    )


def test_sm_body_helper_is_valid():
    p = decode(frame(4, sm_body()))
    assert p == P.SubmitSm(
        sequence_number=77,
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="33612345678",
        short_message=b"Hi",
    )


def test_shorter_than_a_header():
    for n in range(16):
        with pytest.raises(DecodeError) as e:
            decode(GOLDEN_BYTES[0][:n])
        assert e.value.status == S.ESME_RINVCMDLEN


def test_header_length_disagrees_with_frame():
    raw = frame(4, sm_body())
    expect(hdr(len(raw) + 1, 4, 0, 77) + raw[16:], S.ESME_RINVCMDLEN)
    expect(hdr(len(raw) - 1, 4, 0, 77) + raw[16:], S.ESME_RINVCMDLEN)
    expect(raw + b"\0", S.ESME_RINVCMDLEN)


@pytest.mark.parametrize("cid", [0x00000000, 0x0000000A, 0x00000099, 0x80000099, 0x0000000C, 0xFFFFFFFF])
def test_unknown_command_id(cid):
    err = expect(frame(cid, b"", seq=4242), S.ESME_RINVCMDID, seq=4242)
    assert err.command_id == cid
    assert err.known_command is None


def test_decode_error_knows_the_command():
    err = expect(frame(4, sm_body(source=b"A" * 30)), S.ESME_RINVSRCADR)
    assert err.command_id == CommandId.SUBMIT_SM
    assert err.known_command is CommandId.SUBMIT_SM


def test_truncated_inside_every_field_of_submit_sm():
    body = sm_body(sm=b"Hello", sched=b"", validity=b"000001000000000R")
    for cut in range(len(body)):
        err = expect(frame(4, body[:cut]), S.ESME_RINVCMDLEN)
        assert err.command_id == 4


@pytest.mark.parametrize(("name", "_p", "text"), GOLDEN, ids=GOLDEN_IDS)
def test_truncating_any_golden_body_fails_cleanly(name, _p, text):
    raw = unhex(text)
    cid = int.from_bytes(raw[4:8], "big")
    status = int.from_bytes(raw[8:12], "big")
    for cut in range(len(raw) - 16):
        seq = int.from_bytes(raw[12:16], "big")
        short = frame(cid, raw[16 : 16 + cut], seq=seq, status=status)
        try:
            got = decode(short)
        except DecodeError as e:
            assert e.status in (
                S.ESME_RINVCMDLEN,
                S.ESME_RINVOPTPARSTREAM,
                S.ESME_RINVPARLEN,
            ), (cut, S.name_of(e.status))
        else:
            # A cut may only be accepted at a boundary the codec tolerates: a response with
            # no body at all, a submit_multi_resp without no_unsuccess, or between TLVs
            # (then the mandatory part and the TLVs before the cut are intact).
            full = decode(raw)
            if cut == 0 and full.is_response:
                assert got == type(full)(sequence_number=full.sequence_number, command_status=status)
            elif type(got) is P.SubmitMultiResp and not got.unsuccess_smes:
                assert got.message_id == full.message_id
            else:
                assert got == replace(full, tlvs=full.tlvs[: len(got.tlvs)]), cut


def test_truncated_submit_multi_inside_dests():
    body = unhex(GOLDEN[GOLDEN_IDS.index("submit_multi")][2])[16:]
    # cut in dest_flag, in the SME's ton/npi, inside the address, inside dl_name
    for cut in (9, 10, 11, 13, 25, 27, 30):
        expect(frame(0x21, body[:cut]), S.ESME_RINVCMDLEN)


# C-octet strings: the limit counts the NUL (system_id "Var. max 16" holds 15 characters).


def bind_body(system_id=b"esme", password=b"pw", system_type=b"", address_range=b"") -> bytes:
    return system_id + b"\0" + password + b"\0" + system_type + b"\0" + b"\x34\x00\x00" + address_range + b"\0"


@pytest.mark.parametrize("cid", [1, 2, 9])
def test_system_id_limit(cid):
    assert decode(frame(cid, bind_body(system_id=b"A" * 15))).system_id == "A" * 15
    expect(frame(cid, bind_body(system_id=b"A" * 16)), S.ESME_RINVSYSID)
    expect(frame(cid, bind_body(system_id=b"A" * 40)), S.ESME_RINVSYSID)


def test_system_id_without_nul_at_body_end_is_a_short_body():
    # "esme" and no NUL, and the PDU ends: the body is truncated, not the string too long.
    expect(frame(2, b"esme"), S.ESME_RINVCMDLEN)
    # 16 octets and no NUL, PDU ends: the string is already too long.
    expect(frame(2, b"A" * 16), S.ESME_RINVSYSID)


def test_password_limit():
    assert decode(frame(2, bind_body(password=b"p" * 8))).password == "p" * 8
    expect(frame(2, bind_body(password=b"p" * 9)), S.ESME_RINVPASWD)


def test_system_type_and_address_range_limits():
    assert decode(frame(2, bind_body(system_type=b"t" * 12))).system_type == "t" * 12
    expect(frame(2, bind_body(system_type=b"t" * 13)), S.ESME_RINVSYSTYP)
    assert decode(frame(2, bind_body(address_range=b"9" * 40))).address_range == "9" * 40
    expect(frame(2, bind_body(address_range=b"9" * 41)), S.ESME_RINVPARLEN)


def test_outbind_limits():
    expect(frame(0x0B, b"S" * 16 + b"\0pw\0"), S.ESME_RINVSYSID)
    expect(frame(0x0B, b"SMSC\0" + b"p" * 9 + b"\0"), S.ESME_RINVPASWD)


def test_bind_resp_system_id_limit():
    expect(frame(0x80000002, b"S" * 16 + b"\0"), S.ESME_RINVSYSID)


def test_source_addr_limit():
    assert decode(frame(4, sm_body(source=b"1" * 20))).source_addr == "1" * 20
    expect(frame(4, sm_body(source=b"1" * 21)), S.ESME_RINVSRCADR)
    expect(frame(5, sm_body(source=b"1" * 21)), S.ESME_RINVSRCADR)


def test_destination_addr_limit():
    assert decode(frame(4, sm_body(dest=b"2" * 20))).destination_addr == "2" * 20
    expect(frame(4, sm_body(dest=b"2" * 21)), S.ESME_RINVDSTADR)


def test_service_type_limit():
    assert decode(frame(4, sm_body(service_type=b"ALERT"))).service_type == "ALERT"
    expect(frame(4, sm_body(service_type=b"ALERTS")), S.ESME_RINVSERTYP)


def test_data_sm_addresses_allow_64_octets():
    body = b"\0" + b"\x01\x01" + b"1" * 64 + b"\0" + b"\x01\x01" + b"2" * 64 + b"\0" + b"\0\0\0"
    p = decode(frame(0x103, body))
    assert p.source_addr == "1" * 64 and p.destination_addr == "2" * 64
    body = b"\0" + b"\x01\x01" + b"1" * 65 + b"\0" + b"\x01\x01" + b"2\0" + b"\0\0\0"
    expect(frame(0x103, body), S.ESME_RINVSRCADR)
    body = b"\0" + b"\x01\x01" + b"1\0" + b"\x01\x01" + b"2" * 65 + b"\0" + b"\0\0\0"
    expect(frame(0x103, body), S.ESME_RINVDSTADR)


def test_message_id_limit():
    assert decode(frame(0x80000004, b"9" * 64 + b"\0")).message_id == "9" * 64
    expect(frame(0x80000004, b"9" * 65 + b"\0"), S.ESME_RINVMSGID)
    expect(frame(3, b"9" * 65 + b"\0\x00\x00\0"), S.ESME_RINVMSGID)  # query_sm


def test_sm_length_over_254():
    assert len(decode(frame(4, sm_body(sm=b"x" * 254))).short_message) == 254
    expect(frame(4, sm_body(sm=b"x" * 255)), S.ESME_RINVMSGLEN)
    expect(frame(4, sm_body(sm_length=255, sm=b"")), S.ESME_RINVMSGLEN)
    expect(frame(7, b"42\0\x05\x00ACME\0\0\0\x01\x00\xff" + b"x" * 255), S.ESME_RINVMSGLEN)


def test_sm_length_beyond_the_body():
    expect(frame(4, sm_body(sm_length=10, sm=b"Hello")), S.ESME_RINVCMDLEN)
    expect(frame(4, sm_body(sm_length=1, sm=b"")), S.ESME_RINVCMDLEN)


@pytest.mark.parametrize(
    "value", [b"0", b"2401151230", b"000001000000000", b"0000010000000000R", b"0" * 30]
)
def test_schedule_delivery_time_must_be_empty_or_16(value):
    expect(frame(4, sm_body(sched=value)), S.ESME_RINVSCHED)


@pytest.mark.parametrize("value", [b"R", b"000001000000000", b"0000010000000000R"])
def test_validity_period_must_be_empty_or_16(value):
    expect(frame(4, sm_body(validity=value)), S.ESME_RINVEXPIRY)


def test_replace_sm_times():
    base = b"42\0\x05\x00ACME\0"
    expect(frame(7, base + b"123\0" + b"\0" + b"\x00\x00\x00"), S.ESME_RINVSCHED)
    expect(frame(7, base + b"\0" + b"123\0" + b"\x00\x00\x00"), S.ESME_RINVEXPIRY)


def test_query_sm_resp_final_date():
    expect(frame(0x80000003, b"42\0" + b"2401\0" + b"\x02\x00"), S.ESME_RINVPARLEN)


# TLVs.


@pytest.mark.parametrize(
    ("tlv", "status"),
    [
        (b"\x02\x0e\x00\x02\x00\x02", S.ESME_RINVPARLEN),  # sar_total_segments is 1 octet
        (b"\x02\x0c\x00\x01\x42", S.ESME_RINVPARLEN),  # sar_msg_ref_num is 2 octets
        (b"\x04\x23\x00\x02\x03\x00", S.ESME_RINVPARLEN),  # network_error_code is 3 octets
        (b"\x04\x23\x00\x04\x03\x00\x01\x00", S.ESME_RINVPARLEN),
        (b"\x04\x27\x00\x00", S.ESME_RINVPARLEN),  # message_state is 1 octet
        (b"\x02\x04\x00\x04\x00\x00\x00\x01", S.ESME_RINVPARLEN),  # user_message_reference
        (b"\x02\x0a\x00\x01\x01", S.ESME_RINVPARLEN),  # source_port
        (b"\x05\x01\x00\x02\x00\x01", S.ESME_RINVPARLEN),  # ussd_service_op
        (b"\x00\x1e\x00\x00", S.ESME_RINVPARLEN),  # receipted_message_id needs its NUL
        (b"\x00\x1e\x00\x42" + b"1" * 65 + b"\0", S.ESME_RINVPARLEN),  # > 65 octets
        (b"\x00\x1e\x00\x02" + b"42", S.ESME_RINVOPTPARAMVAL),  # C-string without its NUL
        (b"\x02", S.ESME_RINVOPTPARSTREAM),  # truncated TLV header
        (b"\x02\x0c\x00", S.ESME_RINVOPTPARSTREAM),
        (b"\x02\x0c\x00\x02\x00", S.ESME_RINVOPTPARSTREAM),  # value runs past the end
        (b"\x14\x00\x00\x10" + b"\0" * 15, S.ESME_RINVOPTPARSTREAM),  # vendor tag, same
        (b"\x04\x24\xff\xff" + b"x" * 100, S.ESME_RINVOPTPARSTREAM),  # message_payload
        (b"\x02\x0e\x00\x01\x01" + b"\x02\x0f\x00", S.ESME_RINVOPTPARSTREAM),  # 2nd TLV cut
    ],
)
def test_bad_tlvs(tlv, status):
    expect(frame(4, sm_body(tail=tlv)), status)
    expect(frame(5, sm_body(tail=tlv)), status)


def test_good_tlv_edges():
    # message_payload may be empty and may exceed 254 octets.
    p = decode(frame(4, sm_body(sm=b"", tail=b"\x04\x24\x00\x00")))
    assert p.tlvs == ((Tag.MESSAGE_PAYLOAD, b""),)
    p = decode(frame(4, sm_body(sm=b"", tail=b"\x04\x24\x01\x00" + b"y" * 256)))
    assert p.tlv(Tag.MESSAGE_PAYLOAD) == b"y" * 256
    # A zero-length vendor TLV, and the same tag twice, are kept in order.
    p = decode(frame(4, sm_body(tail=b"\x14\x00\x00\x00\x14\x00\x00\x01\x07")))
    assert p.tlvs == ((0x1400, b""), (0x1400, b"\x07"))
    # A C-string TLV ends at its first NUL (some SMSCs pad receipted_message_id).
    p = decode(frame(5, sm_body(tail=b"\x00\x1e\x00\x05" + b"42\0\0\0")))
    assert p.tlv(Tag.RECEIPTED_MESSAGE_ID) == "42"
    # receipted_message_id with the maximum 64 characters.
    p = decode(frame(5, sm_body(tail=b"\x00\x1e\x00\x41" + b"9" * 64 + b"\0")))
    assert p.tlv(Tag.RECEIPTED_MESSAGE_ID) == "9" * 64


# submit_multi.


def multi_body(dests: bytes) -> bytes:
    return b"\0\x05\x00ACME\0" + dests + b"\x00\x00\x00\0\0\x00\x00\x00\x00\x02Hi"


def test_submit_multi_without_destinations():
    expect(frame(0x21, multi_body(b"\x00")), S.ESME_RINVNUMDESTS)


def test_submit_multi_at_most_254_destinations():
    # §4.5.1: "A maximum of 254 destination addresses are allowed".
    p = decode(frame(0x21, multi_body(b"\xfe" + b"\x01\x01\x011\0" * 254)))
    assert len(p.dest_addresses) == 254
    assert decode(encode(p)) == p
    expect(frame(0x21, multi_body(b"\xff" + b"\x01\x01\x011\0" * 255)), S.ESME_RINVNUMDESTS)
    with pytest.raises(LocalProtocolError):
        encode(P.SubmitMulti(dest_addresses=(P.SmeAddress(1, 1, "1"),) * 255))


@pytest.mark.parametrize("flag", [0, 3, 0xFF])
def test_submit_multi_bad_dest_flag(flag):
    expect(frame(0x21, multi_body(b"\x01" + bytes([flag]) + b"\x01\x01123\0")), S.ESME_RINVDESTFLAG)
    # a bad flag on the second destination too
    expect(
        frame(0x21, multi_body(b"\x02\x01\x01\x01123\0" + bytes([flag]) + b"x\0")),
        S.ESME_RINVDESTFLAG,
    )


def test_submit_multi_long_dest_and_dl_name():
    expect(frame(0x21, multi_body(b"\x01\x01\x01\x01" + b"1" * 21 + b"\0")), S.ESME_RINVDSTADR)
    expect(frame(0x21, multi_body(b"\x01\x02" + b"d" * 21 + b"\0")), S.ESME_RINVDLNAME)
    p = decode(frame(0x21, multi_body(b"\x01\x02" + b"d" * 20 + b"\0")))
    assert p.dest_addresses == (P.DistributionList("d" * 20),)


def test_submit_multi_resp_truncated_unsuccess():
    body = b"43\0\x01\x01\x01" + b"336\0" + b"\x00\x00"  # error_status_code cut
    expect(frame(0x80000021, body), S.ESME_RINVCMDLEN)
    expect(frame(0x80000021, b"43\0\x02\x01\x01336\0\0\0\0\x0b"), S.ESME_RINVCMDLEN)


# Error responses without a body (§3.3: the body is not returned when status is not 0).


@pytest.mark.parametrize(
    ("cid", "status", "cls"),
    [
        (0x80000004, S.ESME_RSUBMITFAIL, P.SubmitSmResp),
        (0x80000002, S.ESME_RINVPASWD, P.BindTransmitterResp),
        (0x80000001, S.ESME_RINVSYSID, P.BindReceiverResp),
        (0x80000009, S.ESME_RBINDFAIL, P.BindTransceiverResp),
        (0x80000005, S.ESME_RX_T_APPN, P.DeliverSmResp),
        (0x80000103, S.ESME_RSYSERR, P.DataSmResp),
        (0x80000003, S.ESME_RQUERYFAIL, P.QuerySmResp),
        (0x80000021, S.ESME_RINVNUMDESTS, P.SubmitMultiResp),
        (0x80000008, S.ESME_RCANCELFAIL, P.CancelSmResp),
        (0x80000007, S.ESME_RREPLACEFAIL, P.ReplaceSmResp),
        (0x80000000, S.ESME_RINVCMDLEN, P.GenericNack),
    ],
)
def test_error_response_with_empty_body(cid, status, cls):
    raw = frame(cid, b"", seq=31, status=status)
    p = decode(raw)
    assert type(p) is cls
    assert p.command_status == status
    assert p.sequence_number == 31
    assert p == cls(sequence_number=31, command_status=status)


def test_golden_empty_error_responses():
    # submit_sm_resp, ESME_RSUBMITFAIL, no message_id at all
    p = decode(unhex("00000010 80000004 00000045 00000003"))
    assert p == P.SubmitSmResp(sequence_number=3, command_status=0x45, message_id="")
    # bind_transmitter_resp, ESME_RINVPASWD, no system_id
    p = decode(unhex("00000010 80000002 0000000e 00000001"))
    assert p == P.BindTransmitterResp(sequence_number=1, command_status=0x0E)


def test_request_with_empty_body_is_short():
    for cid in (1, 2, 3, 4, 5, 7, 8, 9, 0x0B, 0x21, 0x102, 0x103):
        expect(frame(cid, b""), S.ESME_RINVCMDLEN)


# --- encode refuses what decode would refuse ----------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        P.BindTransmitter(system_id="A" * 16),
        P.BindTransmitter(password="p" * 9),
        P.BindTransmitter(system_id="a\0b"),
        P.BindTransmitter(system_id="€uro"),  # not Latin-1
        P.BindTransmitter(interface_version=256),
        P.SubmitSm(source_addr="1" * 21),
        P.SubmitSm(destination_addr="2" * 21),
        P.SubmitSm(service_type="ALERTS"),
        P.SubmitSm(schedule_delivery_time="2401"),
        P.SubmitSm(validity_period="0" * 17),
        P.SubmitSm(short_message=b"x" * 255),
        P.SubmitSm(esm_class=-1),
        P.SubmitSm(tlvs=((Tag.SAR_TOTAL_SEGMENTS, 256),)),
        P.SubmitSm(tlvs=((Tag.NETWORK_ERROR_CODE, b"\x03\x00"),)),
        P.SubmitSm(tlvs=((Tag.RECEIPTED_MESSAGE_ID, "9" * 65),)),
        P.SubmitSm(tlvs=((Tag.MESSAGE_PAYLOAD, b"x" * 0x10000),)),
        P.SubmitSm(tlvs=((0x1400, b"x" * 0x10000),)),
        P.SubmitSm(tlvs=((0x10000, b""),)),
        P.SubmitMulti(dest_addresses=()),
        P.SubmitMulti(dest_addresses=(P.SmeAddress(1, 1, "1" * 21),)),
        P.SubmitMulti(dest_addresses=(P.DistributionList("d" * 21),)),
        P.SubmitMultiResp(unsuccess_smes=(P.UnsuccessSme(1, 1, "1", 1 << 32),)),
        P.QuerySmResp(final_date="x"),
        P.EnquireLink(command_status=-1),
        P.GenericNack(command_status=1 << 32),
        P.SubmitSm(tlvs=((Tag.NETWORK_ERROR_CODE, 3),)),  # bytes(3) would be 3 NULs
        P.SubmitSm(tlvs=((0x1400, 7),)),
        P.DeliverSm(tlvs=((Tag.RECEIPTED_MESSAGE_ID, "4\x002"),)),
        P.DeliverSm(tlvs=((Tag.RECEIPTED_MESSAGE_ID, "€"),)),
    ],
    ids=lambda p: type(p).__name__,
)
def test_encode_refuses_invalid(bad):
    with pytest.raises(LocalProtocolError):
        encode(bad)


@pytest.mark.parametrize("seq", [-1, 0x80000000])
def test_encode_refuses_bad_sequence(seq):
    with pytest.raises(LocalProtocolError):
        encode(P.EnquireLink(), sequence_number=seq)
    with pytest.raises(LocalProtocolError):
        encode(P.EnquireLink(sequence_number=seq))


def test_encode_limits_are_the_decode_limits():
    for p in (
        P.BindTransmitter(system_id="A" * 15, password="p" * 8, system_type="t" * 12, address_range="9" * 40),
        P.SubmitSm(service_type="ALERT", source_addr="1" * 20, destination_addr="2" * 20, short_message=b"x" * 254),
        P.DataSm(source_addr="1" * 64, destination_addr="2" * 64),
        P.SubmitMulti(dest_addresses=(P.SmeAddress(1, 1, "1" * 20), P.DistributionList("d" * 20))),
        P.SubmitSmResp(message_id="9" * 64),
    ):
        assert decode(encode(p)) == p


def test_bind_repr_hides_the_password():
    p = decode(GOLDEN_BYTES[0])
    assert "secret08" not in repr(p)
    assert "secret08" not in repr(P.Outbind(password="secret08"))


# --- hypothesis: round trips --------------------------------------------------------------

LATIN1 = st.characters(min_codepoint=1, max_codepoint=255)


def cstr(limit: int):
    return st.text(LATIN1, max_size=limit - 1)


TIME = st.one_of(st.just(""), st.text(LATIN1, min_size=16, max_size=16))
U8 = st.integers(0, 255)
ADDR21 = cstr(21)
SME = st.builds(P.SmeAddress, U8, U8, ADDR21)
DL = st.builds(P.DistributionList, ADDR21)
UNSUCCESS = st.builds(P.UnsuccessSme, U8, U8, ADDR21, st.integers(0, 0xFFFFFFFF))


def _known_tlv(tag: int):
    kind, lo, hi = T.SPEC[tag]
    if kind == T.INT:
        value = st.integers(0, (1 << (8 * lo)) - 1)
    elif kind == T.CSTR:
        value = st.text(LATIN1, min_size=lo - 1, max_size=min(hi, 80) - 1)
    else:
        value = st.binary(min_size=lo, max_size=min(hi, 300))
    return st.tuples(st.just(tag), value)


KNOWN_TLV = st.sampled_from(sorted(T.SPEC)).flatmap(_known_tlv)
UNKNOWN_TLV = st.tuples(
    st.integers(0, 0xFFFF).filter(lambda t: t not in T.SPEC), st.binary(max_size=40)
)
TLVS = st.lists(st.one_of(KNOWN_TLV, UNKNOWN_TLV), max_size=5).map(tuple)


def _field(spec):
    kind = spec[0]
    if kind == P.CSTR:
        return cstr(spec[2])
    if kind == P.TIME:
        return TIME
    if kind == P.U8:
        return U8
    if kind == P.U32:
        return st.integers(0, 0xFFFFFFFF)
    if kind == P.SM:
        return st.binary(max_size=254)
    if kind == P.DESTS:
        return st.lists(st.one_of(SME, DL), min_size=1, max_size=6).map(tuple)
    if kind == P.UNSUCCESS:
        return st.lists(UNSUCCESS, max_size=6).map(tuple)
    raise AssertionError(kind)


def pdu_strategy(cls):
    kwargs = {spec[1]: _field(spec) for spec in cls.BODY}
    return st.builds(
        cls,
        sequence_number=st.integers(0, 0x7FFFFFFF),
        command_status=st.integers(0, 0xFFFFFFFF),
        tlvs=TLVS,
        **kwargs,
    )


ANY_PDU = st.one_of([pdu_strategy(cls) for cls in P.ALL_PDUS])


@pytest.mark.parametrize("cls", P.ALL_PDUS, ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_every_class(cls, data):
    p = data.draw(pdu_strategy(cls))
    raw = encode(p)
    assert int.from_bytes(raw[:4], "big") == len(raw)
    assert int.from_bytes(raw[4:8], "big") == cls.command_id
    back = decode(raw)
    assert type(back) is cls
    assert back == p
    assert encode(back) == raw


@given(st.lists(ANY_PDU, min_size=1, max_size=8), st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_through_framer_any_chunking(pdus, data):
    stream = b"".join(encode(p) for p in pdus)
    f = Framer()
    out = []
    pos = 0
    while pos < len(stream):
        n = data.draw(st.integers(1, 300))
        f.feed(stream[pos : pos + n])
        pos += n
        out += [decode(fr) for fr in f.frames()]
    assert out == pdus


# --- hypothesis: fuzz ---------------------------------------------------------------------

COMMAND_IDS = sorted(P.PDU_CLASS)


def must_not_crash(raw: bytes) -> None:
    try:
        p = decode(raw)
    except RemoteProtocolError as e:
        assert isinstance(e, DecodeError)
        assert isinstance(e.status, int) and e.status != S.ESME_ROK
        return
    # Whatever decodes must encode again (perhaps not byte-identical: lenient bodies).
    assert isinstance(p, P.Pdu)
    assert decode(encode(p)) == p


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_random_bytes(raw):
    must_not_crash(raw)


@given(st.sampled_from(COMMAND_IDS), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
@settings(max_examples=600, deadline=None)
def test_fuzz_random_body_with_sound_header(cid, status, body):
    must_not_crash(frame(cid, body, status=status))


@given(
    st.sampled_from(GOLDEN_BYTES),
    st.lists(st.tuples(st.integers(16, 400), st.integers(0, 255)), max_size=6),
    st.integers(16, 400),
    st.binary(max_size=20),
)
@settings(max_examples=600, deadline=None)
def test_fuzz_mutated_goldens(raw, flips, cut, extra):
    body = bytearray(raw[16:])
    for pos, value in flips:
        if body:
            body[(pos - 16) % len(body)] = value
    body = bytes(body[: max(0, cut - 16)]) + extra
    cid = int.from_bytes(raw[4:8], "big")
    must_not_crash(frame(cid, body, status=int.from_bytes(raw[8:12], "big")))
    # And with the original header kept (command_length now lying).
    must_not_crash(raw[:16] + body)


@given(ANY_PDU, st.integers(0, 2000), st.integers(0, 255))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_random_pdus(p, pos, value):
    raw = bytearray(encode(p))
    if len(raw) > 16:
        i = 16 + pos % (len(raw) - 16)
        raw[i] = value
        must_not_crash(bytes(raw))
        cid = int.from_bytes(raw[4:8], "big")
        must_not_crash(frame(cid, bytes(raw[16 : 16 + pos % (len(raw) - 15)])))


@given(st.lists(st.binary(max_size=80), max_size=20), st.integers(16, 4096))
@settings(max_examples=300, deadline=None)
def test_fuzz_framer_random_chunks(chunks, max_size):
    f = Framer(max_pdu_size=max_size)
    try:
        for chunk in chunks:
            f.feed(chunk)
            for fr in f.frames():
                assert 16 <= len(fr) <= max_size
                must_not_crash(fr)
    except FramingError as e:
        assert e.status == S.ESME_RINVCMDLEN
        with pytest.raises(FramingError):
            f.feed(b"x")
    # The framer never holds more than what was fed.
    assert f.buffered <= sum(map(len, chunks))


@given(st.lists(st.sampled_from(GOLDEN_BYTES), min_size=1, max_size=6), st.binary(max_size=40), st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_fuzz_framer_goldens_then_garbage(good, garbage, step):
    stream = b"".join(good) + garbage
    f = Framer()
    frames = []
    try:
        for i in range(0, len(stream), step):
            f.feed(stream[i : i + step])
            frames += f.frames()
    except FramingError:
        pass
    # Every good PDU before the garbage came out intact and in order.
    assert frames[: len(good)] == good
    for fr in frames[len(good) :]:
        must_not_crash(fr)


def test_a_pdu_body_is_encoded_once_and_never_goes_stale():
    """encode() keeps the body in the frozen PDU: a second encode (another sequence number)
    reuses it, a pickled copy carries it, and replace() makes a PDU that encodes afresh."""
    import pickle

    pdu = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"hi",
                     tlvs=((0x0204, 7),))
    first = encode(pdu, 1)
    assert encode(pdu, 2) == first[:12] + (2).to_bytes(4, "big") + first[16:]
    copy = pickle.loads(pickle.dumps(pdu))
    assert copy == pdu and encode(copy, 1) == first
    changed = replace(pdu, destination_addr="33699999999")
    assert changed != pdu
    assert decode(encode(changed, 1)).destination_addr == "33699999999"
    assert repr(pdu) == repr(P.SubmitSm(source_addr="ACME", destination_addr="33612345678",
                                        short_message=b"hi", tlvs=((0x0204, 7),)))
