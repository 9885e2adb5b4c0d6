"""A scriptable, misbehaving upstream SMSC for connector tests.

Built from our codec only (``Framer`` + ``decode``/``encode``), not from our ``Session``, so it
can break the rules a real session would enforce: refuse binds, answer late or never, answer
with generic_nack, throttle, drop the connection with requests in flight.

Behaviour is read from plain attributes at the moment each PDU arrives, so a test may change
it at any time (e.g. start accepting binds after refusing a few):

- ``bind_status``: command_status answered to every bind (0 accepts);
- ``delay``: seconds before a submit_sm is answered (longer than the client's
  response_timeout means "answers late");
- ``never_answer``: submit_sm are recorded and never answered;
- ``throttle_first`` / ``throttle_status``: the first N submit_sm (over all connections) are
  answered with ESME_RTHROTTLED (or another status);
- ``generic_nack``: if not None, submit_sm are answered with a generic_nack of that status;
- ``garble``: submit_sm are answered with an undecodable submit_sm_resp (message_id
  without its terminating NUL);
- ``close_after``: close the connection once it has received that many submit_sm, without
  answering the unanswered ones (one shot: reset to None when it fires);
- ``message_ids``: writes the id of the n-th accepted submit_sm (``first_number`` + its rank
  among all submit_sm received) into its submit_sm_resp (``UP<n>`` by default; e.g. hex or
  zero-padded decimal, as upstreams do).

It records: ``submits`` (every submit_sm received, in order, duplicates included),
``outstanding`` / ``max_outstanding`` (submit_sm received and not yet answered, over all
connections), ``connections``, ``bind_attempts``, ``binds`` (accepted), ``unbinds``,
``enquire_links``, ``closed_with_outstanding`` (unanswered count at each scripted close) and
``dropped`` (those unanswered submit_sm),
``late_answers`` (answers written after ``delay``), ``deliver_responses``.

``send_deliver(pdu)`` pushes a deliver_sm down the first bound connection and returns the
client's response. Listens on 127.0.0.1, on ``port`` (0 by default: any free port, read
``port`` after ``start()``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from protocol import pdu as P
from protocol.codec import decode, encode
from protocol.constants import RESPONSE_BIT, CommandId, CommandStatus
from protocol.framing import Framer
from tests.patience import PATIENCE

_BINDS = frozenset({CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER})


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, upstream: "Upstream") -> None:
        self.upstream = upstream
        self.framer = Framer()
        self.transport: asyncio.Transport | None = None
        self.bound = False
        self.received = 0  # submit_sm received on this connection
        self.unanswered: dict[int, asyncio.TimerHandle | None] = {}  # seq -> pending answer
        self.unanswered_pdus: dict[int, P.SubmitSm] = {}
        self.waiting: dict[int, asyncio.Future] = {}  # our deliver_sm -> its response
        self._seq = 0x10000

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.upstream.connections += 1
        self.upstream.sessions.append(self)

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        for frame in self.framer.frames():
            if self.closing:
                return  # what arrived after a scripted close is never "received"
            self.handle(decode(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop_unanswered()
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("client went away"))
        self.waiting.clear()
        if self in self.upstream.sessions:
            self.upstream.sessions.remove(self)

    # --- requests ------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, pdu: P.Pdu) -> None:
        if not self.closing:
            self.transport.write(encode(pdu))  # type: ignore[union-attr]

    def handle(self, pdu: P.Pdu) -> None:
        up = self.upstream
        cid = pdu.command_id
        if cid & RESPONSE_BIT:
            up.responses.append(pdu)
            fut = self.waiting.pop(pdu.sequence_number, None)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            return
        if cid in _BINDS:
            up.bind_attempts += 1
            up.bind_pdus.append(pdu)
            self.bind_pdu = pdu
            status = up.bind_status
            if status == 0:
                up.binds += 1
                self.bound = True
            self.write(pdu.response(status, system_id=up.system_id))
        elif cid == CommandId.ENQUIRE_LINK:
            up.enquire_links += 1
            self.write(pdu.response())
        elif cid == CommandId.UNBIND:
            up.unbinds += 1
            self.bound = False
            self.write(pdu.response())
            self.close()
        elif cid == CommandId.SUBMIT_SM:
            self.on_submit(pdu)  # type: ignore[arg-type]
        else:
            self.write(P.GenericNack(sequence_number=pdu.sequence_number,
                                     command_status=CommandStatus.ESME_RINVCMDID))

    def on_submit(self, pdu: P.SubmitSm) -> None:
        up = self.upstream
        up.submits.append(pdu)
        self.received += 1
        seq = pdu.sequence_number
        self.unanswered[seq] = None
        self.unanswered_pdus[seq] = pdu
        up.outstanding += 1
        up.max_outstanding = max(up.max_outstanding, up.outstanding)
        if up.close_after is not None and self.received >= up.close_after:
            up.close_after = None
            up.closed_with_outstanding.append(len(self.unanswered))
            up.dropped.append(list(self.unanswered_pdus.values()))
            self.close()
            return
        if up.never_answer:
            return
        if up.garble:
            del self.unanswered[seq], self.unanswered_pdus[seq]
            up.outstanding -= 1
            body = b"UNTERMINATED"
            self.transport.write(  # type: ignore[union-attr]
                (16 + len(body)).to_bytes(4, "big") + int(CommandId.SUBMIT_SM_RESP).to_bytes(4, "big")
                + bytes(4) + seq.to_bytes(4, "big") + body
            )
            return
        if up.throttled < up.throttle_first:
            up.throttled += 1
            resp: P.Pdu = pdu.response(up.throttle_status)
        elif up.generic_nack is not None:
            resp = P.GenericNack(sequence_number=seq, command_status=up.generic_nack)
        else:
            up.accepted += 1
            resp = pdu.response(message_id=up.message_ids(up.first_number + len(up.submits)))
        if up.delay > 0:
            loop = asyncio.get_running_loop()
            self.unanswered[seq] = loop.call_later(up.delay, self.answer, seq, resp, True)
        else:
            self.answer(seq, resp)

    def answer(self, seq: int, resp: P.Pdu, delayed: bool = False) -> None:
        if seq not in self.unanswered or self.closing:
            return
        del self.unanswered[seq]
        del self.unanswered_pdus[seq]
        self.upstream.outstanding -= 1
        if delayed:
            self.upstream.late_answers += 1
        self.write(resp)

    def _drop_unanswered(self) -> None:
        for handle in self.unanswered.values():
            if handle is not None:
                handle.cancel()
        self.upstream.outstanding -= len(self.unanswered)
        self.unanswered.clear()
        self.unanswered_pdus.clear()

    def close(self) -> None:
        """Close now, leaving whatever is unanswered unanswered."""
        self._drop_unanswered()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def request(self, pdu: P.Pdu, timeout: float = PATIENCE) -> P.Pdu:
        self._seq += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self._seq] = fut
        self.transport.write(encode(pdu, self._seq))  # type: ignore[union-attr]
        async with asyncio.timeout(timeout):
            return await fut


class Upstream:
    def __init__(self, system_id: str = "UPSTREAM", port: int = 0) -> None:
        self.system_id = system_id
        self.port = port
        # behaviour
        self.bind_status: int = CommandStatus.ESME_ROK
        self.delay: float = 0.0
        self.never_answer = False
        self.throttle_first = 0
        self.throttle_status: int = CommandStatus.ESME_RTHROTTLED
        self.generic_nack: int | None = None
        self.garble = False
        self.close_after: int | None = None
        self.first_number = 0
        self.message_ids: Callable[[int], str] = lambda n: f"UP{n}"
        # records
        self.submits: list[P.SubmitSm] = []
        self.responses: list[P.Pdu] = []
        self.outstanding = 0
        self.max_outstanding = 0
        self.connections = 0
        self.bind_attempts = 0
        self.binds = 0
        self.bind_pdus: list[P.Pdu] = []  # every bind request, accepted or not
        self.unbinds = 0
        self.enquire_links = 0
        self.throttled = 0
        self.accepted = 0
        self.late_answers = 0
        self.closed_with_outstanding: list[int] = []
        self.dropped: list[list[P.SubmitSm]] = []  # unanswered submit_sm at each scripted close
        self.sessions: list[UpstreamConnection] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> "Upstream":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: UpstreamConnection(self), "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.sessions):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    @property
    def bound_sessions(self) -> list[UpstreamConnection]:
        return [s for s in self.sessions if s.bound and not s.closing]

    async def send_deliver(self, pdu: P.DeliverSm, timeout: float = PATIENCE) -> P.Pdu:
        """Send a deliver_sm on the first bound connection; return the client's response."""
        await wait_for(lambda: self.bound_sessions, timeout)
        return await self.bound_sessions[0].request(pdu, timeout)


async def wait_for(predicate: Callable[[], object], timeout: float = PATIENCE, interval: float = 0.005):
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` passes (TimeoutError).
    Never less than ``PATIENCE``: what must happen may be slow on a loaded machine."""
    timeout = max(timeout, PATIENCE)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
