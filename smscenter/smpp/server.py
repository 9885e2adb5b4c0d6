"""The partner-facing SMPP server: listeners, binds, per-session checks, then the pipeline.

Each accepted connection takes a connection slot (``admission``: in total, per IP, and a
smaller share per IP for sockets not bound yet) and becomes a ``Link`` in the SMSC role. This
module decides binds (credentials, IP allow-list, bind types, bind limits; paced and capped by
``bindguard.BindGuard``, the SMPP face of the login guard every door shares) and applies the session-level checks on each request — window
(ESME_RMSGQFUL) and the account's throughput across all its binds (ESME_RTHROTTLED), for every
request, not only submits (``budgets.py``) — before handing it to the ``MessageHandler``, which
answers it when it is ready (after a durable commit). A session that keeps sending what we
refuse, or enquire_link far beyond a sane rate, is unbound (``session_flooding``).

Every bind attempt — bound, refused by the guard, its caps or the account's rules, refused by
the session's state, or left by a peer that hung up before its answer — is told to the
connection log (``connlog.py``) with the status answered; never with the password.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import Protocol

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus
from protocol.errors import LocalProtocolError
from protocol.session import InvalidPdu, Role

from smscenter.pipeline.accounts import AccountRegistry, PartnerBind
from smscenter.smpp.admission import Admission, Gate, address_key
from smscenter.smpp.bindguard import BindGuard
from smscenter.smpp.budgets import SessionBudgets, SessionFlooding
from smscenter.config import Settings
from smscenter.pipeline.connlog import ConnectionLog, bind_type_of
from smscenter.smpp.link import Link, LinkClosed
from smscenter.runtime.timers import RealTimers, Timers
from smscenter.runtime.listeners import listen_error, server_tls_context
from smscenter.runtime.tasks import TaskSet

log = structlog.get_logger("smscenter.server")

_BINDS = frozenset({CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER})
_SUBMIT_MULTI = CommandId.SUBMIT_MULTI


class MessageHandler(Protocol):
    """What the server hands bound partners' requests to (submit_sm, query_sm, …).

    ``handle`` must eventually call ``bind.respond(response)`` exactly once per request;
    it is synchronous so the hot path needs no task per message.
    """

    def handle(self, bind: PartnerBind, pdu: P.Pdu) -> None: ...

    # Optional: ``bound(bind)`` is called after a successful bind (e.g. to deliver what the
    # partner is owed).


class PartnerServer:
    """Listens for partners; owns their links and their binds."""

    def __init__(
        self,
        settings: Settings,
        handler: MessageHandler,
        clock=time.monotonic,
        timers: Timers | None = None,
        *,
        guard_timers: Timers | None = None,
        connections: ConnectionLog | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.server
        self.handler = handler
        #: The links' deadlines (bind, inactivity, keep-alive, responses) run on these.
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = clock = self.timers.now
        self.registry = AccountRegistry(settings.accounts, clock)
        # The connection slots' and bind guard's time (FakeTimers in tests).
        guard_timers = guard_timers or self.timers
        c = self.config
        self.admission = Admission(
            guard_timers,
            max_connections=c.max_connections,
            max_connections_per_ip=c.max_connections_per_ip,
            max_unbound_per_ip=c.max_unbound_per_ip,
        )
        #: The login guard (the daemon hands it to the API too: one for every door).
        self.guard = BindGuard.from_settings(c, guard_timers)
        self.links: set[Link] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self._tls: list[bool] = []  # per server: TLS or not
        self._tasks = TaskSet()
        self.accepting = False
        self.budgets = SessionBudgets(self.config, self.timers, self._unbind_flooding)
        #: Read by each ``Link`` made with this server as its handler.
        self.pdus_per_turn = self.config.pdus_per_turn
        #: Told of every bind attempt and its answer (``connlog.ConnectionLog``), or None.
        self.connections = connections

    # --- listeners --------------------------------------------------------------------------

    async def start(self) -> None:
        """``bind`` then ``serve``."""
        await self.bind()
        await self.serve()

    async def bind(self) -> None:
        """Take the listen ports (plain and TLS) without accepting yet, so that a port in
        use fails the daemon's start before anything else ran. Raises ``OSError`` naming
        the address."""
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if self.config.tls_listen else None
        for address, context in [(a, None) for a in self.config.listen] + [(a, tls) for a in self.config.tls_listen]:
            # TLS is started by the Gate once the socket has its slot (see admission.py).
            try:
                server = await loop.create_server(
                    functools.partial(self._accept, context), address.host, address.port, reuse_address=True,
                    backlog=1024, start_serving=False,
                )
            except OSError as exc:
                raise listen_error(exc, "SMPP over TLS" if context else "SMPP", address.host, address.port) from None
            self.servers.append(server)
            self._tls.append(context is not None)

    async def serve(self) -> None:
        """Accept partners on the ports ``bind`` took."""
        for server, tls in zip(self.servers, self._tls):
            await server.start_serving()
            for sock in server.sockets:
                log.info("listening", address=sock.getsockname()[:2], tls=tls)
        self.accepting = True

    def _tls_context(self) -> ssl.SSLContext:
        return server_tls_context(self.config.tls_cert, self.config.tls_key)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where we actually listen (useful with port 0 in tests)."""
        return [sock.getsockname()[:2] for server in self.servers for sock in server.sockets]

    def _accept(self, tls: ssl.SSLContext | None = None) -> asyncio.Protocol:
        # The peer's address is known in connection_made: the Gate takes its slot (total,
        # per IP, unbound share) or aborts the socket at once.
        return Gate(
            self.admission,
            self._new_link,
            refuse=None if self.accepting else "shutting_down",
            tls=tls,
            handshake_timeout=self.config.bind_timeout,
        )

    def _new_link(self) -> Link | None:
        if not self.accepting:
            return None
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
            timers=self.timers,
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
        # A submit_multi costs the throughput of a submit to each of its destinations.
        messages = len(pdu.dest_addresses) if cid == _SUBMIT_MULTI else 1
        refused = self.budgets.admit(link, bind, self.clock(), messages)
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
        reply = event.reply
        if reply is not None and (reply.command_id & 0x7FFFFFFF) in _BINDS:
            # A bind the session refused (its state, or it did not decode): its system_id never
            # reached us, so the row has none; the account is the session's, if bound.
            bind: PartnerBind | None = link.context  # type: ignore[assignment]
            account = bind.account.system_id if bind is not None else None
            self._log_bind(link, "", account, reply.command_id, reply.command_status)
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
        self.admission.release(link)
        bind: PartnerBind | None = link.context  # type: ignore[assignment]
        if bind is not None:
            self.registry.detach(bind)
            log.info("unbound", account=bind.account.system_id, peer=link.peer[0], reason=str(exc or "closed"))

    # --- binds ------------------------------------------------------------------------------

    async def _bind(self, link: Link, pdu: P.Pdu) -> None:
        ip = str(link.peer[0]).split("%")[0]
        system_id: str = pdu.system_id  # type: ignore[attr-defined]

        def check(run):
            return self.registry.authenticate(pdu.command_id, system_id, pdu.password, ip, run=run)  # type: ignore[attr-defined]

        known = system_id if self.registry.get(system_id) is not None else None
        state, status = await self.guard.bind(address_key(ip), system_id, check, lambda: link.is_open, account=known)
        if not link.is_open:
            self._log_bind(link, system_id, known, pdu.command_id, None)  # hung up: nothing answered
            return
        bind = self.registry.attach(state, link, pdu.command_id) if status == CommandStatus.ESME_ROK else None
        if bind is None:
            status = status if status != CommandStatus.ESME_ROK else CommandStatus.ESME_RBINDFAIL
            link.respond(pdu.response(status))
            self._log_bind(link, system_id, known, pdu.command_id, status)
            return
        link.context = bind
        self.admission.bound(link)
        link.name = f"partner:{state.system_id}"
        link.respond(pdu.response(system_id=self.config.system_id))
        self._log_bind(link, system_id, known, pdu.command_id, CommandStatus.ESME_ROK)
        log.info("bound", account=state.system_id, peer=ip, bind=link.context.bind_type)
        bound = getattr(self.handler, "bound", None)
        if bound is not None:
            bound(link.context)

    def _log_bind(self, link: Link, system_id: str, account: str | None, command_id: int, status) -> None:
        """One row of the connection log (never the password): ``status`` answered, None
        when the peer left before its answer."""
        if self.connections is None:
            return
        transport = link.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.connections.record(system_id=system_id, account=account, peer=link.peer,
                                bind_type=bind_type_of(command_id), tls=tls, status=status)

    def _spawn(self, coro) -> None:
        self._tasks.spawn(coro)

    # --- shutdown ---------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop accepting, unbind every session (waiting up to ``grace``), then close."""
        self.accepting = False
        for server in self.servers:
            server.close()
        links = list(self.links)
        if links:
            await asyncio.gather(*(link.unbind(grace) for link in links), return_exceptions=True)
        self._tasks.cancel()
        for server in self.servers:
            await server.wait_closed()
        self.guard.close()
        self.admission.close()


def _ignore_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()  # the session is closing: its unbind_resp does not matter
