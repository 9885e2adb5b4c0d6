"""Send windows and holiday calendars (routing/windows.py), with real 2026 dates and a fake now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.windows import (
    AF2M_2026,
    ALWAYS,
    DEFAULT_RULES,
    SEED,
    SendWindows,
    WindowNeverOpens,
    WindowRule,
    WindowRuleError,
    parse_rule,
)

FR = "+33612345678"
RE = "+262692123456"
YT = "+262639012345"
GP = "+590690123456"
MQ = "+596696123456"
GF = "+594694123456"
BE = "+32470123456"
CH = "+41791234567"
US = "+14155552671"  # America/Los_Angeles from phonenumbers
NOWHERE = "+80012345678"  # international freephone: no country

GUADELOUPE, MARTINIQUE = "America/Guadeloupe", "America/Martinique"


def at(zone: str, text: str) -> datetime:
    """A local wall time in ``zone`` as aware UTC (fold 0)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def paris(text: str) -> datetime:
    return at("Europe/Paris", text)


WINDOWS = SendWindows()


# --- the table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, now, expected_next",
    [
        # Saturday 2 May 2026, 19:59 in Paris: open.
        (FR, paris("2026-05-02 19:59"), None),
        (FR, paris("2026-05-02 19:59:59.999999"), None),
        # Saturday 20:00: closed until Monday 4 May 08:00 (Sunday closed).
        (FR, paris("2026-05-02 20:00"), paris("2026-05-04 08:00")),
        # Thursday 30 April 20:30: Friday 1 May is a holiday, so Saturday 2 May 08:00.
        (FR, paris("2026-04-30 20:30"), paris("2026-05-02 08:00")),
        # Monday 13 July 21:00: 14 July is a holiday, so Wednesday 15 July 08:00.
        (FR, paris("2026-07-13 21:00"), paris("2026-07-15 08:00")),
        # Wednesday 13 May 20:30: Ascension on Thursday 14 May, so Friday 15 May 08:00.
        (FR, paris("2026-05-13 20:30"), paris("2026-05-15 08:00")),
        # Before 08:00 on a working day: the same day's 08:00.
        (FR, paris("2026-05-04 07:59"), paris("2026-05-04 08:00")),
        (FR, paris("2026-05-04 08:00"), None),
        # Easter Monday (6 April) and Whit Monday (25 May) are holidays.
        (FR, paris("2026-04-06 10:00"), paris("2026-04-07 08:00")),
        (FR, paris("2026-05-25 10:00"), paris("2026-05-26 08:00")),
        # Sunday 31 May: closed all day.
        (FR, paris("2026-05-31 12:00"), paris("2026-06-01 08:00")),
        # Good Friday (3 April) is not a holiday in France without Alsace-Moselle.
        (FR, paris("2026-04-03 10:00"), None),
        # Réunion, Monday 4 May: 08:30 local while Paris says 06:30.
        (RE, at("Indian/Reunion", "2026-05-04 08:30"), None),
        # Belgium, Tuesday 21 July (National Day): closed until Wednesday 08:00 Brussels.
        (BE, at("Europe/Brussels", "2026-07-21 10:00"), at("Europe/Brussels", "2026-07-22 08:00")),
        # Overseas abolition-of-slavery days, each in its own zone.
        (GP, at(GUADELOUPE, "2026-05-27 10:00"), at(GUADELOUPE, "2026-05-28 08:00")),
        (MQ, at(MARTINIQUE, "2026-05-22 10:00"), at(MARTINIQUE, "2026-05-23 08:00")),
        (GF, at("America/Cayenne", "2026-06-10 10:00"), at("America/Cayenne", "2026-06-11 08:00")),
        (YT, at("Indian/Mayotte", "2026-04-27 10:00"), at("Indian/Mayotte", "2026-04-28 08:00")),
        (RE, at("Indian/Reunion", "2027-12-20 10:00"), at("Indian/Reunion", "2027-12-21 08:00")),
        # ... which are ordinary days in metropolitan France.
        (FR, paris("2026-05-27 10:00"), None),
        (FR, paris("2026-06-10 10:00"), None),
        # Guadeloupe at 07:00 local is 13:00 in Paris: closed there.
        (GP, at(GUADELOUPE, "2026-05-26 07:00"), at(GUADELOUPE, "2026-05-26 08:00")),
    ],
)
def test_decide(number: str, now: datetime, expected_next: datetime | None) -> None:
    decision = WINDOWS.decide(number, now)
    assert decision.open is (expected_next is None)
    assert decision.next_open == expected_next
    assert WINDOWS.next_opening(number, now) == (expected_next or now)
    if expected_next is not None:
        assert decision.next_open.tzinfo is UTC


