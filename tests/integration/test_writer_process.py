"""The group commit in a writer process (``storage.writer``), as the daemon runs it on SQLite.

The store is given the daemon's own transaction factory (``receipts.daemon_transaction``,
real keys in a temporary folder), so these tests cross the process boundary with the real
values: message rows, upstream receipts (kept early without their PDU; older early rows
decoded in the child), and the partner's receipt PDUs coming back. Also: the child keeps
the daemon's clock, survives SIGTERM (the daemon's shutdown still needs it), is started
again after it died, reports a failed batch without stopping, refuses to start without
keys, and exits when its daemon is killed. A batch's new messages are committed and
answered before the rest of the batch is applied, and stay stored if the rest fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import pytest
from sqlalchemy import select

from protocol import codec
from protocol import pdu as P
from protocol.constants import EsmClass, MessageState as M, Tag
from smscenter.pipeline.receipts import TRANSACTION_NODE, daemon_transaction
from storage.crypto import FieldCipher, Keyring
from storage.ids import SEQ_BITS, MAX_NODE
from storage.schema import OUTBOX_RECEIPT, PART_QUEUED, PART_SUBMITTED, early_receipts, outbox
from storage.store import Store, SubmitResult, UpstreamReceipt
from storage.writer import WriterDied
from tests.store_helpers import gated_transaction
from tests.patience import PATIENCE

NOW = 1_800_000_000.5
DEST = "+33612345678"


@pytest.fixture
def keys(tmp_path):
    Keyring.create(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def engine(sqlite_engine):
    return sqlite_engine


def factory(keys, per_part=None):
    return partial(daemon_transaction, str(keys), {"acme": 7200.0}, 3600.0, per_part or {}, {}, 0)


@pytest.fixture
async def store(engine, keys):
    store = Store(engine, factory(keys), clock=lambda: NOW)
    store.rows = []
    store.on_outbox_rows = store.rows.extend
    await store.start()
    yield store
    await store.stop()


_next_id = iter(range(1_000_000, 2_000_000))


def new_message(cipher: FieldCipher, registered: int = 1) -> tuple[dict, list[dict]]:
    message_id = next(_next_id)
    row = {
        "id": message_id, "account": "acme", "category": "alert", "source_addr": "ACME", "source_ton": 5,
        "source_npi": 0, "dest_hash": cipher.lookup_hash(DEST), "dest_enc": cipher.encrypt(DEST.encode(), b"dest:%d" % message_id),
        "text_enc": None, "data_coding": 0, "parts_total": 1, "registered_delivery": registered, "priority": 0,
        "submitted_at": NOW - 5, "not_before": 0.0, "expires_at": NOW + 3600, "state": int(M.ENROUTE),
        "done_at": None, "error": 0, "connector": None,
    }
    part = {"message_id": message_id, "part_no": 1, "pdu_enc": b"sealed", "state": PART_QUEUED, "connector": None,
            "upstream_id": None, "attempts": 0, "next_attempt_at": 0.0, "updated_at": NOW - 5}
    return row, [part]


def upstream_receipt(upstream_id: str, state: M = M.DELIVERED) -> UpstreamReceipt:
    return UpstreamReceipt("op", upstream_id, int(state), 0, NOW)


async def columns_of(engine, table) -> list[dict]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


async def test_the_transaction_runs_in_another_process(store):
    assert store.writer_pid is not None and store.writer_pid != os.getpid()
    assert store.writer_restarts == 0


async def test_a_receipt_round_trip_through_the_writer_process(store, engine, keys):
    cipher = FieldCipher(Keyring.load(keys))
    row, parts_ = new_message(cipher)
    await store.add_message(row, parts_)
    assert await store.record_submit(SubmitResult(row["id"], 1, PART_SUBMITTED, "op", "a1", 1, NOW)) == []
    assert await store.apply_receipt(upstream_receipt("a1")) is True

    # The partner's receipt, built in the child, comes back with its PDU for the sender …
    [sent] = store.rows
    pdu = sent["pdu"]
    assert isinstance(pdu, P.DeliverSm) and pdu.esm_class == EsmClass.DELIVERY_RECEIPT
    assert dict(pdu.tlvs)[Tag.RECEIPTED_MESSAGE_ID] == str(row["id"])
    assert pdu.short_message.startswith(b"id:%d " % row["id"]) and b"stat:DELIVRD" in pdu.short_message
    assert pdu.source_addr == DEST.lstrip("+")
    # … stamped with the parent's clock, kept for the account's retention …
    assert (sent["created_at"], sent["expires_at"]) == (NOW, NOW + 7200.0)
    # … with an id from the transaction's own node (never one the daemon hands out) …
    assert (sent["id"] >> SEQ_BITS) & MAX_NODE == TRANSACTION_NODE
    # … and stored encrypted, readable with the daemon's keys.
    [stored] = await columns_of(engine, outbox)
    assert stored["id"] == sent["id"] and stored["kind"] == OUTBOX_RECEIPT
    assert codec.decode(cipher.decrypt(stored["pdu_enc"], b"outbox:%d" % stored["id"])) == pdu


async def test_an_early_receipt_is_kept_without_its_pdu_and_matched_in_the_child(store, engine, keys):
    cipher = FieldCipher(Keyring.load(keys))
    row, parts_ = new_message(cipher)
    await store.add_message(row, parts_)
    assert await store.apply_receipt(upstream_receipt("b7")) is False  # before its submit_sm_resp: kept
    [kept] = await columns_of(engine, early_receipts)
    assert (kept["state"], kept["error"], kept["pdu_enc"]) == (int(M.DELIVERED), 0, None)

    [done] = await store.record_submit(SubmitResult(row["id"], 1, PART_SUBMITTED, "op", "b7", 1, NOW))
    assert done.state == M.DELIVERED and done.message["id"] == row["id"]
    assert await columns_of(engine, early_receipts) == []
    [sent] = store.rows
    assert dict(sent["pdu"].tlvs)[Tag.RECEIPTED_MESSAGE_ID] == str(row["id"])


async def test_an_early_receipt_kept_by_an_older_version_is_decoded_in_the_child(store, engine, keys):
    """Before schema 0006 an early receipt was the upstream's deliver_sm, encrypted."""
    cipher = FieldCipher(Keyring.load(keys))
    row, parts_ = new_message(cipher)
    await store.add_message(row, parts_)
    deliver = P.DeliverSm(
        source_addr=DEST.lstrip("+"), destination_addr="ACME", esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=b"id:c8 sub:001 dlvrd:000 submit date:2701010000 done date:2701010001 stat:UNDELIV err:045 text:",
        tlvs=((Tag.RECEIPTED_MESSAGE_ID, "c8"), (Tag.MESSAGE_STATE, int(M.UNDELIVERABLE))),
    )
    async with engine.begin() as conn:
        await conn.execute(early_receipts.insert(), [{
            "connector": "op", "upstream_id": "c8", "received_at": NOW,
            "pdu_enc": cipher.encrypt(codec.encode(deliver), b"early:op"),
        }])
    [done] = await store.record_submit(SubmitResult(row["id"], 1, PART_SUBMITTED, "op", "c8", 1, NOW))
    assert (done.state, done.error) == (M.UNDELIVERABLE, 45)  # err:045, decimal
    assert await columns_of(engine, early_receipts) == []


