"""Logs that survive floods: repeated events aggregated, one line per key and interval.

A peer that sends 10,000 refused PDUs a second must not write 10,000 lines a second (the log
is then the denial of service: 140 MB a minute, the journal rate-limiting everything else
away), and a database that is down must not write one traceback per PDU. So:

- ``AggregatedLog``: the first occurrence of a key is reported at once (the caller logs it
  with whatever detail it has); later ones within ``interval`` are only counted, and one line
  with their count is written when the interval ends (then the key starts again).
- ``Tally``: one log event aggregated per label set (``connection_refused`` per IP and reason,
  ``bind_refused`` per IP, reason and account).
- ``RefusalLog``: refusals per (account, reason), as ``requests_refused`` lines with a count.
- ``ErrorLog``: a traceback once per cause (exception type and where it was raised), for the
  life of the process; later ones of the same cause are counted and summarised per interval.

The ``totals`` of the last two are what /metrics shows. Keys are bounded (``max_keys``): past it the
oldest are forgotten, so a stream of distinct keys cannot grow memory.
"""

from __future__ import annotations

import traceback
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Hashable

import structlog

from protocol.constants import CommandStatus

if TYPE_CHECKING:  # a type only: runtime/timers.py's ``every`` logs its failures with ErrorLog
    from smscenter.runtime.timers import Timers

log = structlog.get_logger("smscenter.floodlog")


class AggregatedLog:
    """Counts occurrences per key; ``summary(key, count)`` is called at the end of each
    interval in which more than the first occurrence happened."""

    def __init__(self, timers: Timers, interval: float, summary: Callable[[Hashable, int], None],
                 max_keys: int = 10_000, overflow: Hashable | None = None) -> None:
        self.timers = timers
        self.interval = interval
        self.summary = summary
        self.max_keys = max_keys
        #: Where occurrences of new keys are counted once ``max_keys`` keys are open (summarised
        #: at the end of the interval); None: they are only counted in ``totals``.
        self.overflow = overflow
        self._open: dict[Hashable, int] = {}  # key -> occurrences since its last line
        self.totals: OrderedDict[Hashable, int] = OrderedDict()

    def note(self, key: Hashable) -> bool:
        """Count one occurrence; True if the caller should log this one (the first of its
        interval), False if it is only counted."""
        totals = self.totals
        totals[key] = totals.pop(key, 0) + 1  # most recent last
        if len(totals) > self.max_keys:
            totals.popitem(last=False)
        if key in self._open:
            self._open[key] += 1
            return False
        if len(self._open) >= self.max_keys:
            overflow = self.overflow
            if overflow is None:
                return False  # counted in totals only
            if overflow in self._open:
                self._open[overflow] += 1
            else:  # one more open key than max_keys: the overflow's, summarised with its count
                self._open[overflow] = 1
                self.timers.call_later(self.interval, self._flush, overflow)
            return False
        self._open[key] = 0
        self.timers.call_later(self.interval, self._flush, key)
        return True

    def _flush(self, key: Hashable) -> None:
        count = self._open.get(key, 0)
        if count == 0:
            self._open.pop(key, None)  # quiet for a whole interval: the next one is logged at once
            return
        self._open[key] = 0
        self.timers.call_later(self.interval, self._flush, key)
        self.summary(key, count)

    def close(self) -> None:
        """Summarise what is still counted (at shutdown); the pending timers then find nothing."""
        open_, self._open = self._open, {}
        for key, count in open_.items():
            if count:
                self.summary(key, count)

    @property
    def open_keys(self) -> int:
        return len(self._open)


