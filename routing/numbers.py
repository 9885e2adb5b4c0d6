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

Parsing with phonenumbers costs ~20–50 µs, so results (valid and invalid alike) are cached per
input in an LRU of 65,536 entries: a pure cache, safe to share, rebuilt on demand. The common
shape, ``"+"`` followed by ASCII digits only with no region (every international number reaches
``_parse`` that way), takes a specialised path, ``_parse_international_fast``, that gives the
same answer as ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number(E164)`` for every
such input in ~3–4 µs (see its docstring); anything else goes to ``_parse_slow``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.phonenumberutil import (
    _MAX_LENGTH_FOR_NSN,
    _MIN_LENGTH_FOR_NSN,
    ValidationResult,
    _extract_country_code,
    _maybe_strip_national_prefix_carrier_code,
    _test_number_length,
)

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
    """E.164 form of ``text`` read in ``region`` (``None``: must start with ``+``), or ``None``
    when phonenumbers cannot parse it or the number is not valid."""
    if region is None and len(text) > 1 and text[0] == "+":
        digits = text[1:]
        if digits.isascii() and digits.isdigit():  # exactly [0-9]+
            return _parse_international_fast(text)
    return _parse_slow(text, region)


def _parse_slow(text: str, region: str | None) -> str | None:
    """The reference: phonenumbers' generic parse, validation and E.164 formatting."""
    if len(_NON_DIGIT.sub("", text)) > MAX_DIGITS + 2:  # national trunk prefix at most
        return None
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


# -- The fast path ---------------------------------------------------------------------------
#
# phonenumbers' private helpers reused here (phonenumbers.phonenumberutil, checked against
# 9.0.x): _extract_country_code, _maybe_strip_national_prefix_carrier_code,
# _test_number_length, ValidationResult, _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN; plus
# PhoneMetadata's loaders and the metadata fields read by _number_type_helper,
# _region_code_for_number_from_list and is_valid_number_for_region. A phonenumbers upgrade
# must keep tests/unit/test_numbers.py (differential test against _parse_slow) green.

_NON_GEO = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY  # "001"
_KEEP_UNSTRIPPED = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)


class _TypeMatcher:
    """``_number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN``, precompiled.

    phonenumbers answers UNKNOWN unless the general description matches and then one of
    premium rate, toll free, shared cost, VoIP, personal, pager, UAN, voicemail, fixed line
    matches, or mobile does when ``same_mobile_and_fixed_line_pattern`` is false. Validity only
    needs that disjunction, so we test mobile first (most SMS traffic), and per NSN length keep
    only the patterns whose ``possible_length`` admits it, exactly as
    ``_is_number_matching_desc`` does (a desc that is None or has no pattern never matches; an
    empty ``possible_length`` admits any length; ``_match(.., False)`` is a fullmatch)."""

    __slots__ = ("_by_length",)

    def __init__(self, metadata: PhoneMetadata) -> None:
        def compiled(desc) -> tuple[tuple[int, ...], re.Pattern[str]] | None:
            if desc is None or not desc.national_number_pattern:
                return None
            return tuple(desc.possible_length), re.compile(desc.national_number_pattern)

        def admits(desc, length: int) -> re.Pattern[str] | None:
            if desc is None:
                return None
            lengths, pattern = desc
            return None if lengths and length not in lengths else pattern

        descs = [] if metadata.same_mobile_and_fixed_line_pattern else [metadata.mobile]
        descs += [
            metadata.fixed_line,
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
        ]
        general_desc = compiled(metadata.general_desc)
        type_descs = [compiled(d) for d in descs]
        # index: NSN length; None when no pattern can match a number of that length
        self._by_length: list[tuple[re.Pattern[str], tuple[re.Pattern[str], ...]] | None] = []
        for length in range(_MAX_LENGTH_FOR_NSN + 1):
            general = admits(general_desc, length)
            types = tuple(p for p in (admits(d, length) for d in type_descs) if p is not None)
            self._by_length.append((general, types) if general and types else None)

    def known(self, nsn: str) -> bool:
        """``nsn`` is at most _MAX_LENGTH_FOR_NSN digits (parse refuses longer)."""
        entry = self._by_length[len(nsn)]
        if entry is None:
            return False
        general, types = entry
        if general.fullmatch(nsn) is None:
            return False
        for pattern in types:
            if pattern.fullmatch(nsn) is not None:
                return True
        return False


