"""The partner-facing SMPP server: listeners, binds, per-session checks, then the pipeline.

Each accepted connection becomes a ``Link`` in the SMSC role. This module decides binds
(credentials, IP allow-list, bind types, bind limits; failures answered after a delay that
grows with repeated failures from one address) and applies the session-level checks on each
request — window (ESME_RMSGQFUL) and the account's throughput across all its binds
(ESME_RTHROTTLED), for every request, not only submits (``budgets.py``) — before handing it
to the ``MessageHandler``, which answers it when it is ready (after a durable commit). A
session that keeps sending what we refuse, or enquire_link far beyond a sane rate, is
unbound (``session_flooding``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from typing import Protocol

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus
from protocol.errors import LocalProtocolError
from protocol.session import InvalidPdu, Role

from .accounts import AccountRegistry, PartnerBind
from .budgets import SessionBudgets, SessionFlooding
from .config import Settings
from .link import Link, LinkClosed
from .timers import RealTimers, Timers

log = structlog.get_logger("smscenter.server")

_BINDS = frozenset({CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER})


class MessageHandler(Protocol):
    """What the server hands bound partners' requests to (submit_sm, query_sm, …).

    ``handle`` must eventually call ``bind.respond(response)`` exactly once per request;
    it is synchronous so the hot path needs no task per message.
    """

    def handle(self, bind: PartnerBind, pdu: P.Pdu) -> None: ...

    # Optional: ``bound(bind)`` is called after a successful bind (e.g. to deliver what the
    # partner is owed).


class FailedBinds:
    """Failed binds per source address, to slow down password guessing.

    The delay doubles with each recent failure from the same address (capped), and the
    table is bounded so a flood of addresses cannot grow it without limit.
    """

    def __init__(self, base_delay: float, max_delay: float = 30.0, forget_after: float = 600.0, size: int = 10_000):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.size = size
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def record(self, ip: str, now: float) -> float:
        """Note a failure; return how long to wait before answering it."""
        count, last = self._seen.pop(ip, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self._seen[ip] = (count, now)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return min(self.max_delay, self.base_delay * (2 ** min(count - 1, 16)))

    def forget(self, ip: str) -> None:
        self._seen.pop(ip, None)


class PartnerServer:
    """Listens for partners; owns their links and their binds."""

    def __init__(self, settings: Settings, handler: MessageHandler, clock=time.monotonic,
                 timers: Timers | None = None) -> None:
        self.settings = settings
        self.config = settings.server
        self.handler = handler
        self.clock = clock
        self.registry = AccountRegistry(settings.accounts, clock)
        self.failed_binds = FailedBinds(self.config.failed_bind_delay)
        self.links: set[Link] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self.accepting = False
        self.budgets = SessionBudgets(self.config, timers or RealTimers(clock), self._unbind_flooding)
        #: Read by each ``Link`` made with this server as its handler.
        self.pdus_per_turn = self.config.pdus_per_turn

    # --- listeners --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if self.config.tls_listen else None
        for address, context in [(a, None) for a in self.config.listen] + [(a, tls) for a in self.config.tls_listen]:
            server = await loop.create_server(
                self._accept, address.host, address.port, ssl=context, reuse_address=True, backlog=1024
            )
            self.servers.append(server)
            for sock in server.sockets:
                log.info("listening", address=sock.getsockname()[:2], tls=context is not None)
        self.accepting = True

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
        return context

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where we actually listen (useful with port 0 in tests)."""
        return [sock.getsockname()[:2] for server in self.servers for sock in server.sockets]

    def _accept(self) -> asyncio.Protocol:
        if not self.accepting or len(self.links) >= self.config.max_connections:
            return _Refused()
        link = Link(
            Role.SMSC,
            self,
            window=self.config.window,
            response_timeout=self.config.response_timeout,
            enquire_link_interval=self.config.enquire_link_interval,
            inactivity_timeout=self.config.inactivity_timeout,
            bind_timeout=self.config.bind_timeout,
            max_pdu_size=self.config.max_pdu_size,
            bad_pdu_budget=self.config.bad_pdu_budget,
            clock=self.clock,
            name="partner",
        )
        self.links.add(link)
        return link

    # --- LinkHandler ------------------------------------------------------------------------

    def on_request(self, link: Link, pdu: P.Pdu) -> None:
        cid = pdu.command_id
        if cid in _BINDS:
            self._spawn(self._bind(link, pdu))
            return
        bind: PartnerBind | None = link.context  # type: ignore[assignment]
        if bind is None:  # the session only lets bound requests through; belt and braces
            link.respond(pdu.response(CommandStatus.ESME_RINVBNDSTS))
            return
        # Every request costs the session's window and the account's throughput, submit or
        # not: a query_sm flood is as much work for the database as a submit flood.
        refused = self.budgets.admit(link, bind, self.clock())
        if refused is not None:
            link.respond(pdu.response(refused))
            return
        self.handler.handle(bind, pdu)

    def on_enquire_link(self, link: Link) -> None:
        """An enquire_link from the partner (already answered): metered against its rate."""
        self.budgets.enquire_link(link)

    def _unbind_flooding(self, link: Link, reason: SessionFlooding) -> None:
        """Unbind a flooding session: unbind sent, then closed (what it sends meanwhile is
        not read)."""
        try:
            link.request_nowait(P.Unbind()).add_done_callback(_ignore_result)
        except (LinkClosed, LocalProtocolError):
            pass
        link.close(reason)

    def on_invalid(self, link: Link, event: InvalidPdu) -> None:
        log.info(
            "invalid_pdu",
            peer=link.peer[0],
            status=CommandStatus.name_of(event.error.status),
            error=str(event.error),
            budget_left=link.bad_pdu_budget - link.bad_pdus,
        )

    def on_late_response(self, link: Link, pdu: P.Pdu) -> None:
        self.budgets.late_response(link, type(pdu).__name__)  # aggregated: a peer can send floods of them

    def on_closed(self, link: Link, exc: BaseException | None) -> None:
        self.links.discard(link)
        self.budgets.forget(link)
        bind: PartnerBind | None = link.context  # type: ignore[assignment]
        if bind is not None:
            self.registry.detach(bind)
            log.info("unbound", account=bind.account.system_id, peer=link.peer[0], reason=str(exc or "closed"))

    # --- binds ------------------------------------------------------------------------------

    async def _bind(self, link: Link, pdu: P.Pdu) -> None:
        ip = str(link.peer[0])
        state, status = await self.registry.authenticate(pdu.command_id, pdu.system_id, pdu.password, ip)  # type: ignore[attr-defined]
        if not link.is_open:
            return
        if status != CommandStatus.ESME_ROK or state is None:
            delay = self.failed_binds.record(ip, self.clock())
            log.warning(
                "bind_refused",
                system_id=pdu.system_id,  # type: ignore[attr-defined]
                peer=ip,
                status=CommandStatus.name_of(status),
                delay=delay,
            )
            await asyncio.sleep(delay)
            if link.is_open:
                link.respond(pdu.response(status))
            return
        self.failed_binds.forget(ip)
        link.context = self.registry.attach(state, link, pdu.command_id)
        link.name = f"partner:{state.system_id}"
        link.respond(pdu.response(system_id=self.config.system_id))
        log.info("bound", account=state.system_id, peer=ip, bind=link.context.bind_type)
        bound = getattr(self.handler, "bound", None)
        if bound is not None:
            bound(link.context)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- shutdown ---------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop accepting, unbind every session (waiting up to ``grace``), then close."""
        self.accepting = False
        for server in self.servers:
            server.close()
        links = list(self.links)
        if links:
            await asyncio.gather(*(link.unbind(grace) for link in links), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


def _ignore_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()  # the session is closing: its unbind_resp does not matter


class _Refused(asyncio.Protocol):
    """Over the connection limit: close at once, so file descriptors stay bounded."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("connection_refused", reason="max_connections", peer=str(transport.get_extra_info("peername")))
        transport.abort()