class Tally:
    """One log event aggregated per label set: the first ``add(**labels)`` of a label set is
    logged at once (``count=1``), later ones in the same interval as one line with their count
    when it ends. Labels are small, closed values chosen by the caller (peer IP, reason, known
    account), never attacker-chosen text; beyond ``max_keys`` label sets in an interval, the
    rest are counted together under ``peer="*"``."""

    def __init__(self, logger: Any, event: str, timers: Timers, *, interval: float = 10.0,
                 max_keys: int = 1000, level: str = "warning") -> None:
        self._log = getattr(logger, level)
        self.event = event
        self.interval = interval
        self._agg = AggregatedLog(timers, interval, self._summary, max_keys, overflow=(("peer", "*"),))

    def add(self, **labels: Any) -> None:
        if self._agg.note(tuple(sorted(labels.items()))):
            self._log(self.event, count=1, **labels)

    def _summary(self, key, count: int) -> None:
        self._log(self.event, count=count, interval=self.interval, **dict(key))

    def close(self) -> None:
        self._agg.close()

    @property
    def open_keys(self) -> int:
        return self._agg.open_keys


class RefusalLog:
    """Refused requests per (account, reason): one ``requests_refused`` line per key per
    interval, with the count. The reason is the status name (a closed set), never the text of
    a PDU."""

    def __init__(self, timers: Timers, interval: float) -> None:
        self.interval = interval
        self._log = AggregatedLog(timers, interval, self._summary)

    def refused(self, account: str | None, reason: int | str) -> None:
        """``reason``: the status answered (named when logged: this runs once per PDU) or a
        word."""
        if self._log.note((account, reason)):
            log.info("requests_refused", account=account, reason=_reason(reason), count=1)

    def _summary(self, key, count: int) -> None:
        account, reason = key
        log.info("requests_refused", account=account, reason=_reason(reason), count=count, interval=self.interval)

    @property
    def totals(self) -> dict[tuple[str | None, str], int]:
        """(account, reason name) -> refusals since start."""
        return {(account, _reason(reason)): n for (account, reason), n in self._log.totals.items()}


def _reason(reason: int | str) -> str:
    return reason if isinstance(reason, str) else CommandStatus.name_of(reason)


def cause_of(exc: BaseException) -> tuple[str, str]:
    """(exception type, "file:line" of the innermost frame it was raised in): what makes two
    errors "the same" for logging. Exceptions without a traceback use the type alone."""
    kind = type(exc).__qualname__
    tb = exc.__traceback__
    if tb is None:
        return kind, "?"
    frame = traceback.extract_tb(tb)[-1]
    return kind, f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


class ErrorLog:
    """A traceback once per cause; the same cause again is counted and summarised
    (``errors_repeated``) once per interval."""

    def __init__(self, timers: Timers, interval: float, max_causes: int = 1000) -> None:
        self.interval = interval
        self.max_causes = max_causes
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self._log = AggregatedLog(timers, interval, self._summary, max_keys=max_causes)

    def exception(self, event: str, exc: BaseException, *, with_traceback: bool = True, **fields) -> None:
        """Log ``exc`` under ``event``: with its traceback the first time its cause is seen
        (``with_traceback=False`` for expected ones: one warning line instead), later only
        counted."""
        kind, where = cause_of(exc)
        key = (event, kind, where)
        first_of_interval = self._log.note(key)
        if key in self._seen:
            self._seen.move_to_end(key)
            if first_of_interval:  # seen before, but not lately: one line, no traceback
                log.warning(event, error=kind, where=where, repeated=True, **fields)
            return
        self._seen[key] = None
        if len(self._seen) > self.max_causes:
            self._seen.popitem(last=False)
        if with_traceback:
            log.error(event, error=kind, where=where, exc_info=exc, **fields)
        else:
            log.warning(event, error=kind, where=where, **fields)

    def _summary(self, key, count: int) -> None:
        event, kind, where = key
        log.warning("errors_repeated", event_name=event, error=kind, where=where, count=count, interval=self.interval)

    @property
    def totals(self) -> dict[tuple[str, str], int]:
        """(event, exception type) -> occurrences."""
        out: dict[tuple[str, str], int] = {}
        for (event, kind, _where), n in self._log.totals.items():
            out[(event, kind)] = out.get((event, kind), 0) + n
        return out


__all__ = ["AggregatedLog", "ErrorLog", "RefusalLog", "Tally", "cause_of"]
