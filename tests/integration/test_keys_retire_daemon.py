"""``smscenter keys rotate`` then ``keys retire 1`` beside the running daemon (real ``Daemon``,
its writer process, SQLite file; ``smpp34`` peers): the daemon keeps taking submits while
the retirement runs, its processes do not fail when ``dek-0001.key`` disappears, and it
still decrypts everything afterwards — a receipt held under key 1 before the retirement, a
message stored under key 1 whose receipt the writer process builds after it — and a fresh
keyring of the folder, without key 1, decrypts every value stored."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from sqlalchemy import create_engine

from storage.crypto import FieldCipher, Keyring, dek_filename
from storage.rekey import count_under
from storage.schema import outbox
from tests.integration import mt_fixtures
from tests.integration.mt_fixtures import connector_entry, count_rows, db_path, wait_for
from tests.integration.optout_fixtures import REPO
from tests.integration.test_keys_retire import plaintexts

pytestmark = pytest.mark.timeout(180)
mt, mt_settings = mt_fixtures.mt, mt_fixtures.mt_settings  # the fixtures, for pytest to find

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
DEST = "+33612345678"


async def smscenter(config, *args) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smscenter", *args, "-c", str(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_retire_beside_the_running_daemon(mt, mt_settings, tmp_path):
    up = await mt.upstream(stat=None)  # receipts sent by the test, when it wants them
    settings = mt_settings([connector_entry("op", up.port)])
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite:///{db_path(settings)}"\nkeys = "{settings.storage.keys}"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n', encoding="utf-8",
    )
    keys = settings.storage.keys
    d = await mt.daemon(settings)
    writer = d.store.writer_pid
    assert writer is not None
    tx = await mt.partner(d, "acme", "TX")  # receipts stay in the outbox until an RX binds
    await tx.submit(DEST, b"avant: recu tout de suite")
    await tx.submit(DEST, b"avant: recu apres")
    await wait_for(lambda: len(up.accepted) == 2, what="two submits upstream")
    await up.send_receipt(up.accepted[0], "DELIVRD")
    await wait_for(lambda: count_rows(settings, outbox) == 1, what="the first receipt held (key 1)")

    assert (await smscenter(config, "keys", "rotate"))[0] == 0
    retiring = asyncio.create_task(smscenter(config, "keys", "retire", "1", "--batch", "2"))
    sent = 0
    while not retiring.done():  # traffic goes on beside it, a submit each 50 ms at most
        await tx.submit(DEST, b"pendant %d" % sent)
        sent += 1
        await asyncio.wait({retiring}, timeout=0.05)
    code, out, err = await retiring
    assert code == 0, err
    assert "dek-0001.key removed" in out and sent > 0
    assert not (keys / dek_filename(1)).exists()

    # The daemon goes on: keys refreshed without failing, the writer process the same one.
    assert d.keyring.refresh() == ()
    await tx.submit(DEST, b"apres")
    await wait_for(lambda: len(up.accepted) == 3 + sent, what="every submit upstream")
    for sub in up.accepted[1:]:  # message 2 stored under key 1, now re-encrypted: the writer builds its receipt
        await up.send_receipt(sub, "DELIVRD")
    await wait_for(lambda: count_rows(settings, outbox) == 3 + sent, what="every receipt held")
    assert d.store.writer_pid == writer and d.store.writer_restarts == 0
    rx = await mt.partner(d, "acme", "RX")  # the receipt held under key 1 before, too
    got = await rx.receipts(3 + sent)
    assert all(r.stat == "DELIVRD" for r in got)
    await mt.stop_daemon(d)

    engine = create_engine(f"sqlite:///{db_path(settings)}")
    with engine.connect() as conn:
        assert count_under(conn, 1) == 0
        fresh = FieldCipher(Keyring.load(keys))
        assert fresh.keyring.key_ids == (2,)
        values = plaintexts(conn, fresh)
    engine.dispose()
    assert DEST.encode() in values.values()
