"""A submit as the core sees it, whatever door it came through: ``SubmitRequest`` in,
``SubmitResult`` (or ``Refused``) out.

Why a module of its own: the policies (sender rights, categories, numbers, windows,
blacklist, mention; the account's rate and queue limits) run once, in the core, on these values; each door
(SMPP today, HTTPS next) only turns its wire format into a ``SubmitRequest`` and maps the
neutral ``Refusal`` back to its own answer (an SMPP command status, an HTTP status and JSON
code). Nothing here knows a PDU, a socket or a database.

The values built for every submit (``SubmitRequest``, ``Destination``, ``Accepted``,
``SubmitResult``) are slots dataclasses, not frozen ones: a frozen dataclass's ``__init__``
(``object.__setattr__`` per field) costs three times as much. Treat them as read-only.

The text travels decoded once: ``text`` is a ``str`` for a textual coding, or ``bytes`` for
a binary one. A door that received octets may hand them on in ``octets`` so that planning,
when it adds nothing to the text (no mention), sends them as they came instead of encoding
the text again; whatever planning changes is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from routing.senders import SenderKind

__all__ = [
    "Accepted",
    "Destination",
    "NO_PASSTHROUGH",
    "OwnPart",
    "Passthrough",
    "ReceiptWish",
    "Refusal",
    "Refused",
    "SenderKind",
    "SubmitRequest",
    "SubmitResult",
]


class Refusal(Enum):
    """Why a submit (or one of its destinations) was not accepted; each door maps these
    to its own answer. ``BAD_INPUT`` comes with the field it is about (``Refused.field``)."""

    BAD_INPUT = "bad_input"  # a field that is malformed or out of range
    UNKNOWN_CATEGORY = "unknown_category"  # a category we do not know, or one the account may not use
    SENDER_NOT_ALLOWED = "sender_not_allowed"
    INVALID_NUMBER = "invalid_number"  # not a phone number, or reported invalid by an upstream
    NO_ROUTE = "no_route"
    OPTED_OUT = "opted_out"
    OUTSIDE_WINDOW = "outside_window"  # marketing outside its window, account asked to reject
    TEXT_TOO_LONG = "text_too_long"  # over 255 parts, or no room for the mention in the last part
    RATE_EXCEEDED = "rate_exceeded"  # over the account's throughput
    QUEUE_FULL = "queue_full"  # over the account's requests awaiting an answer
    STORAGE_BUSY = "storage_busy"  # the database cannot take it now: retry later
    SYSTEM_ERROR = "system_error"  # a failure of ours that a retry may not cure


class Refused(Exception):
    """A submit (or one destination) the core will not accept: never stored.

    ``why`` is for logs and error messages: it never holds a number or a text."""

    def __init__(self, refusal: Refusal, why: str, field: str | None = None) -> None:
        super().__init__(why)
        self.refusal = refusal
        self.why = why
        self.field = field

    def __repr__(self) -> str:
        field = f", field={self.field!r}" if self.field else ""
        return f"Refused({self.refusal.name}, {self.why!r}{field})"


class ReceiptWish(IntEnum):
    """Whether the client wants a delivery receipt (the values are SMPP's
    registered_delivery bits, as stored)."""

    NONE = 0
    ALWAYS = 1
    ON_FAILURE = 2


@dataclass(slots=True)
class Destination:
    """A recipient as the client wrote it, with its type of number and numbering plan
    (GSM 03.40 / SMPP TON and NPI; a door without them says international E.164, 1/1)."""

    addr: str
    ton: int = 1
    npi: int = 1


@dataclass(frozen=True, slots=True)
class OwnPart:
    """The request is one part of a long message the client split itself: it goes upstream
    as one part, with its own header in front, and only its last part gets the mention."""

    header: bytes  # the UDH octets in front of the text (b"" when SAR TLVs carry the place)
    last: bool  # the part that carries the opt-out mention, if the message needs one
    room: int  # octets of user data the part may hold with its header (140 - UDH length)


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Fields the upstream submit_sm carries as the client set them (an SMPP partner's
    protocol_id, priority_flag, esm_class mode bits and forwarded TLVs); other doors leave
    the defaults."""

    protocol_id: int = 0
    priority: int = 0
    esm_class: int = 0  # messaging mode and reply path bits (UDHI is the planner's)
    tlvs: tuple = ()


#: What most requests carry: nothing to pass through (shared, never changed).
NO_PASSTHROUGH = Passthrough()


@dataclass(slots=True)
class SubmitRequest:
    """One submit: who sends what, to whom, when, as a door received it and decoded once.

    ``account`` is the account's state (``smscenter.pipeline.accounts.AccountState``: its config and
    throughput bucket). ``category`` is the client's label (``"MKT"``, ``"marketing"``,
    ``"ALERT"`` …; empty: the account's default), read by ``routing.category``. ``schedule``
    and ``validity`` are absolute Unix times (None: at once / the default validity).
    ``data_coding`` None lets planning choose the cheapest coding for ``text``. (The
    account's rate and queue limits are checked by the door where the request enters,
    through ``submit.admit``.)
    """

    account: object
    source: str
    source_kind: SenderKind
    destinations: tuple[Destination, ...]
    text: str | bytes
    data_coding: int | None = None
    octets: bytes | None = None  # the octets ``text`` was decoded from, in ``data_coding``
    category: str = ""
    receipt: ReceiptWish = ReceiptWish.NONE
    validity: float | None = None
    schedule: float | None = None
    reference: str | None = None  # the client's own reference (not stored yet)
    source_ton: int | None = None  # None: the usual TON/NPI for ``source_kind``
    source_npi: int | None = None
    own_part: OwnPart | None = None
    passthrough: Passthrough = NO_PASSTHROUGH
    #: One submit to many destinations answered with one id (SMPP's submit_multi): planning
    #: draws that id (``SubmitResult.multi_id``) and sets it on each of its messages.
    multi: bool = False

    def source_ton_npi(self) -> tuple[int, int]:
        """The source's TON/NPI as the client gave them, else the usual pair for its kind."""
        if self.source_ton is not None and self.source_npi is not None:
            return self.source_ton, self.source_npi
        return _TON_NPI.get(self.source_kind, (0, 0))


#: TON/NPI of a source whose door has none: alphanumeric 5/0, short code 3/0, long number 1/1.
_TON_NPI = {SenderKind.ALPHANUMERIC: (5, 0), SenderKind.SHORT_CODE: (3, 0), SenderKind.INTERNATIONAL: (1, 1)}


@dataclass(slots=True)
class Accepted:
    """One destination stored: our message id, its parts, and when it may go if it is held
    (marketing outside its window, or scheduled: ``held_until``, a Unix time; else None)."""

    destination: Destination
    message_id: int
    parts: int
    held_until: float | None = None


@dataclass(slots=True)
class SubmitResult:
    """What became of each destination of a request, in the request's order: accepted
    (stored, with our id) or refused (with its reason). A request refused as a whole (its
    sender, its text, the account's rate) has every destination refused with one reason."""

    accepted: tuple[Accepted, ...] = ()
    refused: tuple[tuple[Destination, Refused], ...] = ()
    #: A ``multi`` request's one id (its messages' ``multi_id``), once planned; else None.
    multi_id: int | None = None

    @classmethod
    def refusing(cls, request: SubmitRequest, refused: Refused) -> SubmitResult:
        return cls((), tuple((d, refused) for d in request.destinations))
