"""The SMPP door's inbound side: an upstream's deliver_sm/data_sm read into the core's values.

The connectors' ``DeliverHandler``. A receipt (``protocol.receipt.is_receipt``) is read with
protocol/'s rules (TLVs and text, any case), its id normalised per the connector's
``message_id`` setting (or read every way with ``auto``), and handed to the core as an
``InboundReceipt``; anything else is MO, read into an ``InboundMo`` (short code from the
destination or the session's bind, body and concatenation from the UDH or the SAR TLVs).
Each carries a ``Reply`` on its session: the core answers deliver_sm_resp once it stored the
value, or drops the session unanswered when it could not (the upstream delivers it again).
"""

from __future__ import annotations

import structlog

from protocol import pdu as P
from protocol.constants import EsmClass, Tag
from protocol.errors import RemoteProtocolError
from protocol.idreadings import read_receipt_id
from protocol.receipt import MessageIdError, ReceiptParseError, error_code, is_receipt, normalize_dlr_id, read_receipt
from protocol.segments import Concat, parse_udh

from smscenter.pipeline.ports import InboundMo, InboundReceipt
from smscenter.smpp.connector import Connector
from smscenter.smpp.link import Link

log = structlog.get_logger("smscenter.receipts")

_UDHI = int(EsmClass.UDHI)


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
        self.mo.on_mo(read_mo(connector, link, pdu))


def read_mo(connector: Connector, link: Link, pdu: P.Pdu) -> InboundMo:
    """An MO deliver_sm/data_sm as the core's value."""
    short_code = _digits(pdu.destination_addr) or _tagged_short_code(connector, link)
    body = pdu.tlv(Tag.MESSAGE_PAYLOAD) or getattr(pdu, "short_message", b"")
    concat = None
    try:
        if getattr(pdu, "esm_class", 0) & _UDHI:
            parsed = parse_udh(body, strict=False)
            concat, body = parsed.concat, parsed.body
        elif pdu.tlv(Tag.SAR_MSG_REF_NUM) is not None:
            concat = Concat.from_sar(
                pdu.tlv(Tag.SAR_MSG_REF_NUM), pdu.tlv(Tag.SAR_TOTAL_SEGMENTS), pdu.tlv(Tag.SAR_SEGMENT_SEQNUM)
            )
    except RemoteProtocolError:
        concat = None  # a broken header: keep the message as it came
    return InboundMo(connector.name, pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi, short_code,
                     pdu.data_coding, body, concat, DeliverReply(link, pdu))


def _digits(addr: str) -> str:
    addr = addr.strip().lstrip("+")
    return addr if addr.isdigit() else ""


def _tagged_short_code(connector: Connector, link: Link) -> str:
    """The short code a per-short-code bind was opened for (its address_range)."""
    tag = getattr(link, "short_code", None)
    if tag:
        return tag
    codes = getattr(connector.config, "short_codes", ())
    return codes[0] if len(codes) == 1 else ""
