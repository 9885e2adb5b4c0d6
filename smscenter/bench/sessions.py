"""Session benchmark: ``python -m smscenter.bench.sessions``.

Drives SMPP servers on loopback with ``smpp34`` clients (Rust/tokio core) and prints
submit_sm/s, submit_sm_resp latency (p50/p99/max) and the server's CPU time per 1,000
messages, for:

- ``sink``: a minimal reference SMSC written below with raw ``struct`` parsing (answers
  binds, submit_sm with an incrementing id, enquire_link and unbind; validates nothing);
- ``smpp34``: ``smpp34.Server`` (Rust) with a Python loop accepting each submit_sm;
- ``smscenter``: our ``PartnerServer`` with an accept-at-once handler (no pipeline, no
  storage), so the comparison with the sink measures the session layer alone.

Each server runs on uvloop in its own process (spawned, pinned to one CPU when the machine
has two or more), the load generator in this process (pinned to the other CPUs), so the
two never share a core or a GIL. Every target gets the same load: ``--binds`` transmitter
binds, ``--window`` submit_sm in flight on each (one worker task per slot), ``--messages``
in total after ``--warmup`` unmeasured ones. Throughput is wall clock from the first to the
last measured response; latency is ``perf_counter`` around each ``await submit_sm``; server
CPU is the run time of all its threads over the measured part (``/proc/<pid>/task/*/schedstat``).

``--profile`` runs cProfile inside the smscenter process and prints its hot spots. Figures
are printed, never asserted. The load generator's own CPU is shown so that a generator-bound
run can be recognised (then the server CPU column is the figure to compare), and the time the
server spent waiting for its CPU (other processes on it) so that a disturbed run is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass

SYSTEM_ID = "bench"
PASSWORD = "benchpw"
SOURCE = "ACME"
DESTINATION = "33612345678"
PAYLOAD = b"Hello from ACME: your parcel 4711 arrives tomorrow between 10:00 and 12:00. Reply STOP."
TARGETS = ("sink", "smpp34", "smscenter")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# =========================================================================== server side


class AcceptAtOnce:
    """The smscenter handler: answers every request at once, submit_sm with an id."""

    def __init__(self) -> None:
        self.count = 0

    def handle(self, bind, pdu) -> None:
        if pdu.command_id == 0x00000004:  # submit_sm
            self.count += 1
            bind.respond(pdu.response(message_id=str(self.count)))
        else:
            bind.respond(pdu.response())


_HEADER = struct.Struct(">IIII")
_BINDS = frozenset({0x00000001, 0x00000002, 0x00000009})
_SUBMIT_SM, _UNBIND, _ENQUIRE_LINK = 0x00000004, 0x00000006, 0x00000015


class SinkProtocol(asyncio.Protocol):
    """The reference sink: the least an SMSC can do per PDU. No validation, no state
    machine, no timers; one write per ``data_received``."""

    counter = 0  # message ids, shared by all connections of the process

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        pos, end, close = 0, len(buf), False
        pack, unpack_from = _HEADER.pack, _HEADER.unpack_from
        while end - pos >= 16:
            length, cid, _status, seq = unpack_from(buf, pos)
            if length < 16 or length > 65536:
                self.transport.close()
                return
            if end - pos < length:
                break
            pos += length
            if cid & 0x80000000:  # a response (to nothing we sent): ignore
                continue
            if cid == _SUBMIT_SM:
                SinkProtocol.counter += 1
                body = b"%d\0" % SinkProtocol.counter
                out.append(pack(16 + len(body), cid | 0x80000000, 0, seq) + body)
            elif cid in _BINDS:
                out.append(pack(21, cid | 0x80000000, 0, seq) + b"SINK\0")
            elif cid == _ENQUIRE_LINK or cid == _UNBIND:
                out.append(pack(16, cid | 0x80000000, 0, seq))
                close = close or cid == _UNBIND
            else:  # generic_nack, ESME_RINVCMDID
                out.append(pack(16, 0x80000000, 0x03, seq))
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_target(target: str, binds: int, window: int, password_hash: str, tmp: str):
    """Start one server in this process; return (port, async stop function)."""
    if target == "sink":
        loop = asyncio.get_running_loop()
        server = await loop.create_server(SinkProtocol, "127.0.0.1", 0, backlog=1024)

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return server.sockets[0].getsockname()[1], stop

    if target == "smpp34":
        import smpp34

        port = _free_port()
        server = smpp34.Server("127.0.0.1", port, system_id="SMPP34")
        await server.start()

        async def pump() -> None:
            n = 0
            while True:
                event = await server.next()
                if isinstance(event, smpp34.SubmitSmEvent):
                    n += 1
                    event.accept(str(n))

        task = asyncio.get_running_loop().create_task(pump())

        async def stop() -> None:
            task.cancel()
            await server.stop()

        return port, stop

    if target == "smscenter":
        from smscenter.config import settings_from_dict
        from smscenter.smpp.server import PartnerServer

        settings = settings_from_dict(
            {
                "server": {"listen": ["127.0.0.1:0"], "system_id": "SMSCENTER", "window": window},
                "storage": {"url": "sqlite:///:memory:", "keys": os.path.join(tmp, "keys")},
                "account": [
                    {
                        "system_id": SYSTEM_ID,
                        "password": password_hash,
                        "category": "alert",
                        "throughput": 100_000_000,  # never the limit here
                        "max_binds": max(binds, 1),
                        "window": window,
                    }
                ],
            },
            base_dir=tmp,
        )
        server = PartnerServer(settings, AcceptAtOnce())
        await server.start()

        async def stop() -> None:
            await server.stop(1.0)

        return server.addresses[0][1], stop

    raise ValueError(f"unknown target {target!r}")


def serve(target: str, conn, cpu: int | None, binds: int, window: int, password_hash: str, profile: bool) -> None:
    """Child process: run ``target`` on uvloop until the parent says stop."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from smscenter.app.logs import configure_logging

    configure_logging("warning")
    import uvloop

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_message() -> None:
            try:
                conn.recv()
            except EOFError:
                pass
            loop.remove_reader(conn.fileno())
            stopping.set()

        with tempfile.TemporaryDirectory() as tmp:
            port, stop = await _start_target(target, binds, window, password_hash, tmp)
            loop.add_reader(conn.fileno(), on_message)
            if profiler is not None:
                profiler.enable()
            conn.send(("ready", port))
            await stopping.wait()
            if profiler is not None:
                profiler.disable()
            await stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    report = ""
    if profiler is not None:
        import pstats

        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(25)
        report = out.getvalue()
    conn.send(("done", report))