async def test_a_failed_batch_fails_its_calls_and_the_writer_goes_on(store, keys):
    cipher = FieldCipher(Keyring.load(keys))
    row, parts_ = new_message(cipher)
    await store.add_message(row, parts_)
    with pytest.raises(Exception, match="UNIQUE|IntegrityError"):
        await store.add_message(row, parts_)  # the same id again
    pid = store.writer_pid
    other, other_parts = new_message(cipher)
    await store.add_message(other, other_parts)
    assert store.writer_pid == pid


@contextlib.asynccontextmanager
async def _gated_store(engine, keys, gate, fail: bool = False):
    """A store whose writer's receipt builder waits for the file ``gate`` (see
    ``gated_transaction``); the gate is opened on the way out, so the writer can stop."""
    store = Store(engine, partial(gated_transaction, str(keys), str(gate), fail=fail), clock=lambda: NOW)
    await store.start()
    try:
        yield store
    finally:
        gate.touch()
        await store.stop()


async def _a_receipt_beside_a_new_message(store, keys, upstream_id: str):
    """A message sent upstream as ``upstream_id``, then in one batch its receipt and a new
    message: (the earlier row, the new row, the receipt's outcome, the new message's)."""
    cipher = FieldCipher(Keyring.load(keys))
    earlier, parts_ = new_message(cipher)
    await store.add_message(earlier, parts_)
    await store.record_submit(SubmitResult(earlier["id"], 1, PART_SUBMITTED, "op", upstream_id, 1, NOW))
    row, parts_ = new_message(cipher)
    receipt = store.apply_receipt(upstream_receipt(upstream_id))
    stored = store.add_message(row, parts_)
    return earlier, row, receipt, stored


async def test_a_batchs_new_messages_are_answered_before_the_rest_is_applied(engine, keys, tmp_path):
    gate = tmp_path / "gate"
    async with _gated_store(engine, keys, gate) as store:
        earlier, row, receipt, stored = await _a_receipt_beside_a_new_message(store, keys, "g1")
        async with asyncio.timeout(5):
            await stored  # while the receipt builder waits at the gate
        assert not receipt.done()
        assert (await store.message(row["id"]))["state"] == int(M.ENROUTE)
        assert (await store.message(earlier["id"]))["state"] == int(M.ENROUTE)  # not settled yet
        gate.touch()
        assert await receipt is True
        assert (await store.message(earlier["id"]))["state"] == int(M.DELIVERED)


