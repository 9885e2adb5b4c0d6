"""The webhook sender (``smscenter/http/webhooks.py``) on virtual time against a real HTTPS
receiver on 127.0.0.1: backoff, timeouts, redirects, ordering, expiry, a receiver down for
an hour. Rows are made by the core's subscriber (``WebhookSubscriber``) and stored in a
SQLite file upgraded by the migrations; time only moves when the test moves it
(``FakeTimers``), while every request crosses a real socket.
"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import insert, select

from protocol.constants import MessageState
from smscenter.config import Account, Webhooks
from smscenter.http.webhooks import WebhookSender, backoff
from smscenter.pipeline.events import ReceiptEvent
from smscenter.pipeline.webhook_backlog import WebhookSubscriber, WebhookTargets
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.schema import webhook_backlog
from storage.transaction import Backlog
from storage.webhooks import WebhookBacklog
from tests.integration.mt_fixtures import HOST, wait_for
from tests.integration.webhook_receiver import SECRET, Receiver, self_signed

DAY = 86400.0


class World:
    def __init__(self, tmp_path, timers: FakeTimers) -> None:
        self.tmp_path = tmp_path
        self.timers = timers
        self.cipher = FieldCipher(Keyring.create(tmp_path / "keys"))
        self.ids = IdGenerator()
        self.engine = db.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        self.backlog = WebhookBacklog(self.engine)
        self.cert, self.key = self_signed(tmp_path)
        self.senders: list[WebhookSender] = []
        self.receivers: list[Receiver] = []

    async def receiver(self, port: int = 0, sock: socket.socket | None = None) -> Receiver:
        rcv = await Receiver(self.cert, self.key, port, sock).start()
        self.receivers.append(rcv)
        return rcv

    def account(self, port: int, **extra) -> Account:
        return _account(self.tmp_path, port, self.cert, **extra)

    async def add_receipts(self, n: int, retention: float = DAY) -> list[int]:
        """``n`` receipt events for acme through the core's subscriber; their row ids."""
        sub = WebhookSubscriber(self.cipher, self.ids, {"acme": WebhookTargets(receipts=True)}, lambda a: retention)
        out = Backlog()
        now = self.timers.now()
        for i in range(n):
            sub.take(ReceiptEvent("acme", 1000 + i, None, MessageState.DELIVERED, 0, now - 5, now, 1,
                                  "ACME", 5, 0, b""), out)
        async with self.engine.begin() as conn:
            await conn.execute(insert(webhook_backlog), out.webhooks)
        return [r["id"] for r in out.webhooks]

    async def sender(self, account: Account, **settings) -> WebhookSender:
        conf = Webhooks.model_validate({"retry_min": "5s", "retry_max": "5m", "timeout": "10s", **settings})
        s = WebhookSender(self.backlog, self.cipher, [account], conf, self.timers, rng=lambda: 1.0)
        await s.start()
        self.senders.append(s)
        return s

    async def stored(self) -> list[dict]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(webhook_backlog).order_by(webhook_backlog.c.id))).mappings()]

    async def close(self) -> None:
        for s in self.senders:
            await s.stop()
        for r in self.receivers:
            await r.stop()
        await self.engine.dispose()


def _account(tmp_path, port: int, ca, **extra) -> Account:
    from smscenter.config import settings_from_dict
    from smscenter.runtime.passwords import hash_password

    entry = {"system_id": "acme", "password": hash_password("pw"), "webhook_secret": SECRET,
             "receipt_url": f"https://127.0.0.1:{port}/receipts", "webhook_ca": str(ca), **extra}
    return settings_from_dict({"account": [entry]}, base_dir=tmp_path).accounts[0]


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path, FakeTimers())
    await db.upgrade(w.engine)
    try:
        yield w
    finally:
        await w.close()


async def settled(sender: WebhookSender) -> None:
    """Until nothing is in flight (the last answer's row written)."""
    await wait_for(lambda: not sender._tasks, what="no delivery in flight")
    await FakeTimers.settle()


def event_ids(hits) -> list[int]:
    return [int(h.headers["X-Smscenter-Event-Id"]) for h in hits]


def test_backoff_doubles_up_to_its_cap_with_jitter():
    assert [backoff(n, 5, 300, lambda: 1.0) for n in (1, 2, 3, 7, 8, 50)] == [5, 10, 20, 300, 300, 300]
    assert backoff(1, 5, 300, lambda: 0.0) == 2.5  # jitter: 0.5-1.0 of the step
    assert backoff(3, 5, 300, lambda: 0.5) == 15


