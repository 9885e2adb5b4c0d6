"""Send windows at the queue and the STOP mention, end to end (issue 6).

The real ``Daemon`` runs in-process on a temp SQLite file with an injected wall clock
(``FakeClock``: real time plus an offset that a test moves; ``dispatcher.poke()`` makes the
queue look at its timers again after a jump). On the wire, peers we did not write:
``smpp34.Server`` as the upstream SMSC, ``smpp34.Client`` and hand-packed bytes as partners,
``aiohttp.ClientSession`` on the daemon's HTTP listener. Dates are real 2026 dates in Paris.

1. Marketing submitted on Friday 5 June 2026 at 22:00 is accepted and held; nothing goes
   upstream until Saturday 08:00, then everything does, at the connector's rate. Alerts go at
   once. Held messages show ENROUTE in query_sm, can be cancelled, survive a restart, and are
   counted by ``smscenter_held_for_window`` on /metrics. ``outside_window = "reject"``
   answers 0x401. A validity that ends before the opening gives an EXPIRED receipt and
   nothing upstream. A window that closes while the queue drains (slow connector, clock
   moved across 20:00) leaves the rest for the next opening (Monday 08:00).
2. The STOP mention: appended once ("\\nSTOP au 36180"), not when the text has one, not from a
   short code, not on alerts; it counts towards segments (160 GSM-7 septets = 1 SMS, 161 = 2;
   the same with an extension character and in UCS-2, 70/71). A Swiss number gets an
   unsubscribe link; GET shows the confirm page and changes nothing, POST opts out.
3. Bad window rules: ``smscenter check-config`` exits 2 naming ``windows.rules.<CC>``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from smscenter.config import ConfigError, Settings, load_settings, settings_from_dict
from smscenter.app.daemon import Daemon
from smscenter.runtime.timers import FakeTimers
from tests.cli_here import smscenter_here
from storage.schema import blacklist, messages
from tests.integration.mt_fixtures import (  # noqa: F401 - mt is a fixture
    HOST,
    TEST_SERVER,
    Harness,
    Partner,
    SmscPeer,
    Submitted,
    connector_entry,
    mt,
    query_resp_fields,
    rows,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

PARIS = ZoneInfo("Europe/Paris")
ROOT = Path(__file__).resolve().parents[2]

ENROUTE, DELIVERED, EXPIRED, DELETED = 1, 2, 3, 4
ESME_ROK = 0x00
SMSC_ROPTEDOUT = 0x400
SMSC_RWINDOWCLOSED = 0x401
TON_ALNUM, TON_INTL, TON_NETWORK = 5, 1, 3

MENTION = "\nSTOP au 36180"  # the default, 14 GSM-7 septets / UTF-16 units


def paris(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


class FakeClock:
    """Wall clock = real time + an offset: it runs at the real pace (rates and timeouts
    behave), and ``set`` jumps it to a given instant."""

    def __init__(self, start: datetime) -> None:
        self.set(start)

    def set(self, when: datetime) -> None:
        self.offset = when.timestamp() - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


class TimedPeer(SmscPeer):
    """The upstream SMSC, noting when each submit_sm arrived, on ``clock`` (the daemon's
    virtual time when the test runs on ``FakeTimers``)."""

    def __init__(self, *args, clock=time.monotonic, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.arrivals: list[float] = []

    async def _answer(self, event, sub: Submitted) -> None:
        self.arrivals.append(self.clock())
        await super()._answer(event, sub)


# --------------------------------------------------------------------------- set-up


@pytest.fixture
def build(password_hashes, tmp_path):
    """``build(connectors, accounts=None, optout=None, windows=None)`` → Settings with the
    HTTP listener on 127.0.0.1:0. Accounts: "acme" (marketing, sender ID ACME, own short
    code 38123, defers) and "beta" (marketing, sender ID BETA, rejects outside windows)."""

    def make(connectors: list[dict], *, accounts: list[dict] | None = None, optout: dict | None = None,
             windows: dict | None = None) -> Settings:
        if accounts is None:
            accounts = [
                {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": ["38123"]},
                {"system_id": "beta", "sender_ids": ["BETA"], "outside_window": "reject"},
            ]
        tables = []
        for acc in accounts:
            table = {"category": "marketing", "throughput": 10_000, **acc}
            table.setdefault("password", password_hashes[table["system_id"]])
            tables.append(table)
        data = {
            "server": dict(TEST_SERVER),
            "storage": {"url": "sqlite:///var/smscenter.db", "keys": "var/keys"},
            "account": tables,
            "connector": connectors,
            "route": [{"destinations": ["*"], "connectors": [c["name"] for c in connectors]}],
            "optout": {"short_code": "36180", **(optout or {})},
            "http": {"listen": f"{HOST}:0"},
        }
        if windows is not None:
            data["windows"] = windows
        return settings_from_dict(data, base_dir=tmp_path)

    return make


async def start(mt: Harness, settings: Settings, clock: FakeClock | FakeTimers) -> Daemon:
    d = Daemon(settings, timers=clock) if isinstance(clock, FakeTimers) else Daemon(settings, clock=clock)
    await d.start()
    mt.daemons.append(d)
    for connector in d.connectors.values():
        await connector.wait_up(5)
    return d


async def upstream(mt: Harness, **kwargs) -> TimedPeer:
    peer = await TimedPeer("up", **kwargs).start()
    mt.peers.append(peer)
    return peer


def jump(d: Daemon, clock: FakeClock, when: datetime) -> None:
    clock.set(when)
    d.dispatcher.poke()


async def submit(partner: Partner, dest: str, text: bytes = b"Soldes ce week-end", *, source: str = "ACME",
                 category: str = "MKT", **kwargs):
    ton = TON_ALNUM if not source.isdigit() else TON_NETWORK
    return await partner.submit(dest, text, source_addr=source, source_addr_ton=ton, source_addr_npi=0,
                                dest_addr_ton=TON_INTL, dest_addr_npi=1, service_type=category, **kwargs)


async def metric(d: Daemon, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{HOST}:{d.web.port}/metrics") as resp:
            assert resp.status == 200
            body = await resp.text()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def quiet(peer: SmscPeer, seconds: float = 0.4) -> None:
    """Nothing reaches the upstream for a while."""
    await asyncio.sleep(seconds)
    assert peer.submits == [], [s.destination_addr for s in peer.submits]


def numbers(count: int, base: str = "3361234") -> list[str]:
    return [f"{base}{i:04d}" for i in range(count)]


# --------------------------------------------------------------------------- 1. windows


async def test_held_overnight_then_sent_at_the_connectors_rate(mt, build) -> None:
    """On virtual time: the daemon's clock and timers are ``FakeTimers`` (the queue's own
    timer waits on the loop, for the virtual delay it computed: ``poke`` after a jump)."""
    timers = FakeTimers(paris("2026-06-05 22:00").timestamp())  # a Friday night
    peer = await upstream(mt, clock=timers.now)
    d = await start(mt, build([connector_entry("up", peer.port, throughput=20, window=10)]), timers)
    partner = await mt.partner(d)
    dests = numbers(40)

    for dest in dests:
        resp = await submit(partner, dest)
        assert resp.command_status == ESME_ROK, hex(resp.command_status)  # accepted, not refused
    await quiet(peer)
    assert d.dispatcher.held() == 40
    assert await metric(d, "smscenter_held_for_window") == 40
    assert await metric(d, "smscenter_store_writer_restarts_total") == 0  # a writer process, never restarted

    # Alerts ignore windows: one goes at once while the marketing waits.
    resp = await submit(partner, "33699999999", b"Votre code: 123456", category="ALERT")
    assert resp.command_status == ESME_ROK
    await wait_for(lambda: len(peer.submits) == 1, 5, what="the alert upstream")
    assert peer.submits[0].destination_addr == "33699999999"
    assert d.dispatcher.held() == 40
    [alert] = await partner.receipts(1)
    assert alert.stat == "DELIVRD"

    # Saturday 07:59:59.5: still nothing; half a second later the queue's own timer opens it.
    # (Ten hours pass at once, as on a suspended host: every session's inactivity timeout
    # with them. The upstream bind is opened again; the partner binds again in the morning.)
    await timers.jump(paris("2026-06-06 07:59:59.500").timestamp() - timers.now())
    d.dispatcher.poke()
    await asyncio.sleep(0.3)
    assert len(peer.submits) == 1
    await timers.advance(0.5)
    # The connector's rate on virtual time: the one-second burst at once, then one token
    # each 50 ms as the clock moves.
    await wait_for(lambda: len(peer.submits) == 21, 10, what="the burst upstream")
    opened = timers.now()
    assert opened >= paris("2026-06-06 08:00").timestamp()
    connector = d.connectors["up"]
    for _ in range(150):  # 1.5 s in 10 ms steps; each step's submits answered before the next
        await timers.advance(0.01)
        await wait_for(lambda: connector._in_flight == 0, 5, what="the step's submits answered")
        if len(peer.submits) == 41:
            break
    assert len(peer.submits) == 41

    marketing = peer.submits[1:]
    assert sorted(s.destination_addr for s in marketing) == sorted(dests)  # each once
    # At the connector's rate: 20/s with a one-second burst, so 40 take one second, and
    # no stretch of t seconds carries more than 20 + 20·t submits.
    times = peer.arrivals[1:]
    assert times[-1] - times[0] >= 0.95, times[-1] - times[0]
    for i in range(len(times)):
        for j in range(i + 21, len(times)):
            assert times[j] - times[i] >= (j - i + 1 - 20) / 20 - 0.01, (i, j, times[j] - times[i])
    assert d.dispatcher.held() == 0
    assert await metric(d, "smscenter_held_for_window") == 0
    morning = await mt.partner(d)
    got = await morning.receipts(40, timeout=10)
    assert {r.stat for r in got} == {"DELIVRD"}


async def test_held_messages_query_cancel_restart(mt, build) -> None:
    clock = FakeClock(paris("2026-06-05 22:00"))
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)])
    d = await start(mt, settings, clock)
    raw = await mt.raw(d)
    resps = await raw.submit_pipelined([(n, b"Promo -20%") for n in numbers(3)])  # service_type "": the account's
    assert [r.status for r in resps] == [0, 0, 0]
    ids = [r.cstrings()[0].decode() for r in resps]

    for message_id in ids:
        assert query_resp_fields(await raw.query(message_id))[2] == ENROUTE
    assert (await raw.cancel(ids[1])).status == ESME_ROK
    assert query_resp_fields(await raw.query(ids[1]))[2] == DELETED
    assert d.dispatcher.held() == 2
    assert await metric(d, "smscenter_held_for_window") == 2
    await quiet(peer, 0.2)

    # A restart on the same database and keys: still held, still ENROUTE.
    await raw.close()
    await mt.stop_daemon(d)
    clock.set(paris("2026-06-06 03:00"))
    d2 = await start(mt, settings, clock)
    assert d2.dispatcher.held() == 2
    assert await metric(d2, "smscenter_held_for_window") == 2
    raw2 = await mt.raw(d2)
    assert [query_resp_fields(await raw2.query(i))[2] for i in ids] == [ENROUTE, DELETED, ENROUTE]
    await quiet(peer, 0.3)

    jump(d2, clock, paris("2026-06-06 08:00:01"))
    await wait_for(lambda: len(peer.accepted) == 2, 5, what="the two held messages upstream")
    await asyncio.sleep(0.3)
    assert sorted(s.destination_addr for s in peer.submits) == sorted([numbers(3)[0], numbers(3)[2]])
    await wait_for(lambda: d2.dispatcher.held() == 0 and d2.dispatcher.queued == 0, 5)

    def states() -> dict[str, int]:
        return {str(r["id"]): r["state"] for r in rows(settings, messages)}

    await wait_for(lambda: states()[ids[0]] == states()[ids[2]] == DELIVERED, 5, what="receipts stored")
    assert states()[ids[1]] == DELETED


async def test_reject_instead_of_defer(mt, build) -> None:
    clock = FakeClock(paris("2026-06-05 22:00"))
    peer = await upstream(mt)
    d = await start(mt, build([connector_entry("up", peer.port)]), clock)
    beta = await mt.partner(d, "beta")
    resp = await submit(beta, "33612340000", source="BETA")
    assert resp.command_status == SMSC_RWINDOWCLOSED
    resp = await submit(beta, "33612340000", b"Alerte compte", source="BETA", category="ALERT")
    assert resp.command_status == ESME_ROK  # alerts are never window-checked
    jump(d, clock, paris("2026-06-06 10:00"))
    resp = await submit(beta, "33612340000", source="BETA")
    assert resp.command_status == ESME_ROK
    await wait_for(lambda: len(peer.accepted) == 2, 5)
    assert d.dispatcher.held() == 0


async def test_validity_ending_before_the_opening_expires(mt, build) -> None:
    clock = FakeClock(paris("2026-06-05 22:00"))
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)])
    d = await start(mt, settings, clock)
    partner = await mt.partner(d)
    resp = await submit(partner, "33612340001", validity_period="000000010000000R")  # one hour
    assert resp.command_status == ESME_ROK
    message_id = resp.message_id
    await quiet(peer, 0.2)
    assert partner.received == []

    jump(d, clock, paris("2026-06-05 23:00:01"))  # validity over, window still closed
    got = await partner.receipts(1, timeout=5)
    assert got[0].stat == "EXPIRED" and got[0].id == message_id
    jump(d, clock, paris("2026-06-06 08:00:01"))
    await quiet(peer, 0.4)  # never sent, not even at the opening
    row = next(r for r in rows(settings, messages) if str(r["id"]) == message_id)
    assert row["state"] == EXPIRED


async def step(timers: FakeTimers, d: Daemon, seconds: float, until=lambda: False, tick: float = 0.25) -> None:
    """Move virtual time ``seconds`` forward in ``tick`` steps, each step's submits answered
    by the upstream (real sockets) before the next; stop early once ``until()`` holds."""
    connector = d.connectors["up"]
    for _ in range(round(seconds / tick)):
        if until():
            return
        await timers.advance(tick)
        await wait_for(lambda: connector._in_flight == 0, 5, what="the step's submits answered")


async def test_window_closing_while_the_queue_drains(mt, build) -> None:
    """On virtual time (``FakeTimers``): the connector's 4/s and the closing at 20:00 are the
    test's clock, moved in steps, instead of seconds of real waiting."""
    timers = FakeTimers(paris("2026-06-06 19:59:00").timestamp())  # Saturday evening, open for one more minute
    peer = await upstream(mt, clock=timers.now)
    d = await start(mt, build([connector_entry("up", peer.port, throughput=4, window=10)]), timers)
    partner = await mt.partner(d)
    dests = numbers(20)
    sent = await asyncio.gather(*(submit(partner, dest) for dest in dests))
    assert [r.command_status for r in sent] == [ESME_ROK] * 20
    await step(timers, d, 5, until=lambda: len(peer.submits) >= 6)
    assert len(peer.submits) >= 6, "the first submits at 4/s"

    await timers.jump(paris("2026-06-06 20:00:05").timestamp() - timers.now())  # closed until Monday 08:00
    d.dispatcher.poke()
    at_close = len(peer.submits)
    await step(timers, d, 1.5)  # at 4/s, six more would have gone
    await asyncio.sleep(0.05)  # and what real I/O (the queue's loads) would have let go meanwhile
    after_close = len(peer.submits)
    assert after_close <= at_close + 1, (at_close, after_close)  # at most one already on the wire
    assert d.dispatcher.held() == 20 - after_close
    assert await metric(d, "smscenter_held_for_window") == 20 - after_close

    await timers.jump(paris("2026-06-08 08:00:01").timestamp() - timers.now())  # Monday
    d.dispatcher.poke()
    # The held messages come back from the database (real I/O) before virtual time moves on:
    # stepping while the read is under way would spend the steps on an empty working set.
    # (Loaded or already sent: the bucket refilled over the weekend, a few may go at once.)
    await wait_for(lambda: d.dispatcher.resident + len(peer.submits) >= 20, 10, what="the held messages loaded again")
    await step(timers, d, 10, until=lambda: len(peer.submits) == 20)
    assert len(peer.submits) == 20, "the rest on Monday"
    await step(timers, d, 1.0)  # four more would have gone, were any sent twice
    await asyncio.sleep(0.05)
    assert sorted(s.destination_addr for s in peer.submits) == sorted(dests)  # each exactly once
    assert d.dispatcher.held() == 0


