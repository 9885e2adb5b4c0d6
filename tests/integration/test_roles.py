"""The three roles enforced by the file system, as an administrator meets them: the keys
folder set up as the README says (``dek-*.key`` group dpo, ``lookup.key`` and the folder
group support, mode 0640/0750, owned by the daemon's user), and the CLI run as an
unprivileged user (uid 65534) with the groups of each role in turn.

- ops (no group): ``blacklist``, ``mo list``, ``billing report``, ``audit list`` and
  ``incident report`` answer "this needs the support role", exit 1, and do not even open the
  database (a config whose database does not exist still has none afterwards); ``retention
  run`` and ``db status|upgrade`` work.
- support: the blacklist, ``mo list`` (hash prefixes), billing, the audit log and the
  incident report work; ``mo list --show-numbers`` needs the dpo role.
- dpo: ``mo list --show-numbers`` shows the numbers, and is audited.

Every verb that read clear data or changed data left its row, with the OS user, and no audit
row holds a number in clear. Tests run as root (who reads anything), so the refusals are
real only because the subprocess is another user: ``test_the_unprivileged_user_really_is_refused``
checks that first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from smscenter.config import load_settings
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.schema import audit_log, blacklist, webhook_backlog
from tests.integration.optout_fixtures import REPO
from tests.retention_fixtures import Seeder

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the CLI as another user: needs root"),
]

NOBODY = 65534
DPO_GID, SUPPORT_GID, OTHER_GID = 64201, 64202, 64203
HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
NUMBER, MO_NUMBER = "+33612345678", "+33677778888"
ROLE_GROUPS = {"ops": [], "support": [SUPPORT_GID], "dpo": [SUPPORT_GID, DPO_GID]}


def _interpreter_for_nobody() -> tuple[str, str] | None:
    """(python, PYTHONPATH) uid 65534 can run: this interpreter when it can reach it, else
    the system's of the same version with this environment's packages on the path (the
    venv's interpreter may live under root's 0700 home)."""
    packages = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}"):
        try:
            ok = subprocess.run([candidate, "-c", "import sqlalchemy, cryptography"], user=NOBODY, cwd="/",
                                env={"PYTHONPATH": packages}, capture_output=True, timeout=60)
        except OSError:  # not there, or not reachable by that user
            continue
        if ok.returncode == 0:
            return candidate, f"{REPO}{os.pathsep}{packages}"
    return None


PYTHON = _interpreter_for_nobody() if os.geteuid() == 0 else None


def set_up_roles(keys: Path) -> None:
    """The README's commands: chgrp and chmod of the keys folder, as root."""
    os.chown(keys, 0, SUPPORT_GID)
    os.chmod(keys, 0o750)
    os.chown(keys / "lookup.key", 0, SUPPORT_GID)
    os.chmod(keys / "lookup.key", 0o640)
    for dek in keys.glob("dek-*.key"):
        os.chown(dek, 0, DPO_GID)
        os.chmod(dek, 0o640)


@pytest.fixture
def site():
    if PYTHON is None:
        pytest.skip("no Python interpreter that uid 65534 can run with this environment's packages")
    """A folder the unprivileged user can traverse (pytest's tmp_path is root's 0700), with
    a config, a database seeded with a message and an MO, and the keys set up for the roles."""
    root = Path(tempfile.mkdtemp(prefix="smscenter-roles-"))
    os.chmod(root, 0o755)
    var = root / "var"
    var.mkdir()
    os.chmod(var, 0o777)  # the database is not what this test is about: every role may write it
    accounts = f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n'
    config = root / "smscenter.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "var/keys"\n{accounts}', encoding="utf-8")
    untouched = root / "untouched.toml"
    untouched.write_text(f'[storage]\nurl = "sqlite:///var/never.db"\nkeys = "var/keys"\n{accounts}', encoding="utf-8")
    settings = load_settings(config)
    cipher = FieldCipher(Keyring.create(settings.storage.keys))

    async def migrate():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        seeder = Seeder(conn, cipher)
        seeder.message(ended_days_ago=3, number=NUMBER)
        seeder.mo(days_ago=3, number=MO_NUMBER, text="PIZZA")
    engine.dispose()
    for path in var.iterdir():
        if path.is_file():
            os.chmod(path, 0o666)
    set_up_roles(settings.storage.keys)
    yield SimpleSite(root, config, untouched, settings, cipher)
    shutil.rmtree(root, ignore_errors=True)


class SimpleSite:
    def __init__(self, root, config, untouched, settings, cipher):
        self.root, self.config, self.untouched, self.settings, self.cipher = root, config, untouched, settings, cipher

    def run(self, role: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        """``python -m smscenter ARGS -c CONFIG`` as uid 65534 with the groups of ``role``."""
        groups = ROLE_GROUPS[role]
        python, path = PYTHON
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": path, "HOME": str(self.root),
               "USER": "mallory"}  # the audit row must show the OS user, not this
        return subprocess.run(
            [python, "-m", "smscenter", *args, "-c", str(config or self.config)],
            capture_output=True, text=True, cwd=self.root, env=env, timeout=60,
            user=NOBODY, group=OTHER_GID, extra_groups=groups,
        )

    def audit(self) -> list[dict]:
        engine = create_engine(self.settings.storage.url)
        with engine.connect() as conn:
            out = [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()]
        engine.dispose()
        return out