async def test_500_then_200_arrives_after_the_backoff(world):
    rcv = await world.receiver()
    rcv.answers = [500]
    [row_id] = await world.add_receipts(1)
    start = world.timers.now()
    sender = await world.sender(world.account(rcv.port))
    await rcv.wait_hits(1)
    await settled(sender)
    [row] = await world.stored()
    assert (row["attempts"], row["next_attempt_at"]) == (1, start + 5.0)  # retry_min, rng 1.0
    assert sender.stats["refused"] == 1

    await world.timers.advance(4.9)
    assert len(rcv.hits) == 1 and not sender._tasks  # not before its time
    await world.timers.advance(0.2)
    hits = await rcv.wait_hits(2)
    await settled(sender)
    assert event_ids(hits) == [row_id, row_id]
    assert hits[0].body == hits[1].body and hits[1].signed_by(SECRET)
    assert hits[1].headers["X-Smscenter-Timestamp"] == str(int(start + 5.0))
    assert await world.stored() == []
    assert (sender.stats["delivered"], sender.depth["acme"]) == (1, 0)


async def test_a_receiver_that_hangs_times_out_and_gets_it_again(world):
    rcv = await world.receiver()
    rcv.answers = ["hang"]
    [row_id] = await world.add_receipts(1)
    sender = await world.sender(world.account(rcv.port))
    await rcv.wait_hits(1)
    await world.timers.advance(10.0)  # [webhooks] timeout
    await settled(sender)
    assert sender.stats["timeout"] == 1
    [row] = await world.stored()
    assert row["attempts"] == 1
    await world.timers.advance(5.0)
    await rcv.wait_hits(2)
    await settled(sender)
    assert event_ids(rcv.acknowledged()) == [row_id] and await world.stored() == []


async def test_a_redirect_is_not_followed_but_retried(world):
    rcv = await world.receiver()
    rcv.answers = [302]
    [row_id] = await world.add_receipts(1)
    sender = await world.sender(world.account(rcv.port))
    await rcv.wait_hits(1)
    await settled(sender)
    assert sender.stats["redirect"] == 1 and [h.path for h in rcv.hits] == ["/receipts"]  # not /elsewhere
    await world.timers.advance(5.0)
    await rcv.wait_hits(2)
    await settled(sender)
    assert [h.path for h in rcv.hits] == ["/receipts", "/receipts"] and await world.stored() == []


async def test_many_in_flight_unless_the_account_asks_for_order(world, tmp_path):
    rcv = await world.receiver()
    rcv.answers = ["hang"] * 5
    await world.add_receipts(5)
    sender = await world.sender(world.account(rcv.port))
    await rcv.wait_hits(5)  # all five at once: none was answered
    assert len(sender._tasks) == 5


async def test_ordered_account_one_in_flight_in_order_through_a_retry(world):
    rcv = await world.receiver()
    rcv.answers = [500]
    ids = await world.add_receipts(3)
    sender = await world.sender(world.account(rcv.port, webhook_ordered=True))
    await rcv.wait_hits(1)
    await settled(sender)
    await world.timers.advance(4.0)
    assert len(rcv.hits) == 1  # the second waits behind the first's retry
    await world.timers.advance(1.0)
    hits = await rcv.wait_hits(4)
    await settled(sender)
    assert event_ids(hits) == [ids[0], ids[0], ids[1], ids[2]]


async def test_unacknowledged_past_retention_is_dropped(world):
    rcv = await world.receiver()
    rcv.answers = [500] * 10
    await world.add_receipts(1, retention=30.0)
    sender = await world.sender(world.account(rcv.port))
    for n, wait in ((1, 0.0), (2, 5.0), (3, 10.0)):  # 5 s, then 10 s; the next (20 s) passes 30 s
        await world.timers.advance(wait)
        await rcv.wait_hits(n)
        await settled(sender)
    assert await world.stored() == [] and sender.stats["expired"] == 1 and sender.stats["refused"] == 3