# --------------------------------------------------------------------------- 2. the mention


def gsm(text: str) -> bytes:
    """GSM 03.38 unpacked, for the few characters these tests use (written here, not ours)."""
    out = bytearray()
    for ch in text:
        if ch == "€":
            out += b"\x1b\x65"
        elif ch == "\n" or ch == " " or ch.isascii() and (ch.isalnum() or ch in ".,:!%-/"):
            out.append(ord(ch))
        else:
            raise ValueError(ch)
    return bytes(out)


def upstream_body(sub: Submitted) -> bytes:
    """short_message without its UDH."""
    if sub.esm_class & 0x40:
        return sub.short_message[sub.short_message[0] + 1 :]
    return sub.short_message


async def sent_for(peer: SmscPeer, dest: str, parts: int | None = None) -> list[Submitted]:
    found = await wait_for(
        lambda: (lambda got: got if got and (parts is None or len(got) >= parts) else None)(
            [s for s in peer.submits if s.destination_addr == dest]
        ),
        5,
        what=f"submits to {dest}",
    )
    return found


async def test_stop_mention(mt, build) -> None:
    clock = FakeClock(paris("2026-06-06 10:00"))  # open
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)])
    d = await start(mt, settings, clock)
    partner = await mt.partner(d)

    cases = {
        # dest: (text, source, category, expected upstream text)
        "33600000001": ("Soldes -50% ce week-end", "ACME", "MKT", "Soldes -50% ce week-end" + MENTION),
        "33600000002": ("Soldes. STOP au 36180", "ACME", "MKT", "Soldes. STOP au 36180"),
        "33600000003": ("Soldes -50%", "38123", "MKT", "Soldes -50%"),  # short code: reply works
        "33600000004": ("Votre colis arrive", "ACME", "ALERT", "Votre colis arrive"),
        "32470000005": ("Soldes en Belgique", "ACME", "MKT", "Soldes en Belgique" + MENTION),
    }
    for dest, (text, source, category, _) in cases.items():
        resp = await submit(partner, dest, gsm(text), source=source, category=category)
        assert resp.command_status == ESME_ROK, (dest, hex(resp.command_status))
    for dest, (_, _, _, expected) in cases.items():
        (sub,) = await sent_for(peer, dest)
        assert sub.short_message == gsm(expected), (dest, sub.short_message)
        assert sub.short_message.count(b"STOP") <= 1


