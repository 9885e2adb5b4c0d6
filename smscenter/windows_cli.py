"""``smscenter windows``: may marketing go now, and when is the next opening, per country."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from routing.windows import DEFAULT_RULES, SendWindows


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
            state = f"closed: next opening {opening:%a %Y-%m-%d %H:%M} {zone.key}"
        lines.append(f"{country:<3} {local:%a %Y-%m-%d %H:%M} {zone.key:<22} [{key}: {rule}]  {state}")
    return lines


def run(settings, country: str | None, at_text: str | None) -> int:
    if settings is not None:
        cfg = settings.windows
        windows = SendWindows(dict(cfg.rules) or None, alsace_moselle=cfg.alsace_moselle, default_zone=cfg.default_zone)
        configured = list(cfg.rules)
    else:
        windows, configured = SendWindows(), []
    at = parse_at(at_text)
    countries = [country.upper()] if country else sorted(set(DEFAULT_RULES) | set(configured) | {"CH"})
    for line in report(windows, countries, at):
        print(line)
    return 0
