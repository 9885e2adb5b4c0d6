"""Queue memory benchmark: ``python -m smscenter.bench.queue``.

The daemon's memory with a deep MT queue: the real daemon (``python -m smscenter run -c …``
in its own process, SQLite in a temporary folder), its connector pointed at a port where
nothing listens yet ("a closed connector"), then the upstream sink (``bench/sink.py``) opened
on that port so that the queue drains. RSS (``VmRSS`` of the daemon's main process, and of its
writer process) is printed:

1. at start, idle, on an empty database;
2. after ``--submit`` messages through ``smpp34`` partners (the submit path: beyond the
   working set they spill to the database);
3. with ``--messages`` queued: the daemon is stopped, the rest are inserted in bulk into its
   database — rows as the planner makes them, encrypted with the daemon's keys — and it is
   started again (it finds them as after a restart). Bulk, because submitting a million
   messages through partners takes 5–10 minutes here (1.5–3.5k/s), inserting them ~2.5;
   then the round trip of ``smscenter status`` over the control socket, whose snapshot
   counts the queue's held messages and the outbox in the database (5 requests: median, max);
4. after the queue drained to the sink (``smscenter_queue_messages`` at 0 on /metrics, or
   ``--drain-timeout``).

Figures are printed, never asserted; exit 0 when the queue drained. Everything listens on
127.0.0.1; the daemon, the sink and the temporary folder are removed at the end.
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

from smscenter.bench.mt import PAYLOAD
from smscenter.bench.rig import PASSWORD, SOURCE, SYSTEM_ID, Daemon, children, free_port
from smscenter.bench.sink import SinkHandle


def _config_text(tmp: str, port: int, http_port: int, up_port: int, args, password_hash: str) -> str:
    return f"""\
[server]
listen = ["127.0.0.1:{port}"]
window = 64

[storage]
url = "sqlite:///{os.path.join(tmp, 'smscenter.db')}"
keys = "{os.path.join(tmp, 'keys')}"

[logging]
level = "warning"

[http]
listen = "127.0.0.1:{http_port}"

[queue]
working_set = {args.working_set}

[[account]]
system_id = "{SYSTEM_ID}"
password = "{password_hash}"
sender_ids = ["{SOURCE}"]
category = "alert"
throughput = 10000000
allowed_ips = ["127.0.0.0/8"]
max_binds = 4
window = 64
default_country = "FR"

[[connector]]
name = "sink"
host = "127.0.0.1"
port = {up_port}
system_id = "smscntr"
password = "sinkpw"
bind = "transceiver"
binds = 2
window = 64
throughput = 10000000
message_id = "decimal"
reconnect_min = "250ms"
reconnect_max = "1s"

