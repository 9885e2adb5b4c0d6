"""GSM 03.38 alphabet: tables, escapes, packing, and that the fast paths agree with the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.gsm7 import (
    BASIC_TABLE,
    EXTENSION_TABLE,
    decode_unpacked,
    encode_unpacked,
    is_gsm7,
    pack,
    septet_count,
    unpack,
)

GSM_CHARS = [ch for ch in BASIC_TABLE if ch != "\x1b"] + list(EXTENSION_TABLE.values())
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=400)
septets = st.binary(max_size=300).map(lambda b: bytes(x & 0x7F for x in b))


def reference_encode(text: str) -> bytes:
    """Slow, obviously-right encoder the fast one is checked against."""
    out = bytearray()
    for ch in text:
        if ch in EXTENSION_TABLE.values():
            out += bytes([0x1B, next(k for k, v in EXTENSION_TABLE.items() if v == ch)])
        elif ch != "\x1b" and ch in BASIC_TABLE:
            out.append(BASIC_TABLE.index(ch))
        else:
            raise ValueError(ch)
    return bytes(out)


class TestTables:
    def test_well_known_positions(self):
        assert encode_unpacked("@") == b"\x00"
        assert encode_unpacked("£$¥") == b"\x01\x02\x03"
        assert encode_unpacked("_") == b"\x11"
        assert encode_unpacked("Δ") == b"\x10"
        assert encode_unpacked("¤") == b"\x24"
        assert encode_unpacked("¡¿") == b"\x40\x60"
        assert encode_unpacked("àü") == b"\x7f\x7e"
        assert encode_unpacked("\n\r") == b"\x0a\x0d"
        assert encode_unpacked("Hello") == b"Hello"

    @pytest.mark.parametrize(
        "char, code",
        [("\f", 0x0A), ("^", 0x14), ("{", 0x28), ("}", 0x29), ("\\", 0x2F),
         ("[", 0x3C), ("~", 0x3D), ("]", 0x3E), ("|", 0x40), ("€", 0x65)],
    )
    def test_extension_characters_cost_two_septets(self, char, code):
        assert encode_unpacked(char) == bytes([0x1B, code])
        assert septet_count(char) == 2
        assert decode_unpacked(bytes([0x1B, code])) == char

    def test_all_characters_round_trip(self):
        text = "".join(GSM_CHARS)
        assert encode_unpacked(text) == reference_encode(text)
        assert decode_unpacked(encode_unpacked(text)) == text
        assert septet_count(text) == 127 + 2 * 10

    @pytest.mark.parametrize(
        "text",
        ["`", "ç", "ê", "\x1b", "\x00", "\t", "\x80", "\x9f", "ア", "😀"]
        + ["Δ\x81", "€\x80", "a€ç"],
    )
    def test_outside_the_alphabet(self, text):
        assert not is_gsm7(text)
        with pytest.raises(ValueError, match="not in the GSM 03.38 alphabet"):
            encode_unpacked(text)
        with pytest.raises(ValueError):
            septet_count(text)

    def test_error_names_the_character(self):
        with pytest.raises(ValueError, match=r"'ç' \(U\+00E7\) at index 3"):
            encode_unpacked("abcç")


class TestDecodeEscapes:
    def test_unknown_escape_shows_the_base_character(self):
        assert decode_unpacked(b"\x1bA") == "A"
        assert decode_unpacked(b"x\x1b\x0dy") == "x\ry"

    def test_double_escape_and_trailing_escape_show_a_space(self):
        assert decode_unpacked(b"a\x1b\x1bb") == "a b"
        assert decode_unpacked(b"a\x1b") == "a "
        assert decode_unpacked(b"\x1b") == " "
        assert decode_unpacked(b"\x1b\x1b\x1be") == " €"

    def test_octets_above_0x7f(self):
        with pytest.raises(ValueError):
            decode_unpacked(b"ab\x80")
        with pytest.raises(ValueError):
            decode_unpacked(b"\x1b\xe5")
        assert decode_unpacked(b"ab\x80", "replace") == "ab\ufffd"
        assert decode_unpacked(b"\x1b\x65\xff\x1b", "replace") == "€\ufffd "

    @given(st.binary(max_size=300))
    def test_garbage_never_raises_beyond_valueerror(self, data):
        try:
            text = decode_unpacked(data)
        except ValueError:
            assert any(b >= 0x80 for b in data)
        else:
            assert is_gsm7(text)
        assert len(decode_unpacked(data, "replace")) <= len(data)


class TestProperties:
    @given(gsm_text)
    def test_round_trip(self, text):
        encoded = encode_unpacked(text)
        assert encoded == reference_encode(text)
        assert decode_unpacked(encoded) == text
        assert septet_count(text) == len(encoded)
        assert is_gsm7(text)

    # Mostly GSM-7, plus characters the fast paths use as placeholders or markers.
    confusers = ["\x80", "\x81", "\x8a", "\xff", "ç", "`", "\x1b", "Ж"]
    confusing_text = st.text(alphabet=st.sampled_from(GSM_CHARS + confusers), max_size=50)

    @given(st.one_of(st.text(max_size=50), confusing_text))
    def test_is_gsm7_agrees_with_encode(self, text):
        try:
            expected = reference_encode(text)
        except ValueError:
            assert not is_gsm7(text)
            with pytest.raises(ValueError):
                encode_unpacked(text)
        else:
            assert is_gsm7(text)
            assert encode_unpacked(text) == expected


class TestPacking:
    def test_golden_hellohello(self):
        assert pack(encode_unpacked("hellohello")).hex() == "e8329bfd4697d9ec37"
        assert decode_unpacked(unpack(bytes.fromhex("e8329bfd4697d9ec37"), 10)) == "hellohello"

    def test_golden_eight_septets_fill_seven_octets(self):
        # TS 23.038 §6.1.2.1.1: "12345678" packs into 7 octets.
        assert pack(b"12345678").hex() == "31d98c56b3dd70"
        assert len(pack(b"1234567")) == 7  # 7 spare bits stay zero

    def test_fill_bits_after_a_udh(self):
        # After a 6-octet UDH (48 bits), 1 fill bit puts the text on a septet boundary.
        assert pack(b"hi") == bytes.fromhex("e834")
        assert pack(b"hi", fill_bits=1) == bytes.fromhex("d069")
        assert unpack(bytes.fromhex("d069"), 2, fill_bits=1) == b"hi"

    @given(septets, st.integers(0, 6))
    def test_round_trip_with_fill_bits(self, data, fill):
        packed = pack(data, fill)
        assert len(packed) == (len(data) * 7 + fill + 7) // 8
        assert unpack(packed, len(data), fill) == data
        assert int.from_bytes(packed, "little") & ((1 << fill) - 1) == 0

    def test_rejects(self):
        with pytest.raises(ValueError):
            pack(b"\x80")
        with pytest.raises(ValueError):
            pack(b"a", fill_bits=7)
        with pytest.raises(ValueError):
            unpack(b"\x00", 2)
        with pytest.raises(ValueError):
            unpack(b"\x00" * 7, 8, fill_bits=1)

