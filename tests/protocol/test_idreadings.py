"""``protocol.idreadings``: the keys of ``message_id = "auto"`` and the learning of a
connector's reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.idreadings import (
    LEARN_AFTER,
    READINGS,
    ConventionLearner,
    early_keys,
    receipt_keys,
    resp_key,
)
from protocol.receipt import (
    ID_MODES,
    MessageIdError,
    normalize_dlr_id,
    normalize_resp_id,
)

#: How upstreams write a number: (name, writer).
WRITERS = {
    "decimal": lambda n, pad: str(n).zfill(pad),
    "hex": lambda n, pad: format(n, "X").zfill(pad),
    "hex-lower": lambda n, pad: format(n, "x").zfill(pad),
}
#: (submit_sm_resp notation, receipt notation) -> the reading that links them.
LINKS = {
    ("decimal", "decimal"): "as-is",
    ("hex", "hex"): "as-is",
    ("hex", "hex-lower"): "as-is",
    ("hex", "decimal"): "hex-to-decimal",
    ("decimal", "hex"): "decimal-to-hex",
}


def readings_of(receipt_id: str, key: str, readings=READINGS) -> tuple[str, ...]:
    return dict(receipt_keys(receipt_id, readings)).get(key, ())


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**64), st.sampled_from(sorted(LINKS)), st.integers(0, 20), st.integers(0, 20))
def test_every_usual_convention_finds_its_part(n, link, resp_pad, receipt_pad):
    """Whatever the notations and zero padding, the submit_sm_resp's key is among the
    receipt's keys under the reading that links them, and the early receipt's key among
    the response's early keys."""
    resp_fmt, receipt_fmt = link
    resp_id, receipt_id = WRITERS[resp_fmt](n, resp_pad), WRITERS[receipt_fmt](n, receipt_pad)
    key = resp_key(resp_id)
    assert LINKS[link] in readings_of(receipt_id, key)
    assert resp_key(receipt_id) in early_keys(resp_id)  # where an early receipt waits
    # The learnt reading alone still finds it, both ways.
    assert readings_of(receipt_id, key, (LINKS[link],)) == (LINKS[link],)
    assert resp_key(receipt_id) in early_keys(resp_id, (LINKS[link],))


_ID = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=20),
    st.text(alphabet="0123456789abcdefxyzXYZ-_", min_size=1, max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(_ID, _ID, st.sampled_from([m for m in ID_MODES if m != "as-is"]))
def test_auto_finds_whatever_a_configured_convention_finds(resp_id, receipt_id, mode):
    """A differential test against the configured conventions (protocol.receipt): where one
    matches a pair of ids, ``auto`` matches it too."""
    try:
        same = normalize_resp_id(resp_id, mode) == normalize_dlr_id(receipt_id, mode)
    except MessageIdError:
        return
    if same:
        assert resp_key(resp_id) in dict(receipt_keys(receipt_id))


@settings(max_examples=300, deadline=None)
@given(_ID)
def test_the_same_id_is_found_as_is_first(ident):
    keys = receipt_keys(ident)
    assert keys[0] == (ident, keys[0][1]) and keys[0][1][0] == "as-is"  # exactly as written first
    assert "as-is" in dict(keys)[resp_key(ident)]


def test_parts_and_early_receipts_kept_before_auto_are_found():
    """``as-is`` kept ids as written (the default before ``auto``): they are looked for too."""
    assert receipt_keys("00AB")[:2] == (("00AB", ("as-is",)), ("ab", ("as-is",)))
    assert early_keys("00AB")[:2] == ("00AB", "ab")


def test_padding_case_and_prefix_are_one_key():
    assert resp_key("00AB") == resp_key("ab") == resp_key("0xAB") == resp_key(" ab\x00") == "ab"
    assert resp_key("000123") == "123"
    assert resp_key("550e8400-e29b-41d4") == "550e8400-e29b-41d4"  # not a number: as it is
    assert resp_key("Zq9") != resp_key("zq9")  # opaque ids keep their case


def test_small_numbers_are_ambiguous():
    """7 is 7 in every reading: one key, all three readings."""
    assert receipt_keys("7") == (("7", READINGS),)
    assert receipt_keys("0009") == (("0009", ("as-is",)), ("9", READINGS))  # as written, then as read


def test_keys_of_a_decimal_receipt():
    assert receipt_keys("291") == (("291", ("as-is",)), ("123", ("hex-to-decimal",)), ("657", ("decimal-to-hex",)))
    assert receipt_keys("7b") == (("7b", ("as-is",)), ("123", ("decimal-to-hex",)))
    assert receipt_keys("abc-1") == (("abc-1", ("as-is",)),)
    assert early_keys("7B") == ("7B", "7b", "123")
    assert early_keys("123") == ("123", "291", "7b")


@pytest.mark.parametrize("bad", ["", "  ", "\x00", "1" * 65])
def test_bad_ids_are_refused(bad):
    for read in (resp_key, receipt_keys, early_keys):
        with pytest.raises(MessageIdError):
            read(bad)


def test_an_unknown_reading_is_an_error():
    with pytest.raises(ValueError, match="unknown reading"):
        receipt_keys("1", ("octal",))
    with pytest.raises(ValueError, match="unknown reading"):
        ConventionLearner("octal")


def test_learnt_after_agreeing_unambiguous_matches():
    learner = ConventionLearner()
    for _ in range(LEARN_AFTER - 1):
        assert learner.matched(("hex-to-decimal",), 1) is None
    assert learner.readings == READINGS
    assert learner.matched(("hex-to-decimal",), 1) == "hex-to-decimal"
    assert learner.learnt == "hex-to-decimal" and learner.readings == ("hex-to-decimal",)
    assert learner.matched(("as-is",), 1) is None  # learnt: it stays
    assert learner.learnt == "hex-to-decimal"


def test_a_contradiction_starts_the_count_again():
    learner = ConventionLearner()
    for reading in ("as-is", "as-is", "hex-to-decimal", "as-is", "as-is"):
        assert learner.matched((reading,), 1) is None
    assert learner.matched(("as-is",), 1) == "as-is"


_MATCH = st.tuples(st.lists(st.sampled_from(READINGS), min_size=1, max_size=3, unique=True), st.integers(0, 4))


@settings(max_examples=300, deadline=None)
@given(st.lists(_MATCH, max_size=40))
def test_ambiguous_matches_never_teach(matches):
    """A match whose key several readings give, or where several keys found parts, teaches
    nothing, however many of them come."""
    learner = ConventionLearner()
    for readings, hits in matches:
        if len(readings) == 1 and hits == 1:
            continue
        assert learner.matched(tuple(readings), hits) is None
    assert learner.learnt is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=LEARN_AFTER, max_size=10))
def test_ambiguous_ids_never_teach_end_to_end(numbers):
    """Small numbers (0 to 9, the same in every reading) matched as-is: never learnt."""
    learner = ConventionLearner()
    for n in numbers:
        ident = str(n % 10)
        _, readings = receipt_keys(ident)[0]
        assert learner.matched(readings, 1) is None
    assert learner.learnt is None
