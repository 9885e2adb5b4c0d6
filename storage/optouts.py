"""Opt-outs (blacklist), invalid numbers, MO messages and the audit log.

Every blacklist change writes an audit row in the same transaction (who, what, when —
never the number in clear). The daemon keeps an in-memory copy of the blacklist for the
submit path and follows the audit log to pick up changes made by the CLI or another node:
the table is the truth, the copy is a cache rebuilt from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .ids import IdGenerator
from .transaction import Backlog
from .schema import audit_log, blacklist, invalid_numbers, messages, mo_messages, outbox, parts, webhook_backlog

PLATFORM_PREFIX = "sc:"


def platform_scope(short_code: str) -> str:
    """The blacklist scope of a platform-level opt-out on a shared short code."""
    return PLATFORM_PREFIX + short_code


def is_alphanumeric(source_addr: str) -> bool:
    """An alphanumeric sender ID (not a short code or long number): its marketing carries a
    STOP mention naming the shared short code, so opt-outs there concern it."""
    return bool(source_addr) and not source_addr.lstrip("+").isdigit()


@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    scope: str
    dest_hash: bytes
    source: str
    created_at: float
    created_by: str


class OptOutStore:
    def __init__(self, engine: AsyncEngine, ids: IdGenerator, clock=time.time) -> None:
        self.engine = engine
        self.ids = ids
        self.clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # --- unsubscribe links ------------------------------------------------------------------

    async def link_target(self, token: str) -> tuple[str, bytes] | None:
        """(account, number hash) an unsubscribe link's token was issued for; None when no
        message carries it, or when it is ambiguous (two targets: opt out nobody)."""
        found = await self.link_message(token)
        return (found[0], found[1]) if found is not None else None

    async def link_message(self, token: str) -> tuple[str, bytes, int, bytes | None] | None:
        """``link_target`` and one message that carries the token: (account, number hash,
        message id, its encrypted destination — AAD ``dest:<id>`` —, None once purged)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(messages.c.account, messages.c.dest_hash, messages.c.id, messages.c.dest_enc)
                    .where(messages.c.unsub_token == token).order_by(messages.c.id)
                )
            ).all()
        if len({(r.account, r.dest_hash) for r in rows}) != 1:
            return None
        first = rows[0]
        return first.account, first.dest_hash, first.id, first.dest_enc

    # --- blacklist --------------------------------------------------------------------------

    async def add(self, scope: str, dest_hash: bytes, source: str, actor: str, conn: AsyncConnection | None = None,
                  backlog: Backlog | None = None) -> bool:
        """Add an entry (True if it is new). Runs in ``conn``'s transaction when given.
        ``backlog``: the rows the opt-out's event owes its durable subscribers
        (``smscenter.pipeline.events.OptOutEvent``), written in the same transaction when
        the entry is new (a number already listed opted out before: no second event)."""
        if conn is None:
            async with self.engine.begin() as own:
                return await self.add(scope, dest_hash, source, actor, own, backlog)
        now = self.clock()
        stmt = self._insert(blacklist).values(
            scope=scope, dest_hash=dest_hash, source=source, created_at=now, created_by=actor, confirmed_at=None
        )
        result = await conn.execute(stmt.on_conflict_do_nothing(index_elements=["scope", "dest_hash"]))
        added = bool(result.rowcount)
        if added:
            await self._audit(conn, actor, "blacklist.add", scope, dest_hash, source)
            if backlog is not None:
                await write_backlog(conn, backlog)
        return added

    async def remove(self, scope: str, dest_hash: bytes, actor: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(blacklist).where(and_(blacklist.c.scope == scope, blacklist.c.dest_hash == dest_hash))
            )
            if result.rowcount:
                await self._audit(conn, actor, "blacklist.remove", scope, dest_hash, "")
            return bool(result.rowcount)

    async def contains(self, scope: str, dest_hash: bytes) -> BlacklistEntry | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(blacklist).where(and_(blacklist.c.scope == scope, blacklist.c.dest_hash == dest_hash))
                )
            ).mappings().first()
        return _entry(row) if row else None

    async def find(self, dest_hash: bytes) -> list[BlacklistEntry]:
        """Every entry for this number, whatever its scope."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(blacklist).where(blacklist.c.dest_hash == dest_hash).order_by(blacklist.c.scope)
            )
            return [_entry(r) for r in rows.mappings()]

    async def entries(self, scope: str | None = None, limit: int | None = None) -> list[BlacklistEntry]:
        query = select(blacklist).order_by(blacklist.c.created_at)
        if scope is not None:
            query = query.where(blacklist.c.scope == scope)
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            return [_entry(r) for r in (await conn.execute(query)).mappings()]

    async def all_keys(self) -> set[tuple[str, bytes]]:
        """Every (scope, hash): the daemon's cache."""
        async with self.engine.connect() as conn:
            return {(r.scope, r.dest_hash) for r in await conn.execute(select(blacklist.c.scope, blacklist.c.dest_hash))}

    async def changes_since(self, audit_id: int) -> tuple[int, list[tuple[str, str, bytes]]]:
        """Blacklist changes after ``audit_id``: (new high-water mark, [(action, scope, hash)])."""
        events = await self.audit_events_since(audit_id)
        if not events:
            return audit_id, []
        return events[-1][0], [(action, scope, dest_hash) for _, action, scope, dest_hash in events]

    async def audit_events_since(self, audit_id: int) -> list[tuple[int, str, str, bytes]]:
        """Blacklist audit rows with an id above ``audit_id``, in id order:
        [(id, action, scope, hash)]. Ids are time-ordered but several writers (the daemon,
        the CLI, other nodes) commit out of id order: callers re-read a margin below their
        high-water mark (see ``smscenter.pipeline.blacklist``)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_log.c.id, audit_log.c.action, audit_log.c.scope, audit_log.c.dest_hash)
                    .where(and_(audit_log.c.id > audit_id, audit_log.c.action.like("blacklist.%")))
                    .order_by(audit_log.c.id)
                )
            ).all()
        return [(r.id, r.action, r.scope, r.dest_hash) for r in rows]

    async def present(self, keys: Iterable[tuple[str, bytes]]) -> set[tuple[str, bytes]]:
        """Which of these (scope, hash) are in the table now."""
        by_scope: dict[str, set[bytes]] = {}
        for scope, dest_hash in keys:
            by_scope.setdefault(scope, set()).add(dest_hash)
        found: set[tuple[str, bytes]] = set()
        async with self.engine.connect() as conn:
            for scope, hashes in by_scope.items():
                ordered = sorted(hashes)
                for start in range(0, len(ordered), 500):
                    rows = await conn.execute(
                        select(blacklist.c.dest_hash).where(
                            and_(blacklist.c.scope == scope, blacklist.c.dest_hash.in_(ordered[start : start + 500]))
                        )
                    )
                    found.update((scope, r.dest_hash) for r in rows)
        return found

    async def last_audit_id(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.max(audit_log.c.id)))).scalar() or 0

    async def should_confirm(self, conn: AsyncConnection, scope: str, dest_hash: bytes, now: float) -> bool:
        """At most one confirmation SMS per number and scope per day; marks it sent."""
        row = (
            await conn.execute(
                select(blacklist.c.confirmed_at).where(and_(blacklist.c.scope == scope, blacklist.c.dest_hash == dest_hash))
            )
        ).first()
        if row is not None and row.confirmed_at is not None and now - row.confirmed_at < 86400:
            return False
        await conn.execute(
            update(blacklist)
            .where(and_(blacklist.c.scope == scope, blacklist.c.dest_hash == dest_hash))
            .values(confirmed_at=now)
        )
        return True

    async def recent_marketing_senders(
        self, conn: AsyncConnection, dest_hash: bytes, short_code: str, since: float, *, alphanumeric: bool = True
    ) -> list[str]:
        """Accounts that sent marketing to this number through this short code since
        ``since``: from the short code itself, or — when ``alphanumeric`` (the short code is
        the shared one named in the STOP mention) — from an alphanumeric sender."""
        rows = await conn.execute(
            select(messages.c.account, messages.c.source_addr)
            .where(
                and_(
                    messages.c.dest_hash == dest_hash,
                    messages.c.submitted_at >= since,
                    messages.c.category == "marketing",
                )
            )
            .distinct()
        )
        return sorted(
            {
                r.account
                for r in rows
                if r.account and (r.source_addr == short_code or (alphanumeric and is_alphanumeric(r.source_addr)))
            }
        )

    async def _audit(self, conn: AsyncConnection, actor: str, action: str, scope: str, dest_hash: bytes | None, detail: str) -> None:
        await conn.execute(
            audit_log.insert().values(
                id=self.ids.next(), at=self.clock(), actor=actor[:64], action=action, scope=scope,
                dest_hash=dest_hash, detail=detail[:256],
            )
        )

    # --- invalid numbers --------------------------------------------------------------------

    async def add_invalid(self, dest_hash: bytes, ttl: float) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            stmt = self._insert(invalid_numbers).values(dest_hash=dest_hash, created_at=now, expires_at=now + ttl)
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["dest_hash"], set_={"expires_at": now + ttl})
            )

    async def invalid(self) -> dict[bytes, float]:
        now = self.clock()
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(invalid_numbers).where(invalid_numbers.c.expires_at > now))
            return {r.dest_hash: r.expires_at for r in rows}

    # --- MO ---------------------------------------------------------------------------------

    async def mo_list(self, status: str | None = "unroutable", limit: int = 100) -> list[dict]:
        query = select(mo_messages).order_by(mo_messages.c.received_at.desc()).limit(limit)
        if status is not None:
            query = query.where(mo_messages.c.status == status)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def record_mo(
        self,
        mo_row: dict,
        *,
        optouts: Iterable[tuple[str, bytes]] = (),
        outbox_rows: Iterable[dict] = (),
        webhook_rows: Iterable[dict] = (),
        new_messages: Iterable[tuple[dict, list[dict]]] = (),
        confirm: "ConfirmFactory | None" = None,
        optout_backlogs: dict[str, Backlog] | None = None,
    ) -> list:
        """Store an MO and everything it causes in one transaction: blacklist entries
        (with their opt-out events' rows, per scope in ``optout_backlogs``, for the entries
        that are new: on return it holds those only), the partners' copies (the subscribers' backlogs: outbox, webhooks),
        and the confirmation SMS.

        One STOP gets at most one confirmation, even when it is attributed to several
        accounts (the person sent one reply; two identical SMS back would be noise), and
        none when every scope it applies to was already confirmed within the last day.
        ``confirm(scope)`` builds it (or returns None: no route). Returns what it built."""
        built = []
        events = optout_backlogs or {}
        async with self.engine.begin() as conn:
            await conn.execute(mo_messages.insert().values(**mo_row))
            unconfirmed = []
            for scope, dest_hash in optouts:
                if not await self.add(scope, dest_hash, "stop", "mo", conn, events.get(scope)):
                    events.pop(scope, None)  # listed before: no event, nothing written
                if confirm is not None and await self.should_confirm(conn, scope, dest_hash, self.clock()):
                    unconfirmed.append(scope)
            if unconfirmed:
                made = confirm(unconfirmed[0])
                if made is not None:
                    built.append(made)
            rows = list(outbox_rows)
            if rows:
                await conn.execute(outbox.insert(), rows)
            rows = list(webhook_rows)
            if rows:
                await conn.execute(webhook_backlog.insert(), rows)
            for message, message_parts in list(new_messages) + [(m.row, m.part_rows) for m in built]:
                await conn.execute(messages.insert().values(**message))
                await conn.execute(parts.insert(), message_parts)
        return built


async def write_backlog(conn: AsyncConnection, backlog: Backlog) -> None:
    """An event's subscriber rows (outbox, webhooks), in ``conn``'s transaction."""
    if backlog.outbox:
        await conn.execute(outbox.insert(), backlog.outbox)
    if backlog.webhooks:
        await conn.execute(webhook_backlog.insert(), backlog.webhooks)


class ConfirmFactory:  # pragma: no cover - a typing aid
    def __call__(self, scope: str): ...


def _entry(row) -> BlacklistEntry:
    return BlacklistEntry(row["scope"], row["dest_hash"], row["source"], row["created_at"], row["created_by"])
