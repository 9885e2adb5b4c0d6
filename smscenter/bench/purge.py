"""Retention purge benchmark: ``python -m smscenter.bench.purge``.

How fast the real daemon purges, and what that costs the traffic. In a temporary folder
(SQLite), ``--messages`` ended messages older than their retention (one part, one receipt in
the outbox each, numbers and texts encrypted with the daemon's keys) are inserted in bulk,
with a purge recorded as run just now — so the daemon does not purge at start. The daemon
(``python -m smscenter run``, its own process) starts with ``purge_at`` set to the next UTC
minute at least ``--lead`` seconds away; a submit load (``--rate`` submit_sm per second
through an ``smpp34`` transmitter, at most ``WINDOW`` in flight — the account's window — to
the upstream sink ``bench/sink.py``) runs before, during and after the purge. Printed:

- rows purged per second (rows of every table, from ``purge_at`` to the run's end seen on
  /metrics) and messages per second; the purge's batches and the longest one (its
  transaction, commit included, from /metrics);
- submit_sm → submit_sm_resp latency without a purge (the ``--lead`` seconds before it, and
  the ``--after`` seconds after) and during it: p50, p99, p99.9, the longest (the goal: the
  longest stall during the purge under 20 ms) and how many took longer than 20 ms;
- the submits that failed, by command_status;
- the database's size (file + ``-wal``) before the purge, after it, and after filling the
  same number of messages again (free pages reused: the file should not grow).

Figures are printed, never asserted. Everything listens on 127.0.0.1; the daemon, the sink and
the temporary folder are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

from smscenter.bench.mt import PAYLOAD
from smscenter.bench.rig import PASSWORD, SOURCE, SYSTEM_ID, Daemon, free_port
from smscenter.bench.sink import SinkHandle

DAY = 86400.0
#: The account's window and the transmitter's: the load never has more submits in flight
#: than the account allows (above it the server answers ESME_RMSGQFUL).
WINDOW = 64


def _config_text(tmp: str, port: int, http_port: int, up_port: int, purge_at: str, args, password_hash: str) -> str:
    return f"""\
[server]
listen = ["127.0.0.1:{port}"]

[storage]
url = "sqlite:///{os.path.join(tmp, 'smscenter.db')}"
keys = "{os.path.join(tmp, 'keys')}"

[logging]
level = "info"

[http]
listen = "127.0.0.1:{http_port}"

[retention]
purge_at = "{purge_at}"
purge_batch = {args.batch}
purge_pause = "{args.pause}"

[[account]]
system_id = "{SYSTEM_ID}"
password = "{password_hash}"
sender_ids = ["{SOURCE}"]
category = "alert"
throughput = 10000000
window = {WINDOW}
allowed_ips = ["127.0.0.0/8"]

[[connector]]
name = "sink"
host = "127.0.0.1"
port = {up_port}
system_id = "smscntr"
password = "sinkpw"
bind = "transceiver"
window = 64
throughput = 10000000
message_id = "decimal"

