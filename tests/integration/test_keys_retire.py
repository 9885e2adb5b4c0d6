"""Key retirement's storage half on both backends (``storage/rekey.py``): after a run every
value decrypts — with a keys folder that no longer has the retired key — and the retired key
protects nothing, found by scanning every binary column of the schema, not only the ones
``rekey`` knows; a row changed meanwhile is left as it was changed (compare-and-set); the
key file goes only once the current key has settled; values that do not decrypt keep the key.
And a running process's keyring (the daemon's, its writer's) when a key file disappears."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from sqlalchemy import LargeBinary, select, update

from storage.crypto import OVERHEAD, FieldCipher, Keyring, UnknownKeyError, dek_filename
from storage.rekey import (
    ENCRYPTED,
    HASHES,
    SETTLE,
    RetireError,
    Retirement,
    count_by_key,
    count_under,
    rewrite,
    scan,
)
from storage.schema import early_receipts, metadata, mo_messages, outbox
from tests.retention_fixtures import NOW, Seeder


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


async def fill(engine, cipher, messages=30) -> None:
    """Every kind of encrypted value under ``cipher``'s current key: messages with 1-3 parts
    and a receipt, MO with and without an outbox row, an early receipt of before 0006."""

    def run(conn):
        s = Seeder(conn, cipher)
        for i in range(messages):
            s.message(ended_days_ago=None if i % 5 == 0 else 10, parts_total=1 + i % 3, number=f"+3361234{i:04d}",
                      text=f"texte {i}")
        for i in range(7):
            s.mo(number=f"+3369876{i:04d}", text=f"reponse {i}", with_outbox=i % 2 == 0)
        conn.execute(early_receipts.insert(), [{
            "connector": "op", "upstream_id": "up-early", "received_at": NOW, "state": None, "error": None,
            "pdu_enc": cipher.encrypt(b"early deliver_sm", b"early:op"),
        }])

    async with engine.begin() as conn:
        await conn.run_sync(run)


def binary_values(conn) -> list[tuple[str, bytes]]:
    """(table.column, value) of every binary value in every table of the schema."""
    out = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, LargeBinary):
                for (value,) in conn.execute(select(column).where(column.is_not(None))):
                    out.append((f"{table.name}.{column.name}", bytes(value)))
    return out


def plaintexts(conn, cipher) -> dict:
    """Every encrypted value, decrypted with ``cipher``: {(column, primary key): plaintext}."""
    out = {}
    for enc in ENCRYPTED:
        for r in conn.execute(select(*enc.keys, enc.col).where(enc.col.is_not(None))):
            row = {k.name: v for k, v in zip(enc.keys, r)}
            out[(enc.name, tuple(r[:-1]))] = cipher.decrypt(bytes(r[-1]), enc.aad(row))
    return out


async def read(engine, fn):
    async with engine.connect() as conn:
        return await conn.run_sync(fn)


def old_enough(keys, key_id: int) -> None:
    """The key was rotated in long ago: every process encrypts with it (no settling wait)."""
    path = keys / dek_filename(key_id)
    t = os.stat(path).st_mtime - 10 * SETTLE
    os.utime(path, (t, t))


def test_every_binary_column_of_the_schema_is_known_as_encrypted_or_a_hash():
    """A new encrypted column must be added to ``rekey.ENCRYPTED`` (with its AAD), or
    retiring a key would strand its values; a new hash column to ``HASHES``."""
    binary = {f"{t.name}.{c.name}" for t in metadata.sorted_tables for c in t.columns if isinstance(c.type, LargeBinary)}
    encrypted = {enc.name for enc in ENCRYPTED}
    assert not encrypted & HASHES
    assert binary == encrypted | HASHES, f"unclassified binary columns: {sorted(binary - encrypted - HASHES)}"


async def test_after_retire_every_value_decrypts_and_the_retired_key_protects_nothing(engine, keys, tmp_path):
    cipher = FieldCipher(Keyring.create(keys))
    await fill(engine, cipher)
    before = await read(engine, lambda c: plaintexts(c, cipher))
    n = len(before)
    assert n == 30 + 60 + 30 + 7 * 2 + 4 + 1  # numbers, parts, receipts, MO number+text, MO outbox, early
    assert await read(engine, count_by_key) == {(name, 1): k for name, k in _per_column(before).items()}
    assert cipher.keyring.rotate() == 2
    old_enough(keys, 2)
    # Without key 1 none of it would open: what the run must change.
    without = tmp_path / "without"
    shutil.copytree(keys, without)
    os.unlink(without / dek_filename(1))
    with pytest.raises(UnknownKeyError):
        FieldCipher(Keyring.load(without)).decrypt(next(v for name, v in await read(engine, binary_values)
                                                        if name == "messages.dest_enc"), b"")

    progress = await Retirement(engine, cipher, 1, batch=7).run()
    assert progress.total == n and progress.passes == 1 and progress.removed

    # The proof: every binary value of every table (not only the columns rekey knows), and
    # none is a token under key 1; every encrypted one is now under key 2.
    values = await read(engine, binary_values)
    tokens = [(name, v) for name, v in values if len(v) >= OVERHEAD and name not in HASHES]
    assert len(tokens) == n
    assert all(v[:3] == b"\x01\x00\x02" for _, v in tokens), "a value is still under another key"
    assert await read(engine, lambda c: count_under(c, 1)) == 0
    assert await read(engine, count_by_key) == {(name, 2): k for name, k in _per_column(before).items()}
    # Then the key file is gone, and a fresh keyring of the folder still decrypts everything.
    assert not (keys / dek_filename(1)).exists()
    fresh = FieldCipher(Keyring.load(keys))
    assert fresh.keyring.key_ids == (2,)
    assert await read(engine, lambda c: plaintexts(c, fresh)) == before


def _per_column(values: dict) -> dict:
    out: dict = {}
    for name, _ in values:
        out[name] = out.get(name, 0) + 1
    return out


async def test_a_row_changed_between_read_and_write_is_left_as_changed(engine, keys):
    """Compare-and-set: the daemon rewrites one outbox row's token and deletes another between
    the batch's read and its write; neither is overwritten nor brought back."""
    cipher = FieldCipher(Keyring.create(keys))
    await fill(engine, cipher, messages=5)
    cipher.keyring.rotate()
    enc = next(e for e in ENCRYPTED if e.name == "outbox.pdu_enc")
    found = await read(engine, lambda c: scan(c, enc, None, 100))
    changed, deleted = found[0], found[1]
    mine = cipher.encrypt(b"the daemon's newer value", enc.aad(changed.row))
    async with engine.begin() as conn:
        await conn.execute(update(outbox).where(outbox.c.id == changed.key[0]).values(pdu_enc=mine, attempts=3))
        await conn.execute(outbox.delete().where(outbox.c.id == deleted.key[0]))

    changes = [(f, cipher.encrypt(cipher.decrypt(f.token, enc.aad(f.row)), enc.aad(f.row))) for f in found]
    async with engine.begin() as conn:
        written, skipped = await conn.run_sync(lambda c: rewrite(c, enc, changes))
    assert (written, skipped) == (len(found) - 2, 2)
    async with engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(select(outbox))}
    assert deleted.key[0] not in rows
    assert bytes(rows[changed.key[0]].pdu_enc) == mine and rows[changed.key[0]].attempts == 3
    assert all(cipher.key_id_of(bytes(r.pdu_enc)) == 2 for r in rows.values())


