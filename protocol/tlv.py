"""Optional parameters (TLVs): the spec's table of tags, their types and allowed lengths.

Known tags decode to typed values (``int`` for integers, ``str`` for C-octet strings,
``bytes`` for octet strings); unknown or vendor tags stay ``bytes`` exactly as received, so a
PDU we relay keeps them byte for byte. Lengths outside the spec's range are the peer's error
(ESME_RINVPARLEN).
"""

from __future__ import annotations

from struct import Struct
from typing import Union

from .constants import CommandStatus, Tag
from .errors import DecodeError, LocalProtocolError

TlvValue = Union[int, str, bytes]

INT = "int"  # unsigned big-endian integer of a fixed size
CSTR = "cstr"  # C-octet string: text followed by NUL, length counts the NUL
OCTETS = "octets"  # raw octets

# tag -> (kind, min_length, max_length); for INT min == max == size in octets.
SPEC: dict[int, tuple[str, int, int]] = {
    Tag.DEST_ADDR_SUBUNIT: (INT, 1, 1),
    Tag.DEST_NETWORK_TYPE: (INT, 1, 1),
    Tag.DEST_BEARER_TYPE: (INT, 1, 1),
    Tag.DEST_TELEMATICS_ID: (INT, 2, 2),
    Tag.SOURCE_ADDR_SUBUNIT: (INT, 1, 1),
    Tag.SOURCE_NETWORK_TYPE: (INT, 1, 1),
    Tag.SOURCE_BEARER_TYPE: (INT, 1, 1),
    Tag.SOURCE_TELEMATICS_ID: (INT, 1, 1),
    Tag.QOS_TIME_TO_LIVE: (INT, 4, 4),
    Tag.PAYLOAD_TYPE: (INT, 1, 1),
    Tag.ADDITIONAL_STATUS_INFO_TEXT: (CSTR, 1, 256),
    Tag.RECEIPTED_MESSAGE_ID: (CSTR, 1, 65),
    Tag.MS_MSG_WAIT_FACILITIES: (INT, 1, 1),
    Tag.PRIVACY_INDICATOR: (INT, 1, 1),
    Tag.SOURCE_SUBADDRESS: (OCTETS, 2, 23),
    Tag.DEST_SUBADDRESS: (OCTETS, 2, 23),
    Tag.USER_MESSAGE_REFERENCE: (INT, 2, 2),
    Tag.USER_RESPONSE_CODE: (INT, 1, 1),
    Tag.SOURCE_PORT: (INT, 2, 2),
    Tag.DESTINATION_PORT: (INT, 2, 2),
    Tag.SAR_MSG_REF_NUM: (INT, 2, 2),
    Tag.LANGUAGE_INDICATOR: (INT, 1, 1),
    Tag.SAR_TOTAL_SEGMENTS: (INT, 1, 1),
    Tag.SAR_SEGMENT_SEQNUM: (INT, 1, 1),
    Tag.SC_INTERFACE_VERSION: (INT, 1, 1),
    Tag.CALLBACK_NUM_PRES_IND: (INT, 1, 1),
    Tag.CALLBACK_NUM_ATAG: (OCTETS, 0, 65),
    Tag.NUMBER_OF_MESSAGES: (INT, 1, 1),
    Tag.CALLBACK_NUM: (OCTETS, 4, 19),
    Tag.DPF_RESULT: (INT, 1, 1),
    Tag.SET_DPF: (INT, 1, 1),
    Tag.MS_AVAILABILITY_STATUS: (INT, 1, 1),
    Tag.NETWORK_ERROR_CODE: (OCTETS, 3, 3),
    Tag.MESSAGE_PAYLOAD: (OCTETS, 0, 0xFFFF),
    Tag.DELIVERY_FAILURE_REASON: (INT, 1, 1),
    Tag.MORE_MESSAGES_TO_SEND: (INT, 1, 1),
    Tag.MESSAGE_STATE: (INT, 1, 1),
    Tag.USSD_SERVICE_OP: (INT, 1, 1),
    Tag.DISPLAY_TIME: (INT, 1, 1),
    Tag.SMS_SIGNAL: (INT, 2, 2),
    Tag.MS_VALIDITY: (INT, 1, 1),
    Tag.ALERT_ON_MESSAGE_DELIVERY: (OCTETS, 0, 0),
    Tag.ITS_REPLY_TYPE: (INT, 1, 1),
    Tag.ITS_SESSION_INFO: (OCTETS, 2, 2),
}

