"""Accepting a partner's submit_sm / data_sm: validate, plan the parts, store, answer.

Validation is synchronous and cheap (pure functions from ``routing/`` and ``protocol/``);
the only wait is the group commit. Each refusal carries the status documented in the
README. A message is never stored half: its row and all its parts go in one commit, and the
partner's ESME_ROK is sent only after that commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import phonenumbers
import structlog

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandStatus, DataCoding, EsmClass, MessageState, Tag
from protocol.errors import RemoteProtocolError
from protocol.segments import Concat, count_segments, parse_udh, sms_capacity, split
from protocol.smpptime import parse_schedule_delivery_time, parse_validity_period
from protocol.gsm7 import septet_count
from protocol.text import UnsupportedDataCoding, canonical_coding, choose_encoding, decode_text, encode_text, is_binary
from routing.category import UnknownCategory, category_for
from routing.mention import append_link, make_token, needs_mention, render_mention, unsubscribe_link, with_mention
from routing.numbers import InvalidNumber, country_of, country_of_normalized, normalize_msisdn
from routing.routes import RouteTable
from routing.senders import SenderKind, SenderNotAllowed, check_sender
from routing.windows import SendWindows
from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.schema import PART_QUEUED

from smscenter.pipeline.accounts import PartnerBind

log = structlog.get_logger("smscenter.submit")

DEFAULT_VALIDITY = 48 * 3600.0  # when the partner sets none
MAX_VALIDITY = 7 * 24 * 3600.0  # longer validity periods are shortened to this
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0  # schedule_delivery_time further out: ESME_RINVSCHED
SCHEDULE_PAST_TOLERANCE = 300.0  # clock skew we forgive on a schedule "in the past"


_UDHI = int(EsmClass.UDHI)  # a plain int: IntFlag's & runs in Python, on every submit
_NO_SAR = (None, None, None)


class Refused(Exception):
    """A submit we answer with an error status (never stored)."""

    def __init__(self, status: CommandStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


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


class SubmitPlanner:
    """Turns a partner's submit_sm/data_sm into a ``PlannedMessage`` or raises ``Refused``."""

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

    def plan(self, bind: PartnerBind, pdu: P.Pdu) -> PlannedMessage:
        account = bind.account.config
        now = self.wall_clock()
        # Who sends, to whom, what kind of message.
        try:
            category = category_for(pdu.service_type, account.category)
        except UnknownCategory as exc:
            raise Refused(CommandStatus.ESME_RINVSERTYP, str(exc)) from None
        try:
            sender_kind = check_sender(
                pdu.source_addr,
                pdu.source_addr_ton,
                short_codes=account.short_codes,
                sender_ids=account.sender_ids,
                shared_short_codes=self.shared_short_codes,
            )
        except SenderNotAllowed as exc:
            raise Refused(CommandStatus.ESME_RINVSRCADR, str(exc)) from None
        try:
            dest = normalize_msisdn(pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi, account.default_country)
        except InvalidNumber as exc:
            raise Refused(CommandStatus.ESME_RINVDSTADR, str(exc)) from None
        connectors = self.routes.connectors_for(dest, account.system_id, category)
        if not connectors:
            raise Refused(CommandStatus.ESME_RSUBMITFAIL, "no route")
        # When, and until when.
        utc_now = datetime.fromtimestamp(now, timezone.utc)
        schedule = getattr(pdu, "schedule_delivery_time", "")
        validity = getattr(pdu, "validity_period", "")
        not_before = now
        if schedule:
            when = parse_schedule_delivery_time(schedule, utc_now).timestamp()
            if when < now - SCHEDULE_PAST_TOLERANCE or when > now + MAX_SCHEDULE_AHEAD:
                raise Refused(CommandStatus.ESME_RINVSCHED, "schedule_delivery_time out of range")
            not_before = max(now, when)
        asked_expiry = None
        if validity:
            asked_expiry = parse_validity_period(validity, utc_now).timestamp()
            if asked_expiry <= max(now, not_before):
                raise Refused(CommandStatus.ESME_RINVEXPIRY, "validity_period ends before delivery can start")
        if category == "marketing" and self.windows is not None:
            decision = self.windows.decide(dest, utc_now)
            if decision.country is None:
                self._log_unknown_country(dest, decision.rule_key)
            if not decision.open:
                if account.outside_window == "reject":
                    raise Refused(CommandStatus.SMSC_RWINDOWCLOSED, "send window closed")
                # Held in the queue until the window opens; a later schedule wins. If the
                # partner's validity ends first, the queue expires it (EXPIRED receipt, never
                # sent).
                not_before = max(not_before, decision.next_open.timestamp())
        if asked_expiry is None:
            # A scheduled or held message gets its full default validity from when it may
            # go: a Saturday-evening promotion held over a holiday Monday (60 h) must not
            # expire unsent because the partner set no validity.
            expires_at = not_before + DEFAULT_VALIDITY
        else:
            expires_at = min(asked_expiry, not_before + MAX_VALIDITY)
        dest_hash = self.cipher.lookup_hash(dest)
        if self.blacklist is not None:
            if self.blacklist.invalid(dest_hash):
                raise Refused(CommandStatus.ESME_RINVDSTADR, "number reported invalid by an upstream")
            if (category == "marketing" or account.blacklist_alerts) and self.blacklist.opted_out(
                account.system_id, dest_hash, pdu.source_addr
            ):
                raise Refused(CommandStatus.SMSC_ROPTEDOUT, "recipient opted out")
        # The text (with its opt-out mention) and its parts.
        message_id = self.ids.next()
        mention = None
        if self.mention is not None:
            mention = self.mention.for_message(
                category, sender_kind is SenderKind.ALPHANUMERIC, dest, message_id
            )
        return self._build(
            message_id,
            account.system_id,
            category,
            pdu.source_addr,
            pdu.source_addr_ton,
            pdu.source_addr_npi,
            dest,
            dest_hash,
            connectors,
            self._segments(pdu, mention),
            data_coding=pdu.data_coding,
            registered=pdu.registered_delivery & 0x03,
            protocol_id=getattr(pdu, "protocol_id", 0),
            priority=getattr(pdu, "priority_flag", 0),
            now=now,
            not_before=not_before,
            expires_at=expires_at,
            unsub_token=mention.token if mention is not None else None,
        )

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
    ) -> PlannedMessage:
        """The stored rows and upstream PDUs of a validated message."""
        upstream_parts = [
            PlannedPart(
                number,
                P.SubmitSm(
                    source_addr_ton=source_ton,
                    source_addr_npi=source_npi,
                    source_addr=source_addr,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    destination_addr=dest[1:],
                    esm_class=esm_class,
                    protocol_id=protocol_id,
                    priority_flag=priority,
                    registered_delivery=1,  # we always track delivery upstream
                    data_coding=data_coding,
                    short_message=short_message,
                    tlvs=tlvs,
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
            "state": int(MessageState.ENROUTE),
            "error": 0,
            "submitted_at": now,
            "not_before": not_before,
            "expires_at": expires_at,
            "done_at": None,
            "connector": None,
            "unsub_token": unsub_token,
            "dest_country": country_of_normalized(dest),  # kept by billing once the number is purged
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
            now, registered, upstream_parts, row, part_rows,
        )

    def _segments(self, pdu: P.Pdu, mention: "Mention | None" = None) -> list[tuple[bytes, int, tuple]]:
        """(short_message, esm_class, tlvs) per upstream part.

        A short_message that already carries a UDH or SAR TLVs is one part of the partner's
        own long message: it is checked and passed on whole. Anything longer than one SMS —
        a message_payload, or a short_message over 160 GSM-7 / 140 octets — is split here
        (8-bit reference UDH): many upstreams refuse message_payload, and some truncate.
        """
        try:
            coding = canonical_coding(pdu.data_coding)
        except UnsupportedDataCoding as exc:
            raise Refused(exc.status, str(exc)) from None
        short_message = getattr(pdu, "short_message", b"")
        esm_class = getattr(pdu, "esm_class", 0)
        payload, passthrough, sar = None, (), _NO_SAR
        if pdu.tlvs:
            payload = pdu.tlv(Tag.MESSAGE_PAYLOAD)
            passthrough = tuple(
                (tag, value) for tag, value in pdu.tlvs if tag in _FORWARDED_TLVS
            )
            if payload is not None and short_message:
                raise Refused(CommandStatus.ESME_ROPTPARNOTALLWD, "short_message and message_payload together")
            sar = (pdu.tlv(Tag.SAR_MSG_REF_NUM), pdu.tlv(Tag.SAR_TOTAL_SEGMENTS), pdu.tlv(Tag.SAR_SEGMENT_SEQNUM))
            if any(v is not None for v in sar):
                if any(v is None for v in sar):
                    raise Refused(CommandStatus.ESME_RMISSINGOPTPARAM, "SAR TLVs must come as a set of three")
                try:
                    Concat.from_sar(*sar)
                except RemoteProtocolError as exc:
                    raise Refused(exc.status, str(exc)) from None
        body = payload if payload is not None else short_message
        udhi = esm_class & _UDHI
        if udhi:
            try:
                parsed = parse_udh(body)
            except RemoteProtocolError as exc:
                raise Refused(exc.status, str(exc)) from None
            text = self._check_text(parsed.body, coding)
            if payload is not None:
                raise Refused(CommandStatus.ESME_ROPTPARNOTALLWD, "message_payload with a UDH")
            if mention is not None and (parsed.concat is None or parsed.concat.seqnum == parsed.concat.total):
                udh = short_message[: len(short_message) - len(parsed.body)]
                body = _with_mention_in_part(text, coding, mention, len(udh))
                return [(udh + body, esm_class & 0xC3, passthrough)]
            return [(short_message, esm_class & 0xC3, passthrough)]
        text_or_bytes = self._check_text(body, coding)
        if sar[0] is not None:  # one part of the partner's own long message
            if len(body) > 254:
                raise Refused(CommandStatus.ESME_RINVMSGLEN, "a SAR segment longer than a short_message")
            if mention is not None and sar[1] == sar[2]:  # the last part carries the mention
                body = _with_mention_in_part(text_or_bytes, coding, mention, 6)  # upstream adds a UDH
            return [(body, esm_class & 0xC3, passthrough)]
        if mention is not None and not is_binary(coding):
            text_or_bytes = mention.apply(text_or_bytes)
            body = encode_text(text_or_bytes, coding)
        if len(body) <= sms_capacity(coding):
            # One SMS, without counting: decoding never makes a text longer to encode again
            # (a GSM-7 escape pair is one character of two septets), so the octets as they
            # came (or as just encoded with the mention) are the upper bound.
            return [(body, esm_class & 0xC3, passthrough)]
        try:
            count = count_segments(text_or_bytes, coding)
        except Exception as exc:  # noqa: BLE001 - text the coding cannot hold
            raise Refused(CommandStatus.ESME_RINVMSGLEN, str(exc)) from None
        if count == 1:
            return [(body, esm_class & 0xC3, passthrough)]
        # Longer than one SMS (a message_payload, or a short_message over 160 GSM / 140
        # octets): split here with an 8-bit reference UDH rather than leave the upstream to
        # refuse or truncate it.
        self._ref = (self._ref + 1) & 0xFF
        try:
            segments = split(text_or_bytes, coding, method="udh8", reference=self._ref)
        except RemoteProtocolError as exc:
            raise Refused(exc.status, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - e.g. more than 255 parts
            raise Refused(CommandStatus.ESME_RINVMSGLEN, str(exc)) from None
        udh = EsmClass.UDHI if len(segments) > 1 else 0
        return [(seg.short_message, (esm_class & 0x83) | udh, passthrough) for seg in segments]

    @staticmethod
    def _check_text(body: bytes, coding: int) -> str | bytes:
        if is_binary(coding):
            return body
        try:
            return decode_text(body, coding)
        except RemoteProtocolError as exc:
            raise Refused(exc.status, str(exc)) from None


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


def _with_mention_in_part(text: str | bytes, coding: int, mention: Mention, udh_len: int) -> bytes:
    """The last part of a partner-segmented message with the mention appended, if it fits
    in the part (else ESME_RINVMSGLEN: we never send marketing without its mention, nor
    truncate silently)."""
    if is_binary(coding):
        raise Refused(CommandStatus.ESME_RINVMSGLEN, "binary marketing cannot carry the STOP mention")
    new_text = mention.apply(text)
    body = encode_text(new_text, coding)
    if coding == DataCoding.DEFAULT:
        room = (140 - udh_len) * 8 // 7
        size = septet_count(new_text)
    else:
        room, size = 140 - udh_len, len(body)
    if size > room:
        raise Refused(CommandStatus.ESME_RINVMSGLEN, "no room for the STOP mention in the last part")
    return body


_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

#: TLVs a partner may set that travel upstream with each part.
_FORWARDED_TLVS = frozenset(
    {
        Tag.SAR_MSG_REF_NUM,
        Tag.SAR_TOTAL_SEGMENTS,
        Tag.SAR_SEGMENT_SEQNUM,
        Tag.SOURCE_PORT,
        Tag.DESTINATION_PORT,
        Tag.USER_MESSAGE_REFERENCE,
        Tag.LANGUAGE_INDICATOR,
        Tag.PAYLOAD_TYPE,
        Tag.MS_VALIDITY,
    }
)


def with_source(pdu: P.SubmitSm, ton: int, npi: int, dest: tuple[int, int] | None = None) -> P.SubmitSm:
    """The part as a given connector wants its source TON/NPI (and, if given, the
    destination's [ton, npi]: the connector's ``dest_ton_npi``)."""
    changes = {}
    if pdu.source_addr_ton != ton or pdu.source_addr_npi != npi:
        changes.update(source_addr_ton=ton, source_addr_npi=npi)
    if dest is not None and (pdu.dest_addr_ton, pdu.dest_addr_npi) != tuple(dest):
        changes.update(dest_addr_ton=dest[0], dest_addr_npi=dest[1])
    return replace(pdu, **changes) if changes else pdu
