"""``smscenter keys retire`` killed with SIGKILL mid-run (a process, small batches, so it is
nearly always between a read and its write or inside a write): nothing is lost — every value
still decrypts, some under the old key, some under the new, and the old key file is still
there — and a second run just continues: no value left under the old key, its file gone, and
a fresh keyring of the folder decrypts every value to what it was."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine

from storage.crypto import FieldCipher, Keyring, dek_filename
from storage.rekey import SETTLE, count_by_key, count_under
from tests.integration.optout_fixtures import REPO
from tests.integration.test_keys_retire import plaintexts
from tests.retention_fixtures import Seeder
from tests.store_helpers import create_schema

pytestmark = pytest.mark.timeout(180)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
N = 3000


def test_sigkill_mid_retire_loses_nothing_and_a_rerun_finishes(tmp_path):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite:///smscenter.db"\nkeys = "keys"\n[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    asyncio.run(create_schema(f"sqlite:///{tmp_path / 'smscenter.db'}"))
    keys = tmp_path / "keys"
    cipher = FieldCipher(Keyring.create(keys))
    engine = create_engine(f"sqlite:///{tmp_path / 'smscenter.db'}")
    with engine.begin() as conn:
        s = Seeder(conn, cipher)
        for i in range(N):
            s.message(parts_total=1 + i % 3, number=f"+3361{i:07d}", text=f"texte {i}")
    with engine.connect() as conn:
        before = plaintexts(conn, cipher)
    total = len(before)
    cipher.keyring.rotate()
    t = os.stat(keys / dek_filename(2)).st_mtime - 10 * SETTLE  # rotated long ago: no settling wait
    os.utime(keys / dek_filename(2), (t, t))

    retire = [sys.executable, "-m", "smscenter", "keys", "retire", "-c", str(path), "1", "--batch", "20"]
    proc = subprocess.Popen(retire, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            left = count_under(conn, 1)
        if left < total - 1000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with engine.connect() as conn:
        per_key = count_by_key(conn)
        assert plaintexts(conn, FieldCipher(Keyring.load(keys))) == before  # nothing lost, nothing half-written
    under = {k: sum(n for (_, key), n in per_key.items() if key == k) for k in (1, 2)}
    assert under[1] > 0 and under[2] >= 1000 and under[1] + under[2] == total, f"the kill did not land mid-run: {under}"
    assert (keys / dek_filename(1)).exists()

    rerun = subprocess.run(retire, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{under[1]} values re-encrypted with key 2 in 1 pass" in rerun.stdout
    assert not (keys / dek_filename(1)).exists()
    with engine.connect() as conn:
        assert count_under(conn, 1) == 0
        assert plaintexts(conn, FieldCipher(Keyring.load(keys))) == before
    engine.dispose()