@pytest.mark.parametrize(
    "number, country, zone, rule_key",
    [
        (FR, "FR", "Europe/Paris", "FR"),
        (RE, "RE", "Indian/Reunion", "RE"),
        (YT, "YT", "Indian/Mayotte", "YT"),
        (GP, "GP", "America/Guadeloupe", "GP"),
        (MQ, "MQ", "America/Martinique", "MQ"),
        (GF, "GF", "America/Cayenne", "GF"),
        (BE, "BE", "Europe/Brussels", "BE"),
        (CH, "CH", "Europe/Zurich", "*"),
        (US, "US", "America/Los_Angeles", "*"),
        (NOWHERE, None, "UTC", "*"),
    ],
)
def test_country_zone_and_rule(number: str, country: str | None, zone: str, rule_key: str) -> None:
    decision = WINDOWS.decide(number, paris("2026-05-04 12:00"))
    assert (decision.country, decision.zone, decision.rule_key) == (country, zone, rule_key)


def test_ambiguous_zone_uses_the_default_zone() -> None:
    russia = "+79161234567"  # phonenumbers gives 16 zones for +7 9xx
    assert SendWindows().decide(russia, paris("2026-05-04 12:00")).zone == "UTC"
    windows = SendWindows(default_zone="Europe/Moscow")
    assert windows.decide(russia, paris("2026-05-04 12:00")).zone == "Europe/Moscow"
    with pytest.raises(WindowRuleError, match="time zone"):
        SendWindows(default_zone="Mars/Olympus")


def test_unknown_country_gets_the_default_rule() -> None:
    # UTC zone, seed rule, no holidays calendar: 07:59 UTC closed, 08:00 open.
    assert WINDOWS.decide(NOWHERE, datetime(2026, 5, 4, 7, 59, tzinfo=UTC)).next_open == datetime(
        2026, 5, 4, 8, 0, tzinfo=UTC
    )
    assert WINDOWS.decide(NOWHERE, datetime(2026, 12, 25, 12, tzinfo=UTC)).open
    always = SendWindows({"*": "always"})
    assert always.decide(NOWHERE, datetime(2026, 5, 3, 3, tzinfo=UTC)).open  # a Sunday night


def test_switzerland_federal_holiday() -> None:
    # Saturday 1 August 2026: Swiss National Day.
    decision = WINDOWS.decide(CH, at("Europe/Zurich", "2026-08-01 10:00"))
    assert not decision.open
    assert decision.next_open == at("Europe/Zurich", "2026-08-03 08:00")


# --- daylight saving -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, zone",
    [(FR, "Europe/Paris"), (BE, "Europe/Brussels"), (CH, "Europe/Zurich")],
)
@pytest.mark.parametrize(
    "saturday, monday, monday_utc",
    [
        # Spring forward on Sunday 29 March 2026: Monday 08:00 CEST is 06:00 UTC.
        ("2026-03-28", "2026-03-30", datetime(2026, 3, 30, 6, 0, tzinfo=UTC)),
        # Fall back on Sunday 25 October 2026: Monday 08:00 CET is 07:00 UTC.
        ("2026-10-24", "2026-10-26", datetime(2026, 10, 26, 7, 0, tzinfo=UTC)),
    ],
)
def test_dst_weekends(
    number: str, zone: str, saturday: str, monday: str, monday_utc: datetime
) -> None:
    decision = WINDOWS.decide(number, at(zone, f"{saturday} 20:30"))
    assert not decision.open
    assert decision.next_open == monday_utc
    local = decision.next_open.astimezone(ZoneInfo(zone))
    assert local.replace(tzinfo=None) == datetime.fromisoformat(f"{monday} 08:00")
    # The Saturday closes at local 20:00, whatever the offset.
    assert WINDOWS.closes_at(number, at(zone, f"{saturday} 12:00")) == at(zone, f"{saturday} 20:00")


def test_dst_in_the_us() -> None:
    # Sunday 8 March 2026, Los Angeles springs forward; Saturday 20:30 PST -> Monday 08:00 PDT.
    decision = WINDOWS.decide(US, at("America/Los_Angeles", "2026-03-07 20:30"))
    assert decision.next_open == datetime(2026, 3, 9, 15, 0, tzinfo=UTC)