async def test_mention_counts_towards_segments(mt, build) -> None:
    clock = FakeClock(paris("2026-06-06 10:00"))
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)])
    d = await start(mt, settings, clock)
    partner = await mt.partner(d)

    # (dest, partner bytes, data_coding, parts upstream, full text upstream as bytes)
    gsm_160 = "a" * 146  # + 14 = 160 septets
    euro_160 = "€" + "b" * 144  # 2 + 144 + 14 = 160 septets
    ucs2_70 = "Ж" + "c" * 55  # 56 + 14 = 70 UTF-16 units
    cases = [
        ("33600000010", gsm(gsm_160), 0, 1, gsm(gsm_160 + MENTION)),
        ("33600000011", gsm(gsm_160 + "a"), 0, 2, gsm(gsm_160 + "a" + MENTION)),
        ("33600000012", gsm(euro_160), 0, 1, gsm(euro_160 + MENTION)),
        ("33600000013", gsm(euro_160 + "b"), 0, 2, gsm(euro_160 + "b" + MENTION)),
        ("33600000014", ucs2_70.encode("utf-16-be"), 8, 1, (ucs2_70 + MENTION).encode("utf-16-be")),
        ("33600000015", (ucs2_70 + "c").encode("utf-16-be"), 8, 2, (ucs2_70 + "c" + MENTION).encode("utf-16-be")),
    ]
    ids = {}
    for dest, body, coding, _, _ in cases:
        resp = await submit(partner, dest, body, data_coding=coding)
        assert resp.command_status == ESME_ROK, (dest, hex(resp.command_status))
        ids[dest] = resp.message_id
    stored = {str(r["id"]): r for r in rows(settings, messages)}
    for dest, _, coding, parts, whole in cases:
        subs = await sent_for(peer, dest, parts)
        await asyncio.sleep(0.05)
        subs = [s for s in peer.submits if s.destination_addr == dest]
        assert len(subs) == parts, (dest, len(subs))
        assert stored[ids[dest]]["parts_total"] == parts  # what the partner is billed
        assert all(s.data_coding == coding for s in subs)
        if parts == 1:
            assert not subs[0].esm_class & 0x40
        else:
            udhs = [s.short_message[: s.short_message[0] + 1] for s in subs]
            assert all(s.esm_class & 0x40 for s in subs)
            assert [u[-2:] for u in udhs] == [bytes([2, 1]), bytes([2, 2])], udhs  # concat 8-bit ref
            subs.sort(key=lambda s: s.short_message[s.short_message[0]])
        assert b"".join(upstream_body(s) for s in subs) == whole, dest


