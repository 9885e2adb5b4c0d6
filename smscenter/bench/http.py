"""HTTP submit benchmark: ``python -m smscenter.bench.http``.

The HTTP API's submit throughput against the real daemon, set up as ``bench.mt`` sets it up
(``bench/rig.py``: ``python -m smscenter run`` in its own process, SQLite durable in a
temporary folder, one connector to the ``bench/sink.py`` upstream in a process of its own),
with the ``[api]`` door on 127.0.0.1 (plain HTTP: loopback) and a bearer token.

The load: one aiohttp session (keep-alive: ``--concurrency`` connections, reused), that many
``POST /v1/messages`` in flight, each to ``--recipients`` numbers of their own (smscenter
keeps one number's messages in order; one number would measure that queue). One run per
value of ``--recipients`` (default ``1,100``: one recipient per request, then a hundred),
each on a new daemon, ``--warmup`` messages first (unmeasured), then ``--messages``
measured, bounded by ``--timeout`` seconds (what is not answered by then counts as failed,
and the run as incomplete).

Figures: messages/s and requests/s = accepted, first request to last answer; request latency
p50/p99/max = ``perf_counter`` around each request; the daemon's CPU seconds per message over
the measured part (``/proc``, all threads, its writer process included, and its main process
alone); the load average before and after the run (the machine is shared: a figure means
little without it). Figures are printed, never asserted; exit 0 when every run completed,
1 otherwise. Everything listens on 127.0.0.1; the processes and the folder are removed at the
end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

from smscenter.bench.rig import (
    add_sink_options,
    Daemon,
    config_text,
    free_port,
    own_cpu,
    proc_cpu,
    wait_ready,
)
from smscenter.bench.sink import SinkHandle

TOKEN = "bench-http-token-" + "0123456789abcdef" * 2
TEXT = "Hello from ACME: your parcel 4711 arrives tomorrow between 10:00 and 12:00. Reply STOP."
SOURCE = "ACME"


@dataclass
class Run:
    recipients: int
    concurrency: int
    requests: int = 0  # answered 202, measured
    messages: int = 0  # accepted, measured
    failed: int = 0  # requests without a 202 (and unanswered at the timeout)
    statuses: dict = field(default_factory=dict)
    seconds: float = float("nan")
    latencies: list[float] = field(default_factory=list)
    cpu: float = float("nan")  # the daemon's CPU seconds, writer process included
    cpu_main: float = float("nan")  # ... its main process alone
    load: tuple[float, float] = (float("nan"), float("nan"))  # 1-minute load average, before and after
    upstream: int = 0  # submits the sink received (warm-up included)
    expected_upstream: int = 0  # messages accepted (warm-up included)
    note: str = ""

    @property
    def complete(self) -> bool:
        return self.messages > 0 and self.failed == 0 and self.upstream >= self.expected_upstream

    def rate(self, n: int) -> float:
        return n / self.seconds if self.seconds > 0 else float("nan")

    def pct(self, q: float) -> float:
        values = self.latencies
        return values[min(len(values) - 1, int(q * len(values)))] * 1000.0 if values else float("nan")

    def per_message(self, cpu: float) -> float:
        return cpu / self.messages * 1000.0 if self.messages else float("nan")


class Load:
    """Requests on one keep-alive session, ``concurrency`` in flight, every recipient a
    number of its own."""

    def __init__(self, session, url: str, recipients: int, concurrency: int) -> None:
        self.session, self.url = session, url
        self.recipients, self.concurrency = recipients, concurrency
        self.number = 0
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        self.accepted = self.messages = 0

    def _to(self) -> list[str]:
        first, self.number = self.number, self.number + self.recipients
        return ["+3361%07d" % (n % 10_000_000) for n in range(first, first + self.recipients)]

    async def send(self, requests: int, run: Run | None) -> None:
        """``requests`` requests; what they got is counted in ``accepted`` (requests) and
        ``messages`` as the answers come (a run cut short by its timeout keeps its count)."""
        self.accepted = self.messages = 0
        left = requests
        perf = time.perf_counter

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                body = {"from": SOURCE, "to": self._to(), "text": TEXT}
                t0 = perf()
                try:
                    async with self.session.post(self.url, json=body, headers=self.headers) as resp:
                        answer = await resp.json()
                        status = resp.status
                except Exception as exc:
                    answer, status = None, type(exc).__name__
                if run is not None:
                    run.latencies.append(perf() - t0)
                if status == 202:
                    self.accepted += 1
                    self.messages += len(answer["messages"])
                elif run is not None:
                    error = answer.get("error") if isinstance(answer, dict) else None
                    key = f"{status} {error['code']}" if isinstance(error, dict) else str(status)
                    run.statuses[key] = run.statuses.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))


async def _api_ready(session, base: str, daemon: Daemon, timeout: float) -> None:
    """Until the API answers (it serves once storage is open, after the SMPP port)."""
    deadline = time.monotonic() + timeout
    while True:
        daemon.check_alive()
        try:
            async with session.get(base + "/v1/messages/1", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                if resp.status == 404:
                    return
        except OSError:
            pass
        except Exception as exc:
            if not type(exc).__module__.startswith("aiohttp"):
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not answer within {timeout:g}s:\n{daemon.log_tail()}")
        await asyncio.sleep(0.1)


async def run_one(args, recipients: int) -> Run:
    import aiohttp

    from smscenter.runtime.passwords import hash_password, hash_token

    run = Run(recipients, args.concurrency)
    sink = SinkHandle(args.receipt_delay, args.sink_window)
    daemon: Daemon | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
            try:
                port, api_port = free_port(), free_port()
                config = os.path.join(tmp, "smscenter.toml")
                with open(config, "w") as f:
                    f.write(config_text(
                        tmp, port, sink.port, args, hash_password("unused-smpp-password"),
                        account_extra=f'api_tokens = ["{hash_token(TOKEN)}"]\n',
                        extra=f'\n[api]\nlisten = "127.0.0.1:{api_port}"\nmax_recipients = {max(100, recipients)}\n',
                    ))
                daemon = Daemon(tmp, config)
                await wait_ready(daemon, port, sink, args.up_binds, 60.0)
                base = f"http://127.0.0.1:{api_port}"
                connector = aiohttp.TCPConnector(limit=args.concurrency)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await _api_ready(session, base, daemon, 60.0)
                    load = Load(session, base + "/v1/messages", recipients, args.concurrency)
                    warm = 0
                    if args.warmup:
                        await load.send(max(1, args.warmup // recipients), None)
                        warm = load.messages
                    requests = max(1, args.messages // recipients)
                    run.load = (os.getloadavg()[0], run.load[1])
                    cpu0, main0 = proc_cpu(daemon.pid), own_cpu(daemon.pid)
                    t0 = time.perf_counter()
                    try:
                        async with asyncio.timeout(args.timeout):
                            await load.send(requests, run)
                    except TimeoutError:
                        run.note += f"timed out after {args.timeout:g}s; "
                    run.seconds = time.perf_counter() - t0
                    run.cpu, run.cpu_main = proc_cpu(daemon.pid) - cpu0, own_cpu(daemon.pid) - main0
                    run.load = (run.load[0], os.getloadavg()[0])
                run.requests, run.messages, run.failed = load.accepted, load.messages, requests - load.accepted
                # End to end: every accepted message reaches the sink, and the sink's receipts
                # are acknowledged before the daemon stops (within the timeout).
                run.expected_upstream = warm + run.messages
                deadline = time.monotonic() + args.timeout
                while True:
                    stats = sink.stats()
                    run.upstream = stats["submits"]
                    settled = stats["receipts_acked"] + stats["receipts_refused"] >= run.upstream
                    if (run.upstream >= run.expected_upstream and settled) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                run.latencies.sort()
                daemon.check_alive()
                return run
            finally:
                if daemon is not None:
                    daemon.close()
                    if args.daemon_log:
                        with open(args.daemon_log, "ab") as out, open(daemon.log_path, "rb") as got:
                            out.write(got.read())
                    if args.verbose:
                        print(f"--- daemon log (tail) ---\n{daemon.log_tail(15)}", file=sys.stderr)
    finally:
        sink.close()


def print_table(runs: list[Run]) -> None:
    print(f"\n{'recipients/request':>18} {'requests':>9} {'messages':>9} {'msg/s':>8} {'req/s':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'CPU ms/msg':>10} {'(main)':>7} {'load':>10}")
    for r in runs:
        print(f"{r.recipients:>18} {r.requests:>9,} {r.messages:>9,} {r.rate(r.messages):>8,.0f} "
              f"{r.rate(r.requests):>8,.0f} {r.pct(0.5):>7.1f} {r.pct(0.99):>7.1f} {r.pct(1.0):>7.1f} "
              f"{r.per_message(r.cpu):>10.3f} {r.per_message(r.cpu_main):>7.3f} {r.load[0]:>4.1f}-{r.load[1]:<4.1f}")
        print(f"{'':>18} sink saw {r.upstream:,} submits for {r.expected_upstream:,} messages accepted "
              "(warm-up included)")
        if r.failed or r.note:
            print(f"{'':>18} failed requests: {r.failed} {r.statuses or ''} {r.note}")
    print(f"(concurrency {runs[0].concurrency if runs else '-'} requests on one keep-alive session; "
          "CPU: the daemon's, writer process included, and its main process alone)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="measured messages per run")
    parser.add_argument("--warmup", type=int, default=1_000, help="unmeasured messages sent first")
    parser.add_argument("--recipients", default="1,100",
                        help="comma-separated: recipients per request, one run each (default 1,100)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight on the keep-alive session")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the measured part of a run may take")
    add_sink_options(parser)
    parser.add_argument("--message-id", default="auto", help="the connector's message_id setting")
    parser.add_argument("--log-level", default="info", help="the daemon's [logging] level")
    parser.add_argument("--daemon-log", metavar="FILE", help="append each run's daemon log to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the daemon's log tail")
    args = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in args.recipients.split(",") if x.strip()]
    except ValueError:
        parser.error("--recipients: comma-separated whole numbers, e.g. 1,100")
    if not sizes or min(sizes) <= 0 or max(sizes) > 10_000:
        parser.error("--recipients: from 1 to 10,000 per request")
    if min(args.messages, args.concurrency, args.up_binds, args.up_window, args.sink_window) <= 0:
        parser.error("counts must be positive")
    if args.warmup < 0 or args.receipt_delay < 0 or args.timeout <= 0:
        parser.error("--warmup, --receipt-delay and --timeout must not be negative")
    if args.messages + args.warmup > 10_000_000:
        parser.error("at most 10,000,000 messages in all (one number each)")
    # The account as config_text writes it: its window over the requests in flight.
    args.window, args.binds = max(64, args.concurrency), 1

    import uvloop

    runs: list[Run] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for recipients in sizes:
            print(f"running: {args.concurrency} HTTP requests in flight, {recipients} recipients each -> "
                  "smscenter -> sink …", file=sys.stderr, flush=True)
            try:
                runs.append(runner.run(run_one(args, recipients)))
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return 130
            except (RuntimeError, OSError) as exc:
                print(f"error: {exc}", file=sys.stderr)
    if runs:
        print_table(runs)
    return 0 if len(runs) == len(sizes) and all(r.complete for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
