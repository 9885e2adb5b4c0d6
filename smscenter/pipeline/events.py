"""Events out of the core: what partners are owed, as neutral values, and the one way they
leave — to durable subscribers, inside the transaction of their cause.

An event says what happened in the core's terms, not in any door's: a message finished
(``ReceiptEvent``), a reply came in (``MoEvent``), a number opted out (``OptOutEvent``), a
connector went up or down (``ConnectorEvent``, emitted by the connector itself through
``Events.emit``: it has no stored cause). A *subscriber* turns an event into rows of
its own durable backlog (``Subscriber.take``): the SMPP outbox (``outbox_subscriber.py``:
the deliver_sm a bound partner gets), the webhooks (``webhook_backlog.py``: the JSON a
partner's URL gets). ``Events.backlog`` asks every subscriber and returns what they wrote as
one ``storage.transaction.Backlog``, which the caller commits *with the cause*: a receipt's
rows with the message's final state (the store's group commit calls ``Events.on_finished``
inside its transaction), an MO's with the MO row (``optouts.record_mo``). So a crash never
leaves an acknowledged receipt or MO without its backlog rows, nor rows for something that
was not stored. Each backlog is keyed by account and ordered by its time-ordered row ids.

Numbers and texts travel only inside events and the backlogs (encrypted at rest); events
are never logged.

Subscribers run where the transaction runs (a writer process on a SQLite file), so they are
built from plain values (``receipts.daemon_transaction``).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable
from typing import Protocol

from protocol.constants import MessageState
from storage.transaction import Backlog, Finished


@dataclass(slots=True)
class ReceiptEvent:
    """A partner's message (or one of its parts, with per-part receipts) reached a final
    state."""

    account: str
    message_id: int  # our id, as the partner got it at submit
    part_no: int | None  # None: the whole message
    state: MessageState
    error: int  # the upstream's error code (0: none)
    submitted_at: float
    done_at: float
    #: What the partner asked at submit: 0 no receipt, 1 always, 2 on failure only.
    receipt_wish: int
    #: The message's sender (a sender ID or short code: not personal) and its TON/NPI, to
    #: address a receipt back.
    source_addr: str
    source_ton: int
    source_npi: int
    #: The destination, encrypted (AAD ``dest:<message id>``): a subscriber that needs the
    #: number decrypts it, the others never see it.
    dest_enc: bytes
    #: The partner's own reference for the message, when its door carries one (none does
    #: yet: SMPP has our id only).
    reference: str | None = None
    #: The id of the submit_multi the message came from (None: none), which is what the
    #: partner got at submit instead of ``message_id``: its receipt carries it.
    multi_id: int | None = None

    @property
    def partner_id(self) -> int:
        """The id the partner knows the message by: its multi's, else its own."""
        return self.message_id if self.multi_id is None else self.multi_id

    @property
    def wanted(self) -> bool:
        """Whether the partner asked for this receipt."""
        return self.receipt_wish == 1 or (self.receipt_wish == 2 and self.state != MessageState.DELIVERED)


@dataclass(slots=True)
class MoEvent:
    """A reply (mobile-originated message) for an account, stored as ``mo_messages.id``."""

    account: str
    mo_id: int
    received_at: float
    short_code: str
    #: The sender: E.164 (``+33…``) when the number parses (``international``), else as
    #: received, with its TON/NPI. Personal data.
    source: str
    international: bool
    source_ton: int
    source_npi: int
    text: str | None  # decoded (None: binary); personal data
    body: bytes  # the message as received (reassembled), in ``data_coding``
    data_coding: int
    #: An opt-out keyword: the number is on the account's blacklist now.
    optout: bool = False


@dataclass(slots=True)
class OptOutEvent:
    """A number was put on a blacklist scope (an account, or a shared short code's), by any
    of its sources: a STOP reply (``mo.py``), an unsubscribe link (``http/ops.py``), an
    administrator (``smscenter blacklist add`` / ``import``, ``cli/admin.py``). Emitted once
    per new entry, its rows committed with the entry (``OptOutStore.add``)."""

    account: str | None  # None: a platform-level scope (no account's: no partner is told)
    scope: str
    source: str  # stop | link | manual | import
    at: float
    #: The number, E.164 (``+33…``): what the partner needs to suppress it. Personal data.
    number: str | None = None


@dataclass(slots=True)
class ConnectorEvent:
    """A connector got its first bound session (up) or lost its last one (down, also when it
    stops)."""

    connector: str
    up: bool
    at: float  # wall-clock seconds


Event = ReceiptEvent | MoEvent | OptOutEvent | ConnectorEvent


class Subscriber(Protocol):
    """A durable subscriber: adds the rows it is owed for ``event`` to its backlog table's
    list in ``backlog`` (or nothing: not its kind of event, or not wanted)."""

    def take(self, event: Event, backlog: Backlog) -> None: ...


class Events:
    """The one way events leave the core: to every subscriber, as backlog rows to commit
    with the event's cause."""

    def __init__(self, subscribers: Iterable[Subscriber]) -> None:
        self.subscribers = tuple(subscribers)

    def backlog(self, events: Iterable[Event]) -> Backlog:
        out = Backlog()
        for event in events:
            for subscriber in self.subscribers:
                subscriber.take(event, out)
        return out

    def emit(self, event: Event) -> None:
        """An event with no stored cause to commit rows with (a connector up or down): to
        every subscriber, now. It is a notice, owed to no partner: the durable subscribers
        write nothing for it (MQTT will publish it as it comes). Rows written for it would
        have no transaction, so a subscriber that writes any is refused (RuntimeError)."""
        out = self.backlog((event,))
        if out.outbox or out.webhooks:
            raise RuntimeError(f"a subscriber wrote backlog rows for a {type(event).__name__}, which has no transaction")

    def on_finished(self, done: Finished) -> Backlog | None:
        """The store transaction's hook (``Transaction.receipt_builder``): a finished
        message's receipt event, to every subscriber."""
        out = self.backlog((receipt_event(done),))
        return out if out.outbox or out.webhooks else None


def receipt_event(done: Finished) -> ReceiptEvent:
    """The receipt event of a message (or part) that finished inside a transaction."""
    msg = done.message
    return ReceiptEvent(
        msg["account"], msg["id"], done.part_no, done.state, done.error, msg["submitted_at"], done.done_at,
        msg["registered_delivery"] & 0x03, msg["source_addr"], msg["source_ton"], msg["source_npi"],
        msg["dest_enc"], None, msg.get("multi_id"),
    )


__all__ = [
    "ConnectorEvent", "Event", "Events", "MoEvent", "OptOutEvent", "ReceiptEvent", "Subscriber", "receipt_event",
]