# =========================================================================== load side


def _proc_sched(pid: int) -> tuple[float, float]:
    """(CPU time, run-queue wait) of a process, all threads, in seconds.

    From ``/proc/<pid>/task/*/schedstat`` (nanoseconds): the wait is time spent ready to run
    but not running, i.e. other processes on the same CPU. Where the kernel lacks schedstat,
    CPU is utime+stime in clock ticks and the wait is unknown (0)."""
    try:
        cpu = wait = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
            except FileNotFoundError:  # a thread that just ended
                continue
            cpu += int(fields[0])
            wait += int(fields[1])
        return cpu / 1e9, wait / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK, 0.0


@dataclass
class Result:
    target: str
    messages: int
    failed: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    gen_cpu: float
    server_wait: float
    gen_wait: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def pct(self, q: float) -> float:
        lat = self.latencies
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else float("nan")


async def _blast(sessions, window: int, count: int, latencies: list[float] | None) -> int:
    """Send ``count`` submit_sm over ``sessions``, ``window`` in flight on each.
    Returns the number of failures (non-ROK or error)."""
    import smpp34

    left = count
    failed = 0
    perf = time.perf_counter

    async def worker(smsc) -> None:
        nonlocal left, failed
        while left > 0:
            left -= 1
            t0 = perf()
            try:
                resp = await smsc.submit_sm(DESTINATION, PAYLOAD, source_addr=SOURCE)
                ok = resp.is_success
            except smpp34.SmppError:
                ok = False
            if latencies is not None:
                latencies.append(perf() - t0)
            if not ok:
                failed += 1

    # Bounded: a server that stops answering ends the benchmark instead of hanging it.
    async with asyncio.timeout(60 + count / 500):
        await asyncio.gather(*(worker(s) for s in sessions for _ in range(window)))
    return failed


async def drive(target: str, port: int, pid: int, args) -> Result:
    import smpp34

    clients = [
        smpp34.Client("127.0.0.1", port, SYSTEM_ID, PASSWORD, bind_type="TX", window_size=args.window)
        for _ in range(args.binds)
    ]
    sessions = await asyncio.gather(*(c.connect() for c in clients))
    try:
        if args.warmup:
            await _blast(sessions, args.window, args.warmup, None)
        latencies: list[float] = []
        me = os.getpid()
        (cpu0, wait0), (gen0, gwait0) = _proc_sched(pid), _proc_sched(me)
        t0 = time.perf_counter()
        failed = await _blast(sessions, args.window, args.messages, latencies)
        seconds = time.perf_counter() - t0
        (cpu1, wait1), (gen1, gwait1) = _proc_sched(pid), _proc_sched(me)
    finally:
        for smsc in sessions:
            try:
                async with asyncio.timeout(2):
                    await smsc.unbind()
            except Exception:
                pass
        for c in clients:
            try:
                await c.stop()
            except Exception:
                pass
    latencies.sort()
    return Result(
        target, args.messages, failed, seconds, latencies, cpu1 - cpu0, gen1 - gen0, wait1 - wait0, gwait1 - gwait0
    )


def run_target(target: str, args, server_cpu: int | None, password_hash: str) -> tuple[Result, str]:
    import uvloop

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=serve,
        args=(target, child, server_cpu, args.binds, args.window, password_hash, args.profile and target == "smscenter"),
        name=f"bench-{target}",
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError(f"{target}: server did not start")
        _, port = parent.recv()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(drive(target, port, proc.pid, args))
        parent.send("stop")
        report = ""
        if parent.poll(30):
            _, report = parent.recv()
        proc.join(10)
        return result, report
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


