"""data_coding <-> text: choice of coding, encode/decode per coding, and the errors' statuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import CommandStatus, DataCoding
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.text import (
    TextDecodeError,
    TextEncodeError,
    UnsupportedDataCoding,
    canonical_coding,
    choose_encoding,
    decode_text,
    encode_text,
    is_binary,
)


class TestChooseEncoding:
    def test_gsm_text_is_default(self):
        assert choose_encoding("Hello @ £5 {ok} €") is DataCoding.DEFAULT
        assert choose_encoding("") is DataCoding.DEFAULT

    def test_latin1_only_when_allowed(self):
        assert choose_encoding("Ça coûte") is DataCoding.UCS2
        assert choose_encoding("Ça coûte", allow_latin1=True) is DataCoding.LATIN_1

    def test_ucs2_for_the_rest(self):
        assert choose_encoding("Привет") is DataCoding.UCS2
        # '€' is not in Latin-1.
        assert choose_encoding("coûte 5 €", allow_latin1=True) is DataCoding.UCS2
        assert choose_encoding("ok 😀") is DataCoding.UCS2


class TestEncodeDecode:
    @pytest.mark.parametrize(
        "text, dc, octets",
        [
            ("@Hi€", 0, b"\x00Hi\x1b\x65"),
            ("Hi!", 1, b"Hi!"),
            ("coûté", 3, "coûté".encode("latin-1")),
            ("Да", 6, "Да".encode("iso8859-5")),
            ("שלום", 7, "שלום".encode("iso8859-8")),
            ("Hé", 8, b"\x00H\x00\xe9"),
            ("😀", 8, b"\xd8\x3d\xde\x00"),
            ("@", 0xF0, b"\x00"),  # GSM message class 0, 7-bit
            ("@", 0xD1, b"\x00"),  # message waiting, store, GSM-7
            ("é", 0xE0, b"\x00\xe9"),  # message waiting, UCS2
        ],
    )
    def test_golden(self, text, dc, octets):
        assert encode_text(text, dc) == octets
        assert decode_text(octets, dc) == text

    def test_surrogate_pair_decoded_as_one_character(self):
        assert decode_text("a😀b".encode("utf-16-be"), DataCoding.UCS2) == "a😀b"

    def test_odd_ucs2_length(self):
        with pytest.raises(TextDecodeError) as exc:
            decode_text(b"\x00H\x00", DataCoding.UCS2)
        assert exc.value.status == CommandStatus.ESME_RINVMSGLEN
        with pytest.raises(TextDecodeError):
            decode_text(b"\x00H\x00", DataCoding.UCS2, errors="replace")

    def test_lone_surrogate(self):
        with pytest.raises(TextDecodeError):
            decode_text(b"\xd8\x3d\x00a", DataCoding.UCS2)
        assert decode_text(b"\xd8\x3d\x00a", DataCoding.UCS2, "replace") == "\ufffda"

    def test_invalid_octets_in_7_bit_codings(self):
        for dc in (DataCoding.DEFAULT, DataCoding.IA5):
            with pytest.raises(TextDecodeError) as exc:
                decode_text(b"ab\xe9", dc)
            assert exc.value.status == CommandStatus.ESME_RINVMSGLEN
            assert isinstance(exc.value, ValueError)
            assert decode_text(b"ab\xe9", dc, "replace") == "ab\ufffd"

    def test_text_that_does_not_fit(self):
        for text, dc in [("ç", 0), ("é", 1), ("€", 3), ("😀", 3)]:
            with pytest.raises(TextEncodeError) as exc:
                encode_text(text, dc)
            assert isinstance(exc.value, LocalProtocolError)
            assert isinstance(exc.value, ValueError)

    def test_lone_surrogate_cannot_be_encoded(self):
        with pytest.raises(TextEncodeError):
            encode_text("\ud83d", DataCoding.UCS2)


class TestCodings:
    @pytest.mark.parametrize("dc", [2, 4, 0xF4, 0xF5, 0xF6, 0xF7, 0xFC, 0xFF])
    def test_binary(self, dc):
        assert is_binary(dc)
        with pytest.raises(LocalProtocolError, match="binary"):
            decode_text(b"\x01\x02", dc)
        with pytest.raises(LocalProtocolError, match="binary"):
            encode_text("x", dc)

    @pytest.mark.parametrize("dc", [0, 1, 3, 6, 7, 8, 0xC0, 0xDF, 0xE5, 0xF0, 0xF3, 0xFB])
    def test_textual(self, dc):
        assert not is_binary(dc)

    @pytest.mark.parametrize("dc", [5, 9, 0x0A, 0x0B, 0x0D, 0x0E, 0x0F, 0x10, 0xBF, 0x100, -1])
    def test_unsupported(self, dc):
        with pytest.raises(UnsupportedDataCoding) as exc:
            decode_text(b"abc", dc)
        assert exc.value.status == CommandStatus.ESME_RINVOPTPARAMVAL
        assert isinstance(exc.value, RemoteProtocolError)
        with pytest.raises(UnsupportedDataCoding):
            is_binary(dc)
        with pytest.raises(UnsupportedDataCoding):
            encode_text("abc", dc)

    def test_canonical(self):
        assert canonical_coding(0xF2) is DataCoding.DEFAULT
        assert canonical_coding(0xF6) is DataCoding.BINARY
        assert canonical_coding(0xE1) is DataCoding.UCS2
        assert canonical_coding(3) is DataCoding.LATIN_1


TEXTUAL = [0, 1, 3, 6, 7, 8, 0xC8, 0xE8, 0xF1]


@given(st.binary(max_size=300), st.sampled_from(TEXTUAL), st.sampled_from(["strict", "replace"]))
def test_garbage_only_raises_text_decode_error(data, dc, errors):
    """Documented contract: decoding peer octets raises nothing but TextDecodeError."""
    try:
        text = decode_text(data, dc, errors)
    except TextDecodeError as exc:
        assert isinstance(exc, RemoteProtocolError) and isinstance(exc, ValueError)
    else:
        assert isinstance(text, str)


@given(st.text(max_size=200))
def test_chosen_encoding_round_trips(text):
    for allow_latin1 in (False, True):
        dc = choose_encoding(text, allow_latin1=allow_latin1)
        try:
            encoded = encode_text(text, dc)
        except TextEncodeError:
            # Only lone surrogates (not valid Unicode text) fail even in UCS2.
            assert any("\ud800" <= ch <= "\udfff" for ch in text)
            continue
        assert decode_text(encoded, dc) == text
