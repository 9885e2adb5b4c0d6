"""Planning a submit: every policy, once, on a door's ``SubmitRequest``.

The core of the submit path, for every door (the SMPP glue in ``smpp_submit.py`` builds the
request from submit_sm / data_sm / submit_multi): the account's limits, its category and
sender rights, each destination's number, route, send window, blacklist and opt-out
mention, then the parts. Validation is synchronous and cheap (pure functions from
``routing/`` and ``protocol/``); the only wait, the group commit, is the pipeline's. A
refusal is a neutral ``Refused`` (``request.py``) that each door maps to its own answer. A
message is never stored half: its row and all its parts go in one commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import phonenumbers
import structlog

from protocol import codec
from protocol import pdu as P
from protocol.constants import DataCoding, EsmClass, MessageState
from protocol.segments import sms_capacity, split
from protocol.text import TextEncodeError, UnsupportedDataCoding, canonical_coding, choose_encoding, encode_text
from routing.category import UnknownCategory, category_for
from routing.mention import append_link, make_token, needs_mention, render_mention, unsubscribe_link, with_mention
from routing.numbers import InvalidNumber, country_of, country_of_normalized, normalize_msisdn
from routing.routes import RouteTable
from routing.senders import SenderKind, SenderNotAllowed, check_sender_of_kind
from routing.windows import SendWindows
from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.schema import PART_QUEUED

from smscenter.pipeline.request import Refusal, Refused, SubmitRequest

log = structlog.get_logger("smscenter.submit")

DEFAULT_VALIDITY = 48 * 3600.0  # when the client sets none
MAX_VALIDITY = 7 * 24 * 3600.0  # longer validity periods are shortened to this
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0  # a schedule further out is refused
SCHEDULE_PAST_TOLERANCE = 300.0  # clock skew we forgive on a schedule "in the past"


_UDHI = int(EsmClass.UDHI)  # a plain int: IntFlag's | runs in Python, on every submit
#: Read once: an Enum member looked up on its class costs ~1,000 instructions a time.
_ENROUTE = int(MessageState.ENROUTE)


@dataclass(slots=True)
class PlannedPart:
    part_no: int
    pdu: P.SubmitSm  # what goes upstream (source TON/NPI adapted per connector at send time)


@dataclass(slots=True)
class PlannedMessage:
    """A validated message: what is stored, and what the dispatcher sends."""

    id: int
    account: str
    category: str
    dest: str  # E.164
    dest_hash: bytes
    connectors: tuple[str, ...]
    not_before: float
    expires_at: float
    submitted_at: float
    registered_delivery: int
    parts: list[PlannedPart]
    row: dict
    part_rows: list[dict]
    multi_id: int | None = None  # the id of the multi request it belongs to, if any


def admit(account, pending: int, now: float, messages: int = 1) -> Refused | None:
    """The account's limits, checked by each door where a request enters (the SMPP server:
    every request of a bound session, before its PDU is read further): its requests
    awaiting an answer, this one included, over its ``window`` → ``QUEUE_FULL``; over its
    ``throughput`` (a token of ``account.bucket`` per message the request asks for, taken
    at ``now``, the door's monotonic time) → ``RATE_EXCEEDED``. None: go on.

    A request to ``messages`` destinations (a submit_multi) costs as many submits of the
    throughput; it is still one request of the window (one PDU awaiting one answer). One
    bigger than the bucket's burst goes when the bucket is full and leaves it in debt, so
    that the account's next requests wait for its cost: refused whole, it could never pass."""
    if pending > account.config.window:
        return Refused(Refusal.QUEUE_FULL, "over the account's window")
    bucket = account.bucket
    if messages == 1:
        if not bucket.try_take(now):
            return Refused(Refusal.RATE_EXCEEDED, "over the account's throughput")
    elif not bucket.try_take(now, min(messages, bucket.burst)):
        return Refused(Refusal.RATE_EXCEEDED, "over the account's throughput")
    elif messages > bucket.burst:
        bucket.owe(messages - bucket.burst)
    return None


class SubmitPlanner:
    """Turns a ``SubmitRequest`` into a ``PlannedMessage`` per destination, or ``Refused``."""

    def __init__(
        self,
        routes: RouteTable,
        cipher: FieldCipher,
        ids: IdGenerator,
        *,
        shared_short_codes: tuple[str, ...] = (),
        blacklist=None,
        windows: SendWindows | None = None,
        mention: MentionPolicy | None = None,
        wall_clock=time.time,
    ) -> None:
        self.routes = routes
        self.blacklist = blacklist  # smscenter.pipeline.blacklist.Blacklist: opt-outs, invalid numbers
        self.windows = windows  # marketing send windows; None: always open
        self.mention = mention  # the STOP mention / unsubscribe link; None: never added
        self.cipher = cipher
        self.ids = ids
        self.shared_short_codes = shared_short_codes
        self.wall_clock = wall_clock
        self._ref = 0
        self._unknown_country_logged: set[str] = set()

    def plan(self, request: SubmitRequest) -> list[PlannedMessage | Refused]:
        """One ``PlannedMessage`` per destination, in order, or the ``Refused`` of that
        destination. What holds for the whole request (category, sender, text) raises."""
        account = request.account.config
        now = self.wall_clock()
        # Who sends, what kind of message.
        try:
            category = category_for(request.category, account.category)
        except UnknownCategory as exc:
            raise Refused(Refusal.UNKNOWN_CATEGORY, str(exc), "category") from None
        try:
            sender_kind = check_sender_of_kind(
                request.source,
                request.source_kind,
                short_codes=account.short_codes,
                sender_ids=account.sender_ids,
                shared_short_codes=self.shared_short_codes,
            )
        except SenderNotAllowed as exc:
            raise Refused(Refusal.SENDER_NOT_ALLOWED, str(exc), "source") from None
        data_coding = request.data_coding
        if data_coding is None:
            text = request.text
            data_coding = DataCoding.BINARY if isinstance(text, bytes) else choose_encoding(text)
        try:
            coding = canonical_coding(data_coding)
        except UnsupportedDataCoding as exc:
            raise Refused(Refusal.BAD_INPUT, str(exc), "data_coding") from None
        # When, and until when: checked once, answered after each destination's own checks.
        if request.schedule is None and request.validity is None:
            when: tuple[float, float | None] | Refused = (now, None)
        else:
            when = self._when(request, now)
        source_ton, source_npi = request.source_ton_npi()
        plans: list[PlannedMessage | Refused] = []
        # A multi request's one id, drawn before its messages' (unused if all are refused).
        multi_id = self.ids.next() if request.multi else None
        plain = None  # the parts without a mention: the same for every destination
        for destination in request.destinations:
            try:
                dest = normalize_msisdn(destination.addr, destination.ton, destination.npi, account.default_country)
            except InvalidNumber as exc:
                plans.append(Refused(Refusal.INVALID_NUMBER, str(exc), "destination"))
                continue
            connectors = self.routes.connectors_for(dest, account.system_id, category)
            if not connectors:
                plans.append(Refused(Refusal.NO_ROUTE, "no route"))
                continue
            if type(when) is Refused:
                plans.append(when)
                continue
            not_before, asked_expiry = when
            try:
                if category == "marketing" and self.windows is not None:
                    not_before = self._window(account, dest, now, not_before)
                if asked_expiry is None:
                    # A scheduled or held message gets its full default validity from when it
                    # may go: a Saturday-evening promotion held over a holiday Monday (60 h)
                    # must not expire unsent because the client set no validity.
                    expires_at = not_before + DEFAULT_VALIDITY
                else:
                    expires_at = min(asked_expiry, not_before + MAX_VALIDITY)
                dest_hash = self.cipher.lookup_hash(dest)
                if self.blacklist is not None:
                    if self.blacklist.invalid(dest_hash):
                        raise Refused(Refusal.INVALID_NUMBER, "number reported invalid by an upstream", "destination")
                    if (category == "marketing" or account.blacklist_alerts) and self.blacklist.opted_out(
                        account.system_id, dest_hash, request.source
                    ):
                        raise Refused(Refusal.OPTED_OUT, "recipient opted out", "destination")
                # The text (with its opt-out mention) and its parts.
                message_id = self.ids.next()
                mention = None
                if self.mention is not None:
                    mention = self.mention.for_message(
                        category, sender_kind is SenderKind.ALPHANUMERIC, dest, message_id
                    )
                if mention is None:
                    if plain is None:
                        plain = self._segments(request, data_coding, coding, None)
                    segments = plain
                else:
                    segments = self._segments(request, data_coding, coding, mention)
            except Refused as exc:
                plans.append(exc)
                continue
            plans.append(self._build(
                message_id,
                account.system_id,
                category,
                request.source,
                source_ton,
                source_npi,
                dest,
                dest_hash,
                connectors,
                segments,
                data_coding=data_coding,
                registered=int(request.receipt),
                protocol_id=request.passthrough.protocol_id,
                priority=request.passthrough.priority,
                now=now,
                not_before=not_before,
                expires_at=expires_at,
                unsub_token=mention.token if mention is not None else None,
                multi_id=multi_id,
            ))
        return plans

    @staticmethod
    def _when(request: SubmitRequest, now: float) -> tuple[float, float | None] | Refused:
        """(not_before, the expiry asked) of the request's schedule and validity, or why not."""
        not_before = now
        schedule = request.schedule
        if schedule is not None:
            if schedule < now - SCHEDULE_PAST_TOLERANCE or schedule > now + MAX_SCHEDULE_AHEAD:
                return Refused(Refusal.BAD_INPUT, "schedule out of range", "schedule")
            not_before = max(now, schedule)
        asked_expiry = request.validity
        if asked_expiry is not None and asked_expiry <= max(now, not_before):
            return Refused(Refusal.BAD_INPUT, "validity ends before delivery can start", "validity")
        return not_before, asked_expiry

    def _window(self, account, dest: str, now: float, not_before: float) -> float:
        """When a marketing message may go: at its window's next opening if it is closed
        now (a later schedule wins), or refused if the account asked so."""
        decision = self.windows.decide(dest, datetime.fromtimestamp(now, timezone.utc))
        if decision.country is None:
            self._log_unknown_country(dest, decision.rule_key)
        if decision.open:
            return not_before
        if account.outside_window == "reject":
            raise Refused(Refusal.OUTSIDE_WINDOW, "send window closed")
        # Held in the queue until the window opens. If the client's validity ends first,
        # the queue expires it (EXPIRED receipt, never sent).
        return max(not_before, decision.next_open.timestamp())

    def _log_unknown_country(self, dest: str, rule_key: str) -> None:
        """A number with no known country gets the default window rule: said once per
        calling code (e.g. +882 international networks), with no number in the log."""
        digits = dest.lstrip("+")
        code = next((digits[:n] for n in (1, 2, 3) if digits[:n] in _CALLING_CODES), digits[:3])
        if code not in self._unknown_country_logged:
            self._unknown_country_logged.add(code)
            log.warning("window_unknown_country", calling_code="+" + code, rule=rule_key)

    def system_message(self, account: str, short_code: str, dest: str, text: str) -> PlannedMessage | None:
        """A message the platform sends itself (an opt-out confirmation): category alert,
        from ``short_code``, no receipt asked, routed like any alert. None if no route."""
        connectors = self.routes.connectors_for(dest, account, "alert")
        if not connectors:
            return None
        coding = choose_encoding(text)
        self._ref = (self._ref + 1) & 0xFF
        segments = split(text, coding, method="udh8", reference=self._ref)
        udhi = EsmClass.UDHI if len(segments) > 1 else 0
        now = self.wall_clock()
        return self._build(
            self.ids.next(), account, "alert", short_code, 3, 0, dest, self.cipher.lookup_hash(dest), connectors,
            [(seg.short_message, udhi, ()) for seg in segments],
            data_coding=coding, registered=0, protocol_id=0, priority=0,
            now=now, not_before=now, expires_at=now + DEFAULT_VALIDITY,
        )

    def _build(
        self,
        message_id: int,
        account: str,
        category: str,
        source_addr: str,
        source_ton: int,
        source_npi: int,
        dest: str,
        dest_hash: bytes,
        connectors: tuple[str, ...],
        segments: list[tuple[bytes, int, tuple]],
        *,
        data_coding: int,
        registered: int,
        protocol_id: int,
        priority: int,
        now: float,
        not_before: float,
        expires_at: float,
        unsub_token: str | None = None,
        multi_id: int | None = None,
    ) -> PlannedMessage:
        """The stored rows and upstream PDUs of a validated message."""
        upstream_parts = [
            PlannedPart(
                number,
                # Positional, in the fields' order (header, then ``_SM_BODY``): a class
                # called with keywords builds a dict of them for its ``__init__``.
                P.SubmitSm(
                    0,  # sequence_number: the connector's, at send time
                    0,  # command_status
                    tlvs,
                    "",  # service_type
                    source_ton,
                    source_npi,
                    source_addr,
                    1,  # dest_addr_ton: international
                    1,  # dest_addr_npi: E.164
                    dest[1:],  # destination_addr, without its "+"
                    esm_class,
                    protocol_id,
                    priority,  # priority_flag
                    "",  # schedule_delivery_time: we hold the message ourselves
                    "",  # validity_period: we expire it ourselves
                    1,  # registered_delivery: we always track delivery upstream
                    0,  # replace_if_present_flag
                    data_coding,
                    0,  # sm_default_msg_id
                    short_message,
                ),
            )
            for number, (short_message, esm_class, tlvs) in enumerate(segments, start=1)
        ]
        row = {
            "id": message_id,
            "account": account,
            "category": category,
            "source_addr": source_addr,
            "source_ton": source_ton,
            "source_npi": source_npi,
            "dest_hash": dest_hash,
            "dest_enc": self.cipher.encrypt(dest.encode(), b"dest:%d" % message_id),
            "data_coding": data_coding,
            "registered_delivery": registered,
            "priority": priority,
            "parts_total": len(upstream_parts),
            "state": _ENROUTE,
            "error": 0,
            "submitted_at": now,
            "not_before": not_before,
            "expires_at": expires_at,
            "done_at": None,
            "connector": None,
            "unsub_token": unsub_token,
            "dest_country": country_of_normalized(dest),  # kept by billing once the number is purged
            "multi_id": multi_id,
        }
        part_rows = [
            {
                "message_id": message_id,
                "part_no": part.part_no,
                "pdu_enc": self.cipher.encrypt(codec.encode(part.pdu), b"part:%d:%d" % (message_id, part.part_no)),
                "state": PART_QUEUED,
                "connector": None,
                "upstream_id": None,
                "attempts": 0,
                # When the queue next looks at it: at its schedule (or window), or at its
                # validity's end if that comes first, to expire it.
                "next_attempt_at": min(not_before, expires_at),
                "updated_at": now,
            }
            for part in upstream_parts
        ]
        return PlannedMessage(
            message_id, account, category, dest, dest_hash, connectors, not_before, expires_at,
            now, registered, upstream_parts, row, part_rows, multi_id,
        )

    def _segments(
        self, request: SubmitRequest, data_coding: int, coding: DataCoding, mention: Mention | None
    ) -> list[tuple[bytes, int, tuple]]:
        """(short_message, esm_class, tlvs) per upstream part.

        A request that is one part of the client's own long message (``own_part``) goes on
        as one part, its header in front. Anything longer than one SMS is split here (8-bit
        reference UDH): many upstreams refuse message_payload, and some truncate. The text
        is encoded at most once, and counted and split from that encoding; when nothing is
        added to it, the octets the door received (if any) go as they came.
        """
        passthrough = request.passthrough
        text, octets = request.text, request.octets
        own = request.own_part
        if own is not None:
            esm_class = passthrough.esm_class | _UDHI if own.header else passthrough.esm_class
            if mention is not None and own.last:
                body = _with_mention_in_part(text, coding, mention, own.room)
            else:
                body = octets if octets is not None else _encode(text, data_coding)
            return [(own.header + body, esm_class, passthrough.tlvs)]
        if mention is not None and coding is not DataCoding.BINARY:
            text, octets = mention.apply(text), None
        capacity = sms_capacity(coding)
        if octets is not None and len(octets) <= capacity:
            # One SMS, without encoding or counting: decoding never makes a text longer to
            # encode again (a GSM-7 escape pair is one character of two septets), so the
            # octets as they came are the upper bound.
            return [(octets, passthrough.esm_class, passthrough.tlvs)]
        data = _encode(text, data_coding)
        if len(data) <= capacity:
            return [(octets if octets is not None else data, passthrough.esm_class, passthrough.tlvs)]
        # Longer than one SMS (a message_payload, or a short_message over 160 GSM / 140
        # octets): split here with an 8-bit reference UDH rather than leave the upstream to
        # refuse or truncate it.
        self._ref = (self._ref + 1) & 0xFF
        try:
            segments = split(data, data_coding, method="udh8", reference=self._ref)
        except Exception as exc:  # noqa: BLE001 - e.g. more than 255 parts
            raise Refused(Refusal.TEXT_TOO_LONG, str(exc), "text") from None
        udh = _UDHI if len(segments) > 1 else 0
        return [(seg.short_message, (passthrough.esm_class & 0x83) | udh, passthrough.tlvs) for seg in segments]


@dataclass(frozen=True, slots=True)
class Mention:
    """The opt-out text a given message gets, and the unsubscribe token it carries."""

    kind: str  # "stop" | "link"
    text: str  # the mention itself, e.g. "STOP au 36180" or "STOP: https://x.fr/u/Ab3dE6x"
    short_code: str | None
    token: str | None = None

    def apply(self, text: str) -> str:
        if self.kind == "link":
            return text if self.text in text else (text + "\n" + self.text if text else self.text)
        return with_mention(text, self.text, "\n", self.short_code)


class MentionPolicy:
    """Decides and renders the opt-out mention for marketing from alphanumeric senders."""

    def __init__(self, template: str, short_code: str, unsubscribe_base: str | None, token_secret: bytes) -> None:
        self.stop_text = render_mention(template, short_code)
        self.short_code = short_code
        self.unsubscribe_base = unsubscribe_base
        self.token_secret = token_secret

    def for_message(self, category: str, alphanumeric: bool, dest: str, message_id: int) -> Mention | None:
        kind = needs_mention(category, alphanumeric, country_of(dest))
        if kind is None:
            return None
        if kind == "stop" or self.unsubscribe_base is None:
            # Without an unsubscribe page, a STOP mention is still better than none.
            return Mention("stop", self.stop_text, self.short_code)
        token = make_token(message_id, self.token_secret, length=8)
        return Mention("link", append_link("", unsubscribe_link(self.unsubscribe_base, token)), None, token)


def _with_mention_in_part(text: str | bytes, coding: DataCoding, mention: Mention, room: int) -> bytes:
    """The last part of a client-segmented message with the mention appended, if it fits
    in the part's ``room`` octets (else refused: we never send marketing without its
    mention, nor truncate silently)."""
    if coding is DataCoding.BINARY:
        raise Refused(Refusal.BAD_INPUT, "binary marketing cannot carry the STOP mention", "text")
    new_text = mention.apply(text)
    body = encode_text(new_text, coding)
    if coding is DataCoding.DEFAULT:
        room, size = room * 8 // 7, len(body)  # unpacked GSM-7: one octet per septet
    else:
        size = len(body)
    if size > room:
        raise Refused(Refusal.TEXT_TOO_LONG, "no room for the STOP mention in the last part", "text")
    return body


def _encode(text: str | bytes, data_coding: int) -> bytes:
    """The text's octets in ``data_coding`` (binary bodies are their own octets)."""
    if isinstance(text, bytes):
        return text
    try:
        return encode_text(text, data_coding)
    except TextEncodeError as exc:
        raise Refused(Refusal.BAD_INPUT, str(exc), "text") from None


_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

def with_source(pdu: P.SubmitSm, ton: int, npi: int, dest: tuple[int, int] | None = None) -> P.SubmitSm:
    """The part as a given connector wants its source TON/NPI (and, if given, the
    destination's [ton, npi]: the connector's ``dest_ton_npi``)."""
    changes = {}
    if pdu.source_addr_ton != ton or pdu.source_addr_npi != npi:
        changes.update(source_addr_ton=ton, source_addr_npi=npi)
    if dest is not None and (pdu.dest_addr_ton, pdu.dest_addr_npi) != tuple(dest):
        changes.update(dest_addr_ton=dest[0], dest_addr_npi=dest[1])
    return replace(pdu, **changes) if changes else pdu
