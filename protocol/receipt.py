"""Delivery receipts: the SMPP 3.4 Appendix B text, the receipt TLVs, and id normalisation.

A delivery receipt is a ``deliver_sm`` (``esm_class`` bit 0x04) whose ``short_message``
carries a line such as::

    id:0123456789 sub:001 dlvrd:001 submit date:0809011130 done date:0809011131 stat:DELIVRD err:000 text:Hello

Appendix B calls this format "vendor specific" and only gives it as an example, so upstream
SMSCs vary: keys in upper or mixed case (``ID:``, ``Text:``, ``Submit Date:``,
``submit_date:``), extra or missing spaces, fields in another order or missing, 12-digit
dates with seconds, ids in hex on one side and decimal on the other, trailing NULs. Hence
two halves that deliberately differ:

* :func:`format_receipt` writes one canonical form, the one every partner stack parses
  (Kannel, Jasmin, smpplib users with a regex copied from the spec).
* :func:`parse_receipt` accepts whatever an upstream sends and never raises anything but
  :class:`ReceiptParseError`, whatever the input.

SMPP 3.4 also defines TLVs for receipts (``receipted_message_id``, ``message_state``,
``network_error_code``); when an upstream sends both, the TLVs are the structured truth and
win over the text for the id and the state (:func:`merge`).

Correlating an upstream receipt with the message we forwarded is keyed by (connector,
normalised upstream id). :func:`normalize_resp_id` and :func:`normalize_dlr_id` map the id
from ``submit_sm_resp`` and the id in the receipt to one canonical string, per connector
mode, which fixes the classic hex-in-``submit_sm_resp`` / decimal-in-receipt mix-up.

Pure functions over values: no I/O, no clock.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime

from .constants import CommandStatus, EsmClass, MessageState, Tag
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ID_MODES",
    "error_code",
    "fast_receipt_fields",
    "is_receipt",
    "read_receipt",
    "MessageIdError",
    "clean_message_id",
    "Receipt",
    "ReceiptParseError",
    "format_receipt",
    "merge",
    "normalize_dlr_id",
    "normalize_message_id",
    "normalize_resp_id",
    "parse_network_error",
    "parse_receipt",
    "receipt_from_tlvs",
    "receipt_tlvs",
    "usual_receipt",
    "stat_for_state",
    "state_for_stat",
]


class ReceiptParseError(RemoteProtocolError):
    """The text of a receipt could not be understood (no ``id:``, or not a receipt at all).

    Callers must still acknowledge the ``deliver_sm`` with ESME_ROK and handle it as an
    unmatched receipt (or as MO, if ``esm_class`` did not say "receipt"): answering an
    upstream's receipt with an error makes most SMSCs retry it forever, blocking their
    window. ``status`` is only used if a caller does decide to answer with an error.

    The message deliberately never quotes the input: it may hold message text, which is
    personal data and must stay out of logs.
    """

    status = CommandStatus.ESME_RUNKNOWNERR


class MessageIdError(ValueError):
    """A message id does not fit the connector's id mode (e.g. ``"xyz"`` in hex mode)."""


# --------------------------------------------------------------------------------------
# stat words <-> message_state

_STAT_BY_STATE: dict[MessageState, str] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}

# Input only: the spec's 7-letter words, the message_state names (long forms), and a few
# spellings seen from real SMSCs. Keys are upper case; lookups upper-case their input.
_STATE_BY_WORD: dict[str, MessageState] = {
    **{word: state for state, word in _STAT_BY_STATE.items()},
    **{state.name: state for state in MessageState},
    "EN_ROUTE": MessageState.ENROUTE,
    "UNDELIVERED": MessageState.UNDELIVERABLE,
    "FAILED": MessageState.UNDELIVERABLE,
}


def stat_for_state(state: MessageState | int) -> str:
    """The canonical 7-character ``stat:`` word for a ``message_state``."""
    return _STAT_BY_STATE[MessageState(state)]


