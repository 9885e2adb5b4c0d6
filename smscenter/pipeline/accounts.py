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
from smscenter.runtime.passwords import dummy_hash, verify_password
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
    link: object  # smscenter.smpp.link.Link (kept loose to avoid an import cycle)
    bind_type: str

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

    def get(self, system_id: str) -> AccountState | None:
        return self.accounts.get(system_id)

    async def authenticate(
        self, command_id: int, system_id: str, password: str, ip: str, run=asyncio.to_thread
    ) -> tuple[AccountState | None, CommandStatus, str | None]:
        """Decide a bind: ``(state, status, reason)``, ``reason`` naming a failure
        (``bindguard.REASONS``).

        The password check goes through ``run`` (the bind guard's own thread pool): scrypt is
        deliberately slow and must not stall every other session on the event loop. An
        unknown system_id costs the same scrypt (against a dummy hash) and gets the same
        ESME_RINVPASWD as a wrong password, so accounts cannot be enumerated by status or
        timing. An IP outside the account's allow-list gets ESME_RBINDFAIL whatever the
        password, so the allow-list answer does not confirm a guess.
        """
        state = self.accounts.get(system_id)
        stored = state.config.password if state is not None else dummy_hash()
        ok = await run(verify_password, password, stored)
        if state is None:
            return None, CommandStatus.ESME_RINVPASWD, "unknown_system_id"
        try:
            allowed = state.config.ip_allowed(ipaddress.ip_address(ip.split("%")[0]))
        except ValueError:
            allowed = False
        if not allowed:
            return None, CommandStatus.ESME_RBINDFAIL, "ip_not_allowed"
        if not ok:
            return None, CommandStatus.ESME_RINVPASWD, "invalid_password"
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
        bind = PartnerBind(state, link, BIND_TYPE[CommandId(command_id)])
        state.binds.append(bind)
        return bind

    def detach(self, bind: PartnerBind) -> None:
        try:
            bind.account.binds.remove(bind)
        except ValueError:
            pass
