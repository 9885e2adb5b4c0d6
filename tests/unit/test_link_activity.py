"""``smscenter.smpp.link``: what counts as the peer's activity (inactivity timeout), on a fake
transport, on virtual time (``FakeTimers``: the link's own timers fire as the clock moves).

- bytes that never complete a PDU are not activity;
- time we ourselves stopped reading (backpressure: the peer did not read our answers) is
  not the peer's silence; a peer that reads nothing for the whole timeout is still closed.
"""

from __future__ import annotations

import asyncio

from protocol import pdu as P
from protocol.codec import encode
from protocol.session import Role
from smscenter.smpp.link import Link
from smscenter.runtime.timers import FakeTimers


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


def open_link(timers: FakeTimers) -> tuple[Link, FakeTransport]:
    link = Link(Role.SMSC, Handler(), enquire_link_interval=30.0, inactivity_timeout=60.0, timers=timers)
    transport = FakeTransport()
    link.connection_made(transport)
    return link, transport


async def tick(timers: FakeTimers, seconds: float) -> None:
    """Let ``seconds`` pass: the link's timers due meanwhile fire, in order."""
    await timers.advance(seconds)


async def test_partial_pdu_bytes_are_not_activity():
    timers = FakeTimers(start=1000.0)
    link, transport = open_link(timers)
    data = encode(P.EnquireLink(), 1)
    for byte in data[:-1]:
        await tick(timers, 5.0)
        link.data_received(bytes([byte]))  # 15 bytes over 75 s: never a whole PDU
    assert transport.closing, "bytes that never made a PDU kept the session open"


async def test_a_complete_pdu_is_activity():
    timers = FakeTimers(start=1000.0)
    link, transport = open_link(timers)
    for seq in range(1, 6):
        await tick(timers, 50.0)
        link.data_received(encode(P.EnquireLink(), seq))
    assert not transport.closing


async def test_time_paused_for_backpressure_is_not_the_peers_silence():
    timers = FakeTimers(start=1000.0)
    link, transport = open_link(timers)
    await tick(timers, 50.0)  # quiet, but within the timeout
    link.pause_writing()  # the peer stopped reading our answers: we stop reading it
    await tick(timers, 50.0)  # 100 s since its last PDU, 50 s of them ours
    assert not transport.closing
    link.resume_writing()  # it read: alive
    await tick(timers, 50.0)
    assert not transport.closing


async def test_a_peer_that_reads_nothing_for_the_whole_timeout_is_closed():
    timers = FakeTimers(start=1000.0)
    link, transport = open_link(timers)
    link.pause_writing()
    await tick(timers, 61.0)
    assert transport.closing