[[route]]
destinations = ["*"]
connectors = ["sink"]
"""


def fill(tmp: str, count: int, *, number: Callable[[int], str] = lambda i: "+3361%07d" % i,
         readable: Callable[[int], bool] = lambda i: False, again: bool = False) -> float:
    """``count`` ended messages, 200 days old, with a part and a receipt each; the schema and
    the keys made first, as the daemon's first start would (``again``: into the database and
    with the keys already there, ids after the ones stored). Message ``i`` goes to
    ``number(i)``. Parts and receipts hold random bytes of a real token's size, except for
    the messages ``readable(i)`` picks: a real encrypted submit_sm and receipt deliver_sm, as
    the daemon writes them (``bench.subject`` exports those). Returns the seconds it took."""
    from sqlalchemy import create_engine, func, select

    from protocol import codec
    from protocol import pdu as P
    from protocol.constants import EsmClass, MessageState
    from storage import db
    from storage.crypto import FieldCipher, Keyring
    from storage.ids import IdGenerator
    from storage.purge import record_run
    from storage.schema import OUTBOX_RECEIPT, messages, outbox, parts

    t0 = time.perf_counter()
    url = f"sqlite:///{os.path.join(tmp, 'smscenter.db')}"

    async def migrate() -> None:
        engine = db.create_engine(url)
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    keys = os.path.join(tmp, "keys")
    cipher = FieldCipher(Keyring.open(keys, database_has_data=True) if again else Keyring.create(keys))
    engine = create_engine(url)
    ended = time.time() - 200 * DAY
    ids = IdGenerator(node=7, clock=lambda: ended)
    if again:
        with engine.connect() as conn:
            ids.seed(max(conn.execute(select(func.max(t.c.id))).scalar() or 0 for t in (messages, outbox)) + 1)
    text = cipher.encrypt(PAYLOAD)  # one token's size; each row gets its own below
    done = 0
    while done < count:
        chunk = min(20_000, count - done)
        msg_rows, part_rows, out_rows = [], [], []
        for i in range(chunk):
            mid, oid = ids.next(), ids.next()
            dest = number(done + i)
            if readable(done + i):
                part = cipher.encrypt(codec.encode(P.SubmitSm(
                    source_addr=SOURCE, source_addr_ton=5, destination_addr=dest.lstrip("+"), dest_addr_ton=1,
                    dest_addr_npi=1, registered_delivery=1, short_message=PAYLOAD)), b"part:%d:1" % mid)
                receipt = cipher.encrypt(codec.encode(P.DeliverSm(
                    source_addr=dest.lstrip("+"), destination_addr=SOURCE, esm_class=EsmClass.DELIVERY_RECEIPT,
                    short_message=b"id:%d sub:001 dlvrd:001 stat:DELIVRD err:000 text:" % mid)), b"outbox:%d" % oid)
            else:
                part = text[:3] + os.urandom(len(text) - 3)
                receipt = text[:3] + os.urandom(len(text) - 3)
            msg_rows.append({
                "id": mid, "account": SYSTEM_ID, "category": "alert", "source_addr": SOURCE, "source_ton": 5,
                "source_npi": 0, "dest_hash": cipher.lookup_hash(dest),
                "dest_enc": cipher.encrypt(dest.encode(), b"dest:%d" % mid), "data_coding": 0,
                "registered_delivery": 1, "priority": 0, "parts_total": 1, "state": int(MessageState.DELIVERED),
                "error": 0, "submitted_at": ended - 5, "not_before": ended - 5, "expires_at": ended + 2 * DAY,
                "done_at": ended, "connector": "sink", "unsub_token": None, "dest_country": "FR",
            })
            part_rows.append({
                "message_id": mid, "part_no": 1, "pdu_enc": part,
                "state": int(MessageState.DELIVERED), "connector": "sink", "upstream_id": str(mid), "attempts": 1,
                "next_attempt_at": ended, "updated_at": ended,
            })
            out_rows.append({
                "id": oid, "account": SYSTEM_ID, "kind": OUTBOX_RECEIPT, "message_id": mid,
                "pdu_enc": receipt, "created_at": ended,
                "expires_at": ended + 180 * DAY, "attempts": 0,
            })
        with engine.begin() as conn:
            conn.execute(messages.insert(), msg_rows)
            conn.execute(parts.insert(), part_rows)
            conn.execute(outbox.insert(), out_rows)
        done += chunk
    if not again:
        with engine.begin() as conn:
            record_run(conn, "retention", time.time(), "bench: not overdue at start")
    engine.dispose()
    return time.perf_counter() - t0


def _db_size(tmp: str) -> int:
    base = os.path.join(tmp, "smscenter.db")
    return sum(os.path.getsize(p) for p in (base, base + "-wal") if os.path.exists(p))


def _metrics(http_port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def _sample(body: str | None, name: str) -> float | None:
    if body is None:
        return None
    m = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
    return float(m[1]) if m else None


def _purged(body: str | None) -> float:
    if body is None:
        return 0.0
    return sum(float(v) for v in re.findall(r"^smscenter_retention_purged_rows_total\{[^}]*\} (\S+)$", body, re.M))


def _batch_times(log_path: str) -> str | None:
    """The batches' hold times from the daemon's ``retention_run`` log event."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if "retention_run" in line]
    except OSError:
        return None
    if not lines:
        return None
    fields = dict(re.findall(r'"?(batches|batch_p50_ms|batch_p99_ms|batch_longest_ms)"?[=:] ?([0-9.]+)', lines[-1]))
    return ", ".join(f"{k} {v}" for k, v in fields.items()) or None


