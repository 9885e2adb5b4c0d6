"""Encode and decode whole PDUs: ``decode(frame) -> Pdu`` and ``encode(pdu) -> bytes``.

Each PDU class's ``BODY`` table is compiled once, at import, into a straight-line Python
function (like ``collections.namedtuple`` does). A generic interpreter loop over the table
costs a branch and a tuple unpack per field; the compiled form is what makes decoding a
submit_sm take a few microseconds.

Decoding never reads past the frame: every C-octet string is searched for its NUL only within
its maximum size and the frame's end. Errors carry the command_status to answer (see
``errors.DecodeError``); a string longer than its limit gets the field's own status, a body
that ends early gets ESME_RINVCMDLEN.
"""

from __future__ import annotations

from struct import Struct, error as StructError

from . import pdu as P
from .constants import HEADER_LEN, MAX_SEQUENCE, CommandStatus
from .errors import DecodeError, LocalProtocolError
from .tlv import decode_tlvs, encode_tlvs

_HEADER = Struct(">IIII")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_U32 = Struct(">I")

_RINVCMDLEN = CommandStatus.ESME_RINVCMDLEN
MAX_DESTS = 254  # submit_multi: "A maximum of 254 destination addresses are allowed" (§4.5.1)


def _short(cid: int, seq: int, what: str) -> DecodeError:
    return DecodeError(f"PDU body ends inside {what}", _RINVCMDLEN, cid, seq)


def _too_long(cid: int, seq: int, what: str, limit: int, status: int) -> DecodeError:
    return DecodeError(f"{what} is longer than {limit - 1} octets or lacks its NUL", status, cid, seq)


def _bad_time(cid: int, seq: int, what: str, status: int) -> DecodeError:
    return DecodeError(f"{what} must be empty or 16 characters", status, cid, seq)


def _decode_dests(buf: bytes, off: int, end: int, cid: int, seq: int):
    """submit_multi: number_of_dests, then dest_flag + (SME address | distribution list)."""
    if off >= end:
        raise _short(cid, seq, "number_of_dests")
    count = buf[off]
    off += 1
    if count == 0 or count > MAX_DESTS:
        raise DecodeError(
            f"submit_multi with {count} destinations (1..{MAX_DESTS})", CommandStatus.ESME_RINVNUMDESTS, cid, seq
        )
    dests = []
    for _ in range(count):
        if off >= end:
            raise _short(cid, seq, "dest_address")
        flag = buf[off]
        off += 1
        if flag == 1:
            if off + 2 > end:
                raise _short(cid, seq, "dest_address")
            ton, npi = buf[off], buf[off + 1]
            off += 2
            addr, off = _cstr(buf, off, end, 21, CommandStatus.ESME_RINVDSTADR, cid, seq, "dest_address")
            dests.append(P.SmeAddress(ton, npi, addr))
        elif flag == 2:
            name, off = _cstr(buf, off, end, 21, CommandStatus.ESME_RINVDLNAME, cid, seq, "dl_name")
            dests.append(P.DistributionList(name))
        else:
            raise DecodeError(f"dest_flag {flag} is neither 1 nor 2", CommandStatus.ESME_RINVDESTFLAG, cid, seq)
    return tuple(dests), off


def _decode_unsuccess(buf: bytes, off: int, end: int, cid: int, seq: int):
    """submit_multi_resp: no_unsuccess, then ton, npi, address, error_status_code each."""
    if off >= end:
        return (), off  # some SMSCs omit it when every destination succeeded
    count = buf[off]
    off += 1
    smes = []
    for _ in range(count):
        if off + 2 > end:
            raise _short(cid, seq, "unsuccess_sme")
        ton, npi = buf[off], buf[off + 1]
        off += 2
        addr, off = _cstr(buf, off, end, 21, CommandStatus.ESME_RINVDSTADR, cid, seq, "unsuccess_sme")
        if off + 4 > end:
            raise _short(cid, seq, "error_status_code")
        smes.append(P.UnsuccessSme(ton, npi, addr, _U32.unpack_from(buf, off)[0]))
        off += 4
    return tuple(smes), off


def _cstr(buf, off, end, limit, status, cid, seq, what):
    stop = off + limit if off + limit < end else end
    nul = buf.find(0, off, stop)
    if nul < 0:
        if stop == end and off + limit > end:
            raise _short(cid, seq, what)
        raise _too_long(cid, seq, what, limit, status)
    return buf[off:nul].decode("latin-1"), nul + 1


def _encode_dests(dests) -> bytes:
    if not 1 <= len(dests) <= MAX_DESTS:
        raise LocalProtocolError(f"submit_multi needs 1..{MAX_DESTS} destinations, not {len(dests)}")
    out = [bytes((len(dests),))]
    for d in dests:
        if isinstance(d, P.DistributionList):
            out.append(b"\x02" + _enc_cstr(d.name, 21, "dl_name"))
        else:
            out.append(bytes((1, d.ton, d.npi)) + _enc_cstr(d.address, 21, "dest_address"))
    return b"".join(out)


