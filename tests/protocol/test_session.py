"""The sans-I/O session (protocol/session.py, rules in protocol/states.py).

Two Session objects, an ESME and an SMSC, talk to each other purely with bytes. Raw bytes made
with ``codec.encode`` stand in for a misbehaving peer. Every exchange that matters is run with
the bytes fed whole, one octet at a time, and followed by the start of another PDU.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import pdu as P
from protocol.constants import MAX_SEQUENCE, CommandId as C, CommandStatus as S
from protocol.errors import DecodeError, FramingError, LocalProtocolError, RemoteProtocolError
from protocol.session import (
    Event,
    InvalidPdu,
    LateResponse,
    Outstanding,
    PeerClosed,
    Request,
    Response,
    Role,
    Session,
    State,
    StreamBroken,
    WindowFull,
)
from protocol.states import LEGAL, Step

ESME, SMSC = Role.ESME, Role.SMSC
BINDS = {
    "tx": (P.BindTransmitter, State.BOUND_TX),
    "rx": (P.BindReceiver, State.BOUND_RX),
    "trx": (P.BindTransceiver, State.BOUND_TRX),
}
# The start of another PDU: it must stay buffered and change nothing until completed.
KEEPALIVE = codec.encode(P.EnquireLink(sequence_number=9999))
TRAILER, REST = KEEPALIVE[:7], KEEPALIVE[7:]


def drain(session: Session) -> list[Event]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def feed(session: Session, data: bytes, mode: str = "whole") -> list[Event]:
    """Feed ``data`` in the given way and return every event it produced."""
    if mode == "whole":
        session.receive_data(data)
        return drain(session)
    if mode == "bytes":
        events = []
        for i in range(len(data)):
            session.receive_data(data[i : i + 1])
            events += drain(session)
        return events
    if mode == "trailing":
        session.receive_data(data + TRAILER)
        events = drain(session)
        assert session.buffered == len(TRAILER)
        # Complete the trailing enquire_link, answer it, and leave nothing behind.
        session.receive_data(REST)
        extra = drain(session)
        if session.state is not State.CLOSED:
            assert len(extra) == 1 and isinstance(extra[0], Request)
            assert extra[0].pdu == P.EnquireLink(sequence_number=9999)
            session.send(extra[0].pdu.response(), 0.0)
        else:
            assert extra == []
        assert session.buffered == 0
        return events
    raise AssertionError(mode)


MODES = pytest.mark.parametrize("mode", ["whole", "bytes", "trailing"])


def one(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


def submit(**kw) -> P.SubmitSm:
    fields = {"source_addr": "ACME", "destination_addr": "33612345678", "short_message": b"hello"}
    return P.SubmitSm(**{**fields, **kw})


def deliver(**kw) -> P.DeliverSm:
    fields = {"source_addr": "33612345678", "destination_addr": "36180", "short_message": b"STOP"}
    return P.DeliverSm(**{**fields, **kw})


class Pair:
    """An ESME and an SMSC session wired together by hand."""

    def __init__(self, **kw) -> None:
        self.esme = Session(ESME, **kw)
        self.smsc = Session(SMSC, **kw)
        self.now = 0.0

    def esme_sends(self, pdu: P.Pdu, mode: str = "whole") -> list[Event]:
        return feed(self.smsc, self.esme.send(pdu, self.now), mode)

    def smsc_sends(self, pdu: P.Pdu, mode: str = "whole") -> list[Event]:
        return feed(self.esme, self.smsc.send(pdu, self.now), mode)

    def bind(self, kind: str = "trx", mode: str = "whole") -> None:
        cls, bound = BINDS[kind]
        req = one(self.esme_sends(cls(system_id="acme", password="secret"), mode))
        assert isinstance(req, Request)
        resp = one(self.smsc_sends(req.pdu.response(system_id="SMSCENTER"), mode))
        assert isinstance(resp, Response) and resp.ok
        assert self.esme.state is self.smsc.state is bound


# --- binding ------------------------------------------------------------------------------


@MODES
@pytest.mark.parametrize("kind", ["tx", "rx", "trx"])
def test_bind(kind, mode):
    pair = Pair()
    cls, bound = BINDS[kind]
    assert pair.esme.state is pair.smsc.state is State.OPEN
    req = one(pair.esme_sends(cls(system_id="acme", password="secret"), mode))
    assert isinstance(req, Request) and type(req.pdu) is cls
    assert req.pdu.system_id == "acme" and req.pdu.sequence_number == 1
    assert pair.esme.outstanding == 1 and pair.smsc.pending == 1
    assert pair.smsc.state is State.OPEN  # not bound until we say so
    resp = one(pair.smsc_sends(req.pdu.response(system_id="SMSCENTER"), mode))
    assert isinstance(resp, Response)
    assert resp.pdu.system_id == "SMSCENTER" and resp.request.system_id == "acme"
    assert resp.sent_at == 0.0 and resp.ok
    assert pair.esme.state is pair.smsc.state is bound
    assert pair.esme.outstanding == 0 and pair.smsc.pending == 0


@MODES
def test_refused_bind_stays_open_and_may_retry(mode):
    pair = Pair()
    req = one(pair.esme_sends(P.BindTransmitter(system_id="acme", password="wrong"), mode))
    resp = one(pair.smsc_sends(req.pdu.response(S.ESME_RINVPASWD), mode))
    assert isinstance(resp, Response) and not resp.ok
    assert resp.pdu.command_status == S.ESME_RINVPASWD
    assert pair.esme.state is pair.smsc.state is State.OPEN
    pair.bind("tx", mode)


def test_generic_nack_to_bind_leaves_open():
    pair = Pair()
    req = one(pair.esme_sends(P.BindTransceiver(system_id="acme")))
    resp = one(pair.smsc_sends(P.GenericNack(sequence_number=req.pdu.sequence_number,
                                             command_status=S.ESME_RSYSERR)))
    assert isinstance(resp, Response) and isinstance(resp.pdu, P.GenericNack) and not resp.ok
    assert pair.esme.state is pair.smsc.state is State.OPEN
    pair.bind()


def test_bind_while_bind_in_progress():
    pair = Pair()
    pair.esme_sends(P.BindTransmitter(system_id="acme"))
    with pytest.raises(LocalProtocolError, match="in progress"):
        pair.esme.send(P.BindTransmitter(system_id="acme"), 0.0)
    # A peer that does it anyway gets ESME_RINVBNDSTS for the second one.
    ev = one(feed(pair.smsc, codec.encode(P.BindReceiver(sequence_number=7, system_id="x"))))
    assert isinstance(ev, InvalidPdu)
    assert isinstance(ev.reply, P.BindReceiverResp) and ev.reply.command_status == S.ESME_RINVBNDSTS
    assert ev.reply.sequence_number == 7
    pair.smsc.send(ev.reply, 0.0)
    # The first is still answered normally.
    pair.smsc_sends(P.BindTransmitterResp(sequence_number=1, system_id="SMSCENTER"))
    assert pair.esme.state is pair.smsc.state is State.BOUND_TX


@MODES
@pytest.mark.parametrize("kind", ["tx", "rx", "trx"])
def test_bind_while_bound_is_ralybnd(kind, mode):
    pair = Pair()
    pair.bind(kind)
    with pytest.raises(LocalProtocolError):
        pair.esme.send(P.BindTransmitter(system_id="acme"), 0.0)
    raw = codec.encode(P.BindTransceiver(sequence_number=42, system_id="acme", password="pw"))
    ev = one(feed(pair.smsc, raw, mode))
    assert isinstance(ev, InvalidPdu) and ev.error.status == S.ESME_RALYBND
    assert isinstance(ev.reply, P.BindTransceiverResp)
    assert ev.reply.command_status == S.ESME_RALYBND and ev.reply.sequence_number == 42
    late = one(feed(pair.esme, pair.smsc.send(ev.reply, 0.0)))
    assert isinstance(late, LateResponse)  # the ESME never sent #42
    assert pair.esme.state is pair.smsc.state is BINDS[kind][1]


# --- what is legal where ------------------------------------------------------------------


@MODES
def test_submit_before_bind_is_rinvbndsts(mode):
    smsc = Session(SMSC)
    with pytest.raises(LocalProtocolError):
        Session(ESME).send(submit(), 0.0)
    ev = one(feed(smsc, codec.encode(submit(sequence_number=5)), mode))
    assert isinstance(ev, InvalidPdu) and ev.error.status == S.ESME_RINVBNDSTS
    assert isinstance(ev.reply, P.SubmitSmResp)
    assert ev.reply.command_status == S.ESME_RINVBNDSTS and ev.reply.sequence_number == 5
    assert smsc.pending == 1
    data = smsc.send(ev.reply, 0.0)
    assert codec.decode(data) == P.SubmitSmResp(sequence_number=5, command_status=S.ESME_RINVBNDSTS)
    assert smsc.pending == 0 and smsc.state is State.OPEN


def test_deliver_sm_on_tx_bind_is_a_local_error():
    pair = Pair()
    pair.bind("tx")
    with pytest.raises(LocalProtocolError, match="deliver_sm"):
        pair.smsc.send(deliver(), 0.0)
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(P.AlertNotification(), 0.0)
    assert pair.smsc.outstanding == 0
    # An ESME receiving one anyway answers ESME_RINVBNDSTS.
    ev = one(feed(pair.esme, codec.encode(deliver(sequence_number=3))))
    assert isinstance(ev, InvalidPdu) and isinstance(ev.reply, P.DeliverSmResp)
    assert ev.reply.command_status == S.ESME_RINVBNDSTS


def test_submit_on_rx_bind_is_a_local_error_and_refused_by_smsc():
    pair = Pair()
    pair.bind("rx")
    with pytest.raises(LocalProtocolError):
        pair.esme.send(submit(), 0.0)
    ev = one(feed(pair.smsc, codec.encode(submit(sequence_number=8))))
    assert isinstance(ev.reply, P.SubmitSmResp) and ev.reply.command_status == S.ESME_RINVBNDSTS
    # deliver_sm, data_sm and alert_notification flow SMSC -> ESME.
    assert isinstance(one(pair.smsc_sends(deliver())), Request)
    assert isinstance(one(pair.smsc_sends(P.DataSm())), Request)
    alert = one(pair.smsc_sends(P.AlertNotification(source_addr="33612345678")))
    assert isinstance(alert, Request) and not alert.needs_response
    assert pair.smsc.outstanding == 2  # alert_notification has no response to wait for
    assert pair.esme.pending == 2


def test_trx_carries_both_directions():
    pair = Pair()
    pair.bind("trx")
    for pdu in (submit(), P.SubmitMulti(dest_addresses=(P.SmeAddress(1, 1, "33600000000"),)),
                P.DataSm(), P.QuerySm(message_id="1"), P.CancelSm(message_id="1"),
                P.ReplaceSm(message_id="1"), P.EnquireLink()):
        req = one(pair.esme_sends(pdu))
        assert isinstance(req, Request) and req.needs_response
        assert isinstance(one(pair.smsc_sends(req.pdu.response())), Response)
    for pdu in (deliver(), P.DataSm(), P.EnquireLink()):
        req = one(pair.smsc_sends(pdu))
        assert isinstance(one(pair.esme_sends(req.pdu.response())), Response)
    assert pair.esme.outstanding == pair.smsc.outstanding == 0


def test_smsc_never_receives_deliver_sm():
    pair = Pair()
    pair.bind("trx")
    with pytest.raises(LocalProtocolError):
        pair.esme.send(deliver(), 0.0)
    ev = one(feed(pair.smsc, codec.encode(deliver(sequence_number=4))))
    assert isinstance(ev.reply, P.GenericNack) and ev.reply.command_status == S.ESME_RINVCMDID
    assert ev.reply.sequence_number == 4


def test_legality_table_follows_the_spec():
    def legal(role, state, step):
        return {C(c).name for c in LEGAL[(role, state, step)]}

    session = {"ENQUIRE_LINK", "UNBIND"}
    esme_ops = {"SUBMIT_SM", "SUBMIT_MULTI", "DATA_SM", "QUERY_SM", "CANCEL_SM", "REPLACE_SM"}
    smsc_ops = {"DELIVER_SM", "DATA_SM", "ALERT_NOTIFICATION"}
    binds = {"BIND_TRANSMITTER", "BIND_RECEIVER", "BIND_TRANSCEIVER"}
    assert legal(SMSC, State.BOUND_TX, Step.RECEIVE) == esme_ops | session
    assert legal(SMSC, State.BOUND_TX, Step.SEND) == session
    assert legal(SMSC, State.BOUND_RX, Step.SEND) == smsc_ops | session
    assert legal(SMSC, State.BOUND_RX, Step.RECEIVE) == session
    assert legal(SMSC, State.BOUND_TRX, Step.RECEIVE) == esme_ops | session
    assert legal(SMSC, State.BOUND_TRX, Step.SEND) == smsc_ops | session
    for state in State:  # the ESME mirrors the SMSC (in UNBOUND, only crossing requests)
        if state is not State.UNBOUND:
            assert legal(ESME, state, Step.SEND) == legal(SMSC, state, Step.RECEIVE)
            assert legal(SMSC, state, Step.SEND) == legal(ESME, state, Step.RECEIVE)
    assert legal(SMSC, State.OPEN, Step.RECEIVE) == binds | {"ENQUIRE_LINK"}
    assert legal(SMSC, State.OPEN, Step.SEND) == {"ENQUIRE_LINK", "OUTBIND"}
    assert legal(ESME, State.OPEN, Step.RECEIVE) == {"ENQUIRE_LINK", "OUTBIND"}
    assert legal(ESME, State.OPEN, Step.SEND) == binds | {"ENQUIRE_LINK"}
    assert legal(ESME, State.UNBOUND, Step.SEND) == set()
    assert legal(ESME, State.UNBOUND, Step.RECEIVE) == session
    for role in Role:
        assert legal(role, State.CLOSED, Step.SEND) == legal(role, State.CLOSED, Step.RECEIVE) == set()


def test_enquire_link_in_open_both_ways():
    pair = Pair()
    req = one(pair.esme_sends(P.EnquireLink()))
    assert isinstance(one(pair.smsc_sends(req.pdu.response())), Response)
    req = one(pair.smsc_sends(P.EnquireLink()))
    assert isinstance(one(pair.esme_sends(req.pdu.response())), Response)


def test_outbind():
    pair = Pair()
    ev = one(pair.smsc_sends(P.Outbind(system_id="SMSCENTER", password="pw")))
    assert isinstance(ev, Request) and not ev.needs_response
    assert pair.smsc.state is pair.esme.state is State.OUTBOUND
    assert pair.smsc.outstanding == 0 and pair.esme.pending == 0
    with pytest.raises(LocalProtocolError):
        pair.esme.send(P.BindTransmitter(system_id="acme"), 0.0)
    with pytest.raises(LocalProtocolError, match="waiting"):  # outbind has no response
        pair.esme.send(P.GenericNack(sequence_number=ev.pdu.sequence_number), 0.0)
    pair.bind("rx")
    # Only an SMSC sends outbind, and an ESME never receives it once bound.
    with pytest.raises(LocalProtocolError):
        Session(ESME).send(P.Outbind(), 0.0)
    bad = one(feed(pair.esme, codec.encode(P.Outbind(sequence_number=6))))
    assert isinstance(bad.reply, P.GenericNack) and bad.reply.command_status == S.ESME_RINVBNDSTS


# --- window and sequence numbers ----------------------------------------------------------


def test_window():
    pair = Pair(window=3)
    pair.bind("trx")
    seqs = []
    for _ in range(3):
        assert pair.esme.window_open()
        pair.esme.send(submit(), 0.0)
        seqs.append(pair.esme.last_sequence_number)
    assert seqs == [2, 3, 4] and pair.esme.outstanding == 3
    assert not pair.esme.window_open()
    with pytest.raises(WindowFull) as info:
        pair.esme.send(submit(), 0.0)
    assert isinstance(info.value, LocalProtocolError)
    assert pair.esme.outstanding == 3 and pair.esme.last_sequence_number == 4
    # Keep-alive and unbind are not held back by a full window.
    pair.esme.send(P.EnquireLink(), 0.0)
    assert pair.esme.outstanding == 4
    # A response frees a slot.
    ev = one(feed(pair.esme, codec.encode(P.SubmitSmResp(sequence_number=3, message_id="1"))))
    assert isinstance(ev, Response) and ev.request.short_message == b"hello"
    assert pair.esme.outstanding == 3 and not pair.esme.window_open()
    one(feed(pair.esme, codec.encode(P.EnquireLinkResp(sequence_number=5))))
    assert pair.esme.window_open()
    pair.esme.send(submit(), 0.0)
    assert pair.esme.last_sequence_number == 6


def test_peer_window_is_pending():
    pair = Pair()
    pair.bind("trx")
    reqs = [one(pair.esme_sends(submit())) for _ in range(5)]
    assert pair.smsc.pending == 5
    for req in reqs:
        pair.smsc.send(req.pdu.response(message_id="9"), 0.0)
    assert pair.smsc.pending == 0


def test_sequence_wraps_and_skips_outstanding():
    pair = Pair(window=100)
    pair.bind("trx")
    esme = pair.esme
    for seq in (2, 3, 5):
        esme.send(submit(sequence_number=seq), 0.0)
    esme._seq = MAX_SEQUENCE - 1
    got = []
    for _ in range(5):
        data = esme.send(submit(), 0.0)
        got.append(int.from_bytes(data[12:16], "big"))
        assert got[-1] == esme.last_sequence_number
    assert got == [MAX_SEQUENCE - 1, MAX_SEQUENCE, 1, 4, 6]
    with pytest.raises(LocalProtocolError, match="already outstanding"):
        esme.send(submit(sequence_number=4), 0.0)
    with pytest.raises(LocalProtocolError):
        esme.send(submit(sequence_number=MAX_SEQUENCE + 1), 0.0)
    assert esme.outstanding == 8


def test_failed_encode_records_nothing():
    pair = Pair()
    pair.bind("trx")
    with pytest.raises(LocalProtocolError):
        pair.esme.send(submit(short_message=b"x" * 300), 0.0)
    assert pair.esme.outstanding == 0
    req = one(pair.esme_sends(submit()))
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(req.pdu.response(message_id="x" * 80), 0.0)
    assert pair.smsc.pending == 1  # still owed: answer it properly
    pair.smsc.send(req.pdu.response(message_id="1"), 0.0)
    assert pair.smsc.pending == 0


# --- deadlines ----------------------------------------------------------------------------


def test_expire_with_fake_clock_and_late_response():
    pair = Pair(response_timeout=10.0)
    pair.bind("trx")
    esme = pair.esme
    assert esme.next_deadline() is None and esme.expire(100.0) == []
    esme.send(submit(), 0.0)
    first = esme.last_sequence_number
    esme.send(submit(), 5.0)
    assert esme.next_deadline() == 10.0
    assert esme.expire(9.99) == []
    expired = esme.expire(10.0)
    assert [type(o) for o in expired] == [Outstanding]
    assert expired[0].sequence_number == first and expired[0].deadline == 10.0
    assert expired[0].command_id == C.SUBMIT_SM and expired[0].sent_at == 0.0
    assert esme.outstanding == 1 and esme.next_deadline() == 15.0
    late = one(feed(esme, codec.encode(P.SubmitSmResp(sequence_number=first, message_id="1"))))
    assert isinstance(late, LateResponse) and late.pdu.sequence_number == first
    assert esme.outstanding == 1
    assert len(esme.expire(20.0)) == 1 and esme.next_deadline() is None


def test_expire_with_per_request_timeouts_out_of_order():
    pair = Pair(response_timeout=10.0)
    pair.bind("trx")
    esme = pair.esme
    esme.send(submit(), 0.0)  # deadline 10
    esme.send(P.EnquireLink(), 1.0, timeout=2.0)  # deadline 3
    esme.send(submit(), 2.0)  # deadline 12
    assert esme.next_deadline() == 3.0
    assert [o.deadline for o in esme.expire(3.0)] == [3.0]
    assert [o.deadline for o in esme.expire(11.0)] == [10.0]
    assert esme.next_deadline() == 12.0


def test_bind_timeout_allows_a_new_bind():
    esme = Session(ESME, response_timeout=5.0)
    esme.send(P.BindTransceiver(system_id="acme"), 0.0)
    assert [o.command_id for o in esme.expire(5.0)] == [C.BIND_TRANSCEIVER]
    assert esme.state is State.OPEN
    esme.send(P.BindTransceiver(system_id="acme"), 6.0)


def test_unanswered_unbind_expires_to_closed():
    pair = Pair(response_timeout=2.0)
    pair.bind("trx")
    pair.esme.send(P.Unbind(), 0.0)
    assert pair.esme.state is State.UNBOUND
    pair.esme.expire(2.0)
    assert pair.esme.state is State.CLOSED


# --- responses and generic_nack -----------------------------------------------------------


@MODES
def test_generic_nack_matched_to_request(mode):
    pair = Pair()
    pair.bind("trx")
    req = one(pair.esme_sends(submit()))
    nack = P.GenericNack(sequence_number=req.pdu.sequence_number, command_status=S.ESME_RTHROTTLED)
    ev = one(pair.smsc_sends(nack, mode))
    assert isinstance(ev, Response) and ev.pdu == nack and not ev.ok
    assert ev.request == submit()
    assert pair.esme.outstanding == 0 and pair.smsc.pending == 0
    assert pair.esme.state is State.BOUND_TRX


def test_answering_rules():
    pair = Pair()
    pair.bind("trx")
    req = one(pair.esme_sends(submit()))
    with pytest.raises(LocalProtocolError, match="waiting"):
        pair.smsc.send(P.SubmitSmResp(sequence_number=999), 0.0)
    with pytest.raises(LocalProtocolError, match="does not answer"):
        pair.smsc.send(P.DeliverSmResp(sequence_number=req.pdu.sequence_number), 0.0)
    pair.smsc.send(req.pdu.response(message_id="1"), 0.0)
    with pytest.raises(LocalProtocolError, match="waiting"):
        pair.smsc.send(req.pdu.response(message_id="1"), 0.0)


def test_peer_reusing_a_sequence_number_is_answered_twice():
    pair = Pair()
    pair.bind("trx")
    a = one(feed(pair.smsc, codec.encode(submit(sequence_number=7))))
    b = one(feed(pair.smsc, codec.encode(P.QuerySm(sequence_number=7, message_id="1"))))
    assert isinstance(a, Request) and isinstance(b, Request) and pair.smsc.pending == 2
    pair.smsc.send(b.pdu.response(message_id="1"), 0.0)
    pair.smsc.send(a.pdu.response(message_id="2"), 0.0)
    assert pair.smsc.pending == 0
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(a.pdu.response(), 0.0)


def test_response_of_the_wrong_type():
    pair = Pair()
    pair.bind("trx")
    pair.esme.send(submit(), 0.0)
    seq = pair.esme.last_sequence_number
    ev = one(feed(pair.esme, codec.encode(P.DeliverSmResp(sequence_number=seq))))
    assert isinstance(ev, InvalidPdu) and ev.reply is None and ev.request is None
    assert pair.esme.outstanding == 1  # still waiting for the real answer
    assert isinstance(one(feed(pair.esme, codec.encode(P.SubmitSmResp(sequence_number=seq)))), Response)


def test_undecodable_response_settles_its_request():
    pair = Pair()
    pair.bind("trx")
    pair.esme.send(submit(), 0.0)
    seq = pair.esme.last_sequence_number
    raw = bytearray(codec.encode(P.SubmitSmResp(sequence_number=seq, message_id="abc")))
    raw[-1:] = b"d"  # message_id loses its NUL
    ev = one(feed(pair.esme, bytes(raw)))
    assert isinstance(ev, InvalidPdu) and ev.reply is None
    assert isinstance(ev.error, DecodeError)
    assert isinstance(ev.request, Outstanding) and ev.request.sequence_number == seq
    assert pair.esme.outstanding == 0


def test_peer_sequence_number_out_of_range_is_echoed():
    pair = Pair()
    pair.bind("trx")
    raw = bytearray(codec.encode(submit(sequence_number=1)))
    raw[12:16] = (0x80000001).to_bytes(4, "big")
    req = one(feed(pair.smsc, bytes(raw)))
    assert isinstance(req, Request) and req.pdu.sequence_number == 0x80000001
    data = pair.smsc.send(req.pdu.response(message_id="1"), 0.0)
    assert data[12:16] == raw[12:16] and data[4:8] == (0x80000004).to_bytes(4, "big")


# --- bad input ----------------------------------------------------------------------------


@MODES
def test_unknown_command_gets_generic_nack(mode):
    pair = Pair()
    pair.bind("trx")
    raw = (16).to_bytes(4, "big") + (0x00000099).to_bytes(4, "big") + bytes(4) + (77).to_bytes(4, "big")
    ev = one(feed(pair.smsc, raw, mode))
    assert isinstance(ev, InvalidPdu) and isinstance(ev.error, RemoteProtocolError)
    assert ev.reply == P.GenericNack(sequence_number=77, command_status=S.ESME_RINVCMDID)
    data = pair.smsc.send(ev.reply, 0.0)
    assert codec.decode(data) == ev.reply
    assert isinstance(one(feed(pair.esme, data)), LateResponse)


def test_unknown_response_gets_no_reply():
    smsc = Session(SMSC)
    raw = (16).to_bytes(4, "big") + (0x80000099).to_bytes(4, "big") + bytes(4) + (3).to_bytes(4, "big")
    ev = one(feed(smsc, raw))
    assert isinstance(ev, InvalidPdu) and ev.reply is None


def _corrupt_submit(seq: int) -> bytes:
    """A submit_sm whose source_addr runs past its 21 octets."""
    good = codec.encode(submit(sequence_number=seq))
    body = bytearray(good[16:])
    start = body.index(b"ACME\0")
    body[start : start + 5] = b"A" * 30 + b"\0"
    return (16 + len(body)).to_bytes(4, "big") + good[4:16] + bytes(body)


@MODES
def test_corrupt_submit_sm_body(mode):
    pair = Pair()
    pair.bind("tx")
    ev = one(feed(pair.smsc, _corrupt_submit(31), mode))
    assert isinstance(ev, InvalidPdu) and isinstance(ev.error, DecodeError)
    assert ev.error.status == S.ESME_RINVSRCADR
    assert ev.reply == P.SubmitSmResp(sequence_number=31, command_status=S.ESME_RINVSRCADR)
    resp = pair.smsc.send(ev.reply, 0.0)
    assert codec.decode(resp).command_status == S.ESME_RINVSRCADR
    # The session carries on.
    assert pair.smsc.state is State.BOUND_TX and pair.smsc.pending == 0
    req = one(pair.esme_sends(submit(), mode))
    assert isinstance(req, Request)


def test_corrupt_request_before_bind_is_refused_for_the_state():
    ev = one(feed(Session(SMSC), _corrupt_submit(2)))
    assert ev.reply == P.SubmitSmResp(sequence_number=2, command_status=S.ESME_RINVBNDSTS)


def test_corrupt_bind_answers_its_own_resp():
    raw = bytearray(codec.encode(P.BindTransmitter(sequence_number=1, system_id="acme", password="12345678")))
    i = raw.index(b"12345678\0")
    raw[i + 8] = ord("9")  # password loses its NUL within 9 octets
    smsc = Session(SMSC)
    ev = one(feed(smsc, bytes(raw)))
    assert ev.reply == P.BindTransmitterResp(sequence_number=1, command_status=S.ESME_RINVPASWD)
    smsc.send(ev.reply, 0.0)
    assert smsc.state is State.OPEN


@pytest.mark.parametrize("mode", ["whole", "bytes"])
@pytest.mark.parametrize("length", [0, 8, 15, 65537, 0xFFFFFFFF])
def test_absurd_command_length_breaks_the_stream(length, mode):
    pair = Pair()
    pair.bind("trx")
    raw = length.to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4) + (1234).to_bytes(4, "big")
    events = feed(pair.smsc, raw + b"more bytes that must be ignored" * 3, mode)
    ev = one(events)
    assert isinstance(ev, StreamBroken) and isinstance(ev.error, FramingError)
    assert ev.reply == P.GenericNack(sequence_number=1234, command_status=S.ESME_RINVCMDLEN)
    assert isinstance(one(feed(pair.esme, pair.smsc.send(ev.reply, 0.0))), LateResponse)
    assert feed(pair.smsc, codec.encode(P.EnquireLink(sequence_number=3))) == []
    pair.smsc.receive_data(b"")
    assert drain(pair.smsc) == [PeerClosed()]


def test_absurd_length_after_close_just_stops_reading():
    smsc = Session(SMSC)
    smsc.close()
    assert feed(smsc, (3).to_bytes(4, "big") + bytes(12)) == []
    smsc.receive_data(b"")
    assert drain(smsc) == [PeerClosed()]


def test_events_before_the_break_are_delivered():
    smsc = Session(SMSC, max_pdu_size=1024)
    raw = codec.encode(P.EnquireLink(sequence_number=1)) + (2000).to_bytes(4, "big") + bytes(12)
    events = feed(smsc, raw)
    assert [type(e) for e in events] == [Request, StreamBroken]


# --- unbind and end of stream -------------------------------------------------------------


@MODES
def test_unbind_from_esme(mode):
    pair = Pair()
    pair.bind("trx")
    req = one(pair.esme_sends(P.Unbind(), mode))
    assert pair.esme.state is State.UNBOUND and isinstance(req, Request)
    with pytest.raises(LocalProtocolError):
        pair.esme.send(submit(), 0.0)
    assert pair.smsc.state is State.BOUND_TRX
    resp = one(pair.smsc_sends(req.pdu.response(), mode))
    assert isinstance(resp, Response) and resp.ok
    assert pair.esme.state is pair.smsc.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(P.EnquireLink(), 0.0)


@MODES
def test_unbind_from_smsc(mode):
    pair = Pair()
    pair.bind("rx")
    req = one(pair.smsc_sends(P.Unbind(), mode))
    assert pair.smsc.state is State.UNBOUND
    assert isinstance(one(pair.esme_sends(req.pdu.response(), mode)), Response)
    assert pair.esme.state is pair.smsc.state is State.CLOSED


def test_requests_crossing_our_unbind():
    pair = Pair()
    pair.bind("trx")
    in_flight = pair.esme.send(submit(), 0.0) + pair.esme.send(P.EnquireLink(), 0.0)
    pair.smsc.send(P.Unbind(), 0.0)
    submit_ev, enquire_ev = feed(pair.smsc, in_flight)
    # A submit after our unbind is refused (the partner keeps it and resubmits elsewhere);
    # a keep-alive is still answered.
    assert isinstance(submit_ev, InvalidPdu) and submit_ev.reply.command_status == S.ESME_RINVBNDSTS
    assert isinstance(enquire_ev, Request)
    pair.smsc.send(submit_ev.reply, 0.0)
    pair.smsc.send(enquire_ev.pdu.response(), 0.0)


def test_crossing_unbinds():
    pair = Pair()
    pair.bind("trx")
    to_smsc = pair.esme.send(P.Unbind(), 0.0)
    to_esme = pair.smsc.send(P.Unbind(), 0.0)
    assert pair.esme.state is pair.smsc.state is State.UNBOUND
    e_req = one(feed(pair.esme, to_esme))
    s_req = one(feed(pair.smsc, to_smsc))
    to_smsc = pair.esme.send(e_req.pdu.response(), 0.0)
    to_esme = pair.smsc.send(s_req.pdu.response(), 0.0)
    assert pair.esme.state is pair.smsc.state is State.CLOSED
    # Responses to our own unbind still match after the close.
    assert isinstance(one(feed(pair.esme, to_esme)), Response)
    assert isinstance(one(feed(pair.smsc, to_smsc)), Response)
    assert pair.esme.outstanding == pair.smsc.outstanding == 0


def test_requests_after_close_are_dropped_but_responses_match():
    pair = Pair()
    pair.bind("trx")
    pair.smsc.send(deliver(), 0.0)
    seq = pair.smsc.last_sequence_number
    pair.smsc.close()
    assert pair.smsc.state is State.CLOSED
    assert feed(pair.smsc, codec.encode(submit(sequence_number=50)) + _corrupt_submit(51)) == []
    ev = one(feed(pair.smsc, codec.encode(P.DeliverSmResp(sequence_number=seq))))
    assert isinstance(ev, Response)
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(P.DeliverSmResp(sequence_number=50), 0.0)


@pytest.mark.parametrize("mode", ["whole", "bytes", "unfinished"])
def test_eof(mode):
    pair = Pair()
    pair.bind("trx")
    req = pair.esme.send(submit(), 0.0)
    if mode == "unfinished":
        events = feed(pair.smsc, req + TRAILER)
    else:
        events = feed(pair.smsc, req, mode)
    pair.smsc.receive_data(b"")
    events += drain(pair.smsc)
    assert [type(e) for e in events] == [Request, PeerClosed]
    assert events[1] == PeerClosed(len(TRAILER) if mode == "unfinished" else 0)
    assert pair.smsc.state is State.CLOSED
    assert pair.smsc.next_event() is None
    pair.smsc.receive_data(b"ignored")
    assert pair.smsc.next_event() is None


def test_eof_keeps_outstanding_for_the_caller():
    pair = Pair()
    pair.bind("trx")
    pair.esme.send(submit(), 0.0)
    pair.esme.receive_data(b"")
    assert drain(pair.esme) == [PeerClosed()]
    assert [o.command_id for o in pair.esme.cancel_outstanding()] == [C.SUBMIT_SM]
    assert pair.esme.outstanding == 0


def test_many_pdus_in_one_read():
    pair = Pair(window=50)
    pair.bind("trx")
    data = b"".join(pair.esme.send(submit(), 0.0) for _ in range(40))
    events = feed(pair.smsc, data + TRAILER)
    assert len(events) == 40 and all(isinstance(e, Request) for e in events)
    answers = b"".join(pair.smsc.send(e.pdu.response(message_id=str(i)), 0.0) for i, e in enumerate(events))
    responses = feed(pair.esme, answers)
    assert [r.pdu.message_id for r in responses] == [str(i) for i in range(40)]
    assert pair.esme.outstanding == 0


def test_repr_never_shows_the_password():
    pair = Pair()
    req = one(pair.esme_sends(P.BindTransmitter(system_id="acme", password="s3cret")))
    assert "s3cret" not in repr(req) and "s3cret" not in repr(pair.esme._out)
    assert "SMSC" in repr(pair.smsc)


# --- fuzz ---------------------------------------------------------------------------------


def _check_events(session: Session, chunks: list[bytes]) -> None:
    total = 0
    for chunk in chunks:
        session.receive_data(chunk)
        total += len(chunk)
        events = []
        # Never hangs: at most one event per 16 octets received, plus the final PeerClosed.
        for _ in range(total // 16 + 2):
            event = session.next_event()
            if event is None:
                break
            events.append(event)
        else:
            raise AssertionError("next_event() did not run dry")
        for event in events:
            assert isinstance(event, Event)
            reply = getattr(event, "reply", None)
            if reply is not None and session.state is not State.CLOSED:
                session.send(reply, 0.0)  # every reply we build can be sent
    session.receive_data(b"")
    tail = drain(session)
    assert all(isinstance(e, Event) for e in tail)
    assert isinstance(tail[-1], PeerClosed) if tail else session.state is State.CLOSED


def _header(cid: int, seq: int, body: bytes) -> bytes:
    head = (16 + len(body)).to_bytes(4, "big") + cid.to_bytes(4, "big") + bytes(4)
    return head + seq.to_bytes(4, "big") + body


_cids = st.sampled_from([int(c) for c in C] + [0x99, 0x80000099])
_pdus_ish = st.builds(_header, _cids, st.integers(0, 0xFFFFFFFF), st.binary(max_size=80))
_roles = st.sampled_from(list(Role))
_states = st.sampled_from(["open", "tx", "rx", "trx"])


def _session(role: Role, bound: str) -> Session:
    pair = Pair()
    if bound != "open":
        pair.bind(bound)
    return pair.esme if role is ESME else pair.smsc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_roles, _states, st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_random_bytes(role, bound, chunks):
    _check_events(_session(role, bound), chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_roles, _states, st.lists(_pdus_ish, max_size=10), st.integers(1, 40))
def test_fuzz_plausible_pdus(role, bound, pdus, cut):
    data = b"".join(pdus)
    _check_events(_session(role, bound), [data[i : i + cut] for i in range(0, len(data), cut)])
