"""Session budgets on virtual time: window and throughput for every request, the enquire_link
rate, the flood meter and its unbind, the storage gate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from protocol.constants import CommandStatus as S
from smscenter.smpp.budgets import FloodMeter, SessionBudgets, SessionFlooding, StorageGate
from smscenter.config.sections import Server
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.runtime.timers import FakeTimers


class FakeLink(SimpleNamespace):
    __hash__ = object.__hash__  # keyed by identity, like a Link
    __eq__ = object.__eq__


def fake_link(pending: int = 1, account: str = "acme", window: int = 4, throughput: float = 1000, now: float = 0.0):
    bucket = TokenBucket(throughput, now)
    acc = SimpleNamespace(system_id=account, config=SimpleNamespace(window=window), bucket=bucket)
    link = FakeLink(session=SimpleNamespace(pending=pending), peer=("127.0.0.1", 4242))
    link.context = SimpleNamespace(account=acc, link=link)
    return link


def budgets_for(timers: FakeTimers, **server):
    unbound: list = []
    budgets = SessionBudgets(Server(**server), timers, lambda link, reason: unbound.append((link, reason)))
    return budgets, unbound


async def test_window_then_throughput_refuse_every_request_at_once():
    timers = FakeTimers()
    budgets, _ = budgets_for(timers)
    link = fake_link(window=4, throughput=3, now=timers.now())
    bind = link.context
    link.session.pending = 5  # this request is the fifth unanswered one past a window of 4
    assert budgets.admit(link, bind, timers.now()) == S.ESME_RMSGQFUL
    link.session.pending = 4
    assert [budgets.admit(link, bind, timers.now()) for _ in range(4)] == [None, None, None, S.ESME_RTHROTTLED]
    await timers.advance(1.0)
    assert budgets.admit(link, bind, timers.now()) is None  # the bucket refilled
    assert budgets.stats["window_full"] == 1 and budgets.stats["throttled"] == 1
    assert budgets.refusals.totals == {("acme", "ESME_RMSGQFUL"): 1, ("acme", "ESME_RTHROTTLED"): 1}


async def test_enquire_link_beyond_its_rate_is_counted_not_refused():
    timers = FakeTimers()
    budgets, unbound = budgets_for(timers, enquire_link_rate=2.0, enquire_link_burst=5)
    link = fake_link()
    for _ in range(5):  # the burst
        budgets.enquire_link(link)
    assert budgets.stats["enquire_link_over_rate"] == 0
    budgets.enquire_link(link)
    assert budgets.stats["enquire_link_over_rate"] == 1
    await timers.advance(1.0)  # two more allowed per second
    budgets.enquire_link(link)
    budgets.enquire_link(link)
    assert budgets.stats["enquire_link_over_rate"] == 1
    # Sustained at the rate: never counted.
    for _ in range(100):
        await timers.advance(0.5, settle=0)
        budgets.enquire_link(link)
    assert budgets.stats["enquire_link_over_rate"] == 1
    assert unbound == []


async def test_enquire_link_flood_unbinds_once_with_a_logged_reason():
    timers = FakeTimers()
    budgets, unbound = budgets_for(timers, enquire_link_rate=2.0, enquire_link_burst=10, flood_refusals=100,
                                   flood_interval="10s")
    link = fake_link()
    with capture_logs() as logs:
        for _ in range(10 + 100):
            budgets.enquire_link(link)
        assert unbound == []  # 100 strikes: at the limit, not past it
        budgets.enquire_link(link)
        assert len(unbound) == 1
        for _ in range(50):  # what it sends before the close takes effect
            budgets.enquire_link(link)
    assert len(unbound) == 1
    assert isinstance(unbound[0][1], SessionFlooding) and unbound[0][1].cause == "enquire_link"
    assert "session_flooding" in str(unbound[0][1])
    flooding = [e for e in logs if e["event"] == "session_flooding"]
    assert len(flooding) == 1 and flooding[0]["account"] == "acme" and flooding[0]["cause"] == "enquire_link"
    assert budgets.stats["flooding_unbinds"] == 1
    budgets.forget(link)
    assert budgets.sessions_metered == 0


async def test_refusals_spread_over_intervals_do_not_unbind():
    timers = FakeTimers()
    budgets, unbound = budgets_for(timers, flood_refusals=100, flood_interval="10s")
    link = fake_link()
    for _ in range(5):
        for _ in range(90):  # 90 refusals per 10 s: below the limit, for a minute
            budgets.refused(link, "acme", S.ESME_RTHROTTLED)
        await timers.advance(10.0, settle=0)
    assert unbound == []
    for _ in range(101):
        budgets.refused(link, "acme", S.ESME_RINVSRCADR)
    assert [reason.cause for _, reason in unbound] == ["refused_requests"]


def test_flood_meter_counts_per_interval():
    meter = FloodMeter(limit=3, interval=10.0, now=0.0, enquire_rate=1.0, enquire_burst=1)
    assert [meter.strike(t) for t in (1, 2, 3)] == [False, False, False]
    assert meter.strike(12.0) is False  # a new interval: the count starts again
    assert [meter.strike(12.5) for _ in range(3)] == [False, False, True]
    assert meter.strike(13.0) is False  # trips once


def test_storage_gate_answers_at_once_when_full():
    gate = StorageGate(2)
    assert [gate.try_enter() for _ in range(3)] == [True, True, False]
    assert (gate.in_use, gate.refused) == (2, 1)
    gate.leave()
    assert gate.try_enter() is True
    gate.leave(), gate.leave(), gate.leave()
    assert gate.in_use == 0
    with pytest.raises(ValueError):
        StorageGate(0)


async def test_late_responses_are_logged_aggregated_and_strike():
    timers = FakeTimers()
    budgets, unbound = budgets_for(timers, flood_refusals=100, refusal_log_interval="10s")
    link = fake_link()
    with capture_logs() as logs:
        for _ in range(100):
            budgets.late_response(link, "SubmitSmResp")
        assert unbound == []
        budgets.late_response(link, "SubmitSmResp")  # the 101st within the interval
        assert [reason.cause for _, reason in unbound] == ["refused_requests"]
        await timers.advance(10.0)
    assert [e["count"] for e in logs if e["event"] == "late_response"] == [1, 100]
    assert budgets.stats["late_responses"] == 101


async def test_a_busy_partner_whose_refusals_are_a_minority_stays_bound():
    """A campaign meeting many opted-out numbers: 2,000 refusals in 10 s, but out of 10,000
    requests. Flooding is most of what a session sends being refused."""
    timers = FakeTimers()
    budgets, unbound = budgets_for(timers, flood_refusals=1000, flood_interval="10s")
    link = fake_link(throughput=1_000_000, window=1_000_000, now=timers.now())
    for i in range(10_000):
        assert budgets.admit(link, link.context, timers.now()) is None
        if i % 5 == 0:
            budgets.refused(link, "acme", S.SMSC_ROPTEDOUT)  # refused by policy after admission
    assert unbound == []
    # The same refusals with no accepted traffic around them: flooding.
    await timers.advance(10.0, settle=0)
    for _ in range(1001):
        assert budgets.admit(link, link.context, timers.now()) is None
        budgets.refused(link, "acme", S.ESME_RINVSRCADR)
    assert [reason.cause for _, reason in unbound] == ["refused_requests"]


def test_flood_meter_needs_refusals_to_be_most_requests():
    meter = FloodMeter(limit=3, interval=10.0, now=0.0, enquire_rate=1.0, enquire_burst=1)
    for _ in range(20):
        meter.request(1.0)
    assert [meter.strike(1.0) for _ in range(10)] == [False] * 10  # 10 of 20: not most
    assert meter.strike(1.0) is True  # 11 of 20
