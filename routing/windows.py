"""Send windows: when marketing may go to a number, in the recipient's local time.

Pure: no I/O and no clock reads — every question takes ``now`` (an aware datetime) and every
answer is an aware UTC datetime.

**Rules** (:class:`WindowRule`, from text with :func:`parse_rule`: ``mon-sat 08:00-20:00, no
holidays``, or the presets ``seed``, ``af2m-2026``, ``always``) are in ``routing.window_rules``,
which says their grammar; this module applies them to a number.

**Countries** (ISO region of the number, :func:`routing.numbers.country_of`):

=======  ======================  ======================================================
country  zone                    public holidays (``holidays`` package)
=======  ======================  ======================================================
FR       Europe/Paris            France; with ``alsace_moselle=True`` subdiv "57" (adds
                                 Good Friday and 26 December — a number does not tell
                                 the region, so it applies to every +33 number)
RE       Indian/Reunion          France subdiv "974": + 20 December (abolition of slavery)
YT       Indian/Mayotte          France subdiv "976": + 27 April
GP       America/Guadeloupe      France subdiv "971": + 27 May, and what the package adds
                                 there (Good Friday, Mi-Carême, 21 July Victor Schœlcher)
MQ       America/Martinique      France subdiv "972": + 22 May, 21 July
GF       America/Cayenne         France subdiv "973": + 10 June
PM/BL/MF America/Miquelon,       France subdiv "PM" / "BL" (+ 9 October) /
         St_Barthelemy, Marigot  "MF" (+ 28 May, 21 July)
BE       Europe/Brussels         Belgium (incl. 21 July, National Day)
CH       Europe/Zurich           Switzerland (federal days only; cantons differ)
others   phonenumbers' zone for  ``holidays.country_holidays(country)`` when the package
         the number when it      knows the country, else none (days and hours only)
         names exactly one, else
         ``default_zone`` (UTC)
=======  ======================  ======================================================

The French calendar is the legal public holidays (Code du travail L3133-1) as the package gives
them: 1 Jan, Easter Monday, 1 May, 8 May, Ascension, **Whit Monday (included**, as "Pentecost
Monday": it is a legal public holiday even where it is worked as the "journée de
solidarité"), 14 July, 15 Aug, 1 Nov, 11 Nov, 25 Dec.

**Default rules** (:data:`DEFAULT_RULES`): the seed rule for FR, BE and the French overseas
departments and collectivities (RE, YT, GP, MQ, GF, PM, BL, MF), and for ``"*"``, the rule of
every other country and of numbers with no known country (the conservative choice: the seed
calls marketing outside these hours illegal, and nothing says other countries are laxer).
Configured rules are laid over the defaults, so a config may set only ``"*" = "always"`` and
keep the seed for FR and BE.

**Time zones and DST.** Windows are wall-clock times in the recipient's zone (``zoneinfo``):
the opening at local 08:00 on a DST change day is the real local 08:00. A wall time skipped by
a spring-forward gap opens at the transition; a wall time repeated by a fall-back is in the
window both times. (At most one offset change per local day is looked for: true of every
real zone in the horizon we search.)
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType
from phonenumbers import timezone as pn_timezone

from .numbers import country_of
from .window_rules import (
    AF2M_2026,
    ALWAYS,
    PRESETS,
    SEED,
    WindowRule,
    WindowRuleError,
    parse_rule,
)

__all__ = [
    "ALWAYS",
    "AF2M_2026",
    "DEFAULT_RULES",
    "DEFAULT_KEY",
    "FRENCH_OVERSEAS",
    "HORIZON_DAYS",
    "PRESETS",
    "SEED",
    "Decision",
    "SendWindows",
    "WindowNeverOpens",
    "WindowRule",
    "WindowRuleError",
    "parse_rule",
]

HORIZON_DAYS = 400
"""How far ahead ``next_opening`` and ``closes_at`` look (local days)."""

DEFAULT_KEY = "*"

FRENCH_OVERSEAS = frozenset({"RE", "YT", "GP", "MQ", "GF", "PM", "BL", "MF"})
"""French overseas departments and collectivities in the French numbering plan."""

ZONES: dict[str, str] = {
    "FR": "Europe/Paris",
    "RE": "Indian/Reunion",
    "YT": "Indian/Mayotte",
    "GP": "America/Guadeloupe",
    "MQ": "America/Martinique",
    "GF": "America/Cayenne",
    "PM": "America/Miquelon",
    "BL": "America/St_Barthelemy",
    "MF": "America/Marigot",
    "BE": "Europe/Brussels",
    "CH": "Europe/Zurich",
}
"""Fixed zones; phonenumbers gives "Etc/Unknown" for PM and two zones for +262."""

_FRANCE_SUBDIVS = {
    "RE": "974",
    "YT": "976",
    "GP": "971",
    "MQ": "972",
    "GF": "973",
    "PM": "PM",
    "BL": "BL",
    "MF": "MF",
}
ALSACE_MOSELLE_SUBDIV = "57"  # "6AE" (Alsace) has the same days


class WindowNeverOpens(ValueError):
    """The rule has no opening within :data:`HORIZON_DAYS` days."""


DEFAULT_RULES: dict[str, WindowRule] = {
    **dict.fromkeys(("FR", "BE", *sorted(FRENCH_OVERSEAS)), SEED),
    DEFAULT_KEY: SEED,
}


HOLIDAY_LANGUAGES = ("en_US", "en_GB")
"""The language of holiday names, fixed: the ``holidays`` package otherwise takes it from the
environment's ``LANG`` and falls back to the country's own language, so the same date was
"Ascension Day" under ``LANG=en_US.UTF-8`` and "Ascension" with no ``LANG`` (a bare container,
a systemd unit). English when the calendar has it, else the calendar's own default."""


