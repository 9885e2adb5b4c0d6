"""Phone numbers: SMPP address + TON/NPI to E.164, countries, masking (routing/numbers.py)."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers.phonemetadata import PhoneMetadata

from routing import numbers
from routing.numbers import InvalidNumber, country_of, mask, normalize_msisdn

INTL, UNKNOWN, NATIONAL = 1, 0, 2
ISDN = 1


class TestFrenchMobile:
    @pytest.mark.parametrize(
        "addr, ton",
        [
            ("0612345678", UNKNOWN),
            ("0612345678", NATIONAL),
            ("612345678", NATIONAL),  # without the trunk 0
            ("06 12 34 56 78", NATIONAL),
            ("06.12.34.56.78", UNKNOWN),
            ("06-12-34-56-78", UNKNOWN),
            ("+33612345678", UNKNOWN),
            ("+33612345678", NATIONAL),
            ("+33 6 12 34 56 78", INTL),
            ("33612345678", INTL),
            ("+33612345678", INTL),
            ("0033612345678", UNKNOWN),
            ("0033612345678", NATIONAL),
            ("0033 6 12 34 56 78", UNKNOWN),
            ("33612345678", UNKNOWN),  # international digits sent with TON 0
        ],
    )
    def test_forms(self, addr, ton):
        assert normalize_msisdn(addr, ton, ISDN, "FR") == "+33612345678"

    def test_npi_unknown_and_national_accepted(self):
        assert normalize_msisdn("0612345678", NATIONAL, 0, "FR") == "+33612345678"
        assert normalize_msisdn("0612345678", NATIONAL, 8, "FR") == "+33612345678"

    def test_subscriber_number_ton_reads_nationally(self):
        assert normalize_msisdn("0756123456", 4, ISDN, "FR") == "+33756123456"

    def test_default_country_case_insensitive(self):
        assert normalize_msisdn("0612345678", NATIONAL, ISDN, "fr") == "+33612345678"

    def test_french_landline(self):
        assert normalize_msisdn("01 23 45 67 89", NATIONAL, ISDN, "FR") == "+33123456789"


class TestOtherCountries:
    @pytest.mark.parametrize(
        "addr, ton, default, expected",
        [
            # Belgium: mobile and Brussels landline
            ("32470123456", INTL, "FR", "+32470123456"),
            ("+32 470 12 34 56", UNKNOWN, "FR", "+32470123456"),
            ("0032470123456", NATIONAL, "FR", "+32470123456"),
            ("0470123456", NATIONAL, "BE", "+32470123456"),
            ("0470/12.34.56".replace("/", " "), NATIONAL, "BE", "+32470123456"),
            ("022123456", NATIONAL, "BE", "+3222123456"),
            # Switzerland: mobile and Zürich landline
            ("41791234567", INTL, "FR", "+41791234567"),
            ("079 123 45 67", NATIONAL, "CH", "+41791234567"),
            ("0041791234567", UNKNOWN, "FR", "+41791234567"),
            ("0441234567", NATIONAL, "CH", "+41441234567"),
            # Réunion (+262 262 fixed, 692/693 mobile)
            ("262692123456", INTL, "FR", "+262692123456"),
            ("+262693123456", UNKNOWN, "FR", "+262693123456"),
            ("+262262123456", INTL, "FR", "+262262123456"),
            ("0692123456", NATIONAL, "RE", "+262692123456"),
            # Guadeloupe (+590 690 mobile)
            ("590690123456", INTL, "FR", "+590690123456"),
            ("0690123456", NATIONAL, "GP", "+590690123456"),
        ],
    )
    def test_forms(self, addr, ton, default, expected):
        assert normalize_msisdn(addr, ton, ISDN, default) == expected

    def test_other_default_country_reads_french_national_as_theirs(self):
        # a Belgian account's "0612345678" is not French
        with pytest.raises(InvalidNumber):
            normalize_msisdn("0612345678", NATIONAL, ISDN, "BE")


class TestFrenchNumberingPlan:
    """One ARCEP plan for mainland France and the overseas departments."""

    @pytest.mark.parametrize(
        "addr, expected, country",
        [
            ("0692123456", "+262692123456", "RE"),
            ("0693123456", "+262693123456", "RE"),
            ("0262123456", "+262262123456", "RE"),
            ("0269601234", "+262269601234", "YT"),
            ("0690123456", "+590690123456", "GP"),
            ("0590811234", "+590590811234", "GP"),
            ("0696123456", "+596696123456", "MQ"),
            ("0596611234", "+596596611234", "MQ"),
            ("0694123456", "+594694123456", "GF"),
            ("0594301234", "+594594301234", "GF"),
            ("0612345678", "+33612345678", "FR"),
        ],
    )
    @pytest.mark.parametrize("default", ["FR", "RE", "GP", "MQ", "GF", "YT"])
    def test_national_forms_map_to_their_country_code(self, addr, expected, country, default):
        assert normalize_msisdn(addr, NATIONAL, ISDN, default) == expected
        assert normalize_msisdn(addr, UNKNOWN, ISDN, default) == expected
        assert country_of(expected) == country

    def test_overseas_number_under_plus33_is_invalid(self):
        with pytest.raises(InvalidNumber):
            normalize_msisdn("+33692123456", INTL, ISDN, "FR")


class TestInvalid:
    @pytest.mark.parametrize(
        "addr, ton",
        [
            ("", UNKNOWN),
            ("   ", UNKNOWN),
            ("+", INTL),
            ("ACME", UNKNOWN),
            ("06123A5678", NATIONAL),
            ("+33 6 12 34 56 7A", INTL),
            ("06(12)345678", NATIONAL),
            ("+33612345678/", INTL),
            ("++33612345678", INTL),
            ("+33+612345678", INTL),
            ("٠٦١٢٣٤٥٦٧٨", NATIONAL),  # Arabic-Indic digits
            ("061234567", NATIONAL),  # too short
            ("06123456789", NATIONAL),  # too long
            ("3361234567", INTL),  # too short
            ("336123456789", INTL),  # too long
            ("+3361234567890123456", INTL),  # longer than E.164 allows
            ("0000000000000000000", UNKNOWN),
            ("0612345678", INTL),  # national form under TON 1: refused, not guessed
            ("0033612345678", INTL),  # so is an international prefix
            ("+33012345678", INTL),  # 0 after the country code
            ("+33700000000", INTL),  # unassigned range
            ("0700000000", NATIONAL),
            ("+999123456789", INTL),  # unassigned country code
            ("+32470", INTL),
            ("0690123456", INTL),
            ("12", UNKNOWN),
            ("36180", UNKNOWN),  # a short code is not an MSISDN
        ],
    )
    def test_rejected(self, addr, ton):
        with pytest.raises(InvalidNumber):
            normalize_msisdn(addr, ton, ISDN, "FR")

    @pytest.mark.parametrize("ton", [3, 5, 6, 7])
    def test_non_number_tons(self, ton):
        with pytest.raises(InvalidNumber):
            normalize_msisdn("+33612345678", ton, ISDN, "FR")

    @pytest.mark.parametrize("npi", [3, 4, 6, 9, 10, 14, 18])
    def test_non_e164_npis(self, npi):
        with pytest.raises(InvalidNumber):
            normalize_msisdn("33612345678", INTL, npi, "FR")

    def test_national_ton_does_not_fall_back_to_international(self):
        # TON 2 says national: Belgian digits without a prefix are not a French number
        with pytest.raises(InvalidNumber):
            normalize_msisdn("32470123456", NATIONAL, ISDN, "FR")
        assert normalize_msisdn("32470123456", UNKNOWN, ISDN, "FR") == "+32470123456"

    def test_is_a_value_error_without_the_number(self):
        with pytest.raises(ValueError) as info:
            normalize_msisdn("0612345", NATIONAL, ISDN, "FR")
        assert isinstance(info.value, InvalidNumber)
        assert "0612345" not in str(info.value)

    def test_unknown_default_country_is_a_config_error(self):
        with pytest.raises(ValueError) as info:
            normalize_msisdn("0612345678", NATIONAL, ISDN, "XX")
        assert not isinstance(info.value, InvalidNumber)

    @given(st.text(max_size=25), st.integers(0, 6), st.sampled_from([0, 1, 8]))
    def test_only_e164_or_invalid(self, addr, ton, npi):
        try:
            e164 = normalize_msisdn(addr, ton, npi, "FR")
        except InvalidNumber:
            return
        assert e164[0] == "+" and e164[1:].isdigit() and len(e164) <= 16
        # normalising is idempotent
        assert normalize_msisdn(e164, INTL, ISDN, "FR") == e164
        assert normalize_msisdn(e164[1:], INTL, ISDN, "FR") == e164


class TestCache:
    def test_results_and_failures_are_cached(self):
        numbers._normalize.cache_clear()
        for _ in range(3):
            normalize_msisdn("0612345678", NATIONAL, ISDN, "FR")
            with pytest.raises(InvalidNumber):
                normalize_msisdn("0612", NATIONAL, ISDN, "FR")
        info = numbers._normalize.cache_info()
        assert info.misses == 2 and info.hits == 4
        assert info.maxsize >= 65536


class TestCountry:
    @pytest.mark.parametrize(
        "e164, region",
        [
            ("+33612345678", "FR"),
            ("+33123456789", "FR"),
            ("+32470123456", "BE"),
            ("+41791234567", "CH"),
            ("+262692123456", "RE"),
            ("+262693123456", "RE"),
            ("+262262123456", "RE"),
            ("+262269601234", "YT"),
            ("+590690123456", "GP"),
            ("+596696123456", "MQ"),
            ("+594694123456", "GF"),
            ("+447400123456", "GB"),
            ("33612345678", "FR"),  # without the +
        ],
    )
    def test_regions(self, e164, region):
        assert country_of(e164) == region

    @pytest.mark.parametrize("bad", ["", "+", "abc", "+999123456789", "+80012345678"])
    def test_unknown(self, bad):
        assert country_of(bad) is None


class TestMask:
    @pytest.mark.parametrize(
        "value, masked",
        [
            ("+33612345678", "+336****78"),
            ("+262692123456", "+262****56"),
            ("+3222123456", "+322****56"),
            ("33612345678", "336****78"),
            ("36180", "36180"),
            ("ACME", "ACME"),
        ],
    )
    def test_mask(self, value, masked):
        assert mask(value) == masked

    @given(st.from_regex(r"\+[1-9][0-9]{5,14}", fullmatch=True))
    def test_same_as_the_log_processor(self, e164):
        from smscenter.app.logs import mask_number

        assert mask(e164) == mask_number(e164)
        assert len(mask(e164)) == 10


# -- The "+digits" fast path against phonenumbers ----------------------------------------------
#
# routing.numbers._parse sends "+" followed by ASCII digits (region None) to
# _parse_international_fast, a replay of phonenumbers.parse + is_valid_number +
# format_number(E164) specialised for that shape. It must give exactly _parse_slow's answer
# (the generic phonenumbers calls), None included, for every input of that shape.

_DIFF = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CCS = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_DESCS = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail",
)  # fmt: skip


def _same_as_phonenumbers(text: str) -> str | None:
    """The fast path, called directly, equals the slow path; so does the dispatcher."""
    assert text[0] == "+" and text[1:].isascii() and text[1:].isdigit()
    expected = numbers._parse_slow(text, None)
    got = numbers._parse_international_fast(text)
    assert got == expected, (text, got, expected)
    assert numbers._parse(text, None) == expected
    return expected


def _examples() -> list[tuple[str, str, tuple[str, ...]]]:
    """(country code, national significant number, national prefixes of its region) of every
    example number phonenumbers ships: all regions x all types, and the non-geographic codes."""
    found: set[tuple[str, str, tuple[str, ...]]] = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region)
        prefixes = tuple(sorted({p for p in (metadata.national_prefix, "0") if p}))
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                nsn = phonenumbers.national_significant_number(number)
                found.add((str(number.country_code), nsn, prefixes))
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        metadata = PhoneMetadata.metadata_for_nongeo_region(cc)
        for name in _DESCS:
            desc = getattr(metadata, name)
            if desc is not None and desc.example_number:
                found.add((str(cc), desc.example_number, ("0",)))
    return sorted(found)


_EXAMPLES = _examples()


@st.composite
def _mutated_examples(draw) -> str:
    """A real example number, then up to four edits: digit changes, insertions, deletions,
    truncation, extension, a national prefix or zeros (Italian style) after the country code,
    a random 1-4 digit block after the country code (carrier codes)."""
    cc, nsn, prefixes = draw(st.sampled_from(_EXAMPLES))
    rest = list(nsn)
    for op in draw(st.lists(st.integers(0, 7), max_size=4)):
        digit = draw(st.sampled_from("0123456789"))
        at = draw(st.integers(0, len(rest)))
        if op == 0 and rest:
            rest[min(at, len(rest) - 1)] = digit
        elif op == 1:
            rest.insert(at, digit)
        elif op == 2 and rest:
            del rest[min(at, len(rest) - 1)]
        elif op == 3:
            rest = rest[:at]
        elif op == 4:
            rest += draw(st.text("0123456789", min_size=1, max_size=3))
        elif op == 5:
            rest[:0] = draw(st.sampled_from(prefixes))
        elif op == 6:
            rest[:0] = "0" * draw(st.integers(1, 3))
        else:
            rest[:0] = draw(st.text("0123456789", min_size=1, max_size=4))
    return "+" + cc + "".join(rest)


class TestInternationalFastPath:
    @_DIFF
    @given(st.text("0123456789", min_size=1, max_size=17))
    def test_any_digits(self, digits):
        _same_as_phonenumbers("+" + digits)

    @_DIFF
    @given(st.sampled_from(_CCS), st.text("0123456789", max_size=14))
    def test_every_country_code(self, cc, digits):
        _same_as_phonenumbers(f"+{cc}{digits}")

    @_DIFF
    @given(_mutated_examples())
    def test_mutated_example_numbers(self, text):
        _same_as_phonenumbers(text)

    def test_all_example_numbers(self):
        valid = stripped = 0
        for cc, nsn, prefixes in _EXAMPLES:
            for text in [f"+{cc}{nsn}"] + [f"+{cc}{p}{nsn}" for p in prefixes]:
                result = _same_as_phonenumbers(text)
                valid += result is not None
                stripped += result is not None and result != text
        # the examples are valid numbers, and the prefix stripping path was exercised
        assert valid > 0.9 * len(_EXAMPLES) and stripped > 100

    def test_every_country_code_and_length(self):
        rng = random.Random(20240607)
        valid = 0
        for cc in _CCS:
            for length in range(15):
                for _ in range(6):
                    digits = "".join(rng.choice("0123456789") for _ in range(length))
                    valid += _same_as_phonenumbers(f"+{cc}{digits}") is not None
        assert valid > 100

    @pytest.mark.parametrize(
        "text, expected",
        [
            ("+33612345678", "+33612345678"),
            ("+330612345678", "+33612345678"),  # national prefix after the country code
            ("+33700000000", None),
            ("+390612345678", "+390612345678"),  # Italian leading zero is kept
            ("+3903123456789", "+3903123456789"),
            ("+4407400123456", "+447400123456"),
            ("+112125550123", "+12125550123"),  # NANPA trunk 1
            ("+14165550123", "+14165550123"),  # Canada, shared +1
            ("+77011234567", "+77011234567"),  # Kazakhstan, shared +7
            ("+441624612345", "+441624612345"),  # Isle of Man, shared +44
            ("+262269601234", "+262269601234"),  # Mayotte, shared +262
            ("+540111523456789", "+5491123456789"),  # Argentina: prefix transform rule
            ("+3606201234567", "+36201234567"),  # Hungary: two-digit national prefix
            ("+80012345678", "+80012345678"),  # non-geographic
            ("+8001234567", None),
            ("+999123456789", None),  # unassigned country code
            ("+0033612345678", None),
            ("+33", None),
            ("+336", None),
            ("+3", None),
            ("+33612345678901234", None),
        ],
    )
    def test_known_answers(self, text, expected):
        assert _same_as_phonenumbers(text) == expected

    def test_digits_only_take_the_fast_path(self, monkeypatch):
        def slow(text, region):
            raise AssertionError("slow path")

        monkeypatch.setattr(numbers, "_parse_slow", slow)
        assert numbers._parse("+33612345678", None) == "+33612345678"
        assert numbers._parse("+999123456789", None) is None

    @pytest.mark.parametrize(
        "text, region",
        [
            ("+33 612345678", None),
            ("+33612345678", "FR"),
            ("0612345678", "FR"),
            ("＋33612345678", None),  # fullwidth plus
            ("+３３６１２３４５６７８", None),  # fullwidth digits
            ("+٣٣٦١٢٣٤٥٦٧٨", None),  # Arabic-Indic digits
            ("+33612345678²", None),  # isdigit() but not ASCII
            ("+", None),
            ("", None),
        ],
    )
    def test_other_shapes_take_the_slow_path(self, monkeypatch, text, region):
        expected = numbers._parse_slow(text, region)
        calls = []

        def fast(text):
            calls.append(text)
            return "+0"

        monkeypatch.setattr(numbers, "_parse_international_fast", fast)
        assert numbers._parse(text, region) == expected
        assert calls == []

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet="+＋0123456789٣３² -.x;", max_size=20), st.sampled_from([None, "FR"]))
    def test_dispatch_is_transparent(self, text, region):
        assert numbers._parse(text, region) == numbers._parse_slow(text, region)


def test_country_of_normalized_agrees_with_country_of():
    """The submit path's fast look-up answers what the full parse answers, shared calling
    codes included."""
    from routing.numbers import country_of, country_of_normalized

    samples = ["+33612345678", "+32470123456", "+41781234567", "+262692123456", "+262269601234",
               "+590690123456", "+590690871234", "+14155550123", "+16135550123", "+79161234567",
               "+77012345678", "+447700900123", "+4915112345678", "+8613812345678", "+881612345678"]
    for number in samples:
        assert country_of_normalized(number) == country_of(number), number
