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

from .config import Account
from .passwords import verify_password
from .ratelimit import TokenBucket

BIND_TYPE = {
    CommandId.BIND_TRANSMITTER: "transmitter",
    CommandId.BIND_RECEIVER: "receiver",
    CommandId.BIND_TRANSCEIVER: "transceiver",
}


@dataclass(eq=False)
class PartnerBind:
    """One bound partner session: its account and bind type."""

    account: "AccountState"
    link: object  # smscenter.link.Link (kept loose to avoid an import cycle)
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
        self, command_id: int, system_id: str, password: str, ip: str
    ) -> tuple[AccountState | None, CommandStatus]:
        """Decide a bind. The password check runs in a thread: scrypt is deliberately slow
        and must not stall every other session on the event loop."""
        state = self.accounts.get(system_id)
        if state is None:
            return None, CommandStatus.ESME_RINVSYSID
        ok = await asyncio.to_thread(verify_password, password, state.config.password)
        if not ok:
            return None, CommandStatus.ESME_RINVPASWD
        try:
            allowed = state.config.ip_allowed(ipaddress.ip_address(ip.split("%")[0]))
        except ValueError:
            allowed = False
        if not allowed:
            return None, CommandStatus.ESME_RBINDFAIL
        if BIND_TYPE[CommandId(command_id)] not in state.config.bind_types:
            return None, CommandStatus.ESME_RBINDFAIL
        if len(state.binds) >= state.config.max_binds:
            return None, CommandStatus.ESME_RBINDFAIL
        return state, CommandStatus.ESME_ROK

    def attach(self, state: AccountState, link, command_id: int) -> PartnerBind:
        bind = PartnerBind(state, link, BIND_TYPE[CommandId(command_id)])
        state.binds.append(bind)
        return bind

    def detach(self, bind: PartnerBind) -> None:
        try:
            bind.account.binds.remove(bind)
        except ValueError:
            pass