def _language(calendar_class: Any) -> str | None:
    supported = getattr(calendar_class, "supported_languages", ()) or ()
    for language in HOLIDAY_LANGUAGES:
        if language in supported:
            return language
    return getattr(calendar_class, "default_language", None)


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether marketing may go now to a number, and if not, when."""

    open: bool
    next_open: datetime | None  # aware UTC, when closed
    country: str | None
    zone: str
    rule_key: str  # the key of the rule applied: a country code or "*"


@dataclass(frozen=True, slots=True)
class _Place:
    country: str | None
    zone: ZoneInfo
    rule_key: str
    rule: WindowRule
    calendar: Any  # holidays.HolidayBase | None


class SendWindows:
    """The send-window policy for all countries.

    ``rules`` maps ISO region codes (``"FR"``) and ``"*"`` to rules (a :class:`WindowRule` or
    its text); they are laid over :data:`DEFAULT_RULES`. ``alsace_moselle`` adds the
    Alsace-Moselle holidays to every FR number. ``default_zone`` is the zone of numbers
    whose zone is unknown or ambiguous.
    """

    def __init__(
        self,
        rules: dict[str, WindowRule | str] | None = None,
        *,
        alsace_moselle: bool = False,
        default_zone: str = "UTC",
    ) -> None:
        merged: dict[str, WindowRule] = dict(DEFAULT_RULES)
        for key, rule in (rules or {}).items():
            if key != DEFAULT_KEY and not re.fullmatch(r"[A-Z]{2}", key):
                raise WindowRuleError(
                    f"rule key {key!r} is not an ISO country code (\"FR\") or \"*\""
                )
            if isinstance(rule, str):
                try:
                    rule = parse_rule(rule)
                except WindowRuleError as exc:
                    raise WindowRuleError(f"rule for {key!r}: {exc}") from None
            elif not isinstance(rule, WindowRule):
                raise WindowRuleError(f"rule for {key!r} is not a window rule: {rule!r}")
            merged[key] = rule
        self.rules: dict[str, WindowRule] = merged
        self.alsace_moselle = alsace_moselle
        try:
            self.default_zone = ZoneInfo(default_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowRuleError(f"unknown time zone {default_zone!r}") from None
        self._calendars: dict[str, Any] = {}

    # -- lookups ---------------------------------------------------------------------------

    def rule_for(self, country: str | None) -> tuple[str, WindowRule]:
        """(key, rule) applied to a country (``None``: unknown country → ``"*"``)."""
        if country is not None and country in self.rules:
            return country, self.rules[country]
        return DEFAULT_KEY, self.rules[DEFAULT_KEY]

    def zone_for(self, e164: str, country: str | None = None) -> ZoneInfo:
        """The recipient's zone (see the module notes)."""
        if country is None:
            country = country_of(e164)
        if country in ZONES:
            return ZoneInfo(ZONES[country])
        name = _zone_of_number(e164)
        return ZoneInfo(name) if name else self.default_zone

    def country_zone(self, country: str | None) -> ZoneInfo:
        """The zone of a country without a number (e.g. for the CLI): the fixed table, else
        phonenumbers' zone for the country's example mobile number if it names one."""
        if country in ZONES:
            return ZoneInfo(ZONES[country])
        name = _zone_of_country(country) if country else None
        return ZoneInfo(name) if name else self.default_zone

    def calendar(self, country: str | None) -> Any:
        """The ``holidays`` calendar of a country, or None if the package has none."""
        if country is None:
            return None
        try:
            return self._calendars[country]
        except KeyError:
            pass
        calendar: Any
        if country == "FR":
            subdiv = ALSACE_MOSELLE_SUBDIV if self.alsace_moselle else None
            calendar = holidays.France(subdiv=subdiv, language=_language(holidays.France))
        elif country in _FRANCE_SUBDIVS:
            calendar = holidays.France(subdiv=_FRANCE_SUBDIVS[country], language=_language(holidays.France))
        elif country == "BE":
            calendar = holidays.Belgium(language=_language(holidays.Belgium))
        else:
            try:
                cls = type(holidays.country_holidays(country))
            except NotImplementedError:
                calendar = None
            else:
                calendar = cls(language=_language(cls))
        self._calendars[country] = calendar
        return calendar

    def holiday(self, country: str | None, day: date) -> str | None:
        """The name of the public holiday on ``day`` in ``country``, if any."""
        calendar = self.calendar(country)
        return calendar.get(day) if calendar is not None else None

    def _place(self, e164: str) -> _Place:
        country = country_of(e164)
        key, rule = self.rule_for(country)
        return _Place(country, self.zone_for(e164, country), key, rule, self.calendar(country))

    def _country_place(self, country: str | None) -> _Place:
        key, rule = self.rule_for(country)
        return _Place(country, self.country_zone(country), key, rule, self.calendar(country))

    # -- questions ------------------------------------------------------------------------

    def decide(self, e164: str, now: datetime) -> Decision:
        """Open now? If not, the next opening. ``now`` must be aware."""
        return self._decide(self._place(e164), _utc(now))

    def decide_country(self, country: str | None, now: datetime) -> Decision:
        """As :meth:`decide` for a country rather than a number (the CLI's question)."""
        return self._decide(self._country_place(country), _utc(now))

    def is_open(self, e164: str, now: datetime) -> bool:
        return _is_open(self._place(e164), _utc(now))

    def next_opening(self, e164: str, now: datetime) -> datetime:
        """The first instant ≥ ``now`` when marketing may go (``now`` itself when open), as
        aware UTC. Raises :class:`WindowNeverOpens` past :data:`HORIZON_DAYS`."""
        return _next_opening(self._place(e164), _utc(now))

    def closes_at(self, e164: str, now: datetime) -> datetime | None:
        """When the window open at ``now`` closes (aware UTC): None if closed at ``now``, or
        if it does not close within :data:`HORIZON_DAYS` (e.g. ``always``)."""
        place = self._place(e164)
        now = _utc(now)
        if not _is_open(place, now):
            return None
        return _scan(place, now, want_open=False)

    def _decide(self, place: _Place, now: datetime) -> Decision:
        is_open = _is_open(place, now)
        return Decision(
            open=is_open,
            next_open=None if is_open else _next_opening(place, now),
            country=place.country,
            zone=place.zone.key,
            rule_key=place.rule_key,
        )


