"""MT benchmark with receipts: ``python -m smscenter.bench.mt``.

Two runs with the same load, printed side by side:

- ``direct``: ``smpp34`` partners → the upstream sink, no smscenter in between: the rate the
  load generator and the sink reach on this machine, the reference;
- ``smscenter``: ``smpp34`` partners → the real daemon (``python -m smscenter run -c …`` in
  its own process, SQLite durable in a temporary folder) → its connector → the same sink.

The sink (``bench/sink.py``, in its own process, uvloop) is the least an upstream SMSC can
be: ``submit_sm`` answered at once with a decimal id, and a delivery receipt per submit that
asks for one after ``--receipt-delay``, up to ``--sink-window`` in flight per receiver bind.

The load: ``--binds`` transceiver binds, ``--window`` submit_sm in flight on each (one worker
task per slot), ``--messages`` measured after ``--warmup`` unmeasured ones, every message to
its own destination number (smscenter keeps one number's messages in order, so one number
would measure that queue rather than the server) with ``registered_delivery=1``. The run ends
when every accepted message's receipt came back on the partner binds (or ``--timeout``).

Figures: MT/s = accepted submits per second, first submit to last ``submit_sm_resp``;
receipts/s (end-to-end) = messages per second, first submit to last receipt; submit latency
= ``perf_counter`` around each ``await submit_sm``; receipt latency = submit to receipt;
CPU seconds per 1,000 messages of each process over the measured part (first submit to last
receipt, all threads, from ``/proc``; the daemon's figure includes its writer process, and
the line under the table splits it between the two). The
ratio smscenter/direct of the end-to-end rate is the figure the target (≥ 40 %) is about.
``--rounds N`` runs both paths N times, alternating which goes first, and prints the median
ratio: the direct rate alone moved between 3k and 12k receipts/s from one run to the next on
this shared machine, so one round's ratio says little. ``--pin-generator CPU`` keeps the load
generator's threads on one CPU (the daemon and the sink stay free), as when partners are other
machines: a diagnostic of what the daemon does without the generator's threads landing on its
core, printed without a verdict on the target. Figures are printed, never asserted;
exit 0 when every run completed, 1 otherwise.

Everything listens on 127.0.0.1; child processes and the temporary folder are removed at the
end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from protocol.receipt import ID_MODES

from smscenter.bench.rig import (
    add_sink_options,
    PASSWORD,
    SOURCE,
    SYSTEM_ID,
    Daemon,
    config_text,
    free_port,
    machine_busy,
    own_cpu,
    proc_cpu,
    wait_ready,
)
from smscenter.bench.sink import SinkHandle

PAYLOAD = b"Hello from ACME: your parcel 4711 arrives tomorrow between 10:00 and 12:00. Reply STOP."
_RECEIPT_ID = re.compile(rb"id:(\S+)")


# =========================================================================== load generator


@dataclass
class Result:
    path: str
    messages: int = 0  # accepted, measured
    failed: int = 0
    statuses: dict = field(default_factory=dict)
    receipts: int = 0
    missing: int = 0
    duplicates: int = 0
    mt_seconds: float = float("nan")
    e2e_seconds: float = float("nan")
    latencies: list[float] = field(default_factory=list)
    receipt_latencies: list[float] = field(default_factory=list)
    cpu: dict = field(default_factory=dict)  # process name -> CPU seconds over the measured part
    sink: dict = field(default_factory=dict)
    note: str = ""

    @property
    def complete(self) -> bool:
        return self.messages > 0 and self.missing == 0 and self.failed == 0

    @property
    def mt_rate(self) -> float:
        return self.messages / self.mt_seconds if self.mt_seconds > 0 else float("nan")

    @property
    def e2e_rate(self) -> float:
        return self.receipts / self.e2e_seconds if self.e2e_seconds > 0 else float("nan")

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000.0 if values else float("nan")

    def cpu_per_1k(self, name: str) -> float:
        return self.cpu[name] / (self.messages / 1000) if self.messages and name in self.cpu else float("nan")


class Tracker:
    """Matches receipts to accepted submits, by message id."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}  # id -> perf_counter at submit, receipt not yet seen
        self.early: set[str] = set()  # receipts seen before their submit_sm_resp was handled
        self.expected = 0
        self.received = 0
        self.unknown = 0
        self.duplicates = 0
        self.seen: set[str] = set()  # ids whose receipt came (all phases)
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        self.last_receipt = 0.0

    def reset(self, expected: int) -> None:
        self.sent.clear()
        self.early.clear()
        self.expected, self.received, self.unknown, self.duplicates = expected, 0, 0, 0
        self.latencies = []
        self.done.clear()

    def accepted(self, msg_id: str, t0: float) -> None:
        if msg_id in self.early:
            self.early.discard(msg_id)
            self.seen.add(msg_id)
            self._count(time.perf_counter() - t0)
        else:
            self.sent[msg_id] = t0

    def receipt(self, msg_id: str | None) -> None:
        t0 = self.sent.pop(msg_id, None) if msg_id is not None else None
        if t0 is None:  # a duplicate, early (its submit_sm_resp not handled yet) or a stranger
            if msg_id in self.seen:
                self.duplicates += 1
            elif msg_id is not None and len(self.early) < 1_000_000:
                self.early.add(msg_id)
            else:
                self.unknown += 1
            return
        self.seen.add(msg_id)
        self._count(time.perf_counter() - t0)

    def _count(self, latency: float) -> None:
        self.latencies.append(latency)
        self.received += 1
        self.last_receipt = time.perf_counter()
        if self.received >= self.expected:
            self.done.set()

    def expected_final(self, expected: int) -> None:
        """All submits answered: ``expected`` of them accepted."""
        self.expected = expected
        if self.received >= expected:
            self.done.set()


