"""Delivering the webhook backlog: receipts and MO as signed JSON to the partners' URLs.

The rows are written by the core (``pipeline/webhook_backlog.py``) in the transaction of
each event's cause — receipts, MO and opt-outs; the CLI's opt-outs by the CLI itself, which
this daemon hears of through the blacklist's refresh (``look``) —; this sender only reads
what is due and deletes what a receiver acknowledged. One pump per account with a
``receipt_url`` or ``mo_url``:

- **many in flight**: up to ``[webhooks] account_in_flight`` requests for the account and
  ``max_in_flight`` for all accounts at once; with ``webhook_ordered = true``, one: the
  account's oldest row, and the next only once it is acknowledged (or expired);
- **acknowledged = 2xx**. Anything else — another status, a redirect (never followed: the
  URL is the partner's configuration, not the receiver's), no answer within ``timeout``, a
  refused connection, a TLS failure — is a retry after a jittered exponential backoff
  (``retry_min`` doubling up to ``retry_max``, times 0.5–1.0, counted from the account's
  failures in a row), and the whole account waits that long too; then one request probes
  the receiver, and only its 2xx lets the others follow. A receiver that is down costs one
  request per backoff, not one per row; when it answers again, everything waiting goes out;
- a row still unacknowledged at ``expires_at`` (the account's message-details retention) is
  dropped;
- **signed**: ``X-Smscenter-Timestamp: <unix seconds>`` and ``X-Smscenter-Signature:
  sha256=<hex HMAC-SHA256(webhook_secret, "<timestamp>.<body>")>``, made at each attempt
  (the body is the same bytes every time; its ``event_id`` lets a receiver drop a duplicate).

Every wait (backoff, request timeout) is on the injected ``Timers``: tests move virtual time.
Logs carry the account, the row id and the outcome — never the URL's path, a number or a text.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import ssl
from collections import Counter
from collections.abc import Callable, Iterable

import aiohttp
import structlog

from storage.crypto import FieldCipher
from storage.schema import WEBHOOK_RECEIPT
from storage.webhooks import WebhookBacklog

from smscenter.config import Account, Webhooks
from smscenter.runtime.tasks import TaskSet
from smscenter.runtime.timers import Timers

log = structlog.get_logger("smscenter.webhooks")

#: Bytes of a receiver's answer read (and dropped) so the connection can be reused.
MAX_ANSWER = 64 * 1024
#: Outcomes counted in ``stats`` (metric ``smscenter_webhook_deliveries{outcome}``).
OUTCOMES = ("delivered", "refused", "redirect", "timeout", "error", "expired")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Smscenter-Signature`` value of ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def backoff(attempts: int, retry_min: float, retry_max: float, rng: Callable[[], float]) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``retry_min`` doubling
    up to ``retry_max``, times a random 0.5–1.0 (receivers that come back are not hit by
    every sender's retries at the same instant)."""
    base = min(retry_max, retry_min * 2 ** min(attempts - 1, 30))
    return base * (0.5 + 0.5 * rng())


class _Session:
    """An HTTPS client session with one account's trust (``webhook_ca``), and the requests
    using it: a reload that changes the account's URLs or CA retires it for a new one, and
    it closes once its last request has ended (a request under way is never cut)."""

    def __init__(self, config: Account, settings: Webhooks) -> None:
        ctx = ssl.create_default_context()
        if config.webhook_ca is not None:
            ctx.load_verify_locations(cafile=str(config.webhook_ca))
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=settings.account_in_flight),
            timeout=aiohttp.ClientTimeout(total=None),  # our own timeout, on the sender's timers
            auto_decompress=False,
        )
        self.users = 0
        self.retired = False

    @property
    def idle(self) -> bool:
        return self.retired and self.users == 0


#: An account's webhook keys (a reload applies them live: ``WebhookSender.reconfigure``).
WEBHOOK_KEYS = ("receipt_url", "mo_url", "webhook_secret", "webhook_ordered", "webhook_ca")
#: The keys a session depends on: any of them changed, the account gets a new session.
SESSION_KEYS = ("receipt_url", "mo_url", "webhook_ca")


