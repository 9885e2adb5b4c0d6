"""The CLI as an administrator runs it: a separate process, exit codes, stdout vs stderr. Each
verb runs once as a process; its other inputs run in this process (``smscenter_here``: the
same ``main``, stdout, stderr and exit code, without an interpreter start each)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smscenter.cli.main import main
from smscenter.runtime.passwords import hash_token, token_matches, verify_password
from tests.cli_here import smscenter_here

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "conf" / "smscenter.example.toml"


def smscenter(*args, stdin=""):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "smscenter", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_check_config_example():
    proc = smscenter("check-config", "-c", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok: 1 accounts, 1 connectors, 1 routes"
    assert proc.stderr == ""


def test_check_config_broken(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace("throughput = 200", "throughput = 0")
        .replace('bind_timeout = "10s"', 'bind_timeout = "10 seconds"')
        .replace('connectors = ["operator-a"]', 'connectors = ["operator-b"]')
    )
    proc = smscenter_here("check-config", "-c", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "account[0].throughput: Input should be greater than 0" in lines
    assert any(line.startswith("server.bind_timeout: bad duration") for line in lines)


def test_check_config_cross_check_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        EXAMPLE.read_text().replace('connectors = ["operator-a"]', 'connectors = ["operator-b"]')
    )
    proc = smscenter_here("check-config", "-c", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["route[0].connectors[0]: no connector named 'operator-b'"]


def test_check_config_syntax_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    proc = smscenter_here("check-config", "-c", str(bad))
    assert proc.returncode == 2
    assert "invalid TOML" in proc.stderr and "line 1" in proc.stderr


def test_run_with_broken_config_starts_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nwindow = 0\n")
    proc = smscenter("run", "-c", str(bad))
    assert proc.returncode == 2
    assert "server.window: Input should be greater than 0" in proc.stderr
    assert "nothing started" in proc.stderr


def test_hash_password_round_trip():
    proc = smscenter("hash-password", stdin="s3cret\nignored second line\n")
    assert proc.returncode == 0, proc.stderr
    stored = proc.stdout.strip()
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", stored)
    assert "s3cret" not in proc.stdout + proc.stderr


def test_hash_password_keeps_spaces_strips_crlf():
    proc = smscenter_here("hash-password", stdin=" a b \r\n")
    assert verify_password(" a b ", proc.stdout.strip())


def test_hash_token_prints_what_api_tokens_accepts():
    token = "0123456789abcdef" * 3
    proc = smscenter("hash-token", stdin=token + "\n")
    assert proc.returncode == 0, proc.stderr
    stored = proc.stdout.strip()
    assert stored == hash_token(token) and token_matches(token, (stored,))
    assert token not in proc.stdout + proc.stderr
    short = smscenter_here("hash-token", stdin="short\n")
    assert short.returncode == 2 and "at least 32 characters" in short.stderr and short.stdout == ""


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_hash_password_empty(stdin):
    proc = smscenter_here("hash-password", stdin=stdin)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "empty password" in proc.stderr


def test_hash_password_warns_on_long_password():
    proc = smscenter_here("hash-password", stdin="muchtoolongpassword\n")
    assert proc.returncode == 0
    assert "at most 8" in proc.stderr
    assert verify_password("muchtoolongpassword", proc.stdout.strip())


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["check-config"])
    assert info.value.code == 2


def test_in_process_check_config(capsys):
    assert main(["check-config", "-c", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 accounts")


@pytest.fixture(autouse=True)
def _restore_logging():
    """``run`` configures logging; leave none of it behind for other tests."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_smscenter", False)]:
        root.removeHandler(handler)


def _fake_daemon(monkeypatch, main_func):
    import types

    module = types.ModuleType("smscenter.app.daemon")
    module.main = main_func  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smscenter.app.daemon", module)


def test_run_hands_settings_to_the_daemon(monkeypatch):
    seen = []

    def fake_main(settings, config_path):
        seen.append((settings, config_path))
        return 0

    _fake_daemon(monkeypatch, fake_main)
    assert main(["run", "-c", str(EXAMPLE)]) == 0
    settings, config_path = seen[0]
    assert settings.accounts[0].system_id == "acme"
    assert config_path == str(EXAMPLE)  # the file SIGHUP reloads


def test_run_accepts_an_async_daemon(monkeypatch):
    async def fake_main(settings, config_path):
        return 3

    _fake_daemon(monkeypatch, fake_main)
    assert main(["run", "-c", str(EXAMPLE)]) == 3


def test_run_without_daemon_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "smscenter.app.daemon", None)
    assert main(["run", "-c", str(EXAMPLE)]) == 1
    assert "smscenter.app.daemon" in capsys.readouterr().err
