"""Sans-I/O SMPP 3.4 session, for either end of a bind.

Modelled on h11's ``Connection``: the caller feeds received bytes with ``receive_data()``,
pulls ``Event``\\ s with ``next_event()``, and turns PDUs into bytes with ``send()``. No
sockets, no asyncio, no clock: every call that needs the time takes ``now`` (any monotonic
float, e.g. ``loop.time()``).

Its timers work the same way (as aioquic's ``get_timer()``/``handle_timer(now)``): the caller
sleeps until ``next_deadline()`` and then calls ``timeout(now)``, which says what fell due
(``Due``: expired requests, bytes to send, a reason to close). They follow the time the
session is told: ``connected(now)`` when the connection opens, ``receive_data(data, now)``,
``send(pdu, now)``.

The session keeps
- the state (``State``), changed only by the steps listed in ``states.TRANSITIONS``;
- which requests are legal in that state for our ``Role`` (``states.LEGAL``): an illegal
  request from the peer becomes an ``InvalidPdu`` with the response to send back, an illegal
  request of ours a ``LocalProtocolError``;
- our outstanding requests (sequence number, deadline), for the window and for matching
  responses; ``expire(now)`` hands back those whose deadline passed;
- the peer's requests still waiting for our answer (``pending``), so we never answer a
  request twice, or one that was never asked;
- the connection's timers, each off when None: keep-alive (while bound, an enquire_link of
  ours after ``enquire_link_interval`` with nothing heard or sent, one at a time),
  inactivity (close after ``inactivity_timeout`` without a complete PDU from the peer: bytes
  that never make a PDU do not count), the bind timeout (close a connection still unbound
  ``bind_timeout`` after it opened, unless a bind of the peer's waits for our answer), and
  the peer's unbind: its unbind_resp waits until it is the last answer we owe
  (``answer_unbind()``), at most ``response_timeout``.

Errors follow ``errors.py``: the peer's faults arrive as events carrying the status to answer
with; ours raise ``LocalProtocolError`` and nothing is recorded or sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import codec
from .constants import HEADER_LEN, MAX_SEQUENCE, RESPONSE_BIT, CommandId, CommandStatus
from .errors import DecodeError, FramingError, LocalProtocolError, RemoteProtocolError
from .framing import DEFAULT_MAX_PDU, Framer
from .pdu import PDU_CLASS, RESPONSE_CLASS, EnquireLink, GenericNack, Pdu, UnbindResp
from .states import (
    BINDS,
    BOUND,
    LEGAL,
    NO_RESPONSE,
    RECEIVABLE,
    REFUSALS,
    STATEFUL,
    TRANSITIONS,
    WINDOW_EXEMPT,
    Role,
    State,
    Step,
)

__all__ = [
    "Close",
    "Due",
    "Event",
    "InvalidPdu",
    "LateResponse",
    "Outstanding",
    "PeerClosed",
    "Request",
    "Response",
    "Role",
    "Session",
    "State",
    "StreamBroken",
    "WindowFull",
]

_GENERIC_NACK = int(CommandId.GENERIC_NACK)
_UNBIND = int(CommandId.UNBIND)
_RINVBNDSTS = CommandStatus.ESME_RINVBNDSTS
_RINVCMDID = CommandStatus.ESME_RINVCMDID
_CLOSED = State.CLOSED
_SEND, _RECEIVE, _ANSWER, _ANSWERED = Step.SEND, Step.RECEIVE, Step.ANSWER, Step.ANSWERED
_EXPIRED = Step.EXPIRED
_REPLY_ANY = 0  # pending marker: a reply we owe for an invalid PDU (any response type fits)
_encode = codec.encode
_decode = codec.decode


class WindowFull(LocalProtocolError):
    """``send()`` of a request while ``outstanding >= window``; check ``window_open()`` first."""


def _name(cid: int) -> str:
    try:
        return CommandId(cid).name.lower()
    except ValueError:
        return f"command 0x{cid:08X}"


class Outstanding:
    """One of our requests waiting for its response."""

    __slots__ = ("sequence_number", "pdu", "sent_at", "deadline")

    def __init__(self, sequence_number: int, pdu: Pdu, sent_at: float, deadline: float) -> None:
        self.sequence_number = sequence_number
        self.pdu = pdu  # as given to send(): its own sequence_number may be 0
        self.sent_at = sent_at
        self.deadline = deadline

    @property
    def command_id(self) -> int:
        return self.pdu.command_id

    def __repr__(self) -> str:
        return (
            f"Outstanding({_name(self.pdu.command_id)} #{self.sequence_number}, "
            f"sent_at={self.sent_at}, deadline={self.deadline})"
        )


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything ``next_event()`` returns."""


