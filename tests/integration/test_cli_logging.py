"""A verb that logs (``retention run``) logs as the daemon does: ``[logging]``'s format and
level, on stderr; its stdout holds its own output only (structlog's default printed there)."""

from __future__ import annotations

import json

import pytest

from smscenter.config import load_settings
from storage import db
from storage.crypto import Keyring
from tests.integration.optout_fixtures import run_cli

pytestmark = pytest.mark.timeout(120)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"


async def _config(tmp_path, logging: str):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        f'[logging]\n{logging}\n'
        '[storage]\nurl = "sqlite:///var/smscenter.db"\nkeys = "var/keys"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    Keyring.create(settings.storage.keys)

    engine = db.create_engine(settings.storage.url)
    await db.upgrade(engine)
    await engine.dispose()
    return str(path)


async def test_retention_run_logs_json_on_stderr_and_nothing_on_stdout(tmp_path):
    run = await run_cli("retention", "run", "-c", await _config(tmp_path, 'format = "json"\nlevel = "info"'))
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]  # JSON, every one
    assert "retention_run" in {line["event"] for line in lines}, run.stderr
    assert all(line["level"] in ("info", "warning", "error") for line in lines)
    assert "retention_run" not in run.stdout and "{" not in run.stdout, run.stdout
    assert run.stdout.splitlines()[-1].startswith("removed 0 rows"), run.stdout


async def test_the_configured_level_holds_for_a_verb(tmp_path):
    run = await run_cli("retention", "run", "-c", await _config(tmp_path, 'format = "json"\nlevel = "error"'))
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "", run.stderr  # info events below the level: none
    assert run.stdout.splitlines()[-1].startswith("removed 0 rows"), run.stdout