class Load:
    """submit_sm at a fixed rate on one smpp34 transmitter, never more than ``WINDOW`` in
    flight (a submit waits for a slot, and its latency counts from when it was sent);
    (sent at, latency) per answer, on the wall clock and the performance counter."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.rate = port, rate
        self.samples: list[tuple[float, float]] = []
        self.failed: Counter = Counter()  # command_status (or exception name) -> submits
        self._stop = asyncio.Event()

    async def run(self) -> None:
        import smpp34

        client = smpp34.Client("127.0.0.1", self.port, SYSTEM_ID, PASSWORD, bind_type="TX", window_size=WINDOW)
        smsc = await client.connect()
        slots = asyncio.Semaphore(WINDOW)
        pending: set[asyncio.Task] = set()
        n = 0
        start = time.perf_counter()
        while not self._stop.is_set():
            n += 1
            await slots.acquire()
            task = asyncio.ensure_future(self._one(smsc, n, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
            delay = start + n / self.rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await smsc.unbind()
        except Exception:  # noqa: BLE001 - closing anyway
            pass

    async def _one(self, smsc, n: int, slots: asyncio.Semaphore) -> None:
        at, sent = time.time(), time.perf_counter()
        try:
            resp = await smsc.submit_sm("3362%07d" % n, PAYLOAD, source_addr=SOURCE, source_addr_ton=5,
                                        source_addr_npi=0, dest_addr_ton=1, dest_addr_npi=1, registered_delivery=0)
            if not resp.is_success:
                self.failed[f"0x{resp.command_status:08X}"] += 1
                return
        except Exception as exc:  # noqa: BLE001 - counted
            self.failed[type(exc).__name__] += 1
            return
        finally:
            slots.release()
        self.samples.append((at, time.perf_counter() - sent))

    def stop(self) -> None:
        self._stop.set()


#: A submit_sm_resp later than this is a stall (the goal: none during the purge).
STALL = 0.020


def _stats(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    xs = sorted(latencies)

    def q(f: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * f))] * 1000

    over = sum(1 for x in xs if x > STALL)
    return (f"{len(xs):,} submits, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, p99.9 {q(0.999):.1f} ms, "
            f"longest {xs[-1] * 1000:.1f} ms, {over} over {STALL * 1000:.0f} ms")


def _purge_at(lead: float) -> tuple[str, float]:
    """The first whole UTC minute at least ``lead`` seconds from now: ("HH:MM", its time)."""
    t = (int(time.time() + lead) // 60 + 1) * 60
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M"), float(t)


async def run(args) -> int:
    from smscenter.runtime.passwords import hash_password

    sink: SinkHandle | None = None
    daemon: Daemon | None = None
    with tempfile.TemporaryDirectory(prefix="bench-purge-") as tmp:
        port, http_port, up_port = free_port(), free_port(), free_port()
        took = await asyncio.to_thread(fill, tmp, args.messages)
        before = _db_size(tmp)
        print(f"N = {args.messages:,} ended messages (1 part, 1 receipt each) inserted in {took:.1f} s; "
              f"database {before / 1e6:.1f} MB; purge_batch {args.batch}, purge_pause {args.pause}; SQLite, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        purge_at, purge_time = _purge_at(args.lead)
        config = os.path.join(tmp, "smscenter.toml")
        with open(config, "w") as f:
            f.write(_config_text(tmp, port, http_port, up_port, purge_at, args, hash_password(PASSWORD)))
        try:
            sink = SinkHandle(0.0, 64, port=up_port)
            daemon = Daemon(tmp, config)
            deadline = time.monotonic() + 60
            while _metrics(http_port) is None:
                daemon.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not start")
                await asyncio.sleep(0.25)
            load = Load(port, args.rate)
            load_task = asyncio.ensure_future(load.run())
            print(f"submit load {args.rate:g}/s (window {WINDOW}); the purge starts at {purge_at} UTC "
                  f"(in {purge_time - time.time():.0f} s)", flush=True)
            finished = False
            body = None
            deadline = purge_time + args.timeout
            while time.time() < deadline:
                daemon.check_alive()
                body = await asyncio.to_thread(_metrics, http_port) or body
                if (_sample(body, "smscenter_retention_runs_total") or 0) >= 1:
                    finished = True
                    break
                await asyncio.sleep(0.1)
            end = time.time()
            await asyncio.sleep(args.after)
            load.stop()
            await load_task
            purged = _purged(body)
            if not finished:
                print(f"the purge did not finish within {args.timeout:g} s: the figures below are for the "
                      f"{purged:,.0f} rows it removed by then (the load ran beside it all along)")
            # The purge ran from purge_at (the daemon's timer) to the run seen on /metrics.
            during = [lat for at, lat in load.samples if purge_time <= at <= end]
            outside = [lat for at, lat in load.samples if not purge_time <= at <= end]
            seconds = end - purge_time
            batches = _sample(body, "smscenter_retention_batches_total") or 0
            longest = _sample(body, "smscenter_retention_batch_longest_seconds") or 0
            messages = args.messages if finished else purged / 3
            print(f"purged {purged:,.0f} rows ({messages:,.0f} messages + parts + receipts) in {seconds:.1f} s: "
                  f"{purged / seconds:,.0f} rows/s, {messages / seconds:,.0f} messages/s; "
                  f"{batches:,.0f} batches, the longest {longest * 1000:.1f} ms (commit included)")
            print(f"submit latency without a purge: {_stats(outside)}")
            print(f"submit latency during the purge: {_stats(during)}")
            times = _batch_times(daemon.log_path)
            if times:
                print(f"purge batches (the daemon's retention_run event): {times}")
            failed = ", ".join(f"{k}: {v}" for k, v in sorted(load.failed.items())) or "none"
            print(f"submit failures: {failed}")
        finally:
            if daemon is not None:
                daemon.close()
            if sink is not None:
                sink.close()
        after = _db_size(tmp)
        if args.refill and finished:
            took = await asyncio.to_thread(fill, tmp, args.messages, again=True)
            refilled = _db_size(tmp)
            print(f"database before {before / 1e6:.1f} MB, after the purge {after / 1e6:.1f} MB "
                  f"(free pages kept for reuse), after filling {args.messages:,} again ({took:.0f} s) "
                  f"{refilled / 1e6:.1f} MB")
        else:
            print(f"database before {before / 1e6:.1f} MB, after {after / 1e6:.1f} MB (free pages kept for reuse)")
        return 0 if finished else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.purge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="ended messages to fill and purge")
    parser.add_argument("--rate", type=float, default=200.0, help="submit_sm per second during the run")
    parser.add_argument("--batch", type=int, default=100, help="[retention] purge_batch")
    parser.add_argument("--pause", default="20ms", help="[retention] purge_pause")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds of load before the purge starts (at least): the latency without a purge")
    parser.add_argument("--after", type=float, default=3.0, help="seconds of load after the purge")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the purge to finish")
    parser.add_argument("--no-refill", dest="refill", action="store_false",
                        help="do not fill the database again after the purge (its size then)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
