"""``smscenter blacklist …`` and ``smscenter mo list`` as an administrator runs them: a separate
process on a temp config, database and keys folder; exit codes, stdout vs stderr, the audit
log; and a running daemon picking up a change made with the CLI (another process). Once a
verb ran as a process, its variations run in this process (``here``: the same ``main``)."""

from __future__ import annotations

import asyncio

import pytest
from smscenter.cli.admin import CLI_NODE
from smscenter.pipeline.blacklist import Blacklist
from smscenter.config import load_settings
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.optouts import OptOutStore
from storage.schema import audit_log, blacklist
from tests.integration.mt_fixtures import (  # noqa: F401 - mt: fixture
    TUESDAY_MORNING,
    free_port,
    mt,
    port_of,
    rows,
    wait_for,
)
from tests.integration.optout_fixtures import SHARED, SmpplibPartner, config_data, run_cli, run_cli_here, write_config

pytestmark = pytest.mark.timeout(60)

NUMBER = "+33612345678"
OTHER = "+33698765432"


@pytest.fixture
def config(tmp_path, password_hashes):
    """A config file (nothing listening on its connector's port) and its keys folder, made
    as the daemon's first start would."""
    path = write_config(tmp_path, config_data(password_hashes, free_port()))
    settings = load_settings(path)
    keyring = Keyring.create(settings.storage.keys)
    return path, settings, FieldCipher(keyring)


async def cli(*args, env=None):
    """The verb as a process: what an administrator runs (exit code, stdout vs stderr)."""
    return await run_cli(*args, env=env)


async def here(*args):
    """The same verb in this process (``tests/cli_here.py``), for the variations of a verb
    once ``test_add_list_remove_with_actor`` and ``test_mo_list_on_stored_rows`` ran it as one."""
    return await run_cli_here(*args)


def audit_rows(settings) -> list[dict]:
    return sorted(rows(settings, audit_log), key=lambda r: r["id"])


async def test_add_list_remove_with_actor(config):
    path, settings, cipher = config
    c = str(path)
    hash_hex = cipher.lookup_hash(NUMBER).hex()

    added = await cli("blacklist", "add", "-c", c, "--account", "acme", "--number", NUMBER, "--actor", "alice")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added {NUMBER} to the blacklist of acme"
    # The same number written nationally is the same entry.
    again = await cli("blacklist", "add", "-c", c, "--account", "acme", "--number", "06 12 34 56 78")
    assert again.returncode == 0 and "already on the blacklist of acme" in again.stdout

    listed = await cli("blacklist", "list", "-c", c, "--account", "acme")
    assert listed.returncode == 0, listed.stderr
    header, line, summary = listed.stdout.splitlines()
    assert header.split()[:3] == ["SCOPE", "HASH", "SOURCE"]
    assert line.split()[0:3] == ["acme", hash_hex[:12], "manual"] and line.split()[-1] == "alice"
    assert summary.startswith("1 entries for acme")
    assert NUMBER not in listed.stdout and "612345678" not in listed.stdout

    on = await cli("blacklist", "list", "-c", c, "--account", "acme", "--number", "0612345678")
    assert on.returncode == 0 and f"{NUMBER} is on the blacklist of acme" in on.stdout and "by alice" in on.stdout
    off = await cli("blacklist", "list", "-c", c, "--account", "beta", "--number", NUMBER)
    assert off.returncode == 1 and "is not on the blacklist of beta" in off.stdout

    # Remove without --actor: the user behind sudo is recorded.
    removed = await cli("blacklist", "remove", "-c", c, "--account", "acme", "--number", NUMBER,
                        env={"SUDO_USER": "bob"})
    assert removed.returncode == 0 and f"removed {NUMBER}" in removed.stdout
    gone = await cli("blacklist", "list", "-c", c, "--account", "acme", "--number", NUMBER)
    assert gone.returncode == 1
    assert rows(settings, blacklist) == []
    changes = [r for r in audit_rows(settings) if r["action"] in ("blacklist.add", "blacklist.remove")]
    assert [(r["action"], r["actor"], r["scope"]) for r in changes] == [
        ("blacklist.add", "alice", "acme"),
        ("blacklist.remove", "bob", "acme"),
    ]
    # Reads leave a row too (the OS user, counts only): the listing and the three checks.
    reads = [(r["action"], r["scope"], r["detail"]) for r in audit_rows(settings) if r["action"] == "blacklist.list"]
    assert reads == [("blacklist.list", "acme", "1 entries shown"),
                     ("blacklist.list", "acme", "1 number checked: listed"),
                     ("blacklist.list", "beta", "1 number checked: not listed"),
                     ("blacklist.list", "acme", "1 number checked: not listed")]
    # Change rows hold the hash, never the number; CLI ids carry their own node id.
    assert all(r["dest_hash"] == bytes.fromhex(hash_hex) for r in changes)
    assert all(r["dest_hash"] is None for r in audit_rows(settings) if r["action"] == "blacklist.list")
    assert all((r["id"] >> 12) & 0x3FF == CLI_NODE for r in audit_rows(settings))


