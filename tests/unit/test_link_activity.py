"""``smscenter.link``: what counts as the peer's activity (inactivity timeout), on a fake
transport with a fake clock.

- bytes that never complete a PDU are not activity;
- time we ourselves stopped reading (backpressure: the peer did not read our answers) is
  not the peer's silence; a peer that reads nothing for the whole timeout is still closed.
"""

from __future__ import annotations

import asyncio

from protocol import pdu as P
from protocol.codec import encode
from protocol.session import Role
from smscenter.link import Link


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.reading = True
        self.written = bytearray()

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def write(self, data) -> None:
        self.written += data


class Handler:
    def on_request(self, link, pdu) -> None:
        link.respond(pdu.response())

    def on_invalid(self, link, event) -> None:
        pass

    def on_late_response(self, link, pdu) -> None:
        pass

    def on_closed(self, link, exc) -> None:
        pass


def open_link(clock: Clock) -> tuple[Link, FakeTransport]:
    link = Link(Role.SMSC, Handler(), enquire_link_interval=30.0, inactivity_timeout=60.0, clock=clock)
    transport = FakeTransport()
    link.connection_made(transport)
    return link, transport


def tick(link: Link, clock: Clock, seconds: float) -> None:
    """Let ``seconds`` pass and run the link's timer (what call_later would do)."""
    clock.now += seconds
    link._on_timer()


async def test_partial_pdu_bytes_are_not_activity():
    clock = Clock()
    link, transport = open_link(clock)
    data = encode(P.EnquireLink(), 1)
    for byte in data[:-1]:
        tick(link, clock, 5.0)
        link.data_received(bytes([byte]))  # 15 bytes over 75 s: never a whole PDU
    assert transport.closing, "bytes that never made a PDU kept the session open"


async def test_a_complete_pdu_is_activity():
    clock = Clock()
    link, transport = open_link(clock)
    for seq in range(1, 6):
        tick(link, clock, 50.0)
        link.data_received(encode(P.EnquireLink(), seq))
    assert not transport.closing


async def test_time_paused_for_backpressure_is_not_the_peers_silence():
    clock = Clock()
    link, transport = open_link(clock)
    tick(link, clock, 50.0)  # quiet, but within the timeout
    link.pause_writing()  # the peer stopped reading our answers: we stop reading it
    tick(link, clock, 50.0)  # 100 s since its last PDU, 50 s of them ours
    assert not transport.closing
    link.resume_writing()  # it read: alive
    tick(link, clock, 50.0)
    assert not transport.closing


async def test_a_peer_that_reads_nothing_for_the_whole_timeout_is_closed():
    clock = Clock()
    link, transport = open_link(clock)
    link.pause_writing()
    tick(link, clock, 61.0)
    assert transport.closing