async def test_new_messages_stay_stored_when_the_rest_of_their_batch_fails(engine, keys, tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    async with _gated_store(engine, keys, gate, fail=True) as store:
        earlier, row, receipt, stored = await _a_receipt_beside_a_new_message(store, keys, "h1")
        await stored  # committed on its own: the partner gets ESME_ROK
        with pytest.raises(RuntimeError, match="receipt builder failed"):
            await receipt  # not acknowledged upstream, which sends it again
        assert (await store.message(row["id"]))["id"] == row["id"]
        assert (await store.message(earlier["id"]))["state"] == int(M.ENROUTE)  # rolled back
        other, other_parts = new_message(FieldCipher(Keyring.load(keys)))
        await store.add_message(other, other_parts)  # the writer goes on


async def test_a_writer_that_dies_after_storing_the_messages_fails_only_the_rest(engine, keys, tmp_path):
    gate = tmp_path / "gate"  # kept closed: the writer is killed while the rest waits
    async with _gated_store(engine, keys, gate) as store:
        earlier, row, receipt, stored = await _a_receipt_beside_a_new_message(store, keys, "k1")
        async with asyncio.timeout(5):
            await stored
        os.kill(store.writer_pid, signal.SIGKILL)
        with pytest.raises(WriterDied):
            async with asyncio.timeout(5):
                await receipt  # not acknowledged: the upstream sends it again
        gate.touch()
        assert (await store.message(row["id"]))["id"] == row["id"]  # its ESME_ROK stands
        assert (await store.message(earlier["id"]))["state"] == int(M.ENROUTE)
        assert await store.apply_receipt(upstream_receipt("k1")) is True  # the resend, on a new writer
        assert (await store.message(earlier["id"]))["state"] == int(M.DELIVERED)


async def test_the_writer_ignores_sigterm(store, keys):
    """systemd signals the whole group: the daemon's staged shutdown still commits."""
    pid = store.writer_pid
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    await asyncio.sleep(0.2)
    row, parts_ = new_message(FieldCipher(Keyring.load(keys)))
    await store.add_message(row, parts_)
    assert store.writer_pid == pid


async def test_a_writer_that_died_is_started_again(store, keys):
    cipher = FieldCipher(Keyring.load(keys))
    pid = store.writer_pid
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # the store notices (end of file on its socket)
        if store.writer_pid is None:
            break
        await asyncio.sleep(0.05)
    assert store.writer_pid is None
    row, parts_ = new_message(cipher)
    await store.add_message(row, parts_)
    assert store.writer_pid not in (None, pid)
    assert (await store.message(row["id"]))["id"] == row["id"]
    assert store.writer_restarts == 1


async def test_the_writer_refuses_to_start_without_keys(engine, tmp_path):
    store = Store(engine, factory(tmp_path / "no-keys"))
    with pytest.raises(WriterDied, match="no keys"):
        await store.start()
    await store.stop()


async def test_stop_commits_what_is_queued_and_ends_the_child(engine, keys):
    store = Store(engine, factory(keys), clock=lambda: NOW, max_delay=5.0)
    await store.start()
    proc = store._process._proc
    cipher = FieldCipher(Keyring.load(keys))
    futs = [store.add_message(*new_message(cipher)) for _ in range(20)]
    await store.stop()
    assert all(f.done() and f.exception() is None for f in futs)
    assert not proc.is_alive() and proc.exitcode == 0


def test_the_writer_exits_when_its_daemon_is_killed(tmp_path, keys):
    db_path = tmp_path / "orphan.db"
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        from functools import partial
        from smscenter.pipeline.receipts import daemon_transaction
        from storage import db
        from storage.store import Store

        async def main():
            engine = db.create_engine("sqlite:///{db_path}")
            await db.upgrade(engine)
            store = Store(engine, partial(daemon_transaction, "{keys}", {{}}, 3600.0, {{}}, {{}}, 0))
            await store.start()
            print(store.writer_pid, flush=True)
            await asyncio.sleep(120)

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        writer_pid = int(proc.stdout.readline())
        os.kill(writer_pid, 0)  # it runs
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _gone(writer_pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer process outlived its daemon")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (the orphan is re-parented to init or to a
    subreaper, which may not have reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_failing_outbox_hook_is_reported_and_the_commit_still_answered(store, keys):
    """A bug in the hook that hears new outbox rows is reported to the loop; the batch was
    committed, so its callers still hear so, and the batches after it too."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    cipher = FieldCipher(Keyring.load(keys))
    calls = 0

    def hook(rows) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("hook bug")

    store.on_outbox_rows = hook
    try:
        for n in range(3):
            row, parts_ = new_message(cipher)
            await store.add_message(row, parts_)
            await store.record_submit(SubmitResult(row["id"], 1, PART_SUBMITTED, "op", f"f{n}", 1, NOW))
            assert await asyncio.wait_for(store.apply_receipt(upstream_receipt(f"f{n}")), PATIENCE) is True
        assert [type(c["exception"]) for c in reported] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)


def test_what_crosses_to_the_writer_pickles_to_equal_values():
    """SubmitResult, UpstreamReceipt and Finished pickle as their field values (faster than
    a slots dataclass's own way): the copy is equal and of the same type."""
    from storage.transaction import Finished

    values = (
        SubmitResult(7, 2, PART_SUBMITTED, "op", "a1", 3, 9.5, 0x45),
        upstream_receipt("a1"),
        Finished({"id": 7}, 2, M.DELIVERED, 0, NOW),
    )
    for value in values:
        copy = pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
        assert copy == value and type(copy) is type(value)
