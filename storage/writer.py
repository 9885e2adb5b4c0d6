"""The group commit in a process of its own (SQLite files).

Why a process: on one interpreter the transaction's Python half (SQLAlchemy, building the
partners' receipts, encrypting them) and the event loop take turns on the GIL, and each
SQLite call the writer makes gives the GIL up and waits to get it back behind the loop. A
benchmark run measured the writer thread at 1.0 s of CPU but 2.6 s inside its transactions
for 6,000 messages: the writer, not the disk, set the pace. In a process of its own the
transaction runs on the other core.

The parent talks to it from the event loop itself (a socket pair, length-prefixed pickles,
an ``asyncio.Protocol``), not from a thread that would compete for the GIL again, and a
reply is handed to its callback in the loop iteration that reads it: a busy loop (hundreds
of submits planned per iteration) must not add one iteration per await between the child's
answer and the store learning of it. Batches are answered in the order they were sent, one
at a time (the store sends the next one from the callback that read the previous answer).

A batch's new messages are committed first, on their own, and said so (``STORED``) before
the rest is applied (``transaction.take_new_messages`` says why): in bench_mt the submits'
latency fell by a tenth and the accepted rate rose by about as much, for one more commit
per batch.

Besides batches, the child runs *jobs* (``Job``): a picklable ``fn(conn)`` in a transaction
of its own, answered with its result and how long the transaction held the write lock —
the retention purge's batches. The store sends one only while no batch is waiting
(``Store.background``): a job is low-priority work that takes its turn between two commits,
never a second writer competing for SQLite's lock (whose busy handler sleeps, in steps of up
to 100 ms, before it tries again: the purge's stall on submits, measured in bench_purge).

The child is started with the ``spawn`` method (a clean interpreter: no inherited sockets,
threads or SQLite handles), builds its ``Transaction`` with the picklable factory it is
given (the factory opens the keys itself), then answers batches: ``Work`` in, (outcomes,
outbox rows the transaction added) out. The values crossing are the rows as stored
(numbers and text already encrypted), the bodies of upstream receipts, and the partners'
receipt PDUs coming back.

It ignores SIGINT and SIGTERM (systemd and a terminal's Ctrl-C signal the whole group): the
daemon's staged shutdown still commits through it, then tells it to stop. When the daemon
dies, end-of-file on the socket stops it; a commit it was running completes or rolls back
on its own, and nothing it committed was acknowledged before the daemon heard of it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import signal
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .transaction import Transaction, Work, take_new_messages

#: Seconds to wait for the child to start (imports, keys, first connection).
START_TIMEOUT = 60.0
_HEADER = struct.Struct("!Q")  # the length of the pickle that follows

#: A batch's answer: (True, outcomes, outbox rows added, webhook rows added: id and account) or (False, exception); before it,
#: for a batch that has more than new messages, ``STORED``.
Reply = tuple
#: The batch's new messages (and their parts) are committed; the rest of its answer follows.
STORED: Reply = (None,)
ReplyCallback = Callable[[Reply], None]


@dataclass(frozen=True, slots=True)
class Job:
    """Low-priority work for the writer: ``fn(conn)`` in one transaction of its own, answered
    ``(True, (result, seconds held))`` or ``(False, exception)``. ``fn`` must pickle (a
    module-level function, or a ``functools.partial`` of one with plain values).
    ``transaction=False``: no transaction around it (a WAL checkpoint cannot run in one).
    ``durable=False`` (SQLite): committed without its own fsync (``synchronous=NORMAL``) —
    for work that may be undone by a power cut and done again, whole (the purge: a batch
    lost that way only brings its rows back, billing counts included, until the next run).
    The next durable commit's fsync covers it; a crash of the process alone loses nothing."""

    fn: Callable[[Any], Any]
    transaction: bool = True
    durable: bool = True


def run_job(conn, job: Job, clock: Callable[[], float] = time.perf_counter) -> tuple[Any, float]:
    """``job.fn(conn)`` in one transaction: (its result, seconds from begin to commit done)."""
    started = clock()
    if not job.transaction:
        return job.fn(conn), clock() - started
    raw = conn.connection.driver_connection if not job.durable and conn.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA synchronous = NORMAL")
    try:
        with conn.begin():
            result = job.fn(conn)
    finally:
        if raw is not None:
            raw.execute("PRAGMA synchronous = FULL")
    return result, clock() - started


class WriterDied(RuntimeError):
    """The writer process is gone (or never started); a batch it was given may or may not
    have been committed."""


