"""``storage.store``: the group-commit writer and receipt correlation, against a temp SQLite
file (the same engine, pragmas and migrations the daemon uses).

- ``message_state``: a message's state from its parts' states;
- group commit: many calls made together end in few transactions, and every caller's
  future resolves only after its commit;
- early receipts: a receipt that arrives before its submit_sm_resp is kept, then settles the
  message in the transaction that records the submit_sm_resp; intermediate notifications are
  not kept (they would shadow the final receipt that follows);
- duplicates: a receipt applied twice (in two commits, or twice in one) yields one receipt
  for the partner;
- long messages: one receipt once every part is final, or one per part;
- cancel and the outbox.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import func, select

from protocol.constants import MessageState as M
from smscenter.runtime.timers import FakeTimers
from storage.schema import PART_QUEUED, PART_SUBMITTED, early_receipts, messages, outbox, parts
from storage.store import Store, SubmitResult, Transaction, UpstreamReceipt, message_state
from tests.store_helpers import Builder, recording_store
from tests.patience import PATIENCE

_ids = itertools.count((1 << 62) + 1)
NOW = 1_800_000_000.5


# --------------------------------------------------------------------------- message_state


@pytest.mark.parametrize(
    "states, expected",
    [
        ([], None),
        ([M.DELIVERED], M.DELIVERED),
        ([M.DELIVERED, M.DELIVERED, M.DELIVERED], M.DELIVERED),
        ([M.DELIVERED, PART_SUBMITTED], None),  # a part still waits for its receipt
        ([PART_QUEUED, M.DELIVERED], None),
        ([M.DELIVERED, M.UNDELIVERABLE], M.UNDELIVERABLE),  # the worst outcome wins
        ([M.EXPIRED, M.DELIVERED], M.EXPIRED),
        ([M.UNDELIVERABLE, M.REJECTED, M.DELIVERED], M.REJECTED),
        ([M.DELETED, M.DELIVERED], M.DELETED),
        ([M.ENROUTE, M.DELIVERED], None),  # ENROUTE is not final
        ([M.ACCEPTED], None),
    ],
)
def test_message_state(states, expected):
    assert message_state([int(s) for s in states]) == expected


# --------------------------------------------------------------------------- fixtures


def receipt(upstream_id: str, state: M = M.DELIVERED, error: int = 0, connector: str = "op") -> UpstreamReceipt:
    return UpstreamReceipt(connector, upstream_id, int(state), error, NOW + 10)


@pytest.fixture
def engine(sqlite_engine):
    return sqlite_engine


@pytest.fixture
async def store(engine):
    store = recording_store(engine, _ids)
    await store.start()
    yield store
    await store.stop()


def new_message(account: str = "acme", parts_total: int = 1, registered: int = 1) -> tuple[dict, list[dict]]:
    message_id = next(_ids)
    row = {
        "id": message_id, "account": account, "category": "alert", "source_addr": "ACME", "source_ton": 5,
        "source_npi": 0, "dest_hash": bytes(16), "dest_enc": b"\x01\x00\x01sealed", "data_coding": 0,
        "registered_delivery": registered, "priority": 0, "parts_total": parts_total, "state": int(M.ENROUTE),
        "error": 0, "submitted_at": NOW, "not_before": NOW, "expires_at": NOW + 86400, "done_at": None,
        "connector": None,
    }
    part_rows = [
        {"message_id": message_id, "part_no": n, "pdu_enc": b"sealed-pdu", "state": PART_QUEUED, "connector": None,
         "upstream_id": None, "attempts": 0, "next_attempt_at": NOW, "updated_at": NOW}
        for n in range(1, parts_total + 1)
    ]
    return row, part_rows


async def add(store: Store, **kwargs) -> int:
    row, part_rows = new_message(**kwargs)
    await store.add_message(row, part_rows)
    return row["id"]


def submitted(message_id: int, upstream_id: str, part_no: int = 1, connector: str = "op") -> SubmitResult:
    return SubmitResult(message_id, part_no, PART_SUBMITTED, connector, upstream_id, 1, NOW)


async def count(engine, table, *where) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).select_from(table)
        for cond in where:
            stmt = stmt.where(cond)
        return (await conn.execute(stmt)).scalar_one()


# --------------------------------------------------------------------------- group commit


async def test_group_commit_batches_many_messages_into_few_commits(store, engine):
    before = store.commits
    futures = []
    for _ in range(500):
        row, part_rows = new_message(parts_total=2)
        futures.append(store.add_message(row, part_rows))
    assert not any(f.done() for f in futures)  # nothing is acknowledged before its commit
    await asyncio.wait_for(asyncio.gather(*futures), PATIENCE)
    assert store.commits - before <= 3, store.commits - before
    assert store.committed_ops >= 500
    assert await count(engine, messages) == 500
    assert await count(engine, parts) == 1000


async def test_a_full_batch_commits_without_waiting(engine):
    """``max_batch`` calls are committed at once, without the ``max_delay`` wait (virtual
    time: a full batch commits while the clock stands still)."""
    timers = FakeTimers()
    store = Store(engine, Transaction(Builder(_ids)), max_batch=100, max_delay=1.0, timers=timers)
    await store.start()
    try:
        futures = [store.add_message(*new_message()) for _ in range(100)]
        await asyncio.wait_for(asyncio.gather(*futures), PATIENCE)
        assert store.commits == 1
        # Fewer than max_batch: the writer waits max_delay for more to join.
        lone = store.add_message(*new_message())
        await timers.advance(0.9)
        assert not lone.done() and store.commits == 1
        joining = store.add_message(*new_message())  # within the linger: the same commit
        await timers.advance(0.2)
        await asyncio.wait_for(asyncio.gather(lone, joining), PATIENCE)
        assert store.commits == 2
    finally:
        await store.stop()
    assert await count(engine, messages) == 102


async def test_calls_arriving_while_a_commit_runs_join_the_next_one(store, engine):
    first = [store.add_message(*new_message()) for _ in range(50)]
    await asyncio.sleep(0)  # the writer has started on the first batch
    second = [store.add_message(*new_message()) for _ in range(50)]
    await asyncio.wait_for(asyncio.gather(*first, *second), PATIENCE)
    assert store.commits <= 3
    assert await count(engine, messages) == 100


async def test_stop_commits_what_is_queued(engine):
    store = Store(engine, Transaction(Builder(_ids)))
    await store.start()
    futures = [store.add_message(*new_message()) for _ in range(20)]
    await store.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    assert await count(engine, messages) == 20
    with pytest.raises(RuntimeError):
        store.add_message(*new_message())


# --------------------------------------------------------------------------- receipts


async def test_receipt_after_submit_settles_the_message(store, engine):
    message_id = await add(store)
    assert await store.record_submit(submitted(message_id, "1001")) == []
    assert await store.apply_receipt(receipt("1001")) is True
    msg = await store.message(message_id)
    assert msg["state"] == M.DELIVERED and msg["done_at"] is not None
    assert [f.state for f in store.builder.finished] == [M.DELIVERED]
    assert await count(engine, outbox) == 1
    assert {"acme"} in store.notified


async def test_early_receipt_then_submit_result_settles(store, engine):
    message_id = await add(store)
    # The receipt comes first: nothing matches, it is kept (and safe to acknowledge).
    assert await store.apply_receipt(receipt("2002", M.UNDELIVERABLE, 1)) is False
    assert await count(engine, early_receipts) == 1
    assert (await store.message(message_id))["state"] == M.ENROUTE
    # Then the submit_sm_resp: the early receipt is applied in that same commit.
    finished = await store.record_submit(submitted(message_id, "2002"))
    assert [(f.message["id"], f.state, f.error) for f in finished] == [(message_id, M.UNDELIVERABLE, 1)]
    msg = await store.message(message_id)
    assert msg["state"] == M.UNDELIVERABLE and msg["error"] == 1
    assert await count(engine, early_receipts) == 0
    assert await count(engine, outbox) == 1


async def test_early_receipt_is_keyed_by_connector(store, engine):
    message_id = await add(store)
    await store.apply_receipt(receipt("3003", connector="other"))
    await store.record_submit(submitted(message_id, "3003", connector="op"))
    assert (await store.message(message_id))["state"] == M.ENROUTE  # another connector's id
    assert await count(engine, early_receipts) == 1
    await store.apply_receipt(receipt("3003", connector="op"))
    assert (await store.message(message_id))["state"] == M.DELIVERED


async def test_early_intermediate_notification_does_not_shadow_the_final_receipt(store, engine):
    message_id = await add(store)
    assert await store.apply_receipt(receipt("4004", M.ENROUTE)) is False
    assert await store.apply_receipt(receipt("4004", M.DELIVERED)) is False
    assert await count(engine, early_receipts) == 1
    await store.record_submit(submitted(message_id, "4004"))
    assert (await store.message(message_id))["state"] == M.DELIVERED


async def test_duplicate_receipt_is_ignored(store, engine):
    message_id = await add(store)
    await store.record_submit(submitted(message_id, "5005"))
    assert await store.apply_receipt(receipt("5005")) is True
    assert await store.apply_receipt(receipt("5005")) is True  # matched, acknowledged, no effect
    assert await store.apply_receipt(receipt("5005", M.UNDELIVERABLE)) is True
    assert (await store.message(message_id))["state"] == M.DELIVERED
    assert len(store.builder.finished) == 1
    assert await count(engine, outbox) == 1


async def test_duplicate_receipts_in_one_commit_give_one_receipt(store, engine):
    single = await add(store)
    per_part = await add(store, account="perpart")
    await store.record_submit(submitted(single, "6006"))
    await store.record_submit(submitted(per_part, "6007"))
    futures = [store.apply_receipt(receipt(uid)) for uid in ("6006", "6006", "6007", "6007")]
    assert await asyncio.gather(*futures) == [True] * 4
    assert sorted((f.message["id"], f.part_no) for f in store.builder.finished) == sorted(
        [(single, None), (per_part, 1)])
    assert await count(engine, outbox) == 2


async def test_duplicate_early_receipts_are_kept_once(store, engine):
    message_id = await add(store)
    await asyncio.gather(store.apply_receipt(receipt("7007")), store.apply_receipt(receipt("7007")))
    await store.apply_receipt(receipt("7007"))
    assert await count(engine, early_receipts) == 1
    await store.record_submit(submitted(message_id, "7007"))
    assert len(store.builder.finished) == 1


async def test_long_message_one_receipt_when_all_parts_final(store, engine):
    message_id = await add(store, parts_total=3)
    for n in (1, 2, 3):
        await store.record_submit(submitted(message_id, f"80{n}", part_no=n))
    await store.apply_receipt(receipt("801"))
    await store.apply_receipt(receipt("802"))
    assert store.builder.finished == []
    assert (await store.message(message_id))["state"] == M.ENROUTE
    await store.apply_receipt(receipt("803", M.UNDELIVERABLE, 1))
    assert [(f.part_no, f.state) for f in store.builder.finished] == [(None, M.UNDELIVERABLE)]
    assert (await store.message(message_id))["state"] == M.UNDELIVERABLE
    assert await count(engine, outbox) == 1


async def test_long_message_per_part_receipts(store, engine):
    message_id = await add(store, account="perpart", parts_total=3)
    for n in (1, 2, 3):
        await store.record_submit(submitted(message_id, f"90{n}", part_no=n))
    for n in (2, 1, 3):
        await store.apply_receipt(receipt(f"90{n}"))
    assert [(f.part_no, f.state) for f in store.builder.finished] == [(2, M.DELIVERED), (1, M.DELIVERED),
                                                                      (3, M.DELIVERED)]
    assert (await store.message(message_id))["state"] == M.DELIVERED
    assert await count(engine, outbox) == 3


async def test_permanent_failure_settles_without_a_receipt_from_upstream(store, engine):
    message_id = await add(store, parts_total=2)
    await store.record_submit(submitted(message_id, "1101", part_no=1))
    finished = await store.record_submit(SubmitResult(message_id, 2, int(M.REJECTED), "op", None, 1, NOW, 0x0B))
    assert finished == []  # part 1 still waits for its receipt
    await store.apply_receipt(receipt("1101"))
    msg = await store.message(message_id)
    assert msg["state"] == M.REJECTED and msg["error"] == 0x0B


async def test_no_receipt_row_when_none_was_asked(store, engine):
    message_id = await add(store, registered=0)
    await store.record_submit(submitted(message_id, "1201"))
    await store.apply_receipt(receipt("1201"))
    assert (await store.message(message_id))["state"] == M.DELIVERED
    assert await count(engine, outbox) == 0


# --------------------------------------------------------------------------- cancel, outbox, queue


async def test_cancel_only_queued_messages_of_the_account(store, engine):
    queued = await add(store)
    sent = await add(store)
    await store.record_submit(submitted(sent, "1301"))
    assert await store.cancel(queued, "beta") is False
    assert await store.cancel(sent, "acme") is False
    assert await store.cancel(queued, "acme") is True
    assert (await store.message(queued))["state"] == M.DELETED
    assert await store.cancel(queued, "acme") is False
    assert [r["message_id"] for r in await store.pending_parts()] == []


async def test_pending_parts_is_the_queue(store, engine):
    a = await add(store, parts_total=2)
    b = await add(store)
    await store.record_submit(submitted(a, "1401", part_no=1))
    pending = [(r["message_id"], r["part_no"]) for r in await store.pending_parts()]
    assert pending == [(a, 2), (b, 1)]


async def test_outbox_ack_and_retry(store, engine):
    message_id = await add(store)
    await store.record_submit(submitted(message_id, "1501"))
    await store.apply_receipt(receipt("1501"))
    [row] = await store.outbox_for("acme")
    assert await store.outbox_for("beta") == []
    assert await store.outbox_for("acme", after_id=row["id"]) == []
    await store.retry_outbox(row["id"])
    assert (await store.outbox_for("acme"))[0]["attempts"] == 1
    await store.ack_outbox(row["id"])
    assert await count(engine, outbox) == 0


# --------------------------------------------------------------------------- bulk writes, hand-over


async def test_a_batch_larger_than_one_statement_is_written_whole(store, engine):
    """Hundreds of rows of each kind in one commit: the bulk statements split them in
    chunks (and a SubmitResult given twice for a part counts as given last)."""
    ids = [await add(store) for _ in range(3)]
    many = [new_message(parts_total=2) for _ in range(600)]
    await asyncio.gather(*(store.add_message(row, part_rows) for row, part_rows in many))
    assert await count(engine, parts) == 1203
    mids = [row["id"] for row, _ in many]
    results = [store.record_submit(SubmitResult(mid, 1, 1, "op", None, 1, NOW)) for mid in mids]
    results += [store.record_submit(submitted(mid, f"b{mid}")) for mid in mids]
    results += [store.record_submit(submitted(mid, f"c{mid}", part_no=2)) for mid in mids]
    await asyncio.gather(*results)
    assert await count(engine, parts, parts.c.state == PART_SUBMITTED) == 1200
    matched = await asyncio.gather(*(store.apply_receipt(receipt(f"b{mid}")) for mid in mids),
                                   *(store.apply_receipt(receipt(f"c{mid}", M.UNDELIVERABLE, 7)) for mid in mids))
    assert all(matched)
    assert await count(engine, messages, messages.c.state == M.UNDELIVERABLE, messages.c.error == 7) == 600
    assert await count(engine, outbox) == 600
    rows = await store.outbox_for("acme", limit=10_000)
    await asyncio.gather(*(store.retry_outbox(r["id"]) for r in rows[:300]))
    assert await count(engine, outbox, outbox.c.attempts == 1) == 300
    await asyncio.gather(*(store.ack_outbox(r["id"]) for r in rows))
    assert await count(engine, outbox) == 0
    for i in ids:
        assert (await store.message(i))["state"] == M.ENROUTE


async def test_committed_outbox_rows_are_handed_over(engine):
    """With ``on_outbox_rows`` set, the new rows themselves (with whatever the builder put in
    them beside the columns) are handed over after the commit."""
    handed: list[list[dict]] = []

    class WithPdu(Builder):
        def __call__(self, done):
            row = super().__call__(done)
            if row is not None:
                row["pdu"] = ("not a column", done.message["id"])
            return row

    store = Store(engine, Transaction(WithPdu(_ids)))
    store.on_outbox_rows = handed.append
    await store.start()
    try:
        message_id = await add(store)
        await store.record_submit(submitted(message_id, "1601"))
        await store.apply_receipt(receipt("1601"))
        [[row]] = handed
        assert row["pdu"] == ("not a column", message_id)
        [stored] = await store.outbox_for("acme")
        assert stored["id"] == row["id"] and "pdu" not in stored
    finally:
        await store.stop()


async def test_an_early_receipt_keeps_what_it_said_and_nothing_personal(store, engine):
    """Kept early: its state and error, not the upstream's PDU (which holds the number)."""
    assert await store.apply_receipt(receipt("1702", M.UNDELIVERABLE, 0x45)) is False
    [row] = [r async for r in _early_rows(engine)]
    assert (row["state"], row["error"], row["pdu_enc"]) == (int(M.UNDELIVERABLE), 0x45, None)
    message_id = await add(store)
    [done] = await store.record_submit(submitted(message_id, "1702"))
    assert (done.state, done.error) == (M.UNDELIVERABLE, 0x45)


