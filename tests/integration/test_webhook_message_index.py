"""A subject's erase deletes an erased message's webhook backlog rows through
``ix_webhook_message`` (migration 0015), not by scanning the backlog, on both backends.

The DELETE checked is the one ``storage.subject.erase_messages`` really sends (caught at
the cursor), explained with its own parameters."""

from __future__ import annotations

from sqlalchemy import event, func, select

from protocol.constants import MessageState
from storage import subject
from storage.schema import WEBHOOK_RECEIPT, messages, webhook_backlog
from tests.integration.test_storage_backends import message_row, part_rows

NOW = 1_800_000_000.0


def webhook_row(row_id: int, message_id: int) -> dict:
    return {"id": row_id, "account": "acme", "kind": WEBHOOK_RECEIPT, "message_id": message_id,
            "payload_enc": b"\x00sealed", "created_at": NOW, "expires_at": NOW + 3600, "attempts": 0,
            "next_attempt_at": NOW}


async def test_the_erase_deletes_a_messages_webhook_rows_through_its_index(engine):
    from storage.schema import parts

    ended = {"state": int(MessageState.DELIVERED), "done_at": NOW}  # parts left waiting: "drop" below
    async with engine.begin() as conn:
        await conn.execute(messages.insert(), [{**message_row(m), **ended} for m in (11, 12, 13)])
        await conn.execute(parts.insert(), [p for m in (11, 12, 13) for p in part_rows(m)])
        # a deep backlog, most of it for other messages (a receiver down)
        await conn.execute(webhook_backlog.insert(), [webhook_row(100 + i, 1000 + i) for i in range(200)])
        await conn.execute(webhook_backlog.insert(), [webhook_row(11, 11), webhook_row(12, 12)])

    caught: list[tuple[str, object]] = []

    def catch(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM WEBHOOK_BACKLOG"):
            caught.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", catch)
    try:
        async with engine.begin() as conn:
            erased = await conn.run_sync(
                lambda c: subject.erase_messages(c, messages.c.account == "acme", 0, 100, NOW, unfinished="drop"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", catch)
    assert erased.rows["webhook_backlog"] == 2
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(webhook_backlog))).scalar_one() == 200
    assert len(caught) == 1, caught
    statement, parameters = caught[0]

    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " ".join(str(r[-1]) for r in rows)
            # e.g. "SEARCH webhook_backlog USING COVERING INDEX ix_webhook_message (message_id=?)"
            assert "ix_webhook_message" in plan and "SCAN" not in plan, plan
        else:
            await conn.exec_driver_sql("SET enable_seqscan = off")  # a small table: force the choice
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan = " ".join(r[0] for r in rows)
            assert "ix_webhook_message" in plan, plan
