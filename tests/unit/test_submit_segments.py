"""How many parts the planner makes of a short_message: the one-SMS shortcut (a body that
fits is one part, without counting) agrees with ``count_segments`` of the decoded text, at
and around each coding's capacity, escapes and surrogate pairs included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import pdu as P
from protocol.segments import count_segments
from protocol.text import canonical_coding, decode_text, is_binary
from routing.routes import RouteRule, RouteTable
from smscenter.pipeline.accounts import AccountState, PartnerBind
from smscenter.config import Account
from smscenter.runtime.passwords import hash_password
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.pipeline.submit import Refused, SubmitPlanner
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator

_HASH = hash_password("secret")


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    cipher = FieldCipher(Keyring.open(tmp_path_factory.mktemp("k") / "keys", database_has_data=False))
    return SubmitPlanner(RouteTable([RouteRule(("*",), ("up",))]), cipher, IdGenerator())


@pytest.fixture(scope="module")
def partner():
    account = Account.model_validate({"system_id": "acme", "password": _HASH, "sender_ids": ["ACME"]})
    return PartnerBind(AccountState(account, TokenBucket(100, 0.0)), link=None, bind_type="transceiver")


# GSM-7 unpacked octets: basic characters, escape pairs (€ [ ] ...), a lone or doubled escape.
_GSM_PIECE = st.one_of(
    st.integers(0x20, 0x7F).filter(lambda b: b != 0x1B).map(lambda b: bytes([b])),
    st.sampled_from([b"\x1be", b"\x1b(", b"\x1b<", b"\x1b/", b"\x1bA", b"\x1b\x1b"]),
)
_BODIES = st.one_of(
    st.tuples(st.just(0), st.lists(_GSM_PIECE, min_size=150, max_size=170).map(b"".join)),
    st.tuples(st.sampled_from([1, 3, 4]), st.binary(min_size=130, max_size=150).map(
        lambda b: bytes(x & 0x7F for x in b))),
    st.tuples(st.just(8), st.lists(st.sampled_from(["a", "é", "€", "😀"]), min_size=60, max_size=80).map(
        lambda cs: "".join(cs).encode("utf-16-be"))),
)


# 200 examples: generating 150-170 GSM pieces per body is what costs (600 took 12 s).
@settings(max_examples=200, deadline=None)
@given(_BODIES)
def test_parts_agree_with_count_segments(planner, partner, coding_body):
    coding, body = coding_body
    body = body[:254]
    pdu = P.SubmitSm(source_addr="ACME", source_addr_ton=5, dest_addr_ton=1, dest_addr_npi=1,
                     destination_addr="33612345678", data_coding=coding, short_message=body)
    try:
        parts = planner.plan(partner, pdu).parts
    except Refused:
        return  # not decodable text for that coding: refused either way
    dc = canonical_coding(coding)
    expected = count_segments(body if is_binary(coding) else decode_text(body, coding), dc)
    assert len(parts) == expected