def test_window_in_the_dst_gap_opens_at_the_transition() -> None:
    # Paris: 02:00-03:00 local does not exist on 29 March 2026 (01:00 UTC jumps to 03:00 CEST).
    windows = SendWindows({"FR": "sun 02:30-04:00, holidays"})
    now = paris("2026-03-29 01:00")
    opening = windows.next_opening(FR, now)
    assert opening == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert windows.is_open(FR, opening)
    assert not windows.is_open(FR, opening - timedelta(microseconds=1))
    # A window entirely inside the gap never happens that day: next Sunday.
    gone = SendWindows({"FR": "sun 02:00-03:00, holidays"})
    assert gone.next_opening(FR, now) == paris("2026-04-05 02:00")


def test_window_in_the_repeated_hour_opens_twice() -> None:
    # Paris, 25 October 2026: 02:00-03:00 local happens twice (00:00-01:00 and 01:00-02:00 UTC).
    windows = SendWindows({"FR": "sun 02:00-02:30, holidays"})
    first = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert windows.next_opening(FR, first - timedelta(minutes=5)) == first
    assert windows.closes_at(FR, first) == first + timedelta(minutes=30)
    assert windows.next_opening(FR, first + timedelta(minutes=45)) == second
    assert windows.closes_at(FR, second) == second + timedelta(minutes=30)


def test_midnight_dst_zone() -> None:
    # Santiago springs forward at 24:00 on Saturday 5 September 2026: Sunday starts at 01:00.
    windows = SendWindows({"*": "sun 00:00-02:00, holidays"}, default_zone="America/Santiago")
    opening = windows.next_opening(NOWHERE, datetime(2026, 9, 5, 12, tzinfo=UTC))
    local = opening.astimezone(ZoneInfo("America/Santiago"))
    assert (local.date(), local.hour, local.minute) == (date(2026, 9, 6), 1, 0)
    assert windows.is_open(NOWHERE, opening)
    assert not windows.is_open(NOWHERE, opening - timedelta(seconds=1))


# --- other rules -----------------------------------------------------------------------------


def test_af2m_preset() -> None:
    windows = SendWindows({"FR": "af2m-2026"})
    assert windows.decide(FR, paris("2026-05-04 21:00")).open
    assert windows.decide(FR, paris("2026-05-04 21:29:59")).open
    closed = windows.decide(FR, paris("2026-05-04 21:30"))
    assert not closed.open and closed.next_open == paris("2026-05-05 08:00")
    assert windows.closes_at(FR, paris("2026-05-04 21:00")) == paris("2026-05-04 21:30")
    # The seed rule still applies elsewhere.
    assert not windows.decide(BE, at("Europe/Brussels", "2026-05-04 21:00")).open


def test_two_ranges_a_day() -> None:
    windows = SendWindows({"FR": "mon-fri 09:00-12:00 14:00-18:00"})
    assert windows.decide(FR, paris("2026-05-04 11:00")).open
    assert windows.closes_at(FR, paris("2026-05-04 11:00")) == paris("2026-05-04 12:00")
    assert windows.decide(FR, paris("2026-05-04 12:30")).next_open == paris("2026-05-04 14:00")
    # Friday evening to Monday morning.
    assert windows.decide(FR, paris("2026-05-22 18:00")).next_open == paris("2026-05-26 09:00")


def test_rule_open_on_holidays() -> None:
    windows = SendWindows({"FR": "mon,wed,fri 10:00-16:00, holidays"})
    assert windows.decide(FR, paris("2026-05-01 11:00")).open  # Friday 1 May
    assert windows.decide(FR, paris("2026-05-04 16:00")).next_open == paris("2026-05-06 10:00")


def test_closes_at() -> None:
    assert WINDOWS.closes_at(FR, paris("2026-05-02 19:59")) == paris("2026-05-02 20:00")
    assert WINDOWS.closes_at(FR, paris("2026-05-02 20:00")) is None  # closed
    assert SendWindows({"FR": "always"}).closes_at(FR, paris("2026-05-02 20:00")) is None
    # Open all day every day but not on holidays: closes at the start of Christmas.
    allday = SendWindows({"FR": "mon-sun 00:00-24:00, no holidays"})
    assert allday.closes_at(FR, paris("2026-12-20 03:00")) == paris("2026-12-25 00:00")
    assert allday.next_opening(FR, paris("2026-12-25 12:00")) == paris("2026-12-26 00:00")


