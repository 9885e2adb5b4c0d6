"""The storage layer on both backends: SQLite (a temp file) and a real PostgreSQL started by
the test run (``tests/pg.py``). Same code, same assertions: migrations, the group-commit
writer, receipt correlation (early receipts included), the outbox, the queue rebuild and
cancel_sm. Anything the pipeline relies on that one backend does differently shows up here.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import func, select, text

from protocol.constants import MessageState
from storage import db
from storage.schema import (
    PART_QUEUED,
    PART_SENDING,
    PART_SUBMITTED,
    early_receipts,
    messages,
    parts,
)
from storage.store import Store, SubmitResult, Transaction, UpstreamReceipt
from tests.store_helpers import recording_store

# Ids as the daemon makes them: 64-bit, close to the top of the signed range in ~70 years;
# these are above 2**62 to catch a 32-bit or unsigned slip on either backend.
BIG = (1 << 62) + 12345
_ids = itertools.count(BIG)


@pytest.fixture
async def store(engine):
    store = recording_store(engine, _ids)
    await store.start()
    yield store
    await store.stop()


def message_row(message_id: int, *, account: str = "acme", parts_total: int = 1, registered: int = 1,
                now: float = 1_800_000_000.123456) -> dict:
    return {
        "id": message_id,
        "account": account,
        "category": "marketing",
        "source_addr": "ACME",
        "source_ton": 5,
        "source_npi": 0,
        "dest_hash": bytes(range(16)),
        "dest_enc": b"\x01\x00\x01" + b"\xff" * 40 + b"\x00",  # binary, NUL and high bytes included
        "data_coding": 0,
        "registered_delivery": registered,
        "priority": 0,
        "parts_total": parts_total,
        "state": int(MessageState.ENROUTE),
        "error": 0,
        "submitted_at": now,
        "not_before": now,
        "expires_at": now + 48 * 3600,
        "done_at": None,
        "connector": None,
    }


def part_rows(message_id: int, count: int = 1, now: float = 1_800_000_000.123456) -> list[dict]:
    return [
        {
            "message_id": message_id,
            "part_no": n,
            "pdu_enc": b"\x00pdu\x00" + bytes([n]) * 30,
            "state": PART_QUEUED,
            "connector": None,
            "upstream_id": None,
            "attempts": 0,
            "next_attempt_at": now,
            "updated_at": now,
        }
        for n in range(1, count + 1)
    ]


def receipt(upstream_id: str, state: MessageState = MessageState.DELIVERED, error: int = 0,
            connector: str = "op-a") -> UpstreamReceipt:
    return UpstreamReceipt(connector, upstream_id, int(state), error, 1_800_000_100.5)


async def scalar(engine, stmt):
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


# --- migrations ------------------------------------------------------------------------------


async def test_upgrade_creates_the_schema_and_is_idempotent(db_url):
    engine = db.create_engine(db_url)
    try:
        assert await db.current_revision(engine) is None
        assert not await db.has_data(engine)
        await db.upgrade(engine)
        assert await db.current_revision(engine) == db.head_revision()
        await db.upgrade(engine)  # a second start: nothing to do, nothing broken
        assert await db.current_revision(engine) == db.head_revision()
        assert not await db.has_data(engine)
        async with engine.begin() as conn:
            await conn.execute(messages.insert(), [message_row(next(_ids))])
        assert await db.has_data(engine)
    finally:
        await engine.dispose()


async def test_schema_holds_what_the_protocol_can_send(engine):
    """Values at the edge of what SMPP allows must not fail a commit on either backend (one
    failed commit fails every message of its group): a 64-digit hex id read as a number
    (78 decimal digits), a command_status above 2**31, ids near 2**63."""
    huge_id = str(int("F" * 64, 16))
    top = (1 << 63) - 1
    async with engine.begin() as conn:
        await conn.execute(messages.insert(), [{**message_row(top), "error": 0xFFFFFFFF}])
        await conn.execute(parts.insert(), [{**part_rows(top)[0], "upstream_id": huge_id, "connector": "c" * 64}])
        await conn.execute(early_receipts.insert(), [
            {"connector": "c" * 64, "upstream_id": huge_id, "received_at": 1.5, "state": 8, "error": 0xFFFFFFFF}
        ])
    async with engine.connect() as conn:
        row = (await conn.execute(select(messages.c.id, messages.c.error, messages.c.submitted_at))).one()
        assert row.id == top and row.error == 0xFFFFFFFF
        assert row.submitted_at == pytest.approx(1_800_000_000.123456, abs=1e-6)  # a double, not a float4
        assert (await conn.execute(select(parts.c.upstream_id))).scalar_one() == huge_id


# --- the store -----------------------------------------------------------------------------------


async def test_round_trip(store, engine):
    single, long_, quiet = next(_ids), next(_ids), next(_ids)
    await asyncio.gather(
        store.add_message(message_row(single), part_rows(single)),
        store.add_message(message_row(long_, parts_total=2), part_rows(long_, 2)),
        store.add_message(message_row(quiet, registered=0), part_rows(quiet)),
    )
    assert store.commits == 1  # one group commit for the three

    pending = await store.pending_parts()
    assert [(p["message_id"], p["part_no"]) for p in pending] == [(single, 1), (long_, 1), (long_, 2), (quiet, 1)]
    first = pending[0]
    assert first["dest_enc"] == message_row(single)["dest_enc"]
    assert first["dest_hash"] == bytes(range(16))
    assert first["pdu_enc"] == part_rows(single)[0]["pdu_enc"]
    assert first["account"] == "acme" and first["category"] == "marketing"

    # A part handed to a connector (sending) is still pending: re-sent after a crash.
    await store.record_submit(SubmitResult(quiet, 1, PART_SENDING, "op-a", None, 1, 0.0))
    assert (quiet, 1) in {(p["message_id"], p["part_no"]) for p in await store.pending_parts()}

    # The receipt for `single` arrives before its submit_sm_resp was recorded: kept early.
    assert await store.apply_receipt(receipt("A1B2")) is False
    # ... twice (the upstream retried): still one row, no error.
    assert await store.apply_receipt(receipt("A1B2")) is False
    assert await scalar(engine, select(func.count()).select_from(early_receipts)) == 1
    # Two identical early receipts in one group commit.
    await asyncio.gather(store.apply_receipt(receipt("dup")), store.apply_receipt(receipt("dup")))
    assert await scalar(engine, select(func.count()).select_from(early_receipts)) == 2

    # Now the submit_sm_resp: the early receipt is applied in the same commit.
    finished = await store.record_submit(SubmitResult(single, 1, PART_SUBMITTED, "op-a", "A1B2", 1, 0.0))
    assert [(f.message["id"], f.state) for f in finished] == [(single, MessageState.DELIVERED)]
    assert await scalar(engine, select(func.count()).select_from(early_receipts).where(
        early_receipts.c.upstream_id == "A1B2")) == 0
    msg = await store.message(single)
    assert msg["state"] == MessageState.DELIVERED and msg["done_at"] is not None

    # The long message: both parts submitted, receipts matched one by one.
    await asyncio.gather(
        store.record_submit(SubmitResult(long_, 1, PART_SUBMITTED, "op-a", "100", 1, 0.0)),
        store.record_submit(SubmitResult(long_, 2, PART_SUBMITTED, "op-a", "101", 1, 0.0)),
    )
    # Same upstream id on another connector: not ours.
    assert await store.apply_receipt(receipt("100", connector="op-b")) is False
    assert await store.apply_receipt(receipt("100")) is True
    assert (await store.message(long_))["state"] == MessageState.ENROUTE
    assert await store.apply_receipt(receipt("101", MessageState.UNDELIVERABLE, 1)) is True
    msg = await store.message(long_)
    assert msg["state"] == MessageState.UNDELIVERABLE and msg["error"] == 1  # the worst part wins
    # A duplicate receipt is acknowledged and changes nothing.
    assert await store.apply_receipt(receipt("101")) is True
    assert (await store.message(long_))["state"] == MessageState.UNDELIVERABLE

    # Registered messages got one outbox row each; the partner acknowledges them.
    rows = await store.outbox_for("acme")
    assert [r["message_id"] for r in rows] == [single, long_]
    assert rows[0]["pdu_enc"] == b"receipt:%d:0:2" % single
    assert {"acme"} in store.notified
    assert await store.outbox_for("acme", after_id=rows[0]["id"]) == rows[1:]
    assert await store.outbox_for("other") == []
    await store.retry_outbox(rows[1]["id"])
    assert [r["attempts"] for r in await store.outbox_for("acme")] == [0, 1]
    await asyncio.gather(store.ack_outbox(rows[0]["id"]), store.ack_outbox(rows[1]["id"]))
    assert await store.outbox_for("acme") == []

    # Only the unsent message is still pending.
    assert [(p["message_id"], p["part_no"]) for p in await store.pending_parts()] == [(quiet, 1)]


async def test_permanent_failure_and_outbox_insert(store):
    mid = next(_ids)
    await store.add_message(message_row(mid), part_rows(mid))
    finished = await store.record_submit(
        SubmitResult(mid, 1, int(MessageState.REJECTED), "op-a", None, 1, 0.0, 0x80000045)
    )
    assert [(f.state, f.error) for f in finished] == [(MessageState.REJECTED, 0x80000045)]
    msg = await store.message(mid)
    assert msg["state"] == MessageState.REJECTED and msg["error"] == 0x80000045
    # A row added directly (MO, a receipt built elsewhere).
    row_id = next(_ids)
    await store.add_outbox({"id": row_id, "account": "beta", "kind": 2, "message_id": None,
                            "pdu_enc": b"mo", "created_at": 1.0, "expires_at": 2.0, "attempts": 0})
    assert [r["id"] for r in await store.outbox_for("beta")] == [row_id]
    await store.update_message(mid, connector="op-a")
    assert (await store.message(mid))["connector"] == "op-a"


async def test_per_part_receipts(store):
    mid = next(_ids)
    await store.add_message(message_row(mid, account="perpart", parts_total=2), part_rows(mid, 2))
    await store.record_submit(SubmitResult(mid, 1, PART_SUBMITTED, "op-a", "p1", 1, 0.0))
    await store.record_submit(SubmitResult(mid, 2, PART_SUBMITTED, "op-a", "p2", 1, 0.0))
    await store.apply_receipt(receipt("p1"))
    await store.apply_receipt(receipt("p2"))
    rows = await store.outbox_for("perpart")
    assert len(rows) == 2
    assert [(f.part_no, f.state) for f in store.builder.finished] == [
        (1, MessageState.DELIVERED), (2, MessageState.DELIVERED)
    ]


async def test_cancel(store):
    queued, sent = next(_ids), next(_ids)
    await store.add_message(message_row(queued, parts_total=2), part_rows(queued, 2))
    await store.add_message(message_row(sent), part_rows(sent))
    await store.record_submit(SubmitResult(sent, 1, PART_SUBMITTED, "op-a", "9", 1, 0.0))
    assert await store.cancel(queued, "other") is False  # not its message
    assert await store.cancel(sent, "acme") is False  # already left
    assert await store.cancel(next(_ids), "acme") is False  # unknown
    assert await store.cancel(queued, "acme") is True
    assert (await store.message(queued))["state"] == MessageState.DELETED
    assert await store.cancel(queued, "acme") is False  # already final
    assert [p["message_id"] for p in await store.pending_parts()] == []


async def test_a_failed_commit_fails_its_waiters_and_the_writer_goes_on(store):
    mid = next(_ids)
    await store.add_message(message_row(mid), part_rows(mid))
    with pytest.raises(Exception):
        await store.add_message(message_row(mid), part_rows(mid))  # duplicate primary key
    other = next(_ids)
    await store.add_message(message_row(other), part_rows(other))
    assert await store.message(other) is not None


async def test_a_batchs_new_messages_are_committed_first_and_kept_if_the_rest_fails(engine):
    """The in-process commit (SQLite's writer thread, PostgreSQL's ``run_sync``) takes a
    batch's new messages first, like the writer process: they are answered before the rest
    runs, and stay stored when the rest fails."""
    seen_when_building: list[bool] = []

    def failing_builder(done):
        seen_when_building.append(stored.done())
        raise RuntimeError("the receipt builder failed")

    store = Store(engine, Transaction(failing_builder))
    await store.start()
    try:
        earlier = next(_ids)
        await store.add_message(message_row(earlier), part_rows(earlier))
        await store.record_submit(SubmitResult(earlier, 1, PART_SUBMITTED, "op-a", "f1", 1, 0.0))
        new = next(_ids)
        settled = store.apply_receipt(receipt("f1"))
        stored = store.add_message(message_row(new), part_rows(new))  # the same batch
        await stored
        with pytest.raises(RuntimeError, match="receipt builder failed"):
            await settled  # not acknowledged upstream, which sends it again
        assert seen_when_building == [True]  # answered before the rest was applied
        assert (await store.message(new))["id"] == new
        assert (await store.message(earlier))["state"] == MessageState.ENROUTE  # rolled back
    finally:
        await store.stop()


async def test_group_commit_under_concurrency(store, engine):
    ids = [next(_ids) for _ in range(500)]
    await asyncio.gather(*(store.add_message(message_row(i), part_rows(i)) for i in ids))
    assert await scalar(engine, select(func.count()).select_from(messages)) == 500
    assert store.commits < 100
    results = [SubmitResult(i, 1, PART_SUBMITTED, "op-a", str(n), 1, 0.0) for n, i in enumerate(ids)]
    await asyncio.gather(*(store.record_submit(r) for r in results))
    oks = await asyncio.gather(*(store.apply_receipt(receipt(str(n))) for n in range(500)))
    assert all(oks)
    assert len(await store.outbox_for("acme", limit=1000)) == 500


async def test_backend_is_what_we_asked_for(engine, db_url):
    async with engine.connect() as conn:
        if db_url.startswith("postgresql"):
            assert engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"
            version = (await conn.execute(text("show server_version"))).scalar_one()
            assert int(version.split(".")[0]) >= 12
        else:
            assert engine.dialect.name == "sqlite"
            assert (await conn.execute(text("pragma journal_mode"))).scalar_one() == "wal"


async def test_migrations_match_the_models(engine, db_url):
    """What Alembic built is what ``storage.schema`` describes (tables, columns, indexes and,
    where the backend enforces them, types): no drift between a migration and the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storage.schema import metadata

    enforces_types = not db_url.startswith("sqlite")  # see migration 0003

    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": enforces_types})
        return compare_metadata(context, metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_an_absurd_receipt_error_cannot_fail_a_group_commit(store):
    """An upstream's ``err:`` field is free text: a 20-digit error must not overflow the
    column and fail every write of its group commit (submits included), again at each resend."""
    mid, innocent = next(_ids), next(_ids)
    await store.add_message(message_row(mid), part_rows(mid))
    await store.record_submit(SubmitResult(mid, 1, PART_SUBMITTED, "op-a", "X1", 1, 0.0))
    bad = store.apply_receipt(receipt("X1", MessageState.UNDELIVERABLE, 10**20))
    other = store.add_message(message_row(innocent), part_rows(innocent))
    assert await bad is True
    await other
    msg = await store.message(mid)
    assert msg["state"] == MessageState.UNDELIVERABLE and msg["error"] == 0xFFFFFFFF


async def test_nodes_starting_together_upgrade_once(db_url):
    """Several nodes sharing one database may start at the same moment: the schema upgrade
    is serialised (an advisory lock on PostgreSQL; SQLite's writer lock), not raced."""
    engines = [db.create_engine(db_url) for _ in range(4)]
    try:
        await asyncio.gather(*(db.upgrade(e) for e in engines))
        for e in engines:
            assert await db.current_revision(e) == db.head_revision()
    finally:
        for e in engines:
            await e.dispose()


# --- the queue in the database (issue 14) ------------------------------------------------------


async def test_due_messages_pages_the_queue_in_due_order(store, engine):
    """The dispatcher's loader: whole messages due by ``now``, in (next_attempt_at, id)
    order, strictly after a cursor; held and settled parts are not in it."""
    t = 1_800_000_000.0
    a, b, c, held, done = (next(_ids) for _ in range(5))
    await store.add_message(message_row(a, parts_total=2), part_rows(a, 2, now=t + 2))
    await store.add_message(message_row(b), part_rows(b, now=t + 1))
    await store.add_message(message_row(c), part_rows(c, now=t + 2))
    await store.add_message(message_row(held), part_rows(held, now=t + 3600))
    await store.add_message(message_row(done), part_rows(done, now=t))
    await store.record_submit(SubmitResult(done, 1, PART_SUBMITTED, "op-a", "d1", 1, t))

    def keys(page):
        rows, _ = page
        return [(r["message_id"], r["part_no"]) for r in rows]

    everything, more = await store.due_messages(t + 10, 100)
    assert not more
    assert everything[0]["submitted_at"] == pytest.approx(1_800_000_000.123456)
    assert keys((everything, more)) == [(b, 1), (a, 1), (a, 2), (c, 1)]
    assert everything[0]["dest_enc"] == message_row(b)["dest_enc"] and everything[0]["category"] == "marketing"
    # A page ends on a message boundary: a's second part does not fit, a waits for the next.
    assert await store.due_messages(t + 10, 2) == ([everything[0]], True)
    # One message alone larger than the page comes whole.
    assert keys(await store.due_messages(t + 10, 1, after=(t + 1, b))) == [(a, 1), (a, 2)]
    assert keys(await store.due_messages(t + 10, 100, after=(t + 2, a))) == [(c, 1)]
    assert await store.due_messages(t + 10, 100, after=(t + 2, c)) == ([], False)
    assert keys(await store.due_messages(t + 1.5, 100)) == [(b, 1)]  # not yet due: not loaded
    # The next due after the cursor: the held one.
    assert await store.next_due(after=(t + 2, c)) == t + 3600
    assert await store.next_due() == t + 1
    assert await store.queue_counts(t + 10) == (4, 1)  # the held one is marketing
    # A retry moves a message's due time; it blocks its line until then.
    await store.record_submit(SubmitResult(c, 1, PART_QUEUED, None, None, 1, next_attempt_at=t + 60))
    assert keys(await store.due_messages(t + 10, 100, after=(t + 2, a))) == []
    assert await store.blocking_lines(100) == [("acme", bytes(range(16)), c, t + 60)]
    line = ("acme", bytes(range(16)))
    assert await store.blockers_of({line, ("beta", bytes(16))}) == {line: [(c, t + 60)]}
    assert await store.blockers_of({("beta", bytes(range(16)))}) == {}
    assert await store.queue_counts(t + 10) == (4, 1)  # a retry is not a hold

    cancelled = []
    store.on_cancelled = lambda message_id, row: cancelled.append((message_id, row))
    assert await store.cancel(b, "acme") is True
    assert cancelled == [(b, {"category": "marketing", "due": t + 1, "attempts": 0})]
    assert keys(await store.due_messages(t + 10, 100)) == [(a, 1), (a, 2)]


async def test_the_loader_reads_the_partial_index(engine, db_url):
    """Paging through the queue is a range scan of ix_parts_due on both backends, never a
    scan of the whole parts table (or a sort of it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from storage.store import _WAITING, _after

    query = (
        select(parts.c.message_id)
        .where(_WAITING, parts.c.next_attempt_at <= 2e9, *_after((1.8e9, 5)))
        .order_by(parts.c.next_attempt_at, parts.c.message_id, parts.c.part_no)
        .limit(10)
    )
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in await conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "ix_parts_due" in plan and "TEMP B-TREE" not in plan, plan
        else:
            await conn.execute(text("SET enable_seqscan = off"))  # an empty table: force the choice
            sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            plan = " ".join(r[0] for r in await conn.execute(text("EXPLAIN " + sql)))
            assert "ix_parts_due" in plan, plan


async def test_housekeeping_reads_the_submitted_parts_index(engine, store):
    """``stale_parts`` finds what it looks for, through ix_parts_submitted (only the parts out
    upstream), not a scan of every part ever sent."""
    from sqlalchemy.dialects import sqlite

    from storage.store import _SUBMITTED

    t = 1_800_000_000.0
    old, fresh = next(_ids), next(_ids)
    await store.add_message({**message_row(old), "expires_at": t - 10}, part_rows(old))
    await store.add_message({**message_row(fresh), "expires_at": t + 10}, part_rows(fresh))
    await store.record_submit(SubmitResult(old, 1, PART_SUBMITTED, "op-a", "s1", 1, t))
    await store.record_submit(SubmitResult(fresh, 1, PART_SUBMITTED, "op-a", "s2", 1, t))
    assert await store.stale_parts(t) == [("op-a", "s1")]
    if engine.dialect.name == "sqlite":
        query = select(parts.c.message_id).where(_SUBMITTED)
        sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        async with engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in await conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "ix_parts_submitted" in plan, plan


async def test_auto_ids_match_by_their_readings_and_early_receipts_by_theirs(store, engine):
    """``message_id = "auto"``: a receipt carries its readings' keys (protocol/idreadings.py),
    the outcome says which matched and how many found a part; an early receipt, kept under
    its as-is key, is found by the submit_sm_resp's early keys."""
    from protocol.idreadings import read_receipt_id, read_resp_id

    def auto_receipt(raw: str) -> UpstreamReceipt:
        early, keys = read_receipt_id(raw)
        return UpstreamReceipt("op-a", early, int(MessageState.DELIVERED), 0, 1_800_000_100.5,
                               keys=tuple(k for k, _ in keys))

    def auto_result(mid: int, raw: str) -> SubmitResult:
        key, early = read_resp_id(raw)
        return SubmitResult(mid, 1, PART_SUBMITTED, "op-a", key, 1, 0.0, early_keys=early)

    hexed, clash_a, clash_b, early = next(_ids), next(_ids), next(_ids), next(_ids)
    for mid in (hexed, clash_a, clash_b, early):
        await store.add_message(message_row(mid), part_rows(mid))
    # hex in submit_sm_resp, decimal in the receipt: the second key (hex-to-decimal), alone.
    await store.record_submit(auto_result(hexed, "A1B2C1"))
    assert await store.apply_receipt(auto_receipt(str(0xA1B2C1))) == (1, 1)
    assert (await store.message(hexed))["state"] == MessageState.DELIVERED
    # Two parts that one receipt may name (291 as-is, 0x123 = 291): as-is first, two hits.
    await asyncio.gather(store.record_submit(auto_result(clash_a, "291")),
                         store.record_submit(auto_result(clash_b, "123")))
    assert await store.apply_receipt(auto_receipt("291")) == (0, 2)
    assert (await store.message(clash_a))["state"] == MessageState.DELIVERED
    assert (await store.message(clash_b))["state"] == MessageState.ENROUTE
    # Early, in decimal; then its submit_sm_resp, zero-padded hex: applied in that commit.
    assert await store.apply_receipt(auto_receipt(str(0xBEEF))) is False
    finished = await store.record_submit(auto_result(early, "0000BEEF"))
    assert [(f.message["id"], f.state) for f in finished] == [(early, MessageState.DELIVERED)]
    assert await scalar(engine, select(func.count()).select_from(early_receipts).where(
        early_receipts.c.upstream_id == str(0xBEEF))) == 0


async def test_meta_facts_are_replaced_and_read_by_prefix(store):
    assert await store.meta_values("idconv:") == {}
    await store.set_meta("idconv:op-a", "as-is")
    await store.set_meta("idconv:op-a", "hex-to-decimal")  # replaced, not duplicated
    await store.set_meta("idconv:op_b", "decimal-to-hex")
    assert await store.meta_values("idconv:") == {"idconv:op-a": "hex-to-decimal", "idconv:op_b": "decimal-to-hex"}
    assert await store.meta_values("idconv:op_") == {"idconv:op_b": "decimal-to-hex"}  # "_" is no wildcard


async def test_idempotency_keys_on_both_backends(engine):
    from storage.idempotency import KEEP, IdempotencyKeys

    keys = IdempotencyKeys(engine)
    now = 1_800_000_000.0
    await keys.keep("acme", b"k" * 32, b"r" * 32, 202, '{"messages": [{"to": 0}]}', now)
    await keys.keep("acme", b"k" * 32, b"x" * 32, 403, "{}", now + 1)  # a second answer: the first stays
    found = await keys.find("acme", b"k" * 32, now + 10)
    assert (found["status"], found["request_hash"], found["answer"]) == (202, b"r" * 32, '{"messages": [{"to": 0}]}')
    assert await keys.expire(now + KEEP + 1) == 1
    assert await keys.find("acme", b"k" * 32, now + 10) is None


async def test_an_opt_outs_event_rows_are_written_with_its_new_entry_only(engine):
    """``OptOutStore.add`` with a backlog: the event's webhook row commits with the entry; a
    number already listed writes no second row; a failed transaction leaves neither."""
    from storage.ids import IdGenerator
    from storage.optouts import OptOutStore
    from storage.schema import blacklist, webhook_backlog
    from storage.transaction import Backlog

    ids = IdGenerator()
    ids.seed(BIG)
    optouts = OptOutStore(engine, ids)

    def backlog() -> Backlog:
        row_id = ids.next()
        return Backlog(webhooks=[{"id": row_id, "account": "acme", "kind": 2, "message_id": None,
                                  "payload_enc": b"x", "created_at": 1.0, "expires_at": 2.0, "attempts": 0,
                                  "next_attempt_at": 1.0}])

    assert await optouts.add("acme", b"h" * 16, "manual", "test", backlog=backlog())
    assert not await optouts.add("acme", b"h" * 16, "manual", "test", backlog=backlog())
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await optouts.add("acme", b"k" * 16, "import", "test", conn, backlog=backlog())
            raise RuntimeError("the batch fails")
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(webhook_backlog))).scalar() == 1
        assert (await conn.execute(select(func.count()).select_from(blacklist))).scalar() == 1