def test_the_unprivileged_user_really_is_refused(site):
    """The premise: as uid 65534 the files are what the modes say (root would read all)."""
    keys = site.settings.storage.keys
    probe = "import sys; open(sys.argv[1], 'rb').read()"

    def can_read(role: str, path: Path) -> bool:
        return subprocess.run([PYTHON[0], "-c", probe, str(path)], user=NOBODY, group=OTHER_GID,
                              extra_groups=ROLE_GROUPS[role], capture_output=True).returncode == 0

    assert not can_read("ops", keys / "lookup.key") and not can_read("ops", keys / "dek-0001.key")
    assert can_read("support", keys / "lookup.key") and not can_read("support", keys / "dek-0001.key")
    assert can_read("dpo", keys / "lookup.key") and can_read("dpo", keys / "dek-0001.key")


@pytest.mark.parametrize("verb", [
    ("blacklist", "list"),
    ("blacklist", "export"),
    ("blacklist", "add", "--account", "acme", "--number", NUMBER),
    ("mo", "list"),
    ("billing", "report", "--account", "acme", "--month", "2027-01"),
    ("audit", "list"),
    ("incident", "report", "--since", "2027-01-01", "--until", "2027-02-01"),
])
def test_ops_gets_this_needs_the_support_role_and_nothing_is_read(site, verb):
    result = site.run("ops", *verb, config=site.untouched)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert f"smscenter {verb[0]} {verb[1]}: this needs the support role (read access to lookup.key" in result.stderr
    assert "Permission denied" in result.stderr
    assert not (site.root / "var" / "never.db").exists()  # the database was never opened


def test_ops_runs_its_own_verbs_without_keys(site):
    status = site.run("ops", "db", "status")
    assert status.returncode == 0 and "current" in status.stdout, status.stderr
    purge = site.run("ops", "retention", "run", "--dry-run")
    assert purge.returncode == 0 and "would remove" in purge.stdout, purge.stderr


def test_support_works_with_hashes_and_cannot_decrypt(site):
    added = site.run("support", "blacklist", "add", "--account", "acme", "--number", NUMBER)
    assert added.returncode == 0 and "added" in added.stdout, added.stderr
    listed = site.run("support", "blacklist", "list")
    assert listed.returncode == 0 and site.cipher.lookup_hash(NUMBER).hex()[:12] in listed.stdout
    exported = site.run("support", "blacklist", "export")
    assert exported.returncode == 0 and site.cipher.lookup_hash(NUMBER).hex() in exported.stdout
    mo = site.run("support", "mo", "list", "--status", "all")
    assert mo.returncode == 0 and site.cipher.lookup_hash(MO_NUMBER).hex()[:12] in mo.stdout, mo.stderr
    assert "5B" in mo.stdout and "PIZZA" not in mo.stdout
    billing = site.run("support", "billing", "report", "--account", "acme", "--month", "2027-01")
    assert billing.returncode == 0 and "total" in billing.stdout, billing.stderr
    assert site.run("support", "audit", "list").returncode == 0

    shown = site.run("support", "mo", "list", "--status", "all", "--show-numbers")
    assert shown.returncode == 1 and shown.stdout == ""
    assert "smscenter mo list: this needs the dpo role (read access to dek-*.key and lookup.key" in shown.stderr
    for out in (added.stdout, listed.stdout, exported.stdout, mo.stdout, shown.stderr):
        assert MO_NUMBER[1:] not in out and "677778888" not in out

    rows = site.audit()
    assert [(r["action"], r["actor"], r["scope"]) for r in rows] == [
        ("blacklist.add", "nobody", "acme"),
        ("blacklist.list", "nobody", "*"),
        ("blacklist.export", "nobody", "*"),
    ]  # mo list without numbers reads no clear data; the refused --show-numbers left nothing


def test_dpo_reads_numbers_and_is_audited(site):
    shown = site.run("dpo", "mo", "list", "--status", "all", "--show-numbers")
    assert shown.returncode == 0, shown.stderr
    assert MO_NUMBER[1:] in shown.stdout and "PIZZA" not in shown.stdout
    (row,) = site.audit()
    assert (row["action"], row["actor"], row["scope"], row["detail"]) == (
        "mo.list", "nobody", "*", "1 MO (all), numbers shown")


