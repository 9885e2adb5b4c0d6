"""Every SMPP 3.4 PDU as a frozen dataclass, with its body layout from the spec.

Each class declares its mandatory fields in wire order and a ``BODY`` table that the codec
compiles into a specialised encoder and decoder (see ``codec.py``). Field limits are the spec's
maximum sizes *including* the terminating NUL (system_id "Var. max 16" holds 15 characters),
and each carries the command_status to answer when a peer exceeds it.

Strings are ``str`` (decoded as Latin-1, so any octet survives a round trip); short_message
is ``bytes``; optional parameters are ``tlvs``: ``((tag, value), ...)`` in wire order.

PDUs are frozen but deliberately not ``slots``: a frozen dataclass's ``__init__`` pays an
``object.__setattr__`` call per field (3 µs for a submit_sm), while the decoder, and the
``__init__`` each class gets here instead (``_fast_init``), fill a frozen instance's
``__dict__`` in one step. Decoding and building PDUs are our hottest paths, so that wins.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from .constants import INTERFACE_VERSION, CommandId, CommandStatus as S

# Field kinds in a BODY table.
CSTR = "cstr"  # (CSTR, name, max octets incl. NUL, status when too long)
TIME = "time"  # (TIME, name, status): empty, or exactly 16 characters (§7.1)
U8 = "u8"  # (U8, name)
U32 = "u32"  # (U32, name)
SM = "sm"  # (SM, "short_message"): sm_length octet then that many octets (≤ 254)
DESTS = "dests"  # submit_multi's number_of_dests + dest_address list
UNSUCCESS = "unsuccess"  # submit_multi_resp's no_unsuccess + unsuccess_sme list

MAX_SHORT_MESSAGE = 254
_SECRET_FIELDS = frozenset({"password", "short_message"})


@dataclass(frozen=True, slots=True)
class SmeAddress:
    """A destination in submit_multi (dest_flag 1) or a failed one in submit_multi_resp."""

    ton: int = 0
    npi: int = 0
    address: str = ""


@dataclass(frozen=True, slots=True)
class DistributionList:
    """A distribution list name in submit_multi (dest_flag 2)."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class UnsuccessSme:
    ton: int = 0
    npi: int = 0
    address: str = ""
    error_status_code: int = 0


