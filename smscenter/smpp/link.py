"""One SMPP connection: the sans-I/O ``protocol.session.Session`` glued to an asyncio transport.

Used both ways: partners binding to us (``Role.SMSC``) and our connectors binding upstream
(``Role.ESME``). What this layer adds to the session:

- requests we send are futures, resolved by the matching response and failed by a timeout
  or by the connection going away (so nothing waits forever);
- a window: ``request()`` waits for a free slot instead of piling PDUs on the socket;
- the clock for the session's timers (keep-alive, inactivity, bind timeout, the peer's
  unbind, response deadlines: their rules are in ``protocol.session``): one timer set for
  ``session.next_deadline()``, and what ``session.timeout(now)`` says done when it fires;
  time we ourselves stopped reading (backpressure, below) is not the peer's silence;
- writes are coalesced: everything produced in one loop iteration goes out in one
  ``write()``, with TCP_NODELAY set, so many PDUs in flight cost few syscalls and no Nagle
  delay;
- backpressure: when the transport's write buffer passes its high-water mark we stop
  reading from the peer, so a peer that does not read cannot make us buffer without limit;
- a per-turn budget (``pdus_per_turn``): after that many PDUs from one read, the rest is
  processed on the next loop turn, so one session's read (up to 256 KB of requests) cannot
  hold the loop while others wait. Reading pauses meanwhile only once more than
  ``TURN_BUFFER`` octets wait: a partner with a full window (64 PDUs a read) costs one more
  loop turn, not two epoll changes per read.

The application sees a ``LinkHandler``: it is told about requests (and answers them with
``respond()`` whenever it is ready, e.g. after a durable commit), bad PDUs and the close.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import Callable, Protocol

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus
from protocol.errors import LocalProtocolError
from protocol.states import WINDOW_EXEMPT
from protocol.session import (
    Close,
    InvalidPdu,
    LateResponse,
    PeerClosed,
    Request,
    Response,
    Role,
    Session,
    State,
    StreamBroken,
)
from smscenter.pipeline.ports import AnswerTimeout, SessionClosed
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.link")

#: Octets buffered while a turn waits beyond which reading pauses (see the module docstring).
TURN_BUFFER = 32 * 1024

_BINDS = frozenset({CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER})
_BIND_RESPS = frozenset(cid | 0x80000000 for cid in _BINDS)
_REARM = _BINDS | {CommandId.ENQUIRE_LINK}  # requests of ours whose answer moves the next deadline


class LinkClosed(SessionClosed):
    """The connection went away before our request was answered (the core's
    ``SessionClosed``)."""


class ResponseTimeout(AnswerTimeout):
    """The peer did not answer our request within ``response_timeout`` (the core's
    ``AnswerTimeout``)."""

    def __init__(self, request: P.Pdu) -> None:
        super().__init__(f"no response to {type(request).__name__} #{request.sequence_number}")
        self.request = request


class LinkHandler(Protocol):
    def on_request(self, link: "Link", pdu: P.Pdu) -> None: ...

    def on_invalid(self, link: "Link", event: InvalidPdu) -> None: ...

    def on_late_response(self, link: "Link", pdu: P.Pdu) -> None: ...

    def on_closed(self, link: "Link", exc: BaseException | None) -> None: ...


class Link(asyncio.Protocol):
    """An SMPP session over one TCP (or TLS) connection."""

    def __init__(
        self,
        role: Role,
        handler: LinkHandler,
        *,
        window: int = 10,
        response_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        inactivity_timeout: float = 120.0,
        bind_timeout: float | None = None,
        max_pdu_size: int = 65536,
        bad_pdu_budget: int = 10,
        pdus_per_turn: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
        timers: Timers | None = None,
    ) -> None:
        self.session = Session(
            role, max_pdu_size=max_pdu_size, window=window, response_timeout=response_timeout,
            enquire_link_interval=enquire_link_interval, inactivity_timeout=inactivity_timeout,
            bind_timeout=bind_timeout,
        )
        self.handler = handler
        self.name = name
        #: Keep-alive, inactivity, bind and response deadlines run on these timers (the loop's
        #: by default, virtual time in tests); ``clock`` is their ``now()``.
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = self.timers.now
        self.bad_pdu_budget = bad_pdu_budget
        self.bad_pdus = 0
        # The handler may set the budget for all its links (the partner server does).
        self.pdus_per_turn = pdus_per_turn if pdus_per_turn is not None else getattr(handler, "pdus_per_turn", None)
        self._turn_scheduled = False
        self._turn_paused = False  # reading paused by the per-turn budget (not backpressure)
        # Optional: told of each enquire_link from the peer (answered here), to meter its rate.
        self._on_enquire_link = getattr(handler, "on_enquire_link", None)
        self.peer: tuple = ("?", 0)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future | None = None
        self.context: object = None  # the application's per-bind state (account, connector)
        self.short_code: str | None = None  # upstream bind opened for one short code (MO tag)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, asyncio.Future] = {}
        self._slot_waiters: deque[asyncio.Future] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._timer = None  # the timers' handle of the session's next deadline
        self._close_reason: BaseException | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self.peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        self.session.connected(self.clock())
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self.clock())
        if self._turn_scheduled:  # the rest of an earlier read waits its turn: this waits too
            self._pause_for_turn()
            return
        self._process_events()

    def eof_received(self) -> bool:
        self.session.receive_data(b"", self.clock())
        self._process_events()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.session.close()
        reason = self._close_reason or exc
        failure = LinkClosed(f"connection to {self.peer[0]}:{self.peer[1]} closed")
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(failure)
        self._waiters.clear()
        for fut in self._slot_waiters:
            if not fut.done():
                fut.set_exception(failure)
        self._slot_waiters.clear()
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(reason)
        self.handler.on_closed(self, reason)

    def pause_writing(self) -> None:
        # The peer is not reading what we send: stop reading what it sends, so its
        # requests (and our responses to them) cannot pile up. Its silence from now on is
        # ours: inactivity counts from here (a peer that reads nothing for the whole
        # inactivity timeout is still closed).
        self._paused = True
        self.session.peer_alive(self.clock())
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self.session.peer_alive(self.clock())  # it read: it is alive
        if self.transport is not None and not self.transport.is_closing() and not self._turn_paused:
            self.transport.resume_reading()  # (paused for a turn: _next_turn resumes)
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    # --- events from the peer ---------------------------------------------------------------

    def _process_events(self) -> None:
        session = self.session
        budget = self.pdus_per_turn
        while True:
            if budget is not None:
                if budget <= 0:
                    self._yield_turn()
                    return
                budget -= 1
                if self.transport is not None and self.transport.is_closing():
                    return  # e.g. unbound for flooding by the handler: the rest is dropped
            event = session.next_event()
            if event is None:
                return
            kind = type(event)
            if kind is Request:
                pdu = event.pdu
                if pdu.command_id == CommandId.ENQUIRE_LINK:
                    self.respond(pdu.response())
                    if self._on_enquire_link is not None:
                        self._on_enquire_link(self)
                elif pdu.command_id == CommandId.UNBIND:
                    # Answer what the peer is still waiting for (e.g. submits being stored)
                    # before unbind_resp: after it, nothing more may be sent.
                    if not self._finish_unbind():
                        self._arm_timer()  # the session's deadline for the rest
                else:
                    try:
                        self.handler.on_request(self, pdu)
                    except Exception:  # noqa: BLE001 - a bug must cost one PDU, not the session
                        log.exception("request_handler_failed", link=self.name, command=type(pdu).__name__)
                        if event.needs_response:
                            try:
                                self.respond(pdu.response(CommandStatus.ESME_RSYSERR))
                            except LocalProtocolError:
                                pass  # the handler had answered before it failed
            elif kind is Response:
                fut = self._waiters.pop(event.pdu.sequence_number, None)
                if fut is not None and not fut.done():
                    fut.set_result(event.pdu)
                self._wake_slot_waiter()
                if event.request.command_id in _REARM:
                    # Our bind answered (ESME side: keep-alive starts from here), or our
                    # enquire_link (the next one counts from here): the deadline moved.
                    self._arm_timer()
            elif kind is LateResponse:
                self.handler.on_late_response(self, event.pdu)
            elif kind is InvalidPdu:
                if event.request is not None:  # an undecodable answer to one of our requests
                    fut = self._waiters.pop(event.request.sequence_number, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(event.error)
                    self._wake_slot_waiter()
                self.bad_pdus += 1
                if event.reply is not None:
                    self._send(event.reply)
                self.handler.on_invalid(self, event)
                if self.bad_pdus > self.bad_pdu_budget:
                    log.warning("bad_pdu_budget_spent", link=self.name, peer=self.peer[0])
                    self._flush()
                    self.close()
                    return
            elif kind is StreamBroken:
                log.warning("stream_broken", link=self.name, peer=self.peer[0], error=str(event.error))
                self._send(event.reply)
                self._flush()
                self.close()
                return
            elif kind is PeerClosed:
                return

    def _yield_turn(self) -> None:
        """The turn's budget is spent: go on with what is buffered on the next loop turn,
        after the other sessions had theirs."""
        if self.transport is None or self.transport.is_closing():
            return
        if not self._turn_scheduled:
            self._turn_scheduled = True
            self._loop.call_soon(self._next_turn)  # type: ignore[union-attr]
        self._pause_for_turn()

    def _pause_for_turn(self) -> None:
        """Stop reading while a turn waits if that much is buffered already: what one session
        holds in memory stays under ``TURN_BUFFER`` plus one read."""
        if not self._turn_paused and self.session.buffered > TURN_BUFFER and self.transport is not None:
            self._turn_paused = True
            self.transport.pause_reading()

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        if self.transport is None or self.transport.is_closing():
            return
        self._process_events()
        if self._turn_paused and not self._turn_scheduled:
            self._turn_paused = False
            if not self._paused and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- sending ----------------------------------------------------------------------------

    def _send(self, pdu: P.Pdu) -> None:
        data = self.session.send(pdu, self.clock())
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self.transport.write(data)
            self._last_sent = self.clock()
        self._out.clear()

    def respond(self, response: P.Pdu) -> None:
        """Answer one of the peer's requests (any time after ``on_request``)."""
        if self.transport is None or self.transport.is_closing() or self.session.state is State.CLOSED:
            # The peer left, or the session ended (e.g. our unbind was answered) while the
            # core was still storing what this answers: it will send it again.
            return
        self._send(response)
        if response.command_id in _BIND_RESPS:  # bound (keep-alive starts) or refused
            self._arm_timer()
        if self.session.unbind_received_at is not None:
            self._finish_unbind()

    def _finish_unbind(self) -> bool:
        """Send the peer's deferred unbind_resp if it is the last answer we owe, then close."""
        data = self.session.answer_unbind(self.clock())
        if data is None:
            return False
        if data:  # (none when the session closed meanwhile, e.g. crossing unbinds)
            self._queue(data)
        self.close()  # flushes first
        return True

    async def request(self, pdu: P.Pdu) -> P.Pdu:
        """Send a request and wait for its response (or generic_nack).

        Waits for a window slot first. Raises ``ResponseTimeout`` if the peer does not answer
        in time and ``LinkClosed`` if the connection goes away.
        """
        if pdu.command_id not in WINDOW_EXEMPT:  # keep-alive and unbind never wait
            await self.wait_window()
        return await self.request_nowait(pdu)

    async def wait_window(self) -> None:
        """Wait until the window has a free slot (``LinkClosed`` if the link goes away)."""
        while not self.session.window_open():
            if self.transport is None or self.transport.is_closing():
                raise LinkClosed("connection closed")
            slot = self._loop.create_future()  # type: ignore[union-attr]
            self._slot_waiters.append(slot)
            await slot

    def request_nowait(self, pdu: P.Pdu) -> asyncio.Future:
        """Send a request now (the window must be open) and return the future of its
        response. Raises ``LinkClosed`` if the link is down and ``WindowFull`` if no slot."""
        if self.transport is None or self.transport.is_closing():
            raise LinkClosed("connection closed")
        data = self.session.send(pdu, self.clock())
        seq = int.from_bytes(data[12:16], "big")
        fut = self._loop.create_future()  # type: ignore[union-attr]
        self._waiters[seq] = fut
        self._queue(data)
        if self._timer is None or len(self._waiters) == 1:
            self._arm_timer()
        return fut

    async def drain(self) -> None:
        """Wait until the transport accepts more data (write backpressure)."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            fut = self._loop.create_future()  # type: ignore[union-attr]
            self._drain_waiters.append(fut)
            await fut

    def _wake_slot_waiter(self) -> None:
        while self._slot_waiters and self.session.window_open():
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.session.state

    @property
    def is_bound(self) -> bool:
        return self.session.state in (State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX)

    @property
    def can_submit(self) -> bool:
        """ESME role: may send submit_sm (bound TX or TRX)."""
        return self.session.state in (State.BOUND_TX, State.BOUND_TRX)

    @property
    def can_deliver(self) -> bool:
        """SMSC role: may send deliver_sm (bound RX or TRX)."""
        return self.session.state in (State.BOUND_RX, State.BOUND_TRX)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    @property
    def in_flight(self) -> int:
        return self.session.outstanding

    def close(self, reason: BaseException | None = None) -> None:
        if reason is not None and self._close_reason is None:
            self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()

    async def unbind(self, timeout: float) -> None:
        """Orderly end: send unbind, wait for unbind_resp up to ``timeout``, close."""
        if self.is_bound and self.is_open:
            try:
                async with self.timers.timeout(timeout):
                    await self.request(P.Unbind())
            except (TimeoutError, LinkClosed, LocalProtocolError, ResponseTimeout):
                pass
        self.close()
        if self.closed is not None:
            try:
                async with self.timers.timeout(timeout):
                    await asyncio.shield(self.closed)
            except TimeoutError:
                if self.transport is not None:
                    self.transport.abort()

    # --- timers: the session's deadlines -----------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is None or self.transport is None or self.transport.is_closing():
            return
        deadline = self.session.next_deadline()
        if deadline is None:
            self._timer = None
            return
        # A little past it, so that the session finds it due despite float rounding.
        delay = max(0.0, deadline - self.clock()) + 0.001
        self._timer = self.timers.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        due = self.session.timeout(self.clock())
        for item in due.expired:
            fut = self._waiters.pop(item.sequence_number, None)
            if fut is not None and not fut.done():
                fut.set_exception(ResponseTimeout(item.pdu))
            self._wake_slot_waiter()
        if due.data:
            self._queue(due.data)  # an enquire_link, or the unbind_resp that waited too long
        if due.close is None:
            self._arm_timer()
        elif due.close is Close.UNBIND:
            self.close()
        else:
            if due.close is Close.INACTIVITY:
                log.info("inactivity_timeout", link=self.name, peer=self.peer[0])
            else:
                log.info("bind_timeout", link=self.name, peer=self.peer[0])
            self.close(TimeoutError(due.close.value))
