"""Phone numbers: SMPP addresses to E.164, the country of a number, masking for logs.

``normalize_msisdn`` turns a ``destination_addr`` (or an MO ``source_addr``) with its TON/NPI
into E.164 (``"+33612345678"``) using ``phonenumbers``, or raises :class:`InvalidNumber`
(answered with ESME_RINVDSTADR). How the TON is read:

* **TON 1 (international)** — the digits are the whole number, country code first:
  ``"33612345678"``, also accepted with a leading ``"+"``. A national form (``"0612…"``) or an
  ``"00"`` prefix under TON 1 is a partner error and is refused: we do not guess.
* **TON 0 (unknown), 2 (national), 4 (subscriber number)** — ``"+33…"`` and ``"0033…"`` are
  international; anything else is read in the account's ``default_country`` (``"0612345678"``
  or ``"612345678"`` in FR; phonenumbers also takes the default country's own code without
  ``+``, ``"33612345678"``). For a default country in the French numbering plan (FR and the
  overseas departments) the 10-digit national form maps to the right country code:
  ``"0692123456"`` is ``+262692123456`` (Réunion), ``"0690…"`` ``+590690…`` (Guadeloupe),
  ``"0612…"`` ``+33612…`` even for a Réunion account. Under TON 0 only, when the national
  reading is not a valid number, the digits are tried once more as an international number
  without its ``+`` (``"32470123456"``): many partner stacks send international numbers with
  TON 0.
* Other TONs (3 network specific, 5 alphanumeric, 6 abbreviated) are not phone numbers.
* NPI must be 0 (unknown), 1 (ISDN/E.164) or 8 (national); the others (data, telex, land
  mobile, private, ERMES, Internet, WAP) are not E.164 numbers.

Spaces, tabs, dashes and dots are ignored; any other character (a letter, a parenthesis) makes
the number invalid. A number must be *valid* per ``phonenumbers.is_valid_number`` — possible
length is not enough: it must fall in an assigned range of its country's numbering plan.

Parsing costs ~20–50 µs, so results (valid and invalid alike) are cached per input in an LRU
of 65,536 entries: a pure cache, safe to share, rebuilt on demand.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

__all__ = ["InvalidNumber", "country_of", "mask", "normalize_msisdn"]

TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL, TON_SUBSCRIBER = 0, 1, 2, 4
NPI_UNKNOWN, NPI_ISDN, NPI_NATIONAL = 0, 1, 8
_NATIONAL_TONS = frozenset({TON_UNKNOWN, TON_NATIONAL, TON_SUBSCRIBER})
_ACCEPTED_NPIS = frozenset({NPI_UNKNOWN, NPI_ISDN, NPI_NATIONAL})

MAX_DIGITS = 15
"""E.164: at most 15 digits, country code included."""

_CACHE_SIZE = 65_536
_SEPARATORS = re.compile(r"[ \t.\-]")
_SHAPE = re.compile(r"\+?[0-9]+")
_NON_DIGIT = re.compile(r"\D")


# The French numbering plan (ARCEP) spans mainland France and the overseas departments:
# "0692 12 34 56" is dialled the same from Paris and from Saint-Denis, yet its E.164 form is
# +262 692 12 34 56, not +33. phonenumbers reads national numbers one region at a time, so
# for an account whose default country is in this plan we map the 10-digit national form
# ourselves, by the overseas prefixes below (everything else is +33), and let phonenumbers
# validate the result.
_FRENCH_PLAN = frozenset({"FR", "RE", "YT", "GP", "BL", "MF", "MQ", "GF"})
_FRENCH_OVERSEAS = {
    **dict.fromkeys(("0262", "0263", "0692", "0693"), "262"),  # Réunion
    **dict.fromkeys(("0269", "0639"), "262"),  # Mayotte
    **dict.fromkeys(("0590", "0690", "0691"), "590"),  # Guadeloupe, St-Martin, St-Barthélemy
    **dict.fromkeys(("0596", "0696", "0697"), "596"),  # Martinique
    **dict.fromkeys(("0594", "0694"), "594"),  # French Guiana
}


class InvalidNumber(ValueError):
    """Not a valid phone number for SMS (answer ESME_RINVDSTADR). The message says why, and
    never repeats the number (it would end up in logs)."""


def normalize_msisdn(addr: str, ton: int, npi: int, default_country: str) -> str:
    """E.164 form (``"+33612345678"``) of an SMPP address; see the module notes for TON/NPI.

    ``default_country`` is an ISO 3166 region code (``"FR"``) for national numbers; an unknown
    one is a configuration error and raises a plain ``ValueError``.
    """
    result = _normalize(addr, ton, npi, default_country.upper())
    if result[0] != "+":
        if result == _BAD_REGION:
            raise ValueError(f"unknown default country {default_country!r}")
        raise InvalidNumber(result)
    return result


_BAD_REGION = "unknown default country"


@lru_cache(maxsize=_CACHE_SIZE)
def _normalize(addr: str, ton: int, npi: int, region: str) -> str:
    """E.164 on success, else the reason (never starts with '+'). Failures are cached too, so
    a partner repeating a bad number costs a dict lookup."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return _BAD_REGION
    if ton != TON_INTERNATIONAL and ton not in _NATIONAL_TONS:
        return f"type of number {ton} is not a phone number"
    if npi not in _ACCEPTED_NPIS:
        return f"numbering plan indicator {npi} is not E.164"
    text = _SEPARATORS.sub("", addr)
    if not text:
        return "empty number"
    if not _SHAPE.fullmatch(text):
        return "not made of digits"
    digits = text.lstrip("+")
    if text[0] == "+":
        international = digits
    elif ton == TON_INTERNATIONAL:
        if digits[0] == "0":
            return "international number (TON 1) starts with 0"
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif region in _FRENCH_PLAN and len(digits) == 10 and digits[0] == "0" != digits[1]:
        international = _FRENCH_OVERSEAS.get(digits[:4], "33") + digits[1:]
    else:
        national = _parse(digits, region)
        if national is not None:
            return national
        if ton != TON_UNKNOWN or digits[0] == "0":
            return "not a valid number"
        international = digits  # TON 0: an international number without its '+'
    if not international or len(international) > MAX_DIGITS:
        return "wrong number of digits"
    return _parse("+" + international, None) or "not a valid number"