async def test_an_early_receipt_kept_by_an_older_version_is_still_read(store, engine):
    """Rows from before schema 0006 carry the upstream's PDU (here the test's b"state:error"
    stand-in) and no state: the transaction's early decoder reads them."""
    async with engine.begin() as conn:
        await conn.execute(early_receipts.insert(), [
            {"connector": "op", "upstream_id": "1703", "pdu_enc": b"%d:0" % M.EXPIRED, "received_at": NOW}
        ])
    message_id = await add(store)
    [done] = await store.record_submit(submitted(message_id, "1703"))
    assert done.state == M.EXPIRED and await count(engine, early_receipts) == 0


async def _early_rows(engine):
    async with engine.connect() as conn:
        for row in (await conn.execute(select(early_receipts))).mappings():
            yield dict(row)


async def test_update_message_and_add_outbox(store, engine):
    message_id = await add(store)
    await asyncio.gather(store.update_message(message_id, connector="op-a"),
                         store.update_message(message_id, connector="op-b", error=3))
    msg = await store.message(message_id)
    assert (msg["connector"], msg["error"]) == ("op-b", 3)
    row_id = next(_ids)
    await store.add_outbox({"id": row_id, "account": "beta", "kind": 2, "message_id": None, "pdu_enc": b"mo",
                            "created_at": NOW, "expires_at": NOW + 60})
    [row] = await store.outbox_for("beta")
    assert (row["id"], row["attempts"]) == (row_id, 0)  # a column left out takes its default


