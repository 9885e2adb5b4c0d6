"""The SMPP outbox as a durable subscriber of the core's events (``events.py``).

A receipt event becomes the deliver_sm receipt ``receipts.ReceiptBuilder`` builds (only when
the partner asked for it: registered_delivery), an MO event the partner's copy of the MO
(``service_type "STOP"`` for an opt-out), each as an ``outbox`` row with the deliver_sm
encrypted, delivered by ``outbox.OutboxSender`` on the account's receiving binds.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import codec
from protocol import pdu as P
from protocol.constants import Tag
from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.schema import OUTBOX_MO
from storage.transaction import Backlog, Finished

from smscenter.pipeline.events import Event, MoEvent, ReceiptEvent

MAX_SHORT_MESSAGE = 254  # longer MO go in message_payload


class OutboxSubscriber:
    def __init__(
        self,
        cipher: FieldCipher,
        ids: IdGenerator,
        retention: Callable[[str], float],
        receipts: Callable[[Finished], dict | None] | None = None,
    ) -> None:
        self.cipher = cipher
        self.ids = ids
        self.retention = retention  # account -> seconds a row may wait for its partner
        self.receipts = receipts  # receipts.ReceiptBuilder (None: MO only)

    def take(self, event: Event, backlog: Backlog) -> None:
        kind = type(event)
        if kind is ReceiptEvent:
            if self.receipts is not None:
                row = self.receipts(_finished(event))
                if row is not None:
                    backlog.outbox.append(row)
        elif kind is MoEvent:
            backlog.outbox.append(self.mo_row(event))

    def mo_row(self, event: MoEvent) -> dict:
        """The partner's copy of the MO, as an outbox row."""
        body = event.body
        long = len(body) > MAX_SHORT_MESSAGE
        short_code = event.short_code
        deliver = P.DeliverSm(
            service_type="STOP" if event.optout else "",
            source_addr_ton=event.source_ton,
            source_addr_npi=event.source_npi,
            source_addr=event.source[1:] if event.international else event.source,
            dest_addr_ton=3 if short_code.isdigit() else 0,
            dest_addr_npi=0,
            destination_addr=short_code,
            data_coding=event.data_coding,
            short_message=b"" if long else body,
            tlvs=((Tag.MESSAGE_PAYLOAD, body),) if long else (),
        )
        outbox_id = self.ids.next()
        now = event.received_at
        return {
            "id": outbox_id,
            "account": event.account,
            "kind": OUTBOX_MO,
            "message_id": None,
            "pdu_enc": self.cipher.encrypt(codec.encode(deliver), b"outbox:%d" % outbox_id),
            "created_at": now,
            "expires_at": now + self.retention(event.account),
            "attempts": 0,
        }


def _finished(event: ReceiptEvent) -> Finished:
    """The receipt builder's input: the message's fields it reads, from the event."""
    message = {
        "id": event.message_id, "account": event.account, "registered_delivery": event.receipt_wish,
        "submitted_at": event.submitted_at, "dest_enc": event.dest_enc, "source_addr": event.source_addr,
        "source_ton": event.source_ton, "source_npi": event.source_npi, "multi_id": event.multi_id,
    }
    return Finished(message, event.part_no, event.state, event.error, event.done_at)


__all__ = ["OutboxSubscriber"]