async def test_concurrent_rewrites_during_a_retire_are_not_lost(engine, keys):
    """A writer (the daemon, on the new key) keeps rewriting MO texts while the retirement
    runs in batches of 3: every row ends with the writer's last text — none is put back to
    what the retirement had read — and nothing is left under the old key."""
    cipher = FieldCipher(Keyring.create(keys))
    await fill(engine, cipher, messages=0)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: [Seeder(c, cipher).mo(number=f"+3361111{i:04d}") for i in range(40)])
        ids = [r[0] for r in await conn.execute(select(mo_messages.c.id).order_by(mo_messages.c.id))]
    cipher.keyring.rotate()
    old_enough(keys, 2)
    daemon = FieldCipher(Keyring.load(keys))
    last: dict[int, bytes] = {}
    done = asyncio.Event()

    async def writer():
        turn = 0
        while not done.is_set():
            mid = ids[(turn * 7) % len(ids)]
            text = b"version %d" % turn
            async with engine.begin() as conn:
                await conn.execute(update(mo_messages).where(mo_messages.c.id == mid)
                                   .values(text_enc=daemon.encrypt(text, b"mo-text:%d" % mid)))
            last[mid] = text
            turn += 1
            await asyncio.sleep(0)
        return turn

    async def retire():
        try:
            return await Retirement(engine, cipher, 1, batch=3).run()
        finally:
            done.set()

    writing = asyncio.create_task(writer())
    progress = await retire()
    turns = await writing
    assert turns > 0 and progress.removed
    fresh = FieldCipher(Keyring.load(keys))
    async with engine.connect() as conn:
        got = {r.id: fresh.decrypt(bytes(r.text_enc), b"mo-text:%d" % r.id)
               for r in await conn.execute(select(mo_messages.c.id, mo_messages.c.text_enc))}
    for mid, text in last.items():
        assert got[mid] == text, f"MO {mid}: the writer's last text was overwritten"
    assert await read(engine, lambda c: count_under(c, 1)) == 0


