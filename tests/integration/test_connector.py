"""Upstream connectors over real loopback sockets.

Two peers on the other end of the wire:

- ``smpp34.Server`` (Rust-backed, not our code): proves the window, i.e. that one connector
  keeps ``window`` submit_sm in flight per bind, and never more;
- ``upstream.Upstream`` (tests/integration/upstream.py): a scriptable SMSC made from our codec
  only, which misbehaves on purpose: refuses binds, drops the connection mid-window,
  throttles, never answers, answers late, answers with generic_nack, sends deliver_sm.

Every wait is bounded; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import time
from pathlib import Path

import pytest
import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus as S
from smscenter.config import settings_from_dict
from smscenter.smpp.connector import CONGESTION_RETRIES, Connector, ConnectorDown, UnreadableResponse
from smscenter.smpp.link import ResponseTimeout
from smscenter.runtime.timers import FakeTimers
from tests.patience import PATIENCE


def _load_upstream():
    name = "smscenter_tests_upstream"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("upstream.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_upstream = _load_upstream()
Upstream = _upstream.Upstream
wait_for = _upstream.wait_for

pytestmark = pytest.mark.timeout(30)


# --- helpers ------------------------------------------------------------------------------


def connector_config(port: int, **overrides):
    entry = {
        "name": "operator-a",
        "host": "127.0.0.1",
        "port": port,
        "system_id": "gw",
        "password": "secret",
        "bind": "transceiver",
        "window": 10,
        "throughput": 10_000,
        # Generous on real time: a test that holds submits on a loaded machine must not see
        # them time out; the timeout tests set their own, on virtual time where they can.
        "response_timeout": "60s",
        "reconnect_min": "50ms",
        "reconnect_max": "200ms",
    }
    entry.update(overrides)
    return settings_from_dict({"connector": [entry]}).connectors[0]


def submit_sm(i: int) -> P.SubmitSm:
    return P.SubmitSm(
        source_addr="ACME",
        source_addr_ton=5,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=f"3361200{i:04d}",
        short_message=f"message {i}".encode(),
    )


def index_of(pdu) -> int:
    """The i of submit_sm(i), from whichever peer's representation."""
    return int(pdu.destination_addr[-4:])


@pytest.fixture
async def connectors():
    """Make connectors that are stopped at teardown, whatever the test did."""
    made: list[Connector] = []

    def make(port: int, deliver_handler=None, timers=None, **overrides) -> Connector:
        connector = Connector(connector_config(port, **overrides), deliver_handler, timers=timers)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        await connector.stop(0.5)


@pytest.fixture
async def upstream():
    up = await Upstream().start()
    yield up
    await up.close()


async def started(connector: Connector) -> Connector:
    await connector.start()
    await connector.wait_up(PATIENCE)
    return connector


# --- the window, against an independent peer (smpp34) --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def smpp34_server():
    smpp34 = pytest.importorskip("smpp34")
    port = free_port()
    server = smpp34.Server("127.0.0.1", port, system_id="SMPP34")
    await server.start()
    yield smpp34, server, port
    await server.stop()