[[route]]
destinations = ["*"]
connectors = ["sink"]
"""


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def _rss(daemon: Daemon) -> tuple[float, float]:
    """(main process, writer process) RSS in MB."""
    writers = children(daemon.pid)
    return _rss_mb(daemon.pid), sum(_rss_mb(p) for p in writers) if writers else float("nan")


def _metric(http_port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m[1]) if m else None


async def _until(what: str, predicate, timeout: float, daemon: Daemon) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.check_alive()
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.25)
    print(f"  ({what}: not within {timeout:g}s)", file=sys.stderr)
    return False


async def _submit(port: int, count: int) -> int:
    """``count`` submit_sm through 2 smpp34 transmitter binds, 64 in flight each, one number
    per message. Returns how many were accepted."""
    import smpp34

    clients = [smpp34.Client("127.0.0.1", port, SYSTEM_ID, PASSWORD, bind_type="TX", window_size=64) for _ in range(2)]
    sessions = list(await asyncio.gather(*(c.connect() for c in clients)))
    left, number, accepted = count, 0, 0

    async def worker(smsc) -> None:
        nonlocal left, number, accepted
        while left > 0:
            left -= 1
            number += 1
            resp = await smsc.submit_sm("3361%07d" % number, PAYLOAD, source_addr=SOURCE, source_addr_ton=5,
                                        source_addr_npi=0, dest_addr_ton=1, dest_addr_npi=1, registered_delivery=0)
            accepted += bool(resp.is_success)

    try:
        await asyncio.gather(*(worker(s) for s in sessions for _ in range(64)))
    finally:
        for s in sessions:
            try:
                await s.unbind()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
    return accepted


def _bulk_insert(tmp: str, count: int, first_number: int) -> float:
    """``count`` queued messages written straight into the stopped daemon's database, as the
    planner would store them. Returns the seconds it took."""
    from sqlalchemy import create_engine, func, select

    from protocol import codec
    from protocol import pdu as P
    from protocol.constants import MessageState
    from storage.crypto import FieldCipher, Keyring
    from storage.schema import PART_QUEUED, messages, parts

    t0 = time.perf_counter()
    cipher = FieldCipher(Keyring.open(os.path.join(tmp, "keys"), database_has_data=True))
    engine = create_engine(f"sqlite:///{os.path.join(tmp, 'smscenter.db')}")
    now = time.time()
    with engine.begin() as conn:
        next_id = (conn.execute(select(func.max(messages.c.id))).scalar() or 0) + 1
    done = 0
    while done < count:
        chunk = min(20_000, count - done)
        msg_rows, part_rows = [], []
        for i in range(chunk):
            message_id = next_id + done + i
            dest = "+3361%07d" % (first_number + done + i)
            pdu = P.SubmitSm(source_addr_ton=5, source_addr_npi=0, source_addr=SOURCE, dest_addr_ton=1,
                             dest_addr_npi=1, destination_addr=dest[1:], registered_delivery=1,
                             short_message=PAYLOAD)
            msg_rows.append({
                "id": message_id, "account": SYSTEM_ID, "category": "alert", "source_addr": SOURCE,
                "source_ton": 5, "source_npi": 0, "dest_hash": cipher.lookup_hash(dest),
                "dest_enc": cipher.encrypt(dest.encode(), b"dest:%d" % message_id), "data_coding": 0,
                "registered_delivery": 0, "priority": 0, "parts_total": 1, "state": int(MessageState.ENROUTE),
                "error": 0, "submitted_at": now, "not_before": now, "expires_at": now + 48 * 3600,
                "done_at": None, "connector": None, "unsub_token": None,
            })
            part_rows.append({
                "message_id": message_id, "part_no": 1,
                "pdu_enc": cipher.encrypt(codec.encode(pdu), b"part:%d:1" % message_id), "state": PART_QUEUED,
                "connector": None, "upstream_id": None, "attempts": 0, "next_attempt_at": now, "updated_at": now,
            })
        with engine.begin() as conn:
            conn.execute(messages.insert(), msg_rows)
            conn.execute(parts.insert(), part_rows)
        done += chunk
    engine.dispose()
    return time.perf_counter() - t0


def _status_times(tmp: str, rounds: int = 5) -> str:
    """``smscenter status``'s round trip over the control socket (the daemon's snapshot: its
    counts in the database included), ``rounds`` times: median and max."""
    from smscenter.app.control import request

    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        assert request(os.path.join(tmp, "smscenter.sock"), "status")["ok"]
        times.append(time.perf_counter() - t0)
    times.sort()
    return f"status over the control socket: median {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"


def _line(label: str, daemon: Daemon, queued: float | None) -> None:
    main, writer = _rss(daemon)
    q = "?" if queued is None else f"{int(queued):,}"
    print(f"{label:<34} RSS {main:7.1f} MB (writer process {writer:5.1f} MB)   queue gauge {q}", flush=True)


async def run(args) -> int:
    from smscenter.runtime.passwords import hash_password

    sink: SinkHandle | None = None
    daemon: Daemon | None = None
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        port, http_port, up_port = free_port(), free_port(), free_port()
        config = os.path.join(tmp, "smscenter.toml")
        with open(config, "w") as f:
            f.write(_config_text(tmp, port, http_port, up_port, args, hash_password(PASSWORD)))
        queued = lambda: _metric(http_port, "smscenter_queue_messages")  # noqa: E731
        try:
            daemon = Daemon(tmp, config)
            await _until("the daemon listening", lambda: queued() is not None, 60, daemon)
            await asyncio.sleep(args.settle)
            print(f"N = {args.messages:,} messages, working_set = {args.working_set:,}; SQLite, 2 CPUs\n")
            _line("1. at start (empty)", daemon, queued())
            submit = min(args.submit, args.messages)
            t0 = time.perf_counter()
            accepted = await _submit(port, submit) if submit else 0
            took = time.perf_counter() - t0
            await asyncio.sleep(args.settle)
            _line(f"2. {accepted:,} submitted ({accepted / took if took else 0:,.0f}/s)", daemon, queued())

            daemon.close()
            rest = args.messages - accepted
            took = await asyncio.to_thread(_bulk_insert, tmp, rest, submit + 1) if rest > 0 else 0.0
            print(f"   (daemon stopped; {rest:,} inserted in bulk in {took:.1f} s; started again)")
            daemon = Daemon(tmp, config)
            await _until("the daemon listening", lambda: queued() is not None, 120, daemon)
            await asyncio.sleep(args.settle)
            _line(f"3. {args.messages:,} queued, connector closed", daemon, queued())
            print(f"   ({await asyncio.to_thread(_status_times, tmp)})", flush=True)

            sink = SinkHandle(0.02, 64, port=up_port)
            t0 = time.perf_counter()
            drained = await _until("the queue drained", lambda: queued() == 0, args.drain_timeout, daemon)
            took = time.perf_counter() - t0
            left = queued()
            done = args.messages - int(left or 0)
            await asyncio.sleep(args.settle)
            label = f"4. drained {done:,} in {took:.0f} s ({done / took:,.0f}/s)" if drained else \
                f"4. {done:,} drained in {took:.0f} s ({done / took:,.0f}/s)"
            _line(label, daemon, queued())
            print(f"   sink saw {sink.stats()['submits']:,} submits")
            return 0 if drained else 1
        finally:
            if daemon is not None:
                daemon.close()
            if sink is not None:
                sink.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.queue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages queued behind the closed connector")
    parser.add_argument("--submit", type=int, default=5_000,
                        help="of them, submitted through smpp34 partners (the rest inserted in bulk)")
    parser.add_argument("--working-set", type=int, default=10_000, help="the daemon's [queue] working_set")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to let the daemon settle before each RSS")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the queue to drain")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
