"""The MT queue in the database (issue 14): the dispatcher's bounded working set, its loader,
spill mode, messages waiting (held, scheduled, retrying) out of memory, and per-line order
across load boundaries and retries — on virtual time (``FakeTimers``), with a real store on
a SQLite file and a stand-in connector that records what it was handed.

The store's commits are real I/O: ``until`` waits for them (a condition, not a duration)."""

from __future__ import annotations

import asyncio
import itertools
import time
from types import SimpleNamespace

import pytest

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandStatus
from protocol.constants import MessageState as M
from smscenter.config.sections import SourceTonNpi
from smscenter.smpp.connector import ConnectorDown
from smscenter.pipeline.dispatch import Dispatcher, QueuedMessage
from smscenter.runtime.timers import FakeTimers
from storage.schema import PART_QUEUED
from tests.store_helpers import recording_store
from tests.patience import PATIENCE

_ids = itertools.count(1_000)
START = 1_767_225_600.0


class Upstream:
    """A connector stand-in: ``submitted`` lists (message id, part) in the order handed over;
    ``down`` makes every submit fail (ConnectorDown); ``gate``, when set, holds submits."""

    name = "op"

    def __init__(self) -> None:
        self.config = SimpleNamespace(window=10, binds=1, source_ton_npi=SourceTonNpi(), dest_ton_npi=(1, 1),
                                      message_id="as-is")
        self.id_learner = None  # a configured convention
        self.submitted: list[tuple[int, int]] = []
        self.down = False
        self.gate: asyncio.Event | None = None
        self.is_up = True

    async def submit(self, pdu, timeout=None, still_wanted=None):
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectorDown("down")
        message_id, part_no = (int(x) for x in pdu.short_message.decode().split(":"))
        self.submitted.append((message_id, part_no))
        return pdu.response(CommandStatus.ESME_ROK, message_id=f"up{message_id}-{part_no}")

    def ids(self) -> list[int]:
        return [m for m, _ in self.submitted]


def decode(rows: list[dict]) -> QueuedMessage:
    """The pipeline's decoder without the cipher: these rows hold plain values."""
    row = rows[0]
    return QueuedMessage(
        row["message_id"], row["account"], row["dest_hash"], ("op",), row["next_attempt_at"], row["expires_at"],
        [(r["part_no"], codec.decode(r["pdu_enc"])) for r in rows], attempts=max(r["attempts"] for r in rows),
        dest=row["dest_enc"].decode(), marketing=row["category"] == "marketing",
    )


