"""Mobile-originated messages (replies to short codes): reassemble, opt-out, route, deliver.

An upstream's MO arrives here as a neutral ``ports.InboundMo`` (the SMPP door,
smpp/upstream.py, reads it from a deliver_sm that is not a receipt: short code, UDH or SAR
concatenation). Nothing is acknowledged before it is stored: the parts of a concatenated MO
keep their answer (``Reply``; for SMPP their deliver_sm_resp) until the whole message is
stored (parts may arrive in any order; an incomplete set is stored as such after
``mo_reassembly_timeout``). Then, in one transaction:

- an opt-out keyword puts the number on the blacklist of the account(s) it is attributed to
  (see ``routing.optout``), queues one confirmation SMS per account and day (category
  alert, from the short code, no promotional content, not billed: its account is the
  platform's, ""), and the MO is forwarded to those accounts marked ``service_type "STOP"``
  so their CRM can follow;
- otherwise the MO is routed by short code (and first keyword on a shared one) to the
  owning account: an MO event (``events.py``) to its durable subscribers — the SMPP outbox,
  delivered like receipts (held while the account is unbound), and its ``mo_url``;
- unroutable MO (unknown short code or keyword, binary data, empty text, a number that does
  not parse) is stored, logged with the number masked, acknowledged so the SMSC does not
  resend it forever, and listed by ``smscenter mo list``.
"""

from __future__ import annotations

import time

import structlog

from protocol.errors import RemoteProtocolError
from protocol.segments import Reassembler
from protocol.text import decode_text, is_binary
from routing.numbers import InvalidNumber, country_of, mask, normalize_msisdn
from routing.optout import DEFAULT_KEYWORDS, KeywordMatcher, attribute_optout, fold, route_mo
from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.optouts import OptOutStore, platform_scope

from smscenter.pipeline.blacklist import Blacklist
from smscenter.pipeline.events import Events, MoEvent, OptOutEvent
from smscenter.pipeline.outbox_subscriber import OutboxSubscriber
from smscenter.config import Settings
from smscenter.pipeline.dispatch import QueuedMessage
from smscenter.pipeline.ports import InboundMo
from smscenter.runtime.tasks import TaskSet
from smscenter.runtime.timers import Every, RealTimers, Timers

log = structlog.get_logger("smscenter.mo")

PLATFORM_ACCOUNT = ""  # messages the platform sends on its own behalf (not billed)