_HEAD = Struct(">HH")
_unpack_head = _HEAD.unpack_from
_pack_head = _HEAD.pack


def decode_tlvs(buf: bytes, off: int, end: int, command_id: int, seq: int) -> tuple:
    """Decode the optional part ``buf[off:end]`` into ``((tag, value), ...)`` in wire order."""
    out = []
    while off < end:
        if off + 4 > end:
            raise DecodeError(
                "truncated TLV header", CommandStatus.ESME_RINVOPTPARSTREAM, command_id, seq
            )
        tag, length = _unpack_head(buf, off)
        off += 4
        stop = off + length
        if stop > end:
            raise DecodeError(
                f"TLV 0x{tag:04X} length {length} runs past the PDU",
                CommandStatus.ESME_RINVOPTPARSTREAM,
                command_id,
                seq,
            )
        spec = SPEC.get(tag)
        if spec is None:
            value: TlvValue = buf[off:stop]
        else:
            kind, lo, hi = spec
            if length < lo or length > hi:
                raise DecodeError(
                    f"TLV 0x{tag:04X} has length {length}, expected {lo}..{hi}",
                    CommandStatus.ESME_RINVPARLEN,
                    command_id,
                    seq,
                )
            if kind is INT:
                value = int.from_bytes(buf[off:stop], "big")
            elif kind is CSTR:
                if buf[stop - 1] != 0:
                    raise DecodeError(
                        f"TLV 0x{tag:04X} string is not NUL-terminated",
                        CommandStatus.ESME_RINVOPTPARAMVAL,
                        command_id,
                        seq,
                    )
                # The string ends at its first NUL: some SMSCs pad receipted_message_id
                # with NULs, and "42\0\0" must correlate as "42".
                value = buf[off : buf.index(0, off, stop)].decode("latin-1")
            else:
                value = buf[off:stop]
        out.append((tag, value))
        off = stop
    return tuple(out)


def encode_tlvs(tlvs) -> bytes:
    """Encode ``((tag, value), ...)``; raises LocalProtocolError on a value the spec forbids."""
    parts = []
    for tag, value in tlvs:
        spec = SPEC.get(tag)
        if spec is None:
            if isinstance(value, int):  # bytes(3) would silently send three NULs
                raise LocalProtocolError(f"TLV 0x{tag:04X} needs bytes, not {value!r}")
            raw = bytes(value)
            if len(raw) > 0xFFFF or not 0 <= tag <= 0xFFFF:
                raise LocalProtocolError(f"TLV 0x{tag:X} of {len(raw)} octets does not fit a TLV")
        else:
            kind, lo, hi = spec
            if kind is INT:
                try:
                    raw = int(value).to_bytes(lo, "big")
                except OverflowError:
                    raise LocalProtocolError(f"TLV 0x{tag:04X} value {value} does not fit") from None
            elif kind is CSTR:
                raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
                if 0 in raw:
                    raise LocalProtocolError(f"TLV 0x{tag:04X} string contains a NUL")
                raw += b"\0"
            elif isinstance(value, int):  # bytes(3) would silently send three NULs
                raise LocalProtocolError(f"TLV 0x{tag:04X} needs bytes, not {value!r}")
            else:
                raw = bytes(value)
            if not lo <= len(raw) <= hi:
                raise LocalProtocolError(f"TLV 0x{tag:04X} length {len(raw)} outside {lo}..{hi}")
        parts.append(_pack_head(tag, len(raw)))
        parts.append(raw)
    return b"".join(parts)
