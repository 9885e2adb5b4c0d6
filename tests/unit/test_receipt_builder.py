"""``smscenter.pipeline.receipts.ReceiptBuilder``: its fast path builds exactly the receipt the general
way builds (``format_receipt``, ``receipt_tlvs``, ``P.DeliverSm``, ``codec.encode``): same row,
same PDU, same wire bytes under the encryption, same ids consumed."""

from __future__ import annotations

import functools
import tempfile
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import pdu as P
from protocol.constants import MessageState, Tag
import protocol.receipt as protocol_receipt
import smscenter.pipeline.receipts as receipts
from smscenter.pipeline.receipts import ReceiptBuilder
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.transaction import Finished

CLOCK = 1_750_000_000.0  # both id generators' clock: they hand out the same ids
RETENTION = {"acme": 3600.0, "b": 86400.0}


def retention(account: str) -> float:
    return RETENTION.get(account, 600.0)


@functools.cache
def cipher() -> FieldCipher:
    folder = tempfile.mkdtemp() + "/keys"
    Keyring.create(folder)
    return FieldCipher(Keyring.load(folder))


def reference_build(cipher: FieldCipher, ids: IdGenerator, retention, done: Finished) -> dict | None:
    """The general way: ``format_receipt``, ``receipt_tlvs``, the ``P.DeliverSm`` constructor."""
    return ReceiptBuilder(cipher, ids, retention)._build_reference(done)


class FastOnly(ReceiptBuilder):
    """A builder that fails the test if it leaves the fast path."""

    def _build_reference(self, done: Finished) -> dict | None:
        raise AssertionError("the fast path deferred to the general way")


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - compared between both ways
        return None, (type(exc), str(exc))


def _shape(value):
    """A value with the type of every part, so that 1 == True or Tag.X == 0x1E do not pass."""
    if isinstance(value, tuple):
        return (tuple, tuple(_shape(v) for v in value))
    return (type(value), value)


def check_same(builder_cls, done: Finished, *, fast_expected: bool | None = None) -> dict | None:
    """Build ``done`` with ``builder_cls`` and the reference, on id generators in the same
    state, and assert they agree in everything (an exception counts as a result)."""
    ids_new, ids_ref = IdGenerator(node=7, clock=lambda: CLOCK), IdGenerator(node=7, clock=lambda: CLOCK)
    new, new_error = _outcome(lambda: builder_cls(cipher(), ids_new, retention)(done))
    ref, ref_error = _outcome(lambda: reference_build(cipher(), ids_ref, retention, done))
    assert new_error == ref_error
    assert ids_new.next() == ids_ref.next()  # the same number of ids consumed
    if ref is None:
        assert new is None
        return None
    assert list(new) == list(ref)  # same keys, same order
    for key in ref:
        if key not in ("pdu_enc", "pdu"):
            assert _shape(new[key]) == _shape(ref[key]), key
    pdu, ref_pdu = new["pdu"], ref["pdu"]
    assert type(pdu) is P.DeliverSm and pdu == ref_pdu
    assert [(k, _shape(v)) for k, v in vars(pdu).items()] == [(k, _shape(v)) for k, v in vars(ref_pdu).items()]
    aad = b"outbox:%d" % ref["id"]
    plain = cipher().decrypt(new["pdu_enc"], aad)
    assert plain == cipher().decrypt(ref["pdu_enc"], aad) == codec.encode(ref_pdu)
    assert codec.decode(plain) == pdu
    return new


def finished(
    message_id=10**12,
    dest="+33612345678",
    submitted_at=1_767_225_000.25,
    done_at=1_767_225_600.5,
    state=MessageState.DELIVERED,
    error=0,
    part_no=None,
    registered_delivery=1,
    source=(5, 0, "ACME"),
    account="acme",
) -> Finished:
    aad = b"dest:%d" % message_id
    msg = {
        "id": message_id,
        "registered_delivery": registered_delivery,
        "dest_enc": cipher().encrypt(dest.encode(), aad),
        "submitted_at": submitted_at,
        "account": account,
        "source_ton": source[0],
        "source_npi": source[1],
        "source_addr": source[2],
    }
    return Finished(msg, part_no, state, error, done_at)


# --- strategies -------------------------------------------------------------------------

Y2000, Y2100 = 946_684_800, 4_102_444_800
# Around a boundary: the microsecond rounding of datetime.fromtimestamp decides the minute.
NEAR = [-1.0, -1e-3, -1e-6, -6e-7, -5e-7, -4e-7, -2e-7, 0.0, 1e-7, 4e-7, 5e-7, 1e-6, 0.5]


@st.composite
def boundary_times(draw) -> float:
    """Just before, at or after the start of a minute, hour, day, month or year."""
    year = draw(st.integers(2000, 2099))
    month = draw(st.sampled_from([1, 2, 3, 12, draw(st.integers(1, 12))]))
    day = draw(st.sampled_from([1, 28, draw(st.integers(1, 28))]))
    hour = draw(st.sampled_from([0, 23, draw(st.integers(0, 23))]))
    minute = draw(st.sampled_from([0, 59, draw(st.integers(0, 59))]))
    start = datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()
    return start + draw(st.sampled_from(NEAR))


