"""``smscenter audit list`` as an administrator runs it: rows written by ``roles.audit`` (on an
injected clock), listed newest first and cut by ``--since`` (a duration back from now or a
date-time), ``--actor``, ``--verb`` (a prefix, taken literally) and ``--limit``; bad input
exits 2."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from smscenter.config import load_settings
from smscenter.cli.roles import audit
from storage import db
from storage.crypto import Keyring
from tests.integration.optout_fixtures import run_cli, run_cli_here

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
HOUR = 3600.0


@pytest.fixture
def site(tmp_path):
    """Four rows: two days, three hours, thirty and ten minutes ago."""
    path = tmp_path / "smscenter.toml"
    path.write_text('[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "var/keys"\n'
                    f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n', encoding="utf-8")
    settings = load_settings(path)
    Keyring.create(settings.storage.keys)
    now = time.time()

    async def fill():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        for ago, actor, verb, scope, detail in [
            (48 * HOUR, "carol", "retention.run", "*", "removed 10 rows: message_details 10"),
            (3 * HOUR, "alice", "blacklist.add", "acme", "manual"),
            (0.5 * HOUR, "bob", "subject.export", "acme", "12 messages, 1 MO"),
            (HOUR / 6, "alice", "blacklist.list", "acme", "3 entries shown"),
        ]:
            await audit(engine, verb, scope, detail, actor=actor, clock=lambda: now - ago)
        await engine.dispose()

    asyncio.run(fill())
    return str(path), now


def listed(stdout: str) -> list[tuple[str, str]]:
    """(actor, verb) of each row shown, in order."""
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "(UTC)", "ACTOR", "VERB"]
    return [(line.split()[2], line.split()[3]) for line in lines[1:-1]]


async def test_lists_newest_first_and_filters(site):
    c, now = site
    every = await run_cli("audit", "list", "-c", c)
    assert every.returncode == 0, every.stderr
    assert listed(every.stdout) == [("alice", "blacklist.list"), ("bob", "subject.export"),
                                    ("alice", "blacklist.add"), ("carol", "retention.run")]
    assert every.stdout.splitlines()[-1] == "4 rows"
    line = every.stdout.splitlines()[1]
    stamp = datetime.fromtimestamp(now - HOUR / 6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert line.startswith(stamp) and line.endswith("acme             3 entries shown")

    recent = await run_cli_here("audit", "list", "-c", c, "--since", "1h")
    assert listed(recent.stdout) == [("alice", "blacklist.list"), ("bob", "subject.export")]
    since = datetime.fromtimestamp(now - 4 * HOUR, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    dated = await run_cli_here("audit", "list", "-c", c, "--since", since)
    assert [v for _, v in listed(dated.stdout)] == ["blacklist.list", "subject.export", "blacklist.add"]
    alice = await run_cli_here("audit", "list", "-c", c, "--actor", "alice")
    assert listed(alice.stdout) == [("alice", "blacklist.list"), ("alice", "blacklist.add")]
    prefix = await run_cli_here("audit", "list", "-c", c, "--verb", "blacklist", "--since", "1h")
    assert listed(prefix.stdout) == [("alice", "blacklist.list")]
    literal = await run_cli_here("audit", "list", "-c", c, "--verb", "blacklist_")  # "_" is no wildcard
    assert listed(literal.stdout) == [] and literal.stdout.splitlines()[-1] == "0 rows"
    one = await run_cli_here("audit", "list", "-c", c, "--limit", "1")
    assert listed(one.stdout) == [("alice", "blacklist.list")]
    assert one.stdout.splitlines()[-1] == "1 rows (the newest 1; --limit for more)"


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "neither a date-time"),
    (["--limit", "0"], "not a positive whole number"),
    (["--limit", "many"], "not a positive whole number"),
])
async def test_bad_input_exits_2(site, args, message):
    c, _ = site
    result = await run_cli_here("audit", "list", "-c", c, *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
