"""Delivery receipt text, TLVs and id normalisation (protocol/receipt.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import CommandStatus, MessageState, Tag
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.receipt import (
    ID_MODES,
    MessageIdError,
    Receipt,
    ReceiptParseError,
    format_receipt,
    merge,
    normalize_dlr_id,
    normalize_message_id,
    normalize_resp_id,
    parse_network_error,
    parse_receipt,
    receipt_from_tlvs,
    receipt_tlvs,
    stat_for_state,
    state_for_stat,
)

SPEC = (
    "id:0123456789 sub:001 dlvrd:001 submit date:0809011130 done date:0809011131 "
    "stat:DELIVRD err:000 text:Hello"
)

STATS = ["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE"]


# ---------------------------------------------------------------- Receipt value


def test_stat_state_mapping_both_ways():
    for state in MessageState:
        word = stat_for_state(state)
        assert len(word) == 7
        assert state_for_stat(word) is state
        assert Receipt("1", stat=state).stat == word
        assert Receipt("1", stat=word).state is state
    assert sorted(stat_for_state(s) for s in MessageState) == sorted(STATS)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("delivered", MessageState.DELIVERED),
        ("Delivrd", MessageState.DELIVERED),
        ("UNDELIVERABLE", MessageState.UNDELIVERABLE),
        ("undelivered", MessageState.UNDELIVERABLE),
        ("Rejected", MessageState.REJECTED),
        ("accepted", MessageState.ACCEPTED),
        ("expired", MessageState.EXPIRED),
        ("en_route", MessageState.ENROUTE),
    ],
)
def test_long_forms_accepted_on_input(word, state):
    assert state_for_stat(word) is state
    r = Receipt("1", stat=word)
    assert r.state is state
    assert r.stat == stat_for_state(state)


def test_unknown_stat_word_rejected_on_construction():
    with pytest.raises(ValueError):
        Receipt("1", stat="NOPE")
    with pytest.raises(ValueError):
        Receipt("", stat="DELIVRD")


def test_defaults_and_is_final():
    r = Receipt("42", stat="DELIVRD")
    assert (r.sub, r.dlvrd, r.err, r.text) == (1, 1, "000", "")
    assert r.is_final
    assert Receipt("42", stat="UNDELIV").dlvrd == 0
    assert not Receipt("42", stat="ENROUTE").is_final
    assert not Receipt("42", stat="ACCEPTD").is_final
    assert Receipt("42", stat="REJECTD", err=7).err == "007"


def test_receipt_is_frozen_and_text_not_in_repr():
    r = Receipt("42", stat="DELIVRD", text="secret code 1234")
    with pytest.raises(AttributeError):
        r.stat = "UNDELIV"  # type: ignore[misc]
    assert "secret" not in repr(r)


# ---------------------------------------------------------------- formatting


def test_format_spec_golden():
    r = Receipt(
        "0123456789",
        sub=1,
        dlvrd=1,
        submit_date=datetime(2008, 9, 1, 11, 30),
        done_date=datetime(2008, 9, 1, 11, 31),
        stat="DELIVRD",
        err="000",
        text="Hello",
    )
    assert format_receipt(r) == SPEC


def test_format_seconds_and_padding():
    r = Receipt(
        "7",
        dlvrd=0,
        submit_date=datetime(2024, 12, 31, 23, 59, 58),
        done_date=datetime(2025, 1, 1, 0, 0, 5),
        stat=MessageState.UNDELIVERABLE,
        err="1",
        text="A much longer message than twenty characters",
    )
    assert format_receipt(r, seconds=True) == (
        "id:7 sub:001 dlvrd:000 submit date:241231235958 done date:250101000005 "
        "stat:UNDELIV err:001 text:A much longer messag"
    )
    assert "submit date:2412312359 done date:2501010000" in format_receipt(r)


def test_format_missing_dates_and_control_chars():
    r = Receipt("9", stat="EXPIRED", text="a\r\nb\x00c")
    out = format_receipt(r)
    assert "submit date:0000000000 done date:0000000000" in out
    assert out.endswith("text:a  b c")
    back = parse_receipt(out)
    assert back.submit_date is None and back.done_date is None


def test_format_refuses_id_with_blanks():
    with pytest.raises(LocalProtocolError):
        format_receipt(Receipt("1 2", stat="DELIVRD"))


# ---------------------------------------------------------------- parsing


def test_parse_spec_golden():
    r = parse_receipt(SPEC)
    assert r == Receipt(
        "0123456789",
        sub=1,
        dlvrd=1,
        submit_date=datetime(2008, 9, 1, 11, 30),
        done_date=datetime(2008, 9, 1, 11, 31),
        stat="DELIVRD",
        err="000",
        text="Hello",
    )
    assert r.message_id == "0123456789"  # leading zero kept as on the wire
    assert format_receipt(r) == SPEC
    assert parse_receipt(SPEC.encode("ascii")) == r


def test_parse_kannel_style():
    # Capitalised Text:, hex id, NUL-terminated short_message.
    raw = (
        b"id:1A2B3C4D sub:001 dlvrd:000 submit date:1109191234 done date:1109191240 "
        b"stat:UNDELIV err:034 Text:Caf\xe9 au lait\x00"
    )
    r = parse_receipt(raw)
    assert r.message_id == "1A2B3C4D"
    assert r.state is MessageState.UNDELIVERABLE
    assert r.err == "034"
    assert r.text == "Café au lait"
    assert r.done_date == datetime(2011, 9, 19, 12, 40)


def test_parse_jasmin_style():
    raw = (
        "id:c449ab97-44f4-7b6a-f187-9e49e75e4f40 sub:001 dlvrd:001 "
        "submit date:2403051015 done date:2403051016 stat:DELIVRD err:000 text:"
    )
    r = parse_receipt(raw)
    assert r.message_id == "c449ab97-44f4-7b6a-f187-9e49e75e4f40"
    assert r.text == ""
    assert r.is_final


def test_parse_uppercase_keys_and_variants():
    raw = (
        "ID:98765 SUB:001 DLVRD:001 Submit Date:0809011130 DONE_DATE:0809011131 "
        "STAT:delivered ERR:000 TEXT:Hi"
    )
    r = parse_receipt(raw)
    assert (r.message_id, r.stat, r.text) == ("98765", "DELIVRD", "Hi")
    assert r.submit_date == datetime(2008, 9, 1, 11, 30)
    assert r.done_date == datetime(2008, 9, 1, 11, 31)

    r2 = parse_receipt("id:5 submit_date:0809011130 submitdate:9999999999 stat:EXPIRED")
    assert r2.submit_date == datetime(2008, 9, 1, 11, 30)  # first occurrence wins
    assert r2.state is MessageState.EXPIRED


def test_parse_arbitrary_spacing_and_order():
    raw = "stat : REJECTD   err:  011\tid :  abc123   dlvrd:000 sub:  002 text:  x "
    r = parse_receipt(raw)
    assert (r.message_id, r.stat, r.err, r.sub, r.dlvrd, r.text) == (
        "abc123",
        "REJECTD",
        "011",
        2,
        0,
        "x",
    )


def test_parse_text_takes_rest_of_line_with_colons():
    r = parse_receipt("id:1 stat:DELIVRD text:code: 42 id:99 stat:UNDELIV")
    assert r.message_id == "1"
    assert r.stat == "DELIVRD"
    assert r.text == "code: 42 id:99 stat:UNDELIV"


def test_parse_text_stops_at_end_of_line():
    r = parse_receipt("text:hello there\r\nid:77 stat:ACCEPTD\n")
    assert (r.message_id, r.text, r.state) == ("77", "hello there", MessageState.ACCEPTED)


def test_parse_12_and_14_digit_dates():
    r = parse_receipt("id:1 submit date:080901113059 done date:20080901113100 stat:DELIVRD")
    assert r.submit_date == datetime(2008, 9, 1, 11, 30, 59)
    assert r.done_date == datetime(2008, 9, 1, 11, 31, 0)


@pytest.mark.parametrize("date", ["0813011130", "0809321130", "0809012561", "08090111", "abc", ""])
def test_parse_invalid_dates_become_none(date):
    r = parse_receipt(f"id:1 submit date:{date} done date:0809011131 stat:DELIVRD")
    assert r.submit_date is None
    assert r.done_date == datetime(2008, 9, 1, 11, 31)


def test_parse_missing_fields_take_defaults():
    r = parse_receipt("id:123 stat:DELIVRD")
    assert r == Receipt("123", stat="DELIVRD")
    assert (r.sub, r.dlvrd, r.err, r.text, r.submit_date) == (1, 1, "000", "", None)

    r = parse_receipt("id:123 err:005")
    assert r.state is MessageState.UNKNOWN and r.dlvrd == 0 and r.err == "005"


def test_parse_odd_values_degrade_not_fail():
    r = parse_receipt("id:x sub:abc dlvrd:\u00b2 stat:WHATEVER err:")
    assert (r.sub, r.dlvrd, r.stat, r.err) == (1, 0, "UNKNOWN", "000")
    r = parse_receipt("id:x sub:" + "9" * 5000 + " stat:DELIVRD")
    assert r.sub == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello, how are you?",
        "my id: 42",  # an MO, not a receipt
        "stat:DELIVRD err:000 text:no id",
        "id: sub:001 stat:DELIVRD",  # empty id
        "text:id:5 stat:DELIVRD",  # keys inside text are text
        "paid:5 stat:DELIVRD",
        b"\xff\xfe\x00\x01",
    ],
)
def test_parse_non_receipts_raise(text):
    with pytest.raises(ReceiptParseError) as info:
        parse_receipt(text)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.status == CommandStatus.ESME_RUNKNOWNERR


def test_parse_error_does_not_leak_content():
    with pytest.raises(ReceiptParseError) as info:
        parse_receipt("call me on +33612345678")
    assert "3361" not in str(info.value)


# ---------------------------------------------------------------- property tests

ids = st.one_of(
    st.integers(0, 2**64 - 1).map(str),
    st.text("0123456789abcdefABCDEF-_.", min_size=1, max_size=40),
)
dates = st.none() | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(
    message_id=ids,
    sub=st.integers(0, 999),
    dlvrd=st.integers(0, 999),
    submit_date=dates,
    done_date=dates,
    stat=st.sampled_from(STATS),
    err=st.integers(0, 999).map(lambda n: f"{n:03d}"),
    text=texts,
    seconds=st.booleans(),
)
def test_round_trip_format_parse(
    message_id, sub, dlvrd, submit_date, done_date, stat, err, text, seconds
):
    def wire(d):
        if d is None:
            return None
        return d.replace(microsecond=0) if seconds else d.replace(second=0, microsecond=0)

    r = Receipt(
        message_id,
        sub=sub,
        dlvrd=dlvrd,
        submit_date=submit_date,
        done_date=done_date,
        stat=stat,
        err=err,
        text=text,
    )
    out = format_receipt(r, seconds=seconds)
    sent_text = "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text[:20])
    expected = replace(
        r,
        submit_date=wire(submit_date),
        done_date=wire(done_date),
        text=sent_text.strip(),
    )
    assert parse_receipt(out) == expected
    assert parse_receipt(out.encode("utf-8")).message_id == message_id  # bytes path


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary()))
def test_fuzz_parse_only_raises_receipt_parse_error(data):
    try:
        r = parse_receipt(data)
    except ReceiptParseError:
        return
    assert isinstance(r, Receipt) and r.message_id
    assert r.state in MessageState


receipt_words = st.sampled_from(
    ["id:", "ID :", "sub:", "dlvrd:", "submit date:", "done_date:", "stat:", "err:", "Text:",
     " ", "\n", "\r", "\x00", "0809011130", "DELIVRD", "abc", "12", "999999999999"]
)


@settings(max_examples=300)
@given(st.lists(st.one_of(receipt_words, st.text(max_size=5)), max_size=30).map("".join))
def test_fuzz_receipt_like_text(data):
    try:
        r = parse_receipt(data)
    except ReceiptParseError:
        return
    assert r.message_id and not any(c.isspace() for c in r.message_id)


# ---------------------------------------------------------------- TLVs


def test_receipt_tlvs():
    assert receipt_tlvs("123", MessageState.DELIVERED, None) == [
        (Tag.RECEIPTED_MESSAGE_ID, "123"),
        (Tag.MESSAGE_STATE, 2),
    ]
    tlvs = receipt_tlvs("123", MessageState.UNDELIVERABLE, (3, 0x0102))
    assert tlvs[-1] == (Tag.NETWORK_ERROR_CODE, b"\x03\x01\x02")
    assert parse_network_error(b"\x03\x01\x02") == (3, 0x0102)
    assert parse_network_error(b"\x03") is None
    with pytest.raises(LocalProtocolError):
        receipt_tlvs("1", MessageState.DELIVERED, (256, 0))
    with pytest.raises(LocalProtocolError):
        receipt_tlvs("1", MessageState.DELIVERED, (3, 65536))
    with pytest.raises(LocalProtocolError):
        receipt_tlvs("x" * 65, MessageState.DELIVERED, None)


def _getter(values):
    return lambda tag: values.get(tag)


def test_receipt_from_tlvs_only():
    r = receipt_from_tlvs(
        _getter(
            {
                Tag.RECEIPTED_MESSAGE_ID: "abc",
                Tag.MESSAGE_STATE: 5,
                Tag.NETWORK_ERROR_CODE: b"\x03\x00\x22",
            }
        )
    )
    assert (r.message_id, r.state, r.err, r.dlvrd) == ("abc", MessageState.UNDELIVERABLE, "034", 0)


def test_tlvs_win_over_text_for_id_and_state():
    text = (
        "id:0A sub:001 dlvrd:001 submit date:0809011130 done date:0809011131 "
        "stat:DELIVRD err:000 text:Hi"
    )
    r = receipt_from_tlvs(
        _getter({Tag.RECEIPTED_MESSAGE_ID: "10\x00", Tag.MESSAGE_STATE: 8}), text
    )
    assert r.message_id == "10"
    assert r.state is MessageState.REJECTED
    assert r.submit_date == datetime(2008, 9, 1, 11, 30)  # the rest comes from the text
    assert r.text == "Hi"


def test_text_used_when_tlvs_absent_or_invalid():
    r = receipt_from_tlvs(_getter({Tag.MESSAGE_STATE: 99}), SPEC)
    assert r == parse_receipt(SPEC)
    # Garbage text is ignored when the TLVs carry the id.
    r = receipt_from_tlvs(_getter({Tag.RECEIPTED_MESSAGE_ID: "7"}), b"\x01\x02 garbage")
    assert (r.message_id, r.state) == ("7", MessageState.UNKNOWN)
    with pytest.raises(ReceiptParseError):
        receipt_from_tlvs(_getter({}), "not a receipt")
    with pytest.raises(ReceiptParseError):
        receipt_from_tlvs(_getter({}))


def test_merge_directly():
    text_r = parse_receipt(SPEC)
    assert merge(text_r, None, None) is text_r
    assert merge(text_r, " ", True) is text_r  # blank id and bool state are not TLV values
    assert merge(None, "5", 2).state is MessageState.DELIVERED
    assert merge(None, "5", None).state is MessageState.UNKNOWN
    with pytest.raises(ReceiptParseError):
        merge(None, None, 2)


# ---------------------------------------------------------------- id normalisation


@pytest.mark.parametrize(
    ("mode", "resp", "dlr", "canonical"),
    [
        ("as-is", " AbC-1 ", "AbC-1", "AbC-1"),
        ("decimal", "000123", "123", "123"),
        ("decimal", "0", "000", "0"),
        ("hex", "0A1b", "a1B", "2587"),
        ("hex", "0x1F", "1f", "31"),
        ("hex-to-decimal", "1A2B3C4D", "439041101", "439041101"),
        ("hex-to-decimal", "FF", "255", "255"),
        ("decimal-to-hex", "439041101", "1a2b3c4d", "439041101"),
        ("decimal-to-hex", "0255", "00ff", "255"),
    ],
)
def test_id_normalisation_matrix(mode, resp, dlr, canonical):
    assert normalize_resp_id(resp, mode) == canonical
    assert normalize_dlr_id(dlr, mode) == canonical


def test_as_is_is_case_sensitive():
    assert normalize_resp_id("abc", "as-is") != normalize_dlr_id("ABC", "as-is")


@pytest.mark.parametrize(
    ("mode", "raw"),
    [
        ("decimal", "12a"),
        ("decimal", "+5"),
        ("decimal", "-5"),
        ("decimal", "1_000"),
        ("decimal", "\u0661\u0662"),  # Arabic-Indic digits, which int() would accept
        ("hex", "xyz"),
        ("hex", "0x"),
        ("as-is", "   "),
        ("decimal", ""),
        ("decimal", "1" * 65),
    ],
)
def test_bad_ids_raise_message_id_error(mode, raw):
    with pytest.raises(MessageIdError):
        normalize_message_id(raw, mode)
    assert issubclass(MessageIdError, ValueError)


def test_unknown_mode():
    with pytest.raises(ValueError):
        normalize_resp_id("1", "octal")
    with pytest.raises(ValueError):
        normalize_message_id("1", "hex-to-decimal")  # a connector mode, not a base
    assert set(ID_MODES) == {"as-is", "decimal", "hex", "hex-to-decimal", "decimal-to-hex"}


@given(st.integers(0, 2**64 - 1), st.booleans(), st.integers(0, 3))
def test_hex_decimal_modes_meet(n, upper, zeros):
    hex_id = "0" * zeros + (f"{n:X}" if upper else f"{n:x}")
    dec_id = "0" * zeros + str(n)
    assert normalize_resp_id(hex_id, "hex-to-decimal") == normalize_dlr_id(dec_id, "hex-to-decimal")
    assert normalize_resp_id(dec_id, "decimal-to-hex") == normalize_dlr_id(hex_id, "decimal-to-hex")
    assert normalize_resp_id(hex_id, "hex") == normalize_dlr_id(hex_id.lower(), "hex") == str(n)
    assert normalize_resp_id(dec_id, "decimal") == str(n)
