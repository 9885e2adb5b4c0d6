"""Stand-ins for the daemon's transaction hooks, shared by the store tests (``tests/unit/
test_store.py``, ``tests/integration/test_storage_backends.py``): a receipt builder that
records what finished and writes a readable outbox row, and the decoder of early receipts
kept before schema 0006, which those tests write as ``b"state:error"``. Also the daemon's
own transaction with its receipt builder held at a gate, for the writer process's tests.
And ``create_schema``: a new database's schema, in-process."""

from __future__ import annotations

import os
import time
from typing import Iterator

from storage import db
from storage.schema import OUTBOX_RECEIPT
from storage.store import Finished, Store, Transaction, UpstreamReceipt


class Builder:
    """Records every ``Finished``; for a message that asked for a receipt, an outbox row
    whose ``pdu_enc`` is ``b"receipt:<message id>:<part no or 0>:<state>"``."""

    def __init__(self, ids: Iterator[int]) -> None:
        self.ids = ids
        self.finished: list[Finished] = []

    def __call__(self, done: Finished) -> dict | None:
        self.finished.append(done)
        if not done.message["registered_delivery"]:
            return None
        return {
            "id": next(self.ids),
            "account": done.message["account"],
            "kind": OUTBOX_RECEIPT,
            "message_id": done.message["id"],
            "pdu_enc": b"receipt:%d:%d:%d" % (done.message["id"], done.part_no or 0, int(done.state)),
            "created_at": done.done_at,
            "expires_at": done.done_at + 3600.0,
            "attempts": 0,
        }


def early_decoder(row: dict) -> UpstreamReceipt:
    state, error = row["pdu_enc"].decode().split(":")
    return UpstreamReceipt(row["connector"], row["upstream_id"], int(state), int(error), row["received_at"])


def recording_store(engine, ids: Iterator[int]) -> Store:
    """A store (not started) with these hooks, per-part receipts for account ``perpart``,
    and two things to look at: ``builder`` (what finished) and ``notified`` (the accounts
    of each batch of committed outbox rows)."""
    builder = Builder(ids)
    store = Store(engine, Transaction(builder, per_part_receipts=lambda account: account == "perpart",
                                      early_decoder=early_decoder))
    store.builder = builder
    store.notified = []
    store.on_outbox_rows = lambda rows: store.notified.append({row["account"] for row in rows})
    return store


def gated_transaction(keys: str, gate: str, fail: bool = False) -> Transaction:
    """The daemon's transaction (``receipts.daemon_transaction``) whose receipt builder waits
    until the file ``gate`` exists (10 s at most), then builds — or raises, with ``fail``.
    Module-level, so that a ``functools.partial`` of it can be a writer process's factory."""
    from smscenter.pipeline.receipts import daemon_transaction

    transaction = daemon_transaction(keys, {}, 3600.0, {}, {}, 0)
    build = transaction.receipt_builder

    def gated(done: Finished) -> dict | None:
        deadline = time.monotonic() + 10.0
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        if fail:
            raise RuntimeError("the receipt builder failed")
        return build(done)

    transaction.receipt_builder = gated
    return transaction


async def create_schema(url: str) -> None:
    """The schema of a new database, as ``smscenter db upgrade`` creates it (not audited, like
    the command's creation of a new schema). For tests whose subject is something else: the
    command itself is tested as a process in ``test_db_cli.py``; here it costs no interpreter
    start (seconds each on a loaded machine)."""
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


def gated_job(fn, gate: str, started: str, conn):
    """A writer job (``Store.background``) that says it started (creates the file
    ``started``), holds its transaction until the file ``gate`` exists (10 s at most), then
    runs ``fn(conn)`` in it: a purge batch holding the writer for as long as a test wants.
    Module-level, so that a ``functools.partial`` of it pickles to a writer process."""
    open(started, "w").close()
    deadline = time.monotonic() + 10.0
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return fn(conn)


def count_rows(table_name: str, conn) -> int:
    """A writer job: the rows of ``table_name`` as the writer's transaction sees them."""
    from sqlalchemy import text

    return conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one()


def synchronous(conn) -> int:
    """A writer job: the connection's ``PRAGMA synchronous`` (1 NORMAL, 2 FULL) inside it."""
    return conn.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0]