def _receipt_id(event) -> str | None:
    for tlv in event.tlvs:
        if tlv.tag == 0x001E:
            return tlv.as_string()
    m = _RECEIPT_ID.search(event.short_message)
    return m.group(1).decode("ascii", "replace") if m else None


async def _read_receipts(smsc, tracker: Tracker) -> None:
    import smpp34

    while True:
        event = await smsc.next()
        if isinstance(event, smpp34.Disconnected):
            return
        if isinstance(event, smpp34.DeliverSmEvent) and event.esm_class & 0x04:
            tracker.receipt(_receipt_id(event))


async def _submit_all(sessions, window: int, count: int, first_number: int, tracker: Tracker, result: Result | None) -> tuple[int, int]:
    """``count`` submit_sm over ``sessions``, ``window`` in flight on each, each to its own
    number. Returns (accepted, failed)."""
    import smpp34

    left = count
    number = first_number
    accepted = failed = 0
    perf = time.perf_counter
    latencies = result.latencies if result is not None else None
    statuses: dict = result.statuses if result is not None else {}

    async def worker(smsc) -> None:
        nonlocal left, number, accepted, failed
        while left > 0 and not _STOP:
            left -= 1
            number += 1
            t0 = perf()
            try:
                resp = await smsc.submit_sm(
                    "3361%07d" % (number % 10_000_000),
                    PAYLOAD,
                    source_addr=SOURCE,
                    source_addr_ton=5,
                    source_addr_npi=0,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    registered_delivery=1,
                )
                status = resp.command_status
            except smpp34.SmppError as exc:
                resp, status = None, str(exc)[:40]
            if latencies is not None:
                latencies.append(perf() - t0)
            if resp is not None and resp.is_success and resp.message_id:
                accepted += 1
                tracker.accepted(resp.message_id, t0)
            else:
                failed += 1
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(s) for s in sessions for _ in range(window)))
    return accepted, failed


