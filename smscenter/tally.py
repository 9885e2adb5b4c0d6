"""Aggregated logging for repeated events: at most one line per key per interval, with a count.

Why: a refusal that any peer can trigger (a socket over its IP's share, a failed bind) must
cost the peer, not the log. Logging each one lets a flood write gigabytes; logging none hides
the attack. So the first occurrence of a key is logged at once (``count=1``), later ones in the
same interval are only counted, and when the interval ends one line per key carries how many
there were. A key that stays quiet for a whole interval is forgotten; the next occurrence is
logged at once again.

Keys are small tuples of labels chosen by the caller (peer IP, reason, known account) — never
attacker-chosen free text. The table is bounded: past ``max_keys`` distinct keys in an interval,
further keys are counted together under ``peer="*"``.
"""

from __future__ import annotations

from typing import Any

from .timers import Handle, Timers

__all__ = ["Tally"]


class Tally:
    def __init__(
        self,
        logger: Any,
        event: str,
        timers: Timers,
        *,
        interval: float = 10.0,
        max_keys: int = 1000,
        level: str = "warning",
    ) -> None:
        self._log = getattr(logger, level)
        self.event = event
        self.timers = timers
        self.interval = interval
        self.max_keys = max_keys
        #: key -> occurrences not yet logged in this interval (keys logged this interval).
        self._pending: dict[tuple[tuple[str, Any], ...], int] = {}
        self._timer: Handle | None = None

    def add(self, **labels: Any) -> None:
        key = tuple(sorted(labels.items()))
        if key in self._pending:
            self._pending[key] += 1
            return
        if len(self._pending) >= self.max_keys:
            key = (("peer", "*"),)
            if key in self._pending:
                self._pending[key] += 1
                return
        self._pending[key] = 0
        self._log(self.event, count=1, **dict(key))
        if self._timer is None:
            self._timer = self.timers.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        for key, count in pending.items():
            if count:
                self._log(self.event, count=count, interval=self.interval, **dict(key))
                self._pending[key] = 0  # logged in this interval: the next one waits for it
        if self._pending:
            self._timer = self.timers.call_later(self.interval, self._flush)

    def close(self) -> None:
        """Log what is still counted (at shutdown) and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
