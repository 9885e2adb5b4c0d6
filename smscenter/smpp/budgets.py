"""What one partner session may cost the others: the budgets applied before a request runs.

Why a module of its own: the server and the pipeline both refuse requests, and a flood is
judged on all of them together. Three ideas, each small:

- ``StorageGate``: how many requests may be reading the database at once, over all sessions
  (query_sm, cancel_sm). Full means "answer ESME_RTHROTTLED now", never "wait in a queue":
  a waiting task holds memory and its PDU, and 100,000 of them are 1 GB.
- ``FloodMeter``: one session's strikes (requests refused by a budget or a policy, enquire_link
  beyond its rate) over a fixed interval. Past ``flood_refusals`` strikes in one interval, and
  more strikes than half its requests, the session is flooding and is unbound: it costs the
  loop more than it is worth. (The share keeps a busy partner whose campaign meets many
  opted-out or invalid numbers bound: its refusals are a minority of what it sends.)
- ``SessionBudgets``: the per-request checks (window → ESME_RMSGQFUL, account throughput →
  ESME_RTHROTTLED), the enquire_link rate, and the per-session meters, with their counters
  for /metrics and the aggregated refusal log.

Time comes from an injected ``Timers`` so that tests move it instead of sleeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import structlog

from protocol.constants import CommandStatus

from smscenter.runtime.floodlog import AggregatedLog, RefusalLog
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.pipeline.request import Refusal
from smscenter.smpp.submit import smpp_status
from smscenter.pipeline.submit import admit
from smscenter.runtime.timers import Timers

if TYPE_CHECKING:
    from smscenter.pipeline.accounts import PartnerBind

log = structlog.get_logger("smscenter.budgets")


class SessionFlooding(ConnectionError):
    """Why a session was unbound: it kept sending what we refuse (or enquire_link)."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"session_flooding: {cause}")
        self.cause = cause


class StorageGate:
    """At most ``size`` storage reads at once; ``try_enter`` says no at once when full."""

    __slots__ = ("size", "in_use", "refused")

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size
        self.in_use = 0
        self.refused = 0

    def try_enter(self) -> bool:
        if self.in_use >= self.size:
            self.refused += 1
            return False
        self.in_use += 1
        return True

    def leave(self) -> None:
        if self.in_use > 0:
            self.in_use -= 1


class FloodMeter:
    """Strikes of one session over fixed intervals; ``strike`` says True once the session
    passes ``limit`` strikes within one interval (and only that once)."""

    __slots__ = ("limit", "interval", "_start", "count", "requests", "enquire_links", "tripped")

    def __init__(self, limit: int, interval: float, now: float, enquire_rate: float, enquire_burst: int) -> None:
        self.limit = limit
        self.interval = interval
        self._start = now
        self.count = 0  # strikes in this interval
        self.requests = 0  # requests in this interval (refused or not)
        self.enquire_links = TokenBucket(enquire_rate, now, burst=enquire_burst)
        self.tripped = False

    def _roll(self, now: float) -> None:
        if now - self._start >= self.interval:
            self._start = now
            self.count = self.requests = 0

    def request(self, now: float) -> None:
        self._roll(now)
        self.requests += 1

    def strike(self, now: float) -> bool:
        self._roll(now)
        self.count += 1
        if self.count > self.limit and 2 * self.count > self.requests and not self.tripped:
            self.tripped = True
            return True
        return False


class SessionBudgets:
    """The budgets of every partner session, and their counters (``stats``, for /metrics).

    ``unbind`` is called with (link, SessionFlooding) when a session trips its flood meter;
    the server sends unbind and closes it.
    """

    def __init__(self, config, timers: Timers, unbind: Callable[[object, SessionFlooding], None]) -> None:
        self.config = config
        self.timers = timers
        self.unbind = unbind
        self.refusals = RefusalLog(timers, config.refusal_log_interval)
        self._late = AggregatedLog(timers, config.refusal_log_interval, self._late_summary)
        self._meters: dict[object, FloodMeter] = {}
        self.stats = {
            "window_full": 0,  # requests answered ESME_RMSGQFUL: over the session's window
            "throttled": 0,  # requests answered ESME_RTHROTTLED: over the account's throughput
            "enquire_link_over_rate": 0,  # enquire_link answered but beyond enquire_link_rate
            "flooding_unbinds": 0,  # sessions unbound as session_flooding
            "late_responses": 0,  # responses to nothing we sent (or sent too long ago)
        }

    def _meter(self, link) -> FloodMeter:
        meter = self._meters.get(link)
        if meter is None:
            c = self.config
            meter = self._meters[link] = FloodMeter(
                c.flood_refusals, c.flood_interval, self.timers.now(), c.enquire_link_rate, c.enquire_link_burst
            )
        return meter

    def admit(self, link, bind: "PartnerBind", now: float, messages: int = 1) -> CommandStatus | None:
        """The window and throughput check of every request a bound partner makes (but
        binds, unbind and enquire_link): None to go on, else the status to answer at once.
        ``messages``: how many the request asks for (a submit_multi's destinations)."""
        self._meter(link).request(now)
        # session.pending counts this request too: the partner's unanswered requests. The
        # limits are the core's (``submit.admit``, the same for every door).
        refused = admit(bind.account, link.session.pending, now, messages)
        if refused is None:
            return None
        status = smpp_status(refused)
        self.stats["window_full" if refused.refusal is Refusal.QUEUE_FULL else "throttled"] += 1
        self.refused(link, bind.account.system_id, status)
        return status

    def refused(self, link, account: str, status: int) -> None:
        """A request of ``link`` was refused with ``status``: one more in the aggregated log
        and one strike on the session's flood meter."""
        self.refusals.refused(account, int(status))
        self._strike(link, "refused_requests")

    def enquire_link(self, link) -> None:
        """The partner sent enquire_link (already answered): count it against its rate."""
        meter = self._meter(link)
        now = self.timers.now()
        if not meter.enquire_links.try_take(now):
            self.stats["enquire_link_over_rate"] += 1
            self._strike(link, "enquire_link")

    def late_response(self, link, command: str) -> None:
        """A response that answers nothing outstanding: logged aggregated, a strike (a peer
        can send them as fast as refused requests)."""
        self.stats["late_responses"] += 1
        bind = getattr(link, "context", None)
        account = bind.account.system_id if bind is not None else None
        if self._late.note((account, command)):
            log.info("late_response", account=account, peer=str(link.peer[0]), command=command, count=1)
        self._strike(link, "refused_requests")

    def _late_summary(self, key, count: int) -> None:
        account, command = key
        log.info("late_response", account=account, command=command, count=count,
                 interval=self.config.refusal_log_interval)

    def _strike(self, link, cause: str) -> None:
        if self._meter(link).strike(self.timers.now()):
            self.stats["flooding_unbinds"] += 1
            bind = getattr(link, "context", None)
            account = bind.account.system_id if bind is not None else None
            log.warning("session_flooding", account=account, peer=str(link.peer[0]), cause=cause,
                        limit=self.config.flood_refusals, interval=self.config.flood_interval)
            self.unbind(link, SessionFlooding(cause))

    def forget(self, link) -> None:
        """The session closed: drop its meter."""
        self._meters.pop(link, None)

    @property
    def sessions_metered(self) -> int:
        return len(self._meters)


__all__ = ["FloodMeter", "SessionBudgets", "SessionFlooding", "StorageGate"]
