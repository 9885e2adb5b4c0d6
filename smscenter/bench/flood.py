"""Flood benchmark: ``python -m smscenter.bench.flood``.

What one partner's flood of storage requests costs the others. The real daemon runs in its
own process (``python -m smscenter run -c …``, SQLite in a temporary folder, a connector to
``bench.sink``); then, at the same time:

- the flooder: one raw socket bound as a transmitter writes ``--queries`` query_sm (encoded
  by ``protocol.codec``) as fast as the socket takes them, and reads every answer, counting
  them by status; the ids queried are a mix of real message ids (answered ESME_ROK), unknown
  ones (ESME_RQUERYFAIL) and malformed ones (ESME_RINVMSGID);
- the other partner: an ``smpp34`` transmitter submitting one message at a time at
  ``--submit-rate`` per second until the flood is answered, each submit's latency measured
  with ``perf_counter`` around ``await submit_sm``.

Printed: the flood's answers by status (and anything unanswered), its duration, the
daemon's RSS (main process, from ``/proc``) before, at its peak and after, and the other
partner's submit latency p50 / p99 / max. The target (issue 14): no ESME_RSYSERR, RSS growth
< 50 MB, p99 < 100 ms. Figures are printed, never asserted; exit 0 when every query was
answered, 1 otherwise.

The flooder's account has a throughput above the flood (``--flood-throughput``) so that what
is measured is the storage gate and the per-turn budget, not the token bucket, and a
``flood_refusals`` limit above the flood so that it is answered rather than unbound (the
flood unbind is measured by the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time

from smscenter.bench.rig import Daemon, free_port, wait_ready
from smscenter.bench.sink import SinkHandle

FLOODER, OTHER = "flooder", "other"
PASSWORDS = {FLOODER: "floodpw", OTHER: "otherpw"}
DEST = "+33612345678"
_HEADER = struct.Struct(">IIII")


def _rss(pid: int) -> int:
    """Resident set size of one process, bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _config_text(tmp: str, port: int, sink_port: int, args, hashes: dict[str, str]) -> str:
    accounts = ""
    for system_id, sender, throughput in ((FLOODER, "FLOOD", args.flood_throughput), (OTHER, "OTHER", 10_000)):
        accounts += f"""
[[account]]
system_id = "{system_id}"
password = "{hashes[system_id]}"
sender_ids = ["{sender}"]
category = "alert"
throughput = {throughput}
allowed_ips = ["127.0.0.0/8"]
default_country = "FR"
"""
    return f"""\
[server]
listen = ["127.0.0.1:{port}"]
system_id = "SMSCENTER"
pdus_per_turn = {args.pdus_per_turn}
max_storage_reads = {args.max_storage_reads}
flood_refusals = {args.flood_refusals or max(10 * args.queries, 1000)}

[storage]
url = "sqlite:///{os.path.join(tmp, 'smscenter.db')}"
keys = "{os.path.join(tmp, 'keys')}"

[logging]
level = "{args.log_level}"
{accounts}
[[connector]]
name = "sink"
host = "127.0.0.1"
port = {sink_port}
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


class Flooder:
    """A raw transmitter session: writes query_sm in bulk, counts the answers by status."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.statuses: dict[int, int] = {}
        self.answered = 0
        self.done = asyncio.Event()
        self.expected = 0
        self.closed = False

    @classmethod
    async def bind(cls, port: int) -> "Flooder":
        from protocol import pdu as P
        from protocol.codec import encode

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode(P.BindTransmitter(system_id=FLOODER, password=PASSWORDS[FLOODER]), 1))
        length, cid, status, _ = _HEADER.unpack(await asyncio.wait_for(reader.readexactly(16), 10))
        await reader.readexactly(length - 16)
        if status != 0:
            raise RuntimeError(f"the flooder's bind was refused: {status:#x}")
        return cls(reader, writer)

    async def read(self) -> None:
        buf = bytearray()
        try:
            while self.answered < self.expected:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    break
                buf += chunk
                off = 0
                while len(buf) - off >= 16:
                    length, cid, status, seq = _HEADER.unpack_from(buf, off)
                    if len(buf) - off < length:
                        break
                    off += length
                    if cid == 0x00000015:  # enquire_link from the server
                        self.writer.write(_HEADER.pack(16, 0x80000015, 0, seq))
                    elif cid & 0x80000000:
                        self.answered += 1
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                del buf[:off]
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = self.answered < self.expected
            self.done.set()

    async def flood(self, ids: list[str], count: int, batch: int = 2000) -> None:
        from protocol import pdu as P
        from protocol.codec import encode

        self.expected = count
        bodies = [encode(P.QuerySm(message_id=i, source_addr="FLOOD"), 1)[16:] for i in ids]
        seq = 2
        while seq - 2 < count and not self.done.is_set():
            n = min(batch, count - (seq - 2))
            self.writer.write(b"".join(
                _HEADER.pack(16 + len(bodies[k % len(bodies)]), 0x00000003, 0, seq + k) + bodies[k % len(bodies)]
                for k in range(n)
            ))
            seq += n
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def _other_partner(port: int, rate: float, stop: asyncio.Event, latencies: list[float], statuses: dict) -> None:
    import smpp34

    client = smpp34.Client("127.0.0.1", port, OTHER, PASSWORDS[OTHER], bind_type="TX", window_size=1)
    smsc = await asyncio.wait_for(client.connect(), 10)
    try:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        while not stop.is_set():
            t0 = time.perf_counter()
            resp = await asyncio.wait_for(smsc.submit_sm(DEST, b"meanwhile", source_addr="OTHER"), 30)
            latencies.append(time.perf_counter() - t0)
            statuses[resp.command_status] = statuses.get(resp.command_status, 0) + 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        try:
            await asyncio.wait_for(smsc.unbind(), 2)
        except Exception:  # noqa: BLE001 - the daemon may be going away
            pass