def _parse(text: str, region: str | None) -> str | None:
    if len(_NON_DIGIT.sub("", text)) > MAX_DIGITS + 2:  # national trunk prefix at most
        return None
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@lru_cache(maxsize=_CACHE_SIZE)
def country_of(e164: str) -> str | None:
    """ISO region of an E.164 number (``"FR"``, ``"RE"`` for Réunion, ``"GP"`` for
    Guadeloupe, ``"BE"``, ``"CH"``), resolved from the number's range where a country code is
    shared (+262 is Réunion or Mayotte, +590 Guadeloupe, Saint-Martin or Saint-Barthélemy).
    ``None`` when the number cannot be parsed or its range belongs to no region."""
    try:
        number = phonenumbers.parse(e164 if e164.startswith("+") else "+" + e164, None)
    except NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    return region if region and region != "001" and region != "ZZ" else None


def mask(e164: str) -> str:
    """A number for logs: the first 3 digits and the last 2, ``"+33612345678"`` →
    ``"+336****78"``; the ``+`` is kept and the hidden part is always four stars. Same rule as
    ``smscenter.logs.mask_number``: 5 digits or fewer (short codes) and values with letters
    (sender IDs) are not personal numbers and stay readable."""
    digits = _NON_DIGIT.sub("", e164)
    if len(digits) <= 5 or any(c.isalpha() for c in e164):
        return e164
    plus = "+" if e164.lstrip().startswith("+") else ""
    return f"{plus}{digits[:3]}****{digits[-2:]}"
