"""Long messages: counting SMS parts, splitting into parts, reading UDHs, reassembling.

One SMS carries 140 octets of user data. With a concatenation header (UDH) each part loses
its room: 6 octets for an 8-bit reference (IEI 0x00), 7 for a 16-bit one (IEI 0x08). In the
unit each alphabet counts in, that gives:

===========  ======  ===================  ====================
alphabet     single  part, 8-bit ref UDH  part, 16-bit ref UDH
===========  ======  ===================  ====================
GSM-7        160     153 septets          152 septets
8-bit        140     134 octets           133 octets
UCS2         70      67 UTF-16 units      66 UTF-16 units
===========  ======  ===================  ====================

GSM-7 parts never end between an escape (0x1B) and its code, so a part may hold one septet
less; UCS2 parts never end between the two halves of a surrogate pair (emoji). Counting and
splitting share one cutting routine, so the count billed and the parts sent always agree.

Payloads are what SMPP carries: GSM-7 unpacked (one septet per octet, the SMSC packs it),
UCS2 as UTF-16BE, other codings as their octets. IA5, Latin-1, Cyrillic and Hebrew count as
8-bit, like binary: SMPP gives no other rule, and it is what fits on the air.

Splitting methods:

* ``"udh8"`` (default) and ``"udh16"``: a UDH in front of each part's short_message (the caller
  sets esm_class UDHI for parts whose ``udh`` is not None).
* ``"sar"``: no UDH; ``Segment.sar`` is (sar_msg_ref_num, sar_total_segments,
  sar_segment_seqnum) for the TLVs, and the SMSC builds the UDH. Parts are sized for the UDH
  it will need: 8-bit reference sizes when the reference is below 256, else 16-bit ones.
  (``count_segments(method="sar")`` assumes a reference below 256.)
* ``"payload"``: one segment with the whole message for the message_payload TLV; the SMSC
  splits it (``count_segments`` then tells how many SMS that makes, as for "udh8").

At most 255 parts (the total is one octet in the UDH and in sar_total_segments); longer
messages are refused, never truncated.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

from . import gsm7
from .constants import CommandStatus, DataCoding
from .errors import LocalProtocolError, RemoteProtocolError
from .text import canonical_coding, choose_encoding, encode_text

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08
MAX_PARTS = 255
MAX_PAYLOAD = 0xFFFF  # message_payload TLV length field

_METHODS = ("udh8", "udh16", "sar", "payload")
#: Read once for ``sms_capacity``, which every submit asks: an Enum member looked up on its
#: class costs ~1,000 instructions a time.
_DEFAULT = DataCoding.DEFAULT


@dataclass(frozen=True, slots=True)
class Concat:
    """A part's place in a concatenated message: from a UDH or from the SAR TLVs."""

    reference: int
    total: int
    seqnum: int

    def __post_init__(self) -> None:
        if not (0 <= self.reference <= 0xFFFF and 1 <= self.seqnum <= self.total <= MAX_PARTS):
            raise ValueError(f"invalid concatenation {self}")

    @classmethod
    def from_sar(cls, reference: int, total: int, seqnum: int) -> Concat:
        """From sar_msg_ref_num / sar_total_segments / sar_segment_seqnum, as received.
        Inconsistent values (total 0, seqnum 0 or beyond total) raise RemoteProtocolError
        with ESME_RINVOPTPARAMVAL: the TLVs are present but their values are wrong."""
        try:
            return cls(reference, total, seqnum)
        except ValueError:
            raise RemoteProtocolError(
                f"inconsistent SAR: ref {reference}, segment {seqnum} of {total}",
                CommandStatus.ESME_RINVOPTPARAMVAL,
            ) from None


@dataclass(frozen=True, slots=True)
class Segment:
    """One part ready for a submit_sm/deliver_sm (or the whole message, for "payload")."""

    payload: bytes
    udh: bytes | None
    sar: tuple[int, int, int] | None  # (ref, total, seqnum)
    data_coding: int

    @property
    def short_message(self) -> bytes:
        """What goes in short_message (or message_payload): UDH, if any, then payload."""
        return self.udh + self.payload if self.udh is not None else self.payload


class ParsedUdh(NamedTuple):
    ies: list[tuple[int, bytes]]  # (IEI, data) in order; IEs may repeat
    concat: Concat | None
    body: bytes


# --- counting and splitting ---------------------------------------------------------------


def _udh_length(method: str, reference: int | None = None) -> int:
    if method == "udh16" or (method == "sar" and reference is not None and reference > 0xFF):
        return 7
    return 6


def sms_capacity(dc: DataCoding) -> int:
    """What one SMS without a UDH holds, in payload octets (GSM-7 unpacked: septets)."""
    return 160 if dc is _DEFAULT else 140