async def test_wrong_input_exits_2_and_changes_nothing(config, tmp_path):
    path, settings, _ = config
    c = str(path)
    bad = await here("blacklist", "add", "-c", c, "--account", "acme", "--number", "06 12 AB")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--number: not a valid phone number" in bad.stderr
    unknown = await here("blacklist", "add", "-c", c, "--account", "nobody", "--number", NUMBER)
    assert unknown.returncode == 2 and "no such account" in unknown.stderr
    not_ours = await here("blacklist", "add", "-c", c, "--account", "platform:39999", "--number", NUMBER)
    assert not_ours.returncode == 2 and "39999" in not_ours.stderr
    missing = await here("blacklist", "import", "-c", c, "--account", "acme", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert rows(settings, blacklist) == [] and rows(settings, audit_log) == []


async def test_platform_scope(config):
    path, settings, cipher = config
    c = str(path)
    added = await here("blacklist", "add", "-c", c, "--account", f"platform:{SHARED}", "--number", NUMBER)
    assert added.returncode == 0, added.stderr
    assert [(r["scope"], r["dest_hash"]) for r in rows(settings, blacklist)] == [
        (f"sc:{SHARED}", cipher.lookup_hash(NUMBER))]
    # An account on that shared code is told about the platform-level entry.
    check = await here("blacklist", "list", "-c", c, "--account", "acme", "--number", NUMBER)
    assert check.returncode == 0 and f"on the blacklist of platform:{SHARED}" in check.stdout
    everything = await here("blacklist", "list", "-c", c)
    assert f"platform:{SHARED}" in everything.stdout and "1 entries" in everything.stdout


async def test_import_reports_bad_lines_and_keeps_good_ones(config, tmp_path):
    path, settings, cipher = config
    c = str(path)
    csv = tmp_path / "optouts.csv"
    csv.write_text(
        "\ufeffnumber,comment\n"            # 1 header (with a BOM, as spreadsheets write it)
        "+33612345678,from the web form\n"  # 2
        "not a number,oops\n"               # 3 bad
        "\n"                                # 4 blank
        "0698765432;national, semicolon\n"  # 5
        "+3361234\n"                        # 6 bad (too short)
        "+33612345678\n"                    # 7 duplicate of line 2
        "32470123456\n",                    # 8 international without '+'
        encoding="utf-8",
    )
    result = await here("blacklist", "import", "-c", c, "--account", "acme", str(csv), "--actor", "carol")
    assert result.returncode == 1
    bad_lines = result.stderr.splitlines()
    assert len(bad_lines) == 2
    assert bad_lines[0].startswith(f"{csv}: line 3: bad number")
    assert bad_lines[1].startswith(f"{csv}: line 6: bad number")
    assert "imported 4 numbers into the blacklist of acme: 3 new, 1 already listed; 2 bad lines" in result.stdout
    want = {cipher.lookup_hash(n) for n in (NUMBER, "+33698765432", "+32470123456")}
    stored = rows(settings, blacklist)
    assert {r["dest_hash"] for r in stored} == want
    assert all(r["source"] == "import" and r["created_by"] == "carol" for r in stored)
    # One audit row per entry: no line half-applied.
    assert len([r for r in rows(settings, audit_log) if r["action"] == "blacklist.add"]) == 3

    clean = tmp_path / "clean.csv"
    clean.write_text("+33611111111\n+33622222222\n")
    ok = await here("blacklist", "import", "-c", c, "--account", "beta", "--file", str(clean))
    assert ok.returncode == 0 and ok.stderr == ""
    assert "2 new" in ok.stdout


async def test_export_writes_hashes_not_numbers(config, tmp_path):
    path, settings, cipher = config
    c = str(path)
    for number, account in ((NUMBER, "acme"), (OTHER, "acme"), (NUMBER, "beta")):
        r = await here("blacklist", "add", "-c", c, "--account", account, "--number", number, "--actor", "dave")
        assert r.returncode == 0, r.stderr
    out = await here("blacklist", "export", "-c", c, "--account", "acme")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "scope,hash,source,added_utc,added_by"
    assert sorted(line.split(",")[1] for line in lines[1:]) == sorted(
        cipher.lookup_hash(n).hex() for n in (NUMBER, OTHER))
    assert all(line.startswith("acme,") for line in lines[1:])
    assert all(line.split(",")[2] == "manual" and line.split(",")[4] == "dave" for line in lines[1:])
    assert "612345678" not in out.stdout and "698765432" not in out.stdout

    target = tmp_path / "all.csv"
    everything = await here("blacklist", "export", "-c", c, "--file", str(target))
    assert everything.returncode == 0 and everything.stdout == ""
    assert len(target.read_text().splitlines()) == 4  # header + 3 entries
    helptext = await here("blacklist", "export", "--help")
    assert "hashes" in helptext.stdout and "not phone numbers" in " ".join(helptext.stdout.split())


async def test_mo_list_on_stored_rows(config):
    path, settings, cipher = config
    c = str(path)
    empty = await cli("mo", "list", "-c", c, "--status", "all")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines()[-1] == "0 MO (all)"

    # Rows as the daemon stores them (see test_optout_e2e for MO arriving over SMPP).
    engine = db.create_engine(settings.storage.url)
    await db.upgrade(engine)
    store = OptOutStore(engine, IdGenerator())
    for n, (status, reason, account, text) in enumerate([
        ("unroutable", "unknown short code", None, b"Hello"),
        ("routed", "keyword", "acme", b"PIZZA 2"),
    ]):
        mo_id = 1000 + n
        await store.record_mo({
            "id": mo_id, "received_at": 1_767_268_800.0 + n, "connector": "up", "short_code": SHARED,
            "source_hash": cipher.lookup_hash(NUMBER),
            "source_enc": cipher.encrypt(b"33612345678", b"mo-source:%d" % mo_id),
            "text_enc": cipher.encrypt(text, b"mo-text:%d" % mo_id),
            "data_coding": 0, "account": account, "status": status, "reason": reason,
        })
    await engine.dispose()

    default = await here("mo", "list", "-c", c)
    lines = default.stdout.splitlines()
    assert default.returncode == 0 and lines[-1] == "1 MO (unroutable)"
    # The support view: nothing decrypted — the sender's hash prefix, the text's octets.
    hash_prefix = cipher.lookup_hash(NUMBER).hex()[:12]
    assert "2026-01-01 12:00:00" in lines[1] and hash_prefix in lines[1] and lines[1].endswith("unknown short code")
    assert lines[1].split()[-4] == "5B"  # text size, not the text
    assert "Hello" not in default.stdout and "612345678" not in default.stdout
    routed = await here("mo", "list", "-c", c, "--status", "routed", "--show-numbers")
    assert "33612345678" in routed.stdout and "acme" in routed.stdout and routed.stdout.endswith("1 MO (routed)\n")
    assert routed.stdout.splitlines()[1].split()[-2] == "7"  # characters, decrypted (dpo)


async def test_missing_keys_is_an_error(tmp_path, password_hashes):
    path = write_config(tmp_path, config_data(password_hashes, free_port()))
    result = await here("blacklist", "list", "-c", str(path))
    assert result.returncode == 1 and "keys folder" in result.stderr


async def test_running_daemon_picks_up_cli_changes(mt, tmp_path, password_hashes):
    """The daemon's copy of the blacklist follows the table every ``refresh_interval`` (2 s),
    on virtual time: not before the interval, and once it passed."""
    timers = FakeTimers(TUESDAY_MORNING)
    up = await mt.upstream()
    path = write_config(tmp_path, config_data(password_hashes, up.port))
    d = await mt.daemon(load_settings(path), timers=timers)
    acme = await SmpplibPartner(port_of(d), "acme").connect()
    mt.partners.append(acme)
    assert (await acme.submit("33612345678", source="ACME"))[0] == 0

    added = await cli("blacklist", "add", "-c", str(path), "--account", "acme", "--number", NUMBER)
    assert added.returncode == 0, added.stderr
    assert (await acme.submit("33612345678", b"Promo", source="ACME"))[0] == 0  # not re-read yet
    statuses: list[int] = []

    async def refused() -> bool:
        statuses.append((await acme.submit("33612345678", b"Promo", source="ACME"))[0])
        return statuses[-1] == 0x400

    await timers.advance(d.blacklist.refresh_interval)
    await _eventually(refused, 5, "the daemon refuses after the CLI add")  # the re-read's I/O
    removed = await cli("blacklist", "remove", "-c", str(path), "--account", "acme", "--number", NUMBER)
    assert removed.returncode == 0, removed.stderr
    await timers.advance(d.blacklist.refresh_interval)

    async def accepted() -> bool:
        return (await acme.submit("33612345678", b"Promo", source="ACME"))[0] == 0

    await _eventually(accepted, 5, "the daemon accepts after the CLI remove")


async def _eventually(check, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.05)


async def test_cache_sees_changes_committed_out_of_id_order(tmp_path):
    """Writers commit out of id order (the CLI's id made before the daemon's, committed
    after): the follower still sees the change, and applies what the table says."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'bl.db'}")
    await db.upgrade(engine)
    early_ids = IdGenerator(node=CLI_NODE)
    early_id = early_ids.next()  # "made" now, committed later
    await asyncio.sleep(0.01)
    daemon_store = OptOutStore(engine, IdGenerator())
    cache = Blacklist(daemon_store, SHARED, refresh_interval=3600)
    await cache.start()
    h1, h2 = b"\x01" * 16, b"\x02" * 16
    await daemon_store.add("acme", h1, "stop", "mo")  # the later id, committed first
    await cache.refresh()
    assert cache.opted_out("acme", h1, "ACME")

    class Fixed:
        def next(self):
            return early_id

    await OptOutStore(engine, Fixed()).add("acme", h2, "manual", "cli")  # the earlier id
    await cache.refresh()
    assert cache.opted_out("acme", h2, "ACME")
    # A removal followed by a re-read of old events keeps the table's state.
    await daemon_store.remove("acme", h1, "cli")
    await cache.refresh()
    await cache.refresh()
    assert not cache.opted_out("acme", h1, "ACME") and cache.opted_out("acme", h2, "ACME")
    await cache.stop()
    await engine.dispose()


def test_blacklist_help_documents_hashes():
    from tests.cli_here import smscenter_here

    out = smscenter_here("blacklist", "--help")
    assert out.returncode == 0
    assert "keyed hashes" in out.stdout and "platform:36180" in out.stdout and "--actor" in out.stdout