class Queue:
    """A dispatcher on a real store, on virtual time."""

    def __init__(self, store, timers: FakeTimers, upstream: Upstream, working_set: int, page: int) -> None:
        self.store, self.timers, self.upstream = store, timers, upstream
        self.dispatcher = Dispatcher({"op": upstream}, store, clock=timers, timers=timers, workers=4,
                                     working_set=working_set, page=page)
        self.dispatcher.decode = decode
        store.on_cancelled = self.dispatcher.cancelled
        self.peak = 0

    async def start(self) -> None:
        await self.dispatcher.start()
        await self.dispatcher.resume()
        await self.until(lambda: not self.dispatcher._more, "the loader's first pass")

    async def submit(self, dest: str = "33600000001", *, parts: int = 1, delay: float = 0.0,
                     category: str = "alert", account: str = "acme", enqueue: bool = True) -> int:
        """Store a message (as the pipeline does), then hand it to the dispatcher."""
        message_id = next(_ids)
        now = self.timers.now()
        not_before = now + delay
        row = {
            "id": message_id, "account": account, "category": category, "source_addr": "ACME", "source_ton": 5,
            "source_npi": 0, "dest_hash": dest.encode()[-16:].rjust(16, b"\0"), "dest_enc": dest.encode(),
            "data_coding": 0, "registered_delivery": 0, "priority": 0, "parts_total": parts,
            "state": int(M.ENROUTE), "error": 0, "submitted_at": now, "not_before": not_before,
            "expires_at": now + 86400, "done_at": None, "connector": None,
        }
        pdus = [(n, P.SubmitSm(source_addr="ACME", destination_addr=dest, short_message=b"%d:%d" % (message_id, n)))
                for n in range(1, parts + 1)]
        part_rows = [
            {"message_id": message_id, "part_no": n, "pdu_enc": codec.encode(pdu), "state": PART_QUEUED,
             "connector": None, "upstream_id": None, "attempts": 0, "next_attempt_at": not_before, "updated_at": now}
            for n, pdu in pdus
        ]
        await self.store.add_message(row, part_rows)
        if enqueue:
            self.dispatcher.enqueue(QueuedMessage(
                message_id, account, row["dest_hash"], ("op",), not_before, row["expires_at"], pdus, dest=dest,
                marketing=category == "marketing",
            ))
        self.watch()
        return message_id

    def watch(self) -> None:
        self.peak = max(self.peak, self.dispatcher.resident)

    async def until(self, condition, what: str, timeout: float = PATIENCE) -> None:
        """Wait for the store's real I/O (and the loader it feeds) to get there."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.watch()
            if time.monotonic() > deadline:
                d = self.dispatcher
                raise AssertionError(f"timed out waiting for {what}: resident {d.resident}, more {d._more}, "
                                     f"cursor {d._cursor}, writing {len(d._writing)}, sent {self.upstream.ids()}")
            await asyncio.sleep(0.005)
        self.watch()


@pytest.fixture
async def store(sqlite_engine):
    store = recording_store(sqlite_engine, itertools.count(10_000_000))
    await store.start()
    yield store
    await store.stop()


@pytest.fixture
async def make(store):
    made: list[Queue] = []

    async def build(*, working_set: int = 3, page: int = 2, timers: FakeTimers | None = None,
                    upstream: Upstream | None = None, start: bool = True) -> Queue:
        queue = Queue(store, timers or FakeTimers(START), upstream or Upstream(), working_set, page)
        if start:
            await queue.start()
        made.append(queue)
        return queue

    yield build
    for queue in made:
        await queue.dispatcher.stop()


def in_line_order(submitted: list[int], expected: list[int]) -> bool:
    positions = [submitted.index(m) for m in expected]
    return positions == sorted(positions)


# --------------------------------------------------------------------------- working set, loader


async def test_restart_loads_the_queue_in_pages_and_keeps_each_line_in_order(make):
    """Messages left in the database (a restart): the loader brings them a page at a time,
    never more than the working set in memory, and a line's messages go in id order even
    when the line straddles pages."""
    q = await make(start=False)
    line_a = [await q.submit("33600000001", enqueue=False) for _ in range(5)]
    line_b = [await q.submit("33600000002", parts=2, enqueue=False) for _ in range(3)]
    others = [await q.submit(f"3361000{i:04d}", enqueue=False) for i in range(6)]
    await q.start()
    everything = line_a + line_b + others
    await q.until(lambda: len(set(q.upstream.ids())) == len(everything), "every message upstream")
    assert sorted(set(q.upstream.ids())) == sorted(everything)
    assert len(q.upstream.submitted) == len(everything) + len(line_b)  # each part once
    assert in_line_order(q.upstream.ids(), line_a)  # lines interleave, each keeps its order
    assert in_line_order(q.upstream.ids(), line_b)
    assert q.peak <= 3 + 1  # the working set, plus at most one message of a page that ended inside it
    assert q.dispatcher.stats["load_pages"] >= len(everything) // 2
    await q.until(lambda: q.dispatcher.queued == 0, "the queue counted empty")


async def test_spill_when_full_then_refill_in_order(make):
    """The working set is full while the upstream holds: new submits stay in the database
    ("spill") and come back in order as it drains; later submits to a line never overtake
    its spilled ones."""
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    q = await make(upstream=upstream)
    line = [await q.submit("33600000001") for _ in range(4)]
    rest = [await q.submit(f"3361000{i:04d}") for i in range(6)]
    await FakeTimers.settle()
    assert q.dispatcher.resident == 3
    assert q.dispatcher.stats["spilled"] == 7
    assert q.dispatcher.queued == 10
    upstream.gate.set()
    late = await q.submit("33600000001")  # while the spilled ones wait: spills too
    await q.until(lambda: len(upstream.submitted) == 11, "all eleven upstream")
    assert in_line_order(upstream.ids(), line + [late])
    assert sorted(upstream.ids()) == sorted(line + rest + [late])
    assert q.peak <= 4
    # Drained: the next submit goes straight to the working set again.
    spilled = q.dispatcher.stats["spilled"]
    await q.until(lambda: q.dispatcher.resident == 0 and not q.dispatcher._more, "the loader caught up")
    await q.submit("33600000009")
    assert q.dispatcher.stats["spilled"] == spilled
    await q.until(lambda: len(upstream.submitted) == 12, "the direct one upstream")


async def test_scheduled_messages_wait_in_the_database_under_one_timer(make):
    timers = FakeTimers(START)
    q = await make(timers=timers, working_set=100, page=50)
    later = [await q.submit(f"3362000{i:04d}", delay=3600 + i, category="marketing") for i in range(50)]
    await FakeTimers.settle()
    assert q.dispatcher.resident == 0  # nothing of them in memory
    assert q.dispatcher.held() == 50 and q.dispatcher.queued == 50
    assert timers.pending == 1  # one timer, for the earliest
    assert timers.next_due() == START + 3600
    await timers.advance(3599)
    assert q.upstream.submitted == []
    await timers.advance(1)
    await q.until(lambda: q.upstream.ids() == later[:1], "the first one at its time")
    await timers.advance(60)
    await q.until(lambda: len(q.upstream.submitted) == 50, "all of them")
    assert q.upstream.ids() == later
    assert q.dispatcher.held() == 0
    await q.until(lambda: q.dispatcher.queued == 0, "counted out")


async def test_a_retry_leaves_memory_and_keeps_its_line_closed(make):
    """All connectors fail: the message waits in the database for its retry, out of memory;
    the line's later messages — resident, spilled or submitted meanwhile — wait behind it and
    go after it, in order."""
    timers = FakeTimers(START)
    upstream = Upstream()
    upstream.down = True
    q = await make(timers=timers, upstream=upstream, working_set=100, page=10)
    first = await q.submit("33600000001")
    await q.until(lambda: q.dispatcher.stats["retried"] == 1, "the first attempt failed")
    second = await q.submit("33600000001")  # the line is closed: into the database
    other = await q.submit("33600000002")  # another number: not held behind it
    await q.until(lambda: q.dispatcher.stats["retried"] == 2, "the other one failed too")
    await q.until(lambda: not q.dispatcher._writing, "the retries stored")
    assert q.dispatcher.resident == 0
    assert q.dispatcher.queued == 3
    upstream.down = False
    third = await q.submit("33600000001")
    await FakeTimers.settle()
    assert upstream.submitted == []  # the line is still closed
    await timers.advance(2.0)  # RETRY_MIN
    await q.until(lambda: len(upstream.submitted) == 4, "all four")
    assert in_line_order(upstream.ids(), [first, second, third])
    assert other in upstream.ids()
    assert q.dispatcher.stats["retried"] == 2


async def test_retry_state_survives_a_restart(make, store):
    """A message waiting for its retry when the daemon stops: after a restart its line is
    still closed behind it (rebuilt from the database), so a new submit waits."""
    timers = FakeTimers(START)
    upstream = Upstream()
    upstream.down = True
    q = await make(timers=timers, upstream=upstream, working_set=100, page=10)
    first = await q.submit("33600000001")
    await q.until(lambda: q.dispatcher.stats["retried"] == 1, "the first attempt failed")
    await q.until(lambda: not q.dispatcher._writing, "the retry stored")
    await q.dispatcher.stop()

    upstream2 = Upstream()
    q2 = await make(timers=timers, upstream=upstream2, working_set=100, page=10)
    assert q2.dispatcher.queued == 1
    second = await q2.submit("33600000001")
    await FakeTimers.settle()
    await asyncio.sleep(0.05)  # let the store answer the loader, if it (wrongly) would load
    assert upstream2.submitted == []
    await timers.advance(2.0)
    await q2.until(lambda: len(upstream2.submitted) == 2, "both after the retry time")
    assert upstream2.ids() == [first, second]


async def test_cancel_a_message_that_waits_in_the_database(make, store):
    timers = FakeTimers(START)
    q = await make(timers=timers, working_set=100, page=10)
    kept = await q.submit("33600000001", delay=600, category="marketing")
    gone = await q.submit("33600000002", delay=600, category="marketing")
    assert q.dispatcher.held() == 2
    placeholder = q.dispatcher.cancel(gone)
    assert placeholder is not None
    assert await store.cancel(gone, "acme") is True
    assert q.dispatcher.held() == 1 and q.dispatcher.queued == 1
    # One that cannot be cancelled (another account's): given back, still sent.
    placeholder = q.dispatcher.cancel(kept)
    assert await store.cancel(kept, "beta") is False
    q.dispatcher.restore(placeholder)
    await timers.advance(600)
    await q.until(lambda: q.upstream.ids() == [kept], "the kept one only")
    assert (await store.message(gone))["state"] == M.DELETED


async def test_a_submit_with_room_still_spills_while_due_ones_wait_in_the_database(make, store):
    """Room in the working set is not enough: while the loader has not caught up (its read
    is under way here), a new submit to a line must not pass that line's spilled messages."""
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    q = await make(upstream=upstream, working_set=3, page=3)
    line = [await q.submit("33600000001") for _ in range(5)]  # 3 resident, 2 in the database
    assert q.dispatcher.resident == 3
    reads = asyncio.Event()
    real_read = store.due_messages

    async def held_read(*args, **kwargs):
        await reads.wait()
        return await real_read(*args, **kwargs)

    store.due_messages = held_read
    upstream.gate.set()
    await q.until(lambda: len(upstream.submitted) == 3, "the resident three")
    assert q.dispatcher.resident == 0  # room, but the loader's read is held
    late = await q.submit("33600000001")
    assert q.dispatcher.resident == 0  # spilled, not straight into the working set
    reads.set()
    await q.until(lambda: len(upstream.submitted) == 6, "all six")
    assert upstream.ids() == line + [late]


