"""Connection slots: total, per IP, unbound share per IP; refusals counted and logged aggregated."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from smscenter.smpp.admission import Admission, Gate
from smscenter.runtime.floodlog import Tally
from smscenter.runtime.timers import FakeTimers

A, B = "192.0.2.1", "192.0.2.2"


def make(timers=None, **kwargs) -> Admission:
    options = dict(max_connections=20, max_connections_per_ip=5, max_unbound_per_ip=2)
    options.update(kwargs)
    return Admission(timers or FakeTimers(), **options)


def test_unbound_share_then_per_ip_cap_then_total():
    adm = make()
    holders = [object() for _ in range(2)]
    for h in holders:
        assert adm.refusal(A) is None
        adm.take(h, A)
    assert adm.refusal(A) == "max_unbound_per_ip"
    assert adm.refusal(B) is None  # another address still gets in

    # A socket that binds moves out of the unbound share but still counts for its IP.
    for h in holders:
        adm.bound(h)
        adm.bound(h)  # idempotent
    assert adm.unbound(A) == 0 and adm.connections(A) == 2
    more = []
    while adm.refusal(A) is None:
        h = object()
        adm.take(h, A)
        adm.bound(h)
        more.append(h)
    assert adm.refusal(A) == "max_connections_per_ip" and adm.connections(A) == 5

    adm.release(more[0])
    adm.release(more[0])  # idempotent
    assert adm.refusal(A) is None and adm.connections(A) == 4

    small = make(max_connections=3)
    for n in range(3):
        small.take(object(), f"10.0.0.{n}")
    assert small.refusal("10.0.0.9") == "max_connections"


def test_released_unbound_socket_frees_its_share_and_the_table_empties():
    adm = make()
    h = object()
    adm.take(h, A)
    adm.release(h)
    assert adm.unbound(A) == 0 and adm.open == 0 and adm._ips == {}


async def test_refusals_counted_by_reason_and_logged_once_per_ip_and_interval():
    timers = FakeTimers()
    adm = make(timers, log_interval=10.0)
    with capture_logs() as logs:
        for _ in range(500):
            adm.refuse(A, "max_unbound_per_ip")
        adm.refuse(B, "max_unbound_per_ip")
        await timers.advance(10)
        await timers.advance(10)  # a quiet interval: nothing more
        adm.refuse(A, "max_unbound_per_ip")
    lines = [(e["peer"], e["count"]) for e in logs if e["event"] == "connection_refused"]
    assert lines == [(A, 1), (B, 1), (A, 499), (A, 1)]
    assert adm.refused["max_unbound_per_ip"] == 502 and adm.refused["max_connections_per_ip"] == 0


async def test_tally_is_bounded_in_keys():
    timers = FakeTimers()
    with capture_logs() as logs:
        tally = Tally(__import__("structlog").get_logger("t"), "refused", timers, max_keys=3)
        for n in range(100):
            tally.add(peer=f"10.0.0.{n}", reason="x")
        await timers.advance(10)
    assert tally.open_keys <= 4
    assert sum(e["count"] for e in logs) == 100
    assert len(logs) <= 5


class FakeTransport(asyncio.Transport):
    def __init__(self, ip: str) -> None:
        super().__init__()
        self.ip = ip
        self.aborted = False
        self.protocol = None

    def get_extra_info(self, name, default=None):
        return (self.ip, 40000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport


def test_gate_hands_the_socket_over_or_aborts_it():
    adm = make(max_unbound_per_ip=1)
    first, second = FakeTransport(A), FakeTransport(A)
    Gate(adm, Recorder).connection_made(first)
    assert isinstance(first.protocol, Recorder) and first.protocol.transport is first
    Gate(adm, Recorder).connection_made(second)
    assert second.aborted and second.protocol is None
    closing = FakeTransport(B)
    Gate(adm, Recorder, refuse="shutting_down").connection_made(closing)
    assert closing.aborted
    assert (adm.refused["max_unbound_per_ip"], adm.refused["shutting_down"], adm.open) == (1, 1, 1)


def test_per_ip_means_ipv4_address_or_ipv6_slash_64():
    from smscenter.smpp.admission import address_key

    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"