async def test_the_key_goes_only_after_the_current_one_settled_and_a_last_count(engine, keys):
    """Rotated a moment ago: the run waits ``SETTLE`` (on the injected clock) before the last
    count; a value another process wrote under the old key meanwhile is taken by one more pass
    before the key file goes."""
    cipher = FieldCipher(Keyring.create(keys))
    await fill(engine, cipher, messages=3)
    late = FieldCipher(Keyring.load(keys))
    cipher.keyring.rotate()
    clock = [os.stat(keys / dek_filename(2)).st_mtime + 1.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
        if len(slept) == 1:  # a process still on key 1 writes one more MO meanwhile
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: Seeder(c, late).mo(number="+33655555555", text="tardif"))

    progress = await Retirement(engine, cipher, 1, now=lambda: clock[0], sleep=sleep).run()
    assert slept[0] == pytest.approx(SETTLE - 1.0)
    assert progress.passes == 2 and progress.removed
    assert await read(engine, lambda c: count_under(c, 1)) == 0
    fresh = FieldCipher(Keyring.load(keys))
    texts = await read(engine, lambda c: plaintexts(c, fresh))
    assert b"tardif" in texts.values()


async def test_values_that_do_not_decrypt_keep_the_key(engine, keys):
    cipher = FieldCipher(Keyring.create(keys))
    await fill(engine, cipher, messages=3)
    async with engine.begin() as conn:  # a token copied into another row: its AAD does not match
        first, second = [r[0] for r in await conn.execute(select(mo_messages.c.id).order_by(mo_messages.c.id).limit(2))]
        token = (await conn.execute(select(mo_messages.c.text_enc).where(mo_messages.c.id == first))).scalar_one()
        await conn.execute(update(mo_messages).where(mo_messages.c.id == second).values(text_enc=token))
    cipher.keyring.rotate()
    old_enough(keys, 2)
    retirement = Retirement(engine, cipher, 1)
    with pytest.raises(RetireError, match="1 values under key 1 do not decrypt"):
        await retirement.run()
    assert (keys / dek_filename(1)).exists()
    assert await read(engine, lambda c: count_under(c, 1)) == 1
    # Everything else moved: only the broken value is left under key 1.
    assert sum(v for (_, k), v in (await read(engine, count_by_key)).items() if k == 1) == 1


def test_the_current_key_is_refused(keys):
    cipher = FieldCipher(Keyring.create(keys))
    with pytest.raises(ValueError, match="rotate first"):
        Retirement(None, cipher, 1)


def test_a_running_keyring_when_a_key_file_disappears(keys):
    """What the daemon and its writer process hold: ``refresh`` (each encrypt looks at the
    folder once per ``KEY_CHECK_INTERVAL``) does not fail when a key file is gone, keeps the
    keys it has, and everything under the current key decrypts; only a fresh load lacks it."""
    clock = [0.0]
    running = FieldCipher(Keyring.create(keys), clock=lambda: clock[0])
    old = running.encrypt(b"+33612345678", b"dest:1")
    Keyring.load(keys).rotate()
    clock[0] += 2.0
    new = running.encrypt(b"+33687654321", b"dest:2")  # looked at the folder: key 2 is current
    assert running.key_id_of(new) == 2

    os.unlink(keys / dek_filename(1))  # what `keys retire 1` does at its end
    assert running.keyring.refresh() == ()
    clock[0] += 2.0
    again = running.encrypt(b"+33600000000", b"dest:3")  # looks at the folder again, no error
    assert running.key_id_of(again) == 2 and running._folder_error is None
    assert running.decrypt(new, b"dest:2") == b"+33687654321"
    assert running.decrypt(old, b"dest:1") == b"+33612345678"  # still in memory
    fresh = FieldCipher(Keyring.load(keys))
    assert fresh.keyring.key_ids == (2,)
    assert fresh.decrypt(again, b"dest:3") == b"+33600000000"
    with pytest.raises(UnknownKeyError):
        fresh.decrypt(old, b"dest:1")
