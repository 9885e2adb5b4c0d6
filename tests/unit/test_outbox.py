"""``smscenter.pipeline.outbox``: rows handed over after their commit are sent without being read
back, and whatever mix of hand-overs and table reads brings a row, it is sent once — not
again while in flight, nor while (or just after) its delete commits."""

from __future__ import annotations

import asyncio

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandStatus
from smscenter.pipeline.outbox import RETRY_DELAY, OutboxSender
from smscenter.runtime.timers import FakeTimers

NOW = 1_800_000_000.0


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[int, asyncio.Future]] = []

    async def wait_window(self) -> None:
        return None

    def request_nowait(self, pdu) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((pdu.short_message, fut))
        return fut


class FakeBind:
    def __init__(self) -> None:
        self.link = FakeLink()


class FakeAccount:
    def __init__(self, system_id: str) -> None:
        self.system_id = system_id
        self.binds = [FakeBind()]

    def receivers(self):
        return self.binds

    def next_receiver(self):
        return self.binds[0] if self.binds else None


class FakeRegistry:
    def __init__(self, account: FakeAccount) -> None:
        self.account = account

    def get(self, system_id: str):
        return self.account if system_id == self.account.system_id else None


class FakeStore:
    """The outbox table in a dict; deletes commit when the test says so."""

    def __init__(self) -> None:
        self.table: dict[int, dict] = {}
        self.deletes: list[tuple[int, asyncio.Future]] = []
        self.read_gate: asyncio.Event | None = None  # set: reads wait for it (a slow read)
        self.reads = 0
        self.on_outbox_rows = None

    async def outbox_for(self, account: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        self.reads += 1
        snapshot = [dict(r) for i, r in sorted(self.table.items()) if i > after_id and r["account"] == account]
        if self.read_gate is not None:
            await self.read_gate.wait()
        return snapshot[:limit]

    def ack_outbox(self, row_id: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.deletes.append((row_id, fut))
        return fut

    def retry_outbox(self, row_id: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def commit_deletes(self) -> None:
        for row_id, fut in self.deletes:
            self.table.pop(row_id, None)
            fut.set_result(None)
        self.deletes.clear()


class Cipher:
    """Identity "encryption" that checks the AAD."""

    def decrypt(self, token: bytes, aad: bytes) -> bytes:
        assert aad.startswith(b"outbox:")
        return token


def row(row_id: int, with_pdu: bool = True, text: bytes | None = None) -> dict:
    pdu = P.DeliverSm(esm_class=4, short_message=text or b"%d" % row_id)
    r = {"id": row_id, "account": "acme", "kind": 1, "message_id": None, "pdu_enc": codec.encode(pdu),
         "created_at": NOW, "expires_at": NOW + 3600, "attempts": 0}
    if with_pdu:
        r["pdu"] = pdu
    return r


def stored(r: dict) -> dict:
    """The row as the table holds it (no in-memory extras)."""
    return {k: v for k, v in r.items() if k != "pdu"}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make(timers=None):
    store = FakeStore()
    account = FakeAccount("acme")
    sender = OutboxSender(store, FakeRegistry(account), cipher=Cipher(), clock=lambda: NOW, timers=timers)
    return store, account.binds[0].link, sender


def rescan(sender: OutboxSender) -> None:
    """A read from the top of the table, as the pump does now and then."""
    acc = sender._accounts["acme"]
    acc.cursor = 0
    sender.notify(["acme"])


def answer(link: FakeLink, status: int = CommandStatus.ESME_ROK) -> None:
    for _, fut in link.sent:
        if not fut.done():
            fut.set_result(P.DeliverSmResp(command_status=status))


async def test_handed_over_rows_are_sent_without_reading_them_back():
    store, link, sender = make()
    assert store.on_outbox_rows == sender.handoff
    sender.notify(["acme"])  # the partner bound: the (empty) table is read once
    await settle()
    reads = store.reads
    rows = [row(1), row(2)]
    store.table.update({r["id"]: stored(r) for r in rows})
    sender.handoff(rows)
    await settle()
    assert [m for m, _ in link.sent] == [b"1", b"2"]
    assert store.reads == reads
    await sender.stop()


async def test_a_row_is_not_sent_again_while_in_flight_or_while_its_delete_commits():
    store, link, sender = make()
    r = row(7)
    store.table[7] = stored(r)
    sender.handoff([r])
    await settle()
    rescan(sender)  # a read finds it in the table: in flight, not sent again
    await settle()
    assert len(link.sent) == 1
    answer(link)  # acknowledged: its delete is queued, not yet committed
    await settle()
    rescan(sender)
    await settle()
    assert len(link.sent) == 1
    store.commit_deletes()
    rescan(sender)
    await settle()
    assert len(link.sent) == 1 and store.table == {}
    await sender.stop()


async def test_a_read_that_began_before_the_delete_committed_does_not_resend():
    store, link, sender = make()
    r = row(9)
    store.table[9] = stored(r)
    sender.handoff([r])
    await settle()
    answer(link)
    await settle()
    store.read_gate = asyncio.Event()
    rescan(sender)  # a read starts: its snapshot holds row 9
    await settle()
    store.commit_deletes()  # the delete commits while that read is under way
    await settle()
    store.read_gate.set()
    await settle()
    assert len(link.sent) == 1
    await sender.stop()


async def test_rows_not_handed_over_are_read_and_decrypted():
    store, link, sender = make()
    store.table[5] = stored(row(5, text=b"mo"))
    sender.notify(["acme"])  # e.g. an MO stored elsewhere
    await settle()
    assert [m for m, _ in link.sent] == [b"mo"]
    await sender.stop()


async def test_nothing_is_queued_in_memory_while_the_partner_is_away():
    store, link, sender = make()
    account = sender.registry.account
    bind = account.binds.pop()
    sender.handoff([row(3)])
    await settle()
    acc = sender._accounts["acme"]
    assert not acc.queue and acc.need_read
    store.table[3] = stored(row(3))
    account.binds.append(bind)
    sender.notify(["acme"])  # the bind: everything comes from the table
    await settle()
    assert len(bind.link.sent) == 1
    await sender.stop()


async def test_a_refused_row_goes_again_after_the_retry_delay_not_before():
    timers = FakeTimers(NOW)
    store, link, sender = make(timers)
    r = row(4)
    store.table[4] = stored(r)
    sender.handoff([r])
    await timers.settle()
    answer(link, CommandStatus.ESME_RSYSERR)  # refused: held for RETRY_DELAY
    await timers.advance(RETRY_DELAY - 0.1)
    assert len(link.sent) == 1, "sent again before the retry delay"
    await timers.advance(0.2)
    assert len(link.sent) == 2 and store.deletes == []
    answer(link)
    await timers.settle()
    assert [row_id for row_id, _ in store.deletes] == [4]
    await sender.stop()


async def test_a_row_past_its_retention_is_dropped_not_sent():
    timers = FakeTimers(NOW)
    store, link, sender = make(timers)
    r = row(6)
    store.table[6] = stored(r)
    sender.handoff([r])
    await timers.settle()
    answer(link, CommandStatus.ESME_RSYSERR)
    await timers.advance(3600 + RETRY_DELAY)  # the partner kept refusing past expires_at
    sent = len(link.sent)
    answer(link, CommandStatus.ESME_RSYSERR)
    await timers.advance(RETRY_DELAY * 2)
    assert len(link.sent) == sent, "an expired row was sent"
    assert sender.stats["expired"] == 1 and [row_id for row_id, _ in store.deletes] == [6]
    await sender.stop()