async def test_closed_lines_beyond_the_cap_are_asked_of_the_database(make):
    """Memory keeps at most ``blocked_cap`` closed lines; a line it forgot is still closed:
    the loader asks the database, and submits go through the loader meanwhile."""
    timers = FakeTimers(START)
    upstream = Upstream()
    upstream.down = True
    q = await make(timers=timers, upstream=upstream, working_set=100, page=10)
    q.dispatcher.blocked_cap = 1
    first = await q.submit("33600000001")
    await q.until(lambda: q.dispatcher.stats["retried"] == 1, "line 1 closed")
    other = await q.submit("33600000002")
    await q.until(lambda: q.dispatcher.stats["retried"] == 2, "line 2 closed: line 1 forgotten")
    await q.until(lambda: not q.dispatcher._writing, "the retries stored")
    assert q.dispatcher.stats["blocked_lines_dropped"] == 1
    upstream.down = False
    later = await q.submit("33600000001")
    await asyncio.sleep(0.05)  # the loader's reads (real I/O) would have sent it by now
    await FakeTimers.settle()
    assert upstream.submitted == []
    await timers.advance(2.0)
    await q.until(lambda: len(upstream.submitted) == 3, "all three")
    assert in_line_order(upstream.ids(), [first, later])
    assert other in upstream.ids()


async def test_the_gauges_are_read_again_from_the_database(make, store):
    """Counted in memory as messages come and go, and corrected from the database after a
    timer pass every ``recount_interval`` (here: a count that drifted)."""
    timers = FakeTimers(START)
    q = await make(timers=timers, working_set=100, page=10)
    await q.submit("33600000001", delay=600, category="marketing")
    await q.submit("33600000002", delay=900, category="marketing")
    q.dispatcher._held = 7  # drifted
    q.dispatcher._queued = 9
    await timers.advance(600)
    await q.until(lambda: len(q.upstream.submitted) == 1, "the first one")
    await q.until(lambda: (q.dispatcher.held(), q.dispatcher.queued) == (1, 1), "the gauges read again")
