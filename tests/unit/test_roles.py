"""The roles' keys (``storage.crypto``'s look-up-only keyring, group-readable key files, the
group a rotated key takes) and ``smscenter.cli.roles`` (``keyring_for``, the OS user recorded).

Tests run as root, who reads any file: what another user cannot read is proved in
``tests/integration/test_roles.py`` with the CLI run as an unprivileged user."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

import smscenter.cli.roles as roles
from smscenter.cli.verbs import parse_when
from smscenter.cli.roles import Role, RoleError, keyring_for
from storage.crypto import FieldCipher, Keyring, KeyringError, NoDataKeyError

NUMBER = "+33612345678"
DPO_GID, SUPPORT_GID = 64101, 64102


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    Keyring.create(folder)
    return folder


def settings_for(folder):
    return SimpleNamespace(storage=SimpleNamespace(keys=folder))


# ------------------------------------------------------------------ look-up-only keyring


def test_lookup_only_keyring_hashes_like_the_full_one_and_cannot_decrypt(keys):
    full = FieldCipher(Keyring.load(keys))
    token = full.encrypt(b"secret text", b"aad")
    ring = Keyring.load_lookup(keys)
    support = FieldCipher(ring)
    assert ring.lookup_only and ring.key_ids == () and "lookup only" in repr(ring)
    assert support.lookup_hash(NUMBER) == full.lookup_hash(NUMBER)
    assert support.pseudonymise(NUMBER, b"billing") == full.pseudonymise(NUMBER, b"billing")
    for attempt in (lambda: support.decrypt(token, b"aad"), lambda: support.encrypt(b"x"),
                    lambda: ring.current_id, ring.rotate):
        with pytest.raises(NoDataKeyError, match="dpo role"):
            attempt()
    assert ring.refresh() == ()  # never reads a DEK, even when one is added
    assert isinstance(NoDataKeyError("x"), KeyringError)  # callers catching KeyringError see it


def test_lookup_only_load_never_opens_the_data_keys(keys):
    os.chmod(keys / "dek-0001.key", 0o644)  # Keyring.load refuses this file
    with pytest.raises(KeyringError, match="dek-0001.key"):
        Keyring.load(keys)
    assert Keyring.load_lookup(keys).lookup_only
    os.remove(keys / "dek-0001.key")
    assert Keyring.load_lookup(keys).lookup_only


def test_lookup_only_load_keeps_the_permission_check(keys, tmp_path):
    for mode in (0o644, 0o660, 0o604):
        os.chmod(keys / "lookup.key", mode)
        with pytest.raises(KeyringError, match="lookup.key"):
            Keyring.load_lookup(keys)
    os.chmod(keys / "lookup.key", 0o640)
    assert Keyring.load_lookup(keys).lookup_only
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load_lookup(tmp_path / "nowhere")


# ------------------------------------------------------------- the group of a new key


def test_rotate_gives_the_new_key_the_group_of_the_newest(keys):
    os.chown(keys / "dek-0001.key", -1, DPO_GID)
    os.chmod(keys / "dek-0001.key", 0o640)
    ring = Keyring.load(keys)
    assert ring.rotate() == 2
    new = keys / "dek-0002.key"
    assert os.stat(new).st_gid == DPO_GID and mode_of(new) == 0o640
    # The next one follows the newest (2), and still decrypts with the daemon's keyring.
    os.chown(new, -1, DPO_GID + 5)
    assert ring.rotate() == 3
    assert os.stat(keys / "dek-0003.key").st_gid == DPO_GID + 5 and mode_of(keys / "dek-0003.key") == 0o640
    assert Keyring.load(keys).key_ids == (1, 2, 3)


def test_rotate_in_an_owner_only_folder_stays_owner_only(keys):
    Keyring.load(keys).rotate()
    assert mode_of(keys / "dek-0002.key") == 0o600
    assert os.stat(keys / "dek-0002.key").st_gid == os.stat(keys / "dek-0001.key").st_gid


def test_rotate_without_the_right_to_give_the_group_warns_and_stays_owner_only(keys, monkeypatch):
    os.chown(keys / "dek-0001.key", -1, DPO_GID)
    os.chmod(keys / "dek-0001.key", 0o640)

    def refuse(fd, uid, gid):  # what a writer outside the group gets
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    with capture_logs() as logs:
        assert Keyring.load(keys).rotate() == 2
    assert mode_of(keys / "dek-0002.key") == 0o600
    [warning] = [e for e in logs if e["event"] == "key_left_owner_only"]
    assert warning["log_level"] == "warning" and warning["path"].endswith("dek-0002.key")
    assert warning["fix"].startswith("chgrp ")


# ------------------------------------------------------------------------- keyring_for


def test_keyring_for_loads_what_the_role_reads(keys):
    settings = settings_for(keys)
    assert keyring_for(settings, Role.OPS, "v") is None
    support = keyring_for(settings, Role.SUPPORT, "v")
    assert support.lookup_only
    dpo = keyring_for(settings, Role.DPO, "v")
    assert not dpo.lookup_only and dpo.key_ids == (1,)


def test_keyring_for_names_the_role_and_the_files(keys, tmp_path):
    os.chmod(keys / "dek-0001.key", 0o644)
    with pytest.raises(RoleError) as exc:
        keyring_for(settings_for(keys), Role.DPO, "smscenter mo list")
    text = str(exc.value)
    assert text.startswith("smscenter mo list: this needs the dpo role (read access to dek-*.key and lookup.key")
    assert "dek-0001.key" in text
    with pytest.raises(RoleError, match=r"this needs the support role \(read access to lookup.key"):
        keyring_for(settings_for(tmp_path / "nowhere"), Role.SUPPORT, "v")


def test_current_actor_is_the_os_user_not_the_environment(monkeypatch):
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert roles.current_actor() == me
    monkeypatch.setenv("SUDO_USER", "alice")
    assert roles.current_actor() == ("alice" if os.getuid() == 0 else me)
    monkeypatch.setattr(os, "getuid", lambda: 4_000_000)  # no passwd entry
    assert roles.current_actor() == "uid:4000000"


# -------------------------------------------------------------------------- --since


def test_parse_when_reads_dates_and_durations():
    now = 1_800_000_000.0
    assert parse_when("24h", now) == now - 86400
    assert parse_when("1h30m", now) == now - 5400
    assert parse_when("2027-01-15", now) == 1_799_971_200.0  # midnight UTC
    assert parse_when("2027-01-15T02:00+02:00", now) == 1_799_971_200.0
    for bad in ("yesterday", "", "24", "2027-13-01"):
        with pytest.raises(ValueError, match="neither a date-time"):
            parse_when(bad, now)
