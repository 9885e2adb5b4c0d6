"""Sender rules: what a ``source_addr`` is, whether an account may use it, and the TON/NPI
it carries upstream.

Kinds (:func:`classify_sender`), decided by the shape of the address and its TON:

* ``SHORT_CODE`` — 3 to 6 ASCII digits (French short codes have 5; 3, 4 and 6 exist
  elsewhere), whatever the TON (partners send them as 0, 3 or 6, sometimes 1 or 5).
* ``INTERNATIONAL`` — a long code: 7 to 15 digits, country code first, optionally after a
  ``+``, with TON 0 (unknown), 1 (international) or 5 (alphanumeric, as some stacks send
  numeric senders). A national form (leading ``0``, or TON 2 national / 4 subscriber) cannot be
  passed on as international without guessing the country, so it is ``INVALID``; so are long
  digit strings under TON 3 (network specific) or 6 (abbreviated).
* ``ALPHANUMERIC`` — 1 to 11 characters of the GSM 03.38 default alphabet or its extension,
  not all digits, no control characters (CR, LF, form feed), no leading or trailing space.
  11 is the limit the TP-OA field allows for 7-bit text.
* ``INVALID`` — anything else (empty, 1–2 or 8+ digits in the wrong place, non-GSM
  characters, too long).

Permission (:func:`check_sender`): a short code must be one of the account's own or a shared
code it is allowed on; an alphanumeric sender must be one of its approved sender IDs, compared
**exactly** (case-sensitive: operators register and display sender IDs as written, so
``"Acme"`` and ``"ACME"`` are different registrations); a long code must be listed in the
account's sender IDs, with or without its ``+``.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum
from functools import lru_cache
from typing import Protocol

from protocol.gsm7 import is_gsm7

__all__ = [
    "SenderKind",
    "SenderNotAllowed",
    "SourceTonNpiSetting",
    "check_sender",
    "check_sender_of_kind",
    "classify_sender",
    "source_addr_upstream",
    "source_ton_npi",
]

MAX_ALPHANUMERIC = 11
SHORT_CODE_DIGITS = range(3, 7)
LONG_CODE_DIGITS = range(7, 16)

TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0, 1, 5
_LONG_CODE_TONS = frozenset({TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC})
_ASCII_DIGITS = frozenset("0123456789")


class SenderKind(Enum):
    SHORT_CODE = "short_code"
    ALPHANUMERIC = "alphanumeric"
    INTERNATIONAL = "international"
    INVALID = "invalid"


#: The kinds read once, for the two functions every submit calls (``classify_sender``,
#: ``check_sender_of_kind``): an Enum member looked up on its class costs ~1,000
#: instructions a time.
_SHORT_CODE, _ALPHANUMERIC = SenderKind.SHORT_CODE, SenderKind.ALPHANUMERIC
_INTERNATIONAL, _INVALID = SenderKind.INTERNATIONAL, SenderKind.INVALID


class SenderNotAllowed(ValueError):
    """The account may not send from this ``source_addr`` (answer ESME_RINVSRCADR).
    ``kind`` says what the address looked like."""

    def __init__(self, message: str, kind: SenderKind) -> None:
        super().__init__(message)
        self.kind = kind


class SourceTonNpiSetting(Protocol):
    """What :func:`source_ton_npi` reads: ``smscenter.config.SourceTonNpi`` or any object
    with these three (ton, npi) attributes."""

    @property
    def alphanumeric(self) -> tuple[int, int]: ...
    @property
    def short_code(self) -> tuple[int, int]: ...
    @property
    def international(self) -> tuple[int, int]: ...


def _is_digits(text: str) -> bool:
    return bool(text) and _ASCII_DIGITS.issuperset(text)


@lru_cache(maxsize=4096)
def classify_sender(source_addr: str, ton: int) -> SenderKind:
    """The kind of ``source_addr`` (see the module notes). Never raises.

    Cached (bounded): a partner sends from a handful of senders, and the SMPP door asks on
    every submit; the character checks cost ~6,000 instructions, a hit a dict look-up."""
    if not source_addr:
        return _INVALID
    plus = source_addr[0] == "+"
    digits = source_addr[1:] if plus else source_addr
    if _is_digits(digits):
        n = len(digits)
        if n in SHORT_CODE_DIGITS and not plus:
            return _SHORT_CODE
        if n in LONG_CODE_DIGITS and digits[0] != "0" and ton in _LONG_CODE_TONS:
            return _INTERNATIONAL
        return _INVALID
    if (
        len(source_addr) <= MAX_ALPHANUMERIC
        and source_addr == source_addr.strip()
        and min(source_addr) >= " "
        and is_gsm7(source_addr)
    ):
        return _ALPHANUMERIC
    return _INVALID


def check_sender(
    source_addr: str,
    ton: int,
    *,
    short_codes: Collection[str],
    sender_ids: Collection[str],
    shared_short_codes: Collection[str] = (),
) -> SenderKind:
    """The sender's kind if the account may use it, else raise :class:`SenderNotAllowed`.

    ``short_codes`` are the account's own, ``shared_short_codes`` the shared ones it is
    allowed on, ``sender_ids`` its approved alphanumeric senders and long codes. Pass sets for
    large lists: membership is all this does.
    """
    return check_sender_of_kind(
        source_addr, classify_sender(source_addr, ton),
        short_codes=short_codes, sender_ids=sender_ids, shared_short_codes=shared_short_codes,
    )


def check_sender_of_kind(
    source_addr: str,
    kind: SenderKind,
    *,
    short_codes: Collection[str],
    sender_ids: Collection[str],
    shared_short_codes: Collection[str] = (),
) -> SenderKind:
    """:func:`check_sender` for a sender already classified (a door that knows the kind of
    its source, from its TON or its own field, classifies once)."""
    if kind is _SHORT_CODE:
        if source_addr in short_codes or source_addr in shared_short_codes:
            return kind
        raise SenderNotAllowed("short code not assigned to the account", kind)
    if kind is _ALPHANUMERIC:
        if source_addr in sender_ids:
            return kind
        raise SenderNotAllowed("sender ID not approved for the account", kind)
    if kind is _INTERNATIONAL:
        digits = source_addr.lstrip("+")
        if digits in sender_ids or "+" + digits in sender_ids:
            return kind
        raise SenderNotAllowed("long code not approved for the account", kind)
    raise SenderNotAllowed("not a valid sender address", kind)


def source_ton_npi(kind: SenderKind, connector_setting: SourceTonNpiSetting) -> tuple[int, int]:
    """(source_addr_ton, source_addr_npi) to put on the upstream submit for a sender of
    ``kind``, from the connector's setting (aggregators disagree: short codes as 3/0, 0/1 or
    1/1)."""
    if kind is SenderKind.ALPHANUMERIC:
        pair = connector_setting.alphanumeric
    elif kind is SenderKind.SHORT_CODE:
        pair = connector_setting.short_code
    elif kind is SenderKind.INTERNATIONAL:
        pair = connector_setting.international
    else:
        raise ValueError(f"no TON/NPI for a sender of kind {kind.name}")
    ton, npi = pair
    return int(ton), int(npi)


def source_addr_upstream(source_addr: str, kind: SenderKind) -> str:
    """``source_addr`` as sent upstream: a long code without its ``+`` (SMPP puts the
    international-ness in the TON, not in the digits); others unchanged."""
    if kind is SenderKind.INTERNATIONAL:
        return source_addr.lstrip("+")
    return source_addr