async def test_the_seed_notes_16_character_mention(mt, build) -> None:
    """The seed note's arithmetic with its 16-character mention: 144 + 16 = 1 SMS, 145 = 2."""
    clock = FakeClock(paris("2026-06-06 10:00"))
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)], optout={"mention": "STOP SMS: {short_code}"})
    d = await start(mt, settings, clock)
    partner = await mt.partner(d)
    mention = "\nSTOP SMS: 36180"
    assert len(mention) == 16
    for dest, length, parts in (("33600000020", 144, 1), ("33600000021", 145, 2)):
        assert (await submit(partner, dest, gsm("d" * length))).command_status == ESME_ROK
        subs = await sent_for(peer, dest, parts)
        assert len(subs) == parts
        subs.sort(key=lambda s: s.short_message[s.short_message[0]] if s.esm_class & 0x40 else 0)
        assert b"".join(upstream_body(s) for s in subs) == gsm("d" * length + mention)


async def test_unsubscribe_link_for_switzerland(mt, build) -> None:
    clock = FakeClock(paris("2026-06-06 10:00"))
    peer = await upstream(mt)
    settings = build([connector_entry("up", peer.port)], optout={"unsubscribe_url": "https://x.fr"})
    d = await start(mt, settings, clock)
    partner = await mt.partner(d)
    swiss = "41791234567"

    resp = await submit(partner, swiss, gsm("Soldes en Suisse"))
    assert resp.command_status == ESME_ROK
    (sub,) = await sent_for(peer, swiss)
    match = re.fullmatch(rb"Soldes en Suisse\nSTOP: (https://x\.fr/u/([0-9A-Za-z]{8}))", sub.short_message)
    assert match, sub.short_message
    link, token = match.group(1).decode(), match.group(2).decode()
    assert len(link) <= 25

    base = f"http://{HOST}:{d.web.port}"
    async with aiohttp.ClientSession() as session:
        # A link previewer's GET (and HEAD) shows the page and opts nobody out.
        async with session.get(f"{base}/u/{token}") as page:
            assert page.status == 200
            html = await page.text()
        assert 'method="post"' in html and f"/u/{token}" in html
        async with session.head(f"{base}/u/{token}") as head:
            assert head.status == 200
        assert rows(settings, blacklist) == []
        assert (await submit(partner, swiss, gsm("Encore des soldes"))).command_status == ESME_ROK
        async with session.get(f"{base}/u/zzzzzzzz") as unknown:
            assert unknown.status == 404
        async with session.post(f"{base}/u/zzzzzzzz") as unknown:
            assert unknown.status == 404

        # The click on the button: opted out of this account's marketing.
        async with session.post(f"{base}/u/{token}") as done:
            assert done.status == 200
        entries = rows(settings, blacklist)
        assert [(e["scope"], e["source"]) for e in entries] == [("acme", "link")]
        async with session.post(f"{base}/u/{token}") as again:  # twice: still one entry
            assert again.status == 200
        assert len(rows(settings, blacklist)) == 1

    assert (await submit(partner, swiss, gsm("Derniers jours"))).command_status == SMSC_ROPTEDOUT
    assert (await submit(partner, swiss, gsm("Votre commande"), category="ALERT")).command_status == ESME_ROK
    beta = await mt.partner(d, "beta")  # another account's marketing is not concerned
    assert (await submit(beta, swiss, gsm("Soldes beta"), source="BETA")).command_status == ESME_ROK


