"""``smscenter keys list|rotate|retire`` as the dpo runs them: a separate process, exit codes,
messages, the keys folder and the database (values per key, audit rows) afterwards."""

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from storage.crypto import FieldCipher, Keyring
from storage.rekey import count_under
from storage.schema import audit_log
from tests.cli_here import smscenter_here
from tests.retention_fixtures import Seeder
from tests.store_helpers import create_schema

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "conf" / "smscenter.example.toml"


def smscenter(*args):
    """The verb as a process, as the dpo runs it; its variations run in this process
    (``smscenter_here``: the same ``main``, no interpreter start) once a test ran it so."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "smscenter", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "smscenter.toml"
    path.write_text(EXAMPLE.read_text().replace('keys = "../var/keys"', f'keys = "{tmp_path / "keys"}"')
                    .replace('url = "sqlite:///../var/smscenter.db"', f'url = "sqlite:///{tmp_path / "smscenter.db"}"'))
    return path


def database(tmp_path):
    return create_engine(f"sqlite:///{tmp_path / 'smscenter.db'}")


def audit_rows(tmp_path) -> list[tuple[str, str, str]]:
    engine = database(tmp_path)
    with engine.connect() as conn:
        rows = [(r.action, r.scope, r.detail) for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    engine.dispose()
    return rows


def test_rotate_adds_the_next_key_and_old_values_still_decrypt(config, tmp_path):
    keys = tmp_path / "keys"
    cipher = FieldCipher(Keyring.create(keys))
    old = cipher.encrypt(b"+33612345678", b"dest:1")

    first = smscenter("keys", "rotate", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"new key 2 ({keys / 'dek-0002.key'}) is current")
    assert "key 1 still decrypts" in first.stdout and "Back up the keys folder" in first.stdout
    second = smscenter("keys", "rotate", "-c", str(config))
    assert second.returncode == 0 and "keys 1, 2 still decrypt" in second.stdout

    assert stat.S_IMODE(os.stat(keys / "dek-0003.key").st_mode) == 0o600
    again = FieldCipher(Keyring.load(keys))
    assert again.keyring.key_ids == (1, 2, 3)
    assert again.key_id_of(again.encrypt(b"new")) == 3
    assert again.decrypt(old, b"dest:1") == b"+33612345678"
    # The look-up key never rotates: keyed hashes (blacklist, look-ups) stay comparable.
    assert again.lookup_hash("+33612345678") == cipher.lookup_hash("+33612345678")

    listing = smscenter("keys", "list", "-c", str(config))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == [
        f"keys folder {keys} (mode 0o700)",
        "  key 1: dek-0001.key  protects 0 values",
        "  key 2: dek-0002.key  protects 0 values",
        "  key 3: dek-0003.key  protects 0 values  current: new values are encrypted with it",
        "  lookup.key: the keyed hashes of numbers (never rotates)",
    ]
    assert audit_rows(tmp_path) == [("keys.rotate", "*", "key=2"), ("keys.rotate", "*", "key=3")]


@pytest.mark.parametrize("verb", ["list", "rotate"])
def test_no_keys_folder_is_an_error_and_no_keys_are_made(config, tmp_path, verb):
    result = smscenter_here("keys", verb, "-c", str(config))
    assert result.returncode == 1 and result.stdout == ""
    assert f"no keys in {tmp_path / 'keys'}" in result.stderr and "restore" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_unsafe_key_file_is_refused_and_nothing_added(config, tmp_path):
    keys = tmp_path / "keys"
    Keyring.create(keys)
    os.chmod(keys / "dek-0001.key", 0o644)
    result = smscenter_here("keys", "rotate", "-c", str(config))
    assert result.returncode == 1
    assert "dek-0001.key" in result.stderr and "chmod 600" in result.stderr
    assert "this needs the dpo role" in result.stderr
    assert sorted(p.name for p in keys.iterdir()) == ["dek-0001.key", "lookup.key"]


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("[storage]", "[storage]\nkeyz = 1"))
    result = smscenter_here("keys", "rotate", "-c", str(bad))
    assert result.returncode == 2
    assert "storage.keyz" in result.stderr and "invalid configuration" in result.stderr



def seed(config, tmp_path, cipher) -> int:
    """The schema, then 4 messages (2 parts, a receipt each) and an MO with its outbox row,
    encrypted with ``cipher``: 4 + 8 + 4 + 2 + 1 = 19 values."""
    asyncio.run(create_schema(f"sqlite:///{tmp_path / 'smscenter.db'}"))
    engine = database(tmp_path)
    with engine.begin() as conn:
        s = Seeder(conn, cipher)
        for i in range(4):
            s.message(parts_total=2, number=f"+336123400{i:02d}")
        s.mo(with_outbox=True)
    engine.dispose()
    return 19


def test_retire_moves_every_value_to_the_current_key_and_removes_the_old_one(config, tmp_path):
    keys = tmp_path / "keys"
    cipher = FieldCipher(Keyring.create(keys))
    n = seed(config, tmp_path, cipher)
    assert smscenter_here("keys", "rotate", "-c", str(config)).returncode == 0
    listing = smscenter_here("keys", "list", "-c", str(config))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1:3] == [
        f"  key 1: dek-0001.key  protects {n} values",
        "  key 2: dek-0002.key  protects 0 values  current: new values are encrypted with it",
    ]

    retired = smscenter("keys", "retire", "-c", str(config), "1", "--batch", "3")
    assert retired.returncode == 0, retired.stderr
    lines = retired.stdout.splitlines()
    assert "pass 1: messages.dest_enc: 4 values re-encrypted" in lines
    assert "pass 1: parts.pdu_enc: 8 values re-encrypted" in lines
    assert lines[-1].startswith(f"key 1 retired: {n} values re-encrypted with key 2 in 1 pass")
    assert "dek-0001.key removed" in lines[-1] and "older backups of it still hold key 1" in lines[-1]
    assert sorted(p.name for p in keys.iterdir()) == ["dek-0002.key", "lookup.key"]
    listing = smscenter_here("keys", "list", "-c", str(config))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1] == (
        f"  key 2: dek-0002.key  protects {n} values  current: new values are encrypted with it")
    # Audited with counts only: no number, no text.
    assert audit_rows(tmp_path) == [
        ("keys.rotate", "*", "key=2"), ("keys.retire", "*", f"key=1 values={n} passes=1 skipped=0 removed=1"),
    ]
    for out in (retired.stdout, retired.stderr, listing.stdout):
        assert "612340" not in out and "ZORGLUB" not in out


@pytest.mark.parametrize("key_id, message", [
    ("2", "key 2 is the current key: new values are encrypted with it. Run `smscenter keys rotate` first"),
    ("7", "no key 7 in {keys} (keys there: 1, 2)"),
])
def test_retire_refuses_the_current_key_and_an_unknown_one(config, tmp_path, key_id, message):
    keys = tmp_path / "keys"
    cipher = FieldCipher(Keyring.create(keys))
    seed(config, tmp_path, cipher)
    Keyring.load(keys).rotate()
    result = smscenter_here("keys", "retire", "-c", str(config), key_id)
    assert result.returncode == 2 and result.stdout == ""
    assert message.format(keys=keys) in result.stderr
    assert sorted(p.name for p in keys.iterdir()) == ["dek-0001.key", "dek-0002.key", "lookup.key"]
    assert audit_rows(tmp_path) == []
    engine = database(tmp_path)
    with engine.connect() as conn:
        assert count_under(conn, 1) == 19  # nothing re-encrypted
    engine.dispose()


@pytest.mark.parametrize("argv", [["abc"], ["0"], ["1", "--batch", "0"], []])
def test_retire_bad_arguments_exit_2(config, tmp_path, argv):
    Keyring.create(tmp_path / "keys")
    result = smscenter_here("keys", "retire", "-c", str(config), *argv)
    assert result.returncode == 2 and result.stdout == ""
    assert "usage:" in result.stderr
    assert not (tmp_path / "smscenter.db").exists()


def test_list_says_when_values_are_under_a_key_the_folder_lacks(config, tmp_path):
    """A key file lost (not retired): its values cannot be decrypted; list says so, exit 1."""
    keys = tmp_path / "keys"
    n = seed(config, tmp_path, FieldCipher(Keyring.create(keys)))
    Keyring.load(keys).rotate()
    os.unlink(keys / "dek-0001.key")
    result = smscenter_here("keys", "list", "-c", str(config))
    assert result.returncode == 1
    assert result.stdout.splitlines()[1] == "  key 2: dek-0002.key  protects 0 values  current: new values are encrypted with it"
    assert f"{n} values are under key 1, which is not in the folder: restore dek-0001.key from your backup" in result.stderr
