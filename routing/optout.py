"""Opt-out ("STOP") keywords in replies, and who an opt-out applies to.

Matching works on words, not substrings: the text is folded (accents removed, upper case,
punctuation and spacing collapsed) and an opt-out keyword — possibly several words, like
"STOP SMS" — must appear as whole consecutive words anywhere in it. So "stop.", " Stop SMS ",
"ARRÊT", "arret svp", "STOP 36180" and "Je veux stop" are opt-outs, "Non merci" is not.

"STOPPER" is *not* an opt-out by default: it is a different word, and matching prefixes
would also catch words like "stopover". The keyword list is configurable
(``[optout] keywords``); an operator who wants "STOPPER" adds it.

Attribution follows the seed note: an opt-out on an account's dedicated short code goes to
that account; on a shared short code, to every account that sent marketing to the number
through that code recently; if none did, to the short code itself (a platform-level entry
that all its accounts' marketing respects).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping

DEFAULT_KEYWORDS = (
    "STOP",
    "STOP SMS",
    "ARRET",
    "ARRÊT",
    "DESABO",
    "DESABONNER",
    "DÉSINSCRIPTION",
    "UNSUBSCRIBE",
    "STOPP",
)

_NON_WORD = re.compile(r"[^0-9A-Z]+")


def fold(text: str) -> str:
    """Upper case, accents removed, anything but letters and digits turned into single
    spaces: the form both texts and keywords are compared in."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", stripped.upper()).strip()


class KeywordMatcher:
    """Finds opt-out keywords in reply texts."""

    def __init__(self, keywords: Iterable[str] = DEFAULT_KEYWORDS) -> None:
        folded = {fold(k) for k in keywords if fold(k)}
        if not folded:
            raise ValueError("at least one opt-out keyword is needed")
        # Longest first so "STOP SMS" is reported rather than "STOP".
        self._keywords = sorted((tuple(k.split()) for k in folded), key=len, reverse=True)

    def match(self, text: str) -> str | None:
        """The (folded) keyword found in ``text``, or None."""
        words = fold(text).split()
        if not words:
            return None
        for keyword in self._keywords:
            n = len(keyword)
            for i in range(len(words) - n + 1):
                if tuple(words[i : i + n]) == keyword:
                    return " ".join(keyword)
        return None

    def is_optout(self, text: str) -> bool:
        return self.match(text) is not None


@dataclass(frozen=True, slots=True)
class OptOutTarget:
    """Where an opt-out is recorded: the accounts' blacklists, or — when nobody on a shared
    short code sent to the number recently — the short code's platform-level list."""

    accounts: tuple[str, ...]
    platform_short_code: str | None = None


def attribute_optout(
    short_code: str,
    owners: Mapping[str, str],
    recent_senders: Iterable[str],
) -> OptOutTarget:
    """Who a STOP sent to ``short_code`` applies to.

    ``owners`` maps dedicated short codes to their account; ``recent_senders`` are the
    accounts that sent marketing to this number through this short code within the
    look-back period (the caller queries storage).
    """
    owner = owners.get(short_code)
    if owner is not None:
        return OptOutTarget((owner,))
    accounts = tuple(sorted(set(recent_senders)))
    if accounts:
        return OptOutTarget(accounts)
    return OptOutTarget((), platform_short_code=short_code)


def route_mo(
    short_code: str,
    text: str,
    owners: Mapping[str, str],
    keywords: Mapping[tuple[str, str], str],
) -> str | None:
    """The account an MO belongs to: the owner of a dedicated short code, or on a shared
    one the account whose keyword is the text's first word. None: unroutable."""
    owner = owners.get(short_code)
    if owner is not None:
        return owner
    words = fold(text).split()
    if not words:
        return None
    return keywords.get((short_code, words[0]))
