"""The sans-I/O session's timers (protocol/session.py): keep-alive, inactivity, the bind
timeout, the peer's unbind, beside the response deadlines.

Pure: time is a number given with each call (``connected``, ``receive_data``, ``send``,
``timeout``), no clock and no loop. Each test follows what a caller does: sleep until
``next_deadline()``, then act on what ``timeout(now)`` says is due.
"""

from __future__ import annotations

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandId as C, CommandStatus as S
from protocol.session import Close, Due, Request, Response, Role, Session, State

SUBMIT = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"hi")


def smsc(**timers) -> Session:
    """A partner's session on our side, opened at t=0."""
    timers = {"response_timeout": 10.0, "enquire_link_interval": 30.0, "inactivity_timeout": 120.0, **timers}
    session = Session(Role.SMSC, **timers)
    session.connected(0.0)
    return session


def receive(session: Session, pdu: P.Pdu, seq: int, now: float) -> list:
    session.receive_data(codec.encode(pdu, seq), now)
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def bound(now: float = 1.0, **timers) -> Session:
    """Bound as a transceiver at ``now`` (bind received and answered then)."""
    session = smsc(**timers)
    [request] = receive(session, P.BindTransceiver(system_id="acme", password="x"), 1, now)
    session.send(request.pdu.response(system_id="SMSC"), now)
    assert session.state is State.BOUND_TRX
    return session


def sent_pdu(data: bytes) -> P.Pdu:
    return codec.decode(data)


def nothing(due: Due) -> bool:
    return due.expired == [] and due.data == b"" and due.close is None


# --- keep-alive ---------------------------------------------------------------------------


def test_enquire_link_after_the_interval_of_silence():
    session = bound()
    assert session.next_deadline() == 31.0  # bound at 1, nothing heard or sent since
    assert nothing(session.timeout(30.99))
    due = session.timeout(31.0)
    assert due.close is None and due.expired == []
    keepalive = sent_pdu(due.data)
    assert keepalive.command_id == C.ENQUIRE_LINK
    assert session.outstanding == 1 and session.last_sequence_number == keepalive.sequence_number


def test_a_pdu_of_the_peer_pushes_back_the_enquire_link():
    session = bound()
    [request] = receive(session, SUBMIT, 2, 20.0)
    assert session.next_deadline() == 50.0
    assert nothing(session.timeout(31.0))
    session.send(request.pdu.response(message_id="1"), 25.0)  # what we send counts too
    assert session.next_deadline() == 55.0
    assert nothing(session.timeout(54.0))
    assert sent_pdu(session.timeout(55.0).data).command_id == C.ENQUIRE_LINK


def test_half_a_pdu_does_not_push_back_the_enquire_link():
    session = bound()
    data = codec.encode(SUBMIT, 2)
    session.receive_data(data[:10], 20.0)
    assert session.next_event() is None
    assert session.next_deadline() == 31.0
    assert sent_pdu(session.timeout(31.0).data).command_id == C.ENQUIRE_LINK


def test_one_enquire_link_at_a_time_and_the_next_counts_from_its_answer():
    session = bound(response_timeout=10.0)
    keepalive = sent_pdu(session.timeout(31.0).data)
    # While it waits, the keep-alive timer is not a deadline (no wake-up loop before the
    # answer's own deadline, even with a response timeout longer than the interval).
    assert session.next_deadline() == 41.0
    assert nothing(session.timeout(40.0))
    [answer] = receive(session, keepalive.response(), keepalive.sequence_number, 33.0)
    assert isinstance(answer, Response) and answer.request.command_id == C.ENQUIRE_LINK
    assert session.outstanding == 0
    assert session.next_deadline() == 63.0
    assert sent_pdu(session.timeout(63.0).data).command_id == C.ENQUIRE_LINK


def test_no_second_enquire_link_while_one_waits_longer_than_the_interval():
    session = Session(Role.SMSC, response_timeout=100.0, enquire_link_interval=30.0, inactivity_timeout=500.0)
    session.connected(0.0)
    [bind] = receive(session, P.BindTransmitter(system_id="acme", password="x"), 1, 0.0)
    session.send(bind.pdu.response(system_id="SMSC"), 0.0)
    assert session.timeout(30.0).data
    assert session.next_deadline() == 130.0  # the answer's deadline, not 60
    assert nothing(session.timeout(60.0))
    assert session.outstanding == 1