def answer_row(key: bytes, created_at: float, status: int = 202, answer: str = '{"messages": []}') -> dict:
    return {"account": "acme", "key_hash": key * 32, "request_hash": b"r" * 32, "status": status,
            "answer": answer, "created_at": created_at}


async def test_an_idempotency_answer_commits_with_its_messages_or_not_at_all(store, engine):
    """The key of a request and its answer ride the messages' transaction (``add_answer``
    after their ``add_message``): a failed commit keeps neither, a kept one both; a live
    answer of the key stays first, an expired one is replaced."""
    from sqlalchemy.exc import IntegrityError

    from storage.idempotency import KEEP, IdempotencyKeys

    keys = IdempotencyKeys(engine)
    now = 1_800_000_000.0
    mid = next(_ids)
    await store.add_message(message_row(mid), part_rows(mid))
    # The same id again: the commit fails, and the key's answer goes with it.
    failing = store.add_message(message_row(mid), part_rows(mid))
    answer = store.add_answer(answer_row(b"a", now))
    with pytest.raises(IntegrityError):
        await failing
    with pytest.raises(IntegrityError):
        await answer
    assert await keys.find("acme", b"a" * 32, now) is None
    # Committed: both.
    new = next(_ids)
    stored = store.add_message(message_row(new), part_rows(new))
    await store.add_answer(answer_row(b"a", now, answer='{"first": 1}'))
    await stored
    assert (await keys.find("acme", b"a" * 32, now))["answer"] == '{"first": 1}'
    # A live answer of the key stays first (another node answered it: the batch is not failed).
    other = next(_ids)
    store.add_message(message_row(other), part_rows(other))
    await store.add_answer(answer_row(b"a", now + 1, answer='{"second": 2}'))
    assert (await keys.find("acme", b"a" * 32, now + 1))["answer"] == '{"first": 1}'
    assert await store.message(other) is not None
    # An expired one is replaced.
    late = next(_ids)
    store.add_message(message_row(late), part_rows(late))
    await store.add_answer(answer_row(b"a", now + KEEP + 1, answer='{"third": 3}'))
    assert (await keys.find("acme", b"a" * 32, now + KEEP + 2))["answer"] == '{"third": 3}'


async def test_an_idempotency_answer_is_committed_first_with_its_messages(engine):
    """A batch that also settles receipts commits its new messages first
    (``take_new_messages``): their key's answer goes with them, and stays when the rest of
    the batch fails."""
    from storage.idempotency import IdempotencyKeys

    def failing_builder(done):
        raise RuntimeError("the receipt builder failed")

    store = Store(engine, Transaction(failing_builder))
    await store.start()
    try:
        earlier = next(_ids)
        await store.add_message(message_row(earlier), part_rows(earlier))
        await store.record_submit(SubmitResult(earlier, 1, PART_SUBMITTED, "op-a", "f2", 1, 0.0))
        settled = store.apply_receipt(receipt("f2"))
        new = next(_ids)
        stored = store.add_message(message_row(new), part_rows(new))  # the same batch
        answered = store.add_answer(answer_row(b"b", 1_800_000_000.0))
        await stored
        await answered
        with pytest.raises(RuntimeError, match="receipt builder failed"):
            await settled
        assert await IdempotencyKeys(engine).find("acme", b"b" * 32, 1_800_000_000.0) is not None
    finally:
        await store.stop()