def state_for_stat(word: str) -> MessageState:
    """The ``message_state`` for a stat word, short (``DELIVRD``) or long (``DELIVERED``),
    in any case. Raises ``ValueError`` for a word we do not know."""
    try:
        return _STATE_BY_WORD[word.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown receipt stat {word!r}") from None


# --------------------------------------------------------------------------------------
# the receipt value


@dataclass(frozen=True, slots=True)
class Receipt:
    """One delivery receipt, independent of how it travelled (text, TLVs or both).

    Everything after ``message_id`` is keyword-only. Construction normalises:

    * ``stat`` may be given as any accepted word (``"delivered"``) or as a
      :class:`MessageState`; it is stored as the canonical 7-character word.
    * ``dlvrd`` left as ``None`` becomes 1 for DELIVRD and 0 otherwise (one-part message).
    * ``err`` may be given as an int; it is stored as the string written on the wire
      (``7`` -> ``"007"``). Strings are kept as received (some SMSCs send ``"0"`` or
      longer codes) and padded to three characters only when formatted.

    ``text`` is the start of the original message (Appendix B: first 20 characters). It is
    personal data: left out of ``repr`` and best left empty in receipts we send unless the
    partner asks for it. Dates are naive, in whatever zone the SMSC used (the spec does not
    say which).
    """

    message_id: str
    _: KW_ONLY
    sub: int = 1
    dlvrd: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    stat: str | MessageState = "UNKNOWN"
    err: str | int = "000"
    text: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.message_id, str) or not self.message_id:
            raise ValueError("receipt message_id must be a non-empty string")
        if isinstance(self.stat, MessageState):
            stat = _STAT_BY_STATE[self.stat]
        else:
            stat = _STAT_BY_STATE[state_for_stat(self.stat)]
        object.__setattr__(self, "stat", stat)
        if self.dlvrd is None:
            object.__setattr__(self, "dlvrd", 1 if stat == "DELIVRD" else 0)
        if isinstance(self.err, int):
            object.__setattr__(self, "err", f"{self.err:03d}")
        if self.sub < 0 or self.dlvrd < 0:  # type: ignore[operator]
            raise ValueError("receipt sub and dlvrd must not be negative")

    @property
    def state(self) -> MessageState:
        """The ``message_state`` this receipt reports."""
        return _STATE_BY_WORD[self.stat]  # type: ignore[index]

    @property
    def is_final(self) -> bool:
        """True when no further receipt is expected (not ENROUTE/ACCEPTD/UNKNOWN)."""
        return self.state.is_final


# --------------------------------------------------------------------------------------
# text: writing


def _format_date(value: datetime | None, seconds: bool) -> str:
    # Appendix B has no "unknown date". Zeros keep the field's width (so fixed-position
    # parsers still work) and parse back as None.
    if value is None:
        return "0" * (12 if seconds else 10)
    # What strftime("%y%m%d%H%M[%S]") writes, a third of its cost.
    if seconds:
        return "%02d%02d%02d%02d%02d%02d" % (
            value.year % 100, value.month, value.day, value.hour, value.minute, value.second
        )
    return "%02d%02d%02d%02d%02d" % (value.year % 100, value.month, value.day, value.hour, value.minute)


