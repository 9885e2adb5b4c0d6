"""``smscenter connections list`` and ``smscenter accounts`` as an administrator runs them: a
separate process on a temp config, SQLite file and keys folder. Filters (--failed, --ip,
--account, --since as a time and as a duration, --limit), the accounts' last connection and
last SMS, one audit row per run with counts only; bad input (exit 2, nothing audited) and a
caller without the support role's key (exit 1, nothing read)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, select

from protocol.constants import CommandStatus as S
from smscenter.config import load_settings
from storage import connections as sql
from storage import db
from storage.crypto import Keyring
from storage.purge import id_floor
from storage.schema import audit_log
from tests.integration.optout_fixtures import run_cli, run_cli_here
from tests.retention_fixtures import Seeder

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
#: The CLI reads the real clock (--since 1h): rows are placed around it.
NOW = time.time()
HOUR = 3600.0


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def write_config(tmp_path, keys: str = "var/keys"):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "{keys}"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n'
        f'[[account]]\nsystem_id = "beta"\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def setup(tmp_path):
    path = write_config(tmp_path)
    settings = load_settings(path)
    Keyring.create(settings.storage.keys)

    async def migrate():
        engine = db.create_engine(settings.storage.url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    rows = []
    for n, (account, hours_ago, ip, status) in enumerate([
        ("acme", 30, "192.0.2.1", S.ESME_ROK),
        ("acme", 3, "198.51.100.7", S.ESME_RINVPASWD),
        (None, 2, "198.51.100.7", S.ESME_RINVPASWD),
        ("acme", 0.5, "2001:db8::5", None),
    ]):
        at = NOW - hours_ago * HOUR
        rows.append({"id": id_floor(at) + n, "at": at, "system_id": account or "nobody", "account": account,
                     "peer_ip": ip, "peer_port": 41000 + n, "bind_type": "transceiver", "tls": n == 0,
                     "status": status})
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        sql.insert_rows(conn, rows)
        Seeder(conn).message(submitted_at=NOW - 4 * HOUR, ended_days_ago=0)
    engine.dispose()
    return path, settings


def audits(settings) -> list[tuple]:
    engine = create_engine(settings.storage.url)
    with engine.connect() as conn:
        out = [tuple(r) for r in conn.execute(select(audit_log.c.action, audit_log.c.scope, audit_log.c.detail)
                                              .order_by(audit_log.c.id))]
    engine.dispose()
    return out


def table(stdout: str) -> list[list[str]]:
    """The data lines (header and total line dropped), split on runs of two spaces."""
    lines = stdout.strip().splitlines()[1:-1]
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines]


async def test_connections_list_and_its_filters(setup):
    path, settings = setup
    everything = await run_cli("connections", "list", "-c", str(path))
    assert everything.returncode == 0, everything.stderr
    assert table(everything.stdout) == [
        [utc(NOW - 0.5 * HOUR), "acme", "acme", "[2001:db8::5]:41003", "transceiver", "no", "hung up"],
        [utc(NOW - 2 * HOUR), "nobody", "-", "198.51.100.7:41002", "transceiver", "no", "ESME_RINVPASWD"],
        [utc(NOW - 3 * HOUR), "acme", "acme", "198.51.100.7:41001", "transceiver", "no", "ESME_RINVPASWD"],
        [utc(NOW - 30 * HOUR), "acme", "acme", "192.0.2.1:41000", "transceiver", "yes", "ESME_ROK"],
    ]
    assert everything.stdout.strip().endswith("4 bind attempts")

    async def ports(*args: str) -> list[str]:
        done = await run_cli_here("connections", "list", "-c", str(path), *args)
        assert done.returncode == 0, done.stderr
        return [line[3].rsplit(":", 1)[1] for line in table(done.stdout)]

    assert await ports("--failed") == ["41003", "41002", "41001"]
    assert await ports("--ip", "198.51.100.7") == ["41002", "41001"]
    assert await ports("--ip", "2001:0db8:0:0::5") == ["41003"]  # any spelling of the address
    assert await ports("--account", "acme", "--failed") == ["41003", "41001"]
    assert await ports("--since", "1h") == ["41003"]
    assert await ports("--since", datetime.fromtimestamp(NOW - 4 * HOUR, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")) \
        == ["41003", "41002", "41001"]
    assert await ports("--limit", "1") == ["41003"]

    assert audits(settings)[0] == ("connections.list", "*", "rows=4")
    assert ("connections.list", "acme", "rows=2 failed") in audits(settings)
    assert len(audits(settings)) == 8


async def test_accounts_shows_the_last_connection_and_the_last_sms(setup):
    path, settings = setup
    done = await run_cli("accounts", "-c", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[0] == "ACCOUNT"
    cells = [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[1:]]
    assert cells == [
        ["acme", utc(NOW - 0.5 * HOUR), "[2001:db8::5]:41003", "hung up", utc(NOW - 4 * HOUR)],
        ["beta", "never", "-", "-", "never"],
    ]
    assert audits(settings) == [("accounts.list", "*", "accounts=2")]


@pytest.mark.parametrize("args, message", [
    (("--since", "yesterday"), "neither a date-time"),
    (("--since", "5"), "neither a date-time"),
    (("--ip", "999.1.1.1"), "not an IP address"),
    (("--limit", "0"), "not a positive whole number"),
    (("--account", "ghost"), "--account ghost: no such account"),
])
async def test_bad_input_exits_2_and_reads_nothing(setup, args, message):
    path, settings = setup
    done = await run_cli_here("connections", "list", "-c", str(path), *args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    assert audits(settings) == []


async def test_an_account_gone_from_the_config_is_still_listed_from_the_log(setup):
    path, settings = setup
    engine = create_engine(settings.storage.url)
    with engine.begin() as conn:
        sql.insert_rows(conn, [{"id": id_floor(NOW) + 99, "at": NOW, "system_id": "former", "account": "former",
                                "peer_ip": "192.0.2.77", "peer_port": 1, "bind_type": "receiver", "tls": False,
                                "status": 0}])
    engine.dispose()
    done = await run_cli_here("connections", "list", "-c", str(path), "--account", "former")
    assert done.returncode == 0, done.stderr
    assert [line[1] for line in table(done.stdout)] == ["former"]


async def test_without_the_support_roles_key_nothing_is_read(tmp_path):
    path = write_config(tmp_path, keys="var/no-keys-here")
    for args in (("connections", "list"), ("accounts",)):
        done = await run_cli_here(*args, "-c", str(path))
        assert done.returncode == 1 and "this needs the support role" in done.stderr and done.stdout == ""
    assert not (tmp_path / "var" / "smscenter.db").exists()  # the database was not even opened
