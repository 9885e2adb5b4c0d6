"""The SMPP 3.4 session rules as data: who may send which request in which state, and where
each step leads.

``session.py`` holds the machinery; this module holds only tables, so the rules can be read
next to the spec (SMPP 3.4 §2.2-§2.4 and the "SMPP PDUs and session states" table in §2.3) and
changed without touching code. As in h11, a lookup that fails *is* the answer: a request
missing from ``LEGAL`` is a protocol error, a step missing from ``TRANSITIONS`` leaves the
state as it is.
"""

from __future__ import annotations

import enum

from .constants import CommandId as C, CommandStatus as S


class State(enum.Enum):
    """Session states, named as in SMPP 3.4 §2.2 (``OUTBOUND``: an outbind was sent or
    received and the ESME is expected to bind as receiver)."""

    OPEN = "open"
    OUTBOUND = "outbound"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"  # we sent unbind and wait for unbind_resp
    CLOSED = "closed"


class Role(enum.Enum):
    SMSC = "smsc"  # partners bind to us
    ESME = "esme"  # we bind to an upstream SMSC


class Step(enum.Enum):
    """What happened to a PDU, as seen from our side of the session."""

    SEND = "send"  # we sent a request
    RECEIVE = "receive"  # the peer sent us a request
    ANSWER = "answer"  # we answered the peer's request
    ANSWERED = "answered"  # the peer answered our request (or a generic_nack did)
    EXPIRED = "expired"  # our request got no answer before its deadline


OPEN, OUTBOUND, UNBOUND, CLOSED = State.OPEN, State.OUTBOUND, State.UNBOUND, State.CLOSED
BOUND_TX, BOUND_RX, BOUND_TRX = State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX
SMSC, ESME = Role.SMSC, Role.ESME

BOUND = (BOUND_TX, BOUND_RX, BOUND_TRX)
TX_SIDE = (BOUND_TX, BOUND_TRX)  # the ESME may submit
RX_SIDE = (BOUND_RX, BOUND_TRX)  # the SMSC may deliver
NOT_BOUND = (OPEN, OUTBOUND)

#: SMPP 3.4 §2.3: each request, the role that originates it, and the states in which it may
#: be sent. The other role may receive it in the same states.
REQUESTS: tuple[tuple[C, Role, tuple[State, ...]], ...] = (
    (C.BIND_TRANSMITTER, ESME, (OPEN,)),
    (C.BIND_RECEIVER, ESME, (OPEN, OUTBOUND)),
    # SMPP 3.4 only names bind_receiver after an outbind; v5.0 and most stacks accept trx too.
    (C.BIND_TRANSCEIVER, ESME, (OPEN, OUTBOUND)),
    (C.OUTBIND, SMSC, (OPEN,)),
    (C.ENQUIRE_LINK, ESME, NOT_BOUND + BOUND),
    (C.ENQUIRE_LINK, SMSC, NOT_BOUND + BOUND),
    (C.UNBIND, ESME, BOUND),
    (C.UNBIND, SMSC, BOUND),
    (C.SUBMIT_SM, ESME, TX_SIDE),
    (C.SUBMIT_MULTI, ESME, TX_SIDE),
    (C.DATA_SM, ESME, TX_SIDE),
    (C.QUERY_SM, ESME, TX_SIDE),
    (C.CANCEL_SM, ESME, TX_SIDE),
    (C.REPLACE_SM, ESME, TX_SIDE),
    (C.DELIVER_SM, SMSC, RX_SIDE),
    (C.DATA_SM, SMSC, RX_SIDE),
    (C.ALERT_NOTIFICATION, SMSC, RX_SIDE),
)

#: Requests the peer may have sent before it saw our unbind: still accepted while we wait
#: for our unbind_resp (crossing unbinds; a keep-alive in flight).
CROSSING: tuple[tuple[C, State], ...] = (
    (C.UNBIND, UNBOUND),
    (C.ENQUIRE_LINK, UNBOUND),
)