def _clean_text(text: str) -> str:
    """The ``text:`` field as we send it: 20 characters, control characters (CR, LF, NUL…)
    replaced by spaces so the receipt stays one line and a C-string."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text[:20])


def format_receipt(r: Receipt, *, seconds: bool = False) -> str:
    """Write ``r`` in the canonical Appendix B form.

    Dates are ``YYMMDDhhmm`` (10 digits), or ``YYMMDDhhmmss`` with ``seconds=True`` for
    partners that want them. ``text`` is cut to 20 characters. Encoding the result into
    ``short_message`` (GSM 03.38, Latin-1…) is the codec's job.
    """
    if any(c.isspace() for c in r.message_id):
        raise LocalProtocolError("receipt message_id must not contain whitespace")
    err = r.err if isinstance(r.err, str) else f"{r.err:03d}"
    return (
        f"id:{r.message_id} sub:{r.sub:03d} dlvrd:{r.dlvrd:03d}"
        f" submit date:{_format_date(r.submit_date, seconds)}"
        f" done date:{_format_date(r.done_date, seconds)}"
        f" stat:{r.stat} err:{err.zfill(3)} text:{_clean_text(r.text)}"
    )


# --------------------------------------------------------------------------------------
# text: reading

# A key is a known field name, not glued to a preceding letter/digit (so "paid:" is not
# "id:"), with optional blanks before the colon. Spellings seen in the wild: "submit date",
# "Submit Date", "submit_date", "submitdate"; "stat"/"state"/"status".
_KEY = re.compile(
    r"(?<![A-Za-z0-9_])"
    r"(?P<key>id|sub|dlvrd|dlvd|submit[ \t_]*date|done[ \t_]*date|stat(?:e|us)?|err|text)"
    r"[ \t]*:",
    re.IGNORECASE,
)
_EOL = re.compile(r"[\r\n]")
_COUNT = re.compile(r"[0-9]{1,9}")  # ASCII only: str.isdigit() also accepts "²"
_DATE = re.compile(r"[0-9]{10}|[0-9]{12}|[0-9]{14}")


def _canonical_key(raw: str) -> str:
    key = re.sub(r"[ \t_]", "", raw.lower())
    return {
        "dlvd": "dlvrd",
        "submitdate": "submit_date",
        "donedate": "done_date",
        "state": "stat",
        "status": "stat",
    }.get(key, key)


def _parse_date(token: str) -> datetime | None:
    """``YYMMDDhhmm``, ``YYMMDDhhmmss`` (years 2000-2099) or ``YYYYMMDDhhmmss``; None when
    absent or impossible (month 13, all zeros): a bad date must not lose the receipt."""
    if not _DATE.fullmatch(token):
        return None
    if len(token) == 14:
        year, rest = int(token[:4]), token[4:]
    else:
        year, rest = 2000 + int(token[:2]), token[2:]
    parts = [int(rest[i : i + 2]) for i in range(0, len(rest), 2)]
    month, day, hour, minute = parts[:4]
    second = parts[4] if len(parts) > 4 else 0
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _fields(text: str) -> dict[str, str]:
    """Split receipt text into ``{canonical key: raw value}``.

    Keys are found anywhere, in any order. Every value is the first blank-separated token
    between its colon and the next key (so ``id: sub:001`` gives an empty id, not
    ``sub:001``), except ``text``, which takes the rest of its line, spaces and colons
    included; keys inside it are not keys. The first occurrence of a key wins.
    """
    found: list[tuple[str, re.Match[str], int]] = []  # (key, match, end of value region)
    pos = 0
    while (m := _KEY.search(text, pos)) is not None:
        key = _canonical_key(m.group("key"))
        if key == "text":
            eol = _EOL.search(text, m.end())
            end = eol.start() if eol else len(text)
            found.append((key, m, end))
            pos = end
        else:
            found.append((key, m, -1))
            pos = m.end()

    values: dict[str, str] = {}
    for i, (key, m, end) in enumerate(found):
        if end < 0:  # ordinary field: up to the next key, first token of that
            end = found[i + 1][1].start() if i + 1 < len(found) else len(text)
            tokens = text[m.end() : end].split()
            value = tokens[0] if tokens else ""
        else:
            value = text[m.end() : end].strip()
        values.setdefault(key, value)
    return values


def parse_receipt(text: str | bytes) -> Receipt:
    """Read the text of a receipt from an upstream, as tolerantly as is safe.

    Accepts keys in any case and spelling variant, any spacing, any field order, 10- or
    12-digit dates (14-digit ``YYYYMMDDhhmmss`` too), trailing NULs. ``bytes`` are decoded
    as Latin-1, which never fails and keeps ids and digits intact whatever the real
    encoding of ``text:``. Missing fields take defaults (sub 1, dlvrd from stat, dates
    None, stat UNKNOWN, err "000", text ""); unknown stat words become UNKNOWN; the id is
    kept exactly as on the wire (normalise it with :func:`normalize_dlr_id`).

    Raises :class:`ReceiptParseError`, and nothing else, when there is no non-empty
    ``id:`` or no other receipt field beside it: a user's MO "my id: 42" is not a receipt.
    ``text:`` alone does not count as a receipt field.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("latin-1")
    elif not isinstance(text, str):
        raise ReceiptParseError("receipt must be str or bytes")
    values = _fields(text.rstrip("\x00"))

    message_id = values.get("id", "")
    if not message_id:
        raise ReceiptParseError("receipt has no id")
    if not values.keys() - {"id", "text"}:
        raise ReceiptParseError("text has an id but no other receipt field")

    state = _STATE_BY_WORD.get(values.get("stat", "").upper(), MessageState.UNKNOWN)
    sub = values.get("sub", "")
    dlvrd = values.get("dlvrd", "")
    return Receipt(
        message_id,
        sub=int(sub) if _COUNT.fullmatch(sub) else 1,
        dlvrd=int(dlvrd) if _COUNT.fullmatch(dlvrd) else None,
        submit_date=_parse_date(values.get("submit_date", "")),
        done_date=_parse_date(values.get("done_date", "")),
        stat=state,
        err=values.get("err") or "000",
        text=values.get("text", ""),
    )


