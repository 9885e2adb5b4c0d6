"""Text <-> short_message octets for each SMPP data_coding (SMPP 3.4 §5.2.19).

What we support, and how:

====================  ===========================================================
data_coding           octets
====================  ===========================================================
0 (SMSC default)      GSM 03.38, unpacked, one septet per octet (``gsm7``)
1 (IA5)               ASCII
3 (Latin-1)           ISO-8859-1
6 (Cyrillic)          ISO-8859-5
7 (Latin/Hebrew)      ISO-8859-8
8 (UCS2)              UTF-16BE: surrogate pairs are decoded (handsets send emoji so)
2, 4 (octet unspec.)  binary: no text; ``is_binary`` says so, ``decode_text`` refuses
0xC0-0xDF             GSM message-waiting groups: GSM-7
0xE0-0xEF             message waiting, UCS2 (TS 23.038; SMPP calls it reserved)
0xF0-0xFF             GSM message class: bit 2 set -> binary, else GSM-7
anything else         ``UnsupportedDataCoding`` (JIS, pictogram, Kanji, KS C 5601 and
                      reserved values: we cannot interpret them, so we refuse them)
====================  ===========================================================

Errors, and why these statuses (SMPP 3.4 has no "bad text" status):

* ``UnsupportedDataCoding`` (remote): ``ESME_RINVOPTPARAMVAL``, the status the project settled
  on for a data_coding we cannot handle.
* ``TextDecodeError`` (remote, and a ValueError): octets that are not valid in their declared
  coding (odd-length UCS2, unpaired surrogate, octet >= 0x80 in GSM-7 or IA5):
  ``ESME_RINVMSGLEN``, since the message body is malformed. A caller decoding
  message_payload may re-raise it with ``ESME_RINVPARLEN``. With ``errors="replace"``
  invalid octets become U+FFFD instead and only odd UCS2 length still fails.
* ``TextEncodeError`` (local, and a ValueError): our own text does not fit the coding asked
  for; a bug on our side, never sent to a peer.
"""

from __future__ import annotations

from . import gsm7
from .constants import CommandStatus, DataCoding
from .errors import LocalProtocolError, RemoteProtocolError


class UnsupportedDataCoding(RemoteProtocolError):
    """A data_coding value we do not know how to read or write."""

    status = CommandStatus.ESME_RINVOPTPARAMVAL


class TextDecodeError(RemoteProtocolError, ValueError):
    """Octets that are not valid text in their declared data_coding."""

    status = CommandStatus.ESME_RINVMSGLEN


class TextEncodeError(LocalProtocolError, ValueError):
    """Text that the requested data_coding cannot represent."""


# Python codec per canonical textual coding; GSM-7 has its own module.
_CODECS = {
    DataCoding.IA5: "ascii",
    DataCoding.LATIN_1: "latin-1",
    DataCoding.CYRILLIC: "iso8859-5",
    DataCoding.HEBREW: "iso8859-8",
    DataCoding.UCS2: "utf-16-be",
}
_CANONICAL = {dc: dc for dc in (DataCoding.DEFAULT, DataCoding.BINARY, *_CODECS)}
_CANONICAL[DataCoding.BINARY_2] = DataCoding.BINARY
for _dc in range(0xC0, 0xE0):
    _CANONICAL[_dc] = DataCoding.DEFAULT
for _dc in range(0xE0, 0xF0):
    _CANONICAL[_dc] = DataCoding.UCS2
for _dc in range(0xF0, 0x100):
    _CANONICAL[_dc] = DataCoding.BINARY if _dc & 0x04 else DataCoding.DEFAULT
del _dc

#: Members read once: an Enum member looked up on its class (``DataCoding.DEFAULT``) goes
#: through ``EnumType.__getattr__``'s slow path, ~1,000 instructions, on every submit.
_DEFAULT, _BINARY, _UCS2 = DataCoding.DEFAULT, DataCoding.BINARY, DataCoding.UCS2


def canonical_coding(data_coding: int) -> DataCoding:
    """The alphabet a data_coding value means: DEFAULT (GSM-7), IA5, LATIN_1, CYRILLIC,
    HEBREW, UCS2 or BINARY. Folds the GSM message-class and message-waiting groups onto
    their alphabet. Raises ``UnsupportedDataCoding`` for anything else."""
    try:
        return _CANONICAL[data_coding]
    except KeyError:
        raise UnsupportedDataCoding(f"unsupported data_coding 0x{data_coding:02X}") from None


def is_binary(data_coding: int) -> bool:
    """True for 8-bit binary codings (2, 4, 0xF4-0xF7, 0xFC-0xFF): the body is not text."""
    return canonical_coding(data_coding) is _BINARY


def choose_encoding(text: str, *, allow_latin1: bool = False) -> DataCoding:
    """The cheapest data_coding that holds ``text``: GSM-7 (160 per SMS) if every character
    is in GSM 03.38, else UCS2 (70 per SMS), which holds anything.

    Latin-1 (140 per SMS) sits between the two but is opt-in: many handsets and some SMSCs
    mishandle data_coding 3 (shown as garbage or converted lossily), while UCS2 always works.
    """
    if gsm7.is_gsm7(text):
        return _DEFAULT
    if allow_latin1:
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            pass
        else:
            return DataCoding.LATIN_1
    return _UCS2


def encode_text(text: str, data_coding: int) -> bytes:
    """``text`` as short_message octets for ``data_coding`` (GSM-7 unpacked for 0).

    Raises ``TextEncodeError`` if the coding cannot hold the text (use ``choose_encoding``),
    ``UnsupportedDataCoding`` for unknown codings, and ``LocalProtocolError`` for binary ones.
    """
    dc = canonical_coding(data_coding)
    try:
        if dc is _DEFAULT:
            return gsm7.encode_unpacked(text)
        if dc is _BINARY:
            raise LocalProtocolError(f"data_coding 0x{data_coding:02X} is binary, not text")
        return text.encode(_CODECS[dc])
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise TextEncodeError(
            f"character {bad!r} (U+{ord(bad):04X}) at index {exc.start} does not fit"
            f" data_coding 0x{data_coding:02X}"
        ) from None
    except ValueError as exc:  # from gsm7, already naming the character
        raise TextEncodeError(str(exc)) from None


def decode_text(data: bytes, data_coding: int, errors: str = "strict") -> str:
    """short_message octets -> text, for the textual data_codings.

    ``errors`` is "strict" (raise ``TextDecodeError``) or "replace" (invalid octets become
    U+FFFD; odd-length UCS2 still raises, as the message is truncated or misframed). Raises
    ``UnsupportedDataCoding`` for codings we do not know, and ``LocalProtocolError`` for
    binary ones: check ``is_binary`` first, binary bodies are passed through as bytes.
    """
    dc = canonical_coding(data_coding)
    if dc is _BINARY:
        raise LocalProtocolError(f"data_coding 0x{data_coding:02X} is binary, not text")
    if dc is _UCS2 and len(data) % 2:
        raise TextDecodeError(f"UCS2 text of odd length {len(data)}")
    try:
        if dc is _DEFAULT:
            return gsm7.decode_unpacked(data, errors)
        return data.decode(_CODECS[dc], errors)
    except UnicodeDecodeError as exc:
        raise TextDecodeError(
            f"invalid octets at {exc.start} for data_coding 0x{data_coding:02X}: {exc.reason}"
        ) from None
