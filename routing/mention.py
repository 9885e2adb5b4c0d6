"""The opt-out mention on marketing SMS: a STOP mention, or a short unsubscribe link.

Pure: no I/O, no clock, no randomness (the caller passes counters and secrets).

**Which mention** (:func:`needs_mention`): marketing from a custom alphanumeric sender to a
country where replies to our short code work — FR, BE and the French overseas departments and
collectivities — gets ``"stop"``; to Switzerland and every other country (or a number with no
known country), where a reply cannot come back, ``"link"``. A short-code sender needs none
(the recipient replies STOP to it) and alerts need none (no commercial purpose).

**The default STOP mention** is the contract's ``"STOP au {short_code}"`` on a new line
(``"\nSTOP au 36180"``, 14 GSM-7 septets); the template is configurable (``[optout]
mention``). Segment counts always come from the real text as sent, never from fixed figures:
the seed note's arithmetic ("Cette mention comprend 16 caractères… 144 caractères pour ne
compter que pour un seul SMS. A partir de 145 caractères, le message compte comme 2 SMS")
holds for its 16-character mention (e.g. ``"STOP SMS: {short_code}"`` on a new line), and the
default's 14 septets let 146 characters fit.

**Already there** (:func:`has_mention`, a heuristic): after folding case and accents and
turning punctuation into spaces, an opt-out word (``stop``, ``arret``, ``desabo…``,
``desinscri…``, ``unsubscribe``) followed, with only connecting words in between (``sms``,
``au``, ``a``, ``envoyez``, ``envoyer``, ``envoi``, ``par``, ``to``, ``send``, ``reply``,
``repondez``, ``repondre``, ``tapez``, ``gratuit``, ``stop``), by a 5-digit number (French
short codes) or by the short code passed in (any length, e.g. a Belgian 4-digit one):
"STOP au 36180", "STOP 36180", "Stop SMS au 36180", "STOP SMS envoyez STOP au 36180",
"Désabo : 36180", anywhere in the text. Only 5 digits by default, so that "STOP 2026" or
"stop 100 articles" is not taken for a mention (a missed mention is a legal problem, a
doubled one only cosmetic). A bare "STOP SMS" without a number does not count: from
an alphanumeric sender the recipient has nowhere to send it. Any short code counts, not only
ours: a partner naming its own short code has a mention, and a second one would confuse.

**Segments** (:func:`segments_with_mention`) are those of the text as it will be sent, mention
included, in the cheapest encoding (:func:`protocol.text.choose_encoding`): GSM-7, where
extension characters (€ [ ] { } ^ ~ \\ | and form feed) cost two septets, 160 in one SMS and
153 per part; else UCS-2, 70 UTF-16 units in one SMS and 67 per part — the mention then costs
its length in UTF-16 units.

**Unsubscribe links** are ``f"{base}/u/{token}"``, at most :data:`MAX_LINK_LENGTH` (25)
characters; tokens come from :func:`make_token`, base62 of an HMAC-SHA256 of a caller-supplied
counter or nonce under a secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

from protocol.segments import count_segments

from .category import MARKETING
from .windows import FRENCH_OVERSEAS

__all__ = [
    "DEFAULT_LINK_TEMPLATE",
    "DEFAULT_SEPARATOR",
    "DEFAULT_SHORT_CODE",
    "DEFAULT_TEMPLATE",
    "LINK",
    "MAX_LINK_LENGTH",
    "REPLY_COUNTRIES",
    "STOP",
    "append_link",
    "append_mention",
    "has_mention",
    "make_token",
    "needs_mention",
    "render_mention",
    "segments_with_mention",
    "unsubscribe_link",
    "with_mention",
]

STOP = "stop"
LINK = "link"

REPLY_COUNTRIES = frozenset({"FR", "BE"}) | FRENCH_OVERSEAS
"""Where a STOP reply to the shared short code reaches us."""

DEFAULT_SHORT_CODE = "36180"
DEFAULT_TEMPLATE = "STOP au {short_code}"
DEFAULT_SEPARATOR = "\n"
DEFAULT_LINK_TEMPLATE = "STOP: {link}"

MAX_LINK_LENGTH = 25
TOKEN_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MIN_TOKEN_LENGTH, MAX_TOKEN_LENGTH = 6, 8


def needs_mention(
    category: str, sender_kind_is_alphanumeric: bool, country: str | None
) -> str | None:
    """``"stop"``, ``"link"`` or None (see the module notes)."""
    if category != MARKETING or not sender_kind_is_alphanumeric:
        return None
    return STOP if country in REPLY_COUNTRIES else LINK


# --- detecting a mention ---------------------------------------------------------------------

_OPT_OUT_WORD = r"(?:stop|arret|desabo\w*|desinscri\w*|unsubscribe)"
_FILLER = (
    r"(?:sms|au|aux|a|envoyez|envoyer|envoi|par|to|send|reply|repondez|repondre|tapez"
    r"|gratuit|stop)"
)
_MENTION_RE = re.compile(rf"\b{_OPT_OUT_WORD}(?: {_FILLER})* (\d+)\b")
_NOT_WORD = re.compile(r"[\W_]+")


def _fold(text: str) -> str:
    """Lower case, accents removed, every run of punctuation/space one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " " + _NOT_WORD.sub(" ", stripped.casefold()).strip() + " "