async def test_a_receiver_down_for_an_hour_gets_everything_when_it_returns(world):
    # The receiver's port, held bound but not listening while it is down (refused): a port
    # only found free could be taken meanwhile by another test's listener (parallel runs).
    held = socket.socket()
    held.bind((HOST, 0))
    port = held.getsockname()[1]
    ids = await world.add_receipts(20)
    sender = await world.sender(world.account(port))  # nobody listens there
    await wait_for(lambda: sender.stats["error"] >= 1, what="a refused connection")
    for _ in range(12):  # an hour, in 5-minute steps (the longest backoff)
        await world.timers.advance(300.0)
        await settled(sender)
    failures = sender.stats["error"] + sender.stats["timeout"]
    # The first 16 (account_in_flight) failed together; then one probe per backoff (5 s
    # doubling to 5 min: 13 in the hour), not 20 rows at every retry.
    assert 16 <= failures <= 16 + 14, sender.stats
    assert len(await world.stored()) == 20

    rcv = await world.receiver(sock=held)
    # Everything within two of the longest backoffs of its return: the probe is due within
    # one (5 min); a row whose own retry was set during the last failures may be due up to
    # one later (each failure's time, in virtual time, depends on when its real I/O ended).
    for _ in range(2):
        await world.timers.advance(300.0)
        await settled(sender)
        if len(rcv.acknowledged()) >= 20:
            break
    await rcv.wait_hits(20)
    await settled(sender)
    assert sorted(event_ids(rcv.acknowledged())) == sorted(ids)  # each once: none was in flight
    assert await world.stored() == [], "rows left"
    assert sender.depth["acme"] == 0, (sender.depth, sender.stats, len(rcv.hits), len(rcv.acknowledged()))


NEW_SECRET = "whsec-new-fedcba9876543210"


async def _notify(sender: WebhookSender, ids: list[int]) -> None:
    sender.notify([(i, "acme") for i in ids])


async def test_a_reload_sends_the_next_attempts_to_the_new_url_signed_with_the_new_secret(world):
    """``reconfigure`` (a reload): what was acknowledged went to the old URL; the request
    under way there is not cut, its session closes once it ended, and its retry, like every
    new row, goes to the new URL with the new secret's signature. Nothing lost, nothing
    twice acknowledged."""
    old_rcv, new_rcv = await world.receiver(), await world.receiver()
    [first] = await world.add_receipts(1)
    sender = await world.sender(world.account(old_rcv.port))
    await old_rcv.wait_hits(1)
    await settled(sender)
    old_rcv.answers = ["hang"]
    [second] = await world.add_receipts(1)
    await _notify(sender, [second])
    await old_rcv.wait_hits(2)
    old_session = sender._accounts["acme"].session

    changed = sender.reconfigure([world.account(new_rcv.port, webhook_secret=NEW_SECRET)])
    assert changed == ["webhooks acme: reconfigured"]
    assert not old_session.http.closed  # its request is under way
    [third] = await world.add_receipts(1)
    await _notify(sender, [third])
    [hit] = await new_rcv.wait_hits(1)
    assert event_ids([hit]) == [third] and hit.signed_by(NEW_SECRET) and not hit.signed_by(SECRET)

    await world.timers.advance(10.0)  # the old receiver's hung request times out
    await wait_for(lambda: old_session.http.closed, what="the old session closed")
    await settled(sender)
    await world.timers.advance(5.0)  # its retry
    hits = await new_rcv.wait_hits(2)
    await settled(sender)
    assert event_ids(hits) == [third, second] and all(h.signed_by(NEW_SECRET) for h in hits)
    assert event_ids(old_rcv.acknowledged()) == [first] and old_rcv.hits[0].signed_by(SECRET)
    assert len(old_rcv.hits) == 2 and await world.stored() == []
    assert sender.depth["acme"] == 0


async def test_an_account_removed_keeps_nothing_running_and_its_rows_until_it_is_back(world):
    rcv = await world.receiver()
    rcv.answers = [500]
    ids = await world.add_receipts(1)
    sender = await world.sender(world.account(rcv.port))
    await rcv.wait_hits(1)
    await settled(sender)
    acc = sender._accounts["acme"]

    assert sender.reconfigure([]) == ["webhooks acme: stopped"]
    await FakeTimers.settle()
    assert acc.pump.done() and not sender._retired
    await wait_for(lambda: acc.session.http.closed, what="its session closed")
    ids += await world.add_receipts(1)
    await _notify(sender, ids[1:])  # committed after the reload: kept, not sent
    for _ in range(3):
        await world.timers.advance(300.0)
        await settled(sender)
    assert len(rcv.hits) == 1 and [r["id"] for r in await world.stored()] == ids

    assert sender.reconfigure([world.account(rcv.port)]) == ["webhooks acme: started"]
    hits = await rcv.wait_hits(3)
    await settled(sender)
    assert sorted(event_ids(rcv.acknowledged())) == sorted(ids) and len(hits) == 3
    assert await world.stored() == [] and sender.depth["acme"] == 0
    assert sender.reconfigure([world.account(rcv.port)]) == []  # nothing changed
