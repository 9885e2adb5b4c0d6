"""``smscenter incident report``: per account and category, the records and distinct persons
(by keyed hash) processed in the window and held at its end, their countries, and the
notification's fields to fill. The counts on SQLite and PostgreSQL (``build_report``), then
the verb as an administrator runs it (Markdown and JSON, bad input, its audit row) with the
output grepped for the numbers used."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, select

from smscenter.config import load_settings
from smscenter.cli.incident_report import CATEGORIES, TO_FILL, build_report, to_markdown
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.schema import audit_log, connection_log
from tests.integration.optout_fixtures import run_cli, run_cli_here
from tests.retention_fixtures import DAY, NOW, Seeder, next_id

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
A, B, C, D, E = "+33611110001", "+32470000002", "+33611110003", "+33611110004", "+33611110005"
IP1, IP2, IP3, IP4 = "192.0.2.11", "192.0.2.22", "198.51.100.33", "203.0.113.44"
SINCE, UNTIL = NOW - 10 * DAY, NOW - 5 * DAY
IN = NOW - 7 * DAY  # inside the window


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def seed(s: Seeder) -> None:
    """acme: 3 messages to A and 1 to B (BE) in the window, 1 to C before it, 1 to D after
    it; an MO from A and A's opt-out in the window. beta: 1 message to A in the window. An
    unroutable MO from E in the window. Two parts per message. Connections: acme from IP1
    twice and IP2 in the window, IP3 before it; a refused bind of no account from IP4."""
    for _ in range(3):
        s.message(submitted_at=IN, number=A, country="FR", ended_days_ago=6)
    s.message(submitted_at=IN, number=B, country="BE", ended_days_ago=6)
    s.message(submitted_at=SINCE - DAY, number=C, country="FR", ended_days_ago=11)
    s.message(submitted_at=UNTIL + DAY, number=D, country="FR", ended_days_ago=3)
    s.message(account="beta", submitted_at=IN, number=A, country="FR", ended_days_ago=6)
    s.mo(days_ago=7, number=A)
    s.mo(account=None, days_ago=7, number=E)
    s.optout(A, days_ago=7)
    for account, ip, at in [("acme", IP1, IN), ("acme", IP1, IN + 60), ("acme", IP2, IN), ("acme", IP3, SINCE - DAY),
                            (None, IP4, IN)]:
        s.conn.execute(connection_log.insert(), [{
            "id": next_id(at), "at": at, "system_id": account or "guess", "account": account, "peer_ip": ip,
            "peer_port": 40000, "bind_type": "transceiver", "tls": False, "status": 0 if account else 0x0F,
        }])


def categories(entry: dict) -> dict:
    return {c["category"]: (c["processed"]["records"], c["processed"]["persons"],
                            c["held"]["records"], c["held"]["persons"]) for c in entry["categories"]}


async def test_counts_per_account_category_and_country(engine):
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: seed(Seeder(c)))
    async with engine.connect() as conn:
        report = await conn.run_sync(lambda c: build_report(c, SINCE, UNTIL, now=NOW))
    by = {a["account"]: a for a in report["accounts"]}
    assert list(by) == ["(no account)", "(unroutable)", "acme", "beta"]
    # (processed records, processed persons, held records, held persons)
    assert categories(by["acme"]) == {
        "numbers": (4, 2, 5, 3), "texts": (8, 2, 10, 3), "mo": (1, 1, 1, 1), "optouts": (1, 1, 1, 1),
        "connection_ips": (3, 2, 4, 3),
    }
    # A is in every category of acme: counted once. D came after the window: not at all.
    # IPs are no numbers: they are not among the persons.
    assert by["acme"]["persons"] == {"processed": 2, "held": 3}
    assert by["acme"]["countries"] == {"processed": {"BE": 1, "FR": 1}, "held": {"BE": 1, "FR": 2}}
    assert categories(by["beta"]) == {"numbers": (1, 1, 1, 1), "texts": (2, 1, 2, 1), "mo": (0, 0, 0, 0),
                                      "optouts": (0, 0, 0, 0), "connection_ips": (0, 0, 0, 0)}
    assert categories(by["(unroutable)"])["mo"] == (1, 1, 1, 1)
    assert categories(by["(no account)"])["connection_ips"] == (1, 1, 1, 1) and by["(no account)"]["persons"] == {
        "processed": 0, "held": 0}
    # Over all accounts, A (acme and beta) is one person: A, B, C, E held; A, B, E processed.
    assert report["total"] == {"processed": {"records": 22, "persons": 3}, "held": {"records": 26, "persons": 4}}
    assert report["to_fill"] == {key: None for key, _, _ in TO_FILL}
    assert [c["category"] for c in report["counted"]] == [c.name for c in CATEGORIES]

    async with engine.connect() as conn:
        only = await conn.run_sync(lambda c: build_report(c, SINCE, UNTIL, "beta", now=NOW))
        empty = await conn.run_sync(lambda c: build_report(c, NOW - 400 * DAY, NOW - 300 * DAY, now=NOW))
    assert [a["account"] for a in only["accounts"]] == ["beta"] and only["accounts"][0] == by["beta"]
    assert empty["accounts"] == [] and "No personal data" in to_markdown(empty)


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        '[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "var/keys"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n'
        f'[[account]]\nsystem_id = "beta"\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    cipher = FieldCipher(Keyring.create(settings.storage.keys))

    async def migrate():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        seed(Seeder(conn, cipher))
    engine.dispose()
    return path, settings, cipher


def audit_rows(settings) -> list[dict]:
    engine = create_engine(settings.storage.url)
    with engine.connect() as conn:
        out = [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()]
    engine.dispose()
    return out


def assert_no_number(text: str, cipher) -> None:
    for ip in (IP1, IP2, IP3, IP4):
        assert ip not in text
    for number in (A, B, C, D, E):
        assert number[1:] not in text and number[3:] not in text
        assert cipher.lookup_hash(number).hex()[:12] not in text


async def test_the_verb_writes_markdown_and_json_and_is_audited(site):
    path, settings, cipher = site
    c = str(path)
    md = await run_cli("incident", "report", "-c", c, "--since", iso(SINCE), "--until", iso(UNTIL))
    assert md.returncode == 0, md.stderr
    text = md.stdout
    assert text.startswith("# Personal data breach: notification draft\n")
    assert f"Window: {iso(SINCE)}Z to {iso(UNTIL)}Z" in text and "24 hours" in text
    assert "### Account acme" in text and "### Account beta" in text
    assert "| numbers: recipients' phone numbers" in text and "| 4 | 2 | 5 | 3 |" in text
    assert "| **distinct persons** | | 2 | | 3 |" in text
    assert "Countries (processed, persons): BE 1, FR 1" in text
    assert "Held: 26 records, 4 distinct persons" in text
    assert "| connection_ips: bind attempts' peer IPs" in text and "| 3 | 2 | 4 | 3 |" in text
    for heading in ("Nature of the breach", "Likely consequences", "Measures taken or proposed",
                    "DPO contact", "When the breach was found", "Customers informed"):
        assert f"### {heading}\n\n_To fill in:" in text
    assert_no_number(text, cipher)

    js = await run_cli_here("incident", "report", "-c", c, "--since", iso(SINCE), "--until", iso(UNTIL),
                       "--account", "acme", "--format", "json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert [a["account"] for a in doc["accounts"]] == ["acme"]
    assert categories(doc["accounts"][0])["numbers"] == (4, 2, 5, 3)
    assert doc["to_fill"]["nature"] is None and doc["window"]["since"] == iso(SINCE) + "Z"
    assert_no_number(js.stdout, cipher)

    rows = audit_rows(settings)
    assert [(r["action"], r["scope"]) for r in rows] == [("incident.report", "*"), ("incident.report", "acme")]
    assert rows[0]["detail"] == (f"window {iso(SINCE)}Z..{iso(UNTIL)}Z: 4 accounts, 26 records held, "
                                 "4 persons held")
    assert all(r["dest_hash"] is None for r in rows)
    assert_no_number(repr(rows), cipher)


@pytest.mark.parametrize("args, message", [
    (["--since", "2027-01-10", "--until", "2027-01-01"], "--until must be after --since"),
    (["--since", "last week", "--until", "2027-01-01"], "neither a date-time"),
    (["--since", "2027-01-01", "--until", "2027-02-01", "--account", "ghost"], "--account ghost: no such account"),
    (["--since", "2027-01-01", "--until", "2027-02-01", "--format", "pdf"], "invalid choice"),
])
async def test_bad_input_exits_2_and_writes_nothing(site, args, message):
    path, settings, _ = site
    result = await run_cli_here("incident", "report", "-c", str(path), *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert audit_rows(settings) == []
