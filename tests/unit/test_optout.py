"""Opt-out keyword matching and attribution (routing/optout.py)."""

import pytest

from routing.optout import KeywordMatcher, OptOutTarget, attribute_optout, fold, route_mo

matcher = KeywordMatcher()


@pytest.mark.parametrize(
    "text",
    ["STOP", "stop.", " Stop SMS ", "ARRÊT", "arret svp", "STOP 36180", "Je veux stop", "Désabo",
     "désinscription", "Unsubscribe please", "STOPP", "stop!!!", "Stop\nSMS", "s t o p? non: STOP"],
)
def test_optouts(text):
    assert matcher.is_optout(text)


@pytest.mark.parametrize(
    "text", ["Non merci", "", "   ", "STOPPER", "stopover", "Arrêtez de m'écrire", "top", "ST OP", "STO"]
)
def test_not_optouts(text):
    # STOPPER is a different word: not an opt-out unless the operator lists it.
    assert not matcher.is_optout(text)


def test_stopper_can_be_configured():
    assert KeywordMatcher(["STOP", "STOPPER"]).is_optout("je veux stopper")


def test_multiword_keyword_reported_first():
    assert matcher.match("stop sms") == "STOP SMS"


def test_fold():
    assert fold("  Arrêt, s'il-vous-plaît ") == "ARRET S IL VOUS PLAIT"


def test_empty_keyword_list_refused():
    with pytest.raises(ValueError):
        KeywordMatcher(["  ", "!!"])


OWNERS = {"36180": "acme"}


def test_dedicated_short_code_goes_to_owner():
    assert attribute_optout("36180", OWNERS, ["other"]) == OptOutTarget(("acme",))


def test_shared_code_goes_to_recent_marketing_senders():
    assert attribute_optout("38100", OWNERS, ["beta", "alpha", "beta"]) == OptOutTarget(("alpha", "beta"))


def test_shared_code_without_recent_sender_is_platform_level():
    assert attribute_optout("38100", OWNERS, []) == OptOutTarget((), platform_short_code="38100")


KEYWORDS = {("38100", "PIZZA"): "pizzeria", ("38100", "METEO"): "meteo"}


def test_mo_routing():
    assert route_mo("36180", "anything", OWNERS, KEYWORDS) == "acme"
    assert route_mo("38100", "pizza 2 margherita", OWNERS, KEYWORDS) == "pizzeria"
    assert route_mo("38100", "Météo Nice", OWNERS, KEYWORDS) == "meteo"
    assert route_mo("38100", "hello", OWNERS, KEYWORDS) is None
    assert route_mo("38100", "", OWNERS, KEYWORDS) is None
    assert route_mo("99999", "pizza", OWNERS, KEYWORDS) is None
