"""Aggregated logs on virtual time: one line per (account, reason) and interval with the
count; a traceback once per cause; storage failures sorted into busy and broken."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa
from structlog.testing import capture_logs

from smscenter.runtime.floodlog import AggregatedLog, ErrorLog, RefusalLog, cause_of
from smscenter.smpp.handler import storage_busy
from smscenter.runtime.timers import FakeTimers


def lines(logs, event):
    return [e for e in logs if e["event"] == event]


async def test_refusals_one_line_per_account_and_reason_per_interval():
    timers = FakeTimers()
    refusals = RefusalLog(timers, 10.0)
    with capture_logs() as logs:
        for _ in range(10_000):
            refusals.refused("acme", "ESME_RTHROTTLED")
        refusals.refused("acme", "ESME_RINVSRCADR")
        refusals.refused("beta", "ESME_RTHROTTLED")
        first = list(logs)
        await timers.advance(10.0)
    assert [(e["account"], e["reason"], e["count"]) for e in lines(first, "requests_refused")] == [
        ("acme", "ESME_RTHROTTLED", 1), ("acme", "ESME_RINVSRCADR", 1), ("beta", "ESME_RTHROTTLED", 1),
    ]
    summary = lines(logs, "requests_refused")[3:]
    assert [(e["account"], e["reason"], e["count"]) for e in summary] == [("acme", "ESME_RTHROTTLED", 9_999)]
    assert refusals.totals[("acme", "ESME_RTHROTTLED")] == 10_000

    with capture_logs() as logs:
        for second in range(30):  # 5 a second for 30 s: one line per interval
            for _ in range(5):
                refusals.refused("acme", "ESME_RTHROTTLED")
            await timers.advance(1.0, settle=0)
    counts = [e["count"] for e in lines(logs, "requests_refused")]
    assert len(counts) <= 4 and sum(counts) == 150


async def test_a_quiet_interval_resets_the_key():
    timers = FakeTimers()
    summaries: list = []
    agg = AggregatedLog(timers, 5.0, lambda key, n: summaries.append((key, n)))
    assert agg.note("k") is True
    assert agg.note("k") is False
    await timers.advance(5.0)
    assert summaries == [("k", 1)]
    await timers.advance(5.0)  # nothing in this interval: no line, the key closes
    assert summaries == [("k", 1)] and agg.open_keys == 0
    assert agg.note("k") is True  # logged at once again
    assert agg.totals["k"] == 3


async def test_keys_are_bounded():
    timers = FakeTimers()
    agg = AggregatedLog(timers, 5.0, lambda key, n: None, max_keys=100)
    for i in range(1000):
        agg.note(i)
    assert len(agg.totals) == 100 and agg.open_keys == 100
    await timers.advance(10.0)
    assert agg.open_keys == 0


def failing(n: int):
    raise sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached")


def broken(n: int = 0):
    raise KeyError("bug")


async def test_traceback_once_per_cause_then_counted():
    timers = FakeTimers()
    errors = ErrorLog(timers, 10.0)
    with capture_logs() as logs:
        for i in range(1000):
            for fn in (failing, broken):
                try:
                    fn(i)
                except Exception as exc:  # noqa: BLE001
                    errors.exception("query_failed", exc, account="acme")
        await timers.advance(10.0)
    tracebacks = [e for e in logs if e.get("exc_info") is not None]
    assert [(e["event"], e["error"]) for e in tracebacks] == [("query_failed", "TimeoutError"), ("query_failed", "KeyError")]
    repeated = lines(logs, "errors_repeated")
    assert sorted((e["error"], e["count"]) for e in repeated) == [("KeyError", 999), ("TimeoutError", 999)]
    assert errors.totals == {("query_failed", "TimeoutError"): 1000, ("query_failed", "KeyError"): 1000}
    # Later, after a quiet interval: one line again, but no second traceback.
    await timers.advance(20.0)
    with capture_logs() as logs:
        try:
            broken()
        except KeyError as exc:
            errors.exception("query_failed", exc)
    assert [(e["event"], e.get("repeated"), e.get("exc_info")) for e in logs] == [("query_failed", True, None)]


def test_cause_is_type_and_place():
    try:
        broken()
    except KeyError as exc:
        kind, where = cause_of(exc)
    assert kind == "KeyError" and where.startswith("test_floodlog.py:")
    assert cause_of(ValueError("no traceback")) == ("ValueError", "?")


def test_storage_busy_sorts_temporary_from_broken():
    assert storage_busy(sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out"))
    assert storage_busy(sa.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
    assert storage_busy(ConnectionRefusedError())
    assert not storage_busy(sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: messages")))
    assert not storage_busy(sa.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")))
    assert not storage_busy(KeyError("bug"))