def test_alsace_moselle_is_opt_in() -> None:
    good_friday = paris("2026-04-03 10:00")
    st_stephen = paris("2026-12-26 10:00")  # a Saturday
    assert WINDOWS.decide(FR, good_friday).open
    assert WINDOWS.decide(FR, st_stephen).open
    alsace = SendWindows(alsace_moselle=True)
    assert alsace.decide(FR, good_friday).next_open == paris("2026-04-04 08:00")
    assert alsace.decide(FR, st_stephen).next_open == paris("2026-12-28 08:00")
    # Only metropolitan numbers: Réunion has no Good Friday holiday.
    assert alsace.decide(RE, at("Indian/Reunion", "2026-04-03 10:00")).open


def test_calendars() -> None:
    assert WINDOWS.holiday("FR", date(2026, 5, 25)) is not None  # Whit Monday
    assert WINDOWS.holiday("FR", date(2026, 5, 14)) is not None  # Ascension
    assert WINDOWS.holiday("FR", date(2026, 4, 6)) is not None  # Easter Monday
    assert WINDOWS.holiday("BE", date(2026, 7, 21)) is not None
    assert WINDOWS.holiday("FR", date(2026, 7, 21)) is None
    assert WINDOWS.holiday("RE", date(2026, 12, 20)) is not None
    assert WINDOWS.holiday("GP", date(2026, 5, 27)) is not None
    assert WINDOWS.holiday("MQ", date(2026, 5, 22)) is not None
    assert WINDOWS.holiday("GF", date(2026, 6, 10)) is not None
    assert WINDOWS.holiday("YT", date(2026, 4, 27)) is not None
    assert WINDOWS.holiday(None, date(2026, 12, 25)) is None
    assert WINDOWS.holiday("ZZ", date(2026, 12, 25)) is None


def test_decide_country() -> None:
    decision = WINDOWS.decide_country("RE", at("Indian/Reunion", "2026-05-04 08:30"))
    assert decision.open and decision.zone == "Indian/Reunion" and decision.rule_key == "RE"
    assert WINDOWS.decide_country("DE", paris("2026-05-04 12:00")).zone == "Europe/Berlin"
    assert WINDOWS.decide_country(None, paris("2026-05-04 12:00")).zone == "UTC"


def test_defaults_and_config() -> None:
    assert WINDOWS.rules == DEFAULT_RULES
    for country in ("FR", "BE", "RE", "YT", "GP", "MQ", "GF", "PM", "BL", "MF", "*"):
        assert DEFAULT_RULES[country] == SEED
    windows = SendWindows({"*": "always", "CH": AF2M_2026})
    assert windows.rules["FR"] == SEED and windows.rules["*"] == ALWAYS
    assert windows.rule_for("CH") == ("CH", AF2M_2026)
    assert windows.rule_for("US") == ("*", ALWAYS)
    with pytest.raises(WindowRuleError, match="'France'"):
        SendWindows({"France": SEED})
    with pytest.raises(WindowRuleError, match=r"rule for 'BE'.*past 24:00"):
        SendWindows({"BE": "mon-sat 08:00-25:00"})
    with pytest.raises(WindowRuleError):
        SendWindows({"BE": 42})  # type: ignore[dict-item]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        WINDOWS.decide(FR, datetime(2026, 5, 4, 12))


def test_empty_rules_cannot_be_built() -> None:
    with pytest.raises(WindowRuleError, match="day"):
        WindowRule(frozenset(), ((480, 1200),), True)
    with pytest.raises(WindowRuleError, match="range"):
        WindowRule(frozenset({0}), (), True)
    with pytest.raises(WindowRuleError, match="weekdays"):
        WindowRule(frozenset({7}), ((480, 1200),), True)
    with pytest.raises(WindowRuleError, match="overlap"):
        WindowRule(frozenset({0}), ((480, 700), (600, 900)), True)