def test_every_wired_verb_leaves_its_row_and_no_number(site):
    """db upgrade, retention run (rows removed), blacklist reads, mo --show-numbers, incident
    report: one row each, with counts; the numbers used appear in none."""
    engine = create_engine(site.settings.storage.url)
    with engine.begin() as conn:
        Seeder(conn, site.cipher).message(ended_days_ago=400, number=NUMBER)  # past 6 months
        conn.execute(audit_log.delete())
    engine.dispose()
    # db upgrade of an older schema (the untouched config's database, made at 0010 first).
    older = site.root / "var" / "never.db"

    async def at_0010():
        engine = db.create_engine(f"sqlite:///{older}")
        await db.upgrade(engine, "0010")
        await engine.dispose()

    asyncio.run(at_0010())
    os.chmod(older, 0o666)
    upgraded = site.run("ops", "db", "upgrade", config=site.untouched)
    assert upgraded.returncode == 0 and f"0010 -> {db.head_revision()}" in upgraded.stdout, upgraded.stderr
    fresh = create_engine(f"sqlite:///{older}")
    with fresh.connect() as conn:
        (row,) = [dict(r) for r in conn.execute(select(audit_log)).mappings()]
    fresh.dispose()
    assert (row["action"], row["actor"], row["detail"]) == ("db.upgrade", "nobody", f"schema 0010 -> {db.head_revision()}")
    purged = site.run("ops", "retention", "run")
    assert purged.returncode == 0 and "removed" in purged.stdout, purged.stderr
    assert site.run("support", "blacklist", "list", "--account", "acme", "--number", NUMBER).returncode == 1
    assert site.run("dpo", "mo", "list", "--show-numbers", "--status", "all").returncode == 0
    report = site.run("support", "incident", "report", "--since", "2027-01-01", "--until", "2027-02-01", "--format", "json")
    assert report.returncode == 0, report.stderr

    rows = site.audit()
    by_verb = {r["action"]: r for r in rows}
    assert [r["action"] for r in rows] == ["retention.run", "blacklist.list", "mo.list", "incident.report"]
    assert by_verb["retention.run"]["detail"].startswith("removed ") and "message_details" in by_verb["retention.run"]["detail"]
    assert by_verb["blacklist.list"]["detail"] == "1 number checked: not listed"
    assert by_verb["incident.report"]["detail"] == (
        "window 2027-01-01T00:00:00Z..2027-02-01T00:00:00Z: 1 accounts, 4 records held, 2 persons held")
    assert {r["actor"] for r in rows} == {"nobody"}
    dump = repr(rows + [row])
    for number in (NUMBER, MO_NUMBER):
        assert number[1:] not in dump and number[3:] not in dump
    assert NUMBER[3:] not in report.stdout and MO_NUMBER[3:] not in report.stdout


def test_a_rotated_key_keeps_the_dpo_group(site):
    """``keys rotate`` run by the keys' owner (root here): the new DEK is group dpo, 0640,
    so the dpo still reads everything and support still reads nothing but the look-up key."""
    keys = site.settings.storage.keys
    rotated = subprocess.run([sys.executable, "-m", "smscenter", "keys", "rotate", "-c", str(site.config)],
                             capture_output=True, text=True, cwd=site.root, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert rotated.returncode == 0, rotated.stderr
    new = keys / "dek-0002.key"
    assert os.stat(new).st_gid == DPO_GID and (os.stat(new).st_mode & 0o777) == 0o640
    assert site.run("dpo", "mo", "list", "--show-numbers").returncode == 0
    refused = site.run("support", "mo", "list", "--show-numbers")
    assert refused.returncode == 1 and "dpo role" in refused.stderr


def test_an_opt_out_event_needs_the_data_keys_and_the_entry_never_waits_for_it(site):
    """acme has an mo_url: ``blacklist add`` owes it an opt-out event, whose webhook row holds
    the number encrypted. The support role (lookup.key alone) records the entry all the same,
    says the event was not written and exits 1; the dpo role (or the daemon's user) writes it."""
    hooked = site.root / "hooked.toml"
    hooked.write_text(site.config.read_text(encoding="utf-8") + 'mo_url = "https://partner.example/mo"\n'
                      'webhook_secret = "0123456789abcdef-secret"\n', encoding="utf-8")
    support = site.run("support", "blacklist", "add", "--account", "acme", "--number", NUMBER, config=hooked)
    assert support.returncode == 1 and "added" in support.stdout, support.stderr
    assert "opt-out events of acme (mo_url) were not written" in support.stderr
    assert "the entries are recorded" in support.stderr and NUMBER[1:] not in support.stderr
    dpo = site.run("dpo", "blacklist", "add", "--account", "acme", "--number", MO_NUMBER, config=hooked)
    assert dpo.returncode == 0 and "added" in dpo.stdout, dpo.stderr
    engine = create_engine(site.settings.storage.url)
    with engine.connect() as conn:
        entries = conn.execute(select(blacklist.c.dest_hash)).scalars().all()
        hooks = [dict(r) for r in conn.execute(select(webhook_backlog)).mappings()]
    engine.dispose()
    assert sorted(entries) == sorted([site.cipher.lookup_hash(NUMBER), site.cipher.lookup_hash(MO_NUMBER)])
    [row] = hooks
    body = site.cipher.decrypt(row["payload_enc"], b"webhook:%d" % row["id"])
    assert b'"number":"%s"' % MO_NUMBER.encode() in body and b'"source":"manual"' in body
