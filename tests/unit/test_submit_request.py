"""The neutral submit: policies on a ``SubmitRequest`` built without any PDU, each refusal's
neutral reason and the SMPP status the door answers it with; the SMPP door's reading of
submit_sm / data_sm / submit_multi; the text encoded at most once in planning."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from protocol import pdu as P
from protocol.constants import CommandStatus as S
from protocol.constants import DataCoding, MessageState, Tag
from protocol.errors import RemoteProtocolError
from routing.routes import RouteRule, RouteTable
from routing.windows import SendWindows
import smscenter.pipeline.submit as submit_module
from smscenter.pipeline.accounts import AccountState
from smscenter.pipeline.blacklist import Blacklist
from smscenter.config import Account
from smscenter.runtime.passwords import hash_password
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.pipeline.request import (
    Accepted,
    Destination,
    OwnPart,
    Passthrough,
    ReceiptWish,
    Refusal,
    Refused,
    SenderKind,
    SubmitRequest,
    SubmitResult,
)
from smscenter.smpp.submit import BAD_INPUT_STATUS, SMPP_STATUS, multi_answer, smpp_status, submit_request
from smscenter.pipeline.submit import MentionPolicy, SubmitPlanner, admit
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator

_HASH = hash_password("secret")
PARIS = ZoneInfo("Europe/Paris")
OPEN = datetime(2026, 6, 6, 10, 0, tzinfo=PARIS).timestamp()  # Saturday 10:00: marketing may go
CLOSED = datetime(2026, 6, 6, 22, 0, tzinfo=PARIS).timestamp()  # Saturday 22:00: held until Monday 08:00
MONDAY_8 = datetime(2026, 6, 8, 8, 0, tzinfo=PARIS).timestamp()
FR, FR_OPTED, FR_INVALID, US = "+33612345678", "+33612345679", "+33612345670", "+12025550123"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def account(**overrides) -> AccountState:
    config = Account.model_validate(
        {"system_id": "acme", "password": _HASH, "sender_ids": ["ACME"], "short_codes": ["38123"],
         "category": "marketing", "window": 3, "throughput": 2} | overrides
    )
    return AccountState(config, TokenBucket(config.throughput, 0.0))


@pytest.fixture(scope="module")
def cipher(tmp_path_factory):
    return FieldCipher(Keyring.open(tmp_path_factory.mktemp("k") / "keys", database_has_data=False))


@pytest.fixture
def planner(cipher):
    blacklist = Blacklist(None, "36180")
    blacklist.added("acme", cipher.lookup_hash(FR_OPTED))
    blacklist.mark_invalid(cipher.lookup_hash(FR_INVALID), expires_at=4e9)
    p = SubmitPlanner(
        RouteTable([RouteRule(("+33",), ("up",))]), cipher, IdGenerator(), shared_short_codes=("36180",),
        blacklist=blacklist, windows=SendWindows(),
        mention=MentionPolicy("STOP au {short_code}", "36180", None, b"k" * 32), wall_clock=Clock(OPEN),
    )
    return p


def request(*destinations: str, **fields) -> SubmitRequest:
    """A request as any door could build it: no PDU, text as a str."""
    values = {"account": account(), "source": "38123", "source_kind": SenderKind.SHORT_CODE,
              "destinations": tuple(Destination(d) for d in destinations or (FR,)), "text": "Soldes"}
    return SubmitRequest(**(values | fields))


def refusal_of(planner: SubmitPlanner, req: SubmitRequest) -> Refused:
    try:
        (outcome,) = planner.plan(req)
    except Refused as exc:
        return exc
    assert isinstance(outcome, Refused), outcome
    return outcome


# --- each policy: neutral reason, then the SMPP status -----------------------------------------

POLICIES = {
    # name: (request fields, wall clock, neutral reason, field, SMPP status)
    "sender not allowed": (dict(source="BADCO", source_kind=SenderKind.ALPHANUMERIC), OPEN,
                           Refusal.SENDER_NOT_ALLOWED, "source", S.ESME_RINVSRCADR),
    "short code not the account's": (dict(source="36999"), OPEN, Refusal.SENDER_NOT_ALLOWED, "source",
                                     S.ESME_RINVSRCADR),
    "unknown category": (dict(category="PROMO"), OPEN, Refusal.UNKNOWN_CATEGORY, "category", S.ESME_RINVSERTYP),
    "invalid number": (dict(destinations=(Destination("+3361"),)), OPEN, Refusal.INVALID_NUMBER, "destination",
                       S.ESME_RINVDSTADR),
    "number reported invalid upstream": (dict(destinations=(Destination(FR_INVALID),)), OPEN,
                                         Refusal.INVALID_NUMBER, "destination", S.ESME_RINVDSTADR),
    "no route": (dict(destinations=(Destination(US),)), OPEN, Refusal.NO_ROUTE, None, S.ESME_RSUBMITFAIL),
    "opted out": (dict(destinations=(Destination(FR_OPTED),)), OPEN, Refusal.OPTED_OUT, "destination",
                  S.SMSC_ROPTEDOUT),
    "outside window, account rejects": (dict(account=account(outside_window="reject")), CLOSED,
                                        Refusal.OUTSIDE_WINDOW, None, S.SMSC_RWINDOWCLOSED),
    "text over 255 parts": (dict(text="x" * 153 * 256), OPEN, Refusal.TEXT_TOO_LONG, "text", S.ESME_RINVMSGLEN),
    "text the coding cannot hold": (dict(text="€uro", data_coding=DataCoding.IA5), OPEN, Refusal.BAD_INPUT, "text",
                                    S.ESME_RINVMSGLEN),
    "unknown data_coding": (dict(data_coding=0x05), OPEN, Refusal.BAD_INPUT, "data_coding",
                            S.ESME_RINVOPTPARAMVAL),
    "schedule too far": (dict(schedule=OPEN + 60 * 86400), OPEN, Refusal.BAD_INPUT, "schedule", S.ESME_RINVSCHED),
    "schedule in the past": (dict(schedule=OPEN - 3600), OPEN, Refusal.BAD_INPUT, "schedule", S.ESME_RINVSCHED),
    "validity before delivery": (dict(validity=OPEN - 1), OPEN, Refusal.BAD_INPUT, "validity", S.ESME_RINVEXPIRY),
}


@pytest.mark.parametrize("fields, now, reason, field, status", POLICIES.values(), ids=POLICIES.keys())
def test_each_policy_refuses_with_a_neutral_reason_and_its_smpp_status(planner, fields, now, reason, field, status):
    planner.wall_clock.now = now
    refused = refusal_of(planner, request(**fields))
    assert (refused.refusal, refused.field) == (reason, field)
    assert smpp_status(refused) == status
    assert FR not in refused.why and "Soldes" not in refused.why  # no number, no text in the reason


def test_the_account_limits_refuse_with_their_reason_and_smpp_status():
    state = account()  # window 3, throughput 2 (burst: one second's worth)
    refused = admit(state, 4, now=0.0)
    assert refused.refusal is Refusal.QUEUE_FULL and smpp_status(refused) == S.ESME_RMSGQFUL
    assert admit(state, 3, now=0.0) is None and admit(state, 1, now=0.0) is None  # two tokens
    refused = admit(state, 1, now=0.0)
    assert refused.refusal is Refusal.RATE_EXCEEDED and smpp_status(refused) == S.ESME_RTHROTTLED
    assert admit(state, 1, now=0.5) is None  # refilled on the given (door's) clock


def test_every_refusal_has_an_smpp_status():
    assert set(SMPP_STATUS) == set(Refusal)
    assert smpp_status(Refused(Refusal.STORAGE_BUSY, "busy")) == S.ESME_RTHROTTLED
    assert smpp_status(Refused(Refusal.SYSTEM_ERROR, "bug")) == S.ESME_RSYSERR
    assert smpp_status(Refused(Refusal.BAD_INPUT, "?", "reference")) == S.ESME_RSUBMITFAIL  # no status of its own
    assert set(BAD_INPUT_STATUS) >= {field for *_, field, _ in POLICIES.values() if field}


def test_marketing_outside_its_window_is_held_not_refused(planner):
    planner.wall_clock.now = CLOSED
    (plan,) = planner.plan(request())
    assert plan.not_before == MONDAY_8 and plan.expires_at == MONDAY_8 + 48 * 3600


def test_many_destinations_each_planned_or_refused_in_order(planner):
    planner.wall_clock.now = OPEN
    plans = planner.plan(request(FR, FR_OPTED, "+3361", "+33612345677", receipt=ReceiptWish.ON_FAILURE))
    assert [type(p).__name__ for p in plans] == ["PlannedMessage", "Refused", "Refused", "PlannedMessage"]
    assert [p.refusal for p in plans[1:3]] == [Refusal.OPTED_OUT, Refusal.INVALID_NUMBER]
    assert plans[0].id != plans[3].id and plans[0].dest == FR and plans[3].dest == "+33612345677"
    assert plans[0].row["registered_delivery"] == 2
    assert plans[0].parts[0].pdu.short_message == b"Soldes"  # a short-code sender: no mention


def test_a_request_wide_refusal_raises(planner):
    with pytest.raises(Refused) as refused:
        planner.plan(request(FR, FR_OPTED, source="36999"))
    assert refused.value.refusal is Refusal.SENDER_NOT_ALLOWED


def test_text_without_coding_gets_the_cheapest(planner):
    (gsm,) = planner.plan(request(text="Soldes été"))
    (ucs2,) = planner.plan(request(text="Soldes ☀"))
    assert gsm.row["data_coding"] == DataCoding.DEFAULT and ucs2.row["data_coding"] == DataCoding.UCS2
    assert ucs2.parts[0].pdu.short_message == "Soldes ☀".encode("utf-16-be")


def test_bytes_are_binary(planner):
    (plan,) = planner.plan(request(text=b"\x00\x01\xff" * 60))
    assert plan.row["data_coding"] == DataCoding.BINARY and len(plan.parts) == 2
    assert b"".join(p.pdu.short_message[6:] for p in plan.parts) == b"\x00\x01\xff" * 60


# --- the text: encoded at most once ----------------------------------------------------------


@pytest.fixture
def encodes(monkeypatch):
    """The calls planning makes to ``encode_text``."""
    calls: list[str] = []
    real = submit_module.encode_text

    def spy(text, coding):
        calls.append(text)
        return real(text, coding)

    monkeypatch.setattr(submit_module, "encode_text", spy)
    return calls


def test_a_long_text_with_its_mention_is_encoded_once(planner, encodes):
    text = "Soldes " * 40  # 280 GSM-7 characters, + the mention
    (plan,) = planner.plan(request(text=text, source="ACME", source_kind=SenderKind.ALPHANUMERIC))
    assert encodes == [text + "\nSTOP au 36180"]
    body = b"".join(p.pdu.short_message[6:] for p in plan.parts)
    assert len(plan.parts) == 2 and body == (text + "\nSTOP au 36180").encode("ascii")


def test_octets_as_received_go_upstream_without_encoding(planner, encodes):
    octets = b"Soldes \x1b\x65"  # GSM-7 unpacked, with an escape pair (the euro sign)
    (plan,) = planner.plan(request(text="Soldes €", data_coding=0, octets=octets))
    assert encodes == [] and plan.parts[0].pdu.short_message == octets


def test_smpp_submit_sm_reaches_planning_decoded_once(planner, encodes, monkeypatch):
    import smscenter.smpp.submit as smpp_submit

    decodes = []
    real = smpp_submit.decode_text
    monkeypatch.setattr(smpp_submit, "decode_text", lambda *a: decodes.append(a) or real(*a))
    pdu = P.SubmitSm(source_addr="38123", source_addr_ton=3, dest_addr_ton=1, dest_addr_npi=1,
                     destination_addr="33612345678", short_message=b"Soldes", registered_delivery=1)
    req = submit_request(account(), pdu, Clock(OPEN))
    (plan,) = planner.plan(req)
    assert len(decodes) == 1 and encodes == []
    assert (req.text, req.octets, req.receipt, req.source_kind) == ("Soldes", b"Soldes", ReceiptWish.ALWAYS,
                                                                    SenderKind.SHORT_CODE)
    assert plan.parts[0].pdu.short_message == b"Soldes"


def test_the_upstream_part_is_built_field_by_field(planner):
    """``_build`` builds the part positionally (cheaper): each value in its own field."""
    passthrough = Passthrough(protocol_id=0x40, priority=2, esm_class=0x02, tlvs=((Tag.USER_MESSAGE_REFERENCE, 7),))
    req = request(source="ACME", source_kind=SenderKind.ALPHANUMERIC, source_ton=5, source_npi=0,
                  category="alert", text="Code 1234", data_coding=0, passthrough=passthrough)
    (plan,) = planner.plan(req)
    assert plan.parts[0].pdu == P.SubmitSm(
        source_addr_ton=5, source_addr_npi=0, source_addr="ACME", dest_addr_ton=1, dest_addr_npi=1,
        destination_addr=FR[1:], esm_class=0x02, protocol_id=0x40, priority_flag=2, registered_delivery=1,
        data_coding=0, short_message=b"Code 1234", tlvs=((Tag.USER_MESSAGE_REFERENCE, 7),),
    )
    assert plan.row["state"] == MessageState.ENROUTE and type(plan.row["state"]) is int


@pytest.mark.parametrize("pdu", [P.SubmitSm(sequence_number=9), P.DataSm(sequence_number=9),
                                 P.SubmitMulti(sequence_number=9), P.DeliverSm(sequence_number=9)])
def test_response_with_id_is_the_keyword_response(pdu):
    assert pdu.response_with_id("42") == pdu.response(message_id="42")


# --- the SMPP door's reading --------------------------------------------------------------------


def test_submit_multi_reads_every_destination():
    pdu = P.SubmitMulti(source_addr="ACME", source_addr_ton=5, short_message=b"Hi",
                        dest_addresses=(P.SmeAddress(1, 1, "33612345678"), P.DistributionList("staff"),
                                        P.SmeAddress(0, 1, "0612345678")))
    req = submit_request(account(), pdu, Clock(OPEN))
    assert req.destinations == (Destination("33612345678", 1, 1), Destination("", 0, 0),
                                Destination("0612345678", 0, 1))
    assert (req.text, req.source_kind) == ("Hi", SenderKind.ALPHANUMERIC)


def test_data_sm_message_payload_and_relative_times():
    pdu = P.DataSm(source_addr="38123", source_addr_ton=3, dest_addr_ton=1, dest_addr_npi=1,
                   destination_addr="33612345678", data_coding=8,
                   tlvs=((Tag.MESSAGE_PAYLOAD, "été ☀".encode("utf-16-be")),))
    req = submit_request(account(), pdu, Clock(OPEN))
    assert (req.text, req.data_coding, req.own_part) == ("été ☀", 8, None)
    sm = P.SubmitSm(source_addr="38123", destination_addr="33612345678", short_message=b"x",
                    schedule_delivery_time="000000010000000R", validity_period="000002000000000R")
    req = submit_request(account(), sm, Clock(OPEN))
    assert (req.schedule, req.validity) == (OPEN + 3600, OPEN + 2 * 86400)


def test_a_partner_segment_is_its_own_part():
    udh = bytes((5, 0, 3, 7, 2, 2))
    pdu = P.SubmitSm(source_addr="38123", destination_addr="33612345678", esm_class=0x40,
                     short_message=udh + b"end")
    req = submit_request(account(), pdu, Clock(OPEN))
    assert (req.text, req.octets, req.own_part) == ("end", b"end", OwnPart(udh, True, 134))
    assert req.passthrough.esm_class == 0  # UDHI is the planner's to set


PDU_FAULTS = {
    "unknown data_coding": (dict(data_coding=5), S.ESME_RINVOPTPARAMVAL),
    "UCS2 of odd length": (dict(data_coding=8, short_message=b"abc"), S.ESME_RINVMSGLEN),
    "GSM-7 octet over 0x7F": (dict(short_message=b"\x80"), S.ESME_RINVMSGLEN),
    "short_message and message_payload": (dict(short_message=b"a", tlvs=((Tag.MESSAGE_PAYLOAD, b"b"),)),
                                          S.ESME_ROPTPARNOTALLWD),
    "SAR without its segment number": (dict(tlvs=((Tag.SAR_MSG_REF_NUM, 1), (Tag.SAR_TOTAL_SEGMENTS, 2))),
                                       S.ESME_RMISSINGOPTPARAM),
    "schedule malformed": (dict(schedule_delivery_time="2606061200000+"), S.ESME_RINVSCHED),
}


@pytest.mark.parametrize("fields, status", PDU_FAULTS.values(), ids=PDU_FAULTS.keys())
def test_what_the_pdu_gets_wrong_is_answered_by_the_door(fields, status):
    pdu = P.SubmitSm(**({"source_addr": "38123", "destination_addr": "33612345678", "short_message": b"x"} | fields))
    with pytest.raises(RemoteProtocolError) as raised:
        submit_request(account(), pdu, Clock(OPEN))
    assert raised.value.status == status


# --- submit_multi: one id for many destinations --------------------------------------------------


def test_a_multi_request_gets_one_id_of_its_own_on_each_of_its_messages(planner):
    plans = planner.plan(request(FR, FR_OPTED, "+33698765432", multi=True))
    ok = [p for p in plans if not isinstance(p, Refused)]
    assert [type(p) for p in plans] == [submit_module.PlannedMessage, Refused, submit_module.PlannedMessage]
    multi_id = ok[0].multi_id
    assert multi_id is not None and {p.multi_id for p in ok} == {multi_id}
    assert [p.row["multi_id"] for p in ok] == [multi_id, multi_id]
    assert multi_id not in {p.id for p in ok}  # drawn from our ids, none of its messages'
    (single,) = planner.plan(request(FR))
    assert single.multi_id is None and single.row["multi_id"] is None


def test_submit_multi_is_a_multi_request_and_submit_sm_is_not():
    multi = P.SubmitMulti(source_addr="ACME", short_message=b"Hi", dest_addresses=(P.SmeAddress(1, 1, "33612345678"),))
    assert submit_request(account(), multi, Clock(OPEN)).multi is True
    single = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"Hi")
    assert submit_request(account(), single, Clock(OPEN)).multi is False


def test_the_submit_multi_resp_lists_each_refused_destination_with_its_status():
    pdu = P.SubmitMulti(sequence_number=5, source_addr="ACME", short_message=b"Hi",
                        dest_addresses=(P.SmeAddress(1, 1, "33612345678"), P.DistributionList("staff"),
                                        P.SmeAddress(1, 1, "33612345679")))
    req = submit_request(account(), pdu, Clock(OPEN))
    opted = Refused(Refusal.OPTED_OUT, "recipient opted out", "destination")
    invalid = Refused(Refusal.INVALID_NUMBER, "not a number", "destination")
    ok = Accepted(req.destinations[0], 77, 1)
    resp = multi_answer(pdu, req, SubmitResult((ok,), ((req.destinations[1], invalid), (req.destinations[2], opted)), 99))
    assert resp == P.SubmitMultiResp(sequence_number=5, message_id="99", unsuccess_smes=(
        P.UnsuccessSme(0, 0, "staff", S.ESME_RINVDLNAME), P.UnsuccessSme(1, 1, "33612345679", S.SMSC_ROPTEDOUT)))
    every = SubmitResult((), ((req.destinations[2], opted), (req.destinations[1], invalid), (req.destinations[0], opted)))
    none = multi_answer(pdu, req, every)
    assert (type(none), none.command_status, none.message_id, none.unsuccess_smes) == (
        P.SubmitMultiResp, S.SMSC_ROPTEDOUT, "", ())


def test_a_multi_request_costs_a_token_per_destination_and_one_place_in_the_window():
    state = account()  # window 3, throughput 2 (burst 2)
    assert admit(state, 3, now=0.0, messages=2) is None  # one request of the window, two tokens
    refused = admit(state, 1, now=0.0)
    assert refused.refusal is Refusal.RATE_EXCEEDED
    assert admit(state, 1, now=0.5, messages=2).refusal is Refusal.RATE_EXCEEDED  # one token back: not two
    # Bigger than the burst: goes with a full bucket and leaves it owing the rest.
    assert admit(state, 1, now=1.0, messages=6) is None  # 2 taken, 4 owed
    assert admit(state, 1, now=3.0).refusal is Refusal.RATE_EXCEEDED  # -4 + 4 = 0: not one yet
    assert admit(state, 1, now=3.5) is None  # the debt paid: the rate goes on