# --------------------------------------------------------------------------- 3. bad rules


def write_config(tmp_path: Path, password_hash: str, extra_toml: str) -> Path:
    config = tmp_path / "smscenter.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:2775"]

[storage]
url = "sqlite:///var/smscenter.db"
keys = "var/keys"

[[account]]
system_id = "acme"
password = "{password_hash}"
sender_ids = ["ACME"]

{extra_toml}
""",
        encoding="utf-8",
    )
    return config


def check_config(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smscenter", "check-config", "-c", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )


def test_check_config_names_each_bad_window_rule(tmp_path, password_hashes) -> None:
    config = write_config(tmp_path, password_hashes["acme"], """
[optout]
short_code = "36180"

[windows]
rules = { FR = "08:00-25:00", BE = "mon-sam 08:00-20:00", CH = "mon-fri 08:00-12:00 11:00-18:00", RE = "seed" }
""")
    result = check_config(config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith("windows.rules.FR:") and "25:00" in errors[0]
    assert errors[1].startswith("windows.rules.BE:") and "unknown weekday 'sam'" in errors[1]
    assert errors[2].startswith("windows.rules.CH:") and "overlap" in errors[2]


@pytest.mark.parametrize(
    "toml, key, problem",
    [
        ('[windows]\nrules = { FR = "mon-sat 08:00-25:00" }', "windows.rules.FR", "past 24:00"),
        ('[windows]\nrules = { FR = "mon-sat 20:00-08:00" }', "windows.rules.FR", "cross midnight"),
        ('[windows]\nrules = { FR = "mon-sat 08:00-20:00, sometimes" }', "windows.rules.FR", "unknown clause"),
        ('[windows]\nrules = { FR = 8 }', "windows.rules.FR", "must be a string"),
        ('[windows]\nrules = { France = "seed" }', "windows.rules.France", "not a country"),
        ('[windows]\ndefault_zone = "Europe/Lyon"', "windows.default_zone", "unknown time zone"),
        ('[optout]\nshort_code = "36180"\nmention = "STOP {code}"', "optout.mention", "short_code"),
        ('[optout]\nshort_code = "36180"\nunsubscribe_url = "https://unsubscribe.example.com"',
         "optout.unsubscribe_url", "more than 25"),
        ('[optout]\nshort_code = "36180"\nunsubscribe_url = "x.fr"', "optout.unsubscribe_url", "https://"),
    ],
)
def test_bad_window_and_mention_settings(tmp_path, password_hashes, toml, key, problem) -> None:
    if "[optout]" not in toml:
        toml = '[optout]\nshort_code = "36180"\n\n' + toml
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, password_hashes["acme"], toml))
    assert any(e.startswith(key + ":") and problem in e for e in caught.value.errors), caught.value.errors


def test_good_window_rules_pass_check_config(tmp_path, password_hashes) -> None:
    config = write_config(tmp_path, password_hashes["acme"], """