async def test_max_ids_for_seeding_the_id_generator(store, engine):
    assert await store.max_ids() == {"messages": 0, "outbox": 0, "mo_messages": 0, "audit_log": 0}
    first = await add(store)
    second = await add(store)
    await store.record_submit(submitted(second, "1801"))
    await store.apply_receipt(receipt("1801"))
    found = await store.max_ids()
    assert found["messages"] == max(first, second)
    assert found["outbox"] > 0 and found["mo_messages"] == 0


# --------------------------------------------------------------------------- housekeeping


async def test_housekeeping_expires_parts_without_receipt_and_purges_early_receipts(store, engine):
    from smscenter.app.housekeeping import Housekeeping

    waiting = await add(store)  # accepted upstream, no receipt ever
    await store.record_submit(submitted(waiting, "77"))
    delivered = await add(store)
    await store.record_submit(submitted(delivered, "78"))
    await store.apply_receipt(receipt("78"))
    await store.apply_receipt(receipt("999"))  # never finds its message: kept as early
    keeper = Housekeeping(store, receipt_grace=3600, early_ttl=3600, clock=lambda: NOW + 86400 + 7200)
    await keeper.run_once()
    async with engine.connect() as conn:
        states = dict((await conn.execute(select(messages.c.id, messages.c.state))).all())
    assert states[waiting] == M.EXPIRED and states[delivered] == M.DELIVERED
    assert [f.state for f in store.builder.finished if f.message["id"] == waiting] == [M.EXPIRED]
    assert await count(engine, early_receipts) == 0
    assert keeper.stats == {"expired_without_receipt": 1, "early_receipts_purged": 1, "idempotency_keys_expired": 0}
    # Nothing left to do the second time.
    await keeper.run_once()
    assert keeper.stats["expired_without_receipt"] == 1


