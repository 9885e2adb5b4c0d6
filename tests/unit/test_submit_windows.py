"""Send windows at submit time (``SubmitPlanner``), with a fake clock and real 2026 dates.

What the queue is told for each message: ``not_before`` (the next opening in the
recipient's zone, or a later schedule) and ``expires_at``; alerts are never held; accounts
with ``outside_window = "reject"`` get 0x401. The calendar itself is tested in
``test_windows.py``; this is the policy as the submit path applies it.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from protocol import pdu as P
from protocol.constants import CommandStatus
from routing.routes import RouteRule, RouteTable
from routing.windows import SendWindows
from smscenter.pipeline.accounts import AccountState, PartnerBind
from smscenter.config import Account
from smscenter.runtime.passwords import hash_password
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.pipeline.submit import MentionPolicy, Refused, SubmitPlanner
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator

_HASH = hash_password("secret")


def local(text: str, zone: str = "Europe/Paris") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def planner(tmp_path):
    clock = Clock()
    cipher = FieldCipher(Keyring.open(tmp_path / "keys", database_has_data=False))
    mention = MentionPolicy("STOP au {short_code}", "36180", "https://x.fr", b"k" * 32)
    p = SubmitPlanner(
        RouteTable([RouteRule(("*",), ("up",))]), cipher, IdGenerator(), shared_short_codes=("36180",),
        windows=SendWindows(), mention=mention, wall_clock=clock,
    )
    p.clock = clock
    return p


def bind(outside_window: str = "defer") -> PartnerBind:
    account = Account.model_validate(
        {"system_id": "acme", "password": _HASH, "sender_ids": ["ACME"], "short_codes": ["38123"],
         "category": "marketing", "outside_window": outside_window}
    )
    return PartnerBind(AccountState(account, TokenBucket(100, 0.0)), link=None, bind_type="transceiver")


def submit_sm(dest: str, service_type: str = "", **kwargs) -> P.SubmitSm:
    return P.SubmitSm(
        service_type=service_type, source_addr_ton=5, source_addr_npi=0, source_addr="ACME",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=dest, registered_delivery=1,
        short_message=b"Soldes", **kwargs,
    )


FR, RE, BE = "33612345678", "262692123456", "32470123456"

CASES = {
    # name: (number, submitted at (local time of the zone), zone, next opening in that zone or None)
    "Saturday 19:59 Paris: sent": (FR, "2026-06-06 19:59", "Europe/Paris", None),
    "Saturday 20:00 Paris: Monday 08:00": (FR, "2026-06-06 20:00", "Europe/Paris", "2026-06-08 08:00"),
    "Friday 22:00 Paris: Saturday 08:00": (FR, "2026-06-05 22:00", "Europe/Paris", "2026-06-06 08:00"),
    "Sunday noon: Monday 08:00": (FR, "2026-06-07 12:00", "Europe/Paris", "2026-06-08 08:00"),
    "Monday 07:59: 08:00": (FR, "2026-06-08 07:59", "Europe/Paris", "2026-06-08 08:00"),
    "Thursday 30 April 20:30: Saturday 2 May (1 May holiday)": (
        FR, "2026-04-30 20:30", "Europe/Paris", "2026-05-02 08:00"),
    "Monday 13 July 21:00: Wednesday 15 July (14 July)": (
        FR, "2026-07-13 21:00", "Europe/Paris", "2026-07-15 08:00"),
    "Wednesday 13 May 20:30: Friday 15 May (Ascension)": (
        FR, "2026-05-13 20:30", "Europe/Paris", "2026-05-15 08:00"),
    "Whit Monday 25 May: Tuesday": (FR, "2026-05-25 10:00", "Europe/Paris", "2026-05-26 08:00"),
    "Saturday before Whit Monday: Tuesday 26 May (60 h, past the default validity)": (
        FR, "2026-05-23 20:30", "Europe/Paris", "2026-05-26 08:00"),
    "Réunion 08:30 local (Paris 06:30): sent": (RE, "2026-06-08 08:30", "Indian/Reunion", None),
    "Réunion 20 December (abolition of slavery): Monday 21": (
        RE, "2026-12-19 20:30", "Indian/Reunion", "2026-12-21 08:00"),
    "Belgium Tuesday 21 July: Wednesday 22": (BE, "2026-07-21 10:00", "Europe/Brussels", "2026-07-22 08:00"),
    "Belgium 14 July (a French holiday only): sent": (BE, "2026-07-14 10:00", "Europe/Brussels", None),
    "spring forward: Saturday 28 March 20:30 → Monday 30 March 08:00 CEST": (
        FR, "2026-03-28 20:30", "Europe/Paris", "2026-03-30 08:00"),
    "fall back: Saturday 24 October 20:30 → Monday 26 October 08:00 CET": (
        FR, "2026-10-24 20:30", "Europe/Paris", "2026-10-26 08:00"),
}


@pytest.mark.parametrize("number, at, zone, opening", CASES.values(), ids=CASES.keys())
def test_marketing_not_before(planner, number: str, at: str, zone: str, opening: str | None) -> None:
    now = local(at, zone).timestamp()
    planner.clock.now = now
    plan = planner.plan(bind(), submit_sm(number))
    expected = now if opening is None else local(opening, zone).timestamp()
    assert plan.not_before == expected
    assert plan.row["not_before"] == expected and plan.part_rows[0]["next_attempt_at"] == expected
    assert plan.expires_at == expected + 48 * 3600  # the full validity counts from the opening


def test_alerts_ignore_windows(planner) -> None:
    planner.clock.now = local("2026-06-07 03:00").timestamp()  # Sunday night
    plan = planner.plan(bind(), submit_sm(FR, "ALERT"))
    assert plan.category == "alert" and plan.not_before == planner.clock.now


def test_reject_instead_of_defer(planner) -> None:
    planner.clock.now = local("2026-06-05 22:00").timestamp()
    with pytest.raises(Refused) as refused:
        planner.plan(bind("reject"), submit_sm(FR))
    assert refused.value.status == CommandStatus.SMSC_RWINDOWCLOSED == 0x401
    planner.clock.now = local("2026-06-06 10:00").timestamp()
    assert planner.plan(bind("reject"), submit_sm(FR)).not_before == planner.clock.now


def test_a_later_schedule_wins(planner) -> None:
    planner.clock.now = local("2026-06-05 22:00").timestamp()
    later = planner.plan(bind(), submit_sm(FR, schedule_delivery_time="000000140000000R"))  # Sat 12:00
    assert later.not_before == local("2026-06-06 12:00").timestamp()
    earlier = planner.plan(bind(), submit_sm(FR, schedule_delivery_time="000000010000000R"))  # Fri 23:00
    assert earlier.not_before == local("2026-06-06 08:00").timestamp()


def test_validity_ending_before_the_opening_is_accepted_to_expire(planner) -> None:
    planner.clock.now = local("2026-06-05 22:00").timestamp()
    plan = planner.plan(bind(), submit_sm(FR, validity_period="000000010000000R"))
    assert plan.expires_at == local("2026-06-05 23:00").timestamp()
    assert plan.not_before == local("2026-06-06 08:00").timestamp()
    assert plan.expires_at < plan.not_before  # the queue ends it EXPIRED at 23:00, never sent


def test_mention_kinds(planner) -> None:
    planner.clock.now = local("2026-06-06 10:00").timestamp()
    fr = planner.plan(bind(), submit_sm(FR))
    assert fr.parts[0].pdu.short_message == b"Soldes\nSTOP au 36180"
    assert fr.row["unsub_token"] is None
    ch = planner.plan(bind(), submit_sm("41791234567"))
    token = ch.row["unsub_token"]
    assert token and len(token) == 8
    assert ch.parts[0].pdu.short_message == f"Soldes\nSTOP: https://x.fr/u/{token}".encode()


def test_unknown_country_gets_the_default_rule_logged_once(planner) -> None:
    import structlog

    planner.clock.now = local("2026-06-05 22:00").timestamp()
    with structlog.testing.capture_logs() as logs:
        for number in ("882160000001", "882160000002"):  # no country: "*" in default_zone (UTC)
            assert planner.plan(bind(), submit_sm(number)).not_before == local("2026-06-06 08:00", "UTC").timestamp()
        planner.plan(bind(), submit_sm(FR))
    warnings = [e for e in logs if e["event"] == "window_unknown_country"]
    assert warnings == [{"event": "window_unknown_country", "calling_code": "+882", "rule": "*",
                         "log_level": "warning"}]
