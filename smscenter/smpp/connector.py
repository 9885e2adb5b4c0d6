"""Upstream connectors: we bind to an operator's SMSC as an ESME and submit through it.

One ``Connector`` per ``[[connector]]``. It keeps ``binds`` sessions up (reconnecting with
exponential backoff and jitter; a bind refused for bad credentials is retried at the slowest
pace and logged as an error every time), keeps up to ``window`` submit_sm in flight on each
(the classic one-at-a-time connector caps a link at 1/RTT), and spends a token bucket of
``throughput`` per second for the whole connector.

``submit()`` is the pipeline's one call: it returns the upstream's response PDU. Congestion
answers (ESME_RTHROTTLED, ESME_RMSGQFUL) slow the connector down and the same PDU is tried
again, a few times (then the caller gets the answer); a connection lost before the answer is retried on the next bind (at-least-once: the
upstream may have seen it). A response timeout is raised to the caller, which decides.
Deliveries (receipts and MO) go to a ``DeliverHandler`` that answers them when stored.
Its first bound session and the loss of its last are a ``ConnectorEvent`` (up, down) through
the core's ``Events``, with a log line (``connector_up``, ``connector_down``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import ssl
import time
from typing import Protocol

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.idreadings import ConventionLearner
from protocol.session import InvalidPdu, Role

from smscenter.config import Connector as ConnectorConfig
from smscenter.pipeline.events import ConnectorEvent, Events
from smscenter.pipeline.ports import NotWanted, UpstreamDown
from smscenter.smpp.link import Link, LinkClosed, ResponseTimeout
from smscenter.runtime.ratelimit import RateMeter, TokenBucket
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.connector")

_BIND_PDU = {
    "transmitter": P.BindTransmitter,
    "receiver": P.BindReceiver,
    "transceiver": P.BindTransceiver,
}
_CONGESTION = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})
_CREDENTIALS = frozenset({CommandStatus.ESME_RINVPASWD, CommandStatus.ESME_RINVSYSID})
#: Consecutive response timeouts after which a bind is considered dead and reopened.
MAX_TIMEOUTS = 3
#: Seconds all submits pause after a congestion answer (doubling for a caller throttled again).
_FIRST_PAUSE = 0.05
#: Times a request answered with a congestion status is sent again through this connector;
#: after that the answer goes back to the caller (for the dispatcher a temporary error: the
#: route's next connector, or a later retry), so a connector that throttles without end
#: cannot hold a message — or its number's line — forever.
CONGESTION_RETRIES = 3


class ConnectorDown(UpstreamDown):
    """No bind came up before the caller's deadline (the core's ``UpstreamDown``)."""


class BindRefused(ConnectionError):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {CommandStatus.name_of(status)}")
        self.status = status


class UnreadableResponse(ResponseTimeout):
    """The upstream answered, but its response could not be decoded. The outcome is as
    unknown as after a timeout, so it is one (callers handle both alike)."""

    def __init__(self, request: P.Pdu, error: RemoteProtocolError) -> None:
        super().__init__(request)
        self.args = (f"unreadable response to {type(request).__name__}: {error}",)
        self.error = error


class DeliverHandler(Protocol):
    """Receives upstream deliver_sm/data_sm; must call ``link.respond()`` once stored."""

    def on_deliver(self, connector: "Connector", link: Link, pdu: P.Pdu) -> None: ...


class AckDeliveries:
    """Default: acknowledge every delivery at once (until the durable pipeline is wired)."""

    def on_deliver(self, connector: "Connector", link: Link, pdu: P.Pdu) -> None:
        link.respond(pdu.response())


class Connector:
    """An ``Upstream`` of the core (pipeline/ports.py): ``submit`` raises its errors
    (``ConnectorDown``, ``NotWanted``, and the link's ``ResponseTimeout``/``LinkClosed``)."""

    def __init__(
        self,
        config: ConnectorConfig,
        deliver_handler: DeliverHandler | None = None,
        clock=time.monotonic,
        *,
        bind_timeout: float = 10.0,
        inactivity_timeout: float | None = None,
        timers: Timers | None = None,
        events: Events | None = None,
        wall_clock=time.time,
    ) -> None:
        self.config = config
        #: Where its up/down events go (``ConnectorEvent``, stamped on ``wall_clock``).
        self.events = events
        self.wall_clock = wall_clock
        self._has_session = False
        self.name = config.name
        self.deliver_handler = deliver_handler or AckDeliveries()
        #: With ``message_id = "auto"``: what its receipts' matches taught (None otherwise).
        self.id_learner = ConventionLearner() if config.message_id == "auto" else None
        #: Reconnect backoff, bind and submit deadlines, rate and congestion pauses, and the
        #: links' own deadlines, all on these (virtual time in tests); ``clock`` is their now().
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = clock = self.timers.now
        self.bind_timeout = bind_timeout
        self.inactivity_timeout = inactivity_timeout or max(3 * config.enquire_link_interval, 30.0)
        self.bucket = TokenBucket(config.throughput, clock())
        self.links: list[Link] = []
        self._changed = asyncio.Event()
        self._supervisors: list[asyncio.Task] = []
        self._stopping = False
        self._timeouts: dict[Link, int] = {}
        self._backoff_until = 0.0
        self._tickets = itertools.count()
        #: (ticket, written, pdu, still_wanted): a heap, oldest ticket first. ``written``
        #: gets (link, response future) once the PDU is on the wire.
        self._queue: list[tuple] = []
        self._draining = False
        self._drain_timer = None  # the timers' handle of the next drain
        self._drain_when = 0.0  # clock time the drain timer is due
        self._in_flight = 0  # our submits written and not yet ended
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self.stats = {"submitted": 0, "throttled": 0, "timeouts": 0, "reconnects": 0, "bind_refused": 0,
                      "bad_responses": 0}
        # What ``smscenter status`` shows (status.py): the binds' state and since when (on
        # ``clock``), the last error and when, submits answered per second.
        self.state = "down"
        self.state_since = clock()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.rate = RateMeter()

    # --- lifecycle --------------------------------------------------------------------------

    def bind_plan(self) -> list[tuple[str, str | None]]:
        """The sessions to keep up: (bind type, short code it is bound for).

        ``bind = "pair"`` opens a transmitter and a receiver per bind (for SMSCs that deliver
        receipts only on a receiver session). With ``short_codes``, each bind is opened once
        per short code with that code as its address_range, as aggregators often require,
        and MO arriving on it is tagged with that short code.
        """
        kinds = ["transmitter", "receiver"] if self.config.bind == "pair" else [self.config.bind]
        codes: list[str | None] = list(self.config.short_codes) or [None]
        return [(kind, code) for _ in range(self.config.binds) for code in codes for kind in kinds]

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for index, (kind, code) in enumerate(self.bind_plan()):
            task = loop.create_task(self._supervise(kind, index, code), name=f"{self.name}#{index}")
            self._supervisors.append(task)

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._set_state("stopped")
        self._session_count(0)
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        for _, written, _, _ in self._queue:
            if not written.done():
                written.set_exception(ConnectorDown(f"connector {self.name} is stopping"))
        self._queue.clear()
        self._signal()  # callers waiting for a bind get ConnectorDown
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        await asyncio.gather(*(link.unbind(grace) for link in list(self.links)), return_exceptions=True)
        self.links.clear()

    @property
    def waiting(self) -> int:
        """Submits queued here for a window slot or a rate token."""
        return sum(1 for entry in self._queue if not entry[1].done())

    @property
    def in_flight(self) -> int:
        """Our submits written upstream and not answered yet."""
        return self._in_flight

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.state_since = state, self.clock()

    def _binds_changed(self) -> None:
        """A bind came up or went: "up" with every planned bind, "partial", or "down"."""
        if self._stopping:
            return
        bound = len(self.links)
        self._set_state("down" if not bound else "up" if bound >= len(self.bind_plan()) else "partial")
        self._session_count(bound)

    def _session_count(self, bound: int) -> None:
        """Emit up at the first bound session, down at the loss of the last."""
        if (bound > 0) == self._has_session:
            return
        self._has_session = up = bound > 0
        if up:
            log.info("connector_up", connector=self.name)
        elif self._stopping:  # a stop (shutdown, reload) is no incident
            log.info("connector_down", connector=self.name, stopping=True)
        else:
            log.warning("connector_down", connector=self.name, stopping=False)
        if self.events is not None:
            try:
                self.events.emit(ConnectorEvent(self.name, up, self.wall_clock()))
            except Exception as exc:  # noqa: BLE001 - a subscriber's bug must not stop the binds
                log.error("connector_event_failed", connector=self.name, error=repr(exc))

    def _failed(self, error: str) -> None:
        self.last_error, self.last_error_at = error, self.clock()

    @property
    def is_up(self) -> bool:
        for link in self.links:
            if link.can_submit and link.is_open:
                return True
        return False

    async def wait_up(self, timeout: float) -> None:
        async with self.timers.timeout(timeout):
            while not self.is_up:
                await self._wait_changed()

    async def _wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _signal(self) -> None:
        """Binds or window slots changed: wake who waits for a bind, write what now fits."""
        self._changed.set()
        self._drain()

    @property
    def id_convention(self) -> str:
        """The id convention in use: the configured one, the one ``auto`` learnt, or
        ``"auto"`` while it has learnt none."""
        if self.id_learner is None:
            return self.config.message_id
        return self.id_learner.learnt or "auto"

    # --- binds ------------------------------------------------------------------------------

    async def _supervise(self, bind_type: str, index: int, short_code: str | None = None) -> None:
        cfg = self.config
        delay = cfg.reconnect_min
        while not self._stopping:
            try:
                link = await self._connect(bind_type, short_code)
            except BindRefused as exc:
                self.stats["bind_refused"] += 1
                level = log.error if exc.status in _CREDENTIALS else log.warning
                level("upstream_bind_refused", connector=self.name, bind=index, status=CommandStatus.name_of(exc.status))
                self._failed(f"bind refused: {CommandStatus.name_of(exc.status)}")
                delay = cfg.reconnect_max if exc.status in _CREDENTIALS else delay
            except (OSError, TimeoutError, LinkClosed, ResponseTimeout) as exc:
                log.warning("upstream_connect_failed", connector=self.name, bind=index, error=str(exc) or type(exc).__name__)
                self._failed(f"connect failed: {str(exc) or type(exc).__name__}")
            else:
                delay = cfg.reconnect_min
                self.links.append(link)
                self._binds_changed()
                self._signal()
                log.info("upstream_bound", connector=self.name, bind=index, type=bind_type)
                await asyncio.shield(link.closed)
                if link in self.links:
                    self.links.remove(link)
                self._timeouts.pop(link, None)
                self._binds_changed()
                self._signal()
                if self._stopping:
                    return
                self.stats["reconnects"] += 1
                reason = str(link.closed.result() or "closed")
                log.warning("upstream_lost", connector=self.name, bind=index, reason=reason)
                self._failed(f"bind lost: {reason}")
            # Full jitter on an exponential backoff: reconnect storms from many nodes spread out.
            await self.timers.sleep(random.uniform(delay / 2, delay))
            delay = min(cfg.reconnect_max, delay * 2)

    async def _connect(self, bind_type: str, short_code: str | None = None) -> Link:
        cfg = self.config
        loop = asyncio.get_running_loop()
        context = self._tls_context() if cfg.tls else None

        def factory() -> Link:
            return Link(
                Role.ESME,
                self,
                window=cfg.window,
                response_timeout=cfg.response_timeout,
                enquire_link_interval=cfg.enquire_link_interval,
                inactivity_timeout=self.inactivity_timeout,
                clock=self.clock,
                timers=self.timers,
                name=f"upstream:{self.name}",
            )

        async with self.timers.timeout(self.bind_timeout):
            _, link = await loop.create_connection(factory, cfg.host, cfg.port, ssl=context)
            bind = _BIND_PDU[bind_type](
                system_id=cfg.system_id,
                password=cfg.password.get_secret_value(),
                system_type=cfg.system_type,
                addr_ton=0,
                addr_npi=0,
                address_range=short_code or cfg.address_range,
            )
            try:
                resp = await link.request(bind)
            except BaseException:
                link.close()
                raise
        if resp.command_status != CommandStatus.ESME_ROK:
            link.close()
            raise BindRefused(resp.command_status)
        link.short_code = short_code  # MO on this session was sent to this short code
        return link

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        context = ssl.create_default_context(cafile=str(cfg.tls_ca) if cfg.tls_ca else None)
        if not cfg.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # --- submitting -------------------------------------------------------------------------
    #
    # Every submit joins one queue, oldest message first (a retried message keeps its place).
    # ``_drain`` writes from its head as long as a bind has a free slot in its window and the
    # token bucket has a token, all in one go: a request is never pinned to a bind whose
    # window is stuck, a token is spent only when its PDU is written (the rate holds on the
    # wire), a throttle pause stops everything, and a slot that frees lets the next waiter
    # out in the same loop iteration. (Handing a turn from waiter to waiter would let one
    # submit out per event-loop iteration: under load, a few hundred per second.)

    def _pick(self) -> Link | None:
        """The bound link with the most room in its window (None if none has room)."""
        best, best_free = None, 0
        for link in self.links:
            if link.can_submit and link.is_open:
                free = link.session.window - link.in_flight
                if free > best_free:
                    best, best_free = link, free
        return best

    async def submit(self, pdu: P.Pdu, timeout: float | None = None, still_wanted=None) -> P.Pdu:
        """Send ``pdu`` upstream and return the response (submit_sm_resp or generic_nack).

        ``still_wanted`` (optional, no arguments) is asked right before the PDU is written,
        after its wait for a window slot and a rate token: if it answers False, nothing is
        sent and ``NotWanted`` is raised (e.g. a marketing send window closed while the
        message waited behind the connector's rate).

        Waits up to ``timeout`` for a bind to be up (``ConnectorDown`` after that, or at
        once when the connector is stopping), retries lost connections and congestion
        answers (the latter ``CONGESTION_RETRIES`` times, then returns the answer), raises
        ``ResponseTimeout`` if a bound upstream does not answer in time
        (``UnreadableResponse``, a subclass, if its answer cannot be decoded).
        Callers are served in the order they called, a retry before anything newer.
        """
        deadline = None if timeout is None else self.clock() + timeout
        ticket = next(self._tickets)
        backoff = _FIRST_PAUSE
        congested = 0
        while True:
            link, fut = await self._send(pdu, ticket, deadline, still_wanted)
            try:
                resp = await fut
            except LinkClosed:
                continue  # another bind, or this one once reconnected
            except ResponseTimeout:
                self.stats["timeouts"] += 1
                self._count_failure(link)
                raise
            except RemoteProtocolError as exc:
                self.stats["bad_responses"] += 1
                self._count_failure(link)
                raise UnreadableResponse(pdu, exc) from exc
            self._timeouts.pop(link, None)
            if resp.command_status in _CONGESTION:
                self.stats["throttled"] += 1
                self._slow_down(backoff)
                backoff = min(backoff * 2, 5.0)
                congested += 1
                if congested > CONGESTION_RETRIES:
                    return resp  # the caller decides (another connector, or later)
                continue  # the pause holds the whole queue, for every caller
            self.stats["submitted"] += 1
            self.rate.add(self.clock())
            return resp

    def _count_failure(self, link: Link) -> None:
        """A request without a usable answer: after MAX_TIMEOUTS in a row, reopen the bind."""
        count = self._timeouts[link] = self._timeouts.get(link, 0) + 1
        if count == MAX_TIMEOUTS:
            log.warning("upstream_unresponsive", connector=self.name, failures=count)
            self._failed(f"unresponsive: {count} requests without an answer")
            link.close(TimeoutError("upstream stopped answering"))

    async def _send(
        self, pdu: P.Pdu, ticket: int, deadline: float | None, still_wanted=None
    ) -> tuple[Link, asyncio.Future]:
        """Queue ``pdu`` and wait until ``_drain`` wrote it: (link, response future).

        ``deadline`` only bounds the wait while no bind is up: behind a busy but working
        connector, a caller keeps its place."""
        if self._stopping:
            raise ConnectorDown(f"connector {self.name} is stopping")
        # The loop kept by start(): asyncio.get_running_loop() costs a getpid() on Python 3.11.
        written = (self._loop or asyncio.get_running_loop()).create_future()
        heapq.heappush(self._queue, (ticket, written, pdu, still_wanted))
        self._drain()
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - self.clock())
                if await _wait_done(written, remaining, self.timers):
                    return written.result()
                if self._stopping or not self.is_up:
                    raise ConnectorDown(f"connector {self.name} has no bound session")
                deadline = None
        except BaseException:
            if not written.done():
                written.cancel()  # _drain skips it
            raise

    def _drain(self) -> None:
        """Write queued PDUs, oldest first, while a window slot and a token are free."""
        queue = self._queue
        if self._draining or not queue:
            return
        self._draining = True
        try:
            while queue:
                if queue[0][1].done():  # its caller left
                    heapq.heappop(queue)
                    continue
                if self._stopping:
                    return
                now = self.clock()
                if now < self._backoff_until:
                    self._drain_at(max(self._backoff_until - now, 0.001))
                    return
                link = self._pick()
                if link is None:
                    # Our own requests call back as they end; a window held by a keep-alive
                    # alone ends without one, so then look again shortly.
                    if self.is_up and not self._in_flight:
                        self._drain_at(0.01)
                    return
                if not self.bucket.try_take(now):
                    # At least a millisecond: a float clock in epoch seconds cannot tell a
                    # shorter step apart (the token would never come on virtual time).
                    self._drain_at(max(self.bucket.delay(now), 0.001))
                    return
                entry = heapq.heappop(queue)
                _, written, pdu, still_wanted = entry
                if still_wanted is not None and not still_wanted():
                    self.bucket.give_back()  # unused: the next caller may have it
                    written.set_exception(NotWanted(f"connector {self.name}: the caller no longer wants it sent"))
                    continue
                try:
                    fut = link.request_nowait(pdu)
                except (LinkClosed, LocalProtocolError):
                    # The bind is going (its close signals) or its window was not free after
                    # all (a keep-alive in it): the entry keeps its place, look again shortly.
                    self.bucket.give_back()
                    heapq.heappush(queue, entry)
                    self._drain_at(0.01)
                    return
                self._in_flight += 1
                fut.add_done_callback(self._request_done)
                written.set_result((link, fut))
        finally:
            self._draining = False

    def _drain_at(self, delay: float) -> None:
        """Run ``_drain`` again after ``delay`` seconds (the earliest such wish wins). The
        deadline is kept here, not asked of the handle: uvloop answers a ``call_at`` that is
        already due with a plain ``Handle``, which has no ``when()`` (nor has a fake one)."""
        when = self.clock() + max(delay, 0.0)
        if self._drain_timer is not None:
            if self._drain_when <= when:
                return
            self._drain_timer.cancel()
        self._drain_when = when
        self._drain_timer = self.timers.call_later(max(delay, 0.0), self._drain_timer_fired)

    def _drain_timer_fired(self) -> None:
        self._drain_timer = None
        self._drain()

    def _request_done(self, fut: asyncio.Future) -> None:
        self._in_flight -= 1
        if not fut.cancelled() and fut.exception() is None and fut.result().command_status in _CONGESTION:
            # Pause before the freed slot is reused: the throttled caller (which backs off
            # further) goes again before anything newer.
            self._slow_down(_FIRST_PAUSE)
        self._signal()  # a window slot is free

    def _slow_down(self, pause: float) -> None:
        """The upstream said we are too fast: empty the bucket and pause all submits."""
        now = self.clock()
        self.bucket.drain(now)
        self._backoff_until = max(self._backoff_until, now + pause)

    # --- LinkHandler ------------------------------------------------------------------------

    def on_request(self, link: Link, pdu: P.Pdu) -> None:
        if pdu.command_id in (CommandId.DELIVER_SM, CommandId.DATA_SM):
            self.deliver_handler.on_deliver(self, link, pdu)
        elif pdu.command_id == CommandId.ALERT_NOTIFICATION:
            log.info("alert_notification", connector=self.name)
        else:
            link.respond(pdu.response(CommandStatus.ESME_RINVCMDID))

    def on_invalid(self, link: Link, event: InvalidPdu) -> None:
        log.warning("upstream_invalid_pdu", connector=self.name, error=str(event.error))

    def on_late_response(self, link: Link, pdu: P.Pdu) -> None:
        log.warning("upstream_late_response", connector=self.name, seq=pdu.sequence_number,
                    status=CommandStatus.name_of(pdu.command_status))

    def on_closed(self, link: Link, exc: BaseException | None) -> None:
        self._signal()


async def _wait_done(fut: asyncio.Future, timeout: float | None, timers: Timers) -> bool:
    """``asyncio.wait((fut,), timeout=timeout)`` for one future, without its sets and
    wrapping: True once ``fut`` is done, False when ``timeout`` passed first. ``fut`` is left
    as it is either way (also when the caller is cancelled)."""
    if fut.done():
        return True
    loop = fut.get_loop()
    waiter = loop.create_future()

    def wake(_=None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    handle = timers.call_later(timeout, wake) if timeout is not None else None
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        if handle is not None:
            handle.cancel()
        fut.remove_done_callback(wake)
    return fut.done()