# --------------------------------------------------------------------------- Outcome


async def test_outcome_callbacks_run_at_once_and_a_failing_one_does_not_stop_the_others():
    from storage.store import Outcome

    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        outcome = Outcome()
        seen: list[object] = []
        outcome.add_done_callback(lambda o: seen.append(("first", o.result())))
        outcome.add_done_callback(lambda o: 1 / 0)
        outcome.add_done_callback(lambda o: seen.append(("third", o.result())))
        with pytest.raises(asyncio.InvalidStateError):
            outcome.result()
        outcome.set_result(42)
        # No loop iteration needed: the callbacks ran inside set_result.
        assert seen == [("first", 42), ("third", 42)]
        assert [type(c["exception"]) for c in reported] == [ZeroDivisionError]
        outcome.add_done_callback(lambda o: seen.append(("late", o.result())))  # already done: at once
        assert seen[-1] == ("late", 42)
        assert await outcome == 42
    finally:
        loop.set_exception_handler(None)


async def test_outcome_is_awaitable_before_it_resolves_and_carries_exceptions():
    from storage.store import Outcome

    ok, failed = Outcome(), Outcome()
    asyncio.get_running_loop().call_later(0.01, ok.set_result, "done")
    asyncio.get_running_loop().call_later(0.01, failed.set_exception, ValueError("no"))
    assert await asyncio.wait_for(ok, PATIENCE) == "done"
    with pytest.raises(ValueError, match="no"):
        await failed
    assert isinstance(failed.exception(), ValueError) and not failed.cancelled()


