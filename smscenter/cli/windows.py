"""``smscenter windows``: may marketing go now, and when is the next opening, per country."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import sys

import phonenumbers

from routing.windows import DEFAULT_KEY, DEFAULT_RULES, SendWindows

EXIT_USAGE = 2

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""Day names in English whatever the locale: ``%a`` would follow ``LC_TIME`` once anything in
the process calls ``setlocale``, and the output is read by scripts and tests."""


def stamp(when: datetime) -> str:
    """``Thu 2026-05-14 10:00``: the weekday from a fixed table, digits only otherwise."""
    return f"{WEEKDAYS[when.weekday()]} {when:%Y-%m-%d %H:%M}"


def parse_at(value: str | None) -> datetime:
    """``--at``: ISO 8601; without an offset it is read as UTC. Default: now."""
    if not value:
        return datetime.now(timezone.utc)
    at = datetime.fromisoformat(value)
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def report(windows: SendWindows, countries: list[str], at: datetime) -> list[str]:
    lines = []
    for country in countries:
        decision = windows.decide_country(None if country == "*" else country, at)
        zone = ZoneInfo(decision.zone)
        local = at.astimezone(zone)
        key, rule = windows.rule_for(None if country == "*" else country)
        if decision.open:
            state = "open: marketing may go now"
        else:
            opening = decision.next_open.astimezone(zone)
            state = f"closed: next opening {stamp(opening)} {zone.key}"
            holiday = windows.holiday(decision.country, local.date()) if rule.holidays_closed else None
            if holiday:
                state += f" (today: {holiday})"
        lines.append(f"{country:<3} {stamp(local)} {zone.key:<22} [{key}: {rule}]  {state}")
    return lines


def run(settings, country: str | None, at_text: str | None) -> int:
    if settings is not None:
        cfg = settings.windows
        windows = SendWindows(dict(cfg.rules) or None, alsace_moselle=cfg.alsace_moselle, default_zone=cfg.default_zone)
        configured = list(cfg.rules)
    else:
        windows, configured = SendWindows(), []
    try:
        at = parse_at(at_text)
    except ValueError:
        print(f"smscenter windows: --at {at_text!r}: expected an ISO 8601 date and time, "
              "e.g. 2026-05-01T21:00+02:00 (UTC without an offset)", file=sys.stderr)
        return EXIT_USAGE
    if country:
        country = country.upper()
        if country != DEFAULT_KEY and not phonenumbers.country_code_for_region(country):
            print(f"smscenter windows: --country {country!r}: not an ISO country code (FR, BE, CH…) "
                  "or \"*\"", file=sys.stderr)
            return EXIT_USAGE
        countries = [country]
    else:
        countries = sorted(set(DEFAULT_RULES) | set(configured) | {"CH"})
    for line in report(windows, countries, at):
        print(line)
    return 0
