"""Connection slots: in total, per source IP, and per source IP for sockets not bound yet.

Why per IP: with only a global ``max_connections``, one address holding idle sockets shuts every
other partner out of the listener. So each IP gets at most ``max_connections_per_ip`` sockets,
and of those at most ``max_unbound_per_ip`` that have not bound yet: opening a socket costs
nothing, binding needs a password, so the unbound share is the one an attacker can fill and is
kept small. A socket that binds moves from its IP's unbound share to its bound sockets (it
still counts towards ``max_connections_per_ip``); a socket that closes frees its slot.

A socket over a cap is aborted at once (no SMPP answer: it has not said anything yet), counted
in ``refused`` by reason (``/metrics``) and logged aggregated (one line per IP and reason per
interval, with the count). "Per IP" means per IPv4 address, or per IPv6 /64.

The peer's address is only known once the connection is made, so the listener's protocol
factory returns a ``Gate``: it asks for a slot in ``connection_made`` and then hands the
transport over to the real protocol (``transport.set_protocol``), or aborts it.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections import Counter
from typing import Callable

import structlog

from smscenter.runtime.floodlog import Tally
from smscenter.runtime.loginguard import address_key  # the per-IP unit, every door's
from smscenter.runtime.timers import Timers

log = structlog.get_logger("smscenter.server")

__all__ = ["Admission", "Gate", "REASONS", "address_key"]

#: Why a socket was refused, as labelled in ``smscenter_connections_refused_total``.
REASONS = ("max_connections", "max_connections_per_ip", "max_unbound_per_ip", "shutting_down", "tls_handshake")


def peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if not peer:
        return "?"
    return address_key(str(peer[0]))


class _Count:
    __slots__ = ("open", "unbound")

    def __init__(self) -> None:
        self.open = 0
        self.unbound = 0


class Admission:
    """Who holds a connection slot. Bounded by ``max_connections`` (one entry per open
    socket, one per IP that has one)."""

    def __init__(
        self,
        timers: Timers,
        *,
        max_connections: int,
        max_connections_per_ip: int,
        max_unbound_per_ip: int,
        log_interval: float = 10.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.max_unbound_per_ip = max_unbound_per_ip
        self._ips: dict[str, _Count] = {}
        self._holders: dict[object, tuple[str, bool]] = {}  # holder -> (ip, bound)
        self.refused: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self._tally = Tally(log, "connection_refused", timers, interval=log_interval)

    @property
    def open(self) -> int:
        return len(self._holders)

    def unbound(self, ip: str) -> int:
        count = self._ips.get(ip)
        return count.unbound if count else 0

    def connections(self, ip: str) -> int:
        count = self._ips.get(ip)
        return count.open if count else 0

    def refusal(self, ip: str) -> str | None:
        """Why a new socket from ``ip`` cannot have a slot now (``None``: it can)."""
        if len(self._holders) >= self.max_connections:
            return "max_connections"
        count = self._ips.get(ip)
        if count is not None:
            if count.open >= self.max_connections_per_ip:
                return "max_connections_per_ip"
            if count.unbound >= self.max_unbound_per_ip:
                return "max_unbound_per_ip"
        return None

    def refuse(self, ip: str, reason: str) -> None:
        self.refused[reason] += 1
        self._tally.add(peer=ip, reason=reason)

    def take(self, holder: object, ip: str) -> None:
        """Give ``holder`` (a new, unbound socket) its slot; ``refusal`` said it may."""
        count = self._ips.get(ip)
        if count is None:
            count = self._ips[ip] = _Count()
        count.open += 1
        count.unbound += 1
        self._holders[holder] = (ip, False)

    def transfer(self, old: object, new: object) -> None:
        """The slot held by ``old`` (the Gate) now belongs to ``new`` (the session)."""
        entry = self._holders.pop(old, None)
        if entry is not None:
            self._holders[new] = entry

    def bound(self, holder: object) -> None:
        """``holder`` bound: it leaves its IP's unbound share (idempotent)."""
        entry = self._holders.get(holder)
        if entry is None or entry[1]:
            return
        ip = entry[0]
        self._holders[holder] = (ip, True)
        self._ips[ip].unbound -= 1

    def release(self, holder: object) -> None:
        """``holder`` closed: its slot is free (idempotent)."""
        entry = self._holders.pop(holder, None)
        if entry is None:
            return
        ip, bound = entry
        count = self._ips[ip]
        count.open -= 1
        if not bound:
            count.unbound -= 1
        if count.open <= 0:
            del self._ips[ip]

    def close(self) -> None:
        self._tally.close()


class Gate(asyncio.Protocol):
    """The listener's protocol until the peer's address is known: takes a slot and hands the
    transport to ``make_protocol()`` (``None``: refused, e.g. shutting down), or aborts the
    socket.

    With ``tls``, the listener is plain TCP and the Gate starts the TLS handshake itself
    (within ``handshake_timeout``) once the socket has its slot: a socket that never finishes
    its handshake holds one of its IP's unbound slots like any other, instead of a file
    descriptor outside every count. The handshake starts inside ``connection_made``, before
    the loop reads anything, so no byte of the ClientHello can be missed.
    """

    def __init__(
        self,
        admission: Admission,
        make_protocol: Callable[[], asyncio.Protocol | None],
        refuse: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self.admission = admission
        self.make_protocol = make_protocol
        self.refuse = refuse
        self.tls = tls
        self.handshake_timeout = handshake_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ip = peer_ip(transport)
        reason = self.refuse or self.admission.refusal(ip)
        if reason is not None:
            self.admission.refuse(ip, reason)
            transport.abort()
            return
        self.admission.take(self, ip)
        if self.tls is None:
            self._hand_over(transport, transport, ip)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(lambda fut: self._handshake_done(fut, transport, ip))
        tls = sslproto.SSLProtocol(
            loop,
            _Handshaken(self, transport, ip),
            self.tls,
            waiter,
            server_side=True,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, waiter: asyncio.Future, transport: asyncio.BaseTransport, ip: str) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            return  # handed over in _Handshaken.connection_made
        transport.abort()
        self.admission.release(self)
        self.admission.refuse(ip, "tls_handshake")

    def _hand_over(self, transport: asyncio.BaseTransport, raw: asyncio.BaseTransport, ip: str) -> None:
        protocol = self.make_protocol()
        if protocol is None:
            self.admission.release(self)
            self.admission.refuse(ip, "shutting_down")
            raw.abort()
            return
        self.admission.transfer(self, protocol)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # refused sockets end here; admitted ones belong to their protocol


class _Handshaken(asyncio.Protocol):
    """The TLS layer's application protocol for the instant between the end of the
    handshake and the hand-over to the session (before any application data is read)."""

    def __init__(self, gate: Gate, raw: asyncio.BaseTransport, ip: str) -> None:
        self.gate, self.raw, self.ip = gate, raw, ip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.gate._hand_over(transport, self.raw, self.ip)

    def connection_lost(self, exc: Exception | None) -> None:
        pass
