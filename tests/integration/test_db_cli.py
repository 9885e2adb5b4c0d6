"""``smscenter db status|upgrade`` as an administrator runs them, and the daemon refusing to
start, in one line and exit code 1, on what an administrator must fix: a schema upgraded by
a newer smscenter, a database with data but no keys. The daemon's start and the first test's
verbs are processes; the other ``db`` calls run the same ``main`` in this process."""

from __future__ import annotations

import sqlite3

import pytest
from smscenter.config import load_settings
from storage import db
from tests.integration.mt_fixtures import free_port
from tests.integration.optout_fixtures import config_data, run_cli, run_cli_here, write_config
from tests.store_helpers import create_schema

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path, password_hashes):
    path = write_config(tmp_path, config_data(password_hashes, free_port()))
    return str(path), load_settings(path)


def database_file(settings) -> str:
    return settings.storage.url.split(":///", 1)[1]


async def test_status_then_upgrade_then_current(config):
    path, settings = config
    head = db.head_revision()

    new = await run_cli("db", "status", "-c", path)
    assert new.returncode == 1 and "no schema yet" in new.stdout, new.stdout + new.stderr

    first = await run_cli("db", "upgrade", "-c", path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema upgraded: none (new database) -> {head}"

    again = await run_cli("db", "upgrade", "-c", path)
    assert again.returncode == 0 and again.stdout.strip() == f"schema {head}: already current"

    status = await run_cli("db", "status", "-c", path)
    assert status.returncode == 0 and status.stdout.strip() == f"schema {head}: current"


async def test_a_schema_from_a_newer_smscenter_is_never_touched(config):
    path, settings = config
    await create_schema(settings.storage.url)
    with sqlite3.connect(database_file(settings)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")

    status = await run_cli_here("db", "status", "-c", path)
    assert status.returncode == 1 and "unknown to this smscenter" in status.stdout

    upgrade = await run_cli_here("db", "upgrade", "-c", path)
    assert upgrade.returncode == 1
    assert "a newer smscenter upgraded it" in upgrade.stderr and "Traceback" not in upgrade.stderr

    run = await run_cli("run", "-c", path)
    assert run.returncode == 1
    log = run.stdout + run.stderr
    assert "start_failed" in log and "SchemaTooNew" in log and "Traceback" not in log
    with sqlite3.connect(database_file(settings)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999",)


async def test_the_daemon_refuses_a_database_with_data_but_no_keys(config):
    path, settings = config
    await create_schema(settings.storage.url)
    with sqlite3.connect(database_file(settings)) as conn:
        conn.execute(
            "INSERT INTO outbox (id, account, kind, message_id, pdu_enc, created_at, expires_at, attempts)"
            " VALUES (1, 'acme', 1, NULL, x'00', 0, 1, 0)"
        )
    run = await run_cli("run", "-c", path)
    assert run.returncode == 1
    log = run.stdout + run.stderr
    assert "start_failed" in log and "no keys" in log and "Traceback" not in log


async def test_bad_config_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisten = 5\n", encoding="utf-8")
    result = await run_cli_here("db", "status", "-c", str(bad))
    assert result.returncode == 2 and "invalid configuration" in result.stderr
