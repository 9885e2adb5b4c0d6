"""SMPP 3.4 time format (§7.1.1): ``schedule_delivery_time`` and ``validity_period``.

Both fields are empty (meaning "now" / "the SMSC default") or exactly 16 characters
``YYMMDDhhmmsstnnp``:

* **absolute** (§7.1.1.1) — ``p`` is ``+`` or ``-``: a local date and time, ``t`` tenths of a
  second, and ``nn`` the offset of that local time from UTC in quarter hours (00–48), ahead
  (``+``) or behind (``-``). ``"200131120000004+"`` is 2020-01-31 12:00 at UTC+01:00, that is
  11:00 UTC.
* **relative** (§7.1.1.2) — ``p`` is ``R``: ``YY`` years, ``MM`` months, ``DD`` days,
  ``hh`` hours, ``mm`` minutes and ``ss`` seconds from now. ``"000001000000000R"`` is one
  day from now.

Choices the spec leaves open (documented here because callers and partners depend on them):

* ``YY`` is 2000 + YY (the format cannot express anything else we would accept: a schedule
  or a validity is never in the last century).
* Absolute values must be real dates and times: month 01–12, a day that exists in that month,
  hour 00–23, minute and second 00–59, ``nn`` 00–48.
* Relative fields are amounts, not a date, so each may be 00–99 (``"000000009000000R"`` is
  90 minutes). Years and months are added on the calendar — the same day of the month, clamped
  to the month's last day (Jan 31 + 1 month = Feb 28 or 29) — and days, hours, minutes and
  seconds as exact durations, all in UTC. ``tnn`` should be ``000``; any digits there are
  ignored, as most SMSCs do.
* Results are aware UTC datetimes. ``now`` must be aware; the module never reads a clock.

Malformed values raise :class:`InvalidTime` carrying the status the caller chose:
``ESME_RINVSCHED`` for ``schedule_delivery_time``, ``ESME_RINVEXPIRY`` for
``validity_period`` (see :func:`parse_schedule_delivery_time` / :func:`parse_validity_period`).
Whether a well-formed time is acceptable (not in the past, not years ahead) is policy, decided
by the caller.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

from .constants import CommandStatus
from .errors import RemoteProtocolError

__all__ = [
    "InvalidTime",
    "add_relative",
    "format_receipt_date",
    "format_smpp_time",
    "parse_schedule_delivery_time",
    "parse_smpp_time",
    "parse_validity_period",
]

MAX_OFFSET_QUARTERS = 48
"""§7.1.1.1: ``nn`` is 00–48 quarter hours (±12 hours)."""

_LENGTH = 16
_DIGITS = frozenset("0123456789")


class InvalidTime(RemoteProtocolError):
    """A malformed SMPP time; ``status`` is ESME_RINVSCHED or ESME_RINVEXPIRY, as the caller
    asked."""

    def __init__(self, message: str, status: CommandStatus = CommandStatus.ESME_RINVSCHED) -> None:
        super().__init__(message, status)


def _utc(dt: datetime, what: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (UTC), got a naive one")
    return dt.astimezone(timezone.utc)


def add_relative(
    now: datetime,
    years: int = 0,
    months: int = 0,
    days: int = 0,
    hours: int = 0,
    minutes: int = 0,
    seconds: int = 0,
) -> datetime:
    """``now`` plus a relative SMPP period: years and months on the calendar (day clamped to
    the end of the month), the rest as an exact duration."""
    total_months = now.month - 1 + months + 12 * years
    year, month = now.year + total_months // 12, total_months % 12 + 1
    day = min(now.day, calendar.monthrange(year, month)[1])
    moved = now.replace(year=year, month=month, day=day)
    return moved + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_smpp_time(
    value: str,
    now: datetime,
    *,
    status: CommandStatus = CommandStatus.ESME_RINVSCHED,
) -> datetime | None:
    """Parse an SMPP time field into an aware UTC datetime; ``""`` gives ``None``.

    ``now`` (aware) is the base for relative values. ``status`` is carried by the
    :class:`InvalidTime` raised for a malformed value.
    """
    if not value:
        return None
    if len(value) != _LENGTH:
        raise InvalidTime(f"time must be 16 characters or empty, got {len(value)}", status)
    p = value[15]
    if p not in "+-R":
        raise InvalidTime(f"time must end with '+', '-' or 'R', got {p!r}", status)
    # str.isdigit accepts other scripts' digits (e.g. Arabic-Indic); we want ASCII only.
    if not _DIGITS.issuperset(value[:15]):
        raise InvalidTime("time fields must be ASCII digits", status)
    yy, mo, dd, hh, mi, ss = (int(value[i : i + 2]) for i in range(0, 12, 2))
    now = _utc(now, "now")

    if p == "R":
        try:
            return add_relative(now, yy, mo, dd, hh, mi, ss)
        except (OverflowError, ValueError):  # past year 9999: only with an absurd `now`
            raise InvalidTime(f"relative time {value!r} is out of range", status) from None

    tenths, quarters = int(value[12]), int(value[13:15])
    if not 1 <= mo <= 12:
        raise InvalidTime(f"month {mo:02d} out of range", status)
    year = 2000 + yy
    if not 1 <= dd <= calendar.monthrange(year, mo)[1]:
        raise InvalidTime(f"day {dd:02d} does not exist in {year}-{mo:02d}", status)
    if hh > 23 or mi > 59 or ss > 59:
        raise InvalidTime(f"time of day {hh:02d}:{mi:02d}:{ss:02d} out of range", status)
    if quarters > MAX_OFFSET_QUARTERS:
        raise InvalidTime(f"UTC offset {quarters} quarter hours is over 48", status)
    offset = timedelta(minutes=15 * quarters)
    local = datetime(year, mo, dd, hh, mi, ss, tenths * 100_000, tzinfo=timezone.utc)
    # The local time is `offset` ahead of UTC for '+', behind for '-'.
    return local - offset if p == "+" else local + offset


def parse_schedule_delivery_time(value: str, now: datetime) -> datetime | None:
    """``schedule_delivery_time``: malformed values raise with ESME_RINVSCHED."""
    return parse_smpp_time(value, now, status=CommandStatus.ESME_RINVSCHED)


def parse_validity_period(value: str, now: datetime) -> datetime | None:
    """``validity_period``: malformed values raise with ESME_RINVEXPIRY."""
    return parse_smpp_time(value, now, status=CommandStatus.ESME_RINVEXPIRY)


def format_smpp_time(dt: datetime) -> str:
    """Absolute SMPP time in UTC: ``YYMMDDhhmmss000+`` (tenths and offset zero; sub-second
    parts dropped). ``dt`` must be aware and in 2000–2099 once in UTC."""
    dt = _utc(dt, "dt")
    if not 2000 <= dt.year <= 2099:
        raise ValueError(f"year {dt.year} cannot be written as an SMPP time (2000-2099)")
    return dt.strftime("%y%m%d%H%M%S") + "000+"


def format_receipt_date(dt: datetime) -> str:
    """Delivery-receipt date (SMPP 3.4 Appendix B ``submit date`` / ``done date``):
    ``YYMMDDhhmm``. Aware values are written in UTC; naive ones are taken as already UTC."""
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%y%m%d%H%M")