def has_mention(text: str, short_code: str | None = None) -> bool:
    """Whether ``text`` already carries a STOP mention naming a 5-digit short code, or
    ``short_code`` (heuristic, see the module notes)."""
    return any(
        len(code) == 5 or code == short_code for code in _MENTION_RE.findall(_fold(text))
    )


# --- adding a mention ------------------------------------------------------------------------


def render_mention(template: str = DEFAULT_TEMPLATE, short_code: str = DEFAULT_SHORT_CODE) -> str:
    """The mention text, without separator: ``"STOP au 36180"``."""
    try:
        return template.format(short_code=short_code)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad STOP mention template {template!r}: {exc}") from None


def with_mention(
    text: str,
    mention: str,
    separator: str = DEFAULT_SEPARATOR,
    short_code: str | None = None,
) -> str:
    """``text`` + ``separator`` + ``mention``, unless the text already holds ``mention``
    verbatim or any STOP mention (:func:`has_mention`). An empty text gets the mention alone."""
    if mention in text or has_mention(text, short_code):
        return text
    return text + separator + mention if text else mention


def append_mention(
    text: str,
    template: str = DEFAULT_TEMPLATE,
    short_code: str = DEFAULT_SHORT_CODE,
    separator: str = DEFAULT_SEPARATOR,
) -> str:
    """The text with the STOP mention appended, unless it already has one."""
    return with_mention(text, render_mention(template, short_code), separator, short_code)


def append_link(
    text: str,
    link: str,
    template: str = DEFAULT_LINK_TEMPLATE,
    separator: str = DEFAULT_SEPARATOR,
) -> str:
    """The text with the unsubscribe link appended (``"STOP: https://x.fr/u/abc123"`` by
    default), unless the link is already in it."""
    if link in text:
        return text
    try:
        mention = template.format(link=link)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad unsubscribe link template {template!r}: {exc}") from None
    return text + separator + mention if text else mention


def segments_with_mention(
    text: str,
    mention_text: str | None = None,
    *,
    separator: str = DEFAULT_SEPARATOR,
    data_coding: int | None = None,
) -> int:
    """SMS count of ``text`` once the mention is appended (as :func:`with_mention` would:
    no second mention), in the cheapest encoding, or in ``data_coding`` when given.
    ``mention_text`` defaults to the default STOP mention."""
    if mention_text is None:
        mention_text = render_mention()
    return count_segments(with_mention(text, mention_text, separator), data_coding)


# --- unsubscribe links -----------------------------------------------------------------------


def unsubscribe_link(base: str, token: str) -> str:
    """``f"{base}/u/{token}"`` (a trailing ``/`` on base is dropped). Raises ValueError if it
    is longer than :data:`MAX_LINK_LENGTH`, if base is empty or holds spaces, ``?`` or ``#``,
    or if the token is not base62."""
    base = base.rstrip("/")
    if not base or any(ch.isspace() or ch in "?#" for ch in base):
        raise ValueError(f"bad unsubscribe link base {base!r}")
    if not token or any(ch not in TOKEN_ALPHABET for ch in token):
        raise ValueError(f"unsubscribe token {token!r} is not base62")
    link = f"{base}/u/{token}"
    if len(link) > MAX_LINK_LENGTH:
        room = MAX_LINK_LENGTH - len("/u/") - len(token)
        raise ValueError(
            f"unsubscribe link {link!r} has {len(link)} characters, more than"
            f" {MAX_LINK_LENGTH}: with a token of {len(token)} characters the base may have"
            f" at most {room}"
        )
    return link


def make_token(n: int | bytes, secret: bytes, length: int = 7) -> str:
    """A short URL-safe token for counter (or nonce) ``n``: the ``length`` (6–8) low base62
    digits of HMAC-SHA256(secret, n). Deterministic; unguessable without the secret."""
    if not MIN_TOKEN_LENGTH <= length <= MAX_TOKEN_LENGTH:
        raise ValueError(f"token length must be {MIN_TOKEN_LENGTH}-{MAX_TOKEN_LENGTH}")
    if not secret:
        raise ValueError("the token secret must not be empty")
    if isinstance(n, int):
        if n < 0:
            raise ValueError("the token counter must not be negative")
        message = n.to_bytes(max(8, (n.bit_length() + 7) // 8), "big")
    else:
        message = bytes(n)
    value = int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest(), "big")
    digits = []
    for _ in range(length):
        value, digit = divmod(value, 62)
        digits.append(TOKEN_ALPHABET[digit])
    return "".join(digits)