def test_never_opens_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from routing import windows as module

    monkeypatch.setattr(module, "HORIZON_DAYS", 3)
    windows = SendWindows({"FR": "sun 08:00-09:00, no holidays"})
    with pytest.raises(WindowNeverOpens):
        windows.next_opening(FR, paris("2026-05-04 12:00"))  # Monday; Sunday is 6 days away


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, days, ranges, holidays_closed",
    [
        ("mon-sat 08:00-20:00, no holidays", {0, 1, 2, 3, 4, 5}, ((480, 1200),), True),
        ("seed", {0, 1, 2, 3, 4, 5}, ((480, 1200),), True),
        ("mon-sat 08:00-21:30, no holidays", {0, 1, 2, 3, 4, 5}, ((480, 1290),), True),
        ("af2m-2026", {0, 1, 2, 3, 4, 5}, ((480, 1290),), True),
        ("AF2M-2026", {0, 1, 2, 3, 4, 5}, ((480, 1290),), True),
        ("mon-fri 09:00-12:00 14:00-18:00", {0, 1, 2, 3, 4}, ((540, 720), (840, 1080)), True),
        ("mon-fri 14:00-18:00 09:00-12:00", {0, 1, 2, 3, 4}, ((540, 720), (840, 1080)), True),
        ("mon,wed,fri 10:00-16:00, holidays", {0, 2, 4}, ((600, 960),), False),
        ("Mon, Wed, Fri 10:00-16:00,holidays", {0, 2, 4}, ((600, 960),), False),
        ("always", set(range(7)), ((0, 1440),), False),
        ("daily 00:00-24:00, holidays", set(range(7)), ((0, 1440),), False),
        ("fri-mon 8:00-9:00", {4, 5, 6, 0}, ((480, 540),), True),
        ("saturday 08:00-12:00 12:00-13:00", {5}, ((480, 780),), True),  # adjacent: merged
        ("mon-sat 08:00-20:00 no holidays", {0, 1, 2, 3, 4, 5}, ((480, 1200),), True),
    ],
)
def test_parse_rule(text: str, days: set[int], ranges: tuple, holidays_closed: bool) -> None:
    rule = parse_rule(text)
    assert rule == WindowRule(frozenset(days), ranges, holidays_closed)
    assert parse_rule(str(rule)) == rule


def test_presets_and_str() -> None:
    assert parse_rule("seed") == SEED
    assert str(SEED) == "mon-sat 08:00-20:00, no holidays"
    assert str(AF2M_2026) == "mon-sat 08:00-21:30, no holidays"
    assert str(ALWAYS) == "always"
    text = "mon,wed,fri 10:00-16:00, holidays"
    assert str(parse_rule(text)) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("08:00-25:00", "'25:00' is past 24:00"),
        ("mon-sat 08:00-25:00", "'25:00' is past 24:00"),
        ("mon-sat 08:00-24:01", "past 24:00"),
        ("mon-sat 08:61-20:00", "minutes past 59"),
        ("mun-sat 08:00-20:00", "unknown weekday 'mun'"),
        ("mon-sam 08:00-20:00", "unknown weekday 'sam'"),
        ("mon-sat 20:00-08:00", "does not end after it starts"),
        ("mon-sat 08:00-08:00", "does not end after it starts"),
        ("mon-sat 24:00-24:00", "cannot start at '24:00'"),
        ("mon-fri 09:00-12:00 11:00-18:00", "09:00-12:00 and 11:00-18:00 overlap"),
        ("garbage", "no time range"),
        ("", "empty"),
        ("   ", "empty"),
        ("mon-sat", "no time range"),
        ("08:00-20:00", "no days"),
        ("mon-sat 08:00-20:00, sometimes", "unknown clause 'sometimes'"),
        ("mon-sat 08:00-20:00 garbage", "cannot read time range 'garbage'"),
        ("mon-sat 08:00-20:00x", "cannot read time '20:00x'"),
        ("mon--sat 08:00-20:00", "cannot read days 'mon--sat'"),
        ("mon-sat 8h-20h", "no time range"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(WindowRuleError, match=message.replace("(", r"\(")) as info:
        parse_rule(text)
    assert isinstance(info.value, ValueError)


def test_parse_rule_rejects_non_strings() -> None:
    with pytest.raises(WindowRuleError):
        parse_rule(None)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------

RULE_TEXTS = [
    "seed",
    "af2m-2026",
    "mon-fri 09:00-12:00 14:00-18:00",
    "mon,wed,fri 10:00-16:00, holidays",
    "sun 00:00-03:30 23:00-24:00, holidays",  # around DST changes and midnight
    "mon-sun 00:00-24:00, no holidays",
    "sat-sun 01:30-02:45, holidays",
]
NUMBERS = [FR, RE, GP, BE, CH, US, NOWHERE]
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
END = datetime(2027, 12, 31, tzinfo=UTC).timestamp()


def _windows(rule_text: str, santiago: bool) -> SendWindows:
    rule = parse_rule(rule_text)
    return SendWindows(
        {"FR": rule, "RE": rule, "GP": rule, "BE": rule, "*": rule},
        default_zone="America/Santiago" if santiago else "UTC",
    )


@settings(max_examples=300, deadline=None)
@given(
    rule_text=st.sampled_from(RULE_TEXTS),
    number=st.sampled_from(NUMBERS),
    santiago=st.booleans(),
    ts=st.floats(min_value=START, max_value=END),
    fractions=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), max_size=8),
)
def test_next_opening_is_the_first_open_instant(
    rule_text: str, number: str, santiago: bool, ts: float, fractions: list[float]
) -> None:
    windows = _windows(rule_text, santiago)
    now = datetime.fromtimestamp(ts, UTC)
    opening = windows.next_opening(number, now)
    assert opening >= now
    assert opening.tzinfo is UTC
    assert windows.is_open(number, opening)
    if opening > now:
        gap = opening - now
        probes = [now, opening - timedelta(microseconds=1), opening - timedelta(seconds=1)]
        probes += [now + gap * f for f in fractions]
        probes += [now + gap * (i / 16) for i in range(16)]
        for probe in probes:
            if now <= probe < opening:
                assert not windows.is_open(number, probe), (probe, opening)
        assert windows.decide(number, now).next_open == opening
    else:
        assert windows.decide(number, now).open


