"""Bind throttling: the SMPP face of the doors' shared ``LoginGuard`` (``runtime/loginguard.py``).

The rules (penalty per IP for every attempt, guesses per (IP, system_id) capped however paced,
a success that clears only its own entry, hang-ups counted, concurrent checks capped, scrypt on
a fair pool) are the guard's, the same for every door, and the daemon keeps one guard for all
of them: a guesser does not double its rate by alternating an SMPP bind and the HTTP API.
What is SMPP stays here: a bind's answer as a status. An unknown system_id and a wrong
password both get ESME_RINVPASWD after the same work; a bind refused by a cap or by the guess
limit, or whose account's own limits said no, gets ESME_RBINDFAIL.

Failed binds are counted by reason in ``smscenter_binds_failed_total{reason}`` (and, with the
API's, in ``smscenter_logins_failed_total{door, reason}``) and logged aggregated as
``bind_refused`` (one line per IP, reason and known account per interval).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Awaitable, Callable

import structlog

from protocol.constants import CommandStatus

from smscenter.runtime.floodlog import Tally
from smscenter.runtime.loginguard import GUESS_WINDOW, REASONS as LOGIN_REASONS, FairExecutor, LoginGuard

log = structlog.get_logger("smscenter.server")

__all__ = ["BindGuard", "DOOR", "FairExecutor", "REASONS", "GUESS_WINDOW"]

#: The guard's name for this door (``smscenter_logins_failed_total{door}``).
DOOR = "smpp"

#: Why a bind failed, as labelled in ``smscenter_binds_failed_total``: the guard's reasons and
#: the bind's own limits (the password was right: ``runtime.loginguard.PASSWORD_RIGHT``).
REASONS = (*LOGIN_REASONS, "bind_type_not_allowed", "max_binds")


class BindGuard(LoginGuard):
    """The login guard with the SMPP door registered on it; ``bind`` answers in statuses."""

    def __init__(self, timers, **options) -> None:
        super().__init__(timers, **options)
        self.door(DOOR, Tally(log, "bind_refused", timers, interval=self.log_interval), REASONS)

    @property
    def failed(self) -> Counter[str]:
        """Failed binds by reason (this door's only)."""
        return self.failures[DOOR]

    async def bind(
        self,
        ip: str,
        system_id: str,
        check: Callable[[Callable[..., Awaitable]], Awaitable[tuple[Any, CommandStatus, str | None]]],
        still_there: Callable[[], bool],
        *,
        account: str | None = None,
    ) -> tuple[Any, CommandStatus]:
        """Run one bind through the guard.

        ``check(run)`` decides the bind, running its password check with ``await run(fn,
        *args)`` (on the guard's pool); it returns ``(result, status, reason)`` — ``reason`` one
        of ``REASONS`` when status is not ESME_ROK. Returns ``(result, status)``; ``result`` is
        ``None`` on failure.
        """
        answered = CommandStatus.ESME_RBINDFAIL  # what the check said, when one ran

        async def neutral(run):
            nonlocal answered
            result, answered, reason = await check(run)
            if answered == CommandStatus.ESME_ROK and reason is None:
                return result, None
            return None, reason or "invalid_password"

        result, reason = await self.attempt(DOOR, ip, system_id, neutral, still_there, account=account)
        if reason is None:
            return result, CommandStatus.ESME_ROK
        return None, (CommandStatus.ESME_RBINDFAIL if answered == CommandStatus.ESME_ROK else answered)
