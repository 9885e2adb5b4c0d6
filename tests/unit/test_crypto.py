"""Encryption at rest: keys folder, field tokens, rotation, permissions, keyed hashes."""

from __future__ import annotations

import hmac
import os
import pickle
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from storage.crypto import (
    KEY_CHECK_INTERVAL,
    OVERHEAD,
    DecryptError,
    FieldCipher,
    Keyring,
    KeyringError,
    UnknownKeyError,
)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "var" / "keys"


@pytest.fixture
def cipher(keys):
    return FieldCipher(Keyring.create(keys))


@pytest.fixture(scope="module")
def shared_cipher(tmp_path_factory):
    return FieldCipher(Keyring.create(tmp_path_factory.mktemp("keys") / "k"))


# ---------------------------------------------------------------------------- round trip


def test_round_trip_bytes_and_text(cipher):
    token = cipher.encrypt(b"hello", b"message.text")
    assert cipher.decrypt(token, b"message.text") == b"hello"
    assert len(token) == 5 + OVERHEAD
    assert token[0] == 1 and cipher.key_id_of(token) == 1
    for text in ["Bonjour, répondez STOP", "", "日本語 😀", "\ud800 lone surrogate"]:
        assert cipher.decrypt_text(cipher.encrypt_text(text, b"a"), b"a") == text
    assert cipher.decrypt(bytearray(token), b"message.text") == b"hello"
    assert cipher.decrypt(memoryview(token), b"message.text") == b"hello"


def test_ciphertext_holds_no_plaintext_and_is_randomised(cipher):
    number = b"+33612345678"
    text = "Votre code est 493021. STOP au 36111".encode()
    t1, t2 = cipher.encrypt(number), cipher.encrypt(number)
    assert t1 != t2  # fresh nonce each time
    for token in (t1, t2, cipher.encrypt(text)):
        assert number not in token and b"33612345678" not in token
        assert b"493021" not in token and b"STOP" not in token