# --------------------------------------------------------------------------------------
# TLVs


def receipt_tlvs(
    message_id: str,
    state: MessageState,
    network_error: tuple[int, int] | None = None,
) -> list[tuple[int, object]]:
    """The TLVs a receipt ``deliver_sm`` should carry besides its text (SMPP 3.4 §5.3.2).

    ``network_error`` is ``(network_type, error_code)``: type 1 ANSI-136, 2 IS-95, 3 GSM;
    encoded as one octet of type and two octets of code, big-endian.
    """
    if not 1 <= len(message_id) <= 64:  # C-octet string of at most 65 with its NUL
        raise LocalProtocolError("receipted_message_id must be 1 to 64 characters")
    tlvs: list[tuple[int, object]] = [
        (Tag.RECEIPTED_MESSAGE_ID, message_id),
        (Tag.MESSAGE_STATE, int(MessageState(state))),
    ]
    if network_error is not None:
        network_type, error_code = network_error
        if not (0 <= network_type <= 0xFF and 0 <= error_code <= 0xFFFF):
            raise LocalProtocolError("network_error_code out of range")
        tlvs.append(
            (Tag.NETWORK_ERROR_CODE, bytes([network_type]) + error_code.to_bytes(2, "big"))
        )
    return tlvs


def parse_network_error(value: bytes | None) -> tuple[int, int] | None:
    """``(network_type, error_code)`` from a ``network_error_code`` value; None if absent
    or not 3 octets."""
    if value is None or len(value) != 3:
        return None
    return value[0], int.from_bytes(value[1:3], "big")