@dataclass(frozen=True, repr=False)
class Pdu:
    """Common header fields. command_length is computed on encode, never stored."""

    command_id: ClassVar[CommandId]
    BODY: ClassVar[tuple] = ()

    sequence_number: int = 0
    command_status: int = 0
    tlvs: tuple = ()

    def __repr__(self) -> str:
        """Field values, except what must never reach a log: passwords and message text
        (shown as a length), and TLV values (shown as tags)."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                shown.append(f"{f.name}=<{len(value)} octets>")
            elif f.name == "tlvs":
                if value:
                    shown.append("tlvs=(" + ", ".join(f"0x{t:04X}" for t, _ in value) + ")")
            elif value or f.name == "sequence_number":
                shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def tlv(self, tag: int, default: Any = None) -> Any:
        """The value of the first TLV with this tag, or ``default``."""
        for t, v in self.tlvs:
            if t == tag:
                return v
        return default

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & 0x80000000)

    def response(self, command_status: int = 0, **fields: Any) -> "Pdu":
        """The response PDU to this request, with the same sequence_number."""
        cls = RESPONSE_CLASS[self.command_id]
        return cls(sequence_number=self.sequence_number, command_status=command_status, **fields)

    def response_with_id(self, message_id: str) -> Pdu:
        """The ESME_ROK response carrying ``message_id`` (to a submit_sm, data_sm,
        submit_multi or deliver_sm): ``response(message_id=…)`` built positionally, the
        header then ``message_id`` first in every such response's fields. The answer to
        every accepted submit: keywords would cost two dicts (``**fields`` and the call)."""
        return RESPONSE_CLASS[self.command_id](self.sequence_number, 0, (), message_id)


# --- session management -------------------------------------------------------------------

_BIND_BODY = (
    (CSTR, "system_id", 16, S.ESME_RINVSYSID),
    (CSTR, "password", 9, S.ESME_RINVPASWD),
    (CSTR, "system_type", 13, S.ESME_RINVSYSTYP),
    (U8, "interface_version"),
    (U8, "addr_ton"),
    (U8, "addr_npi"),
    (CSTR, "address_range", 41, S.ESME_RINVPARLEN),
)


@dataclass(frozen=True, repr=False)
class _Bind(Pdu):
    BODY: ClassVar[tuple] = _BIND_BODY
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(frozen=True, repr=False)
class BindTransmitter(_Bind):
    command_id = CommandId.BIND_TRANSMITTER


@dataclass(frozen=True, repr=False)
class BindReceiver(_Bind):
    command_id = CommandId.BIND_RECEIVER


@dataclass(frozen=True, repr=False)
class BindTransceiver(_Bind):
    command_id = CommandId.BIND_TRANSCEIVER


@dataclass(frozen=True, repr=False)
class _BindResp(Pdu):
    BODY: ClassVar[tuple] = ((CSTR, "system_id", 16, S.ESME_RINVSYSID),)
    system_id: str = ""


@dataclass(frozen=True, repr=False)
class BindTransmitterResp(_BindResp):
    command_id = CommandId.BIND_TRANSMITTER_RESP


@dataclass(frozen=True, repr=False)
class BindReceiverResp(_BindResp):
    command_id = CommandId.BIND_RECEIVER_RESP


@dataclass(frozen=True, repr=False)
class BindTransceiverResp(_BindResp):
    command_id = CommandId.BIND_TRANSCEIVER_RESP


@dataclass(frozen=True, repr=False)
class Outbind(Pdu):
    command_id = CommandId.OUTBIND
    BODY: ClassVar[tuple] = _BIND_BODY[:2]
    system_id: str = ""
    password: str = ""


@dataclass(frozen=True, repr=False)
class Unbind(Pdu):
    command_id = CommandId.UNBIND


@dataclass(frozen=True, repr=False)
class UnbindResp(Pdu):
    command_id = CommandId.UNBIND_RESP


@dataclass(frozen=True, repr=False)
class EnquireLink(Pdu):
    command_id = CommandId.ENQUIRE_LINK


@dataclass(frozen=True, repr=False)
class EnquireLinkResp(Pdu):
    command_id = CommandId.ENQUIRE_LINK_RESP


@dataclass(frozen=True, repr=False)
class GenericNack(Pdu):
    command_id = CommandId.GENERIC_NACK


# --- message submission and delivery ------------------------------------------------------

_SM_BODY = (
    (CSTR, "service_type", 6, S.ESME_RINVSERTYP),
    (U8, "source_addr_ton"),
    (U8, "source_addr_npi"),
    (CSTR, "source_addr", 21, S.ESME_RINVSRCADR),
    (U8, "dest_addr_ton"),
    (U8, "dest_addr_npi"),
    (CSTR, "destination_addr", 21, S.ESME_RINVDSTADR),
    (U8, "esm_class"),
    (U8, "protocol_id"),
    (U8, "priority_flag"),
    (TIME, "schedule_delivery_time", S.ESME_RINVSCHED),
    (TIME, "validity_period", S.ESME_RINVEXPIRY),
    (U8, "registered_delivery"),
    (U8, "replace_if_present_flag"),
    (U8, "data_coding"),
    (U8, "sm_default_msg_id"),
    (SM, "short_message"),
)


@dataclass(frozen=True, repr=False)
class _ShortMessage(Pdu):
    BODY: ClassVar[tuple] = _SM_BODY
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, repr=False)
class SubmitSm(_ShortMessage):
    command_id = CommandId.SUBMIT_SM


@dataclass(frozen=True, repr=False)
class DeliverSm(_ShortMessage):
    command_id = CommandId.DELIVER_SM


_MESSAGE_ID = ((CSTR, "message_id", 65, S.ESME_RINVMSGID),)


@dataclass(frozen=True, repr=False)
class _MessageIdResp(Pdu):
    BODY: ClassVar[tuple] = _MESSAGE_ID
    message_id: str = ""


@dataclass(frozen=True, repr=False)
class SubmitSmResp(_MessageIdResp):
    command_id = CommandId.SUBMIT_SM_RESP


@dataclass(frozen=True, repr=False)
class DeliverSmResp(_MessageIdResp):
    command_id = CommandId.DELIVER_SM_RESP


@dataclass(frozen=True, repr=False)
class DataSmResp(_MessageIdResp):
    command_id = CommandId.DATA_SM_RESP


@dataclass(frozen=True, repr=False)
class DataSm(Pdu):
    command_id = CommandId.DATA_SM
    BODY: ClassVar[tuple] = (
        (CSTR, "service_type", 6, S.ESME_RINVSERTYP),
        (U8, "source_addr_ton"),
        (U8, "source_addr_npi"),
        (CSTR, "source_addr", 65, S.ESME_RINVSRCADR),
        (U8, "dest_addr_ton"),
        (U8, "dest_addr_npi"),
        (CSTR, "destination_addr", 65, S.ESME_RINVDSTADR),
        (U8, "esm_class"),
        (U8, "registered_delivery"),
        (U8, "data_coding"),
    )
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0


@dataclass(frozen=True, repr=False)
class SubmitMulti(Pdu):
    command_id = CommandId.SUBMIT_MULTI
    BODY: ClassVar[tuple] = (
        (CSTR, "service_type", 6, S.ESME_RINVSERTYP),
        (U8, "source_addr_ton"),
        (U8, "source_addr_npi"),
        (CSTR, "source_addr", 21, S.ESME_RINVSRCADR),
        (DESTS, "dest_addresses"),
    ) + _SM_BODY[7:]
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addresses: tuple = ()  # of SmeAddress | DistributionList
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, repr=False)
class SubmitMultiResp(Pdu):
    command_id = CommandId.SUBMIT_MULTI_RESP
    BODY: ClassVar[tuple] = _MESSAGE_ID + ((UNSUCCESS, "unsuccess_smes"),)
    message_id: str = ""
    unsuccess_smes: tuple = ()  # of UnsuccessSme


# --- ancillary operations -----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class QuerySm(Pdu):
    command_id = CommandId.QUERY_SM
    BODY: ClassVar[tuple] = _MESSAGE_ID + _SM_BODY[1:4]
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@dataclass(frozen=True, repr=False)
class QuerySmResp(Pdu):
    command_id = CommandId.QUERY_SM_RESP
    BODY: ClassVar[tuple] = _MESSAGE_ID + (
        (TIME, "final_date", S.ESME_RINVPARLEN),
        (U8, "message_state"),
        (U8, "error_code"),
    )
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@dataclass(frozen=True, repr=False)
class CancelSm(Pdu):
    command_id = CommandId.CANCEL_SM
    BODY: ClassVar[tuple] = _SM_BODY[:1] + _MESSAGE_ID + _SM_BODY[1:7]
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(frozen=True, repr=False)
class CancelSmResp(Pdu):
    command_id = CommandId.CANCEL_SM_RESP


@dataclass(frozen=True, repr=False)
class ReplaceSm(Pdu):
    command_id = CommandId.REPLACE_SM
    BODY: ClassVar[tuple] = (
        _MESSAGE_ID
        + _SM_BODY[1:4]
        + _SM_BODY[10:13]
        + ((U8, "sm_default_msg_id"), (SM, "short_message"))
    )
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(frozen=True, repr=False)
class ReplaceSmResp(Pdu):
    command_id = CommandId.REPLACE_SM_RESP


@dataclass(frozen=True, repr=False)
class AlertNotification(Pdu):
    command_id = CommandId.ALERT_NOTIFICATION
    BODY: ClassVar[tuple] = (
        (U8, "source_addr_ton"),
        (U8, "source_addr_npi"),
        (CSTR, "source_addr", 65, S.ESME_RINVSRCADR),
        (U8, "esme_addr_ton"),
        (U8, "esme_addr_npi"),
        (CSTR, "esme_addr", 65, S.ESME_RINVPARLEN),
    )
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""


ALL_PDUS: tuple[type[Pdu], ...] = (
    GenericNack,
    BindReceiver,
    BindReceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    DeliverSm,
    DeliverSmResp,
    Unbind,
    UnbindResp,
    ReplaceSm,
    ReplaceSmResp,
    CancelSm,
    CancelSmResp,
    BindTransceiver,
    BindTransceiverResp,
    Outbind,
    EnquireLink,
    EnquireLinkResp,
    SubmitMulti,
    SubmitMultiResp,
    AlertNotification,
    DataSm,
    DataSmResp,
)

PDU_CLASS: dict[int, type[Pdu]] = {cls.command_id: cls for cls in ALL_PDUS}

#: request command_id -> response class. generic_nack answers anything; outbind and
#: alert_notification have no response.
RESPONSE_CLASS: dict[int, type[Pdu]] = {
    cls.command_id & 0x7FFFFFFF: cls
    for cls in ALL_PDUS
    if cls.command_id & 0x80000000 and cls is not GenericNack
}


def _fast_init(cls: type[Pdu]) -> None:
    """Give ``cls`` an ``__init__`` with the dataclass's own signature that fills the frozen
    instance's ``__dict__`` in one step (see the module docstring): the generated frozen
    ``__init__`` pays an ``object.__setattr__`` per field, 3 µs for a submit_sm against 0.8."""
    names = [f.name for f in fields(cls)]
    defaults = {f"_d_{f.name}": f.default for f in fields(cls)}
    if MISSING in defaults.values():  # pragma: no cover - every PDU field has a default
        raise TypeError(f"{cls.__name__}: a field without a default")
    source = (
        f"def __init__(self, {', '.join(f'{n}=_d_{n}' for n in names)}):\n"
        f"    _setattr(self, '__dict__', {{{', '.join(f'{n!r}: {n}' for n in names)}}})"
    )
    namespace = {"_setattr": object.__setattr__, **defaults}
    exec(source, namespace)  # noqa: S102 - source built from the dataclass's own fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init


for _cls in ALL_PDUS:
    _fast_init(_cls)


def _check_layout() -> None:
    """The codec builds PDUs positionally, so each class's fields must follow its BODY."""
    for cls in ALL_PDUS:
        declared = [f.name for f in fields(cls)][3:]
        wire = [spec[1] for spec in cls.BODY]
        assert declared == wire, (cls.__name__, declared, wire)


_check_layout()