@settings(max_examples=200, deadline=None)
@given(
    rule_text=st.sampled_from(RULE_TEXTS),
    number=st.sampled_from(NUMBERS),
    santiago=st.booleans(),
    ts=st.floats(min_value=START, max_value=END),
    fractions=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), max_size=8),
)
def test_closes_at_is_the_first_closed_instant(
    rule_text: str, number: str, santiago: bool, ts: float, fractions: list[float]
) -> None:
    windows = _windows(rule_text, santiago)
    opening = windows.next_opening(number, datetime.fromtimestamp(ts, UTC))
    close = windows.closes_at(number, opening)
    if close is None:  # never closes within the horizon: all day, every day, no holiday here
        assert parse_rule(rule_text).ranges == ((0, 1440),)
        assert len(parse_rule(rule_text).days) == 7
        for f in fractions:
            assert windows.is_open(number, opening + timedelta(days=300) * f)
        return
    assert close > opening
    assert not windows.is_open(number, close)
    span = close - opening
    probes = [opening, close - timedelta(microseconds=1)] + [opening + span * f for f in fractions]
    for probe in probes:
        if opening <= probe < close:
            assert windows.is_open(number, probe), (probe, close)


_days = st.frozensets(st.integers(0, 6), min_size=1)


@st.composite
def _rules(draw: st.DrawFn) -> WindowRule:
    cuts = sorted(draw(st.sets(st.integers(0, 1440), min_size=2, max_size=8)))
    pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    return WindowRule(draw(_days), tuple(pairs), draw(st.booleans()))


@given(_rules())
def test_str_round_trips(rule: WindowRule) -> None:
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize("lang", [None, "fr_FR.UTF-8", "de_DE.UTF-8", "C"])
def test_holiday_names_do_not_follow_the_locale(monkeypatch, lang) -> None:
    """The ``holidays`` package reads ``LANG`` when a calendar is made: the names must be the
    same English ones whatever the environment (no LANG gave "Ascension", not "Ascension Day")."""
    for name in ("LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    if lang:
        monkeypatch.setenv("LANG", lang)
    windows = SendWindows()
    assert windows.holiday("FR", date(2026, 5, 14)) == "Ascension Day"
    assert windows.holiday("BE", date(2026, 7, 21)) == "National Day"
    assert windows.holiday("DE", date(2026, 10, 3)) == "German Unity Day"
    assert windows.holiday("FR", date(2026, 5, 15)) is None


def test_windows_cli_day_names_do_not_follow_the_locale(monkeypatch) -> None:
    """``smscenter windows`` prints weekday names from a fixed table, not ``%a`` (LC_TIME)."""
    from smscenter.cli.windows import WEEKDAYS, stamp

    monday = datetime(2026, 5, 11, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert [stamp(monday + timedelta(days=i))[:3] for i in range(7)] == list(WEEKDAYS)
    assert stamp(monday) == "Mon 2026-05-11 08:00"