class _Account:
    """One account's delivery state."""

    def __init__(self, config: Account, session: _Session, limit: int) -> None:
        self.id = config.system_id
        self.session = session
        self.in_flight: set[int] = set()
        self.paused_until = 0.0  # after a failure: nothing goes out before this
        self.failures = 0  # failed attempts in a row (any row): the account's backoff step
        self.wake = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.configure(config, limit)

    def configure(self, config: Account, limit: int) -> None:
        """The account's settings (at start, or a reload's): read at each attempt, so a new
        secret signs the next one and a new URL receives it."""
        self.config = config
        self.secret = config.webhook_secret.get_secret_value().encode() if config.webhook_secret else b""
        self.ordered = config.webhook_ordered
        self.limit = 1 if self.ordered else limit

    def url(self, kind: int) -> str | None:
        return self.config.receipt_url if kind == WEBHOOK_RECEIPT else self.config.mo_url


class WebhookSender:
    def __init__(
        self,
        backlog: WebhookBacklog,
        cipher: FieldCipher,
        accounts: list[Account],
        settings: Webhooks,
        timers: Timers,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.backlog = backlog
        self.cipher = cipher
        self.settings = settings
        self.timers = timers
        self.rng = rng
        self._configs = [a for a in accounts if a.has_webhooks]
        self._accounts: dict[str, _Account] = {}
        #: Accounts a reload removed (or left without a URL) whose requests under way have
        #: not all ended yet: their sessions close after the last one.
        self._retired: dict[str, _Account] = {}
        self._sessions: set[_Session] = set()  # open ones, retired or not: closed by stop()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tasks = TaskSet()
        self._stopping = False
        self.stats: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})
        #: Rows waiting per account (read at start, then followed in memory).
        self.depth: Counter[str] = Counter()

    def _session(self, config: Account) -> _Session:
        session = _Session(config, self.settings)
        self._sessions.add(session)
        return session

    def _retire_session(self, session: _Session) -> None:
        session.retired = True
        self._close_idle(session)

    def _close_idle(self, session: _Session) -> None:
        if session.idle and session in self._sessions:
            self._sessions.discard(session)
            self._tasks.spawn(session.http.close())

    async def start(self) -> None:
        for config in self._configs:
            self._accounts[config.system_id] = _Account(config, self._session(config), self.settings.account_in_flight)
        for system_id in await self.backlog.accounts():
            acc = self._accounts.get(system_id)
            if acc is None:
                log.warning("webhook_rows_without_url", account=system_id)  # kept until they expire
                continue
            self.depth[system_id] = await self.backlog.depth(system_id)
            self._wake(acc)

    def reconfigure(self, accounts: Iterable[Account]) -> list[str]:
        """A reload's accounts, applied live; returns what changed, in words (account names
        only). An account whose URLs or CA changed gets a new session (the old one closes
        once its requests under way end: they were sent to the old URL, and a failed one is
        tried again at the new); a new secret or ``webhook_ordered`` applies to the next
        attempt. An account added (or given a URL) gets its pump, and its rows already in
        the backlog are counted and sent. An account removed (or left without a URL) keeps
        nothing running: its pump stops, its requests under way end (within ``timeout``),
        and its rows stay in the backlog until they expire or ``account purge``."""
        if self._stopping:
            return []
        configs = {a.system_id: a for a in accounts if a.has_webhooks}
        lines = []
        for system_id in sorted(self._accounts.keys() - configs.keys()):
            acc = self._accounts.pop(system_id)
            if acc.pump is not None:
                acc.pump.cancel()
            if acc.in_flight:  # kept until its last request ended
                self._retired[system_id] = acc
            self._retire_session(acc.session)
            lines.append(f"webhooks {system_id}: stopped")
        limit = self.settings.account_in_flight
        for system_id, config in sorted(configs.items()):
            acc = self._accounts.get(system_id)
            if acc is None:
                acc = self._retired.pop(system_id, None)  # back before its last request ended
                if acc is None:
                    acc = _Account(config, self._session(config), limit)
                else:
                    acc.configure(config, limit)
                    self._renew_session(acc, config)
                self._accounts[system_id] = acc
                self._tasks.spawn(self._recount(acc))
                lines.append(f"webhooks {system_id}: started")
            elif any(getattr(acc.config, k) != getattr(config, k) for k in WEBHOOK_KEYS):
                self._renew_session(acc, config)
                acc.configure(config, limit)
                acc.failures, acc.paused_until = 0, 0.0  # maybe a new receiver: tried at once
                self._wake(acc)
                lines.append(f"webhooks {system_id}: reconfigured")
            else:
                acc.configure(config, limit)
        self._configs = list(configs.values())
        return lines

    def _renew_session(self, acc: _Account, config: Account) -> None:
        if acc.session.retired or any(getattr(acc.config, k) != getattr(config, k) for k in SESSION_KEYS):
            self._retire_session(acc.session)
            acc.session = self._session(config)

    def notify(self, rows: list[tuple[int, str]]) -> None:
        """Rows just committed (id, account): their accounts' pumps look."""
        if self._stopping:
            return
        for _, system_id in rows:
            self.depth[system_id] += 1
        for system_id in {account for _, account in rows}:
            acc = self._accounts.get(system_id)
            if acc is not None:
                self._wake(acc)

    def look(self, accounts: Iterable[str]) -> None:
        """Rows another process may have committed for these accounts (the CLI's opt-outs):
        their depth is read again and their pumps look."""
        if self._stopping:
            return
        for system_id in accounts:
            acc = self._accounts.get(system_id)
            if acc is not None:
                self._tasks.spawn(self._recount(acc))

    async def _recount(self, acc: _Account) -> None:
        try:
            self.depth[acc.id] = await self.backlog.depth(acc.id)
        except Exception:  # noqa: BLE001 - the pump looks all the same
            log.exception("webhook_read_failed", account=acc.id)
        self._wake(acc)

    def _wake(self, acc: _Account) -> None:
        acc.wake.set()
        if acc.pump is None or acc.pump.done():
            acc.pump = asyncio.get_running_loop().create_task(self._pump(acc), name=f"webhooks-{acc.id}")
            acc.pump.add_done_callback(_pump_ended)

    async def stop(self) -> None:
        """In-flight requests are abandoned: their rows stay and go out again after a
        restart (a receiver may get those twice)."""
        self._stopping = True
        tasks = [a.pump for a in self._accounts.values() if a.pump is not None] + self._tasks.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in self._sessions:
            await session.http.close()
        self._sessions.clear()

    # --- the pump ---------------------------------------------------------------------------

    async def _pump(self, acc: _Account) -> None:
        while not self._stopping:
            acc.wake.clear()
            now = self.timers.now()
            if acc.paused_until > now:
                await self._wait(acc, acc.paused_until - now)
                continue
            # After a failure, one request probes the receiver; the rest follow its success.
            free = (1 if acc.failures else acc.limit) - len(acc.in_flight)
            wait: float | None = None
            if free > 0:
                try:
                    rows, wait = await self._due(acc, now, free)
                except Exception:  # noqa: BLE001 - a failed read must not stop deliveries
                    log.exception("webhook_read_failed", account=acc.id)
                    await self.timers.sleep(1.0)
                    continue
                for row in rows:
                    if row["expires_at"] <= now:
                        await self._drop_expired(acc, row)
                        continue
                    await self._slots.acquire()
                    acc.in_flight.add(row["id"])
                    self._tasks.spawn(self._deliver(acc, row))
                if rows and len(rows) == free:
                    continue  # more may be due: look again once there is room
            await self._wait(acc, wait)

    async def _due(self, acc: _Account, now: float, free: int) -> tuple[list[dict], float | None]:
        """(rows to send now, seconds until the next one comes due: None, when woken).

        A row in flight when the read began may be acknowledged and deleted while it runs,
        yet be in its result: the ids in flight at the start are skipped as well as those
        in flight at the end."""
        busy = frozenset(acc.in_flight)
        if acc.ordered:
            head = await self.backlog.head(acc.id)
            if head is None or head["id"] in busy or head["id"] in acc.in_flight:
                return [], None
            if head["next_attempt_at"] > now:
                return [], head["next_attempt_at"] - now
            return [head], None
        rows = await self.backlog.due(acc.id, now, free, skip=busy)
        rows = [r for r in rows if r["id"] not in acc.in_flight]
        if rows:
            return rows, None
        later = await self.backlog.next_due(acc.id, now)
        return [], None if later is None else later - now

    async def _wait(self, acc: _Account, seconds: float | None) -> None:
        """Until woken (new rows, a delivery ended) or ``seconds`` passed."""
        try:
            async with self.timers.timeout(seconds):
                await acc.wake.wait()
        except TimeoutError:
            pass

    async def _drop_expired(self, acc: _Account, row: dict) -> None:
        await self.backlog.delete([row["id"]])
        self.stats["expired"] += 1
        self.depth[acc.id] -= 1
        log.warning("webhook_expired", account=acc.id, event_id=row["id"], attempts=row["attempts"])

    # --- one delivery -----------------------------------------------------------------------

    async def _deliver(self, acc: _Account, row: dict) -> None:
        row_id = row["id"]
        try:
            outcome, status = await self._post(acc, row)
            self.stats[outcome] += 1
            if outcome == "delivered":
                acc.failures = 0
                await self.backlog.delete([row_id])
                self.depth[acc.id] -= 1
                return
            attempts = row["attempts"] + 1
            acc.failures += 1
            now = self.timers.now()
            step = max(attempts, acc.failures)
            delay = backoff(step, self.settings.retry_min, self.settings.retry_max, self.rng)
            acc.paused_until = max(acc.paused_until, now + delay)
            if now + delay >= row["expires_at"]:
                await self._drop_expired(acc, row)
                return
            await self.backlog.retry(row_id, attempts, now + delay)
            log.warning("webhook_retry", account=acc.id, event_id=row_id, outcome=outcome, status=status,
                        attempts=attempts, retry_in=round(delay, 1))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never a crash: the row stays, tried again later
            log.exception("webhook_delivery_failed", account=acc.id, event_id=row_id)
            acc.paused_until = max(acc.paused_until, self.timers.now() + self.settings.retry_min)
        finally:
            acc.in_flight.discard(row_id)
            self._slots.release()
            acc.wake.set()
            if self._retired.get(acc.id) is acc and not acc.in_flight:
                del self._retired[acc.id]  # its last request ended: nothing of it runs

    async def _post(self, acc: _Account, row: dict) -> tuple[str, int | None]:
        """(outcome, HTTP status) of one attempt."""
        url = acc.url(row["kind"])
        if url is None:
            return "error", None  # the URL was removed from the config: kept until expiry
        body = self.cipher.decrypt(row["payload_enc"], b"webhook:%d" % row["id"])
        timestamp = str(int(self.timers.now()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "smscenter-webhooks",
            "X-Smscenter-Event-Id": str(row["id"]),
            "X-Smscenter-Timestamp": timestamp,
            "X-Smscenter-Signature": signature(acc.secret, timestamp, body),
        }
        session = acc.session
        session.users += 1
        try:
            async with self.timers.timeout(self.settings.timeout):
                async with session.http.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    await resp.content.read(MAX_ANSWER)
                    status = resp.status
        except TimeoutError:
            return "timeout", None
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            log.info("webhook_unreachable", account=acc.id, event_id=row["id"], error=type(exc).__name__)
            return "error", None
        finally:
            session.users -= 1
            self._close_idle(session)
        if 200 <= status < 300:
            return "delivered", status
        return ("redirect" if 300 <= status < 400 else "refused"), status


def _pump_ended(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The next notify starts a new pump; rows wait in the table meanwhile.
        log.error("webhook_pump_failed", pump=task.get_name(), error=repr(task.exception()))


__all__ = ["OUTCOMES", "WEBHOOK_KEYS", "WebhookSender", "backoff", "signature"]