async def drive(path: str, port: int, pids: dict[str, int], sink: SinkHandle, args) -> Result:
    """Bind the partners, warm up, run the measured load and wait for its receipts."""
    import smpp34

    result = Result(path)
    tracker = Tracker()
    clients = [
        smpp34.Client(
            "127.0.0.1", port, SYSTEM_ID, PASSWORD, bind_type="TRX", window_size=args.window,
            # smpp34 refuses receipts (ESME_RMSGQFUL) and drops the session once this many
            # wait to be read by Python; room for all of them keeps the generator from
            # measuring its own backpressure.
            inbound_capacity=min(max(65536, 2 * (args.messages + args.warmup)), 1 << 22),
        )
        for _ in range(args.binds)
    ]
    sessions = []
    readers: list[asyncio.Task] = []
    try:
        sessions = list(await asyncio.gather(*(c.connect() for c in clients)))
        if args.pin_generator is not None:
            _pin_threads({args.pin_generator})  # the daemon and the sink were started before: unpinned
        readers = [asyncio.create_task(_read_receipts(s, tracker)) for s in sessions]
        if args.warmup:
            tracker.reset(args.warmup)
            accepted, _ = await _submit_all(sessions, args.window, args.warmup, 0, tracker, None)
            tracker.expected_final(accepted)
            try:
                async with asyncio.timeout(args.timeout):
                    await tracker.done.wait()
            except TimeoutError:
                result.note = f"warm-up: {accepted - tracker.received} receipts missing; "
        tracker.reset(args.messages)
        cpu0 = {name: proc_cpu(pid) for name, pid in pids.items()}
        main0 = own_cpu(pids["daemon"]) if "daemon" in pids else 0.0
        gen0, busy0 = time.process_time(), machine_busy()
        t0 = time.perf_counter()
        accepted, failed = await _submit_all(sessions, args.window, args.messages, args.warmup, tracker, result)
        t_mt = time.perf_counter()
        tracker.expected_final(accepted)
        try:
            async with asyncio.timeout(args.timeout):
                await tracker.done.wait()
        except TimeoutError:
            result.note += f"{accepted - tracker.received} receipts missing after {args.timeout:g}s; "
        t_end = tracker.last_receipt if tracker.received else time.perf_counter()
        cpu1 = {name: proc_cpu(pid) for name, pid in pids.items()}
        result.cpu = {name: cpu1[name] - cpu0[name] for name in pids}
        result.cpu["generator"] = time.process_time() - gen0
        result.cpu["others"] = max(0.0, machine_busy() - busy0 - sum(result.cpu.values()))
        if "daemon" in pids:
            result.cpu["daemon_main"] = own_cpu(pids["daemon"]) - main0
        result.messages, result.failed = accepted, failed
        result.receipts, result.missing = tracker.received, accepted - tracker.received
        result.mt_seconds, result.e2e_seconds = t_mt - t0, t_end - t0
        result.receipt_latencies = sorted(tracker.latencies)
        result.latencies.sort()
        result.duplicates = tracker.duplicates
        unknown = tracker.unknown + len(tracker.early)
        if unknown:
            result.note += f"{unknown} receipts with an id we never got accepted; "
        if tracker.duplicates:
            result.note += f"{tracker.duplicates} DUPLICATE receipts (same message id twice); "
        result.sink = sink.stats()
    finally:
        for smsc in sessions:
            try:
                async with asyncio.timeout(2):
                    await smsc.unbind()
            except Exception:  # noqa: BLE001 - best effort at the end of a run
                pass
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for c in clients:
            try:
                await c.stop()
            except Exception:  # noqa: BLE001
                pass
        if args.pin_generator is not None:
            _pin_threads(_ALL_CPUS)  # the next path's daemon and sink must not inherit the pin
    return result


_ALL_CPUS = frozenset(os.sched_getaffinity(0))


