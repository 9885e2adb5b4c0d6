"""The retention purge's batches alone, in-process: CPU per message purged and what a batch's
hold time is made of.

``python -m smscenter.bench.purge_batches [--messages 50000] [--budget 0.008]`` fills a SQLite
file as ``bench.purge`` does (ended messages 200 days old, a part and a receipt each), then
runs the daemon's purge batches (``app.retention``'s job, time box and ``secure_delete``
included) on a writer connection until nothing is left, and prints: the CPU seconds per
message purged (the figure that transfers between machines), the batches' hold times (p50,
p99, longest) and, for the longest ones, their CPU and the time the thread waited for a core
(``/proc/thread-self/schedstat``): on a loaded machine the longest batches are mostly that
wait, which no time box can bound. ``bench.purge`` measures the same purge inside the daemon
under a submit load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial

from smscenter.app.retention import BATCH_BUDGET, _for_purge, _purge
from smscenter.bench.purge import fill
from storage import db
from storage.purge import Cutoff, TimeBox
from storage.writer import Job, run_job

DAY = 86400.0


def _run_queue_wait() -> float:
    """Seconds this thread has waited for a CPU since it started (0 where not available)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except OSError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100, help="messages selected per batch")
    parser.add_argument("--budget", type=float, default=BATCH_BUDGET, help="each batch's time box, seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smscenter-purge-batches-") as tmp:
        filled = fill(tmp, args.messages)
        engine = db.sync_writer_engine(f"sqlite:///{os.path.join(tmp, 'smscenter.db')}")
        job = Job(partial(_for_purge, partial(_purge, table="messages", now=time.time(), cutoff=Cutoff(180 * DAY),
                                              limit=args.batch, country_of=None, box=TimeBox(args.budget))),
                  durable=False)
        batches = []  # (wall, cpu, run-queue wait, messages)
        with engine.connect() as conn:
            while True:
                wait, cpu, wall = _run_queue_wait(), time.thread_time(), time.perf_counter()
                batch, _held = run_job(conn, job)
                batches.append((time.perf_counter() - wall, time.thread_time() - cpu, _run_queue_wait() - wait,
                                batch.selected))
                if batch.selected < args.batch and not batch.cut:
                    break
        engine.dispose()
    purged = sum(b[3] for b in batches)
    cpu = sum(b[1] for b in batches)
    walls = sorted(b[0] for b in batches)
    print(f"{args.messages:,} messages filled in {filled:.1f} s; time box {args.budget * 1e3:g} ms; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"purged {purged:,} messages in {len(batches):,} batches ({purged / len(batches):.0f} per batch): "
          f"CPU {cpu:.2f} s, {cpu / max(purged, 1) * 1e6:.1f} us per message")
    print(f"batch hold: p50 {walls[len(walls) // 2] * 1e3:.1f} ms, p99 {walls[int(len(walls) * 0.99)] * 1e3:.1f} ms, "
          f"longest {walls[-1] * 1e3:.1f} ms")
    for wall, bcpu, wait, n in sorted(batches, reverse=True)[:5]:
        print(f"  {wall * 1e3:6.1f} ms: CPU {bcpu * 1e3:.1f} ms, waiting for a core {wait * 1e3:.1f} ms, {n} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