@dataclass(frozen=True, slots=True)
class Request(Event):
    """A request from the peer, legal in the current state. Answer it with
    ``send(pdu.response(...))`` unless ``needs_response`` is False (outbind,
    alert_notification)."""

    pdu: Pdu

    @property
    def needs_response(self) -> bool:
        return self.pdu.command_id not in NO_RESPONSE


@dataclass(frozen=True, slots=True)
class Response(Event):
    """The answer (its ``*_resp``, or a generic_nack) to one of our outstanding requests.

    ``request`` is the PDU as given to ``send()``; the sequence number it went out with is
    ``pdu.sequence_number``.
    """

    pdu: Pdu
    request: Pdu
    sent_at: float

    @property
    def ok(self) -> bool:
        """command_status is ESME_ROK and it is not a generic_nack."""
        return self.pdu.command_status == 0 and self.pdu.command_id != _GENERIC_NACK


@dataclass(frozen=True, slots=True)
class LateResponse(Event):
    """A response matching none of our outstanding requests (expired, or bogus). Log it."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class InvalidPdu(Event):
    """A PDU that did not decode, or a request not allowed in this state.

    ``reply`` (if not None) is the response to send back (``send(reply, now)`` accepts it);
    it is None when the invalid PDU was itself a response. ``request`` is set when an
    undecodable response answered one of our outstanding requests: that request is no longer
    outstanding (it was answered, we just cannot read how), and the caller decides its fate.
    """

    error: RemoteProtocolError
    reply: Pdu | None
    request: Outstanding | None = None


@dataclass(frozen=True, slots=True)
class StreamBroken(Event):
    """command_length is absurd: send ``reply`` and close; nothing more will be read."""

    error: FramingError
    reply: GenericNack


@dataclass(frozen=True, slots=True)
class PeerClosed(Event):
    """The peer closed its side (EOF). ``unparsed`` octets of an incomplete PDU were left."""

    unparsed: int = 0


# --- what the timers say -------------------------------------------------------------------


class Close(enum.Enum):
    """Why ``timeout(now)`` says to close the connection (the value reads as the reason)."""

    INACTIVITY = "inactivity timeout"  # nothing complete heard from the peer for too long
    BIND_TIMEOUT = "bind timeout"  # still unbound too long after the connection opened
    UNBIND = "unbind"  # the peer's unbind is answered (we stopped waiting for the rest)


@dataclass(frozen=True, slots=True)
class Due:
    """What fell due at ``timeout(now)``: our requests whose response deadline passed
    (``expired``, oldest first), bytes to send (``data``: an enquire_link, or the unbind_resp
    that waited too long), and whether to close once they are sent (``close``)."""

    expired: list[Outstanding]
    data: bytes = b""
    close: Close | None = None


# --- the session --------------------------------------------------------------------------


class Session:
    """One SMPP session, SMSC or ESME side. See the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        max_pdu_size: int = DEFAULT_MAX_PDU,
        window: int = 10,
        response_timeout: float = 10.0,
        enquire_link_interval: float | None = None,
        inactivity_timeout: float | None = None,
        bind_timeout: float | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.role = role
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.inactivity_timeout = inactivity_timeout
        self.bind_timeout = bind_timeout
        self._opened_at = 0.0  # connected(now)
        self._received_at = 0.0  # the last receive_data(now)
        self._heard = 0.0  # the last complete PDU from the peer (or peer_alive(now))
        self._sent = 0.0  # the last send()
        self._keepalive: Outstanding | None = None  # our last enquire_link
        self._unbind_seq = 0
        #: When the peer's unbind came, while its unbind_resp is still ours to send.
        self.unbind_received_at: float | None = None
        self._framer = Framer(max_pdu_size)
        self._out: dict[int, Outstanding] = {}  # seq -> our request, in send order
        self._in_order = True  # deadlines in _out are non-decreasing (the usual case)
        self._last_deadline = float("-inf")
        self._pending: dict[int, int] = {}  # peer seq -> request command_id (or _REPLY_ANY)
        self._extra: dict[int, list[int]] = {}  # more requests owed under a reused seq
        self._seq = 1
        self._binding = False  # a bind is sent or received and not yet answered
        self._eof = False
        self._eof_reported = False
        self._broken = False
        self.last_sequence_number = 0  # the one the last request sent went out with
        self._set_state(State.OPEN)

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, state: State) -> None:
        self._state = state
        self._send_ok = LEGAL[(self.role, state, _SEND)]
        self._recv_ok = LEGAL[(self.role, state, _RECEIVE)]

    def _step(self, step: Step, cid: int, accepted: bool | None) -> None:
        nxt = TRANSITIONS.get((self._state, step, cid, accepted))
        if nxt is not None:
            self._set_state(nxt)

    @property
    def outstanding(self) -> int:
        """Our requests awaiting a response."""
        return len(self._out)

    @property
    def pending(self) -> int:
        """Peer requests (and invalid PDUs) still waiting for our answer: the peer's window."""
        extra = self._extra
        return len(self._pending) + (sum(map(len, extra.values())) if extra else 0)

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as events (for read backpressure)."""
        return self._framer.buffered

    def window_open(self) -> bool:
        return len(self._out) < self.window

    def close(self) -> None:
        """We are done (socket closed or closing): nothing more may be sent. Outstanding
        requests stay listed; ``cancel_outstanding()`` takes them."""
        self._set_state(_CLOSED)

    def __repr__(self) -> str:
        return (
            f"Session({self.role.name}, {self._state.name}, outstanding={len(self._out)}, "
            f"pending={self.pending})"
        )

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed (EOF). ``now`` is
        when they came: a PDU they complete is the peer heard at that time (without it, at
        the time given last)."""
        if now is not None:
            self._received_at = now
        if not data:
            self._eof = True
        elif not (self._eof or self._broken):
            self._framer.feed(data)

    def next_event(self) -> Event | None:
        """The next event, or None until more data arrives (or forever, after the end)."""
        framer = self._framer
        while True:
            if self._broken or framer.buffered < HEADER_LEN:
                # Wait for a whole header before judging command_length, so the generic_nack
                # of a StreamBroken carries the sequence_number however the bytes were cut.
                frame = None
            else:
                try:
                    frame = framer.next_frame()
                except FramingError as exc:
                    self._broken = True
                    if self._state is _CLOSED:  # nothing can be answered: just stop reading
                        continue
                    seq = getattr(exc, "sequence_number", 0)
                    self._owe(seq, _REPLY_ANY)
                    return StreamBroken(exc, GenericNack(sequence_number=seq, command_status=exc.status))
            if frame is None:
                if self._eof and not self._eof_reported:
                    self._eof_reported = True
                    self._set_state(_CLOSED)
                    return PeerClosed(0 if self._broken else framer.buffered)
                return None
            self._heard = self._received_at  # a whole PDU: the peer is alive
            try:
                pdu = _decode(frame)
            except DecodeError as exc:
                event = self._on_invalid(exc)
            else:
                cid = pdu.command_id
                if cid & RESPONSE_BIT:
                    return self._on_response(pdu, cid)
                if cid not in self._recv_ok:
                    event = self._refuse(cid, pdu.sequence_number)
                else:
                    if cid in STATEFUL and (event := self._on_session_request(pdu, cid)) is not None:
                        return event
                    if cid not in NO_RESPONSE:
                        seq = pdu.sequence_number
                        if seq in self._pending:
                            self._owe(seq, cid)
                        else:
                            self._pending[seq] = cid
                    return Request(pdu)
            if event is not None:
                return event
            # A request after the session closed: nobody can answer it, drop it.

    def _on_session_request(self, pdu: Pdu, cid: int) -> Event | None:
        """bind / unbind / outbind from the peer (legal in this state): apply its step."""
        if cid in BINDS:
            if self._binding:
                return self._refuse(cid, pdu.sequence_number, _RINVBNDSTS, "a bind is already in progress")
            self._binding = True
        elif cid == _UNBIND:
            self._unbind_seq = pdu.sequence_number
            self.unbind_received_at = self._received_at
        self._step(_RECEIVE, cid, None)
        return None

    def _on_response(self, pdu: Pdu, cid: int) -> Event:
        seq = pdu.sequence_number
        out = self._out.get(seq)
        if out is None:
            return LateResponse(pdu)
        req = out.pdu.command_id
        if cid != req | RESPONSE_BIT and cid != _GENERIC_NACK:
            error = RemoteProtocolError(
                f"{_name(cid)} #{seq} does not answer our {_name(req)}", _RINVCMDID
            )
            return InvalidPdu(error, None)
        del self._out[seq]
        if req in STATEFUL:
            self._answered(req, cid == req | RESPONSE_BIT and pdu.command_status == 0)
        return Response(pdu, out.pdu, out.sent_at)

    def _answered(self, req: int, accepted: bool) -> None:
        if req in BINDS:
            self._binding = False
        self._step(_ANSWERED, req, accepted)

    def _refuse(self, cid: int, seq: int, status: int | None = None, why: str = "") -> InvalidPdu | None:
        """Request ``cid`` #seq is not legal now: the error and the reply for it."""
        if self._state is _CLOSED:
            return None
        if status is None:
            status = REFUSALS.get((self._state, cid))
            if status is None:
                status = _RINVBNDSTS if cid in RECEIVABLE[self.role] else _RINVCMDID
        what = why or f"{_name(cid)} is not allowed in {self._state.name} for a {self.role.name} session"
        return InvalidPdu(RemoteProtocolError(what, CommandStatus(status)), self._reply(cid, seq, status))

    def _reply(self, cid: int, seq: int, status: int) -> Pdu:
        """The PDU answering request ``cid`` #seq with ``status``; owed until sent."""
        resp = RESPONSE_CLASS.get(cid)
        if resp is None or status == _RINVCMDID:
            reply: Pdu = GenericNack(sequence_number=seq, command_status=status)
        else:
            reply = resp(sequence_number=seq, command_status=status)
        self._owe(seq, _REPLY_ANY)
        return reply

    def _on_invalid(self, exc: DecodeError) -> Event | None:
        cid, seq = exc.command_id, exc.sequence_number
        if cid is not None and cid & RESPONSE_BIT:
            # An undecodable response: never answered. If it answers one of ours, that
            # request is settled (answered, though we cannot read how).
            out = self._out.get(seq)
            if out is not None and cid in (out.pdu.command_id | RESPONSE_BIT, _GENERIC_NACK):
                del self._out[seq]
                if out.pdu.command_id in STATEFUL:
                    self._answered(out.pdu.command_id, False)
                return InvalidPdu(exc, None, out)
            return InvalidPdu(exc, None)
        if self._state is _CLOSED:
            return None
        if cid is None or cid not in PDU_CLASS:
            return InvalidPdu(exc, self._reply(_GENERIC_NACK, seq, exc.status))
        if cid not in self._recv_ok:
            # Not allowed here anyway: the state is the first thing the peer must fix.
            refused = self._refuse(cid, seq)
            return InvalidPdu(exc, refused.reply if refused else None)
        return InvalidPdu(exc, self._reply(cid, seq, exc.status))

    # -- sending ---------------------------------------------------------------------------

    def send(self, pdu: Pdu, now: float, *, timeout: float | None = None) -> bytes:
        """Check that ``pdu`` may be sent now, record it, and return its bytes.

        A request with ``sequence_number == 0`` gets the next free number (see
        ``last_sequence_number``); it becomes outstanding until answered or expired, with
        deadline ``now + (timeout or response_timeout)``. A response must answer a request
        of the peer's that is still pending. Raises ``LocalProtocolError`` (``WindowFull``
        when the window is full) and then records nothing.
        """
        cid = pdu.command_id
        if cid & RESPONSE_BIT:
            data = self._send_response(pdu, cid)
            self._sent = now
            return data
        if cid not in self._send_ok:
            raise LocalProtocolError(
                f"a {self.role.name} session may not send {_name(cid)} in {self._state.name}"
            )
        out = self._out
        seq = pdu.sequence_number
        if cid in NO_RESPONSE:  # outbind, alert_notification: nothing to wait for
            data = _encode(pdu, seq or self._next_sequence())
            self._step(_SEND, cid, None)
            self._sent = now
            return data
        if len(out) >= self.window and cid not in WINDOW_EXEMPT:
            raise WindowFull(f"{len(out)} requests outstanding, window is {self.window}")
        if cid in BINDS and self._binding:
            raise LocalProtocolError("a bind is already in progress")
        if seq == 0:
            seq = self._next_sequence()
        elif seq in out:
            raise LocalProtocolError(f"sequence_number {seq} is already outstanding")
        data = _encode(pdu, seq)
        deadline = now + (self.response_timeout if timeout is None else timeout)
        if not out:
            self._in_order = True
        elif deadline < self._last_deadline:
            self._in_order = False
        self._last_deadline = deadline
        out[seq] = Outstanding(seq, pdu, now, deadline)
        self.last_sequence_number = seq
        self._sent = now
        if cid in STATEFUL:
            if cid in BINDS:
                self._binding = True
            self._step(_SEND, cid, None)
        return data

    def _send_response(self, pdu: Pdu, cid: int) -> bytes:
        if self._state is _CLOSED:
            raise LocalProtocolError(f"session is closed; cannot send {_name(cid)}")
        seq = pdu.sequence_number
        if seq > MAX_SEQUENCE:
            # Echo a peer's out-of-range number as it came (encode() refuses to make one).
            data = _encode(pdu, 0)
            data = data[:12] + seq.to_bytes(4, "big") + data[16:]
        else:
            data = _encode(pdu, seq)
        req = self._settle(seq, cid)
        if req in STATEFUL:
            if req in BINDS:
                self._binding = False
            elif req == _UNBIND:
                self.unbind_received_at = None
            self._step(_ANSWER, req, cid == req | RESPONSE_BIT and pdu.command_status == 0)
        return data

    def _next_sequence(self) -> int:
        """1 … 0x7FFFFFFF, wrapping to 1, skipping numbers still outstanding."""
        seq, out = self._seq, self._out
        while seq in out:
            seq = seq + 1 if seq < MAX_SEQUENCE else 1
        self._seq = seq + 1 if seq < MAX_SEQUENCE else 1
        return seq

    # -- answers we owe --------------------------------------------------------------------

    def _owe(self, seq: int, req: int) -> None:
        if seq in self._pending:
            self._extra.setdefault(seq, []).append(req)
        else:
            self._pending[seq] = req

    def _settle(self, seq: int, cid: int) -> int:
        """Remove the pending request that response ``cid`` #seq answers; return its id."""
        req = self._pending.get(seq)
        if req is None:
            raise LocalProtocolError(f"no request #{seq} of the peer is waiting for an answer")
        if self._extra and seq in self._extra:
            return self._settle_reused(seq, cid)
        if req and cid != req | RESPONSE_BIT and cid != _GENERIC_NACK:
            raise LocalProtocolError(f"{_name(cid)} does not answer the peer's {_name(req)} #{seq}")
        del self._pending[seq]
        return req

    def _settle_reused(self, seq: int, cid: int) -> int:
        """Several answers owed under one sequence number (a peer reusing numbers): settle
        the one this response fits best (same type first, then any)."""
        owed = [self._pending[seq], *self._extra[seq]]
        for i, req in enumerate(owed):
            if req and cid == req | RESPONSE_BIT:
                break
        else:
            for i, req in enumerate(owed):
                if not req or cid == _GENERIC_NACK:
                    break
            else:
                raise LocalProtocolError(f"{_name(cid)} answers none of the requests #{seq} pending")
        del owed[i]
        self._pending[seq] = owed[0]
        if len(owed) > 1:
            self._extra[seq] = owed[1:]
        else:
            del self._extra[seq]
        return req

    # -- deadlines -------------------------------------------------------------------------

    def expire(self, now: float) -> list[Outstanding]:
        """Remove and return our requests whose deadline is ``<= now`` (oldest first). A
        response that arrives for one of them later is a ``LateResponse``."""
        out = self._out
        if not out:
            return []
        if self._in_order:
            expired = []
            for o in out.values():
                if o.deadline > now:
                    break
                expired.append(o)
        else:
            expired = sorted((o for o in out.values() if o.deadline <= now), key=lambda o: o.deadline)
        for o in expired:
            del out[o.sequence_number]
            cid = o.pdu.command_id
            if cid in STATEFUL:
                if cid in BINDS:
                    self._binding = False
                self._step(_EXPIRED, cid, None)
        return expired

    def _response_deadline(self) -> float | None:
        """The earliest deadline among our outstanding requests, or None."""
        out = self._out
        if not out:
            return None
        if self._in_order:
            return next(iter(out.values())).deadline
        return min(o.deadline for o in out.values())

    # -- the connection's timers -----------------------------------------------------------

    def connected(self, now: float) -> None:
        """The connection opened at ``now``: the bind timeout and the peer's silence count
        from here."""
        self._opened_at = self._received_at = self._heard = self._sent = now

    def peer_alive(self, now: float) -> None:
        """Count the peer as heard at ``now`` without a PDU: it read what we sent, or we
        stop reading it (backpressure), so its silence from here on is ours."""
        self._heard = now

    def _keepalive_outstanding(self) -> bool:
        ka = self._keepalive
        return ka is not None and self._out.get(ka.sequence_number) is ka

    def _timer_deadlines(self) -> list[float]:
        deadlines: list[float] = []
        if self._state is _CLOSED:  # nothing more to wait for on this connection
            return deadlines
        if self.inactivity_timeout is not None:
            deadlines.append(self._heard + self.inactivity_timeout)
        if self._state in BOUND:
            if self.enquire_link_interval is not None and not self._keepalive_outstanding():
                deadlines.append(max(self._heard, self._sent) + self.enquire_link_interval)
        elif self.bind_timeout is not None and not self.pending:  # not while we answer a bind
            deadlines.append(self._opened_at + self.bind_timeout)
        if self.unbind_received_at is not None:
            deadlines.append(self.unbind_received_at + self.response_timeout)
        return deadlines

    def next_deadline(self) -> float | None:
        """When ``timeout()`` is next due: the earliest of our requests' response deadlines
        and the timers' (keep-alive, inactivity, bind, the peer's unbind); None if none.
        Anything the caller tells the session may move it (a bind answered, a request sent:
        ask again then); one that moved later makes ``timeout()`` find nothing due."""
        deadline = self._response_deadline()
        timers = self._timer_deadlines()
        if deadline is not None:
            timers.append(deadline)
        return min(timers) if timers else None

    def timeout(self, now: float) -> Due:
        """What is due at ``now``, in this order: the unbind_resp to the peer's unbind that
        waited ``response_timeout`` for our other answers (send it and close, giving up on
        the rest); our requests past their deadline (removed, as ``expire()``); closing for
        inactivity, or for a bind that never came; an enquire_link, recorded as outstanding,
        when bound and nothing was heard or sent for ``enquire_link_interval``."""
        at = self.unbind_received_at
        if at is not None and now - at >= self.response_timeout:
            return Due([], self._unbind_resp(now), Close.UNBIND)
        expired = self.expire(now)
        if self._state is _CLOSED:
            return Due(expired)
        if self.inactivity_timeout is not None and now - self._heard >= self.inactivity_timeout:
            return Due(expired, close=Close.INACTIVITY)
        state = self._state
        if state in BOUND:
            interval = self.enquire_link_interval
            if (interval is not None and now - max(self._heard, self._sent) >= interval
                    and not self._keepalive_outstanding()):
                data = self.send(EnquireLink(), now)
                self._keepalive = self._out[self.last_sequence_number]
                return Due(expired, data)
        elif (self.bind_timeout is not None and not self.pending
                and now - self._opened_at >= self.bind_timeout):
            return Due(expired, close=Close.BIND_TIMEOUT)
        return Due(expired)

    def answer_unbind(self, now: float) -> bytes | None:
        """The unbind_resp to the peer's unbind once it is the last answer we owe (send it,
        then close: nothing may follow it), else None: the answers the peer still waits for
        (submits being stored) go first, and ``timeout()`` sends it anyway after
        ``response_timeout``."""
        if self.unbind_received_at is None or self.pending > 1:
            return None
        return self._unbind_resp(now)

    def _unbind_resp(self, now: float) -> bytes:
        if self._state is _CLOSED:  # e.g. our own unbind was answered meanwhile
            self.unbind_received_at = None
            return b""
        return self.send(UnbindResp(sequence_number=self._unbind_seq), now)

    def cancel_outstanding(self) -> list[Outstanding]:
        """Remove and return every outstanding request (e.g. when the connection is lost)."""
        cancelled = list(self._out.values())
        self._out.clear()
        self._binding = False
        return cancelled