# --- the computation -------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(UTC)


def _day_open(place: _Place, day: date) -> bool:
    is_holiday = place.rule.holidays_closed and place.calendar is not None and day in place.calendar
    return place.rule.open_on(day.weekday(), is_holiday)


def _is_open(place: _Place, instant: datetime) -> bool:
    local = instant.astimezone(place.zone)
    if not _day_open(place, local.date()):
        return False
    micros = ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond
    return any(s * 60_000_000 <= micros < e * 60_000_000 for s, e in place.rule.ranges)


def _next_opening(place: _Place, now: datetime) -> datetime:
    if _is_open(place, now):
        return now
    found = _scan(place, now, want_open=True)
    if found is None:
        raise WindowNeverOpens(
            f"rule {place.rule_key!r} ({place.rule}) does not open within {HORIZON_DAYS} days"
        )
    return found


def _scan(place: _Place, now: datetime, *, want_open: bool) -> datetime | None:
    """The first instant > now (≥ now) where openness becomes ``want_open``.

    Openness only changes where the wall clock reaches a range's start or end (at either
    fold; for a wall time skipped by a DST gap, at the transition), or at a DST transition
    itself. Those candidates are generated local day by local day and checked in time order;
    a candidate for a later local day is never earlier than two days before that day's
    midnight (as UTC), which bounds what may be checked before the next day is generated.
    """
    zone = place.zone
    first_day = now.astimezone(zone).date() - timedelta(days=1)
    heap: list[datetime] = []
    seen: set[datetime] = set()

    def push(instant: datetime) -> None:
        if instant >= now and instant not in seen:
            seen.add(instant)
            heapq.heappush(heap, instant)

    for offset in range(HORIZON_DAYS + 2):
        day = first_day + timedelta(days=offset)
        if _day_open(place, day):
            for start, end in place.rule.ranges:
                for instant in _wall_instants(day, start if want_open else end, zone):
                    push(instant)
        transition = _transition_in(day, zone)
        if transition is not None:
            push(transition)
        bound = datetime.combine(day + timedelta(days=1), time(), UTC) - timedelta(days=2)
        while heap and heap[0] < bound:
            candidate = heapq.heappop(heap)
            if _is_open(place, candidate) == want_open:
                return candidate
    while heap:
        candidate = heapq.heappop(heap)
        if _is_open(place, candidate) == want_open:
            return candidate
    return None