async def next_submit(smpp34, server, timeout: float = PATIENCE):
    """The next SubmitSmEvent (skipping bind / unbind notifications)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await server.next()
            if isinstance(event, smpp34.SubmitSmEvent):
                return event


async def assert_quiet(smpp34, server, seconds: float) -> None:
    """No submit_sm arrives for ``seconds``: the window is full."""
    with pytest.raises(TimeoutError):
        await next_submit(smpp34, server, seconds)


async def test_window_keeps_window_in_flight_at_smpp34(smpp34_server, connectors):
    smpp34, server, port = smpp34_server
    connector = await started(connectors(port, window=10))
    tasks = [asyncio.create_task(connector.submit(submit_sm(i))) for i in range(100)]

    held = [await next_submit(smpp34, server) for _ in range(10)]
    await assert_quiet(smpp34, server, 0.3)  # 10 in flight, not one more
    assert len({e.session_id for e in held}) == 1

    # Release in batches: every batch fills the window again, and never past it.
    seen = [index_of(e) for e in held]
    while held:
        for event in held:
            event.accept(f"m{index_of(event)}")
        want = min(10, 100 - len(seen))
        held = [await next_submit(smpp34, server) for _ in range(want)]
        seen += [index_of(e) for e in held]
        if held and len(seen) < 100:
            await assert_quiet(smpp34, server, 0.02)

    responses = await asyncio.wait_for(asyncio.gather(*tasks), PATIENCE)
    assert [r.command_status for r in responses] == [S.ESME_ROK] * 100
    assert [r.message_id for r in responses] == [f"m{i}" for i in range(100)]
    assert sorted(seen) == list(range(100))  # each exactly once
    # (smpp34 hands its events over in no fixed order, so the order on the wire is checked
    # against our own upstream below, not here.)
    assert connector.stats["submitted"] == 100


async def test_window_is_per_bind_and_a_stuck_bind_does_not_hold_traffic(smpp34_server, connectors):
    smpp34, server, port = smpp34_server
    connector = connectors(port, window=10, binds=2)
    await connector.start()
    await wait_for(lambda: sum(link.can_submit for link in connector.links) == 2, 5)
    tasks = [asyncio.create_task(connector.submit(submit_sm(i))) for i in range(100)]

    held = [await next_submit(smpp34, server) for _ in range(20)]
    await assert_quiet(smpp34, server, 0.3)  # window x binds, not one more
    by_bind: dict[str, list] = {}
    for event in held:
        by_bind.setdefault(event.session_id, []).append(event)
    assert sorted(len(v) for v in by_bind.values()) == [10, 10]

    # Bind A stops answering; bind B answers. B must keep carrying the queue alone.
    stuck, moving = by_bind.values()
    moving_id = moving[0].session_id
    answered = 0
    while answered < 90:  # all but the 10 stuck on A go through B
        for event in moving:
            event.accept(f"m{index_of(event)}")
        answered += len(moving)
        want = min(10, 90 - answered)
        moving = [await next_submit(smpp34, server) for _ in range(want)]
        assert all(e.session_id == moving_id for e in moving)

    await wait_for(lambda: sum(t.done() for t in tasks) == 90, 2)
    assert not any(tasks[index_of(e)].done() for e in stuck)
    for event in stuck:
        event.accept(f"m{index_of(event)}")
    responses = await asyncio.wait_for(asyncio.gather(*tasks), PATIENCE)
    assert [r.message_id for r in responses] == [f"m{i}" for i in range(100)]
    assert connector.stats["submitted"] == 100 and connector.stats["timeouts"] == 0


# --- misbehaving upstream -----------------------------------------------------------------


async def test_bind_refused_keeps_retrying_then_binds(upstream, connectors):
    upstream.bind_status = S.ESME_RINVPASWD
    connector = connectors(upstream.port)
    with structlog.testing.capture_logs() as logs:
        await connector.start()
        await wait_for(lambda: connector.stats["bind_refused"] >= 3, 3)
    assert not connector.is_up
    assert upstream.binds == 0 and upstream.bind_attempts >= 3
    refused = [e for e in logs if e["event"] == "upstream_bind_refused"]
    assert refused and all(e["log_level"] == "error" for e in refused)  # credentials: loud
    assert all(e["status"] == "ESME_RINVPASWD" for e in refused)
    assert not any("secret" in repr(e) for e in logs)

    # A submit while no bind is up: ConnectorDown after its own deadline, nothing sent.
    with pytest.raises(ConnectorDown):
        await connector.submit(submit_sm(0), timeout=0.1)
    assert upstream.submits == []

    upstream.bind_status = S.ESME_ROK
    await connector.wait_up(3)
    resp = await connector.submit(submit_sm(1))
    assert resp.command_status == S.ESME_ROK
    assert upstream.binds == 1


async def test_close_mid_window_reconnects_and_loses_nothing(upstream, connectors):
    upstream.delay = 0.05  # answers trail, so the window is full when the socket drops
    upstream.close_after = 15
    connector = await started(connectors(upstream.port, window=10))
    responses = await asyncio.wait_for(
        asyncio.gather(*(connector.submit(submit_sm(i)) for i in range(40))), 10
    )
    assert [r.command_status for r in responses] == [S.ESME_ROK] * 40
    assert upstream.connections == 2 and upstream.binds == 2
    assert connector.stats["reconnects"] == 1

    received = [index_of(p) for p in upstream.submits]
    assert set(received) == set(range(40))  # nobody lost
    duplicates = len(received) - 40
    [in_flight_at_close] = upstream.closed_with_outstanding
    assert in_flight_at_close > 1  # it really was mid-window
    assert duplicates <= in_flight_at_close
    assert upstream.max_outstanding <= 10
    # Connection 2 gets the resent requests first, then the rest: all in submission order.
    second = received[15:]
    assert second == sorted(second)
    # Only what the upstream had not answered when it dropped the line went twice.
    [dropped] = upstream.dropped
    twice = {i for i in received if received.count(i) > 1}
    assert twice <= {index_of(p) for p in dropped}


async def test_throttled_submits_are_retried_in_order(upstream, connectors):
    upstream.throttle_first = 5
    connector = await started(connectors(upstream.port, window=10))
    responses = await asyncio.wait_for(
        asyncio.gather(*(connector.submit(submit_sm(i)) for i in range(20))), 10
    )
    assert [r.command_status for r in responses] == [S.ESME_ROK] * 20
    assert connector.stats["throttled"] == 5
    assert connector.stats["submitted"] == 20
    assert upstream.throttled == 5 and upstream.accepted == 20
    assert len(upstream.submits) == 25

    received = [index_of(p) for p in upstream.submits]
    assert list(dict.fromkeys(received)) == list(range(20))  # first arrivals in order
    # 0-9 fill the window; 0-4 are throttled and go again before anything newer than them.
    assert received == [*range(10), *range(5), *range(10, 20)]


async def test_an_upstream_that_keeps_throttling_gets_its_answer_back_to_the_caller(upstream, connectors):
    """Congestion is retried a few times, not forever: then the caller gets the answer
    (the dispatcher's next connector, or a later retry) and the queue goes on."""
    upstream.throttle_first = 1000
    connector = await started(connectors(upstream.port, window=10))
    resp = await asyncio.wait_for(connector.submit(submit_sm(0)), PATIENCE)
    assert resp.command_status == S.ESME_RTHROTTLED
    assert connector.stats["throttled"] == 1 + CONGESTION_RETRIES
    assert len(upstream.submits) == 1 + CONGESTION_RETRIES
    assert connector.stats["submitted"] == 0


async def test_never_answers_times_out_then_reconnects(upstream, connectors):
    upstream.never_answer = True
    timers = FakeTimers()
    connector = await started(connectors(upstream.port, response_timeout="200ms", timers=timers))
    first_link = connector.links[0]
    for n in range(1, 4):
        submit = asyncio.create_task(connector.submit(submit_sm(n)))
        await wait_for(lambda: len(upstream.submits) == n, 2)
        await timers.advance(0.19)
        assert not submit.done(), "timed out before response_timeout"
        await timers.advance(0.02)
        with pytest.raises(ResponseTimeout):
            await asyncio.wait_for(submit, PATIENCE)
        if n < 3:
            assert first_link.is_open and upstream.connections == 1
    assert connector.stats["timeouts"] == 3
    # After three timeouts in a row the bind is declared dead and reopened (after a backoff
    # of reconnect_min, 50 ms, with jitter).
    await wait_for(lambda: not first_link.is_open, 2)
    await timers.advance(0.05)
    await wait_for(lambda: upstream.binds == 2, 3)
    await connector.wait_up(3)
    assert not first_link.is_open
    assert upstream.connections == 2

    upstream.never_answer = False
    resp = await asyncio.wait_for(connector.submit(submit_sm(9)), PATIENCE)
    assert resp.command_status == S.ESME_ROK


async def test_late_answer_times_out_and_is_ignored(upstream, connectors):
    upstream.delay = 0.4
    connector = await started(connectors(upstream.port, response_timeout="200ms"))
    link = connector.links[0]
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(ResponseTimeout) as info:
            await asyncio.wait_for(connector.submit(submit_sm(1)), PATIENCE)
        assert index_of(info.value.request) == 1
        await wait_for(lambda: any(e["event"] == "upstream_late_response" for e in logs), 2)
    late = [e for e in logs if e["event"] == "upstream_late_response"]
    assert len(late) == 1 and late[0]["status"] == "ESME_ROK"
    assert upstream.late_answers == 1

    upstream.delay = 0.0
    resp = await asyncio.wait_for(connector.submit(submit_sm(2)), PATIENCE)
    assert resp.command_status == S.ESME_ROK
    assert connector.links == [link] and link.is_open  # one late answer is no reason to reconnect
    assert link.in_flight == 0


async def test_generic_nack_is_returned_to_the_caller(upstream, connectors):
    upstream.generic_nack = S.ESME_RSYSERR
    connector = await started(connectors(upstream.port))
    resp = await asyncio.wait_for(connector.submit(submit_sm(1)), PATIENCE)
    assert resp.command_id == CommandId.GENERIC_NACK
    assert isinstance(resp, P.GenericNack)
    assert resp.command_status == S.ESME_RSYSERR
    assert len(upstream.submits) == 1  # not retried: the pipeline decides

    upstream.generic_nack = None
    resp = await asyncio.wait_for(connector.submit(submit_sm(2)), PATIENCE)
    assert resp.command_status == S.ESME_ROK and connector.is_up


async def test_unreadable_response_fails_the_request_like_a_timeout(upstream, connectors):
    upstream.garble = True
    timers = FakeTimers()
    connector = await started(connectors(upstream.port, response_timeout="5s", timers=timers))
    first_link = connector.links[0]
    start = timers.now()
    for n in range(3):
        with pytest.raises(UnreadableResponse) as info:
            await asyncio.wait_for(connector.submit(submit_sm(n)), PATIENCE)
        assert isinstance(info.value, ResponseTimeout)  # callers treat both alike
    assert timers.now() == start  # at once: no virtual time passed, so not the response_timeout
    assert connector.stats["bad_responses"] == 3
    # Three in a row: the bind is reopened, like after three timeouts.
    await wait_for(lambda: not first_link.is_open, 2)
    await timers.advance(0.05)  # reconnect_min
    await wait_for(lambda: upstream.binds == 2, 3)
    assert not first_link.is_open
    upstream.garble = False
    await connector.wait_up(2)
    assert (await asyncio.wait_for(connector.submit(submit_sm(9)), PATIENCE)).command_status == S.ESME_ROK


async def test_throughput_is_a_rate_with_a_one_second_burst(upstream, connectors):
    timers = FakeTimers()
    connector = await started(connectors(upstream.port, throughput=20, window=50, timers=timers))
    submits = asyncio.gather(*(connector.submit(submit_sm(i)) for i in range(40)))
    # 20 at once (the burst), then 20 more at 20/s: one a 50 ms step, all within a second.
    await wait_for(lambda: len(upstream.submits) == 20, 3)
    await FakeTimers.settle(50)
    assert len(upstream.submits) == 20, "past the burst without time passing"
    await timers.advance(0.5)
    await wait_for(lambda: len(upstream.submits) >= 29, 3)
    assert len(upstream.submits) <= 31
    await timers.advance(0.5)
    responses = await asyncio.wait_for(submits, PATIENCE)
    assert all(r.command_status == S.ESME_ROK for r in responses)
    assert [index_of(p) for p in upstream.submits] == list(range(40))


async def test_deliver_sm_reaches_the_handler_and_is_acknowledged(upstream, connectors):
    delivered = []

    class Handler:
        def on_deliver(self, connector, link, pdu):
            delivered.append(pdu)
            link.respond(pdu.response())

    connector = await started(connectors(upstream.port, deliver_handler=Handler()))
    receipt = P.DeliverSm(
        source_addr="33612000001",
        destination_addr="ACME",
        esm_class=0x04,
        short_message=b"id:42 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:",
    )
    resp = await upstream.send_deliver(receipt)
    assert resp.command_id == CommandId.DELIVER_SM_RESP
    assert resp.command_status == S.ESME_ROK
    [got] = delivered
    assert got.esm_class == 0x04 and got.short_message == receipt.short_message
    assert got.sequence_number == resp.sequence_number


async def test_stop_unbinds(upstream, connectors):
    timers = FakeTimers()
    connector = await started(connectors(upstream.port, timers=timers))
    assert (await connector.submit(submit_sm(1))).command_status == S.ESME_ROK
    start = timers.now()
    await asyncio.wait_for(connector.stop(1.0), PATIENCE)
    assert timers.now() == start  # the upstream answered: no grace waited for
    assert upstream.unbinds == 1
    assert connector.links == []
    await wait_for(lambda: not upstream.sessions, 1)
    # Stopped means stopped: no reconnection, and a late caller is told at once.
    with pytest.raises(ConnectorDown):
        await asyncio.wait_for(connector.submit(submit_sm(2)), PATIENCE)
    await timers.advance(1.0)  # past reconnect_max
    assert upstream.connections == 1 and timers.pending == 0


async def test_stop_releases_callers_waiting_for_a_bind(connectors):
    timers = FakeTimers()
    connector = connectors(free_port(), timers=timers)  # nobody listens there
    await connector.start()
    waiting = asyncio.create_task(connector.submit(submit_sm(1)))
    behind = asyncio.create_task(connector.submit(submit_sm(2)))
    await timers.advance(1.0)  # a second of refused connects and backoffs
    assert not waiting.done() and not behind.done()
    await asyncio.wait_for(connector.stop(0.5), PATIENCE)
    for task in (waiting, behind):
        with pytest.raises(ConnectorDown):
            await asyncio.wait_for(task, PATIENCE)


async def test_upstream_down_at_start_then_up_nothing_lost(connectors):
    port = free_port()
    timers = FakeTimers()
    connector = connectors(port, timers=timers)
    with structlog.testing.capture_logs() as logs:
        await connector.start()
        tasks = [asyncio.create_task(connector.submit(submit_sm(i))) for i in range(5)]
        for n in range(1, 4):  # several refused connects, one per backoff (at most 200 ms)
            await wait_for(lambda: sum(e["event"] == "upstream_connect_failed" for e in logs) >= n, 3)
            await timers.advance(0.2)
    assert not any(t.done() for t in tasks)
    up = await Upstream(port=port).start()
    try:
        await timers.advance(0.2)  # the next attempt finds it
        responses = await asyncio.wait_for(asyncio.gather(*tasks), PATIENCE)
        assert all(r.command_status == S.ESME_ROK for r in responses)
        assert [index_of(p) for p in up.submits] == list(range(5))
    finally:
        await connector.stop(0.5)
        await up.close()


async def test_a_cancelled_submit_does_not_block_the_others(upstream, connectors):
    upstream.delay = 0.2
    connector = await started(connectors(upstream.port, window=1))
    first = asyncio.create_task(connector.submit(submit_sm(1)))
    second = asyncio.create_task(connector.submit(submit_sm(2)))  # at the gate, waiting for a slot
    third = asyncio.create_task(connector.submit(submit_sm(3)))  # queued behind it
    fourth = asyncio.create_task(connector.submit(submit_sm(4)))
    await asyncio.sleep(0.05)
    second.cancel()
    third.cancel()
    results = await asyncio.wait_for(asyncio.gather(first, fourth), PATIENCE)
    assert all(r.command_status == S.ESME_ROK for r in results)
    assert [index_of(p) for p in upstream.submits] == [1, 4]
    assert second.cancelled() and third.cancelled()
    assert upstream.max_outstanding == 1


async def test_keepalive_enquire_link_on_an_idle_bind(upstream, connectors):
    timers = FakeTimers()
    connector = await started(connectors(upstream.port, enquire_link_interval="100ms", timers=timers))
    # The first keep-alive comes one interval after the bind, not after some other timer.
    await timers.advance(0.09)
    assert upstream.enquire_links == 0
    for n in (1, 2):
        await timers.advance(0.02)
        await wait_for(lambda: upstream.enquire_links == n, 2)
        await wait_for(lambda: connector.links[0].in_flight == 0, 2)  # its answer arrived
        await timers.advance(0.08)
    assert connector.is_up and upstream.connections == 1
    assert (await connector.submit(submit_sm(1))).command_status == S.ESME_ROK


# --- bind layouts: TX+RX pairs, one bind per short code ---------------------------------------


async def test_pair_opens_a_transmitter_and_a_receiver_per_bind(upstream, connectors):
    class Deliveries:
        got: list = []

        def on_deliver(self, connector, link, pdu):
            self.got.append((link.can_submit, pdu))
            link.respond(pdu.response())

    handler = Deliveries()
    connector = await started(connectors(upstream.port, handler, bind="pair", binds=2))
    await wait_for(lambda: upstream.binds == 4)
    kinds = sorted(type(p).__name__ for p in upstream.bind_pdus)
    assert kinds == ["BindReceiver", "BindReceiver", "BindTransmitter", "BindTransmitter"]
    resp = await connector.submit(submit_sm(1), timeout=2)
    assert resp.command_status == 0
    # The submit went on a transmitter session, never on a receiver one.
    assert len(upstream.submits) == 1
    # A receipt delivered on a receiver session reaches the handler.
    rx = next(s for s in upstream.bound_sessions if isinstance(s.bind_pdu, P.BindReceiver))
    answer = await rx.request(P.DeliverSm(source_addr="33612345678", destination_addr="ACME", esm_class=4), 2)
    assert answer.command_status == 0
    assert handler.got and handler.got[0][0] is False  # arrived on the receiver


async def test_one_bind_per_short_code_tags_mo(upstream, connectors):
    seen = []

    class Deliveries:
        def on_deliver(self, connector, link, pdu):
            seen.append(link.short_code)
            link.respond(pdu.response())

    await started(connectors(upstream.port, Deliveries(), short_codes=["36180", "38100"]))
    await wait_for(lambda: upstream.binds == 2)
    assert sorted(p.address_range for p in upstream.bind_pdus) == ["36180", "38100"]
    for session in upstream.bound_sessions:
        await session.request(P.DeliverSm(source_addr="33612345678", destination_addr=""), 2)
    assert sorted(seen) == ["36180", "38100"]


def test_rate_limited_queue_drains_under_uvloop():
    """The daemon runs on uvloop, whose ``call_at`` for a time already due returns a plain
    ``Handle`` (no ``when()``) for anything due within half a millisecond: the rate
    limiter's re-drain timer must not depend on it. At a few thousand per second the bucket
    is often that close to its next token; every submit goes through, in order."""
    import uvloop

    async def scenario() -> None:
        up = await Upstream().start()
        connector = Connector(connector_config(up.port, throughput=3000, window=10))
        try:
            # A re-drain due at once (a Handle under uvloop), then a later wish: no when().
            connector._drain_at(0.0)
            connector._drain_at(0.05)
            await started(connector)
            responses = await asyncio.wait_for(
                asyncio.gather(*(connector.submit(submit_sm(i)) for i in range(600))), 20
            )
            assert [r.command_status for r in responses] == [S.ESME_ROK] * 600
            assert [index_of(p) for p in up.submits] == list(range(600))
        finally:
            await connector.stop(0.5)
            await up.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


# --- up and down events ---------------------------------------------------------------------


async def test_connector_events_up_at_the_first_bound_session_down_at_the_loss_of_the_last(upstream):
    """``ConnectorEvent`` through the core's ``Events``: up once its first bind is bound (not
    again for the second), down once the last one is lost (not at the first loss), stamped
    on the wall clock it was given, each with its log line; a stop when down emits nothing
    more."""
    from smscenter.pipeline.events import ConnectorEvent, Events

    seen: list = []

    class Subscriber:
        def take(self, event, backlog) -> None:
            seen.append(event)

    timers = FakeTimers()  # the reconnect backoff waits on virtual time: no retry meanwhile
    connector = Connector(connector_config(upstream.port, binds=2), None, timers=timers,
                          events=Events([Subscriber()]), wall_clock=lambda: 1_750_000_000.0)
    try:
        with structlog.testing.capture_logs() as logs:
            await connector.start()
            await wait_for(lambda: len(connector.links) == 2 and len(upstream.bound_sessions) == 2)
            assert seen == [ConnectorEvent("operator-a", True, 1_750_000_000.0)]
            upstream.bound_sessions[0].close()
            await wait_for(lambda: len(connector.links) == 1)
            assert len(seen) == 1  # one session left: still up
            upstream.bound_sessions[0].close()
            await wait_for(lambda: not connector.links)
            assert seen == [ConnectorEvent("operator-a", True, 1_750_000_000.0), ConnectorEvent("operator-a", False, 1_750_000_000.0)]
        assert [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("connector_")] == [
            ("connector_up", "info"), ("connector_down", "warning")]
        assert [e for e in logs if e["event"] == "connector_down"][0]["stopping"] is False
    finally:
        await connector.stop(0.5)
    assert len(seen) == 2


async def test_a_stopping_connector_emits_down(upstream):
    from smscenter.pipeline.events import ConnectorEvent, Events

    seen: list = []

    class Subscriber:
        def take(self, event, backlog) -> None:
            seen.append(event)

    connector = Connector(connector_config(upstream.port), None, timers=FakeTimers(),
                          events=Events([Subscriber()]), wall_clock=lambda: 5.0)
    await started(connector)
    with structlog.testing.capture_logs() as logs:
        await connector.stop(0.5)
    assert seen == [ConnectorEvent("operator-a", True, 5.0), ConnectorEvent("operator-a", False, 5.0)]
    [down] = [e for e in logs if e["event"] == "connector_down"]
    assert (down["log_level"], down["stopping"]) == ("info", True)  # a stop is no incident
