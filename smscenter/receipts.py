"""Delivery receipts both ways.

Upstream → us: ``UpstreamDeliveries`` takes a connector's deliver_sm/data_sm. A receipt is
parsed (TLVs and text, any case), its id normalised per the connector's ``message_id``
setting, and correlated by (connector, id) in the store — inside the transaction that also
queues the partner's receipt; only then do we answer deliver_sm_resp, so an upstream
receipt is never lost. Anything else is MO, handed to the MO handler.

Us → partner: ``ReceiptBuilder`` turns a finished message into the deliver_sm the partner
gets: our decimal id in the text ``id:`` field and in ``receipted_message_id``, the final
state in ``stat:`` and ``message_state``, and the upstream error code in ``err:``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import structlog

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandStatus, EsmClass, MessageState, Tag
from protocol.receipt import (
    MessageIdError,
    Receipt,
    ReceiptParseError,
    format_receipt,
    normalize_dlr_id,
    receipt_from_tlvs,
    receipt_tlvs,
)
from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.schema import OUTBOX_RECEIPT
from storage.store import Finished, Store, UpstreamReceipt

from .connector import Connector
from .link import Link

log = structlog.get_logger("smscenter.receipts")


def is_receipt(pdu: P.Pdu) -> bool:
    """SMPP marks receipts in esm_class (bits 2-5 = 0001 delivery receipt, or the
    intermediate notification bit); some upstreams only send receipted_message_id."""
    esm = getattr(pdu, "esm_class", 0)
    return bool(esm & (EsmClass.DELIVERY_RECEIPT | EsmClass.INTERMEDIATE_NOTIFICATION)) or (
        pdu.tlv(Tag.RECEIPTED_MESSAGE_ID) is not None
    )


class MoHandler:
    """What happens to MO (replies): answered at once until MO routing is wired."""

    def on_mo(self, connector: Connector, link: Link, pdu: P.Pdu) -> None:
        log.info("mo_received", connector=connector.name)
        link.respond(pdu.response())


class UpstreamDeliveries:
    """The connectors' ``DeliverHandler``: receipts are stored, then acknowledged."""

    def __init__(self, store: Store, cipher: FieldCipher, mo_handler=None, clock=time.time) -> None:
        self.store = store
        self.cipher = cipher
        self.mo_handler = mo_handler or MoHandler()
        self.clock = clock
        self.stats = {"receipts": 0, "matched": 0, "early": 0, "unparsable": 0}

    def on_deliver(self, connector: Connector, link: Link, pdu: P.Pdu) -> None:
        if not is_receipt(pdu):
            self.mo_handler.on_mo(connector, link, pdu)
            return
        self.stats["receipts"] += 1
        try:
            receipt = receipt_from_tlvs(pdu.tlv, getattr(pdu, "short_message", b""))
            upstream_id = normalize_dlr_id(receipt.message_id, connector.config.message_id)
        except (ReceiptParseError, MessageIdError) as exc:
            # Acknowledge anyway: refusing makes the SMSC resend it forever.
            self.stats["unparsable"] += 1
            log.warning("receipt_unparsable", connector=connector.name, error=str(exc))
            link.respond(pdu.response())
            return
        item = UpstreamReceipt(
            connector=connector.name,
            upstream_id=upstream_id,
            state=int(receipt.state),
            error=_error_code(receipt.err),
            pdu_enc=self.cipher.encrypt(codec.encode(pdu, 0), b"early:" + connector.name.encode()),
            done_at=self.clock(),
        )
        try:
            fut = self.store.apply_receipt(item)
        except RuntimeError as exc:  # the store is closing: no answer, the upstream resends
            log.warning("receipt_not_stored", connector=connector.name, error=str(exc))
            return

        def stored(f) -> None:
            if f.cancelled() or f.exception() is not None:
                # Not stored: no answer, so the upstream sends it again.
                log.error("receipt_not_stored", connector=connector.name,
                          error=str(f.exception()) if not f.cancelled() else "cancelled")
                link.close()
                return
            self.stats["matched" if f.result() else "early"] += 1
            link.respond(pdu.response())

        fut.add_done_callback(stored)

    def early_decoder(self, row: dict) -> UpstreamReceipt:
        """Turn a stored early receipt back into an ``UpstreamReceipt`` (for the store)."""
        pdu = codec.decode(self.cipher.decrypt(row["pdu_enc"], b"early:" + row["connector"].encode()))
        receipt = receipt_from_tlvs(pdu.tlv, getattr(pdu, "short_message", b""))
        return UpstreamReceipt(
            connector=row["connector"],
            upstream_id=row["upstream_id"],
            state=int(receipt.state),
            error=_error_code(receipt.err),
            pdu_enc=row["pdu_enc"],
            done_at=row["received_at"],
        )


def _error_code(err: str) -> int:
    try:
        return int(str(err), 10) if str(err).isdigit() else int(str(err), 16)
    except ValueError:
        return 0


class ReceiptBuilder:
    """Builds the partner's receipt (an outbox row) for a finished message or part."""

    def __init__(
        self,
        cipher: FieldCipher,
        ids: IdGenerator,
        retention: Callable[[str], float],
        clock=time.time,
    ) -> None:
        self.cipher = cipher
        self.ids = ids
        self.retention = retention  # account -> seconds a receipt may wait for its partner
        self.clock = clock

    def __call__(self, done: Finished) -> dict | None:
        msg = done.message
        wanted = msg["registered_delivery"] & 0x03
        if wanted == 0 or (wanted == 2 and done.state == MessageState.DELIVERED):
            return None
        dest = self.cipher.decrypt(msg["dest_enc"], b"dest:%d" % msg["id"]).decode()
        our_id = str(msg["id"])
        text = format_receipt(
            Receipt(
                our_id,
                sub=1,
                dlvrd=1 if done.state == MessageState.DELIVERED else 0,
                submit_date=datetime.fromtimestamp(msg["submitted_at"], timezone.utc),
                done_date=datetime.fromtimestamp(done.done_at, timezone.utc),
                stat=done.state,
                err=min(done.error, 999),
            )
        )
        tlvs = tuple(receipt_tlvs(our_id, done.state, (3, done.error & 0xFFFF) if done.error else None))
        if done.part_no is not None:
            tlvs += ((Tag.USER_MESSAGE_REFERENCE, done.part_no),)
        pdu = P.DeliverSm(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=dest.lstrip("+"),
            dest_addr_ton=msg["source_ton"],
            dest_addr_npi=msg["source_npi"],
            destination_addr=msg["source_addr"],
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=text.encode("ascii"),
            tlvs=tlvs,
        )
        outbox_id = self.ids.next()
        now = self.clock()
        return {
            "id": outbox_id,
            "account": msg["account"],
            "kind": OUTBOX_RECEIPT,
            "message_id": msg["id"],
            "pdu_enc": self.cipher.encrypt(codec.encode(pdu), b"outbox:%d" % outbox_id),
            "created_at": now,
            "expires_at": now + self.retention(msg["account"]),
            "attempts": 0,
        }


__all__ = ["ReceiptBuilder", "UpstreamDeliveries", "is_receipt", "CommandStatus"]