[optout]
short_code = "36180"
unsubscribe_url = "https://x.fr"
mention = "STOP SMS: {short_code}"

[windows]
rules = { FR = "af2m-2026", CH = "mon-fri 09:00-12:00 14:00-18:00", "*" = "always" }
""")
    settings = load_settings(config)
    assert settings.windows.rules["FR"] == "af2m-2026"
    result = smscenter_here("check-config", "-c", str(config))  # as a process: the bad rules above
    assert result.returncode == 0, result.stderr


def test_windows_command(tmp_path, password_hashes, capsys) -> None:
    from smscenter.cli.main import main

    at = "2026-05-13T20:30+02:00"  # Wednesday evening, the eve of Ascension
    assert main(["windows", "--country", "FR", "--at", at]) == 0  # built-in rules: the seed
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("FR  Wed 2026-05-13 20:30 Europe/Paris")
    assert "[FR: mon-sat 08:00-20:00, no holidays]" in line
    assert line.endswith("closed: next opening Fri 2026-05-15 08:00 Europe/Paris")

    config = write_config(tmp_path, password_hashes["acme"],
                          '[optout]\nshort_code = "36180"\n\n[windows]\nrules = { FR = "af2m-2026", DE = "always" }')
    assert main(["windows", "-c", str(config), "--country", "fr", "--at", at]) == 0
    assert capsys.readouterr().out.rstrip().endswith("open: marketing may go now")  # AF2M: until 21:30

    assert main(["windows", "-c", str(config), "--at", "2026-05-14T10:00+02:00"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert {"FR", "BE", "CH", "DE", "RE", "*"} <= set(lines)
    assert "(today: Ascension Day)" in lines["FR"] and "open" in lines["DE"]

    assert main(["windows", "--country", "XX"]) == 2
    assert main(["windows", "--at", "tomorrow"]) == 2
    assert "--at" in capsys.readouterr().err