def test_an_unanswered_enquire_link_expires_and_another_follows():
    session = bound()
    keepalive = sent_pdu(session.timeout(31.0).data)
    due = session.timeout(41.0)
    assert [o.sequence_number for o in due.expired] == [keepalive.sequence_number]
    assert due.data == b"" and due.close is None
    assert session.next_deadline() == 61.0  # 30 s after we last sent (the enquire_link at 31)
    again = sent_pdu(session.timeout(61.0).data)
    assert again.command_id == C.ENQUIRE_LINK and again.sequence_number != keepalive.sequence_number


def test_no_enquire_link_before_the_bind_nor_after_our_unbind():
    session = smsc(bind_timeout=None)
    assert session.next_deadline() == 120.0  # inactivity only
    assert nothing(session.timeout(60.0))
    session = bound()
    session.send(P.Unbind(), 5.0)
    assert session.state is State.UNBOUND
    assert session.next_deadline() == 15.0  # the unbind's answer
    assert session.timeout(35.0 + 0.0).data == b""


def test_esme_keep_alive_starts_when_its_bind_is_answered():
    esme = Session(Role.ESME, response_timeout=10.0, enquire_link_interval=30.0, inactivity_timeout=120.0)
    esme.connected(0.0)
    esme.send(P.BindTransceiver(system_id="us", password="x"), 0.0)
    assert esme.next_deadline() == 10.0  # the bind's answer
    [answer] = receive(esme, P.BindTransceiverResp(system_id="UP"), 1, 2.0)
    assert answer.ok and esme.state is State.BOUND_TRX
    assert esme.next_deadline() == 32.0
    assert sent_pdu(esme.timeout(32.0).data).command_id == C.ENQUIRE_LINK


# --- inactivity -----------------------------------------------------------------------------


def test_closed_after_the_inactivity_timeout_without_a_pdu():
    session = bound(inactivity_timeout=60.0, enquire_link_interval=None)
    assert session.next_deadline() == 61.0
    assert nothing(session.timeout(60.99))
    due = session.timeout(61.0)
    assert due.close is Close.INACTIVITY and due.data == b""
    assert due.close.value == "inactivity timeout"


def test_half_a_pdu_does_not_reset_inactivity():
    session = bound(inactivity_timeout=60.0)
    data = codec.encode(P.EnquireLink(), 2)
    for i, byte in enumerate(data[:-1]):  # one octet every 4 s, never a whole PDU
        session.receive_data(bytes([byte]), 1.0 + 4 * (i + 1))
        assert session.next_event() is None
    assert session.timeout(61.0).close is Close.INACTIVITY


def test_the_octet_that_completes_a_pdu_resets_inactivity():
    session = bound(inactivity_timeout=60.0, enquire_link_interval=None)
    data = codec.encode(P.EnquireLink(), 2)
    session.receive_data(data[:-1], 10.0)
    assert session.next_event() is None
    session.receive_data(data[-1:], 50.0)
    assert isinstance(session.next_event(), Request)
    assert session.next_deadline() == 110.0
    assert nothing(session.timeout(61.0))


def test_our_own_sending_does_not_reset_inactivity():
    session = bound(inactivity_timeout=60.0)
    assert session.timeout(31.0).data  # an enquire_link of ours, unanswered
    due = session.timeout(61.0)
    assert due.close is Close.INACTIVITY
    assert [o.pdu.command_id for o in due.expired] == [C.ENQUIRE_LINK]  # expired first


def test_peer_alive_counts_as_heard():
    session = bound(inactivity_timeout=60.0, enquire_link_interval=None)
    session.peer_alive(40.0)  # it read what we sent (or we stopped reading it)
    assert session.next_deadline() == 100.0
    assert nothing(session.timeout(61.0))
    assert session.timeout(100.0).close is Close.INACTIVITY


