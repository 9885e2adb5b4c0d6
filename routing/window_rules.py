"""Send-window rules: the days and hours marketing may go, as values and as text.

**Rules** (:class:`WindowRule`, from text with :func:`parse_rule`)::

    seed                                   = mon-sat 08:00-20:00, no holidays  (the seed note)
    af2m-2026                              = mon-sat 08:00-21:30, no holidays  (AF2M 2026 charter)
    always                                 = every day, all day, holidays too
    mon-fri 09:00-12:00 14:00-18:00        two ranges a day (holidays closed: the default)
    mon,wed,fri 10:00-16:00, holidays      open on public holidays too

Days are ``mon tue wed thu fri sat sun`` (or full English names), single or ``a-b`` ranges
(``fri-mon`` wraps round the week), joined by commas; ``daily`` is every day. Times are
``HH:MM`` 24-hour; a range's end is exclusive and may be ``24:00``; ranges in a day must not
overlap (adjacent ranges are merged) and cannot cross midnight (write two days' ranges
instead). The optional last clause (comma optional) is ``, no holidays`` (closed on public
holidays — also what a rule without the clause means, since the seed forbids marketing on
holidays) or ``, holidays`` (open on them). Anything else raises :class:`WindowRuleError`
saying what is wrong.

:data:`PRESETS` name the rules above that have one. Pure: no I/O, no clock, no time zones —
``routing.windows`` applies a rule in the recipient's zone and calendar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AF2M_2026",
    "ALWAYS",
    "MINUTES_PER_DAY",
    "PRESETS",
    "SEED",
    "WEEKDAYS",
    "WindowRule",
    "WindowRuleError",
    "parse_rule",
]

MINUTES_PER_DAY = 24 * 60

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    **{name: i for i, name in enumerate(WEEKDAYS)},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}


class WindowRuleError(ValueError):
    """A window rule that does not parse or makes no sense; the message says why."""


@dataclass(frozen=True, slots=True)
class WindowRule:
    """When marketing may go: on ``days`` (0=Monday … 6=Sunday), within ``ranges`` (minutes
    since local midnight, ``(start, end)`` with end exclusive, sorted, non-overlapping,
    0 ≤ start < end ≤ 1440), and on public holidays only if not ``holidays_closed``."""

    days: frozenset[int]
    ranges: tuple[tuple[int, int], ...]
    holidays_closed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        object.__setattr__(self, "ranges", tuple((int(s), int(e)) for s, e in self.ranges))
        if not self.days:
            raise WindowRuleError("a window rule needs at least one day")
        if not self.ranges:
            raise WindowRuleError("a window rule needs at least one time range")
        if not self.days <= frozenset(range(7)):
            raise WindowRuleError(f"weekdays are 0 (Monday) to 6 (Sunday), not {set(self.days)}")
        previous_end = -1
        for start, end in self.ranges:
            if not 0 <= start < end <= MINUTES_PER_DAY:
                raise WindowRuleError(f"invalid range {_hhmm(start)}-{_hhmm(end)}")
            if start < previous_end:
                raise WindowRuleError(
                    f"ranges overlap or are not sorted at {_hhmm(start)}-{_hhmm(end)}"
                )
            previous_end = end

    @property
    def always(self) -> bool:
        """Open at every instant."""
        return (
            len(self.days) == 7
            and self.ranges == ((0, MINUTES_PER_DAY),)
            and not self.holidays_closed
        )

    def open_on(self, weekday: int, is_holiday: bool) -> bool:
        """Whether the day has any window at all."""
        return weekday in self.days and not (is_holiday and self.holidays_closed)

    def __str__(self) -> str:
        """Canonical text; ``parse_rule(str(rule)) == rule``."""
        if self.always:
            return "always"
        ranges = " ".join(f"{_hhmm(s)}-{_hhmm(e)}" for s, e in self.ranges)
        tail = "no holidays" if self.holidays_closed else "holidays"
        return f"{_format_days(self.days)} {ranges}, {tail}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "mon-sun"
    runs: list[tuple[int, int]] = []
    for day in sorted(days):
        if runs and runs[-1][1] == day - 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == 6:  # wrap: fri-mon
        first = runs.pop(0)
        runs[-1] = (runs[-1][0], first[1])
    parts = []
    for a, b in runs:
        if a == b:
            parts.append(WEEKDAYS[a])
        else:
            parts.append(f"{WEEKDAYS[a]}-{WEEKDAYS[b]}")
    return ",".join(parts)


SEED = WindowRule(frozenset(range(6)), ((8 * 60, 20 * 60),), True)
"""The seed note's rule: no marketing 20:00–08:00, on Sundays or on public holidays."""
AF2M_2026 = WindowRule(frozenset(range(6)), ((8 * 60, 21 * 60 + 30),), True)
"""The AF2M 2026 charter: 08:00–21:30, Monday to Saturday, not on public holidays."""
ALWAYS = WindowRule(frozenset(range(7)), ((0, MINUTES_PER_DAY),), False)