def _capacities(dc: DataCoding, udh_length: int) -> tuple[int, int]:
    """(single-SMS capacity, per-part capacity) in payload octets."""
    single = sms_capacity(dc)
    if dc is DataCoding.DEFAULT:
        return single, single - (udh_length * 8 + 6) // 7  # UDH is padded to a septet boundary
    if dc is DataCoding.UCS2:
        return single, (single - udh_length) // 2 * 2
    return single, single - udh_length


def _cuts(data: bytes, dc: DataCoding, capacity: int) -> list[int]:
    """End offsets of each part when ``data`` is cut into parts of at most ``capacity``."""
    ends: list[int] = []
    start, length = 0, len(data)
    while True:
        end = start + capacity
        if end >= length:
            ends.append(length)
            return ends
        if dc is DataCoding.DEFAULT:
            esc = data.find(gsm7.ESCAPE, start, end)
            while esc >= 0:  # walk the escape pairs; 0x1B 0x1B is a pair too
                if esc == end - 1:
                    end -= 1
                    break
                esc = data.find(gsm7.ESCAPE, esc + 2, end)
        elif dc is DataCoding.UCS2 and 0xD8 <= data[end - 2] <= 0xDB:
            end -= 2  # high surrogate: keep the pair together
        ends.append(end)
        start = end


def _encode(message: str | bytes, data_coding: int | None) -> tuple[bytes, int, DataCoding]:
    if data_coding is None:
        data_coding = DataCoding.BINARY if isinstance(message, bytes) else choose_encoding(message)
    dc = canonical_coding(data_coding)
    if isinstance(message, str):
        data = encode_text(message, data_coding)
    else:
        data = bytes(message)
        if dc is DataCoding.UCS2 and len(data) % 2:
            raise LocalProtocolError(f"UCS2 payload of odd length {len(data)}")
    return data, data_coding, dc


def count_segments(
    message: str | bytes, data_coding: int | None = None, *, method: str = "udh8"
) -> int:
    """How many SMS ``message`` takes. ``message`` is text, or octets already encoded for
    ``data_coding`` (GSM-7 unpacked, UTF-16BE, binary). ``data_coding`` None means what
    ``split`` would pick: ``choose_encoding`` for text, binary for bytes.

    Exact, may exceed 255 (``split`` then refuses). An empty message is one SMS.
    """
    if method not in _METHODS:
        raise LocalProtocolError(f"unknown split method {method!r}")
    data, _, dc = _encode(message, data_coding)
    single, per_part = _capacities(dc, _udh_length(method))
    if len(data) <= single:
        return 1
    return len(_cuts(data, dc, per_part))


def split(
    message: str | bytes,
    data_coding: int | None = None,
    *,
    method: str = "udh8",
    reference: int | None = None,
) -> list[Segment]:
    """Cut ``message`` into ready-to-send segments (see the module docstring for methods).

    ``reference`` (0-255 for "udh8", 0-65535 for "udh16"/"sar") is required when the message
    needs more than one part: the caller owns the counter, so that references to one handset
    do not repeat while parts are in flight. A message that fits in one SMS yields one
    segment with neither UDH nor SAR. Misuse (bad method or reference, too many parts, text
    the coding cannot hold) raises LocalProtocolError.
    """
    if method not in _METHODS:
        raise LocalProtocolError(f"unknown split method {method!r}")
    data, data_coding, dc = _encode(message, data_coding)
    single, per_part = _capacities(dc, _udh_length(method, reference))
    if len(data) <= single:
        return [Segment(data, None, None, data_coding)]
    if method == "payload":
        if len(data) > MAX_PAYLOAD:
            raise LocalProtocolError(f"message of {len(data)} octets exceeds message_payload")
        return [Segment(data, None, None, data_coding)]
    limit = 0xFF if method == "udh8" else 0xFFFF
    if reference is None or not 0 <= reference <= limit:
        raise LocalProtocolError(f"{method} needs a reference in 0..{limit}, not {reference}")
    ends = _cuts(data, dc, per_part)
    total = len(ends)
    if total > MAX_PARTS:
        raise LocalProtocolError(f"message needs {total} parts; at most {MAX_PARTS} allowed")
    segments = []
    start = 0
    for seqnum, end in enumerate(ends, 1):
        payload = data[start:end]
        start = end
        if method == "sar":
            segments.append(Segment(payload, None, (reference, total, seqnum), data_coding))
        elif method == "udh8":
            udh = bytes((5, IEI_CONCAT_8, 3, reference, total, seqnum))
            segments.append(Segment(payload, udh, None, data_coding))
        else:
            udh = bytes((6, IEI_CONCAT_16, 4, reference >> 8, reference & 0xFF, total, seqnum))
            segments.append(Segment(payload, udh, None, data_coding))
    return segments


