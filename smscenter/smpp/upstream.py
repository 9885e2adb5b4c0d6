"""The SMPP door's inbound side: an upstream's deliver_sm/data_sm read into the core's values.

The connectors' ``DeliverHandler``. A receipt (``protocol.receipt.is_receipt``) is read with
protocol/'s rules (TLVs and text, any case), its id normalised per the connector's
``message_id`` setting (or read every way with ``auto``), and handed to the core as an
``InboundReceipt``; anything else is MO, for the MO handler.
Each carries a ``Reply`` on its session: the core answers deliver_sm_resp once it stored the
value, or drops the session unanswered when it could not (the upstream delivers it again).
"""

from __future__ import annotations

import structlog

from protocol import pdu as P
from protocol.idreadings import read_receipt_id
from protocol.receipt import MessageIdError, ReceiptParseError, error_code, is_receipt, normalize_dlr_id, read_receipt

from smscenter.pipeline.ports import InboundReceipt
from smscenter.smpp.connector import Connector
from smscenter.smpp.link import Link

log = structlog.get_logger("smscenter.receipts")


class DeliverReply:
    """``ports.Reply`` for one deliver_sm/data_sm on its link."""

    __slots__ = ("link", "pdu")

    def __init__(self, link: Link, pdu: P.Pdu) -> None:
        self.link = link
        self.pdu = pdu

    def ack(self) -> None:
        self.link.respond(self.pdu.response())

    def abandon(self) -> None:
        self.link.close()


class UpstreamDoor:
    """Reads what connectors deliver and hands it to the core: receipts to ``receipts``
    (``pipeline.receipts.UpstreamDeliveries``), MO to ``mo`` (``pipeline.mo.MoService``;
    until it is set, MO is acknowledged at once)."""

    def __init__(self, receipts, mo=None) -> None:
        self.receipts = receipts
        self.mo = mo

    def on_deliver(self, connector: Connector, link: Link, pdu: P.Pdu) -> None:
        if not is_receipt(pdu):
            self._on_mo(connector, link, pdu)
            return
        try:
            raw_id, state, err = read_receipt(pdu)
            learner = connector.id_learner
            if learner is None:
                upstream_id = normalize_dlr_id(raw_id, connector.config.message_id)
                readings: tuple = ()
            else:  # auto: an early one waits under its as-is key
                upstream_id, readings = read_receipt_id(raw_id, learner.readings)
        except (ReceiptParseError, MessageIdError) as exc:
            self.receipts.unparsable(connector.name, str(exc))
            link.respond(pdu.response())  # refusing makes the SMSC resend it forever
            return
        self.receipts.on_receipt(
            InboundReceipt(connector, upstream_id, state, error_code(err), readings, DeliverReply(link, pdu))
        )

    def _on_mo(self, connector: Connector, link: Link, pdu: P.Pdu) -> None:
        if self.mo is None:
            log.info("mo_received", connector=connector.name)
            link.respond(pdu.response())
            return
        self.mo.on_mo(connector, link, pdu)  # still the deliver_sm itself (mo.py)