@given(data=st.binary(max_size=2048), aad=st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_round_trip_random_bytes(shared_cipher, data, aad):
    token = shared_cipher.encrypt(data, aad)
    assert len(token) == len(data) + OVERHEAD
    assert shared_cipher.decrypt(token, aad) == data


@given(text=st.text(max_size=300))
@settings(max_examples=100, deadline=None)
def test_round_trip_random_text(shared_cipher, text):
    assert shared_cipher.decrypt_text(shared_cipher.encrypt_text(text)) == text


# ------------------------------------------------------------------------------ tampering


def test_tampered_token_fails(cipher):
    token = cipher.encrypt(b"+33612345678", b"row:1")
    for i in range(len(token)):
        bad = bytearray(token)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            cipher.decrypt(bytes(bad), b"row:1")
    with pytest.raises(DecryptError, match="failed authentication"):
        cipher.decrypt(token, b"row:2")  # moved to another row
    with pytest.raises(DecryptError):
        cipher.decrypt(token[:-1], b"row:1")
    with pytest.raises(DecryptError, match="shorter"):
        cipher.decrypt(token[:10], b"row:1")
    with pytest.raises(DecryptError, match="version"):
        cipher.decrypt(b"\x02" + token[1:], b"row:1")


def test_unknown_key_id_is_a_clear_error(cipher, keys):
    token = cipher.encrypt(b"x")
    bad = token[:1] + (7).to_bytes(2, "big") + token[3:]
    with pytest.raises(UnknownKeyError, match=r"key id 7.*dek-0007\.key") as exc:
        cipher.decrypt(bad)
    assert isinstance(exc.value, KeyringError) and isinstance(exc.value, DecryptError)
    assert str(keys) in str(exc.value)


def test_decrypt_text_refuses_non_utf8(cipher):
    with pytest.raises(DecryptError, match="UTF-8"):
        cipher.decrypt_text(cipher.encrypt(b"\xff\xfe"))


# ------------------------------------------------------------------------------- rotation


def test_rotation_old_tokens_decrypt_new_use_new_id(cipher, keys):
    old = cipher.encrypt(b"old value")
    assert cipher.keyring.rotate() == 2
    assert (keys / "dek-0002.key").exists() and mode_of(keys / "dek-0002.key") == 0o600
    new = cipher.encrypt(b"new value")
    assert cipher.key_id_of(old) == 1 and cipher.key_id_of(new) == 2
    assert cipher.decrypt(old) == b"old value" and cipher.decrypt(new) == b"new value"
    # And after a restart, from the folder:
    again = FieldCipher(Keyring.load(keys))
    assert again.keyring.key_ids == (1, 2) and again.keyring.current_id == 2
    assert again.decrypt(old) == b"old value" and again.decrypt(new) == b"new value"


def test_rotation_by_another_node_is_picked_up(keys):
    a = FieldCipher(Keyring.create(keys))
    b = FieldCipher(Keyring.load(keys))
    a.keyring.rotate()
    token = a.encrypt(b"from node a")
    assert a.key_id_of(token) == 2
    assert b.decrypt(token) == b"from node a"  # b re-reads the folder for the newer key
    assert b.keyring.current_id == 2
    # b rotating next never overwrites a's key: it takes id 3.
    b2 = Keyring.load(keys)
    a.keyring.rotate()  # id 3 written by a
    assert b2.rotate() == 4
    assert Keyring.load(keys).key_ids == (1, 2, 3, 4)


def test_a_key_added_to_the_folder_becomes_current_within_the_check_interval(keys):
    """What ``smscenter keys rotate`` relies on: a cipher that is running (the daemon's, its
    writer process's) starts encrypting with a key another process added, by itself."""
    clock = [1000.0]
    running = FieldCipher(Keyring.create(keys), clock=lambda: clock[0])
    before = running.encrypt(b"before")
    assert Keyring.load(keys).rotate() == 2  # another process: the CLI
    clock[0] += KEY_CHECK_INTERVAL / 2
    assert running.key_id_of(running.encrypt(b"x")) == 1  # not looked yet
    clock[0] += KEY_CHECK_INTERVAL
    after = running.encrypt(b"after")
    assert running.key_id_of(after) == 2 and running.keyring.key_ids == (1, 2)
    assert running.decrypt(before) == b"before" and running.decrypt(after) == b"after"

    # A folder that went bad meanwhile: said once, and encryption goes on with what we have.
    Keyring.load(keys).rotate()
    os.chmod(keys / "dek-0003.key", 0o644)
    with capture_logs() as logs:
        for _ in range(3):
            clock[0] += KEY_CHECK_INTERVAL
            assert running.key_id_of(running.encrypt(b"y")) == 2
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["keys_folder_unreadable"] and "dek-0003.key" in warnings[0]["error"]
    os.chmod(keys / "dek-0003.key", 0o600)
    clock[0] += KEY_CHECK_INTERVAL
    assert running.key_id_of(running.encrypt(b"z")) == 3


# ---------------------------------------------------------------------------- permissions


def test_create_makes_private_folder_and_files(keys):
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        ring = Keyring.create(keys)
    finally:
        os.umask(old_umask)
    assert mode_of(keys) == 0o700
    files = sorted(p.name for p in keys.iterdir())
    assert files == ["dek-0001.key", "lookup.key"]  # no temp files left behind
    for name in files:
        assert mode_of(keys / name) == 0o600
        assert len((keys / name).read_bytes()) == 32
    assert (keys / "dek-0001.key").read_bytes() != (keys / "lookup.key").read_bytes()
    assert ring.key_ids == (1,)


def test_create_refuses_existing_keys(keys):
    Keyring.create(keys)
    with pytest.raises(KeyringError, match="already holds keys"):
        Keyring.create(keys)


def test_load_refuses_world_readable_or_group_writable_key(keys):
    Keyring.create(keys)
    path = keys / "dek-0001.key"
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError) as exc:
        Keyring.load(keys)
    assert str(path) in str(exc.value) and "0644" in str(exc.value)
    assert "chmod 600" in str(exc.value)
    os.chmod(path, 0o600)
    for mode in (0o660, 0o650, 0o604, 0o602, 0o601):
        os.chmod(keys / "lookup.key", mode)
        with pytest.raises(KeyringError, match="lookup.key"):
            Keyring.load(keys)
    # Group read is the one loosening (a role's group reads its key: smscenter/cli/roles.py).
    os.chmod(keys / "lookup.key", 0o640)
    os.chmod(path, 0o640)
    assert Keyring.load(keys).key_ids == (1,)


def test_load_refuses_missing_folder_and_malformed_files(keys, tmp_path):
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load(tmp_path / "nowhere")
    Keyring.create(keys)
    (keys / "dek-0001.key").write_bytes(b"short")
    with pytest.raises(KeyringError, match=r"dek-0001\.key is malformed: 5 bytes"):
        Keyring.load(keys)


