"""Sender-ID rules (routing/senders.py) and message categories (routing/category.py)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.category import (
    ALERT,
    MARKETING,
    SERVICE_TYPES,
    CategoryOverrideNotAllowed,
    UnknownCategory,
    category_for,
)
from routing.senders import (
    SenderKind,
    SenderNotAllowed,
    check_sender,
    classify_sender,
    source_addr_upstream,
    source_ton_npi,
)

SC, ALPHA, INTL, INVALID = (
    SenderKind.SHORT_CODE,
    SenderKind.ALPHANUMERIC,
    SenderKind.INTERNATIONAL,
    SenderKind.INVALID,
)


class TestClassify:
    @pytest.mark.parametrize(
        "addr, ton, kind",
        [
            # short codes: 3-6 digits, any TON
            ("36180", 0, SC),
            ("36180", 3, SC),
            ("36180", 6, SC),
            ("36180", 1, SC),
            ("36180", 5, SC),
            ("38200", 2, SC),
            ("118", 6, SC),
            ("3630", 0, SC),
            ("123456", 3, SC),
            ("+36180", 1, INVALID),
            ("12", 0, INVALID),
            # long codes
            ("33757001234", 1, INTL),
            ("+33757001234", 1, INTL),
            ("33757001234", 0, INTL),
            ("+33757001234", 0, INTL),
            ("33757001234", 5, INTL),
            ("1234567", 1, INTL),
            ("123456789012345", 1, INTL),
            ("1234567890123456", 1, INVALID),  # over E.164's 15 digits
            ("0612345678", 2, INVALID),  # national form
            ("0612345678", 0, INVALID),
            ("33757001234", 2, INVALID),
            ("33757001234", 3, INVALID),
            ("33757001234", 6, INVALID),
            # alphanumeric
            ("ACME", 5, ALPHA),
            ("ACME", 0, ALPHA),
            ("Acme", 5, ALPHA),
            ("A", 5, ALPHA),
            ("ACME INFO", 5, ALPHA),
            ("ABCDEFGHIJK", 5, ALPHA),  # 11
            ("Boutique-75", 5, ALPHA),
            ("36180A", 5, ALPHA),
            ("SAV+", 5, ALPHA),
            ("+ACME", 5, ALPHA),
            ("Café", 5, ALPHA),  # 'é' is in the GSM 03.38 basic table
            ("ABCDEFGHIJKL", 5, INVALID),  # 12
            ("ACME€", 5, ALPHA),  # extension table
            ("ÅÆØ", 5, ALPHA),
            ("ACME™", 5, INVALID),
            ("ACMEç", 5, INVALID),  # 'ç' lower-case is not GSM-7 ('Ç' is)
            ("АСМЕ", 5, INVALID),  # Cyrillic look-alikes
            (" ACME", 5, INVALID),
            ("ACME ", 5, INVALID),
            ("AC\nME", 5, INVALID),
            ("AC\rME", 5, INVALID),
            ("", 5, INVALID),
            (" ", 5, INVALID),
        ],
    )
    def test_kinds(self, addr, ton, kind):
        assert classify_sender(addr, ton) is kind

    @given(st.from_regex(r"[0-9]{1,20}", fullmatch=True), st.integers(0, 6))
    def test_all_digits_never_alphanumeric(self, addr, ton):
        assert classify_sender(addr, ton) is not ALPHA

    @given(st.text(max_size=30), st.integers(0, 7))
    def test_never_raises(self, addr, ton):
        assert isinstance(classify_sender(addr, ton), SenderKind)


ACCOUNT = dict(
    short_codes=frozenset({"36180", "38200"}),
    sender_ids=frozenset({"ACME", "Acme Promo", "33757001234"}),
    shared_short_codes=frozenset({"36111"}),
)


class TestCheck:
    @pytest.mark.parametrize(
        "addr, ton, kind",
        [
            ("36180", 3, SC),
            ("38200", 0, SC),
            ("36111", 3, SC),  # shared code it is allowed on
            ("ACME", 5, ALPHA),
            ("Acme Promo", 5, ALPHA),
            ("33757001234", 1, INTL),
            ("+33757001234", 1, INTL),
        ],
    )
    def test_allowed(self, addr, ton, kind):
        assert check_sender(addr, ton, **ACCOUNT) is kind

    @pytest.mark.parametrize(
        "addr, ton, kind",
        [
            ("36199", 3, SC),  # someone else's short code
            ("acme", 5, ALPHA),  # exact match: case matters
            ("ACME ", 5, INVALID),
            ("ACME PROMO", 5, ALPHA),
            ("OTHER", 5, ALPHA),
            ("33757009999", 1, INTL),
            ("0757001234", 2, INVALID),
            ("", 0, INVALID),
            ("ABCDEFGHIJKLMNOP", 5, INVALID),
        ],
    )
    def test_refused(self, addr, ton, kind):
        with pytest.raises(SenderNotAllowed) as info:
            check_sender(addr, ton, **ACCOUNT)
        assert info.value.kind is kind
        assert isinstance(info.value, ValueError)

    def test_shared_code_needs_permission(self):
        with pytest.raises(SenderNotAllowed):
            check_sender("36111", 3, short_codes=["36180"], sender_ids=[])

    def test_long_code_listed_with_plus(self):
        assert check_sender("33757001234", 1, short_codes=(), sender_ids=["+33757001234"]) is INTL

    def test_a_sender_id_list_does_not_grant_a_short_code(self):
        # a digit-only entry in sender_ids is a long code, never a short code
        with pytest.raises(SenderNotAllowed):
            check_sender("36180", 3, short_codes=(), sender_ids=["36180"])

    def test_lists_any_collection(self):
        assert check_sender("ACME", 5, short_codes=[], sender_ids=("ACME",)) is ALPHA


@dataclass(frozen=True)
class Setting:
    alphanumeric: tuple[int, int] = (5, 0)
    short_code: tuple[int, int] = (3, 0)
    international: tuple[int, int] = (1, 1)


class TestSourceTonNpi:
    def test_defaults(self):
        s = Setting()
        assert source_ton_npi(ALPHA, s) == (5, 0)
        assert source_ton_npi(SC, s) == (3, 0)
        assert source_ton_npi(INTL, s) == (1, 1)

    @pytest.mark.parametrize("pair", [(3, 0), (0, 1), (1, 1)])
    def test_short_code_per_connector(self, pair):
        assert source_ton_npi(SC, Setting(short_code=pair)) == pair

    def test_any_object_with_the_attributes(self):
        s = SimpleNamespace(alphanumeric=[5, 0], short_code=[0, 1], international=(1, 1))
        assert source_ton_npi(SC, s) == (0, 1)
        assert source_ton_npi(ALPHA, s) == (5, 0)

    def test_config_section(self):
        from smscenter.config import SourceTonNpi

        s = SourceTonNpi()
        assert source_ton_npi(ALPHA, s) == (5, 0)
        assert source_ton_npi(SC, s) == tuple(s.short_code)

    def test_invalid_has_none(self):
        with pytest.raises(ValueError):
            source_ton_npi(INVALID, Setting())

    def test_upstream_addr(self):
        assert source_addr_upstream("+33757001234", INTL) == "33757001234"
        assert source_addr_upstream("33757001234", INTL) == "33757001234"
        assert source_addr_upstream("36180", SC) == "36180"
        assert source_addr_upstream("+ACME", ALPHA) == "+ACME"


class TestCategory:
    @pytest.mark.parametrize(
        "service_type, expected",
        [
            ("MKT", MARKETING),
            ("mkt", MARKETING),
            ("Mkt", MARKETING),
            ("MARKETING", MARKETING),
            ("marketing", MARKETING),
            ("ALERT", ALERT),
            ("alert", ALERT),
            ("ALR", ALERT),
            ("TRANS", ALERT),
            ("trans", ALERT),
            (" MKT ", MARKETING),
        ],
    )
    @pytest.mark.parametrize("default", [MARKETING, ALERT])
    def test_override(self, service_type, expected, default):
        assert category_for(service_type, default) == expected
        assert category_for(service_type, default, allow_override=True) == expected

    @pytest.mark.parametrize("default", [MARKETING, ALERT])
    @pytest.mark.parametrize("service_type", ["", "  ", "CMT", "cmt"])
    def test_default(self, service_type, default):
        assert category_for(service_type, default) == default
        assert category_for(service_type, default, allow_override=False) == default

    @pytest.mark.parametrize(
        "service_type", ["X", "PROMO", "MKTG", "ALERTS", "WAP", "USSD", "VMN", "M K T", "ТRANS"]
    )
    def test_unknown(self, service_type):
        for allow in (True, False):
            with pytest.raises(UnknownCategory):
                category_for(service_type, MARKETING, allow)

    def test_no_override(self):
        assert category_for("MKT", MARKETING, allow_override=False) == MARKETING
        assert category_for("ALERT", ALERT, allow_override=False) == ALERT
        with pytest.raises(CategoryOverrideNotAllowed) as info:
            category_for("ALERT", MARKETING, allow_override=False)
        assert isinstance(info.value, UnknownCategory)
        with pytest.raises(CategoryOverrideNotAllowed):
            category_for("mkt", ALERT, allow_override=False)

    def test_bad_account_default_is_a_config_error(self):
        with pytest.raises(ValueError) as info:
            category_for("", "promo")
        assert not isinstance(info.value, UnknownCategory)

    def test_every_listed_service_type_fits_or_is_documented(self):
        # SMPP service_type is 5 characters at most; MARKETING only arrives by other means
        too_long = {k for k in SERVICE_TYPES if len(k) > 5}
        assert too_long == {"MARKETING"}
