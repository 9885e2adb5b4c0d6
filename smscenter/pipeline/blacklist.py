"""The submit path's view of opt-outs and invalid numbers: an in-memory copy of the tables.

Submit checks must not wait for a database read, so the blacklist is held as a set of
(scope, keyed hash). The tables stay the truth: the copy is loaded at start and then
follows the audit log (every blacklist change writes one), so changes made by the CLI or by
another node show up within ``refresh_interval``; changes made here apply at once.

The audit log is only a change notice: for every (scope, hash) it names, the copy is set from
the blacklist table itself, so the order in which changes are read does not matter. Audit ids
are time-ordered, but writers (this daemon, the CLI, other nodes) commit out of id order, so
each refresh re-reads ``REREAD_MARGIN`` seconds of ids below its high-water mark and skips the
events it already handled: a change committed up to that long after its id was made is still
seen. The invalid-numbers list is small and changes rarely: it is re-read every
``invalid_interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from storage.ids import NODE_BITS, SEQ_BITS
from storage.optouts import OptOutStore, is_alphanumeric, platform_scope

from smscenter.runtime.timers import Every, RealTimers, Timers, every

log = structlog.get_logger("smscenter.blacklist")

#: Seconds of audit ids re-read below the high-water mark at each refresh.
REREAD_MARGIN = 60.0
_MARGIN_IDS = int(REREAD_MARGIN * 1000) << (NODE_BITS + SEQ_BITS)


class Blacklist:
    def __init__(
        self,
        store: OptOutStore,
        shared_short_code: str | None,
        refresh_interval: float = 2.0,
        clock=time.time,
        invalid_interval: float = 30.0,
        timers: Timers | None = None,
    ):
        self.store = store
        self.shared_scope = platform_scope(shared_short_code) if shared_short_code else None
        self.shared_short_code = shared_short_code
        self.refresh_interval = refresh_interval
        self.invalid_interval = invalid_interval
        #: The refresh interval runs on these (virtual time in tests). Re-read ages are
        #: measured on ``_elapsed``: the monotonic clock for real, the timers' own in tests.
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = self.timers.now
        self._elapsed = time.monotonic if timers is None else timers.now
        self._keys: set[tuple[str, bytes]] = set()
        self._invalid: dict[bytes, float] = {}
        self._invalid_read_at = 0.0
        #: Numbers marked invalid here lately: their row may not be written yet when the list
        #: is re-read, so they are kept over the re-read for a while.
        self._marked: dict[bytes, tuple[float, float]] = {}
        self._audit_id = 0
        self._seen: set[int] = set()  # audit ids handled within the re-read margin
        self._follow: Every | None = None
        #: Told the scopes that got new entries from elsewhere (the CLI, another node) at
        #: each refresh: the opt-out events those wrote wait in the webhook backlog.
        self.on_added: Callable[[set[str]], None] | None = None

    async def start(self) -> None:
        self._audit_id = await self.store.last_audit_id()
        self._keys = await self.store.all_keys()
        self._invalid = await self.store.invalid()
        self._invalid_read_at = self._elapsed()
        # A failed refresh keeps following: the copy stays usable meanwhile.
        self._follow = every(self.refresh_interval, self.refresh, self.timers, "blacklist_refresh_failed",
                             name="blacklist-follow", with_traceback=False)
        log.info("blacklist_loaded", entries=len(self._keys), invalid_numbers=len(self._invalid))

    async def stop(self) -> None:
        if self._follow is not None:
            await self._follow.stop()

    async def refresh(self) -> None:
        """Apply the blacklist changes made elsewhere since the last refresh."""
        floor = max(0, self._audit_id - _MARGIN_IDS)
        events = [e for e in await self.store.audit_events_since(floor) if e[0] not in self._seen]
        if events:
            keys = {(scope, dest_hash) for _, _, scope, dest_hash in events if dest_hash is not None}
            present = await self.store.present(keys)
            added = set()
            for key in keys:
                if key in present:
                    if key not in self._keys:
                        added.add(key[0])
                    self._keys.add(key)
                else:
                    self._keys.discard(key)
            if added and self.on_added is not None:
                self.on_added(added)
            self._seen.update(e[0] for e in events)
            self._audit_id = max(self._audit_id, events[-1][0])
        floor = max(0, self._audit_id - _MARGIN_IDS)
        self._seen = {i for i in self._seen if i > floor}
        if self._elapsed() - self._invalid_read_at >= self.invalid_interval:
            started = self._elapsed()
            invalid = await self.store.invalid()
            self._marked = {h: m for h, m in self._marked.items() if m[1] > started - REREAD_MARGIN}
            for dest_hash, (expires_at, _) in self._marked.items():
                invalid[dest_hash] = max(expires_at, invalid.get(dest_hash, 0.0))
            self._invalid = invalid
            self._invalid_read_at = started

    # --- the submit path's questions ---------------------------------------------------------

    def opted_out(self, account: str, dest_hash: bytes, source_addr: str) -> bool:
        """Has this number opted out of this account's messages from ``source_addr``?

        Besides the account's own list, platform-level entries ("sc:<short code>", a STOP
        on a shared short code nobody had recently sent marketing through) count for every
        account: for messages sent from that short code, and — for the shared opt-out short
        code — for messages from alphanumeric senders, whose STOP mention names it."""
        if (account, dest_hash) in self._keys:
            return True
        if source_addr.isdigit() and (platform_scope(source_addr), dest_hash) in self._keys:
            return True
        if self.shared_scope is not None and is_alphanumeric(source_addr):
            return (self.shared_scope, dest_hash) in self._keys
        return False

    def invalid(self, dest_hash: bytes) -> bool:
        expires = self._invalid.get(dest_hash)
        return expires is not None and expires > self.clock()

    # --- changes made in this process (applied at once; also in the tables) ----------------

    def added(self, scope: str, dest_hash: bytes) -> None:
        self._keys.add((scope, dest_hash))

    def mark_invalid(self, dest_hash: bytes, expires_at: float) -> None:
        self._invalid[dest_hash] = expires_at
        self._marked[dest_hash] = (expires_at, self._elapsed())

    def __len__(self) -> int:
        return len(self._keys)
