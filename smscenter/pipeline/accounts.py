"""Per-account runtime state shared by all of an account's binds.

Throughput is per account, not per bind (a partner opening four binds does not get four
times its rate), and receipts/MO for an account may go out on any of its RX/TRX binds. The
registry also answers "may this bind happen?" with the status the spec wants.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Iterable

from protocol.constants import CommandId, CommandStatus

from smscenter.config import Account
from smscenter.runtime.passwords import dummy_hash, token_matches, verify_password
from smscenter.runtime.ratelimit import TokenBucket

BIND_TYPE = {
    CommandId.BIND_TRANSMITTER: "transmitter",
    CommandId.BIND_RECEIVER: "receiver",
    CommandId.BIND_TRANSCEIVER: "transceiver",
}


@dataclass(eq=False)
class PartnerBind:
    """One bound partner session: its account and bind type."""

    account: "AccountState"
    #: Its session: a ``DeliverySink`` for the outbox (pipeline/ports.py); for SMPP, a
    #: ``smscenter.smpp.link.Link`` (the pipeline imports no door).
    link: object
    bind_type: str
    since: float = 0.0  # when it bound, on the registry's clock

    def respond(self, response) -> None:
        """Answer a request handed to the pipeline."""
        self.link.respond(response)  # type: ignore[attr-defined]

    @property
    def receives(self) -> bool:
        return self.bind_type in ("receiver", "transceiver")


@dataclass(eq=False)
class AccountState:
    config: Account
    bucket: TokenBucket
    binds: list[PartnerBind] = field(default_factory=list)
    _rr: int = 0

    @property
    def system_id(self) -> str:
        return self.config.system_id

    def receivers(self) -> list[PartnerBind]:
        """Binds that can take deliver_sm now (RX or TRX, still open)."""
        return [b for b in self.binds if b.receives and b.link.is_open]  # type: ignore[attr-defined]

    def next_receiver(self) -> PartnerBind | None:
        """Round-robin over the receiving binds, so receipts spread across them."""
        receivers = self.receivers()
        if not receivers:
            return None
        self._rr = (self._rr + 1) % len(receivers)
        return receivers[self._rr]


class AccountRegistry:
    """All configured accounts and their live binds."""

    def __init__(self, accounts: Iterable[Account], clock=time.monotonic) -> None:
        now = clock()
        self.clock = clock
        self.accounts = {a.system_id: AccountState(a, TokenBucket(a.throughput, now)) for a in accounts}

    def update(self, accounts: Iterable[Account]) -> list[AccountState]:
        """Take a reloaded config's accounts: a kept account gets its new settings (its
        binds, counters and tokens stay, its rate changes); a new one is added. Returns the
        states of the accounts that are gone (their binds are the caller's to unbind), already
        out of the registry so that none can bind again."""
        now = self.clock()
        fresh = {a.system_id: a for a in accounts}
        gone = [state for sid, state in self.accounts.items() if sid not in fresh]
        for sid, config in fresh.items():
            state = self.accounts.get(sid)
            if state is None:
                self.accounts[sid] = AccountState(config, TokenBucket(config.throughput, now))
            elif state.config != config:
                if state.config.throughput != config.throughput:
                    state.bucket.set_rate(config.throughput, now)
                state.config = config
        for state in gone:
            del self.accounts[state.system_id]
        return gone

    def get(self, system_id: str) -> AccountState | None:
        return self.accounts.get(system_id)

    async def credentials(
        self, system_id: str, password: str, ip: str, run=asyncio.to_thread
    ) -> tuple[AccountState | None, str | None]:
        """The check of a system_id and password that every door makes (an SMPP bind, the
        API's HTTP Basic): ``(state, None)``, or ``(None, reason)`` (``runtime.loginguard.REASONS``:
        ``unknown_system_id``, ``ip_not_allowed``, ``invalid_password``).

        The password check goes through ``run`` (a thread pool): scrypt is deliberately slow
        and must not stall every other session on the event loop. An unknown system_id costs
        the same scrypt (against a dummy hash) as a wrong password, so accounts cannot be
        enumerated by timing. An IP outside the account's allow-list is said whatever the
        password, so that answer does not confirm a guess.
        """
        state = self.accounts.get(system_id)
        stored = state.config.password if state is not None else dummy_hash()
        ok = await run(verify_password, password, stored)
        if state is None:
            return None, "unknown_system_id"
        if not self.ip_allowed(state, ip):
            return None, "ip_not_allowed"
        if not ok:
            return None, "invalid_password"
        return state, None

    @staticmethod
    def ip_allowed(state: AccountState, ip: str) -> bool:
        try:
            return state.config.ip_allowed(ipaddress.ip_address(ip.split("%")[0]))
        except ValueError:
            return False

    def by_token(self, token: str) -> AccountState | None:
        """The account one of whose ``api_tokens`` is ``token`` (hashed once, compared in
        constant time with every account's), or None."""
        found = None
        for state in self.accounts.values():
            if state.config.api_tokens and token_matches(token, state.config.api_tokens):
                found = state
        return found

    async def authenticate(
        self, command_id: int, system_id: str, password: str, ip: str, run=asyncio.to_thread
    ) -> tuple[AccountState | None, CommandStatus, str | None]:
        """Decide a bind: ``(state, status, reason)``, ``reason`` naming a failure
        (``smpp.bindguard.REASONS``). The credentials as every door checks them (``credentials``):
        an unknown system_id and a wrong password get the same ESME_RINVPASWD, an IP outside
        the allow-list ESME_RBINDFAIL whatever the password; then the bind's own limits.
        """
        state, reason = await self.credentials(system_id, password, ip, run)
        if state is None:
            status = CommandStatus.ESME_RBINDFAIL if reason == "ip_not_allowed" else CommandStatus.ESME_RINVPASWD
            return None, status, reason
        if BIND_TYPE[CommandId(command_id)] not in state.config.bind_types:
            return None, CommandStatus.ESME_RBINDFAIL, "bind_type_not_allowed"
        if len(state.binds) >= state.config.max_binds:
            return None, CommandStatus.ESME_RBINDFAIL, "max_binds"
        return state, CommandStatus.ESME_ROK, None

    def attach(self, state: AccountState, link, command_id: int) -> PartnerBind | None:
        """Add a bind to the account; ``None`` if ``max_binds`` filled up meanwhile (binds
        answered after a penalty delay can race each other past ``authenticate``)."""
        if len(state.binds) >= state.config.max_binds:
            return None
        bind = PartnerBind(state, link, BIND_TYPE[CommandId(command_id)], self.clock())
        state.binds.append(bind)
        return bind

    def detach(self, bind: PartnerBind) -> None:
        try:
            bind.account.binds.remove(bind)
        except ValueError:
            pass
