"""The submit path's view of opt-outs and invalid numbers: an in-memory copy of the tables.

Submit checks must not wait for a database read, so the blacklist is held as a set of
(scope, keyed hash). The tables stay the truth: the copy is loaded at start and then
follows the audit log (every blacklist change writes one), so changes made by the CLI or by
another node show up within ``refresh_interval``; changes made here apply at once.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from storage.optouts import OptOutStore, platform_scope

log = structlog.get_logger("smscenter.blacklist")


class Blacklist:
    def __init__(self, store: OptOutStore, shared_short_code: str | None, refresh_interval: float = 2.0, clock=time.time):
        self.store = store
        self.shared_scope = platform_scope(shared_short_code) if shared_short_code else None
        self.shared_short_code = shared_short_code
        self.refresh_interval = refresh_interval
        self.clock = clock
        self._keys: set[tuple[str, bytes]] = set()
        self._invalid: dict[bytes, float] = {}
        self._audit_id = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._audit_id = await self.store.last_audit_id()
        self._keys = await self.store.all_keys()
        self._invalid = await self.store.invalid()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="blacklist-follow")
        log.info("blacklist_loaded", entries=len(self._keys), invalid_numbers=len(self._invalid))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep following; the copy stays usable
                log.warning("blacklist_refresh_failed", error=str(exc))

    async def refresh(self) -> None:
        self._audit_id, changes = await self.store.changes_since(self._audit_id)
        for action, scope, dest_hash in changes:
            if action == "blacklist.add":
                self._keys.add((scope, dest_hash))
            elif action == "blacklist.remove":
                self._keys.discard((scope, dest_hash))
        self._invalid = await self.store.invalid()

    # --- the submit path's questions ---------------------------------------------------------

    def opted_out(self, account: str, dest_hash: bytes, source_addr: str) -> bool:
        """Has this number opted out of this account's messages? Platform-level entries on
        the shared short code count for marketing sent from it or from an alphanumeric
        sender (whose STOP mention names it)."""
        if (account, dest_hash) in self._keys:
            return True
        if self.shared_scope is not None and (self.shared_scope, dest_hash) in self._keys:
            return source_addr == self.shared_short_code or not source_addr.isdigit()
        return False

    def invalid(self, dest_hash: bytes) -> bool:
        expires = self._invalid.get(dest_hash)
        return expires is not None and expires > self.clock()

    # --- changes made in this process (applied at once; also in the tables) ----------------

    def added(self, scope: str, dest_hash: bytes) -> None:
        self._keys.add((scope, dest_hash))

    def mark_invalid(self, dest_hash: bytes, expires_at: float) -> None:
        self._invalid[dest_hash] = expires_at

    def __len__(self) -> int:
        return len(self._keys)