def _wall_instants(day: date, minute: int, zone: ZoneInfo) -> list[datetime]:
    """UTC instants at which the wall clock in ``zone`` reaches ``minute`` past midnight of
    ``day`` (1440 is the next midnight): one normally, two in a fall-back repeat, and for a
    time skipped by a spring-forward gap, the transition instant."""
    naive = datetime.combine(day, time()) + timedelta(minutes=minute)
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early.astimezone(zone).replace(tzinfo=None) == naive:
        return [early] if early == late else sorted({early, late})
    # In a gap: fold=0 reads it with the offset before (later instant), fold=1 with the
    # offset after (earlier instant); the transition lies between.
    lo, hi = min(early, late), max(early, late)
    return [_first_with_offset(lo, hi, zone, hi.astimezone(zone).utcoffset())]


def _transition_in(day: date, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of an offset change around local ``day`` (±1 hour), if any."""
    lo = datetime.combine(day, time(), zone).astimezone(UTC) - timedelta(hours=1)
    hi = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC) + timedelta(
        hours=1
    )
    after = hi.astimezone(zone).utcoffset()
    if lo.astimezone(zone).utcoffset() == after:
        return None
    return _first_with_offset(lo, hi, zone, after)


def _first_with_offset(lo: datetime, hi: datetime, zone: ZoneInfo, offset: Any) -> datetime:
    """Binary search (to the second) for the first instant in (lo, hi] with ``offset``,
    ``hi`` having it."""
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == offset:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


@lru_cache(maxsize=4096)
def _zone_of_number(e164: str) -> str | None:
    try:
        number = phonenumbers.parse(e164 if e164.startswith("+") else "+" + e164, None)
    except NumberParseException:
        return None
    return _single_zone(pn_timezone.time_zones_for_number(number))


@lru_cache(maxsize=512)
def _zone_of_country(country: str) -> str | None:
    number = phonenumbers.example_number_for_type(country, PhoneNumberType.MOBILE)
    if number is None:
        return None
    return _single_zone(pn_timezone.time_zones_for_number(number))


def _single_zone(names: tuple[str, ...]) -> str | None:
    if len(names) != 1 or names[0] == pn_timezone.UNKNOWN_TIMEZONE:
        return None
    try:
        ZoneInfo(names[0])
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return names[0]
