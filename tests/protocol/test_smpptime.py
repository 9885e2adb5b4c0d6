"""SMPP 3.4 §7.1.1 time format (protocol/smpptime.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import CommandStatus
from protocol.errors import RemoteProtocolError
from protocol.smpptime import (
    InvalidTime,
    add_relative,
    format_receipt_date,
    format_smpp_time,
    parse_schedule_delivery_time,
    parse_smpp_time,
    parse_validity_period,
)

UTC = timezone.utc
NOW = datetime(2024, 3, 15, 10, 30, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestAbsolute:
    @pytest.mark.parametrize(
        "value, expected",
        [
            # UTC itself
            ("240315103000000+", utc(2024, 3, 15, 10, 30)),
            ("240315103000000-", utc(2024, 3, 15, 10, 30)),
            # Paris in winter: UTC+1 = 4 quarter hours ahead
            ("200131120000004+", utc(2020, 1, 31, 11, 0)),
            # Paris in summer: UTC+2
            ("240701090000008+", utc(2024, 7, 1, 7, 0)),
            # Réunion UTC+4, New York UTC-5 (20 quarters behind)
            ("240315140000016+", utc(2024, 3, 15, 10, 0)),
            ("240315050000020-", utc(2024, 3, 15, 10, 0)),
            # India UTC+5:30 (22 quarters): a non-whole-hour offset
            ("240315160000022+", utc(2024, 3, 15, 10, 30)),
            # tenths of a second
            ("240315103000500+", utc(2024, 3, 15, 10, 30, 0, 500_000)),
            ("240315103059900+", utc(2024, 3, 15, 10, 30, 59, 900_000)),
            # the offset crosses midnight, the month and the year
            ("250101003000004+", utc(2024, 12, 31, 23, 30)),
            ("241231233000004-", utc(2025, 1, 1, 0, 30)),
            # extremes of the offset (±12 h) and of the day
            ("240315235959048+", utc(2024, 3, 15, 11, 59, 59)),
            ("240315000000048-", utc(2024, 3, 15, 12, 0)),
            # leap day
            ("240229120000000+", utc(2024, 2, 29, 12, 0)),
            # YY is 2000 + YY
            ("000101000000000+", utc(2000, 1, 1)),
            ("991231235959000+", utc(2099, 12, 31, 23, 59, 59)),
        ],
    )
    def test_examples(self, value, expected):
        got = parse_smpp_time(value, NOW)
        assert got == expected
        assert got.tzinfo is not None and got.utcoffset() == timedelta(0)

    def test_absolute_ignores_now(self):
        other = datetime(2031, 1, 1, tzinfo=UTC)
        assert parse_smpp_time("200131120000004+", other) == utc(2020, 1, 31, 11, 0)

    def test_same_instant_in_different_offsets(self):
        paris = parse_smpp_time("240315113000004+", NOW)
        newyork = parse_smpp_time("240315053000020-", NOW)
        assert paris == newyork == NOW


class TestRelative:
    @pytest.mark.parametrize(
        "value, expected",
        [
            ("000000000000000R", NOW),
            ("000001000000000R", NOW + timedelta(days=1)),
            ("000000010000000R", NOW + timedelta(hours=1)),
            ("000000000100000R", NOW + timedelta(minutes=1)),
            ("000000000001000R", NOW + timedelta(seconds=1)),
            ("000000009000000R", NOW + timedelta(minutes=90)),  # fields are amounts
            ("000000000090000R", NOW + timedelta(seconds=90)),
            ("000007000000000R", NOW + timedelta(days=7)),
            ("000002033015000R", NOW + timedelta(days=2, hours=3, minutes=30, seconds=15)),
            ("000099999999000R", NOW + timedelta(days=99, hours=99, minutes=99, seconds=99)),
            ("000100000000000R", utc(2024, 4, 15, 10, 30)),  # one calendar month
            ("010000000000000R", utc(2025, 3, 15, 10, 30)),  # one calendar year
            ("001300000000000R", utc(2025, 4, 15, 10, 30)),  # 13 months
            ("011200000000000R", utc(2026, 3, 15, 10, 30)),
        ],
    )
    def test_examples(self, value, expected):
        assert parse_smpp_time(value, NOW) == expected

    def test_months_clamp_to_the_end_of_the_month(self):
        jan31 = utc(2024, 1, 31, 12, 0)
        assert parse_smpp_time("000100000000000R", jan31) == utc(2024, 2, 29, 12, 0)
        assert parse_smpp_time("000200000000000R", jan31) == utc(2024, 3, 31, 12, 0)
        leap = utc(2024, 2, 29, 8, 0)
        assert parse_smpp_time("010000000000000R", leap) == utc(2025, 2, 28, 8, 0)
        assert parse_smpp_time("040000000000000R", leap) == utc(2028, 2, 29, 8, 0)

    def test_months_then_days(self):
        # calendar part first, then the exact part: Jan 31 + 1 month = Feb 29, + 1 day = Mar 1
        assert parse_smpp_time("000101000000000R", utc(2024, 1, 31)) == utc(2024, 3, 1)

    def test_tnn_digits_are_ignored(self):
        assert parse_smpp_time("000001000000123R", NOW) == NOW + timedelta(days=1)

    def test_now_in_another_zone_gives_utc(self):
        paris = timezone(timedelta(hours=1))
        now = datetime(2024, 3, 15, 11, 30, tzinfo=paris)
        got = parse_smpp_time("000001000000000R", now)
        assert got == NOW + timedelta(days=1)
        assert got.utcoffset() == timedelta(0)

    def test_add_relative(self):
        assert add_relative(NOW) == NOW
        assert add_relative(NOW, months=-3) == utc(2023, 12, 15, 10, 30)
        assert add_relative(utc(2023, 12, 31), months=2) == utc(2024, 2, 29)


class TestEmpty:
    def test_empty_is_none(self):
        assert parse_smpp_time("", NOW) is None
        assert parse_schedule_delivery_time("", NOW) is None
        assert parse_validity_period("", NOW) is None


BAD = [
    pytest.param("2403151030000", id="too-short"),
    pytest.param("240315103000000+0", id="too-long"),
    pytest.param("240315103000000+\0", id="trailing-nul"),
    pytest.param(" 40315103000000+", id="space"),
    pytest.param("24031510300000 +", id="space-in-offset"),
    pytest.param("2403151030000a0+", id="letter"),
    pytest.param("24-3151030000000", id="dash-in-date"),
    pytest.param("24031510300000+-", id="sign-in-digits"),
    pytest.param("٢٤0315103000000+", id="non-ascii-digits"),
    pytest.param("240315103000000Z", id="bad-p"),
    pytest.param("240315103000000r", id="lowercase-r"),
    pytest.param("240315103000000 ", id="blank-p"),
    pytest.param("241315103000000+", id="month-13"),
    pytest.param("240015103000000+", id="month-00"),
    pytest.param("240300103000000+", id="day-00"),
    pytest.param("240332103000000+", id="day-32"),
    pytest.param("240230103000000+", id="feb-30"),
    pytest.param("230229103000000+", id="feb-29-not-leap"),
    pytest.param("240431103000000+", id="april-31"),
    pytest.param("240315243000000+", id="hour-24"),
    pytest.param("240315106000000+", id="minute-60"),
    pytest.param("240315103060000+", id="second-60"),
    pytest.param("240315103000049+", id="offset-49"),
    pytest.param("240315103000099-", id="offset-99"),
    pytest.param("00000100000000AR", id="relative-letter"),
]


class TestInvalid:
    @pytest.mark.parametrize("value", BAD)
    def test_rejected_with_the_status_asked_for(self, value):
        for status in (CommandStatus.ESME_RINVSCHED, CommandStatus.ESME_RINVEXPIRY):
            with pytest.raises(InvalidTime) as info:
                parse_smpp_time(value, NOW, status=status)
            assert info.value.status == status

    @pytest.mark.parametrize("value", BAD)
    def test_field_helpers(self, value):
        with pytest.raises(InvalidTime) as info:
            parse_schedule_delivery_time(value, NOW)
        assert info.value.status == CommandStatus.ESME_RINVSCHED
        with pytest.raises(InvalidTime) as info:
            parse_validity_period(value, NOW)
        assert info.value.status == CommandStatus.ESME_RINVEXPIRY

    def test_is_a_remote_protocol_error(self):
        with pytest.raises(RemoteProtocolError):
            parse_smpp_time("nonsense", NOW)
        assert issubclass(InvalidTime, RemoteProtocolError)

    def test_default_status_is_rinvsched(self):
        with pytest.raises(InvalidTime) as info:
            parse_smpp_time("x", NOW)
        assert info.value.status == CommandStatus.ESME_RINVSCHED

    def test_naive_now_is_a_bug(self):
        with pytest.raises(ValueError):
            parse_smpp_time("000001000000000R", datetime(2024, 3, 15))


class TestFormat:
    def test_format_smpp_time(self):
        assert format_smpp_time(utc(2024, 3, 15, 10, 30, 5)) == "240315103005000+"
        assert format_smpp_time(utc(2024, 3, 15, 10, 30, 5, 999_999)) == "240315103005000+"

    def test_format_converts_to_utc(self):
        paris = timezone(timedelta(hours=2))
        assert format_smpp_time(datetime(2024, 7, 1, 0, 15, tzinfo=paris)) == "240630221500000+"

    def test_format_rejects_naive_and_out_of_range(self):
        with pytest.raises(ValueError):
            format_smpp_time(datetime(2024, 3, 15))
        with pytest.raises(ValueError):
            format_smpp_time(utc(1999, 12, 31, 23, 59, 59))
        with pytest.raises(ValueError):
            format_smpp_time(utc(2100, 1, 1))

    def test_format_receipt_date(self):
        assert format_receipt_date(utc(2024, 3, 15, 10, 30, 59)) == "2403151030"
        paris = timezone(timedelta(hours=1))
        assert format_receipt_date(datetime(2024, 1, 1, 0, 5, tzinfo=paris)) == "2312312305"
        assert format_receipt_date(datetime(2024, 3, 15, 10, 30)) == "2403151030"  # naive: UTC


instants = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)


class TestProperties:
    @given(instants)
    def test_round_trip(self, dt):
        text = format_smpp_time(dt)
        assert len(text) == 16
        assert parse_smpp_time(text, NOW) == dt.replace(microsecond=0)

    @given(instants, st.integers(-48, 48))
    def test_any_offset_names_the_same_instant(self, dt, quarters):
        dt = dt.replace(microsecond=0)
        local = dt + timedelta(minutes=15 * quarters)
        if not 2000 <= local.year <= 2099:
            return
        sign = "-" if quarters < 0 else "+"
        text = local.strftime("%y%m%d%H%M%S") + f"0{abs(quarters):02d}{sign}"
        assert parse_smpp_time(text, NOW) == dt

    @given(st.text(max_size=20))
    def test_never_anything_but_invalid_time(self, value):
        try:
            got = parse_smpp_time(value, NOW)
        except InvalidTime:
            return
        assert got is None or got.tzinfo is not None

    @given(
        st.tuples(*[st.integers(0, 99)] * 6),
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
        ),
    )
    def test_relative_is_never_before_now(self, fields, now):
        text = "".join(f"{f:02d}" for f in fields) + "000R"
        got = parse_smpp_time(text, now)
        assert got >= now
        if fields[:2] == (0, 0):
            y, m, d, h, mi, s = fields
            assert got - now == timedelta(days=d, hours=h, minutes=mi, seconds=s)