# --- reading ------------------------------------------------------------------------------


def parse_udh(short_message: bytes, *, strict: bool = True) -> ParsedUdh:
    """Split a short_message whose esm_class has UDHI set into its IEs and body.

    Structural damage (empty message, UDH length beyond the message, an IE overrunning the
    UDH, a concatenation IE of the wrong length) raises RemoteProtocolError with
    ESME_RINVESMCLASS: the esm_class promises a UDH that is not there.

    A concatenation IE with total 0, seqnum 0 or seqnum > total also raises (strict, the
    default: tell the sender) or, with ``strict=False``, is ignored as TS 23.040 §9.2.3.24.1
    prescribes for a receiving entity (concat is None; the IE stays in ``ies``). If several
    concatenation IEs are present, the last one wins (TS 23.040 §9.2.3.24).
    """

    def invalid(reason: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"invalid UDH: {reason}", CommandStatus.ESME_RINVESMCLASS)

    if not short_message:
        raise invalid("empty short_message")
    end = 1 + short_message[0]
    if end > len(short_message):
        raise invalid(f"UDH length {end - 1} exceeds the {len(short_message) - 1} octets left")
    ies: list[tuple[int, bytes]] = []
    concat = None
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise invalid(f"IE header at offset {pos} overruns the UDH")
        iei, length = short_message[pos], short_message[pos + 1]
        data = bytes(short_message[pos + 2 : pos + 2 + length])
        if pos + 2 + length > end:
            raise invalid(f"IE 0x{iei:02X} at offset {pos} overruns the UDH")
        ies.append((iei, data))
        pos += 2 + length
        if iei == IEI_CONCAT_8 or iei == IEI_CONCAT_16:
            if len(data) != (3 if iei == IEI_CONCAT_8 else 4):
                raise invalid(f"concatenation IE 0x{iei:02X} of length {len(data)}")
            ref = data[0] if iei == IEI_CONCAT_8 else data[0] << 8 | data[1]
            total, seqnum = data[-2], data[-1]
            if 1 <= seqnum <= total:
                concat = Concat(ref, total, seqnum)
            elif strict:
                raise invalid(f"concatenation part {seqnum} of {total}")
    return ParsedUdh(ies, concat, bytes(short_message[end:]))


@dataclass(slots=True)
class _Pending:
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Collects the parts of concatenated messages until each is whole. Pure: the caller
    passes the clock and decides what to do with sets that never complete.

    ``key`` is the caller's and must tell messages apart, e.g. (source, destination,
    reference). Parts may come in any order; a repeated seqnum keeps the first body. A part
    whose total disagrees with its set's means the reference was reused: the old set is
    given up (evicted) and a new one started.

    Memory is bounded: at most ``max_pending`` incomplete sets (each at most 255 parts);
    beyond that the oldest is evicted. Evicted and timed-out sets are handed back by
    ``expire`` so the caller can log them or deliver the parts alone.
    """

    def __init__(self, timeout: float = 60.0, max_pending: int = 10_000) -> None:
        if timeout <= 0 or max_pending < 1:
            raise ValueError("timeout and max_pending must be positive")
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[Hashable, _Pending] = {}  # insertion order = age order
        self._evicted: list[tuple[Hashable, dict[int, bytes]]] = []

    def __len__(self) -> int:
        """Incomplete sets held."""
        return len(self._pending)

    def add(self, key: Hashable, concat: Concat, body: bytes, now: float) -> bytes | None:
        """Store one part; return the whole payload (bodies joined in seqnum order) when this
        part completes its set, else None."""
        if concat.total == 1:
            return body
        pending = self._pending.get(key)
        if pending is not None and pending.total != concat.total:
            self._evicted.append((key, self._pending.pop(key).parts))
            pending = None
        if pending is None:
            if len(self._pending) >= self.max_pending:
                oldest = next(iter(self._pending))
                self._evicted.append((oldest, self._pending.pop(oldest).parts))
            pending = self._pending[key] = _Pending(concat.total, now)
        pending.parts.setdefault(concat.seqnum, body)
        if len(pending.parts) < pending.total:
            return None
        del self._pending[key]
        return b"".join(pending.parts[seqnum] for seqnum in range(1, pending.total + 1))

    def expire(self, now: float) -> list[tuple[Hashable, dict[int, bytes]]]:
        """Drop and return the sets evicted since the last call and those whose first part
        came ``timeout`` seconds or more before ``now``, as (key, {seqnum: body})."""
        dropped, self._evicted = self._evicted, []
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if now - pending.started < self.timeout:
                break
            del self._pending[key]
            dropped.append((key, pending.parts))
        return dropped
