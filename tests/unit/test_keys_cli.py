"""``smscenter keys list|rotate`` as an administrator runs them: a separate process, exit
codes, messages, and the keys folder afterwards."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from storage.crypto import FieldCipher, Keyring

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "conf" / "smscenter.example.toml"


def smscenter(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "smscenter", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "smscenter.toml"
    path.write_text(EXAMPLE.read_text().replace('keys = "../var/keys"', f'keys = "{tmp_path / "keys"}"'))
    return path


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
        "  key 1: dek-0001.key",
        "  key 2: dek-0002.key",
        "  key 3: dek-0003.key  current: new values are encrypted with it",
        "  lookup.key: the keyed hashes of numbers (never rotates)",
    ]


@pytest.mark.parametrize("verb", ["list", "rotate"])
def test_no_keys_folder_is_an_error_and_no_keys_are_made(config, tmp_path, verb):
    result = smscenter("keys", verb, "-c", str(config))
    assert result.returncode == 1 and result.stdout == ""
    assert f"no keys in {tmp_path / 'keys'}" in result.stderr and "restore" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_unsafe_key_file_is_refused_and_nothing_added(config, tmp_path):
    keys = tmp_path / "keys"
    Keyring.create(keys)
    os.chmod(keys / "dek-0001.key", 0o644)
    result = smscenter("keys", "rotate", "-c", str(config))
    assert result.returncode == 1
    assert "dek-0001.key" in result.stderr and "chmod 600" in result.stderr
    assert sorted(p.name for p in keys.iterdir()) == ["dek-0001.key", "lookup.key"]


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("[storage]", "[storage]\nkeyz = 1"))
    result = smscenter("keys", "rotate", "-c", str(bad))
    assert result.returncode == 2
    assert "storage.keyz" in result.stderr and "invalid configuration" in result.stderr
