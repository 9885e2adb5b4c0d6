"""``smscenter subject export|erase`` and ``smscenter account purge`` as an administrator runs
them: a separate process for each verb (its variations in this process, ``run_cli_here``) on a
temp config, SQLite file and keys folder. The export file is
mode 0600 and holds the number's data and nobody else's; another number's export, the erase's
stdout and the audit rows hold no number or text in clear; bad input exits 2 with nothing
done; an unknown number is "nothing held" (exit 0); keys that cannot be read are the "dpo
role" error (exit 1)."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest
from sqlalchemy import create_engine, func, select

from smscenter.config import load_settings
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.schema import audit_log, blacklist, messages, mo_messages, outbox
from tests.integration.optout_fixtures import run_cli, run_cli_here
from tests.integration.test_subject import A, B, TEXT_A, TEXT_B, seed_people

pytestmark = pytest.mark.timeout(180)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"


def write_config(tmp_path, keys: str = "var/keys", accounts=("acme", "beta")) -> str:
    path = tmp_path / f"smscenter-{len(accounts)}-{keys.replace('/', '_')}.toml"
    body = f'[storage]\nurl = "sqlite:///{tmp_path}/var/smscenter.db"\nkeys = "{tmp_path}/{keys}"\n'
    body += '[retention]\npurge_batch = 10\npurge_pause = "0s"\n'
    for a in accounts:
        body += f'[[account]]\nsystem_id = "{a}"\npassword = "{HASH}"\n'
    path.write_text(body, encoding="utf-8")
    return str(path)


@pytest.fixture
def setup(tmp_path):
    config = write_config(tmp_path)
    settings = load_settings(config)
    cipher = FieldCipher(Keyring.create(settings.storage.keys))

    async def migrate():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        made = seed_people(conn, cipher)
    engine.dispose()
    return config, settings, made


def table_counts(settings) -> dict[str, int]:
    engine = create_engine(settings.storage.url)
    with engine.connect() as conn:
        out = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
               for t in (messages, mo_messages, outbox, blacklist, audit_log)}
    engine.dispose()
    return out


def audit_rows(settings) -> list[dict]:
    engine = create_engine(settings.storage.url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()]
    engine.dispose()
    return rows


def in_clear(text: str, *numbers_and_texts: str) -> list[str]:
    """Which of these numbers (with or without +, national form) or texts appear in ``text``."""
    found = []
    for item in numbers_and_texts:
        forms = {item}
        if item.startswith("+33"):
            forms |= {item[1:], "0" + item[3:]}
        if any(f in text for f in forms):
            found.append(item)
    return found


async def test_export_to_a_private_file_erase_and_export_again(setup, tmp_path):
    config, settings, made = setup
    out = tmp_path / "export-a.json"
    out.write_text("old")
    os.chmod(out, 0o644)  # an existing file: replaced, and made private
    run = await run_cli("subject", "export", "-c", config, "--number", "06 11 11 22 22", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert doc["number"] == A and len(doc["messages"]) == 6 and {m["text"] for m in doc["messages"]} == {TEXT_A}
    assert in_clear(out.read_text(), B, TEXT_B) == []
    assert "exported +336****22" in run.stderr and in_clear(run.stderr, A, TEXT_A) == []

    other = await run_cli_here("subject", "export", "-c", config, "--number", B)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["number"] == B
    assert in_clear(other.stdout + other.stderr, A, TEXT_A) == []

    erase = await run_cli("subject", "erase", "-c", config, "--number", A)
    assert erase.returncode == 0, erase.stderr
    assert "left: 2 messages not ended" in erase.stdout and "--include-queued" in erase.stdout
    assert "kept: 2 opt-outs" in erase.stdout
    assert in_clear(erase.stdout + erase.stderr, A, B, TEXT_A, TEXT_B) == []

    erase = await run_cli_here("subject", "erase", "-c", config, "--number", A, "--include-queued")
    assert erase.returncode == 0, erase.stderr
    assert "cancelled first (not ended): 2; failure receipts queued for partners: 2" in erase.stdout
    assert in_clear(erase.stdout + erase.stderr, A, B, TEXT_A, TEXT_B) == []

    again = await run_cli_here("subject", "export", "-c", config, "--number", A)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["messages"] == doc["mo"] == doc["mo_copies_owed"] == [] and doc["invalid_number"] is None
    assert [o["scope"] for o in doc["optouts"]] == ["acme", "beta"]

    rows = audit_rows(settings)
    assert [r["action"] for r in rows] == ["subject.export"] * 2 + ["subject.erase"] * 2 + ["subject.export"]
    assert all(r["actor"] for r in rows)
    assert in_clear(json.dumps([{k: str(v) for k, v in r.items()} for r in rows]), A, B, TEXT_A, TEXT_B) == []


async def test_bad_input_and_nothing_held(setup, tmp_path):
    config, settings, made = setup
    before = table_counts(settings)
    for verb in ("export", "erase"):
        bad = await run_cli_here("subject", verb, "-c", config, "--number", "12ab")
        assert bad.returncode == 2 and "not a valid phone number" in bad.stderr and bad.stdout == ""
        unknown = await run_cli_here("subject", verb, "-c", config, "--number", A, "--account", "nobody")
        assert unknown.returncode == 2 and "no such account" in unknown.stderr
    assert table_counts(settings) == before  # nothing done: not even an audit row

    out = tmp_path / "none.json"
    nothing = await run_cli_here("subject", "export", "-c", config, "--number", "+33699990000", "--output", str(out))
    assert nothing.returncode == 0 and "nothing held about +336****00" in nothing.stderr and not out.exists()
    nothing = await run_cli_here("subject", "erase", "-c", config, "--number", "+33699990000")
    assert nothing.returncode == 0 and "nothing held about +336****00" in nothing.stdout
    after = table_counts(settings)
    assert after == {**before, "audit_log": before["audit_log"] + 2}  # the requests are audited

    no_keys = write_config(tmp_path, keys="missing-keys")
    denied = await run_cli_here("subject", "export", "-c", no_keys, "--number", A)
    assert denied.returncode == 1 and "this needs the dpo role" in denied.stderr and denied.stdout == ""
    assert table_counts(settings) == after


async def test_account_purge(setup, tmp_path):
    config, settings, made = setup
    still = await run_cli_here("account", "purge", "-c", config, "beta")
    assert still.returncode == 2 and "still in" in still.stderr
    gone = write_config(tmp_path, accounts=("acme",))
    purge = await run_cli("account", "purge", "-c", gone, "beta", "--keep-optouts")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.startswith("purged account beta: messages 2, parts 4, outbox rows 2, webhook events 0, MO 0, kept (--keep-optouts)")
    assert in_clear(purge.stdout, A, B, TEXT_A, TEXT_B) == []
    optouts = await run_cli_here("account", "purge", "-c", gone, "beta")  # the opt-outs were all that was left
    assert optouts.returncode == 0, optouts.stderr
    assert optouts.stdout.startswith("purged account beta: messages 0, parts 0, outbox rows 0, webhook events 0, MO 0, opt-outs of its own scope 1")
    again = await run_cli_here("account", "purge", "-c", gone, "beta")
    assert again.returncode == 0 and "nothing held for account beta" in again.stdout
    assert [r["action"] for r in audit_rows(settings)] == ["account.purge"] * 3