def _clean_tlv_id(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    return value or None


# --- the usual receipt, fast ------------------------------------------------------------------
# What format_receipt / receipt_tlvs write for the usual finished message (a state, two dates
# in 2000–2099, a GSM error code), precomputed so that a receipt built for every finished
# message is byte formatting, not the Receipt dataclass and datetimes. tests/unit/
# test_receipt_builder.py checks the two against each other.

# Epoch range of the dates the fast path formats itself: 2000-01-01 to 2099-12-31 (UTC).
_FAST_DATE_MIN = 946_684_800
_FAST_DATE_END = 4_102_444_800


def _state_pieces(state: MessageState) -> tuple[bytes, bytes, tuple]:
    """What in a receipt depends on its state only: the text from " sub:" to "submit date:"
    and from " stat:" to "err:" (format_receipt's dlvrd and stat word), and the
    message_state TLV."""
    return (
        b" sub:001 dlvrd:%03d submit date:" % (1 if state == MessageState.DELIVERED else 0),
        b" stat:%s err:" % Receipt("0", stat=state).stat.encode("ascii"),
        (Tag.MESSAGE_STATE, int(state)),
    )


_STATE_VALUES = frozenset(int(s) for s in MessageState)

# Indexed by message_state (hashing an enum member for a dict runs Python code; indexing
# with one does not).
_FAST_STATES = tuple(
    _state_pieces(MessageState(value)) if value in _STATE_VALUES else None
    for value in range(max(_STATE_VALUES) + 1)
)
_MINUTES: dict[int, bytes] = {}  # minute since the epoch -> b"YYMMDDhhmm"


def _receipt_date(t: object) -> bytes | None:
    """``t`` (epoch seconds) as format_receipt writes ``datetime.fromtimestamp(t, utc)``:
    ``YYMMDDhhmm``. None (use the reference path) unless a plain float or int in 2000–2099."""
    if (type(t) is float or type(t) is int) and _FAST_DATE_MIN <= t < _FAST_DATE_END:
        # fromtimestamp rounds to the microsecond, half to even, from modf's fraction: so
        # hh:mm:59.9999996 is already the next minute. (x >= 999999.5 is round(x) >= 10**6.)
        s = int(t)
        if (t - s) * 1e6 >= 999_999.5:
            s += 1
        text = _MINUTES.get(s // 60)
        if text is None:
            d = time.gmtime(s // 60 * 60)  # whole seconds: the same calendar as datetime's
            text = b"%02d%02d%02d%02d%02d" % (d.tm_year % 100, d.tm_mon, d.tm_mday, d.tm_hour, d.tm_min)
            if len(_MINUTES) >= 4096:
                _MINUTES.clear()
            _MINUTES[s // 60] = text
        return text
    return None  # also for NaN


def usual_receipt(our_id: str, state: object, submitted_at: object, done_at: object,
                  error: object) -> tuple[bytes, tuple] | None:
    """The receipt text (bytes) and TLVs (receipted_message_id, message_state, and
    network_error_code when ``error``) that ``format_receipt`` and ``receipt_tlvs`` give for
    ``our_id`` finished in ``state`` (dates: epoch seconds), to the byte; None when the values
    are unusual (dates outside 2000–2099, a negative error, values of another type): then
    take those two."""
    if type(state) is not MessageState or type(error) is not int or error < 0:
        return None
    submit_date = _receipt_date(submitted_at)
    done_date = _receipt_date(done_at)
    if submit_date is None or done_date is None:
        return None
    sub_dlvrd, stat, state_tlv = _FAST_STATES[state]
    text = b"".join((
        b"id:", our_id.encode("ascii"), sub_dlvrd, submit_date, b" done date:", done_date, stat,
        b"%03d" % min(error, 999), b" text:",
    ))
    tlvs: tuple = ((Tag.RECEIPTED_MESSAGE_ID, our_id), state_tlv)
    if error:
        tlvs += ((Tag.NETWORK_ERROR_CODE, b"\x03" + (error & 0xFFFF).to_bytes(2, "big")),)  # type 3: GSM
    return text, tlvs


def merge(
    text_receipt: Receipt | None,
    tlv_id: str | None,
    tlv_state: int | None,
    *,
    network_error: tuple[int, int] | None = None,
) -> Receipt:
    """Combine what the text and the TLVs say about one receipt.

    The TLVs win for the id and the state when present and valid: they are typed, where
    the text is vendor-specific (some SMSCs fill ``stat:`` with a word of their own, or cut
    the id). Everything the TLVs do not carry (dates, sub/dlvrd, text) comes from the text.
    Without text, ``err`` is taken from ``network_error`` when given.

    A ``tlv_state`` that is not a valid ``message_state`` is ignored. Raises
    :class:`ReceiptParseError` when neither side has an id.
    """
    message_id = _clean_tlv_id(tlv_id)
    state: MessageState | None = None
    if isinstance(tlv_state, int) and not isinstance(tlv_state, bool):
        try:
            state = MessageState(tlv_state)
        except ValueError:
            state = None

    if text_receipt is None:
        if message_id is None:
            raise ReceiptParseError("receipt has neither receipted_message_id nor text id")
        err = f"{network_error[1]:03d}" if network_error is not None else "000"
        return Receipt(message_id, stat=state or MessageState.UNKNOWN, err=err)

    if message_id is None and state is None:
        return text_receipt
    return Receipt(
        message_id or text_receipt.message_id,
        sub=text_receipt.sub,
        dlvrd=text_receipt.dlvrd,
        submit_date=text_receipt.submit_date,
        done_date=text_receipt.done_date,
        stat=state or text_receipt.stat,
        err=text_receipt.err,
        text=text_receipt.text,
    )


def receipt_from_tlvs(
    get: Callable[[int], object | None],
    text: str | bytes | None = None,
) -> Receipt:
    """Build a receipt from a ``deliver_sm``'s TLVs and, when given, its text.

    ``get(tag)`` returns the decoded TLV value (str for ``receipted_message_id``, int for
    ``message_state``, bytes for ``network_error_code``) or None. Text that does not parse
    is ignored when the TLVs are enough; otherwise the :class:`ReceiptParseError` is
    raised (see its docstring for what callers then do).
    """
    text_receipt: Receipt | None = None
    error: ReceiptParseError | None = None
    if text is not None:
        try:
            text_receipt = parse_receipt(text)
        except ReceiptParseError as exc:
            error = exc
    tlv_id = get(Tag.RECEIPTED_MESSAGE_ID)
    tlv_state = get(Tag.MESSAGE_STATE)
    raw_network_error = get(Tag.NETWORK_ERROR_CODE)
    network_error = (
        parse_network_error(bytes(raw_network_error))
        if isinstance(raw_network_error, bytes | bytearray)
        else None
    )
    if text_receipt is None and _clean_tlv_id(tlv_id) is None and error is not None:
        raise error
    return merge(
        text_receipt,
        tlv_id,  # type: ignore[arg-type]
        tlv_state,  # type: ignore[arg-type]
        network_error=network_error,
    )


# --------------------------------------------------------------------------------------
# id normalisation for correlation

ID_MODES = ("as-is", "decimal", "hex", "hex-to-decimal", "decimal-to-hex")
"""Per-connector id modes, named "<submit_sm_resp id> to <receipt id>" where they differ:

* ``as-is``: ids compared as strings, blanks stripped, case kept (UUIDs, opaque ids).
* ``decimal``: both sides decimal; leading zeros ignored (``007`` == ``7``).
* ``hex``: both sides hex; case and leading zeros ignored (``00AB`` == ``ab``).
* ``hex-to-decimal``: hex in ``submit_sm_resp``, decimal in the receipt (the classic bug
  that Kannel and Jasmin users trip over).
* ``decimal-to-hex``: the reverse.

Every mode but ``as-is`` maps to the decimal string of the number, so both sides meet.
The receipt id is the one :func:`merge` chose, i.e. ``receipted_message_id`` when the
upstream sends that TLV; pick the mode for that id.
"""

_DECIMAL_ID = re.compile(r"[0-9]+")
_HEX_ID = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+")
_MAX_ID_LEN = 64  # receipted_message_id and message_id fields hold at most 64 characters


def clean_message_id(raw: str) -> str:
    """The id without blanks and NUL padding; ``MessageIdError`` if empty or too long."""
    if not isinstance(raw, str):
        raise MessageIdError("message id must be a string")
    value = raw.strip().strip("\x00").strip()
    if not value:
        raise MessageIdError("empty message id")
    if len(value) > _MAX_ID_LEN:
        raise MessageIdError("message id longer than 64 characters")
    return value


def normalize_message_id(raw: str, mode: str) -> str:
    """Canonical form of one id read in ``mode``: ``"as-is"``, ``"decimal"`` or ``"hex"``.

    Numbers are checked against ASCII digits ourselves rather than trusting ``int()``,
    which would also accept ``"+5"``, ``"1_000"`` and Arabic-Indic digits.
    """
    value = clean_message_id(raw)
    if mode == "as-is":
        return value
    if mode == "decimal":
        if not _DECIMAL_ID.fullmatch(value):
            raise MessageIdError("message id is not decimal")
        return str(int(value, 10))
    if mode == "hex":
        if not _HEX_ID.fullmatch(value):
            raise MessageIdError("message id is not hexadecimal")
        return str(int(value, 16))
    raise ValueError(f"unknown message id mode {mode!r}")


# (mode of the submit_sm_resp id, mode of the receipt id) for each connector setting.
_SIDES: dict[str, tuple[str, str]] = {
    "as-is": ("as-is", "as-is"),
    "decimal": ("decimal", "decimal"),
    "hex": ("hex", "hex"),
    "hex-to-decimal": ("hex", "decimal"),
    "decimal-to-hex": ("decimal", "hex"),
}


def _sides(mode: str) -> tuple[str, str]:
    try:
        return _SIDES[mode]
    except KeyError:
        raise ValueError(f"unknown message id mode {mode!r}; expected one of {ID_MODES}") from None


def normalize_resp_id(raw: str, mode: str) -> str:
    """Canonical form of the id an upstream returned in ``submit_sm_resp``."""
    return normalize_message_id(raw, _sides(mode)[0])


def normalize_dlr_id(raw: str, mode: str) -> str:
    """Canonical form of the id an upstream put in a receipt (TLV or text)."""
    return normalize_message_id(raw, _sides(mode)[1])


# --------------------------------------------------------------------------------------
# reading an upstream's receipt deliver_sm (the SMPP door's, and the early receipts kept
# as PDUs before schema 0006)

_RECEIPT_BITS = int(EsmClass.DELIVERY_RECEIPT | EsmClass.INTERMEDIATE_NOTIFICATION)  # IntFlag ops run in Python


def is_receipt(pdu) -> bool:
    """SMPP marks receipts in esm_class (bits 2-5 = 0001 delivery receipt, or the
    intermediate notification bit); some upstreams only send receipted_message_id."""
    esm = getattr(pdu, "esm_class", 0)
    return bool(esm & _RECEIPT_BITS) or (
        pdu.tlv(Tag.RECEIPTED_MESSAGE_ID) is not None
    )


def read_receipt(pdu) -> tuple[str, int, str]:
    """(upstream id as sent, state, err field) of a receipt deliver_sm/data_sm: the fast
    reading when it applies, else :func:`receipt_from_tlvs` (which raises
    :class:`ReceiptParseError` for what is no receipt)."""
    parsed = fast_receipt_fields(pdu)
    if parsed is None:
        receipt = receipt_from_tlvs(pdu.tlv, getattr(pdu, "short_message", b""))
        parsed = (receipt.message_id, int(receipt.state), receipt.err)
    return parsed


# The text fields a receipt may carry, as parse_receipt reads them (a key not glued to a
# preceding letter or digit, blanks allowed before the colon).
_TEXT_KEY = re.compile(rb"(?<![A-Za-z0-9_])text[ \t]*:", re.IGNORECASE)
_ERR_KEY = re.compile(rb"(?<![A-Za-z0-9_])err[ \t]*:", re.IGNORECASE)
_ID_KEY = re.compile(rb"(?<![A-Za-z0-9_])id[ \t]*:", re.IGNORECASE)
_ANY_KEY = re.compile(
    rb"(?<![A-Za-z0-9_])(?:id|sub|dlvrd|dlvd|submit[ \t_]*date|done[ \t_]*date|stat(?:e|us)?|err|text)[ \t]*:",
    re.IGNORECASE,
)
_VALID_STATES = frozenset(int(s) for s in MessageState)
# Appendix B's text as nearly every SMSC writes it, read in one match (the key searches below
# cost ~5 µs a receipt). Its values hold letters and digits only, so no key can hide in them:
# where it matches, the key-by-key reading finds the same err: field.
_CANONICAL_TEXT = re.compile(
    rb"id:[A-Za-z0-9]+ sub:[0-9]+ dlvrd:[0-9]+ submit date:[0-9]+ done date:[0-9]+ stat:[A-Za-z]+"
    rb" err:([A-Za-z0-9]*) text:"
)


def fast_receipt_fields(pdu) -> tuple[str, int, str] | None:
    """(id, state, err) of a receipt whose TLVs carry its id and state, without reading the
    whole text: only its ``err:`` field, which the TLVs do not carry (unless
    ``network_error_code`` is all there is). None when the full reading is needed (no or
    bad TLVs, or a text without ``err:``)."""
    raw_id = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    state = pdu.tlv(Tag.MESSAGE_STATE)
    if isinstance(raw_id, bytes | bytearray):
        raw_id = bytes(raw_id).decode("latin-1")
    if not isinstance(raw_id, str) or not isinstance(state, int) or isinstance(state, bool):
        return None
    raw_id = raw_id.strip().strip("\x00").strip()
    if not raw_id or state not in _VALID_STATES:
        return None
    text = getattr(pdu, "short_message", b"") or b""
    if isinstance(text, str):
        text = text.encode("latin-1", "replace")
    text = text.rstrip(b"\x00")
    if not text:
        return None  # no text: the network_error_code rules apply, as the full reading does
    m = _CANONICAL_TEXT.match(text)
    if m is not None:
        return raw_id, state, m.group(1).decode("latin-1") or "000"
    head = text
    m = _TEXT_KEY.search(text)
    if m is not None:
        head = text[: m.start()]  # what follows text: is the message, not fields
    if not _field(head, _ID_KEY):
        return None  # not a receipt text (the full reading then ignores it): TLVs only
    err = _field(head, _ERR_KEY)
    if err is None:
        return None
    return raw_id, state, err.decode("latin-1") or "000"


def _field(head: bytes, key: re.Pattern) -> bytes | None:
    """The value of the first ``key`` field in ``head`` (first token before the next key),
    b"" if empty, None if absent."""
    m = key.search(head)
    if m is None:
        return None
    rest = head[m.end() :]
    nxt = _ANY_KEY.search(rest)
    if nxt is not None:
        rest = rest[: nxt.start()]
    tokens = rest.split()
    return tokens[0] if tokens else b""


def error_code(err: str) -> int:
    """The ``err:`` field as a number: decimal when it is all digits, else hex (0 when it
    is neither)."""
    try:
        return int(str(err), 10) if str(err).isdigit() else int(str(err), 16)
    except ValueError:
        return 0