def _pin_threads(cpus) -> None:
    """Every thread of this process (ours and smpp34's native ones) onto ``cpus``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # ended meanwhile


# =========================================================================== runs


async def run_direct(args) -> Result:
    sink = SinkHandle(args.receipt_delay, args.sink_window)
    try:
        return await drive("direct (sink)", sink.port, {"sink": sink.pid}, sink, args)
    finally:
        sink.close()


async def run_smscenter(args, password_hash: str) -> Result:
    sink = SinkHandle(args.receipt_delay, args.sink_window)
    daemon: Daemon | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mt-") as tmp:
            try:
                port = free_port()
                config = os.path.join(tmp, "smscenter.toml")
                with open(config, "w") as f:
                    f.write(config_text(tmp, port, sink.port, args, password_hash))
                daemon = Daemon(tmp, config, args.daemon_source, args.daemon_wrapper)
                await wait_ready(daemon, port, sink, args.up_binds, max(60.0, args.timeout))
                pids = {"daemon": daemon.pid, "sink": sink.pid}
                profiler = _start_profiler(daemon.pid, args.profile) if args.profile else None
                try:
                    result = await drive("smscenter", port, pids, sink, args)
                finally:
                    if profiler is not None:
                        _stop_profiler(profiler)
                daemon.check_alive()
                db = os.path.join(tmp, "smscenter.db")
                size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
                result.note += f"database {size / 1e6:.1f} MB; "
                return result
            finally:
                if daemon is not None:
                    code = daemon.close()
                    if args.daemon_log:
                        shutil.copyfile(daemon.log_path, args.daemon_log)
                    if code not in (0, None, -signal.SIGKILL) and args.verbose:
                        print(f"daemon exited with {code}:\n{daemon.log_tail()}", file=sys.stderr)
                    if args.verbose:
                        print(f"--- daemon log (tail) ---\n{daemon.log_tail(15)}", file=sys.stderr)
    finally:
        sink.close()


def _start_profiler(pid: int, out: str):
    """py-spy on the daemon while the load runs (``--profile FILE``: an SVG flame graph, or
    ``.txt`` for py-spy's collapsed stacks)."""
    fmt = "raw" if out.endswith(".txt") else "flamegraph"
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--subprocesses", "--format", fmt, "--output", out, "--rate", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    time.sleep(0.5)
    return proc


def _stop_profiler(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# =========================================================================== report


def _print_table(direct: Result | None, ours: Result | None, args) -> None:
    print(
        f"\n{args.binds} smpp34 transceiver binds x window {args.window}, {args.messages} submit_sm measured "
        f"(+{args.warmup} warm-up), registered_delivery=1, one number per message; sink receipt delay "
        f"{args.receipt_delay * 1000:g} ms, {args.sink_window} in flight per bind; smscenter connector "
        f"{args.up_binds} TRX binds x window {args.up_window}, SQLite (WAL, synchronous=FULL); "
        f"{os.cpu_count()} CPUs, "
        + (f"load generator pinned to CPU {args.pin_generator} (a diagnostic)" if args.pin_generator is not None
           else "not pinned")
    )
    head = (
        f"{'path':<15}{'accepted':>9}{'failed':>7}{'receipts':>9}{'MT/s':>8}{'e2e/s':>8}"
        f"{'submit p50':>11}{'p99 ms':>8}{'receipt p50':>12}{'p99 ms':>8}"
        f"{'CPU s/1k: server':>17}{'sink':>7}{'gen':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in (direct, ours):
        if r is None:
            continue
        server = r.cpu_per_1k("daemon") if "daemon" in r.cpu else float("nan")
        print(
            f"{r.path:<15}{r.messages:>9}{r.failed:>7}{r.receipts:>9}{r.mt_rate:>8,.0f}{r.e2e_rate:>8,.0f}"
            f"{Result.pct(r.latencies, 0.5):>11.2f}{Result.pct(r.latencies, 0.99):>8.2f}"
            f"{Result.pct(r.receipt_latencies, 0.5):>12.1f}{Result.pct(r.receipt_latencies, 0.99):>8.1f}"
            f"{server:>17.3f}{r.cpu_per_1k('sink'):>7.3f}{r.cpu_per_1k('generator'):>7.3f}"
        )
    print(
        "(MT/s: accepted submit_sm per second, first submit to last submit_sm_resp; e2e/s: messages per "
        "second, first submit to last receipt at the partner; latencies in ms; CPU s/1k: CPU seconds "
        "per 1,000 messages over the measured part, all threads: smscenter daemon (with its writer process), "
        "sink, load generator)"
    )
    for r in (direct, ours):
        if r is None:
            continue
        extra = []
        if r.statuses:
            extra.append("failed statuses " + ", ".join(f"{_status_name(k)}={v}" for k, v in r.statuses.items()))
        s = r.sink
        if s:
            extra.append(
                f"sink saw {s.get('submits', 0)} submits, sent {s.get('receipts_sent', 0)} receipts "
                f"({s.get('receipts_refused', 0)} refused, {s.get('held', 0)} still held)"
            )
        if r.note:
            extra.append(r.note.rstrip("; "))
        if "daemon" in r.cpu and r.e2e_seconds > 0:
            main = r.cpu.get("daemon_main", r.cpu["daemon"])
            extra.append(
                f"daemon CPU {100 * r.cpu['daemon'] / r.e2e_seconds:.0f}% of one core "
                f"(main process {100 * main / r.e2e_seconds:.0f}%, "
                f"writer {100 * (r.cpu['daemon'] - main) / r.e2e_seconds:.0f}%)"
            )
        if r.e2e_seconds > 0 and r.cpu.get("others", 0) / r.e2e_seconds > 0.10:
            extra.append(
                f"WARNING: other processes used {100 * r.cpu['others'] / r.e2e_seconds:.0f}% of a core "
                "meanwhile (figures disturbed)"
            )
        if extra:
            print(f"  {r.path}: " + "; ".join(extra))
    if direct is not None and ours is not None and direct.complete:
        e2e = ours.e2e_rate / direct.e2e_rate
        mt = ours.mt_rate / direct.mt_rate
        verdict = _verdict(e2e if ours.complete else 0.0, args.pin_generator is not None)
        print(
            f"\nratio smscenter/direct: end-to-end {100 * e2e:.0f} % ({verdict} the 40 % target), "
            f"MT/s {100 * mt:.0f} %, submit p50 latency x{Result.pct(ours.latencies, .5) / Result.pct(direct.latencies, .5):.1f}"
        )


def _status_name(status) -> str:
    if isinstance(status, int):
        try:
            from protocol.constants import CommandStatus

            return CommandStatus.name_of(status)
        except Exception:  # noqa: BLE001
            return hex(status)
    return str(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.mt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="measured submit_sm per path")
    parser.add_argument("--warmup", type=int, default=1_000, help="unmeasured submit_sm sent first (receipts awaited)")
    parser.add_argument("--binds", type=int, default=4, help="partner transceiver binds")
    parser.add_argument("--window", type=int, default=64, help="submit_sm in flight per partner bind")
    add_sink_options(parser)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last receipts")
    parser.add_argument("--message-id", default="auto", choices=("auto", *ID_MODES),
                        help="the connector's message_id setting (the sink writes decimal ids; default: auto)")
    parser.add_argument("--paths", default="direct,smscenter", help="comma-separated: direct, smscenter")
    parser.add_argument("--rounds", type=int, default=1, help="run the paths this many times, alternating their order")
    parser.add_argument("--log-level", default="info", help="the daemon's [logging] level")
    parser.add_argument("--pin-generator", type=int, metavar="CPU",
                        help="a diagnostic: keep the load generator's threads on this CPU (the daemon and the "
                        "sink stay free), as when partners are other machines; no verdict on the target, which "
                        "is measured unpinned")
    parser.add_argument("--profile", metavar="FILE", help="py-spy record the daemon during the run (.svg or .txt)")
    parser.add_argument("--daemon-wrapper", metavar="CMD",
                        help='a diagnostic: start the daemon under this command, e.g. "valgrind '
                        '--tool=callgrind --trace-children=yes" to count instructions per message, '
                        "which load on the machine does not change")
    parser.add_argument("--daemon-source", metavar="DIR", help="run the daemon from this checkout (A/B a change)")
    parser.add_argument("--daemon-log", metavar="FILE", help="keep a copy of the daemon's log")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the daemon's log tail")
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in ("direct", "smscenter") for p in paths):
        parser.error("--paths: choose from direct, smscenter")
    if min(args.messages, args.binds, args.window, args.up_binds, args.up_window, args.sink_window, args.rounds) <= 0:
        parser.error("counts must be positive")
    if args.warmup < 0 or args.receipt_delay < 0 or args.timeout <= 0:
        parser.error("--warmup, --receipt-delay and --timeout must not be negative")
    if args.pin_generator is not None and args.pin_generator not in _ALL_CPUS:
        parser.error(f"--pin-generator: CPU {args.pin_generator} is not one this process may use")
    if args.messages + args.warmup > 10_000_000:
        parser.error("at most 10,000,000 messages in all (one number each)")

    import uvloop

    from smscenter.runtime.passwords import hash_password

    runs: list[tuple[Result | None, Result | None]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(args.rounds):
                # Alternate which path goes first: a machine whose load drifts during the
                # runs favours neither.
                order = paths if index % 2 == 0 else paths[::-1]
                got: dict[str, Result | None] = {}
                for path in order:
                    if _STOP:
                        break
                    if path == "direct":
                        print("running direct: smpp34 partners -> sink …", file=sys.stderr, flush=True)
                        got[path] = _attempt(runner, run_direct(args))
                    else:
                        print("running smscenter: smpp34 partners -> smscenter -> sink …", file=sys.stderr, flush=True)
                        got[path] = _attempt(runner, run_smscenter(args, hash_password(PASSWORD)))
                if _STOP:
                    break
                runs.append((got.get("direct"), got.get("smscenter")))
                if args.rounds > 1:
                    print(f"\n=== round {index + 1} of {args.rounds}")
                _print_table(*runs[-1], args)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if _STOP:
        print("interrupted", file=sys.stderr)
        return 130
    if args.rounds > 1:
        _print_rounds(runs, pinned=args.pin_generator is not None)
    ran = [r for pair in runs for r in pair if r is not None]
    return 0 if len(ran) == len(paths) * args.rounds and all(r.complete for r in ran) else 1


def _print_rounds(runs: list[tuple[Result | None, Result | None]], pinned: bool = False) -> None:
    """The rounds side by side, and the median ratio (the figure to quote: one round's
    ratio moves with whatever else the machine did meanwhile)."""
    ratios, direct_rates = [], []
    print("\nrounds: direct e2e/s, smscenter e2e/s, ratio")
    for index, (direct, ours) in enumerate(runs, 1):
        if direct is None or ours is None or not (direct.complete and ours.complete):
            print(f"  {index}: incomplete")
            continue
        ratios.append(ours.e2e_rate / direct.e2e_rate)
        direct_rates.append(direct.e2e_rate)
        print(f"  {index}: {direct.e2e_rate:,.0f}  {ours.e2e_rate:,.0f}  {100 * ratios[-1]:.0f} %")
    if ratios:
        median = statistics.median(ratios)
        verdict = _verdict(median, pinned)
        print(f"median ratio smscenter/direct, end-to-end: {100 * median:.0f} % ({verdict} the 40 % target)")
        unsteady = _unsteady(direct_rates)
        if unsteady:
            print(unsteady)


#: The direct path's rate may move this much between rounds before the verdict is flagged.
STEADY_SPREAD = 1.3


def _unsteady(direct_rates: list[float]) -> str:
    """A warning when the reference itself moved between rounds (max/min over
    ``STEADY_SPREAD``): the machine's speed changed meanwhile, and a median of ratios over a
    reference that fell in some rounds says more about the machine than about smscenter."""
    low, high = min(direct_rates, default=0.0), max(direct_rates, default=0.0)
    if len(direct_rates) < 2 or high <= STEADY_SPREAD * low:
        return ""
    return (
        f"UNSTEADY: the direct path ran at {low:,.0f}–{high:,.0f}/s across the rounds ({high / low - 1:.0%} apart):"
        " the machine's speed changed meanwhile, so the verdict is unreliable; run more rounds when it is quiet"
    )


def _verdict(ratio: float, pinned: bool) -> str:
    """How ``ratio`` (smscenter/direct, end to end) stands against the 40 % target: none is
    given when the generator was pinned (a diagnostic, not the target's conditions)."""
    if pinned:
        return "generator pinned: no verdict on"
    return "meets" if ratio >= 0.40 else "MISSES"


_STOP: list[int] = []  # signals received: stop the run, clean up, exit 130
_MAIN: list[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = []


def _interrupt(signum, _frame) -> None:
    """SIGINT/SIGTERM: cancel the running path (its ``finally`` blocks stop the daemon and
    the sink and remove the temporary folder), and run no other path."""
    _STOP.append(signum)
    for loop, task in _MAIN:
        loop.call_soon_threadsafe(task.cancel)


async def _as_main(coro):
    _MAIN[:] = [(asyncio.get_running_loop(), asyncio.current_task())]
    try:
        if _STOP:
            coro.close()
            raise asyncio.CancelledError
        return await coro
    finally:
        _MAIN.clear()


def _attempt(runner: asyncio.Runner, coro) -> Result | None:
    """One path; a failure (daemon did not start, connection refused…) is reported, and the
    other path still runs."""
    try:
        return runner.run(_as_main(coro))
    except asyncio.CancelledError:
        return None
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. smpp34 bind errors
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