def _median_result(target: str, runs: list[Result]) -> Result:
    """One row for several runs: the run with the median throughput."""
    runs = sorted(runs, key=lambda r: r.rate)
    return runs[(len(runs) - 1) // 2]


def _print_rows(rows: list[Result]) -> None:
    head = (
        f"{'target':<11}{'msgs':>7}{'fail':>5}{'submit/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'server CPU s/1k':>16}{'1-core cap/s':>13}{'srv cpu%':>9}{'srv wait%':>10}{'gen cpu%':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        k = r.messages / 1000
        cap = r.messages / r.server_cpu if r.server_cpu > 0 else float("inf")
        pct = 100 / r.seconds
        print(
            f"{r.target:<11}{r.messages:>7}{r.failed:>5}{r.rate:>10,.0f}{r.pct(0.50):>8.2f}{r.pct(0.99):>8.2f}"
            f"{r.latencies[-1] * 1000:>8.2f}{r.server_cpu / k:>16.4f}{cap:>13,.0f}"
            f"{r.server_cpu * pct:>9.0f}{r.server_wait * pct:>10.0f}{r.gen_cpu * pct:>9.0f}"
        )


def _print_table(results: list[Result], targets: list[str], args, pinned: str) -> None:
    print(
        f"\n{args.binds} transmitter binds x window {args.window}, {args.messages} submit_sm measured "
        f"(+{args.warmup} warm-up), {len(PAYLOAD)}-byte text; {pinned}"
    )
    if args.rounds > 1:
        print(f"\nall runs ({args.rounds} rounds):")
        _print_rows(results)
        print("\nmedian run (by submit/s) of each target:")
    if args.profile:
        print("(--profile: smscenter ran under cProfile, its figures are inflated)")
    rows = {t: _median_result(t, [r for r in results if r.target == t]) for t in targets}
    _print_rows(list(rows.values()))
    print(
        "1-core cap/s: messages per server CPU-second (what one saturated core would give).\n"
        "srv/gen cpu%: CPU used by the server / the load generator over the run, in % of one core\n"
        "(a generator near 100% means submit/s is generator-bound). srv wait%: time the server was\n"
        "ready to run but not running (other processes on its CPU; for smpp34, also its own tokio\n"
        "threads sharing the one CPU), summed over threads, in % of the run."
    )
    # smpp34.Server is multi-threaded: its threads queue behind each other on the one CPU.
    busy = [r for r in results if r.target != "smpp34" and r.server_wait / r.seconds > 0.05]
    if busy:
        print(
            f"warning: in {len(busy)} run(s) of sink/smscenter the server waited for its CPU over 5% of the"
            " time: other processes were busy, so submit/s and latency are unreliable (CPU s/1k much less so)"
        )
    ours = rows.get("smscenter")
    if ours is None:
        return
    for ref, label in (("sink", "reference"), ("smpp34", "smpp34.Server")):
        r = rows.get(ref)
        if r is None:
            continue
        cpu = ours.server_cpu / r.server_cpu if r.server_cpu > 0 else float("inf")
        print(
            f"ratio smscenter/{label}: submit/s x{ours.rate / r.rate:.2f}, p50 latency "
            f"x{ours.pct(0.5) / r.pct(0.5):.2f}, p99 latency x{ours.pct(0.99) / r.pct(0.99):.2f}, "
            f"server CPU per message x{cpu:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m smscenter.bench.sessions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=50_000, help="measured submit_sm per target")
    parser.add_argument("--warmup", type=int, default=2_000, help="unmeasured submit_sm sent first")
    parser.add_argument("--binds", type=int, default=4, help="transmitter binds")
    parser.add_argument("--window", type=int, default=64, help="submit_sm in flight per bind")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, interleaved (the median run is reported)")
    parser.add_argument(
        "--targets", default="sink,smpp34,smscenter", help=f"comma-separated, from {','.join(TARGETS)}"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator to CPUs")
    parser.add_argument("--profile", action="store_true", help="cProfile the smscenter server process")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        parser.error(f"unknown target(s) {bad}; choose from {', '.join(TARGETS)}")
    if args.messages <= 0 or args.binds <= 0 or args.window <= 0 or args.warmup < 0 or args.rounds <= 0:
        parser.error("counts must be positive")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = None
    pinned = "not pinned"
    if not args.no_pin and len(cpus) >= 2:
        server_cpu = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]))
        pinned = f"server pinned to CPU {server_cpu}, load generator to CPU {','.join(map(str, cpus[1:]))}"
    elif len(cpus) < 2:
        print("warning: one CPU only; server and load generator share it", file=sys.stderr)

    from smscenter.runtime.passwords import hash_password

    password_hash = hash_password(PASSWORD)
    results: list[Result] = []
    reports: list[str] = []
    for _ in range(args.rounds):
        for target in targets:
            print(f"running {target} …", file=sys.stderr, flush=True)
            result, report = run_target(target, args, server_cpu, password_hash)
            results.append(result)
            if report:
                reports.append(report)
    _print_table(results, targets, args, pinned)
    for report in reports:
        print("\ncProfile of the smscenter server process (measured run + warm-up):")
        print(report)


if __name__ == "__main__":
    main()