times = st.one_of(
    st.floats(Y2000, Y2100, exclude_max=True),
    st.integers(Y2000, Y2100 - 1),
    boundary_times(),
    st.sampled_from([float(Y2000), Y2000 + 1e-6, Y2100 - 1e-6, Y2100 - 4e-7, Y2100 - 0.6]),
).filter(lambda t: Y2000 <= t < Y2100)
errors = st.one_of(st.sampled_from([0, 1, 999, 1000, 65535, 65536, 2**32 - 1]), st.integers(0, 2**32 - 1))
latin1 = st.characters(min_codepoint=1, max_codepoint=255)
addresses = st.one_of(st.sampled_from(["ACME", "", "12345", "A" * 20, "Bänk", "+44"]), st.text(latin1, max_size=20))
dests = st.one_of(
    st.sampled_from(["+33612345678", "33612345678", "++1", "+", "", "1" * 20, "+" + "9" * 20]),
    st.text(latin1, max_size=20),
    st.from_regex(r"\+[0-9]{1,15}", fullmatch=True),
)
usual = st.builds(
    finished,
    message_id=st.integers(1, 2**63 - 1),
    dest=dests,
    submitted_at=times,
    done_at=times,
    state=st.sampled_from(list(MessageState)),
    error=errors,
    part_no=st.one_of(st.none(), st.integers(1, 255)),
    registered_delivery=st.integers(0, 3),
    source=st.tuples(st.sampled_from([0, 1, 5, 255, 3]), st.sampled_from([0, 1, 9, 255]), addresses),
    account=st.sampled_from(["acme", "b", "", "other"]),
)


@settings(max_examples=600, deadline=None)
@given(usual)
def test_fast_path_builds_what_the_general_way_builds(done):
    # FastOnly: every one of these takes the fast path (or gets no receipt at all).
    check_same(FastOnly, done)


@settings(max_examples=300, deadline=None)
@given(st.builds(
    finished,
    message_id=st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([0, 2**63, 10**40, -5])),
    dest=st.one_of(dests, st.sampled_from(["+Ω", "12\x003", "+" + "1" * 21, "é" * 20])),
    submitted_at=st.one_of(times, st.sampled_from([0.0, -1.5, Y2000 - 1e-7, Y2100 - 1e-7, float(Y2100), 5e9, 1e10])),
    done_at=st.one_of(times, st.sampled_from([0, -86400.25, Y2000 - 0.4, float(Y2100), 2e10])),
    state=st.one_of(st.sampled_from(list(MessageState)), st.sampled_from([2, 5])),
    error=st.one_of(errors, st.sampled_from([-1, -70000, 2**40])),
    part_no=st.one_of(st.none(), st.integers(0, 255), st.sampled_from([65535, 65536, -1])),
    registered_delivery=st.integers(0, 0xFF),
    source=st.tuples(
        st.sampled_from([0, 5, 255, 256, -1]),
        st.sampled_from([0, 1, 255, 256]),
        st.one_of(addresses, st.sampled_from(["A" * 21, "x\x00y", "Ω", "é" * 21])),
    ),
))
def test_any_message_gets_what_the_general_way_gives(done):
    # Unusual values go the general way and fail (or not) as they always did.
    check_same(ReceiptBuilder, done)


@pytest.mark.parametrize("t, date", [
    (1_767_225_599.9999995, "2601010000"),  # 2025-12-31 23:59:59.9999995: the next year
    (1_767_225_599.9999993, "2512312359"),  # ...59.999999 (the float just below)
    (1_767_225_599.999999, "2512312359"),
    (1_767_225_600.0, "2601010000"),
    (1_767_225_600, "2601010000"),
    (Y2000 + 59.9999996, "0001010001"),
    (float(Y2000), "0001010000"),
    (4_102_444_799.9999995, "0001010000"),  # 2100-01-01, written as the reference does
])
def test_dates_round_like_fromtimestamp(t, date):
    built = check_same(FastOnly, finished(submitted_at=t, done_at=t))
    assert b"submit date:%s done date:%s " % (date.encode(), date.encode()) in built["pdu"].short_message


def test_the_usual_receipt():
    built = check_same(FastOnly, finished(error=0x1234, part_no=2, state=MessageState.UNDELIVERABLE))
    assert built["pdu"].short_message == (
        b"id:1000000000000 sub:001 dlvrd:000 submit date:2512312350 done date:2601010000"
        b" stat:UNDELIV err:999 text:"
    )
    assert built["pdu"].tlvs == (
        (Tag.RECEIPTED_MESSAGE_ID, "1000000000000"), (Tag.MESSAGE_STATE, 5),
        (Tag.NETWORK_ERROR_CODE, b"\x03\x12\x34"), (Tag.USER_MESSAGE_REFERENCE, 2),
    )
    assert built["pdu"].source_addr == "33612345678" and built["expires_at"] == 1_767_225_600.5 + 3600


@pytest.mark.parametrize("wanted, state", [(0, MessageState.DELIVERED), (0, MessageState.EXPIRED),
                                           (2, MessageState.DELIVERED), (4, MessageState.DELIVERED)])
def test_no_receipt_wanted(wanted, state):
    assert check_same(FastOnly, finished(registered_delivery=wanted, state=state)) is None


def test_failures_receipt_wanted():
    assert check_same(FastOnly, finished(registered_delivery=2, state=MessageState.EXPIRED)) is not None


def test_unusual_values_fail_as_before():
    for done in [
        finished(source=(5, 0, "A" * 21)),  # the encoder refuses it, after an id was taken
        finished(dest="+Ω"),
        finished(submitted_at=float("nan")),
        finished(error=-1),
        finished(part_no=65536),
        finished(source=(256, 0, "ACME")),
    ]:
        check_same(ReceiptBuilder, done)


def test_minute_cache_is_bounded():
    protocol_receipt._MINUTES.clear()
    for minute in range(5000):
        check_same(FastOnly, finished(submitted_at=Y2000 + minute * 60.0 + 30.5))
    assert 0 < len(protocol_receipt._MINUTES) <= 4096