def test_load_refuses_missing_lookup_key_and_bad_names(keys):
    Keyring.create(keys)
    os.unlink(keys / "lookup.key")
    with pytest.raises(KeyringError, match="lookup.key is missing"):
        Keyring.load(keys)
    os.unlink(keys / "dek-0001.key")
    Keyring.create(keys)  # the folder is empty again
    fd = os.open(keys / "dek-1.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    with pytest.raises(KeyringError, match=r"dek-1\.key is malformed"):
        Keyring.load(keys)


def test_load_ignores_leftover_temp_files(keys):
    Keyring.create(keys)
    (keys / ".dek-0002.key.123.tmp").write_bytes(b"partial")
    assert Keyring.load(keys).key_ids == (1,)


# ---------------------------------------------------------------------------------- open()


def test_open_new_database_creates_then_loads(keys):
    first = FieldCipher(Keyring.open(keys, database_has_data=False))
    token = first.encrypt(b"x")
    second = FieldCipher(Keyring.open(keys, database_has_data=True))
    assert second.decrypt(token) == b"x"


def test_open_refuses_database_with_data_but_no_keys(keys):
    with pytest.raises(KeyringError) as exc:
        Keyring.open(keys, database_has_data=True)
    assert "has encrypted data but no keys" in str(exc.value)
    assert str(keys) in str(exc.value) and "restore the keys folder" in str(exc.value)
    assert not keys.exists()  # nothing was created
    keys.mkdir(parents=True)  # an empty folder is no better
    with pytest.raises(KeyringError, match="no keys"):
        Keyring.open(keys, database_has_data=True)


def test_open_refuses_world_readable_keys(keys):
    Keyring.create(keys)
    os.chmod(keys / "dek-0001.key", 0o604)
    with pytest.raises(KeyringError, match="dek-0001.key"):
        Keyring.open(keys, database_has_data=True)


# ---------------------------------------------------------------------- hashes, pseudonyms


def test_lookup_hash_stable_across_loads_and_keyed(keys, tmp_path):
    a = FieldCipher(Keyring.create(keys))
    h = a.lookup_hash("+33612345678")
    assert h == hmac.new(a.keyring._lookup, b"+33612345678", "sha256").digest()[:16]  # HMAC-SHA256/128
    assert FieldCipher(Keyring.load(keys)).lookup_hash("+33612345678") == h
    assert a.lookup_hash(" +33 6 12-34-56.78 ") == h  # separators dropped
    assert a.lookup_hash("+33612345679") != h
    other = FieldCipher(Keyring.create(tmp_path / "other"))
    assert other.lookup_hash("+33612345678") != h
    # Rotating data keys leaves look-up hashes alone:
    a.keyring.rotate()
    assert a.lookup_hash("+33612345678") == h


@pytest.mark.parametrize("bad", ["33612345678", "0612345678", "+0612345678", "+", "+33abc", ""])
def test_lookup_hash_refuses_unnormalised_numbers_without_echoing(cipher, bad):
    with pytest.raises(ValueError) as exc:
        cipher.lookup_hash(bad)
    if len(bad) > 3:
        assert bad not in str(exc.value)


def test_pseudonymise(keys, tmp_path):
    a = FieldCipher(Keyring.create(keys))
    p = a.pseudonymise("+33612345678", b"billing")
    assert len(p) == 16 and int(p, 16) >= 0
    assert FieldCipher(Keyring.load(keys)).pseudonymise("+33612345678", b"billing") == p
    assert a.pseudonymise("+33612345678", b"stats") != p
    assert a.pseudonymise("+33612345679", b"billing") != p
    assert p != a.lookup_hash("+33612345678")[:8].hex()
    assert FieldCipher(Keyring.create(tmp_path / "o")).pseudonymise("+33612345678", b"billing") != p
    with pytest.raises(ValueError):
        a.pseudonymise("x", b"")


# -------------------------------------------------------------------------------- secrets


def test_reprs_show_no_secrets(keys):
    ring = Keyring.create(keys)
    cipher = FieldCipher(ring)
    secrets = [(keys / n).read_bytes() for n in ("dek-0001.key", "lookup.key")]
    for text in (repr(ring), repr(cipher), str(ring)):
        assert "key_ids=[1]" in text
        for secret in secrets:
            assert secret.hex() not in text and repr(secret) not in text
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        pickle.dumps(cipher)