def short_code_owners(settings: Settings) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(dedicated short code → account, (shared short code, KEYWORD) → account).

    A short code listed by one account only, and not the shared opt-out code, is dedicated;
    otherwise it is shared and MO on it is routed by first keyword.
    """
    users: dict[str, list[str]] = {}
    for account in settings.accounts:
        for code in account.short_codes:
            users.setdefault(code, []).append(account.system_id)
    shared = settings.optout.short_code if settings.optout else None
    owners = {code: accts[0] for code, accts in users.items() if len(accts) == 1 and code != shared}
    keywords = {
        (code, fold(word)): account.system_id
        for account in settings.accounts
        for code in account.short_codes
        if code not in owners
        for word in account.keywords
    }
    return owners, keywords


def known_short_codes(settings: Settings) -> frozenset[str]:
    """Short codes MO may arrive on: the accounts', the shared opt-out code, and those the
    connectors are bound for."""
    codes = {code for account in settings.accounts for code in account.short_codes}
    codes.update(code for connector in settings.connectors for code in connector.short_codes)
    if settings.optout:
        codes.add(settings.optout.short_code)
    return frozenset(codes)


class MoService:
    """Where upstreams' MO enter the core (``on_mo``)."""

    def __init__(
        self,
        settings: Settings,
        optouts: OptOutStore,
        blacklist: Blacklist,
        cipher: FieldCipher,
        ids: IdGenerator,
        planner,
        dispatcher,
        outbox,
        retention,
        clock=time.time,
        timers: Timers | None = None,
        events: Events | None = None,
    ) -> None:
        self.settings = settings
        self.optouts = optouts
        self.blacklist = blacklist
        self.cipher = cipher
        self.ids = ids
        self.planner = planner
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.retention = retention  # account -> seconds
        #: Where routed MO leave the core: the SMPP outbox, and whatever else the daemon
        #: subscribed (webhooks); ``on_webhook_rows`` hears the webhook rows committed.
        self.events = events if events is not None else Events([OutboxSubscriber(cipher, ids, retention)])
        self.on_webhook_rows = None
        #: The reassembly timeout runs on these (virtual time in tests).
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.clock = self.timers.now
        self.owners, self.keywords = short_code_owners(settings)
        opt = settings.optout
        self.shared_short_code = opt.short_code if opt else None
        self.known_short_codes = known_short_codes(settings)
        self.matcher = KeywordMatcher(opt.keywords if opt and opt.keywords else DEFAULT_KEYWORDS)
        self.lookback = opt.lookback if opt else 90 * 86400.0
        timeout = opt.mo_reassembly_timeout if opt else 30.0
        self.reassembler = Reassembler(timeout=timeout)
        self._held: dict[tuple, list[InboundMo]] = {}
        self._tasks = TaskSet()
        # Each second while parts wait for the rest (and not otherwise): those past the timeout.
        self._expiry = Every(1.0, self._expire_due, self.timers, "mo_expiry_failed", name="mo-expiry",
                             as_long_as=lambda: len(self.reassembler) > 0)
        self.stats = {"mo": 0, "optouts": 0, "routed": 0, "unroutable": 0}

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded config's accounts: short codes and keywords route MO to their new
        owners from the next MO on (``[optout]`` needs a restart, so its values stay)."""
        self.settings = settings
        self.owners, self.keywords = short_code_owners(settings)
        self.known_short_codes = known_short_codes(settings)

    # --- entry point ------------------------------------------------------------------------

    def on_mo(self, mo: InboundMo) -> None:
        """One MO (or part of one) from an upstream: stored once whole, then answered."""
        concat = mo.concat
        if concat is None or concat.total == 1:
            self._spawn(self._process(mo.connector, mo.short_code, mo, mo.body, [mo], "whole"))
            return
        key = (mo.connector, mo.source_addr, mo.short_code, concat.reference, concat.total)
        self._held.setdefault(key, []).append(mo)
        whole = self.reassembler.add(key, concat, mo.body, self.clock())
        self._ensure_expiry()
        if whole is not None:
            holders = self._held.pop(key, [])
            self._spawn(self._process(mo.connector, mo.short_code, mo, whole, holders, "whole"))

    def _ensure_expiry(self) -> None:
        if not self._expiry.running:
            self._expiry.start()

    async def _expire_due(self) -> None:
        """The messages whose missing parts did not come in time go on with what came."""
        for key, parts in self.reassembler.expire(self.clock()):
            holders = self._held.pop(key, [])
            if not holders:
                continue
            connector_name, _, short_code, _, _ = key
            body = b"".join(parts[n] for n in sorted(parts))
            await self._process(connector_name, short_code, holders[0], body, holders, "incomplete")

    # --- deciding and storing -----------------------------------------------------------------

    async def _process(self, connector: str, short_code: str, mo: InboundMo, body: bytes, holders: list[InboundMo],
                       completeness: str) -> None:
        """Decide, store and answer one whole (or timed-out incomplete) MO from ``connector``
        (``mo``: its last part, or first for an incomplete one; ``holders``: every part,
        answered once it is stored)."""
        now = self.clock()
        self.stats["mo"] += 1
        mo_id = self.ids.next()
        coding = mo.data_coding
        reason = ""
        text = None
        e164 = None
        try:
            e164 = normalize_msisdn(mo.source_addr, mo.source_ton, mo.source_npi, _default_country(self.settings))
        except (InvalidNumber, ValueError):
            reason = "source number does not parse"
        if is_binary(coding):
            reason = reason or "binary data_coding"
        else:
            try:
                text = decode_text(body, coding)
            except RemoteProtocolError:
                reason = reason or "text does not decode"
        if text is not None and not text.strip():
            reason = reason or "empty text"
        if completeness != "whole":
            reason = reason or "incomplete concatenated message"
        source_hash = self.cipher.lookup_hash(e164) if e164 else None
        optouts: list[tuple[str, bytes]] = []
        targets: tuple[str, ...] = ()
        status = "unroutable"
        if not reason and short_code not in self.known_short_codes:
            # Nobody here sends from it: no owner to route to, and a confirmation from a
            # code that is not ours must not go out.
            reason = "unknown short code"
        keyword = self.matcher.match(text) if (text and not reason) else None
        if keyword and source_hash is not None:
            async with self.optouts.engine.connect() as conn:
                recent = await self.optouts.recent_marketing_senders(
                    conn, source_hash, short_code, now - self.lookback,
                    alphanumeric=short_code == self.shared_short_code,
                )
            target = attribute_optout(short_code, self.owners, recent)
            targets = target.accounts
            scopes = list(target.accounts) or [platform_scope(target.platform_short_code)]
            optouts = [(scope, source_hash) for scope in scopes]
            status, reason = "optout", keyword
        elif not reason:
            account = route_mo(short_code, text or "", self.owners, self.keywords)
            if account is not None:
                targets, status, reason = (account,), "routed", "keyword" if short_code not in self.owners else "short code"
            else:
                reason = "no account for this keyword"
        mo_row = {
            "id": mo_id,
            "received_at": now,
            "connector": connector,
            "short_code": short_code[:21],
            "source_hash": source_hash,
            "source_enc": self.cipher.encrypt(mo.source_addr.encode("latin-1"), b"mo-source:%d" % mo_id),
            "text_enc": self.cipher.encrypt(body, b"mo-text:%d" % mo_id),
            "data_coding": coding,
            "account": targets[0] if targets else None,
            "status": status,
            "reason": reason[:64],
        }
        # Out to the durable subscribers (SMPP outbox, webhooks), committed with the MO; each
        # new blacklist entry also as its own opt-out event (its rows written with the entry).
        backlog = self.events.backlog(
            self._events(targets, mo, e164, short_code, text, body, status == "optout", mo_id, now)
        )
        optout_backlogs = {
            scope: self.events.backlog([OptOutEvent(scope if scope in targets else None, scope, "stop", now, e164)])
            for scope, _ in optouts
        }

        def confirm(scope: str):
            return self.planner.system_message(
                PLATFORM_ACCOUNT, short_code, e164, self._confirmation_text(e164)
            ) if e164 else None

        try:
            built = await self.optouts.record_mo(
                mo_row, optouts=optouts, outbox_rows=backlog.outbox, webhook_rows=backlog.webhooks,
                confirm=confirm if optouts else None, optout_backlogs=optout_backlogs,
            )
        except Exception as exc:  # noqa: BLE001 - not stored: no answer, the SMSC resends
            log.error("mo_not_stored", connector=connector, error=str(exc))
            for part in holders:
                part.reply.abandon()
            return
        for part in holders:
            part.reply.ack()
        for scope, dest_hash in optouts:
            self.blacklist.added(scope, dest_hash)
        for message in built:
            self.dispatcher.enqueue(QueuedMessage.from_plan(message))
        webhook_rows = backlog.webhooks + [row for written in optout_backlogs.values() for row in written.webhooks]
        if targets:
            self.outbox.notify(targets)
        if webhook_rows and self.on_webhook_rows is not None:
            self.on_webhook_rows([(row["id"], row["account"]) for row in webhook_rows])
        self.stats[{"optout": "optouts", "routed": "routed"}.get(status, "unroutable")] += 1
        log.info(
            "mo_stored",
            status=status,
            reason=reason,
            short_code=short_code,
            msisdn=mask(e164) if e164 else "<invalid>",
            accounts=list(targets),
            confirmations=len(built),
        )

    def _events(self, targets, mo: InboundMo, e164: str | None, short_code: str, text: str | None, body: bytes,
                optout: bool, mo_id: int, now: float) -> list[MoEvent]:
        """The MO as an event for each account it goes to (``events.py``)."""
        return [
            MoEvent(account, mo_id, now, short_code, e164 or mo.source_addr, e164 is not None,
                    1 if e164 else mo.source_ton, 1 if e164 else mo.source_npi,
                    text, body, mo.data_coding, optout)
            for account in targets
        ]

    def _confirmation_text(self, e164: str) -> str:
        opt = self.settings.optout
        country = country_of(e164)
        return opt.confirmations.get(country or "", opt.confirmation) if opt else "STOP OK"

    def _spawn(self, coro) -> None:
        self._tasks.spawn(coro)

    async def stop(self) -> None:
        await self._expiry.stop()
        await self._tasks.close()


def _default_country(settings: Settings) -> str:
    return settings.accounts[0].default_country if settings.accounts else "FR"
