"""The webhook backlog's reads and writes for its sender (``smscenter/http/webhooks.py``).

Rows are written by the transaction of each event's cause (``transaction.py``,
``optouts.record_mo``); the sender only reads what is due, deletes what was acknowledged or
expired, and pushes a refused row's next attempt back. Every query is on one account and
served by ``ix_webhook_due`` / ``ix_webhook_account``.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import webhook_backlog as wb


class WebhookBacklog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def accounts(self) -> list[str]:
        """Accounts with rows (the pumps to start after a restart)."""
        async with self.engine.connect() as conn:
            return [r[0] for r in await conn.execute(select(wb.c.account).distinct())]

    async def max_id(self) -> int:
        """The largest row id (0: none): the daemon seeds its id generators past it too
        (``store.max_ids`` covers the other tables)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.max(wb.c.id)))).scalar() or 0

    async def due(self, account: str, now: float, limit: int, skip: frozenset[int] | set[int] = frozenset()) -> list[dict]:
        """Up to ``limit`` of the account's rows due by ``now`` and not in ``skip`` (in
        flight), soonest first, then oldest first."""
        query = (
            select(wb).where(wb.c.account == account, wb.c.next_attempt_at <= now)
            .order_by(wb.c.next_attempt_at, wb.c.id).limit(limit + len(skip))
        )
        async with self.engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(query)).mappings()]
        return [r for r in rows if r["id"] not in skip][:limit]

    async def head(self, account: str) -> dict | None:
        """The account's oldest row: the only one an ordered account may have in flight."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(wb).where(wb.c.account == account).order_by(wb.c.id).limit(1)
            )).mappings().first()
            return dict(row) if row else None

    async def next_due(self, account: str, after: float) -> float | None:
        """When the account's first row due after ``after`` comes due (None: none)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(
                select(func.min(wb.c.next_attempt_at)).where(wb.c.account == account, wb.c.next_attempt_at > after)
            )).scalar()

    async def depth(self, account: str) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).where(wb.c.account == account))).scalar() or 0

    async def delete(self, row_ids: list[int]) -> None:
        if not row_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(delete(wb).where(wb.c.id.in_(row_ids)))

    async def retry(self, row_id: int, attempts: int, next_attempt_at: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(wb).where(wb.c.id == row_id).values(attempts=attempts, next_attempt_at=next_attempt_at)
            )


__all__ = ["WebhookBacklog"]
