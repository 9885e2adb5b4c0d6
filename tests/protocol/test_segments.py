"""Counting, splitting, UDH parsing and reassembly of long messages."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import CommandStatus, DataCoding
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.gsm7 import BASIC_TABLE, EXTENSION_TABLE, pack
from protocol.segments import (
    Concat,
    Reassembler,
    Segment,
    count_segments,
    parse_udh,
    split,
)
from protocol.text import choose_encoding, decode_text

GSM_CHARS = [ch for ch in BASIC_TABLE if ch != "\x1b"] + list(EXTENSION_TABLE.values())
EMOJI = "😀"


def payload_lengths(message, data_coding=None, **kw):
    return [len(s.payload) for s in split(message, data_coding, reference=7, **kw)]


class TestCountBoundaries:
    @pytest.mark.parametrize(
        "length, parts",
        [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
    )
    def test_gsm7(self, length, parts):
        assert count_segments("a" * length) == parts
        assert len(split("a" * length, reference=1)) == parts

    def test_extension_characters_count_two(self):
        assert count_segments("a" * 158 + "€") == 1
        assert count_segments("a" * 159 + "€") == 2
        assert count_segments("[" * 80) == 1
        assert count_segments("[" * 81) == 2

    def test_escape_straddling_the_part_boundary_moves_whole(self):
        text = "a" * 152 + "€" + "b" * 10
        assert payload_lengths(text, 0) == [152, 12]
        first, second = split(text, 0, reference=7)
        assert second.payload.startswith(b"\x1b\x65")
        # 152 + 2 + 152 = 306 septets would fit 2 parts of 153 if escapes could straddle.
        assert count_segments("a" * 152 + "€" + "a" * 152) == 3
        assert count_segments("a" * 151 + "€" + "a" * 153) == 2

    @pytest.mark.parametrize("length, parts", [(70, 1), (71, 2), (134, 2), (135, 3)])
    def test_ucs2(self, length, parts):
        text = "Ж" * length
        assert choose_encoding(text) is DataCoding.UCS2
        assert count_segments(text) == parts

    def test_surrogate_pair_at_the_boundary(self):
        assert count_segments("Ж" * 68 + EMOJI) == 1  # 70 UTF-16 units
        assert count_segments("Ж" * 69 + EMOJI) == 2  # 71
        text = "Ж" * 66 + EMOJI + "Ж" * 10
        assert payload_lengths(text) == [132, 24]
        assert count_segments("Ж" * 66 + EMOJI + "Ж" * 66) == 3
        assert count_segments("Ж" * 65 + EMOJI + "Ж" * 67) == 2

    @pytest.mark.parametrize("length, parts", [(140, 1), (141, 2), (268, 2), (269, 3)])
    def test_binary(self, length, parts):
        assert count_segments(b"\xff" * length) == parts
        assert count_segments(b"\xff" * length, DataCoding.BINARY) == parts

    def test_latin1_counts_as_8_bit(self):
        assert count_segments("é" * 140, DataCoding.LATIN_1) == 1
        assert count_segments("é" * 141, DataCoding.LATIN_1) == 2

    def test_udh16_parts_are_one_unit_smaller(self):
        assert count_segments("a" * 304, method="udh16") == 2
        assert count_segments("a" * 305, method="udh16") == 3
        assert count_segments(b"x" * 266, method="udh16") == 2
        assert count_segments(b"x" * 267, method="udh16") == 3
        assert count_segments("Ж" * 132, method="udh16") == 2
        assert count_segments("Ж" * 133, method="udh16") == 3

    def test_stop_mention_rule(self):
        # DESIGN: 144 + 16 characters = 1 SMS; 145 + 16 -> 2.
        mention = "STOP au 36180 ok"
        assert len(mention) == 16
        assert count_segments("x" * 144 + mention) == 1
        assert count_segments("x" * 145 + mention) == 2

    def test_encoded_bytes_count_like_text(self):
        assert count_segments(b"\x1b\x65" * 80, DataCoding.DEFAULT) == 1
        assert count_segments(b"\x1b\x65" * 81, DataCoding.DEFAULT) == 2


class TestSplit:
    def test_single_part_has_no_udh_or_sar(self):
        for method in ("udh8", "udh16", "sar", "payload"):
            (seg,) = split("hello", method=method)
            assert seg == Segment(b"hello", None, None, DataCoding.DEFAULT)
            assert seg.short_message == b"hello"

    def test_udh8_golden(self):
        segs = split("a" * 200, DataCoding.DEFAULT, reference=0x2A)
        assert [s.udh for s in segs] == [b"\x05\x00\x03\x2a\x02\x01", b"\x05\x00\x03\x2a\x02\x02"]
        assert segs[0].short_message == b"\x05\x00\x03\x2a\x02\x01" + b"a" * 153
        assert segs[1].payload == b"a" * 47
        assert all(s.sar is None for s in segs)

    def test_udh16_golden(self):
        segs = split("a" * 200, DataCoding.DEFAULT, method="udh16", reference=0x1234)
        assert segs[0].udh == b"\x06\x08\x04\x12\x34\x02\x01"
        assert [len(s.payload) for s in segs] == [152, 48]

    def test_sar(self):
        segs = split("a" * 200, 0, method="sar", reference=300)
        assert [s.sar for s in segs] == [(300, 2, 1), (300, 2, 2)]
        assert all(s.udh is None for s in segs)
        assert [len(s.payload) for s in segs] == [152, 48]  # SMSC needs a 16-bit ref UDH
        assert [len(s.payload) for s in split("a" * 200, 0, method="sar", reference=3)] == [153, 47]

    def test_payload_method_keeps_the_message_whole(self):
        (seg,) = split("Ж" * 500, method="payload")
        assert seg.payload == ("Ж" * 500).encode("utf-16-be")
        assert seg.udh is None and seg.sar is None and seg.data_coding == DataCoding.UCS2
        with pytest.raises(LocalProtocolError):
            split(b"x" * 70_000, method="payload")

    def test_data_coding_kept_as_given(self):
        segs = split("a" * 200, 0xF1, reference=1)
        assert {s.data_coding for s in segs} == {0xF1}

    def test_misuse(self):
        with pytest.raises(LocalProtocolError, match="reference"):
            split("a" * 200)
        with pytest.raises(LocalProtocolError, match="reference"):
            split("a" * 200, reference=256)
        split("a" * 200, method="udh16", reference=65535)
        with pytest.raises(LocalProtocolError, match="method"):
            split("a", method="udh7")
        with pytest.raises(LocalProtocolError):
            split("ç", DataCoding.DEFAULT)
        with pytest.raises(LocalProtocolError):
            split("text", DataCoding.BINARY)
        with pytest.raises(LocalProtocolError):
            split(b"\x00a\x00", DataCoding.UCS2)

    def test_never_truncates(self):
        assert len(split("a" * 153 * 255, reference=1)) == 255
        assert count_segments("a" * (153 * 255 + 1)) == 256
        with pytest.raises(LocalProtocolError, match="256 parts"):
            split("a" * (153 * 255 + 1), reference=1)


class TestParseUdh:
    def test_concat_8(self):
        parsed = parse_udh(b"\x05\x00\x03\x2a\x03\x02body")
        assert parsed.concat == Concat(0x2A, 3, 2)
        assert parsed.ies == [(0x00, b"\x2a\x03\x02")]
        assert parsed.body == b"body"

    def test_concat_16_with_other_ies(self):
        # Port addressing (0x05) before a 16-bit concatenation IE.
        sm = b"\x0c\x05\x04\x0b\x84\x23\xf0\x08\x04\xbe\xef\x02\x02xy"
        ies, concat, body = parse_udh(sm)
        assert ies == [(0x05, b"\x0b\x84\x23\xf0"), (0x08, b"\xbe\xef\x02\x02")]
        assert concat == Concat(0xBEEF, 2, 2)
        assert body == b"xy"

    def test_no_concat_and_empty_udh(self):
        assert parse_udh(b"\x00abc") == ([], None, b"abc")
        assert parse_udh(b"\x03\x24\x01\x01x").concat is None

    def test_last_concat_ie_wins(self):
        sm = b"\x0b\x00\x03\x01\x02\x01\x08\x04\x00\x05\x03\x03"
        assert parse_udh(sm).concat == Concat(5, 3, 3)

    @pytest.mark.parametrize(
        "sm",
        [
            b"",
            b"\x06\x00\x03\x01\x02\x01",  # length beyond the message
            b"\x01\x00",  # IE header cut
            b"\x03\x00\x03\x01",  # IE data overruns the UDH
            b"\x04\x00\x02\x01\x02",  # concat IE of the wrong length
            b"\x05\x00\x03\x01\x00\x00x",  # total 0
            b"\x05\x00\x03\x01\x02\x00x",  # seqnum 0
            b"\x05\x00\x03\x01\x02\x03x",  # seqnum > total
        ],
    )
    def test_invalid(self, sm):
        with pytest.raises(RemoteProtocolError) as exc:
            parse_udh(sm)
        assert exc.value.status == CommandStatus.ESME_RINVESMCLASS

    def test_lenient_mode_ignores_bad_concat_values(self):
        ies, concat, body = parse_udh(b"\x05\x00\x03\x01\x02\x03x", strict=False)
        assert concat is None and body == b"x" and ies == [(0, b"\x01\x02\x03")]

    @given(st.binary(max_size=200))
    def test_garbage_raises_only_remote_protocol_error(self, data):
        try:
            parsed = parse_udh(data)
        except RemoteProtocolError as exc:
            assert exc.status == CommandStatus.ESME_RINVESMCLASS
        else:
            assert len(parsed.body) < len(data)


class TestConcat:
    def test_from_sar(self):
        assert Concat.from_sar(65535, 255, 255) == Concat(65535, 255, 255)
        for args in [(1, 0, 0), (1, 2, 0), (1, 2, 3), (70000, 2, 1), (1, 256, 1)]:
            with pytest.raises(RemoteProtocolError) as exc:
                Concat.from_sar(*args)
            assert exc.value.status == CommandStatus.ESME_RINVOPTPARAMVAL


class TestReassembler:
    def test_any_order_and_duplicates(self):
        r = Reassembler()
        assert r.add("k", Concat(1, 3, 3), b"C", now=0) is None
        assert r.add("k", Concat(1, 3, 1), b"A", now=1) is None
        assert r.add("k", Concat(1, 3, 1), b"X", now=2) is None  # duplicate ignored
        assert len(r) == 1
        assert r.add("k", Concat(1, 3, 2), b"B", now=3) == b"ABC"
        assert len(r) == 0

    def test_single_part_passes_through(self):
        r = Reassembler()
        assert r.add("k", Concat(9, 1, 1), b"all", now=0) == b"all"
        assert len(r) == 0

    def test_keys_are_separate(self):
        r = Reassembler()
        assert r.add(("a", 1), Concat(1, 2, 1), b"a1", now=0) is None
        assert r.add(("b", 1), Concat(1, 2, 2), b"b2", now=0) is None
        assert r.add(("a", 1), Concat(1, 2, 2), b"a2", now=0) == b"a1a2"
        assert len(r) == 1

    def test_expire(self):
        r = Reassembler(timeout=60)
        r.add("old", Concat(1, 2, 1), b"o", now=0)
        r.add("new", Concat(2, 2, 1), b"n", now=30)
        assert r.expire(now=59.9) == []
        assert r.expire(now=60) == [("old", {1: b"o"})]
        assert r.expire(now=89) == []
        assert r.expire(now=95) == [("new", {1: b"n"})]
        assert len(r) == 0

    def test_bounded(self):
        r = Reassembler(max_pending=2)
        for i in range(4):
            r.add(i, Concat(i, 2, 1), bytes([i]), now=i)
        assert len(r) == 2
        assert r.expire(now=4) == [(0, {1: b"\x00"}), (1, {1: b"\x01"})]
        assert r.expire(now=4) == []
        assert r.add(3, Concat(3, 2, 2), b"!", now=5) == b"\x03!"

    def test_reused_reference_with_other_total_restarts(self):
        r = Reassembler()
        r.add("k", Concat(1, 3, 1), b"old", now=0)
        assert r.add("k", Concat(1, 2, 1), b"A", now=1) is None
        assert r.add("k", Concat(1, 2, 2), b"B", now=2) == b"AB"
        assert r.expire(now=3) == [("k", {1: b"old"})]


# --- properties ---------------------------------------------------------------------------

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=1200)
# Bias towards the characters that make boundaries interesting.
tricky_text = st.lists(
    st.sampled_from(["a", "é", "€", "[", "Ж", EMOJI, "🇫🇷"]), max_size=700
).map("".join)
valid_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), max_size=500
)  # lone surrogates are not text
any_text = st.one_of(gsm_text, tricky_text, valid_text)
methods = st.sampled_from(["udh8", "udh16", "sar"])


def on_air_octets(segment: Segment) -> int:
    """User-data octets of this part on the air: UDH + payload, GSM-7 packed after fill bits."""
    udh_len = len(segment.udh) if segment.udh else (6 if segment.sar else 0)
    if segment.sar and segment.sar[0] > 0xFF:
        udh_len = 7
    if segment.data_coding == DataCoding.DEFAULT:
        fill = (7 - udh_len * 8 % 7) % 7
        return udh_len + len(pack(segment.payload, fill))
    return udh_len + len(segment.payload)


@settings(max_examples=300)
@given(any_text, methods, st.integers(0, 255), st.randoms(use_true_random=False))
def test_split_then_reassemble_shuffled(text, method, reference, rnd):
    dc = choose_encoding(text)
    segments = split(text, dc, method=method, reference=reference)
    assert len(segments) == count_segments(text, dc, method=method)
    reassembler = Reassembler()
    result = None
    order = list(segments)
    rnd.shuffle(order)
    for i, seg in enumerate(order):
        assert on_air_octets(seg) <= 140
        # No part ends inside an escape pair or a surrogate pair: each decodes on its own.
        decode_text(seg.payload, dc)
        if seg.udh is not None:
            _, concat, body = parse_udh(seg.short_message)
            assert body == seg.payload
        elif seg.sar is not None:
            concat = Concat.from_sar(*seg.sar)
        else:
            assert len(segments) == 1
            concat, body = Concat(reference, 1, 1), seg.payload
        result = reassembler.add("key", concat, body if seg.udh else seg.payload, now=i)
        assert (result is None) == (i < len(order) - 1)
    assert decode_text(result, dc) == text


@given(st.binary(max_size=2000), st.sampled_from(["udh8", "udh16"]))
def test_binary_split_reassembles(data, method):
    segments = split(data, DataCoding.BINARY, method=method, reference=200)
    assert len(segments) == count_segments(data, method=method)
    assert all(len(s.short_message) <= 140 for s in segments)
    assert b"".join(s.payload for s in segments) == data


@given(gsm_text)
def test_parts_are_full_unless_an_escape_was_moved(text):
    segments = split(text, DataCoding.DEFAULT, reference=1)
    for seg in segments[:-1]:
        assert len(seg.payload) == 153 or (
            len(seg.payload) == 152 and segments[segments.index(seg) + 1].payload[0] == 0x1B
        )


def test_shuffled_reassembly_with_many_parts():
    text = "".join(random.Random(4).choice(GSM_CHARS) for _ in range(153 * 40))
    segments = split(text, 0, reference=77)
    random.Random(5).shuffle(segments)
    r = Reassembler()
    results = [r.add("k", parse_udh(s.short_message).concat, s.payload, now=0) for s in segments]
    assert results[:-1] == [None] * (len(segments) - 1)
    assert decode_text(results[-1], 0) == text