def _encode_unsuccess(smes) -> bytes:
    out = [bytes((len(smes),))]
    for s in smes:
        out.append(bytes((s.ton, s.npi)) + _enc_cstr(s.address, 21, "address") + _U32.pack(s.error_status_code))
    return b"".join(out)


def _enc_cstr(value: str, limit: int, what: str) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) >= limit or 0 in raw:
        # Never the value in the message: it is an address, and errors reach the logs.
        raise LocalProtocolError(f"{what} does not fit in {limit} octets with its NUL")
    return raw + b"\0"


# --- the compiler -------------------------------------------------------------------------


def _compile_decoder(cls: type[P.Pdu]):
    """Build ``decode_body(buf, off, end, status, seq) -> cls`` for one PDU class."""
    cid = int(cls.command_id)
    lines = ["def decode_body(buf, off, end, status, seq):"]
    is_resp = bool(cid & 0x80000000)
    if is_resp and cls.BODY:
        # An error response may come without a body (§3.3: "the body ... is not returned").
        lines.append("    if off == end: return cls(seq, status)")
    names = []
    run: list[str] = []  # consecutive U8 fields: one bounds check, one slice unpacked

    def flush() -> None:
        if not run:
            return
        k = len(run)
        lines.append(f"    if off + {k} > end: raise _short({cid}, seq, {run[0]!r})")
        if k == 1:
            lines.append(f"    {run[0]} = buf[off]")
        else:
            lines.append(f"    {', '.join(run)} = buf[off:off + {k}]")
        lines.append(f"    off += {k}")
        run.clear()

    for spec in cls.BODY:
        kind, name = spec[0], spec[1]
        names.append(name)
        if kind != P.U8:
            flush()
        if kind == P.CSTR or kind == P.TIME:
            limit, st = (spec[2], int(spec[3])) if kind == P.CSTR else (17, int(spec[2]))
            # Empty strings (service_type, times, …) are the common case: one octet test.
            lines += [
                "    if off < end and not buf[off]:",
                f"        {name} = ''",
                "        off += 1",
                "    else:",
                f"        stop = off + {limit} if off + {limit} < end else end",
                "        nul = buf.find(0, off, stop)",
                "        if nul < 0:",
                f"            if stop == end and off + {limit} > end: raise _short({cid}, seq, {name!r})",
                f"            raise _too_long({cid}, seq, {name!r}, {limit}, {st})",
            ]
            if kind == P.TIME:
                lines.append(f"        if nul - off != 16: raise _bad_time({cid}, seq, {name!r}, {st})")
            lines += [
                f"        {name} = buf[off:nul].decode('latin-1')",
                "        off = nul + 1",
            ]
        elif kind == P.U8:
            run.append(name)
            continue
        elif kind == P.U32:
            lines += [
                f"    if off + 4 > end: raise _short({cid}, seq, {name!r})",
                f"    {name} = _U32.unpack_from(buf, off)[0]",
                "    off += 4",
            ]
        elif kind == P.SM:
            lines += [
                f"    if off >= end: raise _short({cid}, seq, 'sm_length')",
                "    n = buf[off]",
                f"    if n > {P.MAX_SHORT_MESSAGE}: raise DecodeError('sm_length ' + str(n) + ' is over 254', {int(CommandStatus.ESME_RINVMSGLEN)}, {cid}, seq)",
                "    off += 1",
                f"    if off + n > end: raise _short({cid}, seq, 'short_message')",
                f"    {name} = buf[off:off + n]",
                "    off += n",
            ]
        elif kind == P.DESTS:
            lines.append(f"    {name}, off = _decode_dests(buf, off, end, {cid}, seq)")
        elif kind == P.UNSUCCESS:
            lines.append(f"    {name}, off = _decode_unsuccess(buf, off, end, {cid}, seq)")
        else:  # pragma: no cover - a typo in pdu.py
            raise AssertionError(kind)
    flush()
    lines.append(f"    tlvs = decode_tlvs(buf, off, end, {cid}, seq) if off < end else ()")
    # Fill the frozen instance's __dict__ in one step (see pdu.py's docstring).
    fields = "".join(f", {n!r}: {n}" for n in names)
    lines.append("    o = _new(cls)")
    lines.append(f"    _setattr(o, '__dict__', {{'sequence_number': seq, 'command_status': status, 'tlvs': tlvs{fields}}})")
    lines.append("    return o")
    namespace = {
        "cls": cls,
        "_new": object.__new__,
        "_setattr": object.__setattr__,
        "_short": _short,
        "_too_long": _too_long,
        "_bad_time": _bad_time,
        "_U32": _U32,
        "DecodeError": DecodeError,
        "decode_tlvs": decode_tlvs,
        "_decode_dests": _decode_dests,
        "_decode_unsuccess": _decode_unsuccess,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from our own tables
    return namespace["decode_body"]


def _compile_encoder(cls: type[P.Pdu]):
    """Build ``encode_body(pdu) -> bytes`` (mandatory part only) for one PDU class."""
    lines = ["def encode_body(p):"]
    parts = []
    run: list[str] = []  # consecutive U8 fields are packed with one bytes() call

    def flush() -> None:
        if run:
            parts.append(f"bytes(({', '.join(run)},))")
            run.clear()

    for spec in cls.BODY:
        kind, name = spec[0], spec[1]
        if kind == P.U8:
            run.append(f"p.{name}")
            continue
        flush()
        if kind in (P.CSTR, P.TIME):
            limit = spec[2] if kind == P.CSTR else 17
            var = f"_{name}"
            lines += [
                f"    {var} = p.{name}.encode('latin-1')",
                f"    if len({var}) >= {limit} or 0 in {var}: raise LocalProtocolError({name!r} + ' does not fit in {limit} octets with its NUL')",
            ]
            if kind == P.TIME:
                lines.append(
                    f"    if {var} and len({var}) != 16: raise LocalProtocolError({name!r} + ' must be empty or 16 characters')"
                )
            parts.append(var)
            parts.append("b'\\0'")
        elif kind == P.U32:
            parts.append(f"_U32.pack(p.{name})")
        elif kind == P.SM:
            lines += [
                f"    sm = p.{name}",
                f"    if len(sm) > {P.MAX_SHORT_MESSAGE}: raise LocalProtocolError('short_message is over 254 octets; use message_payload')",
            ]
            parts.append("bytes((len(sm),))")
            parts.append("sm")
        elif kind == P.DESTS:
            parts.append(f"_encode_dests(p.{name})")
        elif kind == P.UNSUCCESS:
            parts.append(f"_encode_unsuccess(p.{name})")
    flush()
    if parts:
        lines.append(f"    return b''.join(({', '.join(parts)},))")
    else:
        lines.append("    return b''")
    namespace = {
        "LocalProtocolError": LocalProtocolError,
        "_U32": _U32,
        "_encode_dests": _encode_dests,
        "_encode_unsuccess": _encode_unsuccess,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from our own tables
    return namespace["encode_body"]


_DECODERS = {cid: _compile_decoder(cls) for cid, cls in P.PDU_CLASS.items()}
_ENCODERS = {cls: _compile_encoder(cls) for cls in P.ALL_PDUS}


# --- public API ---------------------------------------------------------------------------


def decode(frame: bytes) -> P.Pdu:
    """Decode one whole PDU (as returned by the framer). Raises ``DecodeError``."""
    size = len(frame)
    if size < HEADER_LEN:
        raise DecodeError(f"PDU of {size} octets is shorter than its header", _RINVCMDLEN)
    length, cid, status, seq = _unpack_header(frame)
    if length != size:
        raise DecodeError(f"command_length {length} but the frame has {size} octets", _RINVCMDLEN, cid, seq)
    decoder = _DECODERS.get(cid)
    if decoder is None:
        raise DecodeError(f"unknown command_id 0x{cid:08X}", CommandStatus.ESME_RINVCMDID, cid, seq)
    return decoder(frame, HEADER_LEN, size, status, seq)


#: Where ``encode`` keeps a PDU's body (everything after the header) in the instance's
#: ``__dict__``, beside its fields. PDUs are frozen, so the body never goes stale, and most
#: are encoded twice: a part is encoded to be stored, then again to be sent upstream; the
#: partner's receipt is encoded in the writer process, then again to be sent (the memo
#: travels with the pickled PDU). Not a field: equality, repr and ``replace`` ignore it.
_BODY = "_body"


def encode(pdu: P.Pdu, sequence_number: int | None = None) -> bytes:
    """Encode a PDU; ``sequence_number`` overrides the one in ``pdu`` (cheaper than replace()).

    Raises ``LocalProtocolError`` if a field breaks the spec's limits: we never put an
    invalid PDU on the wire.
    """
    seq = pdu.sequence_number if sequence_number is None else sequence_number
    if not 0 <= seq <= MAX_SEQUENCE:
        raise LocalProtocolError(f"sequence_number {seq} outside 0..0x7FFFFFFF")
    try:
        memo = pdu.__dict__
        body = memo.get(_BODY)
        if body is None:
            body = _ENCODERS[type(pdu)](pdu)
            if pdu.tlvs:
                body += encode_tlvs(pdu.tlvs)
            memo[_BODY] = body
        return _pack_header(HEADER_LEN + len(body), pdu.command_id, pdu.command_status, seq) + body
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError, StructError) as exc:
        # StructError: a command_status or error_status_code outside 0..2**32-1.
        raise LocalProtocolError(f"{type(pdu).__name__}: {exc}") from exc