class WriterProcess:
    """Parent side: start the child, hand it batches, give each answer to its callback."""

    def __init__(self, url: str, factory: Callable[[], Transaction],
                 on_died: Callable[[int | None, int], None] | None = None) -> None:
        self.url = url
        self.factory = factory
        self._proc = None
        self._channel: _Channel | None = None
        self.starts = 0  # children started, the first included: more than one means some died
        #: Called once when a running child dies (not when told to stop): its pid and how
        #: many batches and jobs it held, each failed with one ``WriterDied``.
        self.on_died = on_died

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._channel is not None and not self._channel.lost.done()

    async def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = socket.socketpair()
        proc = ctx.Process(target=_child, args=(theirs, self.url, self.factory), name="smscenter-writer", daemon=True)
        try:
            proc.start()
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        _, channel = await loop.create_connection(_Channel, sock=ours)
        ready = loop.create_future()
        # The timeout below cancels ``ready``; the child's death after it must not set it.
        channel.expect(lambda reply: ready.done() or ready.set_result(reply))
        try:
            async with asyncio.timeout(START_TIMEOUT):
                reply = await ready
        except TimeoutError:
            reply = (False, None)
        if not reply[0]:
            channel.close()
            if isinstance(reply[1], str):  # it said why, and exits
                await asyncio.to_thread(proc.join, START_TIMEOUT)
                raise WriterDied(f"the writer process could not start: {reply[1]}")
            proc.kill()
            await asyncio.to_thread(proc.join)
            raise WriterDied(f"the writer process did not start (exit code {proc.exitcode})")
        self._proc, self._channel = proc, channel
        self.starts += 1
        pid = proc.pid
        channel.on_lost = lambda held: self._died(channel, pid, held)

    def _died(self, channel: _Channel, pid: int | None, held: int) -> None:
        """The channel of a running child was lost; told nothing if we closed it ourselves."""
        if channel is self._channel and self.on_died is not None:
            self.on_died(pid, held)

    def submit(self, work: Work | Job, callback: ReplyCallback) -> None:
        """Send ``work`` (a batch or a job); ``callback`` gets its reply (a failure if the
        child dies first)."""
        if not self.running:
            raise WriterDied("the writer process is not running")
        self._channel.expect(callback)
        self._channel.send(work)

    async def close(self, timeout: float = 30.0) -> None:
        """Tell the child to stop (after what it was given) and wait for it to exit."""
        channel, proc, self._channel, self._proc = self._channel, self._proc, None, None
        if channel is None or proc is None:
            return
        if not channel.lost.done():
            channel.send(None)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(channel.lost)
        except TimeoutError:
            proc.kill()
        channel.close()
        await asyncio.to_thread(proc.join, timeout)


class _Channel(asyncio.Protocol):
    """The parent's end of the socket: frames out, frames in, callbacks in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._callbacks: deque[ReplyCallback] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.on_lost: Callable[[int], None] | None = None  # with how many replies it still owed

    def connection_made(self, transport) -> None:
        self.transport = transport

    def expect(self, callback: ReplyCallback) -> None:
        self._callbacks.append(callback)

    def send(self, value: Any) -> None:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        self.transport.write(_HEADER.pack(len(data)) + data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start = 0
        while len(buf) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, start)
            end = start + _HEADER.size + size
            if len(buf) < end:
                break
            reply = pickle.loads(buf[start + _HEADER.size : end])  # a copy: buf is resized below
            start = end
            # STORED is a word on the way: the batch's own answer is still to come.
            callback = self._callbacks[0] if reply == STORED else self._callbacks.popleft()
            self._call(callback, reply)
        del buf[:start]

    @staticmethod
    def _call(callback: ReplyCallback, reply: Reply) -> None:
        """A callback that raises is reported; the frames after its reply still get read."""
        try:
            callback(reply)
        except Exception as exc:  # noqa: BLE001
            asyncio.get_running_loop().call_exception_handler(
                {"message": "exception in a writer reply callback", "exception": exc}
            )

    def connection_lost(self, exc) -> None:
        """The child is gone: what it was given fails, once, with one ``WriterDied`` (it may
        or may not be committed). ``lost`` is set first, so that the callbacks see a writer
        that is not running: nothing more is sent to the dead socket from them, and what
        gathered meanwhile waits for the next writer."""
        if not self.lost.done():
            self.lost.set_result(None)
        error = WriterDied("the writer process died")
        callbacks, self._callbacks = self._callbacks, deque()
        for callback in callbacks:
            self._call(callback, (False, error))
        if self.on_lost is not None:
            self.on_lost(len(callbacks))


def _child(sock: socket.socket, url: str, factory: Callable[[], Transaction]) -> None:
    """The writer process: one batch at a time until told to stop or the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from . import db

    stream = sock.makefile("rb")

    def send(value) -> None:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        sock.sendall(_HEADER.pack(len(data)) + data)

    try:
        engine = db.sync_writer_engine(url)
        transaction = factory()
        # One connection for the process's life (opened now: the file and its pragmas, not
        # in the first batch); a new one after a failed batch, in case that one is broken.
        conn = engine.connect()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which refuses to start
        send((False, f"{type(exc).__name__}: {exc}"))
        return
    send((True, None))
    try:
        while True:
            header = stream.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # the daemon is gone
            (size,) = _HEADER.unpack(header)
            work = pickle.loads(stream.read(size))
            if work is None:
                return
            if isinstance(work, Job):
                try:
                    done = run_job(conn, work)
                except Exception as exc:  # noqa: BLE001 - the job's caller hears of it
                    send((False, _picklable(exc)))
                    conn.close()
                    conn = engine.connect()
                    continue
                send((True, done))
                continue
            added_from = len(work.new_outbox)
            webhooks_from = len(work.new_webhooks)
            try:
                first = take_new_messages(work)
                if first is not None:
                    with conn.begin():
                        transaction.apply(conn, first)
                    send(STORED)
                with conn.begin():
                    outcomes = transaction.apply(conn, work)
            except Exception as exc:  # noqa: BLE001 - the parent fails the batch's calls with it
                send((False, _picklable(exc)))
                conn.close()
                conn = engine.connect()
                continue
            send((True, outcomes, _sent_back(work.new_outbox[added_from:]),
                  [{"id": r["id"], "account": r["account"]} for r in work.new_webhooks[webhooks_from:]]))
    finally:
        conn.close()
        engine.dispose()


def _sent_back(rows: list[dict]) -> list[dict]:
    """New outbox rows as the parent's sender needs them: a row that carries its PDU goes
    back without the encrypted copy stored beside it (a third of the answer's bytes)."""
    return [{k: v for k, v in row.items() if k != "pdu_enc"} if "pdu" in row else row for row in rows]


def _picklable(exc: Exception) -> Exception:
    """The exception itself when it survives pickling (SQLAlchemy's do not all), else a
    RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


__all__ = ["STORED", "Job", "WriterDied", "WriterProcess", "run_job"]
