"""``smscenter retention run`` and ``smscenter billing report`` as an administrator runs them:
a separate process on a temp config, SQLite file and keys folder. The purge's output (per
category and account, counts only), the billing report unchanged by the purge in every
format, bad input (exit 2, nothing done), and the database file with its ``-wal`` grepped
afterwards: the purged number, text and their ciphertexts are gone."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import create_engine, func, select

from smscenter.config import load_settings
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.schema import messages, mo_messages, outbox, parts
from tests.integration.optout_fixtures import run_cli, run_cli_here
from tests.retention_fixtures import DAY, Seeder

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
OLD_NUMBER = "+33611112222"
OLD_TEXT = "Soldes ultra secretes XQZWV"
KEPT_NUMBER = "+33633334444"


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        '[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "var/keys"\n'
        '[retention]\npurge_batch = 10\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n'
        f'[[account]]\nsystem_id = "beta"\npassword = "{HASH}"\n[account.retention]\nmessage_details = "30d"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    cipher = FieldCipher(Keyring.create(settings.storage.keys))

    async def migrate():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path, settings, cipher


def seed(settings, cipher, now: float):
    """Old messages and MO of OLD_NUMBER with OLD_TEXT (gone after the purge), a young one of
    KEPT_NUMBER; returns the ciphertexts of the old ones."""
    engine = create_engine(settings.storage.url)
    tokens = []
    with engine.begin() as conn:
        s = Seeder(conn, cipher)
        for i in range(23):
            s.message(ended_days_ago=0, number=OLD_NUMBER, text=OLD_TEXT)
        s.message(account="beta", ended_days_ago=0, number=OLD_NUMBER, text=OLD_TEXT)
        s.mo(days_ago=0, number=OLD_NUMBER, text=OLD_TEXT)
        for row in conn.execute(select(messages.c.dest_enc)):
            tokens.append(bytes(row[0]))
        for row in conn.execute(select(parts.c.pdu_enc)):
            tokens.append(bytes(row[0]))
        for row in conn.execute(select(mo_messages.c.text_enc, mo_messages.c.source_enc)):
            tokens.extend(bytes(t) for t in row)
    engine.dispose()
    return tokens


def counts(settings) -> dict[str, int]:
    engine = create_engine(settings.storage.url)
    with engine.connect() as conn:
        out = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
               for t in (messages, parts, outbox, mo_messages)}
    engine.dispose()
    return out


async def test_retention_run_and_billing_report(setup, monkeypatch):
    path, settings, cipher = setup
    c = str(path)
    # The CLI purges as of the real clock: the fixtures' rows are dated 200 days before it.
    import tests.retention_fixtures as fx

    monkeypatch.setattr(fx, "NOW", time.time() - 200 * DAY)
    tokens = seed(settings, cipher, fx.NOW)
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        Seeder(conn, cipher).message(ended_days_ago=-190, number=KEPT_NUMBER)  # ended 10 days ago
    engine.dispose()
    month = time.strftime("%Y-%m", time.gmtime(fx.NOW))

    before = await run_cli("billing", "report", "-c", c, "--account", "acme", "--month", month, "--format", "json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["messages"] == 23

    dry = await run_cli_here("retention", "run", "-c", c, "--dry-run")  # the run itself: a process, below
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and "dry run: nothing removed" in dry.stdout
    assert counts(settings) == {"messages": 25, "parts": 50, "outbox": 25, "mo_messages": 1}

    run = await run_cli("retention", "run", "-c", c)
    assert run.returncode == 0, run.stderr
    lines = {tuple(line.split()) for line in run.stdout.splitlines()}
    assert ("message_details", "messages", "acme", "23") in lines
    assert ("message_details", "messages", "beta", "1") in lines
    assert ("message_details", "parts", "acme", "46") in lines
    assert ("message_details", "outbox", "acme", "23") in lines
    assert counts(settings) == {"messages": 1, "parts": 2, "outbox": 1, "mo_messages": 1}  # MO keeps 26 months

    for fmt in ("json", "csv", "table"):
        a = await run_cli_here("billing", "report", "-c", c, "--account", "acme", "--month", month, "--format", fmt)
        if fmt == "json":
            assert a.stdout == before.stdout
        assert a.returncode == 0 and "DELIVERED" in a.stdout

    # Gone from the file and its -wal, in clear and as ciphertext.
    files = [p for p in settings_db_files(settings) if p.exists()]
    data = b"".join(p.read_bytes() for p in files)
    assert OLD_TEXT.encode() not in data and OLD_NUMBER.encode() not in data
    mo_tokens = tokens[-2:]
    for token in tokens[:-2]:
        assert token not in data
    assert any(t in data for t in mo_tokens)  # the MO is younger than 26 months: still there


def settings_db_files(settings):
    from pathlib import Path

    base = Path(settings.storage.url.split(":///", 1)[1])
    return [base, base.with_name(base.name + "-wal")]


@pytest.mark.parametrize("args, message", [
    (("--account", "acme", "--month", "2026-13"), "is not a month"),
    (("--account", "acme", "--month", "May"), "is not a month"),
    (("--account", "nobody", "--month", "2026-05"), "no such account"),
])
async def test_billing_report_bad_input(setup, args, message):
    path, _settings, _cipher = setup
    result = await run_cli_here("billing", "report", "-c", str(path), *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""


async def test_retention_run_bad_config(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[retention]\nmessage_details = "2d"\n', encoding="utf-8")
    result = await run_cli_here("retention", "run", "-c", str(path))
    assert result.returncode == 2
    assert "retention.message_details" in result.stderr