def _legal() -> dict[tuple[Role, State, Step], frozenset[int]]:
    table: dict[tuple[Role, State, Step], set[int]] = {
        (role, state, step): set() for role in Role for state in State for step in (Step.SEND, Step.RECEIVE)
    }
    for command, originator, states in REQUESTS:
        receiver = ESME if originator is SMSC else SMSC
        for state in states:
            table[(originator, state, Step.SEND)].add(int(command))
            table[(receiver, state, Step.RECEIVE)].add(int(command))
    for command, state in CROSSING:
        for role in Role:
            table[(role, state, Step.RECEIVE)].add(int(command))
    return {key: frozenset(cids) for key, cids in table.items()}


#: (role, state, SEND | RECEIVE) -> command_ids of the requests allowed. Responses are not
#: listed: a response is legal exactly when it answers a request that is waiting for it.
LEGAL: dict[tuple[Role, State, Step], frozenset[int]] = _legal()

#: Every request a role may receive in some state. One it may never receive is answered
#: with generic_nack ESME_RINVCMDID; one that is merely early or late, with ESME_RINVBNDSTS.
RECEIVABLE: dict[Role, frozenset[int]] = {
    role: frozenset().union(*(LEGAL[(role, state, Step.RECEIVE)] for state in State)) for role in Role
}

BINDS: frozenset[int] = frozenset({C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER})

#: Status for a request refused in a state, where it is not ESME_RINVBNDSTS.
REFUSALS: dict[tuple[State, int], S] = {
    (state, int(bind)): S.ESME_RALYBND for state in BOUND for bind in BINDS
}

#: Requests that never get a response (so never count as outstanding or pending).
NO_RESPONSE: frozenset[int] = frozenset({C.OUTBIND, C.ALERT_NOTIFICATION})

#: Session-management requests that may be sent even when the window is full: a full window
#: must not stop a keep-alive or an orderly unbind.
WINDOW_EXEMPT: frozenset[int] = BINDS | {C.UNBIND, C.ENQUIRE_LINK}

_BIND_RESULT = {C.BIND_TRANSMITTER: BOUND_TX, C.BIND_RECEIVER: BOUND_RX, C.BIND_TRANSCEIVER: BOUND_TRX}

#: (state, step, request command_id, accepted) -> next state. ``accepted`` is None for
#: SEND/RECEIVE/EXPIRED, and for answers whether the response had command_status 0 (a
#: generic_nack never accepts). No entry: the state does not change.
TRANSITIONS: dict[tuple[State, Step, int, bool | None], State] = {
    # An ESME binds: its bind_*_resp with status 0 binds, an error leaves it where it was.
    **{
        (st, Step.ANSWERED, int(bind), True): bound
        for st in NOT_BOUND
        for bind, bound in _BIND_RESULT.items()
    },
    # A partner binds to us: our bind_*_resp with status 0 binds.
    (OPEN, Step.ANSWER, int(C.BIND_TRANSMITTER), True): BOUND_TX,
    (OPEN, Step.ANSWER, int(C.BIND_RECEIVER), True): BOUND_RX,
    (OPEN, Step.ANSWER, int(C.BIND_TRANSCEIVER), True): BOUND_TRX,
    (OUTBOUND, Step.ANSWER, int(C.BIND_RECEIVER), True): BOUND_RX,
    (OUTBOUND, Step.ANSWER, int(C.BIND_TRANSCEIVER), True): BOUND_TRX,
    # Outbind (§2.2.1): the SMSC asks the ESME to bind as receiver.
    (OPEN, Step.SEND, int(C.OUTBIND), None): OUTBOUND,
    (OPEN, Step.RECEIVE, int(C.OUTBIND), None): OUTBOUND,
    # We unbind: wait for unbind_resp; any answer, or none in time, ends the session.
    **{(st, Step.SEND, int(C.UNBIND), None): UNBOUND for st in BOUND},
    (UNBOUND, Step.ANSWERED, int(C.UNBIND), True): CLOSED,
    (UNBOUND, Step.ANSWERED, int(C.UNBIND), False): CLOSED,
    (UNBOUND, Step.EXPIRED, int(C.UNBIND), None): CLOSED,
    # The peer unbinds: accepting it (unbind_resp status 0) ends the session.
    **{(st, Step.ANSWER, int(C.UNBIND), True): CLOSED for st in BOUND + (UNBOUND,)},
}

#: Requests whose steps may change the state (checked before looking in TRANSITIONS, so the
#: per-PDU path of submit_sm/deliver_sm is a single set lookup).
STATEFUL: frozenset[int] = frozenset(key[2] for key in TRANSITIONS)
