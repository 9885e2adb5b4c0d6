"""The partner's unbind over a real loopback socket (``smscenter.smpp.link`` on the session's
rules): its unbind_resp waits for the answers the partner still waits for (a submit being
stored), and goes anyway, then the close, once ``response_timeout`` has passed (virtual time).

"Not yet" is checked with a barrier: an enquire_link sent after the unbind is answered
before anything else could be.
"""

from __future__ import annotations

import asyncio

from protocol import pdu as P
from protocol.constants import CommandId as C
from protocol.session import Role
from smscenter.runtime.timers import FakeTimers
from smscenter.smpp.link import Link
from tests.integration.conftest import HOST, RawClient
from tests.unit.test_link_activity import Handler

SUBMIT = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"hi")


class Holding(Handler):
    """Answers binds at once and holds every other request (as a store that is slow)."""

    def __init__(self) -> None:
        self.held: list[tuple[Link, P.Pdu]] = []

    def on_request(self, link, pdu) -> None:
        if pdu.command_id == C.BIND_TRANSMITTER:
            link.respond(pdu.response(system_id="SMSC"))
        else:
            self.held.append((link, pdu))


async def serve(timers: FakeTimers, handler: Holding):
    def make() -> Link:
        return Link(Role.SMSC, handler, response_timeout=10.0, enquire_link_interval=300.0,
                    inactivity_timeout=600.0, timers=timers)

    server = await asyncio.get_running_loop().create_server(make, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


async def bound_with_a_held_submit(port: int, handler: Holding) -> RawClient:
    client = await RawClient.connect(port)
    assert (await client.bind()).command_status == 0
    client.send(SUBMIT, 2)
    client.send(P.Unbind(), 3)
    client.send(P.EnquireLink(), 4)  # the barrier
    frame = await client.read()
    assert (frame.command_id, frame.sequence_number) == (C.ENQUIRE_LINK_RESP, 4), "unbind_resp before the submit's answer"
    assert [pdu.sequence_number for _, pdu in handler.held] == [2]
    return client


async def test_unbind_resp_follows_the_answer_the_partner_waits_for():
    timers, handler = FakeTimers(), Holding()
    server, port = await serve(timers, handler)
    client = await bound_with_a_held_submit(port, handler)
    link, submit = handler.held[0]
    link.respond(submit.response(message_id="1"))  # stored: answered
    first, second = await client.read(), await client.read()
    assert (first.command_id, first.sequence_number) == (C.SUBMIT_SM_RESP, 2)
    assert (second.command_id, second.sequence_number, second.command_status) == (C.UNBIND_RESP, 3, 0)
    assert await client.closed()
    await client.close()
    server.close()


async def test_unbind_resp_goes_anyway_after_the_response_timeout():
    timers, handler = FakeTimers(), Holding()
    server, port = await serve(timers, handler)
    client = await bound_with_a_held_submit(port, handler)
    await timers.advance(9.9)
    client.send(P.EnquireLink(), 5)
    frame = await client.read()
    assert (frame.command_id, frame.sequence_number) == (C.ENQUIRE_LINK_RESP, 5), "unbind_resp before the timeout"
    await timers.advance(0.2)
    frame = await client.read()
    assert (frame.command_id, frame.sequence_number) == (C.UNBIND_RESP, 3)  # the submit never answered
    assert await client.closed()
    await client.close()
    server.close()