class _CountryPlan:
    """What parse and is_valid_number look up for one country calling code, resolved once:
    the metadata of its main region (parse: national prefix, lengths) and, per region in
    COUNTRY_CODE_TO_REGION_CODE order, (leading-digits regex or None, type matcher, whether
    is_valid_number_for_region's country-code check passes)."""

    __slots__ = ("cc", "metadata", "national_prefix", "shared", "single")

    def __init__(self, cc: int) -> None:
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]
        self.cc = str(cc)
        # parse(): metadata_for_region_or_calling_code(cc, region_code_for_country_code(cc))
        self.metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, regions[0])
        prefix = self.metadata.national_prefix_for_parsing if self.metadata else None
        self.national_prefix = re.compile(prefix) if prefix else None
        self.single: tuple[_TypeMatcher | None, bool] | None = None
        self.shared: tuple[tuple[re.Pattern[str] | None, _TypeMatcher, bool], ...] = ()
        if len(regions) == 1:  # region_code_for_number returns it without looking
            region = regions[0]
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
            if metadata is not None:
                ok = region == _NON_GEO or metadata.country_code == cc
                self.single = (_TypeMatcher(metadata), ok)
            else:
                self.single = (None, False)
        else:  # _region_code_for_number_from_list
            shared = []
            for region in regions:
                metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
                if metadata is None:
                    continue
                leading = metadata.leading_digits
                shared.append(
                    (
                        re.compile(leading) if leading is not None else None,
                        _TypeMatcher(metadata),
                        metadata.country_code == cc,
                    )
                )
            self.shared = tuple(shared)

    def is_valid(self, nsn: str) -> bool:
        """phonenumbers.is_valid_number of the number (this cc, this NSN)."""
        if self.single is not None:
            matcher, ok = self.single
            return ok and matcher is not None and matcher.known(nsn)
        for leading, matcher, ok in self.shared:
            if leading is not None:
                if leading.match(nsn):  # this region is chosen, valid or not
                    return ok and matcher.known(nsn)
            elif matcher.known(nsn):  # chosen for its known type: valid if the cc agrees
                return ok
        return False  # no region: is_valid_number_for_region(number, None) is False


_PLANS: dict[int, _CountryPlan] = {}


def _parse_international_fast(text: str) -> str | None:
    """``_parse_slow(text, None)`` for ``text`` = ``"+"`` then ASCII digits only (the caller
    checks the shape), without phonenumbers' generic machinery.

    Why: ``phonenumbers.parse`` spends most of its ~20 µs on steps that are no-ops for such a
    string (RFC 3966 phone-context and isdn-subaddress, the viability and extension regexes,
    Unicode/alpha normalisation of the digits, the IDD retry), and ``is_valid_number`` tries
    every type pattern in turn, mobile last. Why it is exact: those skipped steps leave
    ``"+digits"`` unchanged; the steps that decide are replayed in parse's order with
    phonenumbers' own helpers or precompiled equivalents (see _TypeMatcher, _CountryPlan):
    the too-short-after-IDD check (≤ 2 digits), country-code extraction, the NSN minimum
    length, national prefix / carrier code stripping kept only when the stripped form's length
    test is not TOO_SHORT / IS_POSSIBLE_LOCAL_ONLY / INVALID_LENGTH, the NSN length bounds,
    then region choice and validity. The NSN string round-trips through parse's int +
    Italian-leading-zeros fields unchanged, so format_number(E164) is ``"+" + cc + nsn``.
    tests/unit/test_numbers.py checks it against _parse_slow differentially."""
    count = len(text) - 1
    if count > MAX_DIGITS + 2 or count <= 2:  # _parse_slow's cap; TOO_SHORT_AFTER_IDD
        return None
    cc, nsn = _extract_country_code(text[1:])
    if cc == 0:  # INVALID_COUNTRY_CODE, also after the retry without '+'
        return None
    plan = _PLANS.get(cc)
    if plan is None:
        plan = _PLANS[cc] = _CountryPlan(cc)
    metadata = plan.metadata
    if metadata is None:  # cannot happen (parse asserts it); let phonenumbers decide
        return _parse_slow(text, None)
    if len(nsn) < _MIN_LENGTH_FOR_NSN:  # TOO_SHORT_NSN
        return None
    if plan.national_prefix is not None and plan.national_prefix.match(nsn):
        # without a match the helper returns nsn untouched: skipping it is the same
        _, stripped, _ = _maybe_strip_national_prefix_carrier_code(nsn, metadata)
        # parse keeps the stripped form unless its length test says it is too short to be a
        # whole NSN (the original could then be a valid short number)
        if stripped != nsn and _test_number_length(stripped, metadata) not in _KEEP_UNSTRIPPED:
            nsn = stripped
    if not _MIN_LENGTH_FOR_NSN <= len(nsn) <= _MAX_LENGTH_FOR_NSN:  # TOO_SHORT_NSN / TOO_LONG
        return None
    if not plan.is_valid(nsn):
        return None
    return "+" + plan.cc + nsn


@lru_cache(maxsize=_CACHE_SIZE)
def country_of_normalized(e164: str) -> str | None:
    """``country_of`` for a number ``normalize_msisdn`` returned (the submit path's): a
    calling code that belongs to one region answers from the code alone, as phonenumbers
    itself does, without the ~40 µs parse; shared codes (+1, +7, +262, +590 …) take the
    full look-up."""
    digits = e164[1:]
    for n in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:n]))
        if regions:
            if len(regions) == 1:
                region = regions[0]
                return region if region != "001" and region != "ZZ" else None
            break
    return country_of(e164)


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
    ``smscenter.app.logs.mask_number``: 5 digits or fewer (short codes) and values with letters
    (sender IDs) are not personal numbers and stay readable."""
    digits = _NON_DIGIT.sub("", e164)
    if len(digits) <= 5 or any(c.isalpha() for c in e164):
        return e164
    plus = "+" if e164.lstrip().startswith("+") else ""
    return f"{plus}{digits[:3]}****{digits[-2:]}"
