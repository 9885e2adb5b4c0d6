"""What the core needs from the doors' sessions, and what it gets from them, in its own terms.

The pipeline imports no door (the import-linter contracts in pyproject.toml). It talks to

- an **upstream** (``Upstream``): where the dispatcher sends a planned part and gets its
  answer. The SMPP connector (smpp/connector.py) is one: it raises the errors below.
- a **delivery sink** (``DeliverySink``): a partner's receiving session, where the outbox
  sends what the partner is owed and awaits its answer. The SMPP link (smpp/link.py) is one.

and it receives from upstreams neutral values: an ``InboundReceipt`` (receipts.py) and an
``InboundMo`` (mo.py), read from the wire by the door (for SMPP: smpp/upstream.py, with
protocol/'s receipt, TLV and UDH rules). Each carries a ``Reply``: the core answers the
upstream only once the value is stored, so nothing acknowledged is ever lost.

The errors are the core's: the doors raise them (or subclasses), the core catches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.idreadings import ConventionLearner
from protocol.segments import Concat

from smscenter.config import Connector as ConnectorConfig

# --- errors ---------------------------------------------------------------------------------


class UpstreamDown(ConnectionError):
    """No session of the upstream came up before the caller's deadline (or it is stopping)."""


class NotWanted(Exception):
    """The caller's ``still_wanted`` said no when the part's turn came: it was not sent."""


class SessionClosed(ConnectionError):
    """The session went away before our request was answered (it may have been seen)."""


class AnswerTimeout(TimeoutError):
    """The peer did not answer our request in time (the outcome is unknown)."""


# --- what the core calls --------------------------------------------------------------------


class Answer(Protocol):
    """A peer's answer to a part or a delivery: its status (0: accepted) and, for a part
    accepted upstream, the upstream's id for it."""

    command_status: int
    message_id: str


class Upstream(Protocol):
    """One upstream route target (a ``[[connector]]``), as the dispatcher and the receipt
    handler see it."""

    name: str
    config: ConnectorConfig
    #: With ``message_id = "auto"``: what its receipts' matches teach (None otherwise).
    id_learner: ConventionLearner | None

    @property
    def is_up(self) -> bool: ...

    @property
    def id_convention(self) -> str: ...

    async def submit(self, part, timeout: float | None = None, still_wanted=None) -> Answer:
        """Send ``part`` and return the answer. Raises ``UpstreamDown`` (nothing sent),
        ``NotWanted`` (``still_wanted()`` said no: nothing sent), ``AnswerTimeout`` (sent,
        outcome unknown) or ``SessionClosed``."""
        ...


class DeliverySink(Protocol):
    """A partner's receiving session, as the outbox sees it."""

    @property
    def is_open(self) -> bool: ...

    async def wait_window(self) -> None:
        """Wait for room for one more delivery in flight (``SessionClosed`` if it goes)."""
        ...

    def request_nowait(self, payload):
        """Send now; returns the future of the ``Answer`` (failed with ``AnswerTimeout`` or
        ``SessionClosed``). Raises ``SessionClosed`` if the session is gone."""
        ...


class Reply(Protocol):
    """How the core answers what an upstream delivered to it."""

    def ack(self) -> None:
        """Stored (or to be forgotten): the upstream may drop it."""
        ...

    def abandon(self) -> None:
        """Not stored: drop the session unanswered, so the upstream delivers it again."""
        ...


# --- what the core receives -----------------------------------------------------------------


@dataclass(slots=True)
class InboundReceipt:
    """A delivery receipt from an upstream, read by its door."""

    upstream: Upstream
    #: The upstream's id of the message, normalised per the connector's ``message_id``.
    upstream_id: str
    state: int  # protocol.constants.MessageState
    error: int  # the upstream's error code (0: none)
    #: With ``message_id = "auto"``: (key, readings that give it) for each candidate key, the
    #: id as-is first (``protocol.idreadings.read_receipt_id``); () otherwise.
    readings: tuple
    reply: Reply

    @property
    def connector(self) -> str:
        return self.upstream.name


@dataclass(slots=True)
class InboundMo:
    """A mobile-originated message (or one part of a concatenated one) from an upstream."""

    connector: str
    #: The sender as received (personal data) and its TON/NPI.
    source_addr: str
    source_ton: int
    source_npi: int
    #: The short code it was sent to: its destination, or the one its session was bound for.
    short_code: str
    data_coding: int
    #: The text's octets in ``data_coding``, without the user data header.
    body: bytes
    #: Its place in a concatenated message (UDH or SAR), None when it stands alone.
    concat: Concat | None
    reply: Reply


__all__ = [
    "Answer", "AnswerTimeout", "DeliverySink", "InboundMo", "InboundReceipt", "NotWanted", "Reply", "SessionClosed",
    "Upstream", "UpstreamDown",
]
