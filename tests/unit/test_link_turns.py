"""``smscenter.smpp.link``'s per-turn budget on a fake transport: a read holding many PDUs is
handled ``pdus_per_turn`` at a time, one batch per loop turn, with reading paused meanwhile;
enquire_link goes to the handler's meter after its answer."""

from __future__ import annotations

import asyncio

from protocol import pdu as P
from protocol.codec import encode
from protocol.session import Role
import smscenter.smpp.link as link_module
from smscenter.smpp.link import Link
from smscenter.runtime.timers import FakeTimers
from tests.unit.test_link_activity import FakeTransport, Handler

SUBMIT = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"hi")


class Counting(Handler):
    pdus_per_turn = 8

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.enquire_links = 0

    def on_request(self, link, pdu) -> None:
        self.handled.append(pdu.sequence_number)
        link.respond(pdu.response(message_id="1"))

    def on_enquire_link(self, link) -> None:
        self.enquire_links += 1


def bound_link(handler) -> tuple[Link, FakeTransport]:
    link = Link(Role.SMSC, handler, enquire_link_interval=30.0, inactivity_timeout=60.0,
                timers=FakeTimers(start=1000.0))
    transport = FakeTransport()
    link.connection_made(transport)
    link.session.receive_data(encode(P.BindTransmitter(system_id="acme", password="x"), 1))
    bind = link.session.next_event().pdu
    link.respond(bind.response(system_id="SMSC"))
    return link, transport


async def test_a_big_read_is_handled_a_turn_at_a_time(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_BUFFER", 100)  # 20 PDUs are more than that
    handler = Counting()
    link, transport = bound_link(handler)
    link.data_received(b"".join(encode(SUBMIT, seq) for seq in range(2, 22)))  # 20 PDUs in one read
    assert handler.handled == list(range(2, 10))  # the turn's budget: 8
    assert not transport.is_reading()  # the rest waits in the session's buffer, no more is read
    await asyncio.sleep(0)
    assert handler.handled == list(range(2, 18))
    assert not transport.is_reading()
    await asyncio.sleep(0)
    assert handler.handled == list(range(2, 22))
    await asyncio.sleep(0)
    assert transport.is_reading()  # all handled: reading again
    assert link.session.pending == 0


async def test_a_small_rest_waits_its_turn_without_pausing_the_socket():
    handler = Counting()
    link, transport = bound_link(handler)
    link.data_received(b"".join(encode(SUBMIT, seq) for seq in range(2, 22)))  # 20 PDUs, ~1 KB
    assert handler.handled == list(range(2, 10))
    assert transport.is_reading()  # under TURN_BUFFER: no epoll change for a full window
    link.data_received(encode(SUBMIT, 22))  # read before the turn came: waits behind the rest
    assert handler.handled == list(range(2, 10))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert handler.handled == list(range(2, 23))  # in order
    assert transport.is_reading() and link.session.pending == 0


async def test_write_backpressure_keeps_reading_paused_across_turns(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_BUFFER", 10)
    handler = Counting()
    link, transport = bound_link(handler)
    link.data_received(b"".join(encode(SUBMIT, seq) for seq in range(2, 12)))
    link.pause_writing()  # the peer stopped reading our answers meanwhile
    link.resume_writing()  # ... and reads again before the next turn: the turn resumes reading
    assert not transport.is_reading()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert handler.handled == list(range(2, 12)) and transport.is_reading()
    link.data_received(b"".join(encode(SUBMIT, seq) for seq in range(12, 22)))
    link.pause_writing()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert handler.handled[-1] == 21
    assert not transport.is_reading()  # the write side is still paused: stays paused


async def test_enquire_link_answered_then_metered_and_no_budget_without_one():
    handler = Counting()
    link, transport = bound_link(handler)
    link.data_received(b"".join(encode(P.EnquireLink(), seq) for seq in range(2, 7)))
    assert handler.enquire_links == 5
    handler2 = Handler()  # no pdus_per_turn, no on_enquire_link: as before (connectors)
    link2 = Link(Role.SMSC, handler2, timers=FakeTimers(start=1000.0))
    assert link2.pdus_per_turn is None


async def test_closing_in_the_handler_stops_the_turn():
    class ClosesAtFive(Counting):
        def on_request(self, link, pdu) -> None:
            super().on_request(link, pdu)
            if len(self.handled) == 5:
                link.close()

    handler = ClosesAtFive()
    link, transport = bound_link(handler)
    link.data_received(b"".join(encode(SUBMIT, seq) for seq in range(2, 12)))
    await asyncio.sleep(0)
    assert len(handler.handled) == 5


async def test_an_answer_after_the_session_closed_is_dropped_not_raised():
    """The core answers a deliver_sm once it is stored; if the session ended meanwhile (our
    unbind answered, the socket not yet closed) the answer is dropped — it used to raise
    LocalProtocolError in a store callback at shutdown."""
    link, transport = bound_link(Counting())
    link.session.receive_data(encode(SUBMIT, 2))
    request = link.session.next_event().pdu
    link.session.close()  # ended; the transport is still open
    sent = len(transport.written)
    link.respond(request.response(message_id="1"))  # no LocalProtocolError
    assert len(transport.written) == sent