def test_inactivity_wins_over_a_due_enquire_link():
    session = bound(inactivity_timeout=40.0, enquire_link_interval=30.0)
    due = session.timeout(100.0)  # both due: closing, not pinging
    assert due.close is Close.INACTIVITY and due.data == b"" and session.outstanding == 0


# --- bind timeout ---------------------------------------------------------------------------


def test_closed_when_no_bind_came_in_time():
    session = smsc(bind_timeout=10.0)
    assert session.next_deadline() == 10.0
    assert nothing(session.timeout(9.99))
    due = session.timeout(10.0)
    assert due.close is Close.BIND_TIMEOUT and due.close.value == "bind timeout"


def test_bind_timeout_not_applied_while_our_answer_to_a_bind_is_pending():
    session = smsc(bind_timeout=10.0)
    [bind] = receive(session, P.BindTransmitter(system_id="acme", password="x"), 1, 9.0)
    assert session.next_deadline() == 129.0  # inactivity only: the bind is being checked
    assert nothing(session.timeout(15.0))
    session.send(bind.pdu.response(system_id="SMSC"), 16.0)  # accepted, late
    assert session.state is State.BOUND_TX
    assert session.next_deadline() == 46.0  # keep-alive now; the bind timeout is gone
    assert session.timeout(20.0).close is None


def test_a_refused_bind_after_the_bind_timeout_closes_at_once():
    session = smsc(bind_timeout=10.0)
    [bind] = receive(session, P.BindTransmitter(system_id="acme", password="bad"), 1, 9.0)
    session.send(bind.pdu.response(S.ESME_RINVPASWD), 16.0)
    assert session.state is State.OPEN
    assert session.next_deadline() == 10.0  # already past
    assert session.timeout(16.0).close is Close.BIND_TIMEOUT


def test_an_enquire_link_before_the_bind_does_not_stop_the_bind_timeout():
    session = smsc(bind_timeout=10.0)
    [ping] = receive(session, P.EnquireLink(), 1, 5.0)
    session.send(ping.pdu.response(), 5.0)
    assert session.timeout(10.0).close is Close.BIND_TIMEOUT


# --- the peer's unbind ------------------------------------------------------------------------


def test_unbind_resp_waits_for_the_answers_the_peer_still_waits_for():
    session = bound()
    [submit] = receive(session, SUBMIT, 2, 5.0)
    [unbind] = receive(session, P.Unbind(), 3, 5.0)
    assert unbind.pdu.command_id == C.UNBIND
    assert session.unbind_received_at == 5.0
    assert session.answer_unbind(5.0) is None  # the submit is answered first
    assert session.next_deadline() == 15.0
    session.send(submit.pdu.response(message_id="1"), 6.0)
    data = session.answer_unbind(6.0)
    resp = sent_pdu(data)
    assert (resp.command_id, resp.sequence_number, resp.command_status) == (C.UNBIND_RESP, 3, 0)
    assert session.state is State.CLOSED and session.unbind_received_at is None
    assert session.next_deadline() is None  # closed: nothing more to wait for
    assert nothing(session.timeout(1000.0))


def test_unbind_resp_sent_anyway_after_the_response_timeout():
    session = bound()
    session.send(P.DeliverSm(source_addr="1", destination_addr="2"), 5.0)  # ours, deadline 15
    receive(session, SUBMIT, 2, 5.0)
    receive(session, P.Unbind(), 3, 5.0)
    assert nothing(session.timeout(14.99))
    due = session.timeout(15.0)
    assert due.close is Close.UNBIND and due.expired == []  # given up, before anything else
    assert sent_pdu(due.data).command_id == C.UNBIND_RESP
    assert session.state is State.CLOSED


def test_unbind_alone_is_answered_at_once():
    session = bound()
    receive(session, P.Unbind(), 2, 5.0)
    assert sent_pdu(session.answer_unbind(5.0)).sequence_number == 2
    assert session.answer_unbind(5.0) is None  # answered once


def test_no_timers_without_settings():
    session = Session(Role.SMSC)
    session.connected(0.0)
    assert session.next_deadline() is None
    assert nothing(session.timeout(1e9))