async def test_idempotency_keys_kept_24_hours_then_expired_by_housekeeping(store, engine):
    from smscenter.app.housekeeping import Housekeeping
    from storage.idempotency import KEEP, IdempotencyKeys

    keys = IdempotencyKeys(engine)
    await keys.keep("acme", b"k" * 32, b"r" * 32, 202, '{"messages": []}', NOW)
    await keys.keep("acme", b"k" * 32, b"x" * 32, 403, "{}", NOW + 1)  # the first answer stays
    found = await keys.find("acme", b"k" * 32, NOW + KEEP - 1)
    assert (found["status"], found["request_hash"]) == (202, b"r" * 32)
    assert await keys.find("beta", b"k" * 32, NOW) is None  # a key is its account's
    assert await keys.find("acme", b"k" * 32, NOW + KEEP) is None  # past 24 h: not returned
    keeper = Housekeeping(store, clock=lambda: NOW + KEEP + 1, idempotency=keys)
    await keeper.run_once()
    assert keeper.stats["idempotency_keys_expired"] == 1
    await keys.keep("acme", b"k" * 32, b"y" * 32, 409, "{}", NOW + KEEP + 2)  # the key is free again
    assert (await keys.find("acme", b"k" * 32, NOW + KEEP + 3))["status"] == 409
