"""The STOP mention, its segment cost and unsubscribe links (routing/mention.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.gsm7 import septet_count
from protocol.segments import count_segments
from routing.category import ALERT, MARKETING
from routing.mention import (
    DEFAULT_SEPARATOR,
    DEFAULT_TEMPLATE,
    LINK,
    MAX_LINK_LENGTH,
    STOP,
    append_link,
    append_mention,
    has_mention,
    make_token,
    needs_mention,
    render_mention,
    segments_with_mention,
    unsubscribe_link,
    with_mention,
)

DEFAULT_MENTION = DEFAULT_SEPARATOR + render_mention()
SEED_MENTION = DEFAULT_SEPARATOR + render_mention("STOP SMS: {short_code}")  # 16 characters


# --- which mention ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "category, alphanumeric, country, expected",
    [
        (MARKETING, True, "FR", STOP),
        (MARKETING, True, "BE", STOP),
        (MARKETING, True, "RE", STOP),
        (MARKETING, True, "GP", STOP),
        (MARKETING, True, "MQ", STOP),
        (MARKETING, True, "GF", STOP),
        (MARKETING, True, "YT", STOP),
        (MARKETING, True, "PM", STOP),
        (MARKETING, True, "CH", LINK),
        (MARKETING, True, "DE", LINK),
        (MARKETING, True, "US", LINK),
        (MARKETING, True, None, LINK),  # unknown country: a reply may not come back
        (MARKETING, False, "FR", None),  # short code: reply STOP to it
        (MARKETING, False, "CH", None),
        (ALERT, True, "FR", None),
        (ALERT, True, "CH", None),
        (ALERT, False, "FR", None),
    ],
)
def test_needs_mention(
    category: str, alphanumeric: bool, country: str | None, expected: str | None
) -> None:
    assert needs_mention(category, alphanumeric, country) == expected


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Soldes -50% ce week-end ! STOP au 36180",
        "Soldes -50% STOP 36180",
        "Soldes -50%\nStop SMS au 36180",
        "Soldes -50% STOP SMS 36180",
        "Soldes -50% stop sms: 36180",
        "Soldes -50%\nSTOP SMS: 36180",
        "STOP au 36180 - Soldes -50% ce week-end",  # at the start
        "Soldes (STOP au 36180) ce week-end",  # in the middle
        "Soldes -50% STOP SMS envoyez STOP au 36180",
        "Soldes -50% ARRÊT au 36180",
        "Soldes -50% arret 36180",
        "Soldes -50% Désabo : 36180",
        "Soldes -50% désabonnement au 36180",
        "Soldes -50% ＳＴＯＰ au 36180",  # full-width letters fold
        "Soldes -50% stop à 38100",  # any 5-digit short code
    ],
)
def test_has_mention(text: str) -> None:
    assert has_mention(text)


@pytest.mark.parametrize(
    "text",
    [
        "Soldes -50% ce week-end",
        "Soldes -50% STOP SMS",  # no number: nowhere to send it from an alphanumeric sender
        "Stop 2026 : nouvelle collection",  # a year is not a short code
        "Stop aux prix fous : 100 articles",
        "STOP au 3618",  # 4 digits, and not our short code
        "STOP au 361800",  # 6 digits
        "STOPPEZ tout au 36180",
        "Appelez le 36180",
        "",
    ],
)
def test_has_no_mention(text: str) -> None:
    assert not has_mention(text)


def test_has_mention_with_a_configured_short_code() -> None:
    assert not has_mention("Promo STOP au 8800")
    assert has_mention("Promo STOP au 8800", short_code="8800")
    assert append_mention("Promo STOP au 8800", short_code="8800") == "Promo STOP au 8800"


# --- appending -------------------------------------------------------------------------------


def test_default_mention() -> None:
    assert DEFAULT_TEMPLATE == "STOP au {short_code}"  # the contract
    assert DEFAULT_MENTION == "\nSTOP au 36180"
    assert septet_count(DEFAULT_MENTION) == 14
    assert septet_count(SEED_MENTION) == 16  # the seed note's "16 caractères"
    assert has_mention(DEFAULT_MENTION) and has_mention(SEED_MENTION)


def test_append_mention() -> None:
    assert append_mention("Soldes -50%") == "Soldes -50%\nSTOP au 36180"
    assert append_mention("Soldes", short_code="38100") == "Soldes\nSTOP au 38100"
    assert append_mention("Soldes", "STOP SMS: {short_code}") == "Soldes\nSTOP SMS: 36180"
    assert append_mention("Soldes", separator=" ") == "Soldes STOP au 36180"
    assert append_mention("") == "STOP au 36180"
    with pytest.raises(ValueError, match="template"):
        append_mention("Soldes", "STOP au {code}")


@pytest.mark.parametrize(
    "text",
    [
        "Soldes STOP au 36180",
        "Soldes\nSTOP SMS: 36180",
        "Soldes stop sms 36180",
        "STOP 36180 Soldes",
    ],
)
def test_no_double_mention(text: str) -> None:
    assert append_mention(text) == text
    assert append_mention(append_mention(text)) == text
    assert segments_with_mention(text) == count_segments(text)


@given(st.text(max_size=300))
def test_append_is_idempotent(text: str) -> None:
    once = append_mention(text)
    assert append_mention(once) == once
    assert has_mention(once)
    assert once.startswith(text)


def test_append_link() -> None:
    link = "https://x.fr/u/Ab3dE6x"
    assert append_link("Aktion -50%", link) == "Aktion -50%\nSTOP: https://x.fr/u/Ab3dE6x"
    german = append_link("Aktion -50%", link, "Abmelden {link}", " ")
    assert german == "Aktion -50% Abmelden " + link
    assert append_link(f"Aktion {link}", link) == f"Aktion {link}"


# --- segments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, segments",
    [
        # The seed note: 144 characters + the 16-character mention = 160 = 1 SMS; 145 → 2.
        ("a" * 144, 1),
        ("a" * 145, 2),
        # Two parts hold 2 × 153 septets: 290 + 16 = 306.
        ("a" * 290, 2),
        ("a" * 291, 3),
        # Extension characters cost two septets each: 72 € = 144 septets.
        ("€" * 72, 1),
        ("€" * 72 + "a", 2),
        ("a" * 142 + "€", 1),
        ("a" * 143 + "€", 2),
        ("[" * 10 + "a" * 124, 1),
        ("[" * 10 + "a" * 125, 2),
        # UCS-2 (ê is not GSM-7): 70 units in one SMS, the mention costs its 16 units.
        ("ê" * 54, 1),
        ("ê" * 55, 2),
        # ... and 67 per part: 2 × 67 = 134 = 118 + 16.
        ("ê" * 118, 2),
        ("ê" * 119, 3),
        # An emoji is two UTF-16 units.
        ("😀" * 27, 1),
        ("😀" * 27 + "a", 2),
        # Accented GSM-7 letters (é è à ù) stay GSM-7.
        ("é" * 144, 1),
        ("é" * 145, 2),
    ],
)
def test_segments_with_mention(text: str, segments: int) -> None:
    # The seed note's 16-character mention.
    assert segments_with_mention(text, SEED_MENTION[1:]) == segments
    assert count_segments(append_mention(text, "STOP SMS: {short_code}")) == segments


def test_segments_with_another_mention() -> None:
    # The default wording costs 14 septets: exactly 160 with the mention is 1 SMS, 161 is 2.
    assert segments_with_mention("a" * 146) == 1
    assert segments_with_mention("a" * 147) == 2
    # A mention that needs UCS-2 turns the whole message into UCS-2.
    assert segments_with_mention("a" * 60, "Arrêt → 36180") == 2
    assert segments_with_mention("a" * 50, "Arrêt → 36180") == 1
    # An explicit data_coding is honoured (8 = UCS2): 56 + 14 = 70 units fit, 57 do not.
    assert segments_with_mention("a" * 56, data_coding=8) == 1
    assert segments_with_mention("a" * 57, data_coding=8) == 2


def test_with_mention_verbatim() -> None:
    assert with_mention("Aktion", "STOP: https://x.fr/u/a") == "Aktion\nSTOP: https://x.fr/u/a"
    assert with_mention("Aktion STOP: https://x.fr/u/a", "STOP: https://x.fr/u/a") == (
        "Aktion STOP: https://x.fr/u/a"
    )


# --- unsubscribe links -----------------------------------------------------------------------


def test_unsubscribe_link() -> None:
    token = make_token(1, b"k" * 32)
    link = unsubscribe_link("https://x.fr", token)
    assert link == f"https://x.fr/u/{token}"
    assert len(link) <= MAX_LINK_LENGTH
    assert unsubscribe_link("https://x.fr/", token) == link
    assert len(unsubscribe_link("https://abc.fr", "Ab3dE6x8")) == 25


def test_unsubscribe_link_too_long() -> None:
    with pytest.raises(ValueError, match="at most 14"):
        unsubscribe_link("https://abcd.fr", "Ab3dE6x8")  # 26 characters
    with pytest.raises(ValueError, match="more than 25"):
        unsubscribe_link("https://unsubscribe.example.com", "abc123")


@pytest.mark.parametrize("base", ["", "/", "https://x.fr?a=", "https://x.fr#", "https://x .fr"])
def test_unsubscribe_link_bad_base(base: str) -> None:
    with pytest.raises(ValueError):
        unsubscribe_link(base, "abc123")


@pytest.mark.parametrize("token", ["", "abc-12", "abc/12", "abc 12"])
def test_unsubscribe_link_bad_token(token: str) -> None:
    with pytest.raises(ValueError, match="base62"):
        unsubscribe_link("https://x.fr", token)


def test_make_token() -> None:
    secret = b"s" * 32
    assert make_token(42, secret) == make_token(42, secret)  # deterministic
    assert make_token(42, secret) != make_token(43, secret)
    assert make_token(42, secret) != make_token(42, b"t" * 32)
    assert make_token(b"nonce-1", secret) != make_token(b"nonce-2", secret)
    for length in (6, 7, 8):
        assert len(make_token(1, secret, length)) == length
    for bad in (5, 9):
        with pytest.raises(ValueError):
            make_token(1, secret, bad)
    with pytest.raises(ValueError):
        make_token(1, b"")
    with pytest.raises(ValueError):
        make_token(-1, secret)


@given(st.integers(min_value=0, max_value=2**80), st.integers(6, 8))
def test_tokens_are_base62(n: int, length: int) -> None:
    token = make_token(n, b"secret-key-32-bytes-long-enough!", length)
    assert len(token) == length
    assert token.isascii() and token.isalnum()
    assert unsubscribe_link("https://x.fr", token).endswith("/u/" + token)


def test_tokens_rarely_collide() -> None:
    tokens = {make_token(n, b"k" * 32, 6) for n in range(20_000)}
    assert len(tokens) == 20_000
