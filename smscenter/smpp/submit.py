"""The SMPP door of the submit path: submit_sm / data_sm / submit_multi → ``SubmitRequest``,
and a neutral ``Refusal`` → the command status we answer.

What is SMPP stays here: reading the PDU's fields, its TLVs and its own segmentation (a UDH,
or the SAR TLVs), decoding its text once, parsing its SMPP times. What the PDU itself gets
wrong (a data_coding we cannot read, text that does not decode, message_payload beside a
short_message, half a SAR set, a malformed time) is answered here with its precise status
(``RemoteProtocolError``), before any policy. The policies run in the core
(``submit.SubmitPlanner``) on the request; ``SMPP_STATUS`` says how their refusals read on
the wire, the statuses the README documents.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus, DataCoding, Tag
from protocol.errors import RemoteProtocolError
from protocol.segments import Concat, parse_udh
from protocol.smpptime import parse_schedule_delivery_time, parse_validity_period
from protocol.text import canonical_coding, decode_text
from routing.senders import classify_sender

from smscenter.pipeline.request import (
    NO_PASSTHROUGH, Destination, OwnPart, Passthrough, ReceiptWish, Refusal, Refused, SubmitRequest, SubmitResult,
)
from smscenter.pipeline.submit import PlannedMessage, SubmitPlanner

#: How each neutral refusal reads as a command status (BAD_INPUT: by field, below).
SMPP_STATUS: dict[Refusal, CommandStatus] = {
    Refusal.UNKNOWN_CATEGORY: CommandStatus.ESME_RINVSERTYP,
    Refusal.SENDER_NOT_ALLOWED: CommandStatus.ESME_RINVSRCADR,
    Refusal.INVALID_NUMBER: CommandStatus.ESME_RINVDSTADR,
    Refusal.NO_ROUTE: CommandStatus.ESME_RSUBMITFAIL,
    Refusal.OPTED_OUT: CommandStatus.SMSC_ROPTEDOUT,
    Refusal.OUTSIDE_WINDOW: CommandStatus.SMSC_RWINDOWCLOSED,
    Refusal.TEXT_TOO_LONG: CommandStatus.ESME_RINVMSGLEN,
    Refusal.RATE_EXCEEDED: CommandStatus.ESME_RTHROTTLED,
    Refusal.QUEUE_FULL: CommandStatus.ESME_RMSGQFUL,
    Refusal.STORAGE_BUSY: CommandStatus.ESME_RTHROTTLED,  # the partner retries later
    Refusal.SYSTEM_ERROR: CommandStatus.ESME_RSYSERR,
    Refusal.BAD_INPUT: CommandStatus.ESME_RSUBMITFAIL,  # a field with no status of its own
}

#: ``Refusal.BAD_INPUT`` by the field it names.
BAD_INPUT_STATUS: dict[str, CommandStatus] = {
    "schedule": CommandStatus.ESME_RINVSCHED,
    "validity": CommandStatus.ESME_RINVEXPIRY,
    "text": CommandStatus.ESME_RINVMSGLEN,
    "data_coding": CommandStatus.ESME_RINVOPTPARAMVAL,
    "destination": CommandStatus.ESME_RINVDSTADR,
    "source": CommandStatus.ESME_RINVSRCADR,
    "category": CommandStatus.ESME_RINVSERTYP,
}

#: TLVs a partner may set that travel upstream with each part.
FORWARDED_TLVS = frozenset(
    {
        Tag.SAR_MSG_REF_NUM,
        Tag.SAR_TOTAL_SEGMENTS,
        Tag.SAR_SEGMENT_SEQNUM,
        Tag.SOURCE_PORT,
        Tag.DESTINATION_PORT,
        Tag.USER_MESSAGE_REFERENCE,
        Tag.LANGUAGE_INDICATOR,
        Tag.PAYLOAD_TYPE,
        Tag.MS_VALIDITY,
    }
)

_UDHI = 0x40
#: Enum members read once: a member looked up on its class costs ~1,000 instructions a time.
_BINARY = DataCoding.BINARY
_SUBMIT_MULTI = CommandId.SUBMIT_MULTI
_NO_SAR = (None, None, None)
#: registered_delivery's low bits; 3 (reserved in SMPP 3.4) has always been served as 1.
_RECEIPT = (ReceiptWish.NONE, ReceiptWish.ALWAYS, ReceiptWish.ON_FAILURE, ReceiptWish.ALWAYS)
_SAR_ROOM = 140 - 6  # a SAR part: the upstream puts a 6-octet UDH in front


def smpp_status(refused: Refused) -> CommandStatus:
    """The command status that answers ``refused``."""
    if refused.refusal is Refusal.BAD_INPUT and refused.field in BAD_INPUT_STATUS:
        return BAD_INPUT_STATUS[refused.field]
    return SMPP_STATUS[refused.refusal]


def submit_request(account, pdu: P.Pdu, wall_clock: Callable[[], float]) -> SubmitRequest:
    """The ``SubmitRequest`` of a submit_sm, data_sm or submit_multi from ``account`` (an
    ``AccountState``), its relative times read against ``wall_clock()`` (Unix time; asked
    only when the PDU has a time). Raises ``RemoteProtocolError`` with the status to answer
    when the PDU itself is wrong."""
    coding = canonical_coding(pdu.data_coding)  # UnsupportedDataCoding: ESME_RINVOPTPARAMVAL
    short_message = getattr(pdu, "short_message", b"")
    esm_class = getattr(pdu, "esm_class", 0)
    payload, tlvs, sar = None, (), _NO_SAR
    if pdu.tlvs:
        payload = pdu.tlv(Tag.MESSAGE_PAYLOAD)
        tlvs = tuple((tag, value) for tag, value in pdu.tlvs if tag in FORWARDED_TLVS)
        if payload is not None and short_message:
            raise RemoteProtocolError("short_message and message_payload together", CommandStatus.ESME_ROPTPARNOTALLWD)
        sar = (pdu.tlv(Tag.SAR_MSG_REF_NUM), pdu.tlv(Tag.SAR_TOTAL_SEGMENTS), pdu.tlv(Tag.SAR_SEGMENT_SEQNUM))
        if any(v is not None for v in sar):
            if any(v is None for v in sar):
                raise RemoteProtocolError("SAR TLVs must come as a set of three", CommandStatus.ESME_RMISSINGOPTPARAM)
            Concat.from_sar(*sar)  # inconsistent values: ESME_RINVOPTPARAMVAL
    body = payload if payload is not None else short_message
    own_part = None
    if esm_class & _UDHI:
        parsed = parse_udh(body)
        text = _text(parsed.body, pdu.data_coding, coding)
        if payload is not None:
            raise RemoteProtocolError("message_payload with a UDH", CommandStatus.ESME_ROPTPARNOTALLWD)
        header = short_message[: len(short_message) - len(parsed.body)]
        last = parsed.concat is None or parsed.concat.seqnum == parsed.concat.total
        own_part = OwnPart(header, last, 140 - len(header))
        body = parsed.body
    else:
        text = _text(body, pdu.data_coding, coding)
        if sar[0] is not None:  # one part of the partner's own long message
            if len(body) > 254:
                raise RemoteProtocolError("a SAR segment longer than a short_message", CommandStatus.ESME_RINVMSGLEN)
            own_part = OwnPart(b"", sar[1] == sar[2], _SAR_ROOM)
    schedule = validity = None
    schedule_text, validity_text = getattr(pdu, "schedule_delivery_time", ""), getattr(pdu, "validity_period", "")
    if schedule_text or validity_text:
        utc_now = datetime.fromtimestamp(wall_clock(), timezone.utc)
        if schedule_text:
            schedule = _timestamp(parse_schedule_delivery_time(schedule_text, utc_now))
        if validity_text:
            validity = _timestamp(parse_validity_period(validity_text, utc_now))
    if pdu.command_id == _SUBMIT_MULTI:
        destinations = tuple(_multi_destination(d) for d in pdu.dest_addresses)
    else:
        destinations = (Destination(pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi),)
    reference = pdu.tlv(Tag.USER_MESSAGE_REFERENCE) if pdu.tlvs else None
    protocol_id, priority = getattr(pdu, "protocol_id", 0), getattr(pdu, "priority_flag", 0)
    mode_bits = esm_class & 0x83  # messaging mode and reply path; UDHI is the planner's
    if protocol_id or priority or mode_bits or tlvs:
        passthrough = Passthrough(protocol_id, priority, mode_bits, tlvs)
    else:
        passthrough = NO_PASSTHROUGH  # most submits: nothing to build
    # Positional, in the fields' order: a class called with keywords builds a dict of them
    # for its __init__ (about 8,000 instructions of the ~300,000 a submit_sm costs).
    return SubmitRequest(
        account,
        pdu.source_addr,  # source
        classify_sender(pdu.source_addr, pdu.source_addr_ton),  # source_kind
        destinations,
        text,
        pdu.data_coding,
        None if coding is _BINARY else body,  # octets
        pdu.service_type,  # category
        _RECEIPT[pdu.registered_delivery & 0x03],  # receipt
        validity,
        schedule,
        None if reference is None else str(reference),  # reference
        pdu.source_addr_ton,  # source_ton
        pdu.source_addr_npi,  # source_npi
        own_part,
        passthrough,
        pdu.command_id == _SUBMIT_MULTI,  # multi: one id answers every destination
    )


def _text(body: bytes, data_coding: int, coding: DataCoding) -> str | bytes:
    """The body decoded, once (binary bodies stay bytes); TextDecodeError: ESME_RINVMSGLEN."""
    if coding is _BINARY:
        return body
    return decode_text(body, data_coding)


def _timestamp(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _multi_destination(address) -> Destination:
    """One dest_address of a submit_multi: an SME address (a distribution list is a name we
    do not keep: a Destination that no number matches, refused as an invalid number, and
    answered ESME_RINVDLNAME in the submit_multi_resp by ``multi_answer``)."""
    if isinstance(address, P.SmeAddress):
        return Destination(address.address, address.ton, address.npi)
    return Destination("", 0, 0)


def multi_answer(pdu: P.SubmitMulti, request: SubmitRequest, result: SubmitResult) -> P.SubmitMultiResp:
    """The submit_multi_resp of ``result`` (SMPP 3.4 §4.5.2): when a destination was
    accepted, ESME_ROK with the request's one id (``result.multi_id``, written as our ids
    are) and each refused destination as an ``unsuccess_sme`` with its status; when none
    was, the first destination's status and no body (nothing was stored). A distribution
    list (we keep none) is ESME_RINVDLNAME, under its name."""
    where = {id(d): i for i, d in enumerate(request.destinations)}
    unsuccess = []
    for destination, refused in result.refused:
        address = pdu.dest_addresses[where[id(destination)]]
        if isinstance(address, P.SmeAddress):
            unsuccess.append(P.UnsuccessSme(address.ton, address.npi, address.address, smpp_status(refused)))
        else:
            unsuccess.append(P.UnsuccessSme(0, 0, address.name, CommandStatus.ESME_RINVDLNAME))
    if result.accepted:
        return P.SubmitMultiResp(pdu.sequence_number, 0, (), str(result.multi_id), tuple(unsuccess))
    return pdu.response(unsuccess[0].error_status_code)


class SmppRefused(RemoteProtocolError):
    """A submit refused, as the SMPP door answers it: ``status`` is the command status."""


class SmppPlanner:
    """The core planner driven by one submit_sm / data_sm: the request built as the door
    builds it, the policies of ``SubmitPlanner.plan``, one ``PlannedMessage`` or
    ``SmppRefused`` with the status the partner would read. (The account's rate and queue
    limits are the server's step, through ``submit.admit``.) Takes ``SubmitPlanner``'s
    arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.core = SubmitPlanner(*args, **kwargs)

    def plan(self, bind, pdu: P.Pdu) -> PlannedMessage:
        try:
            request = submit_request(bind.account, pdu, self.core.wall_clock)
            (planned,) = self.core.plan(request)
        except Refused as exc:
            raise SmppRefused(exc.why, smpp_status(exc)) from None
        except RemoteProtocolError as exc:
            raise SmppRefused(str(exc), exc.status) from None
        if isinstance(planned, Refused):
            raise SmppRefused(planned.why, smpp_status(planned))
        return planned


__all__ = [
    "BAD_INPUT_STATUS",
    "FORWARDED_TLVS",
    "SMPP_STATUS",
    "SmppPlanner",
    "SmppRefused",
    "multi_answer",
    "smpp_status",
    "submit_request",
]
