"""The HTTPS API's idempotency keys: the first final answer to an account's key, kept 24 hours.

A client that did not hear our answer (a timeout, a dropped connection) sends the same
request again with the same ``Idempotency-Key`` and gets the first answer back instead of a
second message. Keys and request bodies are stored as keyed hashes (the caller's), answers
with each recipient as its index in the request: the table holds no number and no text.

A 202 (messages accepted) is not stored here but in the messages' own transaction (the
store's ``add_answer``, through ``Pipeline.submit``'s ``keep``): stored after them, in a
transaction of its own, a crash between the two left the messages without their key, and
the client's retry sent them again. ``keep`` stores the final refusals, which store nothing
else: a crash before it costs a retry answered anew, the same way.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import api_idempotency as ai

#: How long a key's answer is returned again.
KEEP = 24 * 3600.0


class IdempotencyKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def find(self, account: str, key_hash: bytes, now: float) -> dict | None:
        """The answer stored for the key (``request_hash``, ``status``, ``answer``), unless
        older than ``KEEP``."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(ai.c.request_hash, ai.c.status, ai.c.answer, ai.c.created_at)
                .where(ai.c.account == account, ai.c.key_hash == key_hash)
            )).mappings().first()
        if row is None or row["created_at"] <= now - KEEP:
            return None
        return dict(row)

    async def expire(self, now: float) -> int:
        """Remove the keys past ``KEEP`` (housekeeping, so that none outlives its 24 hours
        when no request comes); returns how many."""
        async with self.engine.begin() as conn:
            return (await conn.execute(delete(ai).where(ai.c.created_at <= now - KEEP))).rowcount or 0

    async def keep(self, account: str, key_hash: bytes, request_hash: bytes, status: int, answer: str,
                   now: float) -> None:
        """Store the first answer to the key (an expired one of the same key is replaced);
        keys past ``KEEP`` are removed on the way. (A 202 goes with its messages instead:
        see the module docstring.)"""
        async with self.engine.begin() as conn:
            await conn.execute(delete(ai).where(ai.c.created_at <= now - KEEP))
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(ai).values(
                        account=account, key_hash=key_hash, request_hash=request_hash, status=status,
                        answer=answer, created_at=now,
                    ))
            except IntegrityError:
                pass  # answered already (the first answer stays)