async def _known_ids(port: int, count: int) -> list[str]:
    """Submit ``count`` messages as the flooder's account (smpp34) and return their ids."""
    import smpp34

    client = smpp34.Client("127.0.0.1", port, FLOODER, PASSWORDS[FLOODER], bind_type="TX", window_size=1)
    smsc = await asyncio.wait_for(client.connect(), 10)
    try:
        ids = []
        for _ in range(count):
            resp = await asyncio.wait_for(smsc.submit_sm(DEST, b"query me", source_addr="FLOOD"), 10)
            if resp.command_status == 0:
                ids.append(resp.message_id)
        return ids
    finally:
        await asyncio.wait_for(smsc.unbind(), 2)


async def run(args) -> int:
    from protocol.constants import CommandStatus

    from smscenter.runtime.passwords import hash_password

    hashes = {k: hash_password(v) for k, v in PASSWORDS.items()}
    sink = SinkHandle(0.02, 64)
    daemon: Daemon | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
            try:
                port = free_port()
                config = os.path.join(tmp, "smscenter.toml")
                with open(config, "w") as f:
                    f.write(_config_text(tmp, port, sink.port, args, hashes))
                daemon = Daemon(tmp, config)
                await wait_ready(daemon, port, sink, 1)
                ids = await _known_ids(port, 10) + ["12345678901234", "99", "not-an-id"]
                await asyncio.sleep(0.5)
                rss_before = _rss(daemon.pid)
                flooder = await Flooder.bind(port)
                stop = asyncio.Event()
                latencies: list[float] = []
                other_statuses: dict[int, int] = {}
                other = asyncio.create_task(_other_partner(port, args.submit_rate, stop, latencies, other_statuses))
                await asyncio.sleep(0.5)  # the other partner is bound and submitting
                rss_peak = rss_before
                t0 = time.perf_counter()
                flooder.expected = args.queries
                reader = asyncio.create_task(flooder.read())
                writer = asyncio.create_task(flooder.flood(ids, args.queries))
                deadline = time.monotonic() + args.timeout
                while not flooder.done.is_set() and time.monotonic() < deadline:
                    rss_peak = max(rss_peak, _rss(daemon.pid))
                    daemon.check_alive()
                    await asyncio.sleep(0.05)
                seconds = time.perf_counter() - t0
                stop.set()
                for task in (writer, reader):
                    task.cancel()
                await asyncio.gather(writer, reader, return_exceptions=True)
                await asyncio.gather(other, return_exceptions=True)
                flooder.close()
                await asyncio.sleep(1.0)
                rss_after = _rss(daemon.pid)
            finally:
                if daemon is not None:
                    daemon.close()
                    if args.verbose:
                        print(f"--- daemon log (tail) ---\n{daemon.log_tail(20)}", file=sys.stderr)
    finally:
        sink.close()

    name = CommandStatus.name_of
    print(f"flood: {args.queries:,} query_sm on one session, pdus_per_turn={args.pdus_per_turn}, "
          f"max_storage_reads={args.max_storage_reads}")
    print(f"  answered {flooder.answered:,} in {seconds:.1f} s ({flooder.answered / seconds:,.0f}/s)"
          + (f"; {args.queries - flooder.answered:,} unanswered" if flooder.answered < args.queries else "")
          + ("; the session was closed (session_flooding?)" if flooder.closed else ""))
    for status, n in sorted(flooder.statuses.items(), key=lambda kv: -kv[1]):
        print(f"  {name(status):<18} {n:>9,}")
    mb = 1024 * 1024
    print(f"daemon RSS: before {rss_before / mb:.0f} MB, peak {rss_peak / mb:.0f} MB "
          f"(+{(rss_peak - rss_before) / mb:.0f}), after {rss_after / mb:.0f} MB")
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"other partner: {len(ms):,} submits at {args.submit_rate:g}/s, "
              + ", ".join(f"{name(s)} {n:,}" for s, n in other_statuses.items())
              + f"; latency p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
    else:
        print("other partner: no submit completed")
    return 0 if flooder.answered == args.queries else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100_000, help="query_sm written at once on the flooding session")
    parser.add_argument("--submit-rate", type=float, default=50.0, help="the other partner's submit_sm per second")
    parser.add_argument("--pdus-per-turn", type=int, default=32, help="[server] pdus_per_turn")
    parser.add_argument("--max-storage-reads", type=int, default=8, help="[server] max_storage_reads")
    parser.add_argument("--flood-throughput", type=int, default=10_000_000, help="the flooder's account throughput")
    parser.add_argument("--flood-refusals", type=int, default=0,
                        help="[server] flood_refusals (default: ten times --queries, so the flood is answered, not "
                        "unbound; 1000 is the daemon's default)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every answer")
    parser.add_argument("--log-level", default="warning", help="the daemon's [logging] level")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the daemon's log tail")
    args = parser.parse_args(argv)
    if min(args.queries, args.pdus_per_turn, args.max_storage_reads, args.flood_throughput) <= 0 or args.submit_rate <= 0 \
            or args.flood_refusals < 0:
        parser.error("counts and rates must be positive")
    import uvloop

    try:
        return uvloop.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
