"""The writer process killed with work pending: every call it held hears ``WriterDied``
once, the store says so once (``on_writer_died``: the daemon's one log line), nothing is
reported to the loop's exception handler (no traceback per batch), and what gathered
meanwhile (never sent, so not in doubt) is committed by the writer started next."""

from __future__ import annotations

import asyncio
import os
import signal
from functools import partial

from storage.crypto import FieldCipher, Keyring
from storage.store import Store
from storage.writer import WriterDied
from tests.integration.test_writer_process import NOW, _a_receipt_beside_a_new_message, new_message
from tests.store_helpers import gated_transaction


def _noop(conn) -> int:
    return 1


async def test_killing_the_writer_fails_every_pending_call_once(sqlite_engine, tmp_path):
    keys = tmp_path / "keys"
    Keyring.create(keys)
    gate = tmp_path / "gate"  # kept closed: the writer is killed inside a batch
    cipher = FieldCipher(Keyring.load(keys))
    reported: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    store = Store(sqlite_engine, partial(gated_transaction, str(keys), str(gate)), clock=lambda: NOW)
    died: list[tuple[int | None, int]] = []
    store.on_writer_died = lambda pid, held: died.append((pid, held))
    await store.start()
    try:
        _, _, receipt, stored = await _a_receipt_beside_a_new_message(store, keys, "d1")
        async with asyncio.timeout(5):
            await stored  # the batch in the writer now waits at the gate
        # What gathers meanwhile: a job and a batch of new messages, waiting for the writer.
        job = store.background(_noop)
        waiting = [store.add_message(*new_message(cipher)) for _ in range(5)]
        await asyncio.sleep(0)  # the write loop's turn: it sees the writer busy
        assert not receipt.done() and not any(f.done() for f in waiting)

        pid = store.writer_pid
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            held = await asyncio.gather(_outcome(receipt), return_exceptions=True)
        assert [type(r) for r in held] == [WriterDied], held  # the batch the writer held
        gate.touch()
        async with asyncio.timeout(10):
            later = await asyncio.gather(_outcome(job), *(_outcome(f) for f in waiting), return_exceptions=True)
        assert later[0] == (1, later[0][1]) and later[1:] == [None] * 5, later  # on the next writer
        assert died == [(pid, 1)]
        assert reported == [], reported
        assert store.writer_restarts == 1 and store.writer_pid not in (None, pid)
    finally:
        gate.touch()
        await store.stop()
        loop.set_exception_handler(None)


async def _outcome(fut):
    return await fut