PRESETS: dict[str, WindowRule] = {"seed": SEED, "af2m-2026": AF2M_2026, "always": ALWAYS}

_HOLIDAY_CLAUSES = {
    "no holidays": True,
    "not on holidays": True,
    "holidays closed": True,
    "closed on holidays": True,
    "holidays": False,
    "holidays open": False,
    "open on holidays": False,
}
_CLAUSE_RE = re.compile(r",\s*([^,\d]*?)\s*$")
_KNOWN_CLAUSE_RE = re.compile(
    r"(?:,|\s)\s*(" + "|".join(c.replace(" ", r"\s+") for c in _HOLIDAY_CLAUSES) + r")\s*$"
)
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_RANGE_RE = re.compile(r"([^\s,-]+)-([^\s,-]+)")


def parse_rule(text: str) -> WindowRule:
    """A :class:`WindowRule` from its text (see the module notes), or a preset name
    (``seed``, ``af2m-2026``, ``always``). Raises :class:`WindowRuleError`."""
    if not isinstance(text, str):
        raise WindowRuleError(f"a window rule is a string, not {type(text).__name__}")
    source = " ".join(text.split())
    body = source.lower()
    if not body:
        raise WindowRuleError("empty window rule")
    if body in PRESETS:
        return PRESETS[body]

    holidays_closed = True
    known = _KNOWN_CLAUSE_RE.search(body)
    if known and _TIME_RE.search(body[: known.start()]):
        holidays_closed = _HOLIDAY_CLAUSES[" ".join(known.group(1).split())]
        body = body[: known.start()].rstrip()
    else:
        clause = _CLAUSE_RE.search(body)
        if clause and _TIME_RE.search(body[: clause.start()]):
            raise WindowRuleError(
                f"unknown clause {clause.group(1)!r} in {source!r}:"
                " expected 'no holidays' or 'holidays'"
            )

    first_time = _TIME_RE.search(body)
    if first_time is None:
        raise WindowRuleError(
            f"no time range in {source!r}: expected e.g. 'mon-sat 08:00-20:00, no holidays'"
        )
    day_text, range_text = body[: first_time.start()].strip(), body[first_time.start() :]
    ranges = _parse_ranges(range_text, source)
    if not day_text:
        raise WindowRuleError(f"no days in {source!r}: expected e.g. 'mon-sat 08:00-20:00'")
    days = _parse_days(day_text, source)
    return WindowRule(days, ranges, holidays_closed)


def _parse_days(text: str, source: str) -> frozenset[int]:
    if text in ("daily", "every day", "all"):
        return frozenset(range(7))
    days: set[int] = set()
    for item in re.split(r"\s*,\s*", text):
        ends = [part.strip() for part in item.split("-")]
        if not 1 <= len(ends) <= 2 or not all(ends):
            raise WindowRuleError(f"cannot read days {item!r} in {source!r}")
        numbers = []
        for name in ends:
            if name not in _DAY_NAMES:
                raise WindowRuleError(
                    f"unknown weekday {name!r} in {source!r}: use {', '.join(WEEKDAYS)}"
                )
            numbers.append(_DAY_NAMES[name])
        first, last = numbers[0], numbers[-1]
        day = first
        days.add(day)
        while day != last:  # "fri-mon" wraps round the week
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def _parse_minute(token: str, source: str, *, is_end: bool) -> int:
    match = _TIME_RE.fullmatch(token)
    if match is None:
        raise WindowRuleError(f"cannot read time {token!r} in {source!r}: expected HH:MM")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes >= 60:
        raise WindowRuleError(f"minutes past 59 in {token!r} in {source!r}")
    value = hours * 60 + minutes
    if value > MINUTES_PER_DAY:
        raise WindowRuleError(f"time {token!r} is past 24:00 in {source!r}")
    if value == MINUTES_PER_DAY and not is_end:
        raise WindowRuleError(f"a range cannot start at {token!r} in {source!r}")
    return value


def _parse_ranges(text: str, source: str) -> tuple[tuple[int, int], ...]:
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    ranges: list[tuple[int, int]] = []
    for token in tokens:
        match = _RANGE_RE.fullmatch(token)
        if match is None:
            raise WindowRuleError(
                f"cannot read time range {token!r} in {source!r}: expected HH:MM-HH:MM"
            )
        start = _parse_minute(match.group(1), source, is_end=False)
        end = _parse_minute(match.group(2), source, is_end=True)
        if start >= end:
            raise WindowRuleError(
                f"range {token!r} in {source!r} does not end after it starts"
                " (ranges cannot cross midnight: split them by day)"
            )
        ranges.append((start, end))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start < merged[-1][1]:
            prev = merged[-1]
            raise WindowRuleError(
                f"ranges {_hhmm(prev[0])}-{_hhmm(prev[1])} and {_hhmm(start)}-{_hhmm(end)}"
                f" overlap in {source!r}"
            )
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)
